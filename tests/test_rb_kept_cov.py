"""The RB kernel's node covariances kept per draw of a tile (``state.sgl``, issue 20,
session 15; ``benchmarks/README.md``, "guPrenat: the kept node covariances").

Where a block's levels take their node covariance through their observations' residuals
(``glmm_sm.mcla.kernels.rb._low_rank``) and the kernel keeps each draw's covariance
``Sigma`` until the tile's weights are known, ``_low_rank_kept`` forms the node means and
``Sigma`` of all the tile's draws at once (the draws innermost) instead of draw after draw.
Checked here against the kernel's other path, each draw's ``A' Sigma A`` added to its own
``Cw`` (a state without ``sgl``), on the deterministic nested rule (moving draws) and on
importance-sampling draws (fixed and moving): the value, the scores and every sum but the
node covariances identical to the bit (the node means are the same operations in the same
order on both paths), the node covariances ``sC`` equal to rounding (the other path weighs
each draw's ``A' Sigma A``, this one ``A' (sum_t w_t Sigma_t) A``: the same sum grouped
otherwise).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from glmm_sm import MonteCarloGLMM
from glmm_sm.core.random import as_seed_sequence
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.kernels.rb import _low_rank, make_state, rb_chunk_sums
from glmm_sm.mcla.kernels.records import RBSums
from glmm_sm.mcla.rb.engine import RBEngine, _draw_rule, _tile
from glmm_sm.mcla.rb.split import RBSampler, RBStructure


def _model(seed=7, C=14, J=6, p_extra=4):
    rng = np.random.default_rng(seed)
    births = rng.integers(1, 5, C * J)
    mom = np.repeat(np.arange(C * J), births)
    comm = mom // J
    X = rng.normal(size=(mom.size, p_extra))
    eta = (-0.3 + X @ rng.normal(0, 0.4, p_extra) + rng.normal(0, 1.0, C)[comm]
           + rng.normal(0, 1.5, C * J)[mom])
    y = (rng.random(mom.size) < 1 / (1 + np.exp(-eta))).astype(float)
    d = pd.DataFrame({"y": y, "comm": comm, "mom": mom})
    names = [f"x{j}" for j in range(p_extra)]
    for j, name in enumerate(names):
        d[name] = X[:, j]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MonteCarloGLMM.from_formula(
            f"y ~ {' + '.join(names)} + (1 | comm) + (1 | mom)", data=d, family="bernoulli")


def _sums(eng, theta, kept):
    """The kernel's sums of every draw of ``eng`` at ``theta`` (one chunk), with the node
    covariances kept per draw (``kept``: the engine's own state) or not."""
    data, st = eng.data, eng.structure
    blocks, rule, ev, dv = eng._inputs(np.asarray(theta, dtype=float))
    draws, ev_k = eng._chunk(ev, dv, 0, eng.m)
    state = eng._state()
    assert state.sgl.shape[0] > 0  # the engine keeps them here
    if not kept:
        lens = np.diff(st.lev_ptr)
        state = make_state(_tile(st.n_levels, eng.m), len(eng.sampler.xs), data.k_fe,
                           data.k_vc, st.n_levels, int(lens.max()), data.k_fam, 0)
        assert state.sgl.shape[0] == 0
    B, T, p = data.n_blocks, data.k_vc, data.k_fe
    d = p + T
    out = RBSums(np.full(B, -np.inf), np.zeros(B), np.zeros(B), np.zeros((B, d)),
                 np.zeros((B, d)), np.zeros((B, d, d)), np.zeros((B, d, d)), np.zeros((B, T)),
                 np.zeros(0), np.zeros((B, d, d)), np.zeros((st.n_levels, 2)),
                 np.zeros(data.q), np.zeros(data.q), np.zeros(0), np.zeros(0),
                 np.zeros((B, p * (p + 1) // 2)), np.zeros((B, 0)))
    K = draws.U.shape[1]
    rb_chunk_sums(data.family.kernel, blocks, _draw_rule(rule, 0, K), ev_k, draws, 0, K, out,
                  state, np.empty((B, 0)))
    return out


def _check_paths(eng, theta):
    st, K, p = eng.structure, len(eng.sampler.xs), eng.data.k_fe
    n_a = np.diff(st.lev_ptr)
    low = [_low_rank(0, int(n), K, p) for n in n_a]
    assert any(low)  # the path under test is taken
    kept, other = _sums(eng, theta, True), _sums(eng, theta, False)
    for name in RBSums._fields:
        if name != "sC":
            assert np.array_equal(getattr(kept, name), getattr(other, name)), name
    scale = np.abs(other.sC).max()
    assert scale > 0
    # rounding: a few ulps of the largest term (the same sum, grouped otherwise)
    assert np.max(np.abs(kept.sC - other.sC)) <= 1e-13 * scale
    assert np.array_equal(kept.sC, np.swapaxes(kept.sC, 1, 2))
    return kept


def test_kept_covariances_of_the_deterministic_nested_rule():
    mod = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mod.fit(random_state=0, disp=False)
    assert res.fit_log.sampler["used"] == "quadrature"
    eng = res.engine
    assert eng._shift() is not None  # moving draws
    theta = np.asarray(res.params, dtype=float)
    _check_paths(eng, theta)
    # and away from the estimate
    _check_paths(eng, theta * np.r_[np.full(mod.k_fe, 1.1), np.full(2, 0.7)])


@pytest.mark.parametrize("shift", [False, True])
def test_kept_covariances_of_importance_sampling_draws(shift):
    mod = _model(seed=3)
    params, _, mode = mod._laplace_estimate()
    system = mod.block_system()
    smp = RBSampler(system, params, mode, RBStructure(system.data), shift=shift)
    eng = RBEngine(DrawSet.from_sampler(smp, 70, as_seed_sequence(2)), n_jobs=1)
    assert (eng._shift() is not None) == shift
    _check_paths(eng, params * np.r_[np.full(mod.k_fe, 1.05), np.full(2, 1.3)])
