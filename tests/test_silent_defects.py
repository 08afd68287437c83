"""Issue 19 item 4, "Nothing silent": regression tests for silent wrong answers and
silent substitutions.

Each test fails on the code before the fix (commit 623e4cf): new-data conditional
predictions that dropped correlated terms, a Laplace summary that failed with correlated
terms and gave covariances one-sided p-values, remove_data that kept the draws and broke
summary(), and silent clipping, jitter, nan_to_num and order swaps.
"""

from __future__ import annotations

import pathlib
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from statsmodels.tools.sm_exceptions import ConvergenceWarning

import glmm_sm
from glmm_sm import MonteCarloGLMM

DATA = pathlib.Path(__file__).parent / "data"
BINOMIAL = sm.families.Binomial()


@pytest.fixture(scope="module")
def contraception():
    df = pd.read_csv(DATA / "contraception.csv")
    return df.assign(y=(df["use"] == "Y").astype(float))


@pytest.fixture(scope="module")
def lap_urban(contraception):
    """Laplace fit of ``y ~ age + urban + (1 + urban | district)`` (correlated term)."""
    mod = MonteCarloGLMM.from_formula("y ~ age + urban + (1 + urban | district)",
                                      data=contraception, family=BINOMIAL)
    return mod.fit(method="laplace")


@pytest.fixture(scope="module")
def mcla_slope(slope_data):
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 + x | g)", data=slope_data,
                                      family=BINOMIAL)
    return mod.fit(random_state=1, disp=False, n_jobs=1)


def _boothhobert_fit(sampler="auto"):
    bh = glmm_sm.datasets.load("BoothHobert")
    res = MonteCarloGLMM.from_formula("y ~ 0 + x1", {"z1": "0 + C(z1)"}, bh,
                                      family="bernoulli").fit(random_state=3, disp=False,
                                                              n_jobs=1, sampler=sampler)
    return res, bh


# ------------------------------------------------------------- 1. new-data predictions
def test_new_data_conditional_prediction_keeps_correlated_term(lap_urban, contraception):
    """The fitted rows passed back as new data give the in-sample conditional predictions
    (the old code dropped the (1 + urban | district) effects: 0.374 instead of 0.589)."""
    res = lap_urban
    inside = np.asarray(res.predict(conditional=True))
    again = np.asarray(res.predict(contraception, conditional=True))
    np.testing.assert_allclose(again, inside, rtol=1e-12)
    assert np.max(np.abs(inside - np.asarray(res.predict(contraception)))) > 0.1
    a = res.get_prediction(conditional=True).summary_frame()
    b = res.get_prediction(contraception, conditional=True).summary_frame()
    np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=1e-12)


def test_new_rows_of_one_factor_level_keep_the_fitted_coding(lap_urban, contraception):
    """Rows holding only urban == "Y" (the formula engine alone would code them with no
    urban column) still get the district slope on urban."""
    inside = np.asarray(lap_urban.predict(conditional=True))
    for level in ("Y", "N"):
        sub = contraception[contraception["urban"] == level].iloc[:7]
        np.testing.assert_allclose(np.asarray(lap_urban.predict(sub, conditional=True)),
                                   inside[sub.index], rtol=1e-12)


def test_new_data_conditional_prediction_scalar_model():
    bh = glmm_sm.datasets.load("BoothHobert")
    res = MonteCarloGLMM.from_formula("y ~ 0 + x1", {"z1": "0 + C(z1)"}, bh,
                                      family="bernoulli").fit(method="laplace")
    np.testing.assert_allclose(np.asarray(res.predict(bh, conditional=True)),
                               np.asarray(res.predict(conditional=True)), rtol=1e-12)


def test_unseen_levels_are_refused_unless_allowed(lap_urban, contraception):
    new = contraception.head(4).assign(district=999)
    with pytest.raises(ValueError, match=r"\(1 \+ urban \| district\).*C\(district\)\[999\]"
                                         r".*allow_new_levels=True"):
        lap_urban.predict(new, conditional=True)
    with pytest.raises(ValueError, match="allow_new_levels=True"):
        lap_urban.get_prediction(new, conditional=True)
    got = lap_urban.predict(new, conditional=True, allow_new_levels=True)
    np.testing.assert_allclose(np.asarray(got), np.asarray(lap_urban.predict(new)),
                               rtol=1e-12)
    # get_prediction: the new district's effects have the prior covariance Sigma, so
    # Var(eta) = x' Cov(beta) x + m' Sigma m with m = (1, urban).
    pred = lap_urban.get_prediction(new, conditional=True, allow_new_levels=True)
    marg = lap_urban.get_prediction(new)
    nu = np.asarray(lap_urban.params)[lap_urban.model.k_fe:]
    S = np.array([[nu[0], nu[1]], [nu[1], nu[2]]])
    m = np.column_stack([np.ones(4), (new["urban"] == "Y").to_numpy(float)])
    np.testing.assert_allclose(pred.linpred.se ** 2 - marg.linpred.se ** 2,
                               np.einsum("ia,ab,ib->i", m, S, m), rtol=1e-10)


# ------------------------------------------------------------- 2. summaries
def _pvalues(table):
    """``{row name: p-value}`` of a summary table (the p-value is column 4)."""
    out = {}
    for row in table.data[1:]:
        out[str(row[0]).strip()] = float(str(row[4]).strip())
    return out


def _check_pvalue_convention(res, table):
    k = res.model.k_fe
    params, bse = np.asarray(res.params), np.asarray(res.bse)
    got = _pvalues(table)
    for j, name in enumerate(res.param_names[k:], start=k):
        z = params[j] / bse[j]
        want = 2 * stats.norm.sf(abs(z)) if " Cov(" in name else stats.norm.sf(z)
        assert got[name] == pytest.approx(want, rel=1e-3, abs=1e-4), name


def test_laplace_summary_works_with_correlated_terms(lap_urban):
    smry = lap_urban.summary()  # raised ValueError (zip of unequal lengths) before
    text = str(smry)
    assert "VarCorr" in text and "district Cov(urban[T.Y], Intercept)" in text
    assert all("MCSE" not in str(t) for t in smry.tables)
    _check_pvalue_convention(lap_urban, smry.tables[2])


def test_mcla_and_laplace_tables_agree_on_p_values(mcla_slope, slope_data):
    lap = MonteCarloGLMM.from_formula("y ~ x + (1 + x | g)", data=slope_data,
                                      family=BINOMIAL).fit(method="laplace")
    for res in (mcla_slope, lap):
        _check_pvalue_convention(res, res.summary().tables[2])
    # The covariance's row is two-sided in both (the Laplace table was one-sided).
    cov = "g Cov(x, Intercept)"
    z = lap.params[cov] / lap.bse[cov]
    assert _pvalues(lap.summary().tables[2])[cov] == pytest.approx(
        2 * stats.norm.sf(abs(z)), rel=1e-3, abs=1e-4)


# ------------------------------------------------------------- 3. remove_data
def test_remove_data_drops_draws_and_keeps_inference():
    # Monte Carlo draws to drop (the default fit of one factor is the deterministic
    # quadrature, whose one "draw" is small)
    res, bh = _boothhobert_fit(sampler="laplace")
    before = len(pickle.dumps(res))
    params, bse = res.params.copy(), res.bse.copy()
    ci = np.asarray(res.conf_int())
    res.remove_data()
    after = len(pickle.dumps(res))
    # The draws (m x q) and the layout's copy of the data dominate the pickle (salamander:
    # 4.66 MB -> 34 KB).
    assert after * 20 < before, (before, after)
    assert res.engine is None and res.model.arrays is None
    text = str(res.summary())  # summary() failed after remove_data (design was wiped)
    assert "Variance components" in text
    pd.testing.assert_series_equal(res.params, params)
    pd.testing.assert_series_equal(res.bse, bse)
    np.testing.assert_array_equal(np.asarray(res.conf_int()), ci)
    assert np.isfinite(float(np.squeeze(res.t_test("x1 = 0").effect)))
    assert res.random_effects().shape == (len(res.model.vc_names), 2)
    # New data still predict, conditionally too.
    assert np.asarray(res.predict(bh.head(), conditional=True)).shape == (5,)
    loaded = pickle.loads(pickle.dumps(res))
    pd.testing.assert_series_equal(loaded.params, params)


@pytest.mark.parametrize("call", [
    lambda r: r.predict(),
    lambda r: r.predict(conditional=True),
    lambda r: r.get_prediction(),
    lambda r: r.fittedvalues,
    lambda r: r.resid_response,
    lambda r: r.resid_pearson,
    lambda r: r.random_effects_cov,
    lambda r: r.simulate(),
    lambda r: r.profile("z1"),
    lambda r: r.conf_int(method="profile"),
    lambda r: r.llnull,
])
def test_remove_data_gives_a_clear_error(call):
    from glmm_sm.results.mcla import DataRemovedError

    res, _ = _boothhobert_fit()
    res.remove_data()
    with pytest.raises(DataRemovedError, match=r"had its data removed by remove_data\(\); "
                                               "refit or keep the data"):
        call(res)


# ------------------------------------------------------------- 4. silent substitutions
def test_nan_importance_weight_is_an_error_naming_the_block():
    from glmm_sm.mcla.engine import _rescaled

    A = np.full(3, -np.inf)
    b = np.array([[0.0, -1.0], [0.5, np.nan], [-np.inf, -np.inf]])
    with pytest.raises(FloatingPointError, match=r"block\(s\) \[1\]"):
        _rescaled(A, b)
    # -inf log weights are weight 0, also in a block whose weights are all 0 so far.
    newA, v, sc = _rescaled(A, np.array([[0.0, -1.0], [0.5, 0.0], [-np.inf, -np.inf]]))
    np.testing.assert_array_equal(v[2], [0.0, 0.0])
    assert np.all(np.isfinite(v)) and np.all(sc == 0)


def test_llf_is_never_clipped():
    res, _ = _boothhobert_fit()
    r = res._results
    const = r.llf - r.llf_mc
    r.llf_mc = 5.0 - const  # as if the Monte Carlo estimate came out above 0
    for key in ("llf", "aic", "bic"):
        r._cache.pop(key, None)
    assert r.llf == pytest.approx(5.0)
    k = len(r.params)
    assert r.aic == pytest.approx(2 * k - 10.0)
    assert "above 0" in str(r.summary())


def test_prediction_variance_not_clipped_beyond_rounding(lap_urban, contraception):
    """A covariance that is not positive semi-definite gives NaN standard errors and a
    warning, not 0."""
    r = lap_urban._results
    saved = r.normalized_cov_params
    try:
        r.normalized_cov_params = -saved
        with pytest.warns(RuntimeWarning, match="beyond rounding"):
            pred = lap_urban.get_prediction(contraception.head(3))
        assert np.all(np.isnan(pred.se_mean))
    finally:
        r.normalized_cov_params = saved


def test_nonnegative_up_to_rounding():
    from glmm_sm.spec.validation import nonnegative_up_to_rounding

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(nonnegative_up_to_rounding([-1e-17, 0.5], 1.0, "v"),
                                      [0.0, 0.5])
    with pytest.warns(RuntimeWarning, match=r"v: 1 value\(s\) below 0 beyond rounding"):
        got = nonnegative_up_to_rounding([-1e-3, 0.5], 1.0, "v")
    assert np.isnan(got[0]) and got[1] == 0.5


def test_whitening_skipped_is_recorded():
    from glmm_sm.spec.params import ParamTransform

    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    X = np.column_stack([np.ones(50), x, x + 1e-12 * rng.normal(size=50)])
    tr = ParamTransform(X, 1)
    assert tr.whitening_note is not None and "rank deficient" in tr.whitening_note
    assert ParamTransform(X[:, :2], 1).whitening_note is None


def test_dask_client_dropping_rao_blackwell_is_recorded():
    from models import crossed

    from glmm_sm.fit.options import FitOptions
    from glmm_sm.mcla.rb.round import rb_structure

    mod = crossed()
    assert rb_structure(mod, FitOptions(), None, None) is not None  # would integrate
    notes = []
    assert rb_structure(mod, FitOptions(), None, object(), notes=notes) is None
    assert len(notes) == 1 and "Dask" in notes[0]


def test_from_formula_frame_second_warns():
    bh = glmm_sm.datasets.load("BoothHobert")
    with pytest.warns(FutureWarning, match=r"from_formula\(formula, vc_formulas, data\)"):
        mod = MonteCarloGLMM.from_formula("y ~ 0 + x1 + (1 | z1)", bh, family="bernoulli")
    assert mod.vcp_names == ["z1"]


def test_laplace_nan_covariance_is_warned(monkeypatch):
    import glmm_sm.results.laplace as lr

    bh = glmm_sm.datasets.load("BoothHobert")
    mod = MonteCarloGLMM.from_formula("y ~ 0 + x1", {"z1": "0 + C(z1)"}, bh,
                                      family="bernoulli")
    real = lr.laplace_hessian
    monkeypatch.setattr(lr, "laplace_hessian", lambda *a, **k: -real(*a, **k))
    with pytest.warns(ConvergenceWarning, match="Laplace log-likelihood is not negative "
                                                "definite"):
        res = mod.fit(method="laplace")
    assert not res.converged and np.all(np.isnan(res.bse))
    assert any("not negative definite" in w for w in res.fit_log.warnings)


def test_laplace_value_of_a_precision_that_does_not_factor_is_minus_inf(monkeypatch):
    """No jitter inside the Laplace log-determinant: a block whose precision is not
    positive definite has no Laplace value (-inf), and the block is named."""
    from glmm_sm.laplace.step import BlockSystem, checked_cholesky, laplace_loglike

    M = np.array([[[2.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [2.0, 1.0]]])
    L, ok = checked_cholesky(M)
    np.testing.assert_array_equal(ok, [True, False])
    np.testing.assert_allclose(L[0] @ L[0].T, M[0])

    bh = glmm_sm.datasets.load("BoothHobert")
    mod = MonteCarloGLMM.from_formula("y ~ 0 + x1", {"z1": "0 + C(z1)"}, bh,
                                      family="bernoulli")
    system = mod.block_system()
    beta, nu = np.array([0.5]), np.array([1.0])
    value, mode = laplace_loglike(system, beta, nu)
    assert np.isfinite(value) and mode.not_pd.size == 0
    real = BlockSystem.precision

    def broken(self, h, dinv):  # the first block's precision made indefinite
        mats = real(self, h, dinv)
        mats[0] = mats[0].copy()
        mats[0][0] = -mats[0][0]
        return mats

    monkeypatch.setattr(BlockSystem, "precision", broken)
    value, mode = laplace_loglike(system, beta, nu)
    assert value == -np.inf
    assert mode.not_pd.tolist() == [int(system.groups[0][1][0])]
