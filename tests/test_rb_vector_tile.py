"""The correlated Rao-Blackwellized kernel's draw tiles
(:func:`glmm_sm.mcla.kernels.rb_vector.rbv_chunk_sums`, issue 24's round cost): the nodes of
up to ``TILE`` draws form one array per level, so that each observation's set-up is shared
by the tile's draws.  Every (draw, node) entry sees the arithmetic of one draw at a time, in
the same order, so a tile of 16 draws gives the numbers of a tile of 1 *bit for bit*: the
value, ESS, block values, gradient, Hessian and log weights of the full pass and of the
value-only pass, on frozen and moving draws, with m not a multiple of the tile (a short
last tile), for the 2-vector logit loops with two fixed effects, the general beta-score
loop (three), scalar integrated levels (the general node loop) and the generic family
path (Poisson).
"""

import warnings

import numpy as np
import pytest
from test_rb_correlated import _engine, _theta, frame
from test_rb_vector_fast import poisson  # noqa: F401  (a fixture)

from glmm_sm import MonteCarloGLMM
from glmm_sm.laplace.step import conditional_mode
from glmm_sm.mcla.kernels import rb_vector
from glmm_sm.mcla.rb.vector import VectorRBStructure

COV = np.r_[0.6, 0.1, 0.3, 0.4, -0.05, 0.2]


def _setup(formula, centre):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = MonteCarloGLMM.from_formula(formula, data=frame(12, 8, x2=True), family="bernoulli")
    system = mod.block_system()
    p = mod.k_fe
    centre = np.asarray(centre, dtype=float)
    mode = conditional_mode(system, centre[:p], centre[p:])
    return mod, system, centre, mode, VectorRBStructure(system.data)


DESIGNS = {
    "maximal": ("y ~ cond + (1 + cond | subject) + (1 + cond | item)", np.r_[-0.3, 0.7, COV]),
    "three fixed effects": ("y ~ cond + x2 + (1 + cond | subject) + (1 + cond | item)",
                            np.r_[-0.3, 0.7, 0.1, COV]),
    "scalar levels": ("y ~ cond + (1 | subject) + (1 + cond | item)",
                      np.r_[-0.3, 0.7, 0.8, 0.4, -0.05, 0.2]),
}


def _passes(eng, theta, tile, monkeypatch):
    """Full pass, its log weights and the value-only pass at ``theta`` with tiles of
    ``tile`` draws (no cached evaluation served)."""
    monkeypatch.setattr(rb_vector, "TILE", tile)
    eng._last = None
    eng._log_weights = None
    full = eng.evaluate(theta, derivs=True)
    lw = np.concatenate(list(eng.iter_log_weights(theta)), axis=1)
    eng._last = None
    val = eng.evaluate(theta, derivs=False)
    return full, lw, val


def _assert_same_bits(eng, theta, monkeypatch):
    w = eng._work()
    one, lw1, val1 = _passes(eng, theta, 1, monkeypatch)
    assert eng._work().lw.shape[0] == 1
    big, lw16, val16 = _passes(eng, theta, 16, monkeypatch)
    assert eng._work().lw.shape[0] == 16 and w.lw.shape[0] == rb_vector.tile_size(
        w.hloc.shape[1] + w.mAk.shape[1] * w.mAk.shape[2])
    assert np.isfinite(one.value) and one.gradient is not None
    assert big.value == one.value
    assert np.array_equal(big.ess, one.ess)
    assert np.array_equal(big.block_values, one.block_values)
    assert np.array_equal(big.gradient, one.gradient)
    assert np.array_equal(big.hessian, one.hessian)
    assert np.array_equal(lw16, lw1)
    assert val16.value == val1.value == one.value
    assert np.array_equal(val16.ess, val1.ess)


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("design", list(DESIGNS))
def test_tiles_give_the_bits_of_one_draw_at_a_time(design, shift, monkeypatch):
    setup = _setup(*DESIGNS[design])
    r = setup[4].r
    assert r == (1 if design == "scalar levels" else 2)
    eng = _engine(setup, 203, 11, shift=shift)  # 12 tiles of 16 and one of 11
    centre = setup[2]
    p = setup[0].k_fe
    far = np.r_[centre[:p] + 0.1, centre[p:] * 1.2]
    for theta in (centre, far):
        _assert_same_bits(eng, theta, monkeypatch)


def test_tiles_on_the_generic_family_path(poisson, monkeypatch):  # noqa: F811
    eng = _engine(poisson, 203, 5, shift=True)
    assert eng.data.family.code != 0
    for theta in (poisson[2], _theta(poisson[2]) * np.r_[1, 1, 0.5, 0.1, 0.2, 0.3, 0.1, 0.2]):
        _assert_same_bits(eng, theta, monkeypatch)


def test_tile_shrinks_for_large_designs():
    """The tile keeps at most ``TILE_CAP`` per-draw numbers over the observations and
    levels (a large design's working set stays about that of one draw), never below 1."""
    assert rb_vector.tile_size(2400 + 60 * 6) == rb_vector.TILE
    assert rb_vector.tile_size(rb_vector.TILE_CAP // 3) == 3
    assert rb_vector.tile_size(10**7) == 1
    small = rb_vector.work_bytes(2, 3, 2, 36, 2400, 60, 40)
    big = rb_vector.work_bytes(2, 3, 2, 36, 10**6, 1000, 40)
    assert big < 8 * (10**6 + 1000 * 6) * 1.1 + small  # one draw's hloc and mAk, roughly
