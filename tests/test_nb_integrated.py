"""The negative binomial with the integrated engines (issue 22): the Rao-Blackwellized
kernel (:mod:`glmm_sm.mcla.kernels.rb`) carries the dispersion ``alpha``.

* Exact derivatives: the value, gradient and Hessian of the deterministic quadrature engine
  (one random intercept; an intercept and an observation-level effect, whose outer rule
  is the engine's "draws") and of the Rao-Blackwellized sampling engine (crossed factors,
  with observations on no integrated level) against Ridders' differences, ``alpha``
  included (the tolerance of tests/test_derivatives.py).  The RB kernel exists in numba
  only (no numpy reference); the plain kernels' NB checks are in tests/test_negbin.py.
* The Owls model (glmmTMB's example) fitted with the default ``sampler="auto"`` is a
  deterministic nested quadrature; against the exact AGHQ MLE (tests/aghq.py, independent
  of glmm_sm, 40 nodes) the estimates agree to quadrature accuracy: 1e-4 standard errors
  (the fit's measured quadrature error is ~1e-8 SE, the two optimizers stop at Newton
  steps of ~1e-6 SE), the log-likelihood to 1e-6, and the standard errors to 0.1% (the
  reference's Hessian is a finite difference of its difference score, accurate to ~1e-4).
* The profile interval of alpha (on the log scale, as the variances') against the exact
  AGHQ profile (constrained maxima by BFGS on the quadrature log-likelihood): to the root
  finder's tolerance for the deterministic fit, to 3 MCSE of each end by importance
  sampling.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import patsy
import pytest
import statsmodels.api as sm
from aghq import NegBinRandomIntercept
from scipy import optimize, stats
from test_derivatives import _check_ridders, ridders

from glmm_sm import MonteCarloGLMM
from glmm_sm.fit.options import FitOptions
from glmm_sm.inference.profile import ZETA_TOL
from glmm_sm.mcla.rb.round import rb_round, rb_structure, resolve_sampler

DATA = os.path.join(os.path.dirname(__file__), "data", "owls.csv")
FORMULA = "SiblingNegotiation ~ FoodTreatment * SexParent"


@pytest.fixture(scope="module")
def owls():
    d = pd.read_csv(DATA)
    d["obs"] = np.arange(len(d))
    return d


def nb():
    return sm.families.NegativeBinomial(alpha=1.0)


def owls_model(d, vc=None):
    return MonteCarloGLMM.from_formula(FORMULA, vc or {"Nest": "0 + C(Nest)"}, data=d,
                                       family=nb(), offset=np.log(d.BroodSize))


def _check_engine(name, eng, theta):
    ev = eng.evaluate(theta)
    assert np.isfinite(ev.value)
    h0 = 1e-2 * np.maximum(np.abs(theta), 0.1)
    fd, err = ridders(lambda t: eng.evaluate(t, derivs=False).value, theta, h0)
    _check_ridders(name, fd, err, ev.gradient, "gradient")
    fd, err = ridders(lambda t: eng.evaluate(t).gradient, theta, h0)
    _check_ridders(name, fd, err, ev.hessian, "Hessian")
    np.testing.assert_array_equal(ev.hessian, ev.hessian.T)
    # the alpha terms are really checked: its score and its cross terms are not 0
    assert abs(ev.gradient[-1]) > 1.0
    assert np.all(np.abs(ev.hessian[-1, :]) > 0)
    return ev


def _quadrature_engine(model, theta, n_nodes=12, outer_nodes=20):
    opts = FitOptions(sampler="quadrature",
                      sampler_options={"n_nodes": n_nodes, "outer_nodes": outer_nodes})
    st = rb_structure(model, opts, model.factorize, None)
    return rb_round(model, st, np.asarray(theta, dtype=float), None, model.factorize,
                    outer_nodes, np.random.SeedSequence(0), opts, 1)[1]


@pytest.mark.parametrize("terms", ["nest", "nest+obs"])
def test_quadrature_engine_derivatives_with_alpha(owls, terms):
    vc = {"Nest": "0 + C(Nest)"}
    if terms == "nest+obs":
        vc["obs"] = "0 + C(obs)"
    mod = owls_model(owls, vc)
    params = mod._laplace_estimate()[0]
    p = mod.k_fe
    theta = params.copy()
    theta[:p] += 0.05 * np.linspace(-1.0, 1.0, p)
    theta[p:] = np.maximum(theta[p:], 0.05) * 1.1
    eng = _quadrature_engine(mod, params)
    assert type(eng).__name__ == "RBEngine" and eng.sampler.deterministic
    assert eng.m == (20 if terms == "nest+obs" else 1)
    ev = _check_engine(f"quadrature NB {terms}", eng, theta)
    assert np.all(ev.score_var == 0)


def test_rao_blackwellized_sampling_engine_derivatives_with_alpha():
    """Crossed factors ``a`` (sampled) and ``b`` (integrated) with ``b``'s effect only where
    ``z = 1``: the rows with ``z = 0`` are the kernel's free observations, so both of the
    RB kernel's per-observation paths carry the alpha terms; moving draws."""
    rng = np.random.default_rng(8)
    A, B = 12, 30
    d = pd.DataFrame({"a": np.repeat(np.arange(A), B), "b": np.tile(np.arange(B), A)})
    d["z"] = (rng.random(len(d)) < 0.7).astype(float)
    d["x"] = rng.normal(size=len(d))
    eta = (0.5 + 0.4 * d["x"] + rng.normal(0, 0.6, A)[d["a"]]
           + d["z"] * rng.normal(0, 0.6, B)[d["b"]])
    mu = np.exp(eta)
    d["y"] = rng.negative_binomial(1 / 0.5, 1 / (1 + 0.5 * mu))  # alpha = 0.5
    mod = MonteCarloGLMM.from_formula("y ~ x", {"a": "0 + C(a)", "b": "0 + C(b):z"}, d,
                                      family=nb())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mod.fit(random_state=1, disp=False, rao_blackwell=True, m=400, max_rounds=2)
    eng = res.engine
    assert type(eng).__name__ == "RBEngine" and not getattr(eng.sampler, "deterministic",
                                                             False)
    assert len(eng.structure.free_obs) > 50
    theta = np.asarray(res.params, dtype=float) * 1.05
    _check_engine("RB sampling NB", eng, theta)


def test_default_sampler_is_the_deterministic_quadrature(owls):
    mod = owls_model(owls)
    used, why = resolve_sampler(mod, FitOptions())
    assert used == "quadrature", why


@pytest.fixture(scope="module")
def owls_fits(owls):
    X = np.asarray(patsy.dmatrix("FoodTreatment * SexParent", owls))
    ref = NegBinRandomIntercept(owls.SiblingNegotiation.values, X, owls.Nest.values,
                                np.log(owls.BroodSize.values), n_nodes=40).fit()
    assert ref.success
    res = owls_model(owls).fit(random_state=1, disp=False)
    return ref, res


def test_owls_default_fit_is_the_aghq_mle(owls_fits):
    """The default fit of glmmTMB's Owls model is deterministic and is the exact MLE to
    quadrature accuracy, standard errors included."""
    ref, res = owls_fits
    assert res.converged
    assert res.fit_log.sampler["used"] == "quadrature"
    assert type(res.engine).__name__ == "RBEngine"
    assert list(res.params.index[-2:]) == ["Nest", "alpha"]
    np.testing.assert_array_equal(np.asarray(res.mcse()), 0.0)
    z = np.abs(np.asarray(res.params) - ref.params) / ref.bse
    assert np.all(z <= 1e-4), z
    ratio = np.asarray(res.bse) / ref.bse
    assert np.all(np.abs(ratio - 1.0) <= 1e-3), ratio
    assert abs(res.llf - ref.llf) <= 1e-6
    assert res.theta["estimate"] == pytest.approx(1.0 / res.params["alpha"], rel=1e-12)
    assert res.theta["mcse"] == 0.0


def test_quadrature_and_rao_blackwell_true_are_accepted(owls):
    """Explicit ``sampler="quadrature"`` and ``rao_blackwell=True`` (refused before the
    integrated kernels had the alpha terms) give the default's deterministic fit."""
    mod = owls_model(owls)
    a = mod.fit(sampler="quadrature", random_state=1, disp=False)
    assert a.fit_log.sampler["used"] == "quadrature"
    b = owls_model(owls).fit(random_state=1, disp=False)
    np.testing.assert_allclose(np.asarray(a.params), np.asarray(b.params), rtol=1e-10)


# ------------------------------------------------------------------ profile of alpha
def _aghq_profile(ref_model, ref_fit):
    """The exact profile log-likelihood of alpha: the AGHQ log-likelihood maximized over
    ``(beta, log nu)`` with alpha held (BFGS from the MLE)."""
    def prof(alpha):
        start = ref_fit.params
        r = optimize.minimize(
            lambda x: -ref_model.loglike(np.r_[x[:-1], np.exp(x[-1]), alpha]),
            np.r_[start[:-2], np.log(start[-2])], method="BFGS", options={"gtol": 1e-8})
        return -r.fun

    return prof


@pytest.fixture(scope="module")
def aghq_profile(owls):
    X = np.asarray(patsy.dmatrix("FoodTreatment * SexParent", owls))
    ref = NegBinRandomIntercept(owls.SiblingNegotiation.values, X, owls.Nest.values,
                                np.log(owls.BroodSize.values), n_nodes=40)
    fit = ref.fit()
    assert fit.success
    prof = _aghq_profile(ref, fit)
    return fit, lambda a: float(np.sign(a - fit.params[-1])
                                * np.sqrt(max(2.0 * (fit.llf - prof(a)), 0.0)))


def test_alpha_profile_interval_is_the_exact_one(owls_fits, aghq_profile):
    """Deterministic fit: the profile ends of alpha solve ``zeta = -+ z_0.975`` on the exact
    AGHQ profile to the root finder's tolerance ``ZETA_TOL`` on ``zeta`` (the quadrature
    error of ``D`` is ~1e-8)."""
    _, res = owls_fits
    _, zeta = aghq_profile
    ci = res.profile_conf_int(cols=["alpha"])
    lo, up = ci.loc["alpha", "lower"], ci.loc["alpha", "upper"]
    assert 0 < lo < res.params["alpha"] < up
    assert ci.loc["alpha", "lower_mcse"] == 0 and ci.loc["alpha", "upper_mcse"] == 0
    z = stats.norm.ppf(0.975)
    assert abs(zeta(lo) + z) <= ZETA_TOL, zeta(lo)
    assert abs(zeta(up) - z) <= ZETA_TOL, zeta(up)


def test_alpha_profile_interval_by_importance_sampling(owls, aghq_profile):
    """Importance sampling: each end within 3 of its MCSE of the exact end, plus the root
    finder's tolerance (``ZETA_TOL`` on ``zeta``, converted by the exact profile's slope)."""
    fit, zeta = aghq_profile
    res = owls_model(owls).fit(random_state=2, disp=False, rao_blackwell=False)
    assert res.fit_log.sampler["used"] == "laplace"
    ci = res.profile_conf_int(cols=["alpha"])
    z = stats.norm.ppf(0.975)
    a_hat = fit.params[-1]
    for side, col in ((-1, "lower"), (1, "upper")):
        end, mcse = ci.loc["alpha", col], ci.loc["alpha", f"{col}_mcse"]
        assert np.isfinite(end) and mcse > 0
        exact = optimize.brentq(lambda la, s=side: zeta(np.exp(la)) - s * z,
                                np.log(a_hat) + (side - 1) * 0.5,
                                np.log(a_hat) + (side + 1) * 0.5, xtol=1e-10)
        exact = float(np.exp(exact))
        h = 1e-4 * exact
        slope = (zeta(exact + h) - zeta(exact - h)) / (2 * h)
        assert abs(end - exact) <= 3 * mcse + ZETA_TOL / abs(slope), (col, end, exact, mcse)
