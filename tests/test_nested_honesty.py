"""The MCSE is a claim, on a nested design too: many seeds against an exact answer.

A simulated two-level design (40 communities x 5 mothers x 3 Bernoulli births,
``y ~ x + (1 | community) + (1 | mother)``) is fitted by the default Monte Carlo fit with
``N_SEEDS`` seeds.  Its exact MLE comes from nested adaptive Gauss-Hermite quadrature
(``tests/aghq_nested.py``, 20 x 20 nodes, independent of glmm_sm), and the deterministic
``sampler="quadrature"`` fit must agree with it to a thousandth of an SE.

* Calibration: for each parameter, the spread of the estimates over the seeds divided by
  the mean reported MCSE.  If the MCSE is right, ``(N - 1) s^2 / MCSE^2`` is chi-square
  with ``N - 1`` degrees of freedom; the acceptance band is its two-sided ``1 - ALPHA``
  interval with a Bonferroni split over the parameters, so a correct MCSE fails with
  probability at most ``ALPHA``, while an MCSE 2x too small or too large falls outside
  the band with probability above 0.9 (computed in :func:`test_the_band_separates`).
* Accuracy: the mean over the seeds is within 3.5 of its own standard errors of the exact
  MLE (the Monte Carlo bias, O(1/m), is far smaller).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from aghq_nested import NestedInterceptGLMM
from scipy import stats

from glmm_sm import MonteCarloGLMM

N_SEEDS = 30
ALPHA = 0.01
N_PARAMS = 4


def _band(n=N_SEEDS, alpha=ALPHA, k=N_PARAMS):
    """Acceptance band of spread / MCSE for ``n`` seeds, ``k`` parameters."""
    a = alpha / k
    lo = np.sqrt(stats.chi2.ppf(a / 2, n - 1) / (n - 1))
    hi = np.sqrt(stats.chi2.ppf(1 - a / 2, n - 1) / (n - 1))
    return lo, hi


def _p_inside(r, n=N_SEEDS):
    """P(lo < spread / MCSE < hi) when the reported MCSE is the true one divided by ``r``:
    spread / MCSE = r s / sigma with (n - 1) s^2 / sigma^2 chi-square on n - 1 df."""
    lo, hi = _band(n)
    return (stats.chi2.cdf((n - 1) * (hi / r) ** 2, n - 1)
            - stats.chi2.cdf((n - 1) * (lo / r) ** 2, n - 1))


def test_the_band_separates():
    """A correct MCSE passes with probability 1 - ALPHA / N_PARAMS per parameter; one 2x
    too small or too large falls outside with probability above 0.9."""
    assert _p_inside(1.0) > 1 - ALPHA / N_PARAMS - 1e-12
    assert _p_inside(2.0) < 0.1 and _p_inside(0.5) < 0.1


def _data(seed=11, C=40, M=5, B=3):
    rng = np.random.default_rng(seed)
    comm = np.repeat(np.arange(C), M * B)
    mom = np.repeat(np.arange(C * M), B)
    x = rng.normal(size=comm.size)
    eta = (-0.3 + 0.6 * x + rng.normal(0, np.sqrt(0.6), C)[comm]
           + rng.normal(0, np.sqrt(1.2), C * M)[mom])
    y = (rng.random(comm.size) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "comm": comm, "mom": mom})


@pytest.fixture(scope="module")
def design():
    d = _data()
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 | comm) + (1 | mom)", data=d,
                                      family="bernoulli")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quad = mod.fit(sampler="quadrature", random_state=0, disp=False)
    exact = NestedInterceptGLMM(d["y"], np.c_[np.ones(len(d)), d["x"]], d["comm"], d["mom"],
                                "bernoulli", n_nodes=(20, 20)).fit(np.asarray(quad.params))
    return mod, quad, exact


def test_the_deterministic_fit_is_the_exact_nested_mle(design):
    _, quad, exact = design
    np.testing.assert_array_less(np.abs(np.asarray(quad.params) - exact.params),
                                 1e-3 * exact.bse)
    assert np.all(np.asarray(quad.mcse()) == 0.0)


@pytest.mark.slow
def test_many_seeds_mcse_is_honest_and_the_mean_is_exact(design):
    mod, _, exact = design
    est, mcse = [], []
    for seed in range(N_SEEDS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the Monte Carlo fit's honesty is tested: sampler="auto" (the default) would
            # integrate this two-level design deterministically
            r = mod.fit(random_state=seed, disp=False, sampler="laplace")
        assert r.converged and not r.boundary
        est.append(np.asarray(r.params))
        mcse.append(np.asarray(r.mcse()))
    est, mcse = np.array(est), np.array(mcse)
    spread = est.std(axis=0, ddof=1)
    ratio = spread / mcse.mean(axis=0)
    lo, hi = _band()
    assert np.all((ratio > lo) & (ratio < hi)), (ratio, (lo, hi))
    z = (est.mean(axis=0) - exact.params) / (spread / np.sqrt(N_SEEDS))
    assert np.all(np.abs(z) < 3.5), z
