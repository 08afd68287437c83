"""The negative binomial with variance components at 0 (issue 22).

* Every variance component at 0: the model is the negative binomial GLM, fitted by
  statsmodels' discrete ``NegativeBinomial`` (``loglike_method="nb2"``) and polished by
  exact Newton steps on glmm_sm's own formulas.  Against statsmodels' fit: the same
  estimates to far below an SE (the two optimizers' stopping: ~1e-4 SE), the same
  log-likelihood (glmm_sm's at least as high, within 1e-6), the same standard errors to
  1e-3 (statsmodels' Hessian at its own stopping point).
* One component at 0 of two (Owls with an observation-level effect, whose variance the
  negative binomial's alpha leaves at 0): the boundary procedure keeps alpha (before, the
  reduced model's start lost it and the fit failed); the estimates are those of the model
  without the component (its deterministic fit) to 3 MCSE of the boundary fit.
* The profile interval of the only variance of a negative binomial model: its lower end
  needs ``D(0)``, the NB GLM's maximum; both ends against the exact AGHQ profile (the
  constrained maxima over ``(beta, log alpha)`` with the variance held) to the root
  finder's tolerance.
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

from glmm_sm import MonteCarloGLMM
from glmm_sm.inference.profile import ZETA_TOL

DATA = os.path.join(os.path.dirname(__file__), "data", "owls.csv")
FORMULA = "SiblingNegotiation ~ FoodTreatment * SexParent"


@pytest.fixture(scope="module")
def owls():
    d = pd.read_csv(DATA)
    d["obs"] = np.arange(len(d))
    return d


def owls_model(d, vc=None):
    return MonteCarloGLMM.from_formula(FORMULA, vc or {"Nest": "0 + C(Nest)"}, data=d,
                                       family=sm.families.NegativeBinomial(alpha=1.0),
                                       offset=np.log(d.BroodSize))


@pytest.fixture(scope="module")
def glm_case():
    rng = np.random.default_rng(3)
    n = 400
    df = pd.DataFrame({"g": np.repeat(np.arange(40), 10), "x": rng.normal(size=n)})
    mu = np.exp(0.5 + 0.3 * df.x)
    df["y"] = rng.negative_binomial(1 / 0.7, 1 / (1 + 0.7 * mu))  # no cluster effect
    mod = MonteCarloGLMM.from_formula("y ~ x", {"g": "0 + C(g)"}, df,
                                      family=sm.families.NegativeBinomial(alpha=1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mod.fit(random_state=1, disp=False)
    return df, res


def test_every_variance_at_zero_is_the_negative_binomial_glm(glm_case):
    df, res = glm_case
    assert res.params["g"] == 0.0
    assert "fitted exactly as a GLM" in res.fit_log.message
    ref = sm.NegativeBinomial(df.y, sm.add_constant(df.x), loglike_method="nb2").fit(disp=0)
    got = np.asarray(res.params)[[0, 1, 3]]
    se = np.asarray(ref.bse)
    assert np.all(np.abs(got - np.asarray(ref.params)) <= 1e-3 * se)
    assert ref.llf - 1e-9 <= res.llf <= ref.llf + 1e-6
    np.testing.assert_allclose(np.asarray(res.bse)[[0, 1, 3]], se, rtol=1e-3)
    assert res.theta["estimate"] == pytest.approx(1 / res.params["alpha"])


def test_one_variance_at_zero_keeps_alpha(owls):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = owls_model(owls, {"Nest": "0 + C(Nest)", "obs": "0 + C(obs)"}).fit(
            random_state=1, disp=False)
    assert res.params["obs"] == 0.0 and res.params.index[-1] == "alpha"
    assert "['obs'] estimated at 0" in res.fit_log.message
    red = owls_model(owls).fit(random_state=1, disp=False)  # deterministic: MCSE 0
    got = res.params.drop("obs")
    # The full fit is deterministic too: the boundary is decided without draws (the model
    # without obs refitted by quadrature, the derivative at 0 exact;
    # tests/test_quadrature_boundary.py), so it is the reduced fit up to the optimizer's
    # tolerance, MCSE 0.
    mcse = np.asarray(res.mcse())[np.asarray(res.params.index != "obs")]
    assert np.all(mcse == 0)
    (ev,) = res.fit_log.boundary_evidence
    assert ev.decision == "boundary" and ev.mcse == 0.0 and ev.derivative < 0
    z = np.abs(np.asarray(got) - np.asarray(red.params)) / np.asarray(red.bse)
    assert np.all(z <= 1e-6), z


def test_profile_of_the_only_variance(owls):
    """Its lower end needs D(0) (the NB GLM's maximum); both ends against the exact
    profile."""
    X = np.asarray(patsy.dmatrix("FoodTreatment * SexParent", owls))
    ref = NegBinRandomIntercept(owls.SiblingNegotiation.values, X, owls.Nest.values,
                                np.log(owls.BroodSize.values), n_nodes=40)
    fit = ref.fit()
    assert fit.success

    def zeta(nu):
        r = optimize.minimize(
            lambda x: -ref.loglike(np.r_[x[:-1], nu, np.exp(x[-1])]),
            np.r_[fit.params[:-2], np.log(fit.params[-1])], method="BFGS",
            options={"gtol": 1e-8})
        return float(np.sign(nu - fit.params[-2]) * np.sqrt(max(2 * (fit.llf + r.fun), 0)))

    res = owls_model(owls).fit(random_state=1, disp=False)
    ci = res.profile_conf_int(cols=["Nest"])
    lo, up = ci.loc["Nest", "lower"], ci.loc["Nest", "upper"]
    assert 0 < lo < res.params["Nest"] < up  # D(0) is above the cut: the end is not 0
    z = stats.norm.ppf(0.975)
    assert abs(zeta(lo) + z) <= ZETA_TOL, zeta(lo)
    assert abs(zeta(up) - z) <= ZETA_TOL, zeta(up)


def test_profile_of_alpha_in_the_negative_binomial_glm(glm_case):
    """A fit that is the NB GLM profiles alpha exactly: at each end the exact profile
    (statsmodels' GLM with the NB family at that alpha, its beta maximized) is at
    ``zeta = -+ z_0.975`` to the root finder's tolerance."""
    df, res = glm_case
    X = sm.add_constant(df.x)
    top = sm.NegativeBinomial(df.y, X, loglike_method="nb2").fit(disp=0).llf

    def zeta(a):
        llf = sm.GLM(df.y, X, family=sm.families.NegativeBinomial(alpha=a)).fit(
            tol=1e-12).llf
        return float(np.sign(a - res.params["alpha"]) * np.sqrt(max(2 * (top - llf), 0)))

    ci = res.profile_conf_int(cols=["alpha"])
    lo, up = ci.loc["alpha", "lower"], ci.loc["alpha", "upper"]
    z = stats.norm.ppf(0.975)
    assert 0 < lo < res.params["alpha"] < up
    assert abs(zeta(lo) + z) <= ZETA_TOL, zeta(lo)
    assert abs(zeta(up) - z) <= ZETA_TOL, zeta(up)
