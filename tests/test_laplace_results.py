"""``model.fit(method="laplace")``: the Laplace MLE as a statsmodels results object.

* Its estimate is ``model.fit_laplace()``'s (the same results), its ``llf`` the Laplace
  log-likelihood with the family's constants, equal to glmer's (MCLA_SPEC 8.2 and 8.3).
* Its Hessian (central differences of the analytic Laplace gradient) agrees with a
  second-order finite difference of the Laplace log-likelihood itself; ``bse`` and
  ``cov_params`` are its inverse.
* statsmodels inference works (summary without MCSE columns, ``t_test``, ``conf_int``), and
  ``glmm_sm.compare`` lines it up with the MCLA fit: on cbpp, where the Laplace estimate is
  within 1% of an SE of the exact MLE, the standard errors agree within a few percent; on
  salamander (binary, crossed) Laplace is biased towards smaller variances.
* The random effects are the conditional modes, with SDs from the Laplace precision.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from models import cbpp, salamander_binomial
from statsmodels.tools.numdiff import approx_hess3

import glmm_sm
from glmm_sm import MonteCarloGLMM
from glmm_sm.laplace.step import laplace_loglike
from glmm_sm.results.laplace import LaplaceGLMMResults

#: glmer's Laplace log-likelihoods (with the family constants), MCLA_SPEC 8.2 and 8.3:
#: salamander ``glmer(Mate ~ 0 + Cross + (1|Female) + (1|Male), binomial)`` logLik -209.2766
#: (4 decimals); cbpp ``glmer(cbind(incidence, size - incidence) ~ period + (1|herd),
#: binomial)`` -92.02657.
GLMER_LLF = {"salamander": -209.2766, "cbpp": -92.02657}


cbpp_model, salamander_model = cbpp, salamander_binomial


@pytest.fixture(scope="module")
def fits():
    out = {}
    for name, build in (("salamander", salamander_model), ("cbpp", cbpp_model)):
        model = build()
        out[name] = (model, model.fit(method="laplace"),
                     model.fit(random_state=3, disp=False, n_jobs=1))
    return out


@pytest.mark.parametrize("name", ["salamander", "cbpp"])
def test_estimate_and_llf(name, fits):
    model, lap, _ = fits[name]
    params, value, _ = model._laplace_estimate()
    np.testing.assert_array_equal(np.asarray(lap.params), params)
    np.testing.assert_array_equal(np.asarray(model.fit_laplace().params), params)
    a = model.arrays
    assert lap.llf_mc == value
    assert lap.llf == pytest.approx(value + a.family.log_constant(a.y, a.ntrials, a.weights),
                                    rel=1e-14)
    assert isinstance(lap._results, LaplaceGLMMResults) and lap.method == "laplace"
    assert lap.converged and lap.m == 0 and lap.llf_mcse == 0.0
    assert not np.any(lap.mcse_cov) and not np.any(lap.mcse())
    # glmer maximizes the same function: ours is at least its value (up to its rounding)
    # and close to it.  Salamander: 4 decimals given.
    assert lap.llf > GLMER_LLF[name] - 5e-5
    assert lap.llf - GLMER_LLF[name] < (1e-4 if name == "salamander" else 1e-3)


@pytest.mark.parametrize("name", ["salamander", "cbpp"])
def test_hessian_and_standard_errors(name, fits):
    model, lap, _ = fits[name]
    p = model.k_fe
    system = model.block_system()
    theta = np.asarray(lap.params)
    H_ref = approx_hess3(theta, lambda t: laplace_loglike(system, t[:p], t[p:])[0])
    # approx_hess3's error is about eps^(2/5) relative (~1e-6); ours is far smaller.
    np.testing.assert_allclose(lap.hessian, H_ref, atol=1e-5 * np.max(np.abs(H_ref)))
    cov = np.linalg.inv(-lap.hessian)
    np.testing.assert_allclose(np.asarray(lap.cov_params()), cov, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.asarray(lap.bse), np.sqrt(np.diag(cov)), rtol=1e-10)
    assert np.max(np.abs(lap.gradient * np.sqrt(np.diag(cov)))) < 1e-4  # at the maximum


def test_statsmodels_inference_and_summary(fits):
    _, lap, _ = fits["salamander"]
    text = str(lap.summary())
    assert "Laplace approximation" in text and "Monte Carlo draws" not in text
    assert "no MCSE column" in text and "Cross[R/R]" in text and "-209.2766" in text
    header = text.split("Fixed effects")[1].splitlines()[2]
    assert "MCSE" not in header and "coef" in header
    t = lap.t_test("CrossR/R - CrossW/W = 0")
    b, cov = np.asarray(lap.params), np.asarray(lap.cov_params())
    r = np.array([1.0, 0, 0, -1, 0, 0])
    assert float(np.squeeze(t.effect)) == pytest.approx(r @ b, rel=1e-12)
    assert float(np.squeeze(t.sd)) == pytest.approx(np.sqrt(r @ cov @ r), rel=1e-12)
    ci = lap.conf_int(alpha=0.1)
    np.testing.assert_allclose(ci.iloc[:, 1] - ci.iloc[:, 0], 2 * 1.6448536 * lap.bse,
                               rtol=1e-6)
    assert np.isfinite(lap.aic) and lap.aic == pytest.approx(-2 * lap.llf + 2 * 6)
    clone = pickle.loads(pickle.dumps(lap))
    np.testing.assert_array_equal(np.asarray(clone.params), np.asarray(lap.params))


def test_binomial_trials_header(fits):
    _, lap, mc = fits["cbpp"]
    for res in (lap, mc):
        assert "incidence / (incidence + healthy)" in str(res.summary())
    _, lap_sal, _ = fits["salamander"]
    assert lap_sal.response_label == "Mate"


def test_compare_with_mcla(fits):
    """cbpp: Laplace is within 0.01 SE of the exact MLE (MCLA_SPEC 8.3), so the curvature
    and the standard errors agree with MCLA's to a few percent.  Salamander: binary data
    with crossed effects, where Laplace underestimates variances (Breslow and Lin 1995):
    the MCLA variances are larger by more than 3 of their MCSEs, the SEs agree only
    loosely."""
    _, lap, mc = fits["cbpp"]
    table = glmm_sm.compare(mc, lap)
    assert list(table.index) == mc.param_names
    second = list(table.columns.get_level_values(0).unique())[1]
    np.testing.assert_allclose(table[(second, "se")], np.asarray(lap.bse))
    np.testing.assert_allclose(np.asarray(lap.bse)[:-1], np.asarray(mc.bse)[:-1], rtol=0.03)
    assert np.asarray(lap.bse)[-1] == pytest.approx(np.asarray(mc.bse)[-1], rel=0.1)
    assert np.all(np.abs(table[("difference", "in SE")]) < 0.2)
    _, lap, mc = fits["salamander"]
    nu_mc, nu_lap = np.asarray(mc.vcomp), np.asarray(lap.vcomp)
    assert np.all(nu_mc - nu_lap > 3 * np.asarray(mc.mcse())[-2:])
    ratio = np.asarray(lap.bse) / np.asarray(mc.bse)
    assert np.all((ratio > 0.75) & (ratio < 1.1))


def test_random_effects_are_laplace_modes(fits):
    """cbpp: one effect per block, so the Laplace conditional variance is
    1 / (sum_i w_i N_i mu_i (1 - mu_i) + 1 / nu) at the mode."""
    model, lap, _ = fits["cbpp"]
    re = lap.random_effects()
    beta, nu = np.asarray(lap.params)[:-1], float(lap.vcomp.iloc[0])
    Z = model.exog_vc.toarray()
    eta = np.asarray(model.exog) @ beta + Z @ re["Mean"].to_numpy()
    a = model.arrays
    mu = 1.0 / (1.0 + np.exp(-eta))
    # The mode: score zero, Z' (y - N mu) = u / nu.
    np.testing.assert_allclose(Z.T @ (a.y - a.ntrials * mu), re["Mean"] / nu, atol=1e-8)
    prec = Z.T @ (a.weights * a.ntrials * mu * (1 - mu)) + 1.0 / nu
    np.testing.assert_allclose(re["SD"], 1.0 / np.sqrt(prec), rtol=1e-10)
    np.testing.assert_allclose(lap.random_effects_cov.diagonal(), 1.0 / prec, rtol=1e-10)
    pred = lap.get_prediction(conditional=True).summary_frame()
    np.testing.assert_allclose(pred["mean"], mu, rtol=1e-10)


def test_boundary_component_gets_nan_se():
    """Poisson counts with a factor that has no effect: the Laplace variance goes to the
    optimizer's lower bound; it is flagged and its SE is NaN, the others stay finite."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"y": rng.poisson(np.exp(0.5), 200), "h": rng.integers(0, 8, 200)})
    lap = MonteCarloGLMM.from_formula("y ~ 1", {"h": "0 + C(h)"}, df,
                                      family=sm.families.Poisson()).fit(method="laplace")
    assert lap.boundary == ["h"]
    assert np.isnan(np.asarray(lap.bse)[1]) and np.isfinite(np.asarray(lap.bse)[0])
    # The intercept's SE is the Poisson GLM's, sqrt(1 / sum(mu)), as nu -> 0.
    mu = np.exp(float(np.asarray(lap.params)[0]))
    assert np.asarray(lap.bse)[0] == pytest.approx(np.sqrt(1.0 / (200 * mu)), rel=1e-3)
    assert "BOUNDARY" in str(lap.summary())


def test_method_errors():
    model = cbpp_model()
    with pytest.raises(TypeError, match=r"Monte Carlo argument\(s\) \['m'\]"):
        model.fit(method="laplace", m=100)
    with pytest.raises(TypeError, match="max_rounds"):
        model.fit(method="laplace", max_rounds=3)
    with pytest.raises(ValueError, match="method must be 'mcla' or 'laplace'"):
        model.fit(method="newton")
    with pytest.raises(TypeError, match="factorize must be"):
        model.fit(method="laplace", factorize="yes")
    one_block = model.fit(method="laplace", factorize=False)
    np.testing.assert_allclose(np.asarray(one_block.params),
                               np.asarray(model.fit(method="laplace").params), rtol=1e-5)
