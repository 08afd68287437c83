"""The summary's header names the method that approximated the likelihood: a deterministic
(quadrature) fit is not labelled as Monte Carlo, and shows its nodes and measured
quadrature error instead of draws, ESS and Pareto k (issue 20: "the fit says so ... instead of
pretending to be Monte Carlo")."""
import re

import numpy as np
import pandas as pd
import pytest

from glmm_sm import MonteCarloGLMM


def _frame(slope, seed=0, groups=40, per=6):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per)
    x = rng.normal(size=g.size)
    u = rng.normal(size=(groups, 2)) * [1.0, 0.7 if slope else 0.0]
    eta = -0.2 + 0.4 * x + u[g, 0] + u[g, 1] * x
    y = (rng.random(g.size) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"y": y, "x": x, "g": g})


@pytest.mark.parametrize("formula", ["y ~ x + (1 | g)", "y ~ x + (1 + x | g)"])
def test_a_deterministic_fit_is_labelled_quadrature(formula):
    data = _frame(slope="+ x |" in formula)
    res = MonteCarloGLMM.from_formula(formula, data=data, family="binomial").fit(
        random_state=0, disp=False)
    assert res.deterministic
    text = res.summary().as_text()
    assert "Adaptive Gauss-Hermite quadrature" in text
    assert "Monte Carlo likelihood approx." not in text
    assert "Monte Carlo draws m:" not in text and "Smallest block ESS:" not in text
    nodes = " x ".join(str(n) for n in res.fit_log.quadrature["nodes"])
    assert re.search(rf"Quadrature nodes:\s+{re.escape(nodes)}\s", text)
    assert re.search(r"Monte Carlo error:\s+none \(MCSE 0\)", text)


@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.ConvergenceWarning")
def test_a_sampled_fit_keeps_its_monte_carlo_header():
    data = _frame(slope=False)
    res = MonteCarloGLMM.from_formula("y ~ x + (1 | g)", data=data, family="binomial").fit(
        sampler="laplace", m=500, max_rounds=1, random_state=0, disp=False)
    assert not res.deterministic
    text = res.summary().as_text()
    assert "Monte Carlo likelihood approx." in text
    assert re.search(rf"Monte Carlo draws m:\s+{res.m}\b", text)
    assert "Quadrature nodes:" not in text
