"""The Rao-Blackwellized engine cuts its draws at whole tiles (issue 21, session 14).

The scalar kernel (:func:`glmm_sm.mcla.kernels.rb.rb_chunk_sums`) takes a chunk's draws in
tiles of :func:`~glmm_sm.mcla.kernels.rb.tile_width` draws, and each tile pays a fixed
cost per integrated level whatever its number of draws.  The draw set's chunk width
(:func:`~glmm_sm.mcla.draws.chunk_width`, from the memory budget) is not a multiple of
the tile: on the crossed design of ``benchmarks/bench_scale.py`` at 10^6 rows, 83 draws,
i.e. a tile of 64 and one of 19 per chunk, ten tiles per 400 draws instead of seven.
:class:`~glmm_sm.mcla.rb.engine.RBEngine` now rounds the default width down to whole
tiles (where it is narrower than the draws and at least a tile), so:

* its chunks are whole tiles (the last one excepted) and never wider than the draw set's
  own, so the chunk's arrays stay within the same memory share;
* where the draw set's width already covers every draw (or is narrower than a tile) the
  chunks are the draw set's, and every number is the same bits as before;
* the evaluation differs from one cut at the draw set's width only by the order in which
  the chunks' sums are combined (each draw's sums are the same bits: the tile does not
  change them, ``tests/test_crossed_scale_memory.py``).
"""

from __future__ import annotations

import numpy as np
from numpy.random import SeedSequence
from test_crossed_scale_memory import BETA, NU, _crossed, _sampler

from glmm_sm.mcla.draws import CHUNK_SHARE, DrawSet, chunk_width
from glmm_sm.mcla.kernels.rb import tile_width
from glmm_sm.mcla.rb.engine import RBEngine

M = 400


def _draws(budget_draws=None):
    """Draws of the crossed design (400 x 20 levels, 4000 rows), with a memory budget
    that lets the draw set cut chunks of ``budget_draws`` draws (None: the default)."""
    smp = _sampler(_crossed(4000, 400, 20))
    if budget_draws is None:
        return DrawSet.from_sampler(smp, M, SeedSequence(4))
    data = smp.data
    per_draw = 8 * (2 * data.q + data.n_blocks * (2 * data.n_s + 3))
    budget = budget_draws * per_draw * CHUNK_SHARE
    draws = DrawSet.from_sampler(smp, M, SeedSequence(4), memory_budget=budget)
    assert draws.resident and chunk_width(data, budget) == budget_draws
    return draws


def _numbers(ev):
    return np.r_[ev.value, ev.gradient, ev.hessian.ravel(), ev.score_var.ravel()]


def test_chunks_are_whole_tiles_and_the_same_sums():
    draws = _draws(83)
    tile = tile_width(400)
    assert tile == 64
    eng = RBEngine(draws, n_jobs=1)
    widths = [k1 - k0 for k0, k1 in eng.ranges]
    assert widths == [64] * 6 + [16]
    assert [k1 - k0 for k0, k1 in draws.chunk_ranges()] == [83] * 4 + [68]
    th = np.r_[BETA, NU] * 1.01
    cut = _numbers(eng.evaluate(th.copy(), 2))
    old = _numbers(RBEngine(draws, chunk_size=83, n_jobs=1).evaluate(th.copy(), 2))
    one = _numbers(RBEngine(draws, chunk_size=M, n_jobs=1).evaluate(th.copy(), 2))
    # Only the order of the chunk sums' combination differs: sums of 400 weighted terms
    # (and the Hessian's and MCSE middle's differences of such sums), rounding of order
    # 400 x 2.2e-16 of the summands' size, which the largest entry bounds
    for other in (old, one):
        scale = np.abs(other).max()
        assert np.max(np.abs(cut - other)) <= 1e-12 * scale


def test_chunks_unchanged_where_the_draw_set_covers_them():
    draws = _draws()  # the default budget: one chunk of all 400 draws
    eng = RBEngine(draws, n_jobs=1)
    assert eng.ranges == draws.chunk_ranges() == [(0, M)]
    th = np.r_[BETA, NU] * 1.01
    a = _numbers(eng.evaluate(th.copy(), 2))
    b = _numbers(RBEngine(draws, chunk_size=M, n_jobs=1).evaluate(th.copy(), 2))
    assert np.array_equal(a, b)
    # narrower than a tile: the draw set's own chunks
    small = _draws(40)
    assert RBEngine(small, n_jobs=1).ranges == small.chunk_ranges()
