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
    from glmm_sm.fit.options import FitOptions
    from glmm_sm.mcla.rb.round import rb_round

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


# --------------------------------------------------------------------------- profiles
TRUE_SIGMA = np.array([[1.0, 0.3], [0.3, 0.5]])


@cache
def coverage_design():
    """A data set of the profile-coverage design (``benchmarks/bench_profile_coverage.py``:
    50 groups of 12, ``y ~ x + (1 + x | g)``), its deterministic fit and its profile
    intervals."""
    rng = np.random.default_rng([2024, 0])
    G, n = 50, 12
    g = np.repeat(np.arange(G), n)
    x = rng.normal(size=G * n)
    b = rng.multivariate_normal([0.0, 0.0], TRUE_SIGMA, size=G)
    eta = -0.3 + 0.8 * x + b[g, 0] + b[g, 1] * x
    y = (rng.random(G * n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    d = pd.DataFrame({"y": y, "x": x, "g": g})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MonteCarloGLMM.from_formula("y ~ x + (1 + x | g)", data=d,
                                          family="bernoulli").fit(random_state=0, disp=False)
        ci = res.profile_conf_int()
    return d, res, ci


def _reference_profile(ref, theta0, name, value):
    """The exact profile log-likelihood (2-D AGHQ, 20 nodes per dimension) with ``name``
    held at ``value``: maximized over the other parameters in unconstrained coordinates
    (the betas, ``log SD``s and ``atanh`` of the correlation) from ``theta0``."""
    from scipy import optimize

    def theta(free):
        f = list(free)
        beta = [value if name == "Intercept" else f.pop(0),
                value if name == "x" else f.pop(0)]
        sa = np.exp(f.pop(0))
        sb = np.sqrt(value) if name == "g Var(x)" else np.exp(f.pop(0))
        rho = value if name == "g Corr(x, Intercept)" else np.tanh(f.pop(0))
        return np.r_[beta, sa * sa, rho * sa * sb, sb * sb]

    b0, s = theta0[:2], theta0[2:]
    sa, sb = np.sqrt(s[0]), np.sqrt(s[2])
    start = [*(v for k, v in zip(("Intercept", "x"), b0, strict=True) if k != name),
             np.log(sa)]
    if name != "g Var(x)":
        start.append(np.log(sb))
    if name != "g Corr(x, Intercept)":
        start.append(np.arctanh(s[1] / (sa * sb)))
    r = optimize.minimize(lambda f: -ref.loglike(theta(f)), start, method="BFGS",
                          options={"gtol": 1e-8})
    return -r.fun


@pytest.mark.parametrize("name", ["x", "g Var(x)", "g Corr(x, Intercept)"])
def test_profile_ends_of_a_deterministic_fit_are_where_the_exact_profile_crosses(name):
    # Both ends of each 95% interval: the exact profile deviance there (independent 2-D
    # AGHQ at 20 nodes per dimension, maximized by BFGS) is the chi2(1) quantile, to 0.02
    # (the profile's root tolerance in zeta, 2e-3, is 0.008 in the deviance; the rest is
    # optimizer slack).  No Monte Carlo error: the ends' MCSEs are 0.
    from aghq2d import VectorRandomEffectsGLMM
    from scipy import stats

    d, res, ci = coverage_design()
    assert res.fit_log.sampler["used"] == "quadrature"
    ref = VectorRandomEffectsGLMM(d["y"], np.c_[np.ones(len(d)), d["x"]],
                                  np.c_[np.ones(len(d)), d["x"]], d["g"], "bernoulli",
                                  n_nodes=20)
    top = ref.fit(np.asarray(res.params))
    assert top.success
    row = ci.loc[name]
    assert row["lower_mcse"] == 0.0 and row["upper_mcse"] == 0.0
    crit = stats.chi2.ppf(0.95, 1)
    for end in (row["lower"], row["upper"]):
        if name.startswith("g Corr") and abs(end) == 1.0:
            # an end at the edge (the package's deviance at |rho| = 1 - 1e-4 is below the
            # cut): the exact deviance at |rho| = 0.99 is below it (nearer the edge the
            # reference's conditional modes do not converge)
            dev = 2 * (top.llf - _reference_profile(ref, np.asarray(res.params), name,
                                                    end * 0.99))
            assert dev < crit, (end, dev)
            continue
        dev = 2 * (top.llf - _reference_profile(ref, np.asarray(res.params), name, end))
        assert dev == pytest.approx(crit, abs=0.02), (end, dev)
