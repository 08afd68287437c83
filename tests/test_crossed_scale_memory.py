"""The Rao-Blackwellized crossed fit at scale (issue 21): bounded working sets, same numbers.

* **The integrated proposal's working set**
  (:func:`glmm_sm.mcla.rb.proposal.integrated_laplace`): its Newton steps take the
  integrated levels a run of whole levels at a time
  (:meth:`~glmm_sm.mcla.rb.proposal.LevelQuadrature.parts`, at most
  :data:`~glmm_sm.mcla.rb.proposal.PART_SIZE` (observation, node) numbers per array), so
  the :class:`~glmm_sm.mcla.rb.split.RBSampler` set-up on 100,000 rows (10,000 x 20
  levels) stays within 80 MB of traced allocations; passing every level at once it peaked
  at 122 MB, most of it (rows x nodes) arrays, growing with the rows.
* **The same numbers in runs as in one pass**: ``log g``, its gradient and Hessian, and the
  proposal's mode and covariance, with runs of a few levels against one run (the single
  pass of the old code), to 1e-12 relative (only the order of the sums differs).
* **The kernel's tile width** (:func:`glmm_sm.mcla.kernels.rb.tile_width`): wider tiles
  pay the per-level cost of a tile fewer times; each draw's sums are computed on their
  own and added in draw order, so the engine's value, gradient, Hessian, MCSE middle and
  ESS are the same bits with tiles of 16 and of 64 draws; the tile-wide arrays stay
  within :data:`~glmm_sm.mcla.kernels.rb.TILE_NUMBERS` numbers (they grow with the
  integrated levels, not the rows: ``tests/test_rb_tile_rows.py``).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import scipy.sparse as sp
import statsmodels.api as sm
from numpy.random import SeedSequence

from glmm_sm import MonteCarloGLMM
from glmm_sm.laplace.step import conditional_mode
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.kernels import rb as rb_kernel
from glmm_sm.mcla.rb import engine as rb_engine
from glmm_sm.mcla.rb import proposal
from glmm_sm.mcla.rb.engine import RBEngine
from glmm_sm.mcla.rb.split import RBSampler, RBStructure

BETA, NU = np.array([-0.2, 0.4]), np.array([0.7, 0.3])


def _crossed(n, n_g, n_h, seed=11, free_share=0.0):
    """``(1 | g)`` with loadings ``0.5 + U(0, 1)`` (a share ``free_share`` of the rows on no
    ``g`` level) and ``(0 + x2 | h)``, Bernoulli, from the array constructor."""
    rng = np.random.default_rng(seed)
    g, h = rng.integers(0, n_g, n), rng.integers(0, n_h, n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    has_g = rng.random(n) >= free_share
    za = 0.5 + rng.random(n)
    rows = np.concatenate([np.flatnonzero(has_g), np.arange(n)])
    cols = np.concatenate([g[has_g], n_g + h])
    vals = np.concatenate([za[has_g], x2])
    Z = sp.csr_matrix((vals, (rows, cols)), shape=(n, n_g + n_h))
    eta = -0.3 + 0.5 * x1 + Z @ np.concatenate([rng.normal(0, 0.9, n_g),
                                                 rng.normal(0, 0.5, n_h)])
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    X = np.column_stack([np.ones(n), x1])
    ident = np.r_[np.zeros(n_g, int), np.ones(n_h, int)]
    return MonteCarloGLMM(y, X, Z, ident, family=sm.families.Binomial(),
                          vcp_names=["g", "h"])


def _sampler(model, **kw):
    system = model.block_system()
    mode = conditional_mode(system, BETA, NU)
    return RBSampler(system, np.r_[BETA, NU], mode, RBStructure(system.data), **kw)


def test_rb_sampler_setup_memory_at_100000_rows():
    model = _crossed(100_000, 10_000, 20)
    system = model.block_system()
    mode = conditional_mode(system, BETA, NU)
    st = RBStructure(system.data)
    tracemalloc.start()
    try:
        smp = RBSampler(system, np.r_[BETA, NU], mode, st)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 12 nodes x 100,000 rows is 9.6 MB per (rows x nodes) array
    assert peak < 80e6, f"peak traced memory {peak / 1e6:.0f} MB"
    assert set(smp.adapted) == {0}  # the integrated proposal was found
    target = proposal._Target(smp, np.r_[BETA, NU])
    assert len(target.parts) >= 4
    J = len(smp.xs)
    for l0, l1, r0, r1 in target.parts:  # whole levels, within PART_SIZE unless one level
        assert (r1 - r0) * J <= proposal.PART_SIZE or l1 - l0 == 1


def test_derivatives_in_runs_equal_one_pass(monkeypatch):
    # free observations and uneven level sizes; 2,000 rows x 12 nodes in one pass
    model = _crossed(2_000, 150, 6, free_share=0.1)
    smp = _sampler(model)
    params = np.r_[BETA, NU]
    one = proposal._Target(smp, params)
    assert len(one.parts) == 1
    rng = np.random.default_rng(3)
    V = one.start + 0.2 * rng.standard_normal(one.start.shape) * one.mask
    ref = one.derivatives(V)
    ref_fit = proposal.integrated_laplace(smp, params)
    monkeypatch.setattr(proposal, "PART_SIZE", 12 * 37)
    runs = proposal._Target(smp, params)
    assert len(runs.parts) > 20
    assert runs.parts[0][0] == 0 and runs.parts[-1][1] == one.quad.m0.size
    for (_, l1, _, r1), (l0, _, r0, _) in zip(runs.parts, runs.parts[1:], strict=False):
        assert l1 == l0 and r1 == r0  # consecutive runs of whole levels
    for a, b in zip(runs.derivatives(V), ref, strict=True):
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b))
    got = proposal.integrated_laplace(smp, params)
    assert set(got) == set(ref_fit)
    for b in ref_fit:
        for a, r in zip(got[b], ref_fit[b], strict=True):
            assert np.max(np.abs(a - r)) <= 1e-10 * np.max(np.abs(r))


def _evaluate(model, monkeypatch, tile):
    monkeypatch.setattr(rb_engine, "tile_width", lambda n_lev: tile)
    smp = _sampler(model)
    draws = DrawSet.from_sampler(smp, 150, SeedSequence(4))
    eng = RBEngine(draws, n_jobs=1)
    assert eng._state().lw.shape[0] == tile
    return eng.evaluate(np.r_[BETA, NU] * 1.01, 2)


def test_tile_width_does_not_change_the_bits(monkeypatch):
    # 150 draws: tiles of 16 (9 full, one of 6) and of 64 (2 full, one of 22)
    model = _crossed(3_000, 200, 8, free_share=0.1)
    a = _evaluate(model, monkeypatch, 16)
    b = _evaluate(model, monkeypatch, 64)
    assert a.value == b.value
    for name in ("gradient", "hessian", "score_var", "ess"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_tile_width_bounds_the_tile_arrays():
    # the levels' moments (tile x levels x 2) are the one tile-wide array that grows
    w = rb_kernel.tile_width
    assert w(1_000) == w(100_000) == rb_kernel.TILE_MAX
    big = w(1_000_000)
    assert rb_kernel.TILE <= big < rb_kernel.TILE_MAX
    assert big * 2 * 1_000_000 <= rb_kernel.TILE_NUMBERS
    assert w(10**8) == rb_kernel.TILE  # never below TILE


def test_tile_is_no_wider_than_the_draws():
    # a tile-wide array is (levels x 2 x tile): with 5 draws, 5 columns, not 64
    smp = _sampler(_crossed(3_000, 200, 8))
    eng = RBEngine(DrawSet.from_sampler(smp, 5, SeedSequence(4)), n_jobs=1)
    assert eng._state().lw.shape[0] == 5
    assert eng._state().mAk.shape == (200, 2, 5)
    assert eng._state().hx.shape == (3, 5)  # p (p + 1) / 2 numbers per draw
