"""Published GLMM data sets fitted with default options, checked against exact quadrature.

The corpus (``tests/corpus.py``, data in ``tests/data/``, provenance in its README): lme4's
Arabidopsis and grouseticks, mlmRev's Contraception and guImmun, MASS's epil, geepack's ohio
and respiratory, and glmm's bacteria, each with its usual model (issue 9, item 5).

Every default fit (``random_state`` fixed per data set, ``n_jobs=1``) must raise nothing,
report convergence, reach ``max MCSE/SE <= 0.1`` (the default target) and end at a strict
maximum (``eigvalsh(res.hessian) < 0``).

Where the model has one random intercept (Contraception, epil, ohio, respiratory,
bacteria) the exact MLE is known by adaptive Gauss-Hermite quadrature (``tests/aghq.py``,
60 nodes, independent of the package).  The Monte Carlo MLE differs from it by Monte Carlo
error (bias O(1/m), far below the MCSE), by the quadrature error and by what each
optimizer left undone.  The last three are measured, not assumed: the quadrature error as
the change of the AGHQ MLE from 60 to 100 nodes, and each optimizer's residual as its
remaining Newton step ``-H^{-1} g`` (they are exact shifts, so they add linearly).  Each
estimate must satisfy

    |mcla - aghq| <= 3 sqrt(mcse^2 + quad^2) + |step_mcla| + |step_aghq| + 1e-10 SE

(the last term a floor for rounding, see ``ROUNDING``): a two-sided false-alarm rate of
0.27% per parameter when the MCSE is right (31 parameters in all: about 8% that one of
them exceeds it; the seeds are fixed, so an excess is reproducible, never flaky).
Standard errors are compared as ratios: the MCLA SE is the inverse observed information
of ``l_m``, a Monte Carlo estimate of the exact one, and must lie within 10% of the
quadrature SE.

The AGHQ code itself is checked against the package's stored exact MLEs (BoothHobert,
bacteria, cbpp: ``tests/results/exact_mle.py``), against statsmodels' GLM as ``nu -> 0``,
and its Hessian against finite differences of its log-likelihood.
"""

from __future__ import annotations

import os
import time
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import patsy
import pytest
import statsmodels.api as sm
from aghq import RandomInterceptGLMM
from corpus import NAMES, SINGLE_INTERCEPT, load
from models import load_result
from statsmodels.tools.numdiff import approx_hess3

import glmm_sm

#: Long fits, skipped with ``GLMM_SM_CORPUS_QUICK=1`` (CI runs them): guImmun's blocks hold
#: up to 38 random effects (a community and its mothers) and its default fit needs
#: m = 120000 draws, about 2 minutes on two cores.
LONG = {"guImmun"}
FULL = os.environ.get("GLMM_SM_CORPUS_QUICK") != "1"
N_SIGMA = 3.0
SE_RTOL = 0.10
NODES, NODES_CHECK = 60, 100
#: Floating-point floor of the comparison, in standard errors.  A within-cluster contrast
#: (epil's V4) has an MCSE of ~1e-11 or a reported 0, and both fits locate its maximum only
#: up to the rounding of their gradients: ``SE^2 n eps max|term|`` ~ 1e-14 (epil), far
#: below 1e-10 SE and below every other parameter's MCSE (MCSE/SE > 1e-3).
ROUNDING = 1e-10
RESULTS = Path(__file__).parent / "results"


EXACT = load_result("exact_mle")


# --------------------------------------------------------------------------- helpers
def _aghq_model(y, X, groups, family, trials=None, n_nodes=NODES):
    return RandomInterceptGLMM(np.asarray(y, dtype=float), np.asarray(X, dtype=float),
                               np.asarray(groups), family, trials=trials, n_nodes=n_nodes)


@cache
def aghq_fit(name):
    """``(names, AGHQResult, quadrature error)`` for a single-intercept corpus data set."""
    case = load(name)
    y, X = patsy.dmatrices(case.formula, case.data, return_type="dataframe")
    groups = case.data.loc[y.index, case.cluster]
    res = _aghq_model(y.iloc[:, 0], X, groups, case.family_name).fit()
    check = _aghq_model(y.iloc[:, 0], X, groups, case.family_name,
                        n_nodes=NODES_CHECK).fit(start=res.params)
    return [*X.columns, "nu"], res, np.abs(check.params - res.params)


@cache
def corpus_fit(name):
    """The default fit of ``name``: ``(results or None, seconds, exception or None, warnings)``."""
    case = load(name)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = case.model().fit(random_state=case.seed, disp=False, n_jobs=1)
        except Exception as exc:  # reported by the tests below, not swallowed
            return None, time.perf_counter() - t0, exc, caught
    return res, time.perf_counter() - t0, None, caught


def _fitted(name):
    res, seconds, exc, caught = corpus_fit(name)
    if exc is not None:
        raise AssertionError(f"{name}: fit raised {type(exc).__name__} after "
                             f"{seconds:.1f} s: {exc}") from exc
    ratio = np.asarray(res.mcse()) / np.asarray(res.bse)
    print(f"\n{name}: {seconds:.2f} s, m = {res.m}, rounds = {len(res.fit_log.rounds)}, "
          f"max MCSE/SE = {np.max(ratio):.3f}, converged = {res.converged} "
          f"({res.fit_log.message}); warnings: {[str(w.message)[:80] for w in caught]}")
    return res


# --------------------------------------------------------------------------- the data
ROWS = {"Arabidopsis": 625, "Contraception": 1934, "guImmun": 2159, "epil": 236,
        "ohio": 2148, "respiratory": 444, "bacteria": 220, "grouseticks": 403}
BLOCKS = {"Arabidopsis": 9, "Contraception": 60, "guImmun": 161, "epil": 59, "ohio": 537,
          "respiratory": 111, "bacteria": 50, "grouseticks": 63}


@pytest.mark.parametrize("name", NAMES)
def test_corpus_model_builds(name):
    case = load(name)
    mod = case.model()
    assert mod.nobs == ROWS[name] == len(case.data)
    assert len(mod.blocks) == BLOCKS[name]
    assert list(mod.vcp_names) == list(case.vc_formulas)
    if name in SINGLE_INTERCEPT:
        assert max(b.q for b in mod.blocks) == 1


@pytest.mark.parametrize("name, inner, outer", [("Arabidopsis", "gen", "popu"),
                                                ("guImmun", "mom", "comm"),
                                                ("grouseticks", "BROOD", "LOCATION")])
def test_nested_labels_are_unique(name, inner, outer):
    # "inner within outer" is coded as two intercepts only because every inner label
    # belongs to a single outer level (as lme4's (1 | outer/inner) would give).
    df = load(name).data
    assert df.groupby(inner)[outer].nunique().max() == 1


def test_corpus_factor_levels_follow_r():
    assert list(load("Arabidopsis").data["amd"].cat.categories) == ["unclipped", "clipped"]
    assert list(load("guImmun").data["ord"].cat.categories) == ["01", "23", "46", "7p"]
    assert list(load("grouseticks").data["YEAR"].cat.categories) == ["95", "96", "97"]
    assert load("grouseticks").data["HEIGHT"].between(403, 533).all()
    resp = load("respiratory").data
    assert resp.groupby("patient").size().eq(4).all() and resp["patient"].nunique() == 111


def test_corpus_load_rejects_unknown_name():
    with pytest.raises(ValueError, match="name: unknown corpus data set 'cbpp'"):
        load("cbpp")


# --------------------------------------------------------------------------- AGHQ itself
def _cbpp():
    cb = glmm_sm.datasets.load("cbpp2")
    agg = cb.groupby(["herd", "period"], observed=True)["Y"].agg(["sum", "count"])
    return agg.reset_index().rename(columns={"sum": "incidence"})


# Stored exact MLE -> (data, response, fixed-effects formula, cluster, family, trials column).
STORED = {
    "BOOTH_HOBERT": (lambda: glmm_sm.datasets.load("BoothHobert"), "y", "0 + x1", "z1",
                     "bernoulli", None),
    "BACTERIA": (lambda: glmm_sm.datasets.load("bacteria"), "y2", "trt + I(week > 2)", "ID",
                 "bernoulli", None),
    "CBPP": (_cbpp, "incidence", "period", "herd", "binomial", "count"),
}


def _stored_case(which):
    load_data, response, rhs, cluster, family, trials = STORED[which]
    data = load_data()
    X = patsy.dmatrix(rhs, data, return_type="dataframe")
    n = None if trials is None else data[trials].to_numpy(dtype=float)
    return list(X.columns), _aghq_model(data[response], X, data[cluster], family, n)


@pytest.mark.parametrize("which", list(STORED))
def test_aghq_matches_stored_exact_mle(which):
    table = getattr(EXACT, which)
    names, mod = _stored_case(which)
    res = mod.fit()
    assert res.success, res.message
    assert list(table["params"])[:-1] == names
    # The stored values are rounded to 6 decimals; our optimum is exact to ~1e-12.
    np.testing.assert_allclose(res.params, list(table["params"].values()), rtol=0,
                               atol=EXACT.QUADRATURE_ROUNDING)
    if which == "CBPP":
        llf = res.llf - mod.log_const
        assert abs(llf - table["loglike_without_constant"]) <= EXACT.QUADRATURE_ROUNDING
    else:
        assert abs(res.llf - table["loglike"]) <= EXACT.QUADRATURE_ROUNDING
    if "bse" in table:  # stored to 5 decimals
        np.testing.assert_allclose(res.bse, list(table["bse"].values()), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["Contraception", "epil"])
def test_aghq_tends_to_glm_as_nu_vanishes(name):
    case = load(name)
    y, X = patsy.dmatrices(case.formula, case.data, return_type="dataframe")
    glm = sm.GLM(y, X, family=case.family).fit()
    mod = _aghq_model(y.iloc[:, 0], X, case.data.loc[y.index, case.cluster], case.family_name)
    theta = np.r_[np.asarray(glm.params), 1e-12]
    # With nu = 1e-12 the log-likelihood is the GLM's plus nu/2 sum_i (S_i^2 + l_i'') + O(nu^2)
    # (S_i, l_i'' the cluster's score and curvature in its intercept, at most ~1e4 here), and
    # the fixed-effect score moves from the GLM's (~1e-9) by O(nu) as well.
    assert abs(mod.loglike(theta) - glm.llf) <= 1e-7
    np.testing.assert_allclose(mod.score(theta)[:-1], 0.0, atol=1e-6)


def test_aghq_hessian_matches_finite_differences():
    _, mod = _stored_case("BACTERIA")
    theta = np.r_[list(EXACT.BACTERIA["params"].values())] + 0.05
    H = mod.hessian(theta)
    H_fd = approx_hess3(theta, mod.loglike)
    # approx_hess3 (steps h ~ eps^(1/4) |theta| ~ 1e-4) has a roundoff error of about
    # eps |loglike| / h^2 ~ 2e-16 * 100 / 1e-8 = 2e-6 (truncation O(h^2) is smaller); the
    # analytic Hessian (nodes held fixed) differs from the value's derivative only by the
    # quadrature error, ~1e-12.
    np.testing.assert_allclose(H, H_fd, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", SINGLE_INTERCEPT)
def test_aghq_does_not_move_with_more_nodes(name):
    _, res, quad = aghq_fit(name)
    assert res.success, res.message
    # 60 -> 100 nodes moves no estimate by more than 1e-5 of its standard error: far below
    # every MCSE the comparison uses (MCSE/SE > 1e-3 for the variance components).
    assert np.all(quad <= 1e-5 * res.bse), quad / res.bse


# --------------------------------------------------------------------------- MCLA fits
def _budgeted(names):
    skip = pytest.mark.skipif(not FULL, reason="long fit; GLMM_SM_CORPUS_QUICK=1 is set")
    return [pytest.param(n, marks=skip) if n in LONG else n for n in names]


@pytest.mark.slow
@pytest.mark.parametrize("name", _budgeted(NAMES))
def test_corpus_default_fit(name):
    res = _fitted(name)
    # The suite turns glmm_sm's RuntimeWarnings into errors; the fit records them instead.
    numeric = [f"{w.filename}:{w.lineno}: {w.message}" for w in corpus_fit(name)[3]
               if issubclass(w.category, RuntimeWarning) and "glmm_sm" in w.filename]
    assert not numeric, numeric
    ratio = np.asarray(res.mcse()) / np.asarray(res.bse)
    assert res.converged, res.fit_log.message
    assert np.max(ratio) <= 0.1, dict(zip(res.params.index, ratio, strict=True))
    eig = np.linalg.eigvalsh(res.hessian)
    assert np.all(eig < 0), eig


@pytest.mark.slow
@pytest.mark.parametrize("name", SINGLE_INTERCEPT)
def test_corpus_fit_matches_aghq(name):
    res = _fitted(name)
    names, exact, quad = aghq_fit(name)
    assert list(res.params.index[:-1]) == names[:-1]
    est, mcse = np.asarray(res.params), np.asarray(res.mcse())
    step_mcla = np.asarray(res.cov_params()) @ np.asarray(res.gradient)
    # a deterministic default fit (sampler="auto" on one grouping factor: MCSE 0) adds its
    # own measured quadrature error: the Newton step under a finer rule
    q = res.fit_log.quadrature
    step_quad = (np.asarray(q["step_in_se"]) * np.asarray(res.bse)) if q else 0.0
    bound = (N_SIGMA * np.sqrt(mcse**2 + quad**2) + np.abs(step_mcla)
             + np.abs(exact.newton_step) + ROUNDING * exact.bse + N_SIGMA * np.abs(step_quad))
    err = np.abs(est - exact.params)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (est - exact.params) / mcse
    for k, label in enumerate(res.params.index):
        print(f"  {label:24s} mcla {est[k]: .6f}  aghq {exact.params[k]: .6f}  "
              f"mcse {mcse[k]:.2e}  (mcla-aghq)/mcse {z[k]:+.2f}  "
              f"se ratio {res.bse.iloc[k] / exact.bse[k]:.3f}")
    bad = {n: (float(e), float(b)) for n, e, b in zip(res.params.index, err, bound,
                                                      strict=True) if not e <= b}
    assert not bad, f"|mcla - aghq| > bound: {bad}"


@pytest.mark.slow
@pytest.mark.parametrize("name", SINGLE_INTERCEPT)
def test_corpus_standard_errors_match_aghq(name):
    res = _fitted(name)
    _, exact, _ = aghq_fit(name)
    ratio = np.asarray(res.bse) / exact.bse
    assert np.all(np.abs(ratio - 1) <= SE_RTOL), dict(zip(res.params.index, ratio,
                                                          strict=True))
