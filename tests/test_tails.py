"""Pareto k of importance weights (PSIS): known tails are recovered."""

import math

import numpy as np
import pytest

from glmm_sm.mcla.tails import pareto_k, pareto_k_threshold, tail_size


@pytest.mark.parametrize("xi", [0.2, 0.5, 0.8])
def test_generalized_pareto_shape_is_recovered(xi):
    """Weights drawn from a GPD with shape xi: over 40 samples of 4000 the mean estimate is
    within 4 standard errors of xi plus the prior's pull toward 0.5 (weight 10 of ~190
    tail points, at most 0.05 * |xi - 0.5|)."""
    rng = np.random.default_rng(1)
    ks = np.array([pareto_k(np.log(((rng.random(4000)) ** (-xi) - 1) / xi))
                   for _ in range(40)])
    pull = 10 / (tail_size(4000) + 10) * abs(xi - 0.5)
    assert abs(ks.mean() - xi) <= 4 * ks.std(ddof=1) / math.sqrt(ks.size) + pull


@pytest.mark.parametrize("s", [0.6, 0.8])
def test_normal_proposal_narrower_than_the_target(s):
    """Target N(0, 1), proposal N(0, s^2) with s < 1: the weights exp(z^2 (1/s^2 - 1) / 2)
    have tail index k = 1 - s^2 (P(w > t) ~ t^(-1/k) up to log factors)."""
    rng = np.random.default_rng(2)
    ks = []
    for _ in range(30):
        z = rng.normal(0.0, s, 4000)
        ks.append(pareto_k(-0.5 * z**2 + 0.5 * (z / s) ** 2))
    assert abs(np.mean(ks) - (1 - s**2)) < 0.1


def test_light_tails_and_degenerate_input():
    rng = np.random.default_rng(3)
    z = rng.normal(0.0, 2.0, 4000)  # proposal wider than the target: bounded weights
    assert pareto_k(-0.5 * z**2 + 0.5 * (z / 2.0) ** 2) < 0
    assert math.isnan(pareto_k(np.zeros(4000)))  # equal weights: no tail to fit
    assert math.isnan(pareto_k(np.log(rng.random(20))))  # too few draws
    assert pareto_k_threshold(4000) == pytest.approx(0.7)
    assert pareto_k_threshold(100) == pytest.approx(0.5)


def test_block_pareto_k_streams_the_same_tail_as_all_weights():
    """The one-pass per-block estimate equals pareto_k on each block's full weight vector."""
    import glmm_sm
    from glmm_sm import MonteCarloGLMM
    from glmm_sm.mcla.tails import block_pareto_k

    df = glmm_sm.datasets.load("salamander")
    mod = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross", {"F": "0 + C(Female)",
                                                           "M": "0 + C(Male)"}, df,
                                      family="bernoulli")
    params = mod._laplace_estimate()[0]
    draws = mod.sample_draws(3000, random_state=5, params=params, chunk_size=700)
    eng = mod.engine
    U, logf, S, j0, j1 = draws.chunk_arrays(0, draws.m)
    _, _, b = eng.draw_terms(params, U, logf, S, j0, j1)
    want = np.array([pareto_k(row) for row in b])
    # Blocks whose largest weight is at most twice the mean get no k (too even to matter).
    ratio = np.exp(b.max(axis=1) - (np.logaddexp.reduce(b, axis=1) - np.log(b.shape[1])))
    want = np.where(ratio > 2.0, want, np.nan)
    assert np.isfinite(want).sum() >= 3
    np.testing.assert_allclose(block_pareto_k(eng, params), want, rtol=1e-12)
    assert np.all((want[np.isfinite(want)] > -1) & (want[np.isfinite(want)] < 0.7))


def test_heavy_tail_warning_fires_on_a_too_narrow_sampler_and_not_on_a_default_fit():
    """Draws from a proposal with 1/8 of the fitted variances and no defensive t, evaluated
    at the Laplace estimate: heavy-tailed weights, so the results warn; a default fit does
    not."""
    import warnings

    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    import glmm_sm
    from glmm_sm import MonteCarloGLMM
    from glmm_sm.fit.driver import FitLog, FitOutcome
    from glmm_sm.results.mcla import MonteCarloGLMMResults

    df = glmm_sm.datasets.load("salamander")
    mod = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross", {"F": "0 + C(Female)",
                                                           "M": "0 + C(Male)"}, df,
                                      family="bernoulli")
    params = mod._laplace_estimate()[0]
    narrow = params.copy()
    narrow[4:] /= 8.0
    mod.sample_draws(4000, random_state=1, params=narrow, t_weight=0.0)
    ev = mod.engine.evaluate(params)
    outcome = FitOutcome(params, ev, mod.engine, FitLog(), True, np.random.SeedSequence(1))
    with pytest.warns(ConvergenceWarning, match="heavy-tailed"):
        res = MonteCarloGLMMResults(mod, outcome)
    assert np.nanmax(res.pareto_k) > 0.7
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        fit = mod.fit(random_state=0, disp=False)
    assert np.all(fit.pareto_k < 0.5)
