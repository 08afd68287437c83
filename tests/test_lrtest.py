"""Likelihood-ratio tests (``glmm_sm.lrtest``, ``compare_lr_test``) and ``llnull``.

Small simulated designs (a random intercept per cluster, fixed draws per fit) keep each fit
well under a second.  The calibration check simulates under the null ``nu = 0`` and compares
rejection counts with their binomial distribution (MCLA_SPEC 12.4: the statistic is then
``0.5 chi2(0) + 0.5 chi2(1)``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

import glmm_sm
from glmm_sm import MonteCarloGLMM, lrtest
from glmm_sm.datasets import load
from glmm_sm.inference.lrtest import chibar_weights

M = 2000


def _clusters(seed, J=12, n=8, nu=1.0, family="bernoulli", beta=(0.0, 0.6)):
    """``J`` clusters of ``n`` observations, covariates ``x`` and ``z``, offset ``o``."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(J), n)
    x, z = rng.normal(size=J * n), rng.normal(size=J * n)
    o = 0.2 * rng.normal(size=J * n)
    eta = beta[0] + beta[1] * x + o + rng.normal(scale=np.sqrt(nu), size=J)[g]
    if family == "bernoulli":
        y = rng.binomial(1, 1.0 / (1.0 + np.exp(-eta)))
    else:
        y = rng.poisson(np.exp(eta))
    return pd.DataFrame({"y": y, "x": x, "z": z, "o": o, "g": g,
                         "w": rng.uniform(0.5, 2.0, size=J * n)})


def _glmm(formula, df, vc=None, family="bernoulli", seed=0, **kw):
    mod = MonteCarloGLMM.from_formula(formula, vc or {"g": "0 + C(g)"}, df, family=family, **kw)
    return mod.fit(random_state=seed, disp=False, n_jobs=1, m=M)


@pytest.fixture(scope="module")
def data():
    return _clusters(3)


@pytest.fixture(scope="module")
def full(data):
    return _glmm("y ~ x", data)


@pytest.fixture(scope="module")
def glm_x(data):
    return sm.GLM.from_formula("y ~ x", data, family=sm.families.Binomial()).fit()


def test_one_component_uses_the_named_50_50_mixture(full, glm_x):
    lr = lrtest(full, glm_x)
    assert lr.dropped_vc == ("g",) and lr.df_fixed == 0 and lr.df == 1
    assert lr.mixture == ((0.5, 0), (0.5, 1))
    assert lr.mixture_name == "0.5 chi2(0) + 0.5 chi2(1)"
    assert lr.statistic > 0
    assert lr.pvalue == pytest.approx(0.5 * stats.chi2.sf(lr.statistic, 1), rel=1e-12)
    naive = lrtest(full, glm_x, mixture=False)
    assert naive.mixture_name == "chi2(1)" and naive.statistic == lr.statistic
    assert naive.pvalue == pytest.approx(2 * lr.pvalue, rel=1e-12)
    text = lr.summary()
    assert "0.5 chi2(0) + 0.5 chi2(1)" in text and "Self and Liang" in text
    assert str(lr) == text
    # The GLM's log-likelihood is exact; the statistic's MCSE is the full fit's, doubled.
    assert lr.llf_reduced == pytest.approx(glm_x.llf, rel=1e-10)
    assert lr.llf_reduced_mcse == 0 and lr.llf_full == full.llf
    assert lr.statistic_mcse == pytest.approx(2 * full.llf_mcse, rel=1e-12)
    assert lr.pvalue_mcse == pytest.approx(
        0.5 * stats.chi2.pdf(lr.statistic, 1) * lr.statistic_mcse, rel=1e-12)


def test_component_and_fixed_effect_dropped(full, data):
    glm_1 = sm.GLM.from_formula("y ~ 1", data, family=sm.families.Binomial()).fit()
    lr = lrtest(full, glm_1)
    assert lr.df == 2 and lr.df_fixed == 1 and lr.mixture == ((0.5, 1), (0.5, 2))
    expected = 0.5 * stats.chi2.sf(lr.statistic, 1) + 0.5 * stats.chi2.sf(lr.statistic, 2)
    assert lr.pvalue == pytest.approx(expected, rel=1e-12)


def test_fixed_effect_between_two_monte_carlo_fits(full, data):
    red = _glmm("y ~ 1", data, seed=5)
    lr = lrtest(full, red)
    assert lr.mixture_name == "chi2(1)" and lr.dropped_vc == () and lr.df == 1
    assert lr.statistic == pytest.approx(2 * (full.llf - red.llf), rel=1e-12)
    # independent draws: the two MCSEs combine in quadrature
    assert lr.statistic_mcse == pytest.approx(2 * np.hypot(full.llf_mcse, red.llf_mcse))
    assert lr.statistic_mcse > 0
    assert lr.pvalue == pytest.approx(stats.chi2.sf(lr.statistic, 1), rel=1e-12)
    assert full.compare_lr_test(red) == (lr.statistic, lr.pvalue, lr.df)


def test_compare_lr_test_matches_lrtest(full, glm_x):
    lr = lrtest(full, glm_x)
    assert full.compare_lr_test(glm_x) == (lr.statistic, lr.pvalue, 1)
    assert full.compare_lr_test(glm_x, mixture=False)[1] == pytest.approx(2 * lr.pvalue)


def test_chibar_weights_are_binomial():
    assert chibar_weights(1) == ((0.5, 0), (0.5, 1))
    assert chibar_weights(2) == ((0.25, 0), (0.5, 1), (0.25, 2))
    w = chibar_weights(3, df_fixed=2)
    np.testing.assert_allclose([a for a, _ in w], [1 / 8, 3 / 8, 3 / 8, 1 / 8])
    assert [d for _, d in w] == [2, 3, 4, 5]
    assert chibar_weights(3, 2, mixture=False) == ((1.0, 5),)
    assert chibar_weights(0, 4) == ((1.0, 4),)


def test_non_nested_models_are_refused(full, data, glm_x):
    binom = sm.families.Binomial()
    other = data.assign(y=1 - data["y"])
    cases = [
        (sm.GLM.from_formula("y ~ x", other, family=binom).fit(), "response"),
        (sm.GLM.from_formula("y ~ x", data.iloc[:-8], family=binom).fit(), "observations"),
        (sm.GLM.from_formula("y ~ x", data, family=sm.families.Poisson()).fit(),
         "reduced is Poisson"),
        (sm.GLM.from_formula("y ~ x", data, family=sm.families.Binomial(
            sm.families.links.Probit())).fit(), "Probit"),
        (sm.GLM.from_formula("y ~ x + z", data, family=binom).fit(), "'z'"),
        (sm.GLM.from_formula("y ~ x", data, family=binom, offset=data["o"]).fit(), "offset"),
        (_glmm("y ~ x", data.assign(h=data["g"] // 2), {"h": "0 + C(h)"}), "'h'"),
        (_glmm("y ~ x", data, {"g": "0 + C(g)"}, weights="w"), "weights"),
    ]
    for reduced, match in cases:
        with pytest.raises(ValueError, match="not nested") as err:
            lrtest(full, reduced)
        assert match in str(err.value), (match, str(err.value))
    with pytest.raises(ValueError, match="swap"):
        lrtest(_glmm("y ~ 1", data), full)
    with pytest.raises(ValueError, match="same parameters"):
        lrtest(full, full)
    with pytest.raises(TypeError, match="full must be"):
        lrtest(glm_x, full)
    with pytest.raises(TypeError, match="reduced must be"):
        lrtest(full, "y ~ x")
    with pytest.raises(TypeError, match="mixture"):
        lrtest(full, glm_x, mixture="yes")


def test_a_component_with_a_different_design_is_refused(data):
    full2 = _glmm("y ~ x", data.assign(k=data["g"] % 3),
                  {"g": "0 + C(g)", "k": "0 + C(k)"})
    swapped = _glmm("y ~ x", data.assign(k=data["g"] % 4), {"k": "0 + C(k)"})
    with pytest.raises(ValueError, match="different random-effects design"):
        lrtest(full2, swapped)
    # the same component alone is nested, with one component dropped
    lr = lrtest(full2, _glmm("y ~ x", data.assign(k=data["g"] % 3), {"k": "0 + C(k)"}))
    assert lr.dropped_vc == ("g",) and lr.mixture_name == "0.5 chi2(0) + 0.5 chi2(1)"


def test_glm_llf_on_the_same_scale_at_the_boundary():
    """murder (MCLA_SPEC 8): both components end at 0, so the fit is the Poisson GLM and
    its ``llf`` (with ``-log y!``) equals statsmodels'; the statistic is then 0, p = 1."""
    df = load("murder")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the components' designs coincide
        res = _glmm("y ~ race", df, {"black": "0 + C(black)", "white": "0 + C(white)"},
                    family="poisson", seed=1)
        only = _glmm("y ~ race", df, {"black": "0 + C(black)"}, family="poisson", seed=2)
    glm = sm.GLM.from_formula("y ~ race", df, family=sm.families.Poisson()).fit()
    assert res.boundary == ["black", "white"] and only.boundary == ["black"]
    assert res.llf == pytest.approx(glm.llf, rel=1e-12)
    lr = lrtest(res, glm)
    assert lr.mixture == ((0.25, 0), (0.5, 1), (0.25, 2)) and lr.df == 2
    assert abs(lr.statistic) < 1e-8 and lr.pvalue == 1.0
    # a reduced GLMM whose own fit put its component at 0
    lr2 = lrtest(res, only)
    assert lr2.dropped_vc == ("white",) and lr2.llf_reduced == only.llf
    assert lr2.pvalue == 1.0 and lr2.statistic_mcse == 0
    assert res.llnull == pytest.approx(glm.llnull, rel=1e-12)


def test_binomial_glm_codings_give_the_same_statistic():
    """A binomial GLM as (successes, failures) or as proportions with trials as
    ``var_weights``: the reduced log-likelihood is recomputed on the GLMM's scale (with
    ``log C(N, y)``), so both codings give the same test; the two-column GLM's own ``llf``
    already is on that scale."""
    rng = np.random.default_rng(11)
    J, n = 10, 4
    g = np.repeat(np.arange(J), n)
    size = rng.integers(1, 9, size=J * n)
    x = rng.normal(size=J * n)
    eta = -0.3 + 0.5 * x + rng.normal(scale=0.8, size=J)[g]
    succ = rng.binomial(size, 1 / (1 + np.exp(-eta)))
    df = pd.DataFrame({"s": succ, "f": size - succ, "x": x, "g": g, "p": succ / size,
                       "n": size})
    res = _glmm("s + f ~ x", df, family=sm.families.Binomial())
    two = sm.GLM.from_formula("s + f ~ x", df, family=sm.families.Binomial()).fit()
    prop = sm.GLM(df["p"], sm.add_constant(df["x"]), family=sm.families.Binomial(),
                  var_weights=df["n"]).fit()
    a, b = lrtest(res, two), lrtest(res, prop)
    assert a.llf_reduced == pytest.approx(two.llf, rel=1e-10)
    assert b.statistic == pytest.approx(a.statistic, rel=1e-8)
    assert res.llnull == pytest.approx(
        sm.GLM.from_formula("s + f ~ 1", df, family=sm.families.Binomial()).fit().llf,
        rel=1e-10)


def test_llnull_is_statsmodels_glm_llnull(data):
    """Intercept-only GLM with the same offset and weights (statsmodels' convention)."""
    res = _glmm("y ~ x", data, weights="w", offset="o")
    glm = sm.GLM.from_formula("y ~ x", data, family=sm.families.Binomial(), offset=data["o"],
                              var_weights=data["w"]).fit()
    assert res.llnull == pytest.approx(glm.llnull, rel=1e-10)
    pois = _clusters(4, family="poisson", beta=(0.5, 0.3))
    res_p = _glmm("y ~ 0 + x", pois, family="poisson")
    glm_p = sm.GLM.from_formula("y ~ 0 + x", pois, family=sm.families.Poisson()).fit()
    assert res_p.llnull == pytest.approx(glm_p.llnull, rel=1e-10)
    assert res_p.llnull < res_p.llf


@pytest.mark.slow
def test_pvalue_calibrated_under_the_null_nu_zero():
    """Data from a Poisson GLM (``nu = 0``); full = GLMM with a random intercept, reduced =
    the GLM.  Under the null the p-value of the 50:50 mixture has ``P(p <= a) = a`` for
    ``a < 1/2`` and an atom ``P(p = 1) = 1/2`` (fits at the boundary).  With R = 50 data sets
    each count is binomial; it must lie within 3 binomial SDs of its expectation (two-sided
    0.27% per count), and the p-values below 1/2, doubled, must pass a KS test of
    uniformity at level 0.001.  (A plain chi2(1) p-value would put P(p <= a) at a/2.)"""
    R, J, n = 50, 30, 5
    pvalues = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in range(R):
            rng = np.random.default_rng(100 + r)
            x = rng.normal(size=J * n)
            df = pd.DataFrame({"y": rng.poisson(np.exp(0.5 + 0.3 * x)), "x": x,
                               "g": np.repeat(np.arange(J), n)})
            res = _glmm("y ~ x", df, family="poisson", seed=r)
            glm = sm.GLM.from_formula("y ~ x", df, family=sm.families.Poisson()).fit()
            pvalues.append(lrtest(res, glm).pvalue)
    p = np.array(pvalues)
    for a, count in ((0.05, np.sum(p <= 0.05)), (0.1, np.sum(p <= 0.1)),
                     (0.25, np.sum(p <= 0.25)), (0.5, np.sum(p == 1.0))):
        sd = np.sqrt(R * a * (1 - a))
        assert abs(count - R * a) <= 3 * sd, (a, count, R * a, sd)
    assert stats.kstest(2 * p[p < 0.5], "uniform").pvalue > 0.001


@pytest.mark.slow
def test_pvalue_uniform_under_the_null_for_a_fixed_effect():
    """Two Monte Carlo fits on independent draws (m = 1000): Poisson GLMM data whose slope
    on ``x`` is 0, full ``y ~ x`` against reduced ``y ~ 1`` (both with the random
    intercept).  The p-value (chi2(1)) must be uniform: KS test at level 0.001, and the
    counts below 0.05, 0.1 and 0.25 within 3 binomial SDs of ``R a``."""
    R, J, n = 40, 20, 5
    pvalues = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in range(R):
            rng = np.random.default_rng(500 + r)
            g = np.repeat(np.arange(J), n)
            df = pd.DataFrame({"y": rng.poisson(np.exp(0.5 + rng.normal(scale=0.7,
                                                                         size=J)[g])),
                               "x": rng.normal(size=J * n), "g": g})
            fits = [MonteCarloGLMM.from_formula(f, {"g": "0 + C(g)"}, df, family="poisson")
                    .fit(random_state=r + k * R, disp=False, n_jobs=1, m=1000)
                    for k, f in enumerate(("y ~ x", "y ~ 1"))]
            pvalues.append(lrtest(*fits).pvalue)
    p = np.array(pvalues)
    assert stats.kstest(p, "uniform").pvalue > 0.001
    for a in (0.05, 0.1, 0.25):
        assert abs(np.sum(p <= a) - R * a) <= 3 * np.sqrt(R * a * (1 - a)), a


def test_lrtest_is_exported():
    assert glmm_sm.lrtest is lrtest and "lrtest" in glmm_sm.__all__
