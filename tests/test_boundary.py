"""Variance components estimated at zero: murder (both at 0) and Booth2 (z2 at 0)."""

import pickle

import numpy as np
import pytest
import statsmodels.api as sm

import glmm_sm.formula.api as smf
from glmm_sm.datasets import load
from glmm_sm.fit.boundary import boundary_scores, reduced_model
from glmm_sm.laplace.step import laplace_loglike

BOOTH_EXACT = np.array([6.132163, 1.766462])  # MCLA_SPEC 8.1, BoothHobert exact MLE


@pytest.fixture(scope="module")
def murder():
    df = load("murder")
    return smf.mcglmm("y ~ race", {"black": "0 + C(black)", "white": "0 + C(white)"}, df,
                      family="poisson")


@pytest.fixture(scope="module")
def murder_fit(murder):
    return murder.fit(random_state=1, disp=False)


@pytest.fixture(scope="module")
def booth2(booth2_model):
    return booth2_model


@pytest.fixture(scope="module")
def booth2_fit(booth2):
    return booth2.fit(random_state=2, disp=False)


def test_murder_both_components_at_zero_is_the_poisson_glm(murder, murder_fit):
    res = murder_fit
    assert res.converged and res.boundary == ["black", "white"]
    assert np.all(np.asarray(res.vcomp) == 0)
    df = load("murder")
    glm = sm.GLM.from_formula("y ~ race", df, family=sm.families.Poisson()).fit(tol=1e-13)
    np.testing.assert_allclose(res.fe_params, glm.params, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(res.bse)[:2], glm.bse, rtol=1e-7)
    assert res.llf == pytest.approx(glm.llf, rel=1e-12)
    # Undefined SEs at the boundary, zero covariance rows so contrasts of beta still work.
    assert np.all(np.isnan(np.asarray(res.bse)[2:]))
    assert np.all(np.asarray(res.cov_params())[2:] == 0)
    tt = res.t_test("race[T.White] = 0")
    assert np.isfinite(tt.pvalue) and float(tt.sd[0, 0]) == pytest.approx(glm.bse.iloc[1])
    assert res.m == 0 and res.mcse().max() == 0
    text = str(res.summary())
    assert "BOUNDARY" in text and "['black', 'white']" in text
    assert np.all(res.random_effects().to_numpy() == 0)
    back = pickle.loads(pickle.dumps(res))
    np.testing.assert_array_equal(back.params, res.params)


def test_murder_boundary_derivative_matches_laplace_finite_difference(murder, murder_fit):
    """At nu -> 0 the Laplace approximation is exact to first order in nu."""
    beta = np.asarray(murder_fit.fe_params)
    got = murder_fit.fit_log.boundary
    system = murder.block_system()
    eps, tiny = 1e-7, 1e-14
    for t, name in enumerate(["black", "white"]):
        f = []
        for h in (0.0, eps, 2 * eps):
            nu = np.full(2, tiny)
            nu[t] += h
            f.append(laplace_loglike(system, beta, nu)[0])
        fd = (-3 * f[0] + 4 * f[1] - f[2]) / (2 * eps)  # one-sided, second order
        assert got[name] < 0
        assert got[name] == pytest.approx(fd, rel=1e-4)


def test_booth2_z2_at_zero_and_z1_as_in_boothhobert(booth2_fit):
    res = booth2_fit
    assert res.converged and res.boundary == ["z2"]
    assert res.vcomp["z2"] == 0 and res.vcomp["z1"] > 0
    # With z2 at 0 the model is BoothHobert: its exact MLE, within Monte Carlo error.
    est = np.asarray(res.params)[:2]
    mcse = np.asarray(res.mcse())[:2]
    assert np.all(np.abs(est - BOOTH_EXACT) < 4 * mcse), (est, mcse)
    bse = np.asarray(res.bse)
    assert np.all(np.isfinite(bse[:2])) and np.isnan(bse[2])
    assert res.fit_log.boundary["z2"] < 0
    re = res.random_effects("z2")
    assert np.all(re.to_numpy() == 0)
    assert "BOUNDARY" in str(res.summary())
    # the Laplace start reported is the full model's (it was the reduced refit's, one
    # parameter short); the refit's own is kept beside it
    lap = booth2_fit.model.fit(method="laplace", disp=False)
    assert np.allclose(res.laplace_params, lap.params)
    assert len(res.fit_log.laplace_reduced["params"]) == len(res.params) - 1


def test_boundary_derivative_blockwise_equals_one_block(booth2):
    """The per-block decomposition of E[s^2] agrees with the joint (one-block) estimate."""
    red = reduced_model(booth2, [1])
    theta = BOOTH_EXACT
    vals = {}
    for factorize in (True, False):
        est = []
        for seed in range(4):
            red.sample_draws(20000, random_state=seed, params=theta, factorize=factorize)
            est.append(boundary_scores(booth2, theta[:1], [1], red.engine, theta)[0])
        vals[factorize] = (np.mean(est), np.std(est, ddof=1) / 2)
    (a, sa), (b, sb) = vals[True], vals[False]
    assert abs(a - b) < 4 * np.hypot(sa, sb) + 1e-3
    assert a < 0


def test_reduced_model_keeps_names_and_data(booth2):
    red = reduced_model(booth2, [1])
    assert red.vcp_names == ["z1"] and red.k_vcp == 1 and red.exog_vc.shape[1] == 10
    assert reduced_model(booth2, [0, 1]) is None
