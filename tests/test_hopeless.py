"""Hopeless models end early and say why (issue 23, item 4).

Each case is a model no number of rounds or draws can fit; before this file each ran until
the time budget (600 s by default), growing m, and ended with an unclear message.  Now the
fit ends within its first rounds, unconverged, with a message that names the component or
covariate and the model to fit instead.  Every test here fails on the code before it: the
fits below get a time budget of 30 s, which the old code used up in more rounds, without
the diagnosis.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.special import expit
from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

import glmm_sm
from glmm_sm import MonteCarloGLMM
from glmm_sm.fit.separation import within_group_separation

SAL_VC = {"F": "0 + C(Female)", "M": "0 + C(Male)"}


def _fit(model, **kw):
    kw.setdefault("random_state", 0)
    kw.setdefault("time_budget", 30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = model.fit(disp=False, **kw)
    return res, [str(w.message) for w in caught], [w.category for w in caught]


def slope_data(seed=1, groups=20, per=10):
    """Bernoulli responses with a random intercept only (no slope variance)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per)
    x = rng.normal(size=g.size)
    u = rng.normal(scale=0.8, size=groups)
    y = (rng.uniform(size=g.size) < expit(0.3 + 0.7 * x + u[g])).astype(float)
    return pd.DataFrame({"y": y, "x": x, "g": g, "h": np.tile(np.arange(10), g.size // 10)})


def threshold_data(seed=2, groups=20, per=15):
    """``y = 1[x > c_g]``: separated within every group, by a threshold of its own."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per)
    x = rng.normal(size=g.size)
    c = rng.normal(scale=0.5, size=groups)
    return pd.DataFrame({"y": (x > c[g]).astype(float), "x": x, "g": g})


# ---------------------------------------------------------------- (a) all 0 / all 1
@pytest.mark.parametrize("value, kind", [(0, "every response is 0"),
                                         (1, "every response is a success")])
def test_constant_bernoulli_response_stops_after_the_first_round(value, kind):
    df = glmm_sm.datasets.load("salamander").assign(Mate=value)
    mod = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross", SAL_VC, df, family="bernoulli")
    res, texts, cats = _fit(mod)
    assert PerfectSeparationWarning in cats
    assert not res.converged and len(res.fit_log.rounds) == 1
    msg = res.fit_log.message
    assert kind in msg and "does not exist" in msg and "Cross[R/R]" in msg
    assert "stopped after its first round" in msg
    assert res.fit_log.rounds[0]["m"] == 4000  # m never grew


# ---------------------------------------------------------------- (b) slope variance
@pytest.mark.parametrize("formula", [
    "y ~ x + (1 + x | g)",
    pytest.param("y ~ x + (1 + x | g) + (1 | h)", marks=pytest.mark.slow)])
def test_unidentified_slope_variance_names_the_term_and_the_model_to_fit(formula):
    """No slope variance in the data: the correlated term's estimate is singular (a
    correlation at 1) and not a strict maximum; the fit ends in its first round and says
    to drop the slope or use ||.  (The crossed variant adds an h without any variance.)
    A deterministic fit (one grouping factor) ends after its pilot, in the round with the
    full rule, so that its log-likelihood is that rule's.  Most of the 15 s is the Laplace
    start, which ends without converged modes here."""
    mod = MonteCarloGLMM.from_formula(formula, None, slope_data(), family="bernoulli")
    with np.errstate(all="ignore"):
        res, texts, _ = _fit(mod, time_budget=600)  # not the Laplace start's 15 s under load
    pilot = res.fit_log.sampler["used"] == "quadrature"
    assert not res.converged and len(res.fit_log.rounds) == 1 + pilot
    msg = res.fit_log.message
    assert f"round {int(pilot)}: the estimate is a singular fit" in msg
    assert "covariance of ['g'] is singular" in msg
    assert "(1 | g) without the slope(s), or (1 + x || g) with independent effects" in msg
    assert any("covariance of ['g'] is singular" in t for t in texts)


# ---------------------------------------------------------------- (c) ESS collapse
def test_ess_collapse_that_does_not_recover_ends_the_fit():
    """With 20 draws for salamander's 60 crossed effects the ESS falls to a few draws: the
    fit ends at the first two rounds in a row (after the first, centred at the Laplace fit)
    whose ESS is below 5, saying that m is the problem (it ran all max_rounds before)."""
    sal = glmm_sm.datasets.load("salamander")
    mod = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross", SAL_VC, sal, family="bernoulli")
    res, texts, _ = _fit(mod, m=20, max_rounds=12)
    rounds = res.fit_log.rounds
    low = [r["min_ess"] < 5 for r in rounds]
    last = len(rounds) - 1
    assert not res.converged and 2 <= last < 11
    assert low[last] and low[last - 1] and last - 1 >= 1
    assert not any(low[r] and low[r - 1] for r in range(2, last))  # not earlier
    msg = res.fit_log.message
    assert msg.startswith("the Monte Carlo likelihood collapsed: the smallest block ESS was")
    assert f"in round {last} and below 5 in the round before" in msg
    assert "m fixed at 20, a larger m (or m='auto')" in msg


# ---------------------------------------------------------------- (d) within groups
def test_within_group_separation_is_found_by_the_lp():
    df = threshold_data()
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 | g)", None, df, family="bernoulli")
    a = t = mod.arrays
    found = within_group_separation(a.X, a.Z, a.y, a.ntrials, a.weights, a.family.code)
    assert found is not None
    np.testing.assert_array_equal(found.fixed, [0.0, 1.0])  # x, not the intercept
    assert set(a.ident[found.columns]) == {0}
    # none in ordinary data, nor where the random effects alone fit every response (one
    # effect per row), nor for counts between 0 and their bound
    ok = slope_data()
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 | g)", None, ok, family="bernoulli")
    a = mod.arrays
    assert within_group_separation(a.X, a.Z, a.y, a.ntrials, a.weights, 0) is None
    n = len(t.y)
    assert within_group_separation(t.X, sp.identity(n, format="csr"), t.y, t.ntrials,
                                   t.weights, 0) is None
    y = np.where(t.y > 0, 2.0, 1.0)
    assert within_group_separation(t.X, t.Z, y, np.full(n, 3.0), t.weights, 0) is None
    assert within_group_separation(t.X, t.Z, t.y, t.ntrials, t.weights, 1) is None


def test_within_group_separation_ends_the_fit_naming_covariate_and_group():
    """y = 1[x > c_g]: the slope and the variance run off together (x = 135 and a variance of
    27,639 with m grown to 10^6 before); now the fit ends after its first round."""
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 | g)", None, threshold_data(),
                                      family="bernoulli")
    res, texts, _ = _fit(mod)
    assert not res.converged and len(res.fit_log.rounds) == 1
    msg = res.fit_log.message
    assert msg.startswith("the responses are separated within the levels of ['g'] by ['x']")
    assert "maximum likelihood estimate is at infinity" in msg
    assert "without the within-group variation of ['x']" in msg
    assert any("separated within the levels of ['g']" in t for t in texts)
