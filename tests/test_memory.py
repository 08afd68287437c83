"""Memory = the data + a bounded working set: no (observations x draws) or (blocks x draws)
temporaries beyond a stated size.

Each test measures the peak of traced allocations (``tracemalloc``, which numpy reports to)
of one step on 100,000 rows and compares it with a bound from the step's stated working
set; the arrays the old code built break it several-fold:

* ``MCLAEngine.weighted_draws`` (the boundary derivative, predictions, plots) built the
  linear predictor and the per-observation terms of 512 draws at a time: ``(n, 512)``
  arrays, 410 MB each at n = 100,000 (4 GB at 10^6).  Chunks now hold at most
  ``ROW_DRAWS`` numbers per (observation x draw) array.
* The Pareto-k tail diagnostics (``block_pareto_k``) took ``logsumexp`` and a concatenation
  of every chunk's (blocks x draws) log weights at once: five or six copies of a chunk of
  4,096 draws.  They now take ``TAIL_SLICE`` numbers at a time, and a chunk of resident
  draws holds at most ``memory_budget / CHUNK_SHARE`` bytes (``chunk_width``).
* Generating stored draws concatenated the generation chunks: two copies of all the draws
  at the peak.  They are now copied into place as they come.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from glmm_sm import MonteCarloGLMM
from glmm_sm.core.random import as_seed_sequence
from glmm_sm.mcla.draws import CHUNK_SHARE, GEN_SIZE, DrawSet, bytes_needed, chunk_width
from glmm_sm.mcla.engine import ROW_DRAWS, MCLAEngine
from glmm_sm.mcla.tails import TAIL_SLICE, block_pareto_k

MB = 2**20
N, GROUPS = 100_000, 1_000
PARAMS = np.array([-0.5, 0.7, 1.0])  # the truth: (Intercept, x1, var(g))


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(21)
    g = rng.integers(0, GROUPS, N)
    x1 = rng.normal(size=N)
    eta = PARAMS[0] + PARAMS[1] * x1 + rng.normal(size=GROUPS)[g]
    y = (rng.random(N) < 1 / (1 + np.exp(-eta))).astype(float)
    d = pd.DataFrame({"y": y, "x1": x1, "g": g})
    return MonteCarloGLMM.from_formula("y ~ x1 + (1 | g)", data=d,
                                       family=sm.families.Binomial())


def _peak(fn):
    """``(result, peak traced bytes above the start)`` of ``fn()``."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_stored_draws_are_generated_in_place(model):
    """The peak while drawing is the stored draws plus one generation chunk's work (its
    arrays and the sampler's temporaries, measured here), not two copies of all draws."""
    m, budget = 8 * GEN_SIZE, 2**29
    smp = model.make_sampler(PARAMS, "laplace", None)
    _, one = _peak(lambda: smp.generate(as_seed_sequence(0), GEN_SIZE))
    draws, peak = _peak(lambda: DrawSet.from_sampler(smp, m, as_seed_sequence(1), budget))
    assert draws.stored
    stored = bytes_needed(draws.data, m, squares=False)  # 125 MB (moving draws: no S)
    chunk = bytes_needed(draws.data, GEN_SIZE)  # 23 MB; `one` is about 3.7 times it
    assert peak < stored + one + 1.5 * chunk, (peak / MB, stored / MB, one / MB)
    assert stored + one + 1.5 * chunk < 2 * stored + one  # the old concatenation's peak


def test_weighted_draws_hold_no_observations_by_draws_array(model):
    """The (n, K) arrays of a chunk stay at ROW_DRAWS numbers, whatever chunk_size asks
    (the first 512 draws: as many as one old chunk)."""
    draws = model.sample_draws(GEN_SIZE, random_state=2, params=PARAMS,
                               memory_budget=2**28, n_jobs=1)
    eng = MCLAEngine(draws, n_jobs=1)

    def run():
        width, total = 0, 0.0
        for _, eta, v, sc in eng.weighted_draws(PARAMS, chunk_size=512, max_draws=512):
            width = max(width, eta.shape[1])
            total = total * sc.sum() + v.sum()
        return width

    width, peak = _peak(run)
    assert width == ROW_DRAWS // N < 512
    # eta, the log-likelihood terms and the cumulant of one chunk, and the moved draws
    assert peak < 6 * ROW_DRAWS * 8, peak / MB
    assert peak < N * 512 * 8  # one (n, 512) array: what the old chunks held, 410 MB


def test_tail_diagnostics_work_in_slices(model):
    """The Pareto k pass holds one chunk's log weights (at most memory_budget /
    CHUNK_SHARE for the chunk) and TAIL_SLICE numbers per temporary."""
    budget, m = 2**27, 2 * GEN_SIZE
    draws = model.sample_draws(m, random_state=3, params=PARAMS, memory_budget=budget,
                               n_jobs=1)
    eng = MCLAEngine(draws, n_jobs=1)
    K = chunk_width(draws.data, budget)
    assert K < m  # this design's chunk is set by the budget
    assert max(k1 - k0 for k0, k1 in eng.ranges) == K
    k, peak = _peak(lambda: block_pareto_k(eng, PARAMS))
    assert k.shape == (GROUPS,)
    bound = budget // CHUNK_SHARE + 6 * TAIL_SLICE * 8  # 16 MB + 48 MB
    assert peak < bound, (peak / MB, bound / MB)
    # what one chunk of all m draws with logsumexp's copies took: 5 x 16 MB and more
    assert bound < 5 * GROUPS * m * 8
