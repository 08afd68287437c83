"""The results object of a Monte Carlo GLMM fit: labels, inference, summary, prediction, I/O.

One salamander fit (``Mate ~ 0 + Cross``, crossed ``F``/``M`` variance components) per module
is checked against statsmodels' conventions (STATSMODELS_NOTES sections 2 and 3): labelled
``params``/``bse``/``pvalues``/``conf_int``/``cov_params``, string contrasts in statsmodels and
R style, the summary with its Monte Carlo columns, log-likelihood constants, information
criteria, random effects, predictions, save/load and pickle, the glmm-style list form of the
variance components and ``compare``.  The key checks are repeated under the formulaic
formula engine (pitfalls P7/P8).
"""

from __future__ import annotations

import contextlib
import pickle
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import statsmodels.api as sm
from scipy import stats
from scipy.special import expit, gammaln, logit

import glmm_sm
from glmm_sm import MonteCarloGLMM

NAMES = ["Cross[R/R]", "Cross[R/W]", "Cross[W/R]", "Cross[W/W]", "F", "M"]
FORMULA = "Mate ~ 0 + Cross"
VC = {"F": "0 + C(Female)", "M": "0 + C(Male)"}
SEED = 1

try:  # the engine in force before any test here changes it (restored after each use)
    from statsmodels.formula import options as _sm_formula_options

    _ENGINE_AT_IMPORT = _sm_formula_options.formula_engine
except (ImportError, AttributeError):  # statsmodels < 0.15
    _ENGINE_AT_IMPORT = None


@contextlib.contextmanager
def _formula_engine(name):
    """Select statsmodels' formula engine for the block, then restore the previous one."""
    import statsmodels.formula as smf_mod

    options = getattr(smf_mod, "options", None)
    if options is None or not hasattr(options, "formula_engine"):
        if name != "patsy":
            pytest.skip("statsmodels.formula.options is not available (statsmodels < 0.15)")
        yield  # older statsmodels: patsy is the only engine
        return
    pytest.importorskip(name)
    old = options.formula_engine
    options.formula_engine = name
    try:
        yield
    finally:
        options.formula_engine = old


def _fit_salamander(df):
    model = MonteCarloGLMM.from_formula(FORMULA, VC, df, family=sm.families.Binomial())
    return model.fit(random_state=SEED, disp=False)


@pytest.fixture(scope="module")
def df():
    return glmm_sm.datasets.load("salamander")


@pytest.fixture(scope="module")
def res(df):
    return _fit_salamander(df)


def _params_cov(res):
    return np.asarray(res.params), np.asarray(res.cov_params())


def _contrast_by_hand(res):
    p, cov = _params_cov(res)
    r = np.zeros(6)
    r[0], r[3] = 1.0, -1.0
    return r @ p, np.sqrt(r @ cov @ r)


def _wald_by_hand(res):
    """Chi-square statistic of H0: Cross[R/R] = Cross[W/W] and F = M."""
    p, cov = _params_cov(res)
    R = np.zeros((2, 6))
    R[0, 0], R[0, 3] = 1.0, -1.0
    R[1, 4], R[1, 5] = 1.0, -1.0
    d = R @ p
    return float(d @ np.linalg.solve(R @ cov @ R.T, d))


# ---------------------------------------------------------------------------- labels
def test_fit_converged_and_log(res):
    assert res.converged
    rounds = res.fit_log.rounds
    assert isinstance(rounds, list) and len(rounds) >= 1
    assert all(isinstance(r, dict) for r in rounds)
    assert {"round", "m", "params", "value", "min_ess", "max_ratio"} <= set(rounds[0])
    frame = res.fit_log.to_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) == len(rounds)
    assert len(res.fit_log.evaluations) >= len(rounds)
    assert res.m == rounds[-1]["m"]


def test_param_labels(res):
    for attr in ("params", "bse", "pvalues", "tvalues"):
        value = getattr(res, attr)
        assert isinstance(value, pd.Series), attr
        assert list(value.index) == NAMES, attr
    ci = res.conf_int()
    assert isinstance(ci, pd.DataFrame)
    assert list(ci.index) == NAMES
    cov = res.cov_params()
    assert isinstance(cov, pd.DataFrame)
    assert list(cov.index) == NAMES and list(cov.columns) == NAMES
    assert list(res.fe_params.index) == NAMES[:4]
    assert list(res.vcomp.index) == ["F", "M"]
    assert list(res.mcse().index) == NAMES


def test_inference_consistent(res):
    p, cov = _params_cov(res)
    np.testing.assert_allclose(cov, cov.T, rtol=0, atol=1e-12)
    bse = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(res.bse, bse, rtol=1e-12)
    np.testing.assert_allclose(res.tvalues, p / bse, rtol=1e-12)
    np.testing.assert_allclose(res.pvalues, 2 * stats.norm.sf(np.abs(p / bse)), rtol=1e-10)
    q = stats.norm.ppf(0.975)
    ci = res.conf_int()
    np.testing.assert_allclose(ci.iloc[:, 0], p - q * bse, rtol=1e-10)
    np.testing.assert_allclose(ci.iloc[:, 1], p + q * bse, rtol=1e-10)
    np.testing.assert_allclose(res.fe_params, p[:4], rtol=0)
    np.testing.assert_allclose(res.vcomp, p[4:], rtol=0)
    assert np.all(res.vcomp > 0)


# ---------------------------------------------------------------------------- contrasts
def test_t_test_both_styles_equal_by_hand(res):
    effect, se = _contrast_by_hand(res)
    canonical = res.t_test("Cross[R/R] - Cross[W/W] = 0")
    r_style = res.t_test("CrossR/R - CrossW/W = 0")
    for t in (canonical, r_style):
        assert float(np.squeeze(t.effect)) == pytest.approx(effect, rel=1e-10, abs=1e-12)
        assert float(np.squeeze(t.sd)) == pytest.approx(se, rel=1e-10)
        z = effect / se
        assert float(np.squeeze(t.pvalue)) == pytest.approx(2 * stats.norm.sf(abs(z)),
                                                            rel=1e-8)


def test_t_test_variance_component(res):
    t = res.t_test("F - M = 0")
    p, cov = _params_cov(res)
    assert float(np.squeeze(t.effect)) == pytest.approx(p[4] - p[5], rel=1e-10)
    assert float(np.squeeze(t.sd)) == pytest.approx(
        np.sqrt(cov[4, 4] + cov[5, 5] - 2 * cov[4, 5]), rel=1e-10)


@pytest.mark.parametrize("hypothesis", ["Cross[R/R] = Cross[W/W], F = M",
                                        "CrossR/R = CrossW/W, F = M"])
def test_wald_test_string(res, hypothesis):
    w = res.wald_test(hypothesis, scalar=True)
    stat = _wald_by_hand(res)
    assert float(w.statistic) == pytest.approx(stat, rel=1e-9)
    assert float(w.pvalue) == pytest.approx(stats.chi2.sf(stat, 2), rel=1e-8)


@pytest.fixture(scope="module")
def res_bacteria():
    with _formula_engine("patsy"):
        ba = glmm_sm.datasets.load("bacteria")
        return MonteCarloGLMM.from_formula("y2 ~ trt + I(week > 2)", {"ID": "0 + C(ID)"},
                                           ba).fit(random_state=SEED, disp=False)


def test_r_style_alias_with_plus_in_level(res_bacteria):
    with _formula_engine("patsy"):
        canonical = res_bacteria.t_test("trt[T.drug] - trt[T.drug+] = 0")
        r_style = res_bacteria.t_test("trtdrug - trtdrug+ = 0")
    p = np.asarray(res_bacteria.params)
    assert float(np.squeeze(canonical.effect)) == pytest.approx(p[1] - p[2], rel=1e-12)
    assert float(np.squeeze(r_style.effect)) == pytest.approx(p[1] - p[2], rel=1e-12)
    assert float(np.squeeze(r_style.sd)) == pytest.approx(float(np.squeeze(canonical.sd)),
                                                          rel=1e-12)


def test_r_style_alias_logical_term(res_bacteria):
    with _formula_engine("patsy"):
        t = res_bacteria.t_test("I(week > 2)TRUE = 0")
    assert float(np.squeeze(t.effect)) == pytest.approx(res_bacteria.params.iloc[3], rel=1e-12)


# ---------------------------------------------------------------------------- summary
def test_summary_text(res):
    text = str(res.summary())
    assert "MCSE" in text
    assert "Monte Carlo" in text
    for name in NAMES:
        assert name in text
    assert re.search(r"Independent blocks:\s+6\b", text), text
    assert re.search(rf"Monte Carlo draws m:\s+{res.m}\b", text)


# ---------------------------------------------------------------------------- Monte Carlo
def test_mcse_positive_and_smaller_than_bse(res):
    mcse = res.mcse()
    assert isinstance(mcse, pd.Series)
    assert np.all(np.isfinite(mcse)) and np.all(mcse > 0)
    assert np.all(mcse < res.bse)
    mc = np.asarray(res.mcse_cov)
    assert mc.shape == (6, 6)
    np.testing.assert_allclose(mc, mc.T, atol=1e-14)
    np.testing.assert_allclose(np.sqrt(np.diag(mc)), mcse, rtol=1e-12)
    assert np.all(np.linalg.eigvalsh(mc) > -1e-12)


def test_ess_per_block(res):
    ess = np.asarray(res.ess)
    assert ess.shape == (6,)
    assert np.all(ess > 0) and np.all(ess <= res.m * (1 + 1e-12))
    assert res.n_blocks == 6


# ---------------------------------------------------------------------------- likelihood
def test_llf_bernoulli_has_no_constant(res):
    assert res.llf == pytest.approx(res.llf_mc, abs=1e-12)
    assert np.isfinite(res.llf_mcse) and res.llf_mcse > 0
    # the fit ends at a maximum of l_m: the recorded round value is the reported one
    assert res.fit_log.rounds[-1]["value"] == pytest.approx(res.llf_mc, abs=1e-9)


def test_llf_binomial_trials_constant():
    cb = glmm_sm.datasets.load("cbpp2")
    agg = (cb.groupby(["herd", "period"], observed=True)["Y"]
           .agg(incidence="sum", size="count").reset_index())
    agg["failures"] = agg["size"] - agg["incidence"]
    model = MonteCarloGLMM.from_formula("incidence + failures ~ period",
                                        {"herd": "0 + C(herd)"}, agg,
                                        family=sm.families.Binomial())
    r = model.fit(random_state=SEED, disp=False)
    n, y = agg["size"].to_numpy(float), agg["incidence"].to_numpy(float)
    log_choose = np.sum(gammaln(n + 1) - gammaln(y + 1) - gammaln(n - y + 1))
    assert r.llf - r.llf_mc == pytest.approx(log_choose, rel=1e-12)
    assert log_choose == pytest.approx(185.475660, abs=1e-6)


def test_llf_poisson_constant():
    rng = np.random.default_rng(20240)
    g = np.repeat(np.arange(20), 5)
    x = rng.normal(size=100)
    y = rng.poisson(np.exp(0.5 + 0.3 * x + rng.normal(0.0, 0.7, 20)[g]))
    d = pd.DataFrame({"y": y, "x": x, "g": g})
    r = MonteCarloGLMM.from_formula("y ~ x", {"g": "0 + C(g)"}, d,
                                    family=sm.families.Poisson()).fit(random_state=SEED,
                                                                      disp=False)
    assert r.model.family_kind.name == "poisson"
    assert r.llf - r.llf_mc == pytest.approx(-np.sum(gammaln(y + 1.0)), rel=1e-12)
    assert r.llf < r.llf_mc  # some y > 1


def test_aic_bic(res):
    k = 6
    assert res.aic == pytest.approx(-2 * res.llf + 2 * k, rel=1e-12)
    assert res.bic == pytest.approx(-2 * res.llf + k * np.log(360), rel=1e-12)
    assert res.nobs == 360


# ---------------------------------------------------------------------------- random effects
def test_random_effects(res):
    re_f = res.random_effects("F")
    assert isinstance(re_f, pd.DataFrame)
    assert re_f.shape == (60, 2)
    assert list(re_f.columns) == ["Mean", "SD"]
    assert np.all(np.isfinite(re_f.to_numpy()))
    assert np.all(re_f["SD"] > 0)
    # conditional SDs of a random effect are below its prior SD sqrt(nu_F)
    assert np.all(re_f["SD"] < np.sqrt(res.vcomp["F"]))
    # rows labelled by the level (lme4's ranef), not the design's C(Female)[...] column
    assert [f"C(Female)[{lv}]" for lv in re_f.index] == res.model.vc_names[:60]
    assert re_f.index.name == "F"
    re_m = res.random_effects("M")
    assert re_m.shape == (60, 2)
    assert [f"C(Male)[{lv}]" for lv in re_m.index] == res.model.vc_names[60:]
    everything = res.random_effects()
    assert everything.shape == (120, 2)
    assert everything.index.names == ["component", "level"]
    pd.testing.assert_frame_equal(everything.loc["F"], re_f, check_names=False)


def test_random_effects_unknown_name(res):
    with pytest.raises(ValueError, match="unknown variance component"):
        res.random_effects("Female")


# ---------------------------------------------------------------------------- prediction
def test_predict_new_data(res, df):
    head = df.head()
    pred = res.predict(head)
    assert isinstance(pred, pd.Series)
    assert pred.index.equals(head.index)
    assert np.all((pred > 0) & (pred < 1))
    beta = res.fe_params
    expected = expit(np.array([beta[f"Cross[{c}]"] for c in head["Cross"]]))
    np.testing.assert_allclose(pred, expected, rtol=1e-12)
    rows = df.iloc[[7, 123, 250, 359]]
    assert res.predict(rows).index.equals(rows.index)


def test_predict_conditional_and_linear(res, df):
    head = df.head()
    marginal = res.predict(head)
    conditional = res.predict(head, conditional=True)
    assert conditional.index.equals(head.index)
    assert np.all((conditional > 0) & (conditional < 1))
    assert not np.allclose(marginal, conditional)
    lin = res.predict(head, which="linear")
    np.testing.assert_allclose(lin, logit(marginal), rtol=1e-10, atol=1e-12)
    lin_c = res.predict(head, which="linear", conditional=True)
    np.testing.assert_allclose(lin_c, logit(conditional), rtol=1e-10, atol=1e-12)
    # the conditional linear predictor adds the Female and Male conditional means
    re_f, re_m = res.random_effects("F")["Mean"], res.random_effects("M")["Mean"]
    added = np.array([re_f[str(f)] + re_m[str(m)]
                      for f, m in zip(head["Female"], head["Male"], strict=True)])
    np.testing.assert_allclose(lin_c - lin, added, rtol=1e-10, atol=1e-12)


def test_predict_fitted_data(res, df):
    fitted = res.predict()
    assert len(fitted) == 360
    np.testing.assert_allclose(np.asarray(fitted), np.asarray(res.predict(df)), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(res.predict(conditional=True)),
                               np.asarray(res.predict(df, conditional=True)), rtol=1e-12)


# ---------------------------------------------------------------------------- I/O
def _same_results(a, b):
    pd.testing.assert_series_equal(a.params, b.params)
    pd.testing.assert_series_equal(a.bse, b.bse)
    pd.testing.assert_series_equal(a.mcse(), b.mcse())
    assert str(a.summary()) == str(b.summary())


def test_save_load_round_trip(res, df, tmp_path):
    path = tmp_path / "salamander.pickle"
    res.save(str(path))
    loaded = sm.load(str(path))
    _same_results(res, loaded)
    pd.testing.assert_series_equal(loaded.predict(df.head()), res.predict(df.head()))


def test_pickle_round_trip(res, df):
    loaded = pickle.loads(pickle.dumps(res))  # inside a function: P13 does not apply
    _same_results(res, loaded)
    np.testing.assert_array_equal(loaded.ess, res.ess)
    pd.testing.assert_series_equal(loaded.predict(df.head()), res.predict(df.head()))
    t = loaded.t_test("CrossR/R - CrossW/W = 0")
    assert float(np.squeeze(t.effect)) == pytest.approx(_contrast_by_hand(res)[0], rel=1e-10)


def _fresh_boothhobert_fit():
    bh = glmm_sm.datasets.load("BoothHobert")
    res = MonteCarloGLMM.from_formula("y ~ 0 + x1", {"z1": "0 + C(z1)"}, bh,
                                      family="bernoulli").fit(random_state=SEED, disp=False)
    return res, bh


def test_remove_data_on_fresh_fit():
    res, bh = _fresh_boothhobert_fit()
    res.remove_data()
    assert res.predict(bh.head()).shape == (5,)


def test_remove_data_keeps_prediction_after_cache_exists():
    res, bh = _fresh_boothhobert_fit()
    before = res.predict(bh.head())
    params = res.params.copy()
    _ = res.bse  # creates statsmodels' _cache (see test_remove_data_on_fresh_fit)
    res.remove_data()
    assert res.model.exog is None and res.model.endog is None
    pd.testing.assert_series_equal(res.params, params)
    pd.testing.assert_series_equal(res.predict(bh.head()), before)


def test_remove_data_removes_random_effects_design():
    res, _ = _fresh_boothhobert_fit()
    _ = res.bse
    res.remove_data()
    assert res.model.exog_vc is None


# ---------------------------------------------------------------------------- construction
def test_formula_api_alias(res, df):
    from glmm_sm.formula.api import mcglmm

    model = mcglmm(FORMULA, VC, df, family=sm.families.Binomial())
    assert isinstance(model, MonteCarloGLMM)
    assert list(model.data.param_names) == NAMES
    r = model.fit(random_state=SEED, disp=False)
    pd.testing.assert_series_equal(r.params, res.params)
    pd.testing.assert_series_equal(r.bse, res.bse)


def test_glmm_style_list_form(res, df):
    model = MonteCarloGLMM.from_formula(FORMULA, ["0 + C(Female)", "0 + C(Male)"], df,
                                        varcomps_names=["F", "M"])
    assert list(model.data.param_names) == NAMES
    assert model.k_vcp == 2
    assert model.exog_vc.shape == (360, 120)
    ref = res.model
    np.testing.assert_array_equal(model.ident, ref.ident)
    assert model.vc_names == ref.vc_names
    Z = model.exog_vc.toarray() if sp.issparse(model.exog_vc) else np.asarray(model.exog_vc)
    Zr = ref.exog_vc.toarray() if sp.issparse(ref.exog_vc) else np.asarray(ref.exog_vc)
    np.testing.assert_array_equal(Z, Zr)
    r = model.fit(random_state=SEED, disp=False)
    assert list(r.params.index) == NAMES
    np.testing.assert_allclose(r.params, res.params, rtol=1e-12)


def test_booth2_shared_component():
    booth2 = glmm_sm.datasets.load("Booth2")
    model = MonteCarloGLMM.from_formula("y ~ 0 + x1", ["0 + C(z1)", "0 + C(z2)"], booth2,
                                        varcomps_equal=[1, 1], varcomps_names=["z"])
    assert list(model.data.param_names) == ["x1", "z"]
    assert model.k_vcp == 1
    assert model.exog_vc.shape == (150, 15)
    np.testing.assert_array_equal(model.ident, np.zeros(15, dtype=int))
    r = model.fit(random_state=SEED, disp=False)
    assert list(r.params.index) == ["x1", "z"]
    assert np.all(np.isfinite(r.params)) and r.params["z"] > 0
    assert r.random_effects("z").shape == (15, 2)


# ---------------------------------------------------------------------------- compare
def test_compare_with_bayes_vb(res, df):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vb = sm.BinomialBayesMixedGLM.from_formula(FORMULA, VC, df).fit_vb()
    table = glmm_sm.compare(res, vb)
    assert isinstance(table, pd.DataFrame)
    assert list(table.index) == NAMES
    fits = [c for c in table.columns.get_level_values(0).unique() if c != "difference"]
    assert len(fits) == 2
    for fit in fits:
        for col in ("estimate", "se"):
            values = table[(fit, col)]
            assert values.notna().all() and np.all(np.isfinite(values))
    mcla, other = fits
    np.testing.assert_allclose(table[(mcla, "estimate")], res.params, rtol=0)
    np.testing.assert_allclose(table[(mcla, "se")], res.bse, rtol=0)
    np.testing.assert_allclose(table[(other, "estimate")].iloc[:4], vb.fe_mean, rtol=1e-12)
    np.testing.assert_allclose(table[(other, "se")].iloc[:4], vb.fe_sd, rtol=1e-12)
    np.testing.assert_allclose(table[(other, "estimate")].iloc[4:],
                               np.exp(2 * np.asarray(vb.vcp_mean)), rtol=1e-12)


def test_compare_two_mcla_fits(res, df):
    other = MonteCarloGLMM.from_formula(FORMULA, VC, df).fit(random_state=SEED + 1,
                                                             disp=False)
    table = glmm_sm.compare(res, other)
    assert list(table.index) == NAMES
    fits = [c for c in table.columns.get_level_values(0).unique() if c != "difference"]
    assert len(fits) == 2 and fits[0] != fits[1]
    np.testing.assert_allclose(table[(fits[0], "estimate")], res.params, rtol=0)
    np.testing.assert_allclose(table[(fits[1], "estimate")], other.params, rtol=0)
    np.testing.assert_allclose(table[(fits[1], "se")], other.bse, rtol=0)
    # two MCLA fits of the same model differ by Monte Carlo error only
    diff = np.abs(np.asarray(res.params) - np.asarray(other.params))
    assert np.all(diff < 5 * np.hypot(res.mcse(), other.mcse()))


# ---------------------------------------------------------------------------- formulaic
@pytest.fixture
def formulaic():
    with _formula_engine("formulaic"):
        yield


@pytest.fixture(scope="module")
def res_formulaic(df):
    with _formula_engine("formulaic"):
        return _fit_salamander(df)


def test_formulaic_engine_is_restored(res_formulaic):
    import statsmodels.formula as smf_mod

    assert smf_mod.options.formula_engine == _ENGINE_AT_IMPORT


def test_formulaic_param_names(formulaic, res_formulaic, res):
    assert list(res_formulaic.params.index) == NAMES
    assert list(res_formulaic.cov_params().columns) == NAMES
    assert list(res_formulaic.model.exog_names) == NAMES[:4]
    # same design under both engines, so the same fit for the same random_state
    np.testing.assert_allclose(res_formulaic.params, res.params, rtol=1e-12)
    np.testing.assert_allclose(res_formulaic.bse, res.bse, rtol=1e-10)


def test_formulaic_t_test_both_styles(formulaic, res_formulaic):
    effect, se = _contrast_by_hand(res_formulaic)
    for hyp in ("Cross[R/R] - Cross[W/W] = 0", "CrossR/R - CrossW/W = 0"):
        t = res_formulaic.t_test(hyp)
        assert float(np.squeeze(t.effect)) == pytest.approx(effect, rel=1e-10, abs=1e-12)
        assert float(np.squeeze(t.sd)) == pytest.approx(se, rel=1e-10)


@pytest.mark.parametrize("hypothesis", ["Cross[R/R] = Cross[W/W], F = M",
                                        "CrossR/R = CrossW/W, F = M"])
def test_formulaic_wald_test(formulaic, res_formulaic, hypothesis):
    w = res_formulaic.wald_test(hypothesis, scalar=True)
    assert float(w.statistic) == pytest.approx(_wald_by_hand(res_formulaic), rel=1e-9)


def test_formulaic_predict(formulaic, res_formulaic, df):
    head = df.head()
    pred = res_formulaic.predict(head)
    assert pred.index.equals(head.index)
    assert np.all((pred > 0) & (pred < 1))
    beta = res_formulaic.fe_params
    np.testing.assert_allclose(
        pred, expit(np.array([beta[f"Cross[{c}]"] for c in head["Cross"]])), rtol=1e-12)
    cond = res_formulaic.predict(head, conditional=True)
    assert not np.allclose(pred, cond)
    np.testing.assert_allclose(res_formulaic.predict(head, which="linear"), logit(pred),
                               rtol=1e-10, atol=1e-12)


def test_formulaic_summary_and_pickle(formulaic, res_formulaic):
    text = str(res_formulaic.summary())
    assert "MCSE" in text and all(name in text for name in NAMES)
    loaded = pickle.loads(pickle.dumps(res_formulaic))
    _same_results(res_formulaic, loaded)
