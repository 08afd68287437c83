"""Deterministic fits of a correlated term on one grouping factor (issue 20 item 2, issue 21).

With the random effects a single grouping factor with a correlated term ``(1 + x | g)``,
nothing is left to sample once each level's effect vector is integrated: ``sampler="auto"``
fits by the tensor adaptive Gauss-Hermite rule alone
(:class:`glmm_sm.mcla.rb.vector.VectorQuadratureSampler`), with no Monte Carlo error.

The reference is independent of the package: the exact MLE of lme4's Contraception model
``use ~ age + I(age^2) + urban + livch + (1 + urban | district)`` by 2-D adaptive
Gauss-Hermite quadrature at 25 nodes per dimension (``tests/aghq2d.py``, stored with its
node study in ``tests/results/contraception_aghq2d.json``; its own quadrature error is below
1e-6 SE).  Tolerances: the package's rule is checked by a node study against the reference's
log-likelihood; its estimate is asked to lie within its own measured quadrature error (the
finer rule's Newton step the fit records) plus the reference's, plus 1e-3 SE of rounding and
optimizer slack, as ``tests/test_quadrature.py`` asks of the scalar rule.
"""

from __future__ import annotations

import json
import warnings
from functools import cache

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from models import RESULTS, load_result

from glmm_sm import MonteCarloGLMM
from glmm_sm.core.random import as_seed_sequence

SCRIPT = load_result("contraception_aghq2d")
REFERENCE = json.loads((RESULTS / "contraception_aghq2d.json").read_text())
PARAMS, BSE = np.asarray(REFERENCE["params"]), np.asarray(REFERENCE["bse"])
QUAD, STEP = np.asarray(REFERENCE["quadrature_error"]), np.asarray(REFERENCE["newton_step"])
FORMULA = "use ~ age + I(age**2) + urban + livch + (1 + urban | district)"
#: Agreement asked for beyond the measured quadrature errors, in SEs (optimizer slack).
TOL_SE = 1e-3


def _contraception():
    return MonteCarloGLMM.from_formula(FORMULA, data=SCRIPT.contraception_data(),
                                       family=sm.families.Binomial())


@cache
def default_fit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _contraception().fit(random_state=0, disp=False, n_jobs=1)


@cache
def reference_model(n_nodes=REFERENCE["n_nodes"]):
    return SCRIPT.contraception_model(n_nodes)[0]


def _slope_data(G=40, n=10, seed=5):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(G), n)
    x = rng.normal(size=G * n)
    b = rng.multivariate_normal([0.0, 0.0], [[1.0, 0.3], [0.3, 0.5]], G)
    eta = -0.3 + 0.7 * x + b[g, 0] + b[g, 1] * x
    y = (rng.random(G * n) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "g": g, "h": rng.integers(0, 5, G * n)})


def test_default_fit_of_one_correlated_factor_is_deterministic():
    res = default_fit()
    log = res.fit_log
    assert log.sampler["used"] == "quadrature"
    assert "tensor adaptive Gauss-Hermite" in log.sampler["reason"]
    assert res.m == 1 and res.deterministic
    assert np.all(np.asarray(res.mcse()) == 0.0) and res.llf_mcse == 0.0
    # its quadrature error measured with a finer rule (twice the nodes per dimension)
    q = log.quadrature
    assert tuple(q["nodes"])[0] == 7 and tuple(q["finer_nodes"])[0] == 14
    assert q["max_step_in_se"] <= 0.1


def test_default_fit_is_the_exact_2d_aghq_mle():
    res = default_fit()
    assert list(res.params.index) == REFERENCE["names"]
    own = np.asarray(res.fit_log.quadrature["step_in_se"]) * BSE
    bound = own + QUAD + np.abs(STEP) + TOL_SE * BSE
    err = np.abs(np.asarray(res.params) - PARAMS)
    assert np.all(err <= bound), dict(zip(REFERENCE["names"], err / BSE, strict=True))
    np.testing.assert_allclose(np.asarray(res.bse), BSE, rtol=1e-3)
    assert abs(res.llf - REFERENCE["llf"]) <= 1e-4


def test_node_study_against_the_exact_likelihood():
    # The engine's value at a fixed theta (off the centre its nodes were placed at) against
    # the reference's 25-node likelihood: the error falls with the nodes per dimension and
    # is negligible (< 1e-6) from 14 on.
    res = default_fit()
    theta = PARAMS + np.r_[0.3 * BSE[:-3], 0.05, -0.02, 0.05]
    exact = reference_model().loglike(theta)
    from glmm_sm.mcla.rb.round import rb_round
    from glmm_sm.fit.options import FitOptions

    mod = _contraception()
    errs = {}
    for n in (3, 5, 7, 14):
        opts = FitOptions(sampler="quadrature", sampler_options={"n_nodes": n})
        _, eng = rb_round(mod, res.engine.structure, PARAMS, None, mod.factorize, 1,
                          as_seed_sequence(0), opts, 1)
        errs[n] = abs(eng.evaluate(theta, derivs=False).value - exact)
    assert errs[3] > errs[7] and errs[5] > errs[14], errs
    assert errs[7] <= 1e-3 and errs[14] <= 1e-6, errs


@pytest.mark.parametrize("shift", [True, False])
def test_value_gradient_and_hessian_match_finite_differences(shift):
    d = _slope_data()
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 + x | g)", data=d, family="bernoulli")
    from glmm_sm.fit.options import FitOptions
    from glmm_sm.mcla.rb.round import rb_round, rb_structure

    opts = FitOptions(sampler="quadrature")
    st = rb_structure(mod, opts, mod.factorize, None)
    centre = np.array([-0.3, 0.7, 1.0, 0.3, 0.5])
    _, eng = rb_round(mod, st, centre, None, mod.factorize, 1, as_seed_sequence(0), opts, 1)
    eng.sampler.shift = shift
    eng.__dict__.pop("_shift_cache", None)
    theta = centre + np.array([0.1, -0.1, 0.2, -0.1, 0.15])  # off the centre
    ev = eng.evaluate(theta)
    assert np.all(ev.score_var == 0.0) and np.all(np.isinf(ev.ess))
    h = 1e-5
    g_fd, H_fd = np.zeros(5), np.zeros((5, 5))
    for j in range(5):
        e = np.zeros(5)
        e[j] = h
        up, dn = eng.evaluate(theta + e), eng.evaluate(theta - e)
        g_fd[j] = (up.value - dn.value) / (2 * h)
        H_fd[:, j] = (up.gradient - dn.gradient) / (2 * h)
    # central differences of O(1) smooth functions: error ~ h^2 + eps / h ~ 1e-10
    np.testing.assert_allclose(ev.gradient, g_fd, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ev.hessian, H_fd, rtol=0, atol=1e-5)


def test_a_second_grouping_factor_is_importance_sampled_and_explicit_quadrature_refused():
    d = _slope_data()
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 + x | g) + (1 | h)", data=d,
                                      family="bernoulli")
    from glmm_sm.fit.options import FitOptions
    from glmm_sm.mcla.rb.round import resolve_sampler

    used, why = resolve_sampler(mod, FitOptions())
    assert used == "laplace" and "importance sampling" in why
    with pytest.raises(ValueError, match=r"sampler='quadrature' with correlated random-effect "
                                         r"terms integrates one grouping factor only"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod.fit(sampler="quadrature", disp=False, max_rounds=1)
