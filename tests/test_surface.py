"""The statsmodels surface (MixedLM, GLM, BinomialBayesMixedGLM) and lme4's names.

* ``fittedvalues`` are conditional (MixedLM's and lme4's), ``resid = endog - fittedvalues``
  for Poisson data, ``resid_deviance`` is statsmodels GLM's at the conditional mean.
* ``exposure=`` in ``predict`` / ``get_prediction`` as statsmodels' GLM: new data of a model
  fitted with an exposure must bring theirs; an exposure for a logit model is refused.
* ``fit(start_params, ...)``, ``summary(yname, xname, title, alpha)`` and the constructor's
  positions are statsmodels'; the former positional orders warn (FutureWarning).
* ``fit_laplace()`` returns the results; unpacking it as the former tuple warns.
* lme4's ``fixef``, ``ranef``, ``VarCorr``; random effects labelled by their level; one
  name per variance parameter (lrtest); a family class is refused with a TypeError.

Laplace fits throughout (deterministic, fast), except the one MCLA fit comparing the former
``fit(m, random_state)`` with keywords.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from models import cbpp, cbpp_aggregated
from statsmodels.genmod.generalized_linear_model import GLMResults

import glmm_sm
from glmm_sm import MonteCarloGLMM
from glmm_sm.results.laplace import LaplaceGLMMResults


def _poisson_frame(seed=0):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(30), 4)
    x = rng.normal(size=g.size)
    t = rng.uniform(0.5, 3.0, g.size)
    y = rng.poisson(t * np.exp(0.2 + 0.5 * x + rng.normal(0.0, 0.6, 30)[g]))
    return pd.DataFrame({"y": y, "x": x, "g": g, "t": t})


@pytest.fixture(scope="module")
def pois_df():
    return _poisson_frame()


@pytest.fixture(scope="module")
def pois_mod(pois_df):
    return MonteCarloGLMM.from_formula("y ~ x + (1 | g)", data=pois_df,
                                       family=sm.families.Poisson(), exposure="t")


@pytest.fixture(scope="module")
def pois_res(pois_mod):
    return pois_mod.fit(method="laplace")


@pytest.fixture(scope="module")
def slope_res():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(40), 6)
    x = rng.normal(size=g.size)
    u = rng.normal(size=(40, 2)) * [0.8, 0.5]
    eta = -0.2 + 0.7 * x + u[g, 0] + u[g, 1] * x
    df = pd.DataFrame({"y": rng.binomial(1, 1 / (1 + np.exp(-eta))), "x": x, "g": g})
    full = MonteCarloGLMM.from_formula("y ~ x + (1 + x | g)", data=df, family="bernoulli")
    red = MonteCarloGLMM.from_formula("y ~ x + (1 | g)", data=df, family="bernoulli")
    return full.fit(method="laplace"), red.fit(method="laplace")


# ----------------------------------------------------------------------- fitted values
def test_fittedvalues_conditional(pois_res, pois_df):
    """MixedLM: fittedvalues include the predicted random effects, resid = endog - fitted
    (the old fittedvalues were the marginal ones, so resid_response != y - fittedvalues)."""
    fv = pois_res.fittedvalues
    np.testing.assert_allclose(fv, pois_res.predict(conditional=True), rtol=1e-14)
    assert np.max(np.abs(fv - pois_res.predict())) > 0.1  # the random effects matter
    np.testing.assert_allclose(pois_res.resid, pois_df["y"] - fv, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pois_res.resid_response, pois_df["y"] - fv, rtol=0, atol=1e-12)
    assert list(pois_res.resid.index) == list(pois_df.index)


@pytest.mark.parametrize("kind", ["binomial", "poisson"])
def test_resid_deviance_is_glm_at_conditional_mean(kind, pois_res):
    """statsmodels GLM at eta = X beta + offset + Z E[u|y] (weights as var_weights, binomial
    trials) gives the same deviance residuals."""
    if kind == "binomial":
        w = np.linspace(0.5, 2.0, len(cbpp_aggregated()))
        res = cbpp(weights=w).fit(method="laplace")
    else:
        res, w = pois_res, None
    mod = res.model
    beta = np.asarray(res.params)[: mod.k_fe]
    eta_c = np.asarray(res.predict(conditional=True, which="linear"))
    glm = sm.GLM(np.asarray(mod.endog), np.asarray(mod.exog), family=mod.family,
                 offset=eta_c - np.asarray(mod.exog) @ beta,
                 **({} if w is None else {"var_weights": w}))
    ref = GLMResults(glm, beta, np.eye(beta.size), scale=1.0)
    np.testing.assert_allclose(res.resid_deviance, ref.resid_deviance, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(res.resid_pearson, ref.resid_pearson, rtol=1e-10)


# ----------------------------------------------------------------------- exposure
def test_exposure_in_predictions(pois_res, pois_df):
    res = pois_res
    with pytest.raises(ValueError, match="fitted with an exposure.*exposure="):
        res.predict(pois_df)
    with pytest.raises(ValueError, match="fitted with an exposure"):
        res.get_prediction(pois_df)
    np.testing.assert_allclose(res.predict(pois_df, exposure=pois_df["t"]), res.predict(),
                               rtol=1e-12)
    np.testing.assert_allclose(res.get_prediction(pois_df, exposure=pois_df["t"]).predicted_mean,
                               res.get_prediction().predicted_mean, rtol=1e-12)
    # The data fitted: exposure replaces the model's, an offset keeps the model's exposure.
    np.testing.assert_allclose(res.predict(exposure=2 * pois_df["t"]), 2 * res.predict(),
                               rtol=1e-12)
    np.testing.assert_allclose(res.predict(offset=np.zeros(len(pois_df))), res.predict(),
                               rtol=1e-12)
    per_unit = res.predict(pois_df, exposure=1.0, which="linear")
    np.testing.assert_allclose(per_unit, res.predict(which="linear") - np.log(pois_df["t"]),
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="positive"):
        res.predict(pois_df, exposure=np.zeros(len(pois_df)))


def test_exposure_refused_for_logit_model():
    res = cbpp().fit(method="laplace")
    with pytest.raises(ValueError, match="log-link"):
        res.predict(cbpp_aggregated(), exposure=1.0)
    with pytest.raises(ValueError, match="log-link"):
        res.get_prediction(exposure=np.ones(int(res.nobs)))


def test_init_kwds_do_not_add_exposure_twice(pois_mod):
    again = MonteCarloGLMM(pois_mod.endog, pois_mod.exog, **pois_mod._get_init_kwds())
    np.testing.assert_allclose(again.arrays.offset, pois_mod.arrays.offset, rtol=1e-14)


# ----------------------------------------------------------------------- fit, fit_laplace
def test_fit_start_params_first(pois_mod, pois_res):
    start = np.asarray(pois_res.params) * 1.1
    by_position = pois_mod.fit(start, method="laplace")
    by_keyword = pois_mod.fit(start_params=start, method="laplace")
    np.testing.assert_array_equal(by_position.params, by_keyword.params)


def test_fit_former_positional_order_warns(pois_mod):
    kw = {"disp": False, "n_jobs": 1, "max_rounds": 1}
    with warnings.catch_warnings():  # one short round: not converged, heavy tails
        warnings.simplefilter("ignore", sm.tools.sm_exceptions.ConvergenceWarning)
        new = pois_mod.fit(m=300, random_state=3, **kw)
        with pytest.warns(FutureWarning, match="start_params"):
            old = pois_mod.fit(300, 3, **kw)
    np.testing.assert_array_equal(old.params, new.params)
    assert old.m == new.m


def test_fit_laplace_returns_results(pois_mod, pois_res):
    lap = pois_mod.fit_laplace()
    assert isinstance(lap._results, LaplaceGLMMResults)
    np.testing.assert_array_equal(lap.params, pois_res.params)
    assert lap.llf == pois_res.llf
    with pytest.warns(FutureWarning, match="laplace_mode"):
        params, value, mode = lap
    np.testing.assert_array_equal(params, np.asarray(pois_res.params))
    assert value == lap.llf_mc and mode is lap.laplace_mode
    with pytest.raises(TypeError, match="not iterable"):
        list(pois_res)  # only fit_laplace()'s results stand in for the former tuple


# ----------------------------------------------------------------------- summary
def test_summary_statsmodels_order(pois_res):
    text = str(pois_res.summary("counts", None, "My title", 0.1))
    assert "counts" in text and "My title" in text and "[0.05" in text
    named = pois_res.summary(xname=["a", "b", "c"]).tables[1]
    assert [str(r[0]).strip() for r in named.data[1:]] == ["a", "b"]
    with pytest.warns(FutureWarning, match="summary"):
        old = pois_res.summary(0.1, "T")
    assert str(old) == str(pois_res.summary(title="T", alpha=0.1))


# ----------------------------------------------------------------------- constructor
def test_constructor_positions_of_bayes_mixed_glm(pois_mod):
    y, X, Z, ident = pois_mod.endog, np.asarray(pois_mod.exog), pois_mod.exog_vc, pois_mod.ident
    with pytest.warns(UserWarning, match="prior"):
        mod = MonteCarloGLMM(y, X, Z, ident, 1, 2, ["const", "slope"], ["subject"],
                             family="poisson")
    assert mod.exog_names == ["const", "slope"] and mod.vcp_names == ["subject"]
    assert mod.data.param_names == ["const", "slope", "subject"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MonteCarloGLMM(y, X, Z, ident, None, None, None, ["subject"], family="poisson")
    with pytest.warns(FutureWarning, match="by position is deprecated"):
        old = MonteCarloGLMM(y, X, Z, ident, ["subject"], "poisson", np.ones(len(y)))
    assert old.vcp_names == ["subject"] and old.family_kind.name == "poisson"
    with pytest.raises(TypeError, match="family given by position"), \
            pytest.warns(FutureWarning):
        MonteCarloGLMM(y, X, Z, ident, ["subject"], "poisson", family="poisson")


def test_family_class_refused(pois_df):
    with pytest.raises(TypeError, match=r"pass an instance: sm.families.Poisson\(\)"):
        MonteCarloGLMM.from_formula("y ~ x + (1 | g)", data=pois_df,
                                    family=sm.families.Poisson)


# ----------------------------------------------------------------------- lme4 names
def test_lme4_aliases_and_level_labels(pois_res):
    pd.testing.assert_series_equal(pois_res.fixef(), pois_res.fe_params)
    re = pois_res.random_effects("g")
    assert re.index.name == "g" and list(re.index) == [str(i) for i in range(30)]
    ranef = pois_res.ranef()
    assert list(ranef) == ["g"]
    pd.testing.assert_frame_equal(ranef["g"], re)
    every = pois_res.random_effects()
    assert every.index.names == ["component", "level"] and every.index[0] == ("g", "0")
    vc = pois_res.VarCorr()
    assert list(vc.columns[:5]) == ["Groups", "Name", "Variance", "Std.Dev.", "Corr"]
    row = vc.iloc[0]
    assert (row["Groups"], row["Name"]) == ("g", "(Intercept)")
    assert row["Variance"] == pytest.approx(pois_res.vcomp["g"], rel=1e-12)
    assert row["Std.Dev."] == pytest.approx(np.sqrt(pois_res.vcomp["g"]), rel=1e-12)


def test_varcorr_correlated_term(slope_res):
    full, _ = slope_res
    vc = full.varcorr()
    assert list(vc["Groups"]) == ["g", "g"] and list(vc["Name"]) == ["(Intercept)", "x"]
    S = full.params.iloc[2:].to_numpy()
    np.testing.assert_allclose(vc["Variance"], [S[0], S[2]], rtol=1e-12)
    assert np.isnan(vc["Corr"].iloc[0])
    assert vc["Corr"].iloc[1] == pytest.approx(S[1] / np.sqrt(S[0] * S[2]), rel=1e-12)
    assert np.isfinite(vc["SE(Corr)"].iloc[1])
    re = full.random_effects("g")
    assert list(re.index[:3]) == ["0", "1", "2"]


def test_lrtest_names_parameters(slope_res):
    full, red = slope_res
    lr = glmm_sm.lrtest(full, red)
    assert lr.dropped_vc == ("g Var(x)", "g Cov(x, Intercept)")
    assert "g Var(x)" in lr.summary() and "g:x" not in lr.summary()


def test_plot_random_effects_correlated_term(slope_res):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    fig = slope_res[0].plot_random_effects()
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == ["g Intercept", "g x"]
