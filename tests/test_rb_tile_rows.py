"""The Rao-Blackwellized kernel's working set does not grow with the rows (issue 21).

The kernel (:func:`glmm_sm.mcla.kernels.rb.rb_chunk_sums`) weights each draw's sums only
once the draw's log weight is complete, i.e. after every level of its block; the
per-observation ``w c''`` node means it used to keep per draw of a tile (tile x
observations: 256 MB at 10^6 rows, which narrowed the tile from 64 draws to 27) are now
summed per draw into the lower triangle of ``sum_i h_i x_i x_i'`` (``p (p + 1) / 2`` numbers),
which is all the engine made of them (``X_b' diag(h) X_b``).  So:

* the work arrays, and the tile width, are the same for a design with ten times the rows
  and the same levels (:func:`~glmm_sm.mcla.kernels.rb.make_state` has no number of
  observations; its size is the formula of its docstring);
* the fixed-effects block of the expected complete-data Hessian equals a direct numpy
  evaluation of ``sum_k w_k sum_i h_ik x_i x_i'`` (exact ``exp``, ``log1p``, ``logsumexp``) to
  rounding, for Bernoulli, binomial (trials) and Poisson rows, with free observations.

Against the previous kernel on the crossed, binomial, Poisson and negative binomial designs
of the kernel tests (moving and frozen draws): value, gradient, MCSE middle, ESS and the
random-effect moments the same bits, the Hessian within 3e-15 relative (the order of its
sums differs): benchmarks/README.md, "Scale to 10^6 rows: the tile no longer depends on
the rows".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from numpy.random import SeedSequence
from scipy.special import expit, logsumexp

from glmm_sm import MonteCarloGLMM
from glmm_sm.core.constants import HALF_LOG2PI
from glmm_sm.laplace.step import conditional_mode
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.kernels import rb as rb_kernel
from glmm_sm.mcla.rb.engine import RBEngine
from glmm_sm.mcla.rb.split import RBSampler, RBStructure

N_G, PER_G, N_H = 300, 10, 8


def _design(kind, n_free, seed=5):
    """``y ~ x + (1 | g) + (1 | h)`` with ``N_G`` levels of ``g`` of exactly ``PER_G`` rows
    each, ``n_free`` further rows on no ``g`` level (``g`` coded 0 with a zero loading)
    and ``N_H`` levels of ``h`` crossed with all rows."""
    rng = np.random.default_rng(seed)
    n_g = N_G * PER_G
    n = n_g + n_free
    g = np.r_[np.arange(n_g) % N_G, np.zeros(n_free, int)]
    on_g = np.r_[np.ones(n_g), np.zeros(n_free)]
    h = rng.integers(0, N_H, n)
    x = rng.normal(size=n)
    eta = -0.3 + 0.5 * x + on_g * rng.normal(0, 1.0, N_G)[g] + rng.normal(0, 0.5, N_H)[h]
    d = pd.DataFrame({"x": x, "g": g, "h": h, "on_g": on_g})
    if kind == "poisson":
        d["y"] = rng.poisson(np.exp(0.4 * eta))
    elif kind == "binomial":
        trials = rng.integers(1, 5, n)
        d["y"] = rng.binomial(trials, expit(eta))
        d["f"] = trials - d["y"]
    else:
        d["y"] = (rng.random(n) < expit(eta)).astype(int)
    lhs = "y + f" if kind == "binomial" else "y"
    family = {"poisson": "poisson", "binomial": "binomial"}.get(kind, "bernoulli")
    return MonteCarloGLMM.from_formula(lhs + " ~ x", {"g": "0 + C(g):on_g", "h": "0 + C(h)"},
                                       data=d, family=family)


def _engine(model, m=150, shift=False):
    system = model.block_system()
    params = np.r_[-0.3, 0.5, 1.0, 0.25]
    mode = conditional_mode(system, params[:2], params[2:])
    smp = RBSampler(system, params, mode, RBStructure(system.data), shift=shift)
    return RBEngine(DrawSet.from_sampler(smp, m, SeedSequence(4)), n_jobs=1), params


def test_work_arrays_do_not_grow_with_the_rows():
    small, _ = _engine(_design("bernoulli", 0))
    large, _ = _engine(_design("bernoulli", 27_000))  # 30,000 rows, the same levels
    assert len(large.data.wy) == 10 * len(small.data.wy)
    assert large.structure.n_levels == small.structure.n_levels == N_G
    assert len(large.structure.free_obs) == 27_000
    a, b = small._state(), large._state()
    assert a.lw.shape[0] == b.lw.shape[0] == rb_kernel.TILE_MAX
    for name, x, y in zip(a._fields, a, b, strict=True):
        assert x.shape == y.shape, name


def test_tile_width_depends_on_the_levels_only():
    # 10^6 rows of the crossed benchmark: 99,997 integrated levels; a 64-draw tile
    assert rb_kernel.tile_width(99_997) == rb_kernel.TILE_MAX
    assert rb_kernel.tile_width(rb_kernel.TILE_NUMBERS // (2 * rb_kernel.TILE_MAX)) \
        == rb_kernel.TILE_MAX


@pytest.mark.parametrize("T_tile, K, p, T, n_lev, max_lev, nf, block_lev", [
    (64, 12, 2, 2, 99_997, 30, 0, 99_997),   # the 10^6-row crossed benchmark
    (16, 6, 3, 2, 50, 60, 1, 50),            # negative binomial, long levels
    (5, 12, 2, 2, 200, 30, 0, 200),          # deferred covariances kept
])
def test_working_set_is_the_documented_formula(T_tile, K, p, T, n_lev, max_lev, nf,
                                               block_lev):
    st = rb_kernel.make_state(T_tile, K, p, T, n_lev, max_lev, nf, block_lev)
    d = p + T + nf
    n_max = min(max_lev, rb_kernel.LOW_RANK_MAX_OBS)
    D = n_max + 2
    numbers = (T_tile * (d * d + d + T + 2 * n_lev + p * (p + 1) // 2 + (p + 1) * nf + 15)
               + T_tile * K * (p + max_lev * (1 + nf) + n_max + 2 * nf + 7)
               + D * D + D + (n_max + 1) * max(p, 1) + st.sgl.size)
    assert sum(x.size for x in st) == numbers
    assert st.sgl.size in (0, block_lev * T_tile * D * D)
    assert st.sgl.size <= rb_kernel.DEFER_MAX


def _reference_hxx(kind, eng, params):
    """``sum_k w_k sum_i h_ik x_i x_i'`` per block with numpy (frozen draws): ``w_k`` the
    draw's weight ``exp(lw_k - max lw)``, ``h_ik`` the node mean of ``w c''(eta)`` for a
    row on an integrated level, ``w c''(eta)`` for a free row."""
    data, st, smp = eng.data, eng.structure, eng.sampler
    p = data.k_fe
    beta, nu = params[:p], params[p:]
    lognu = np.log(nu)
    U, logf, S, j0, j1 = eng.draws.chunk_arrays(0, eng.m)
    U, logf, S = U[:, j0:j1], logf[:, j0:j1], S[:, :, j0:j1]
    Z = sp.csr_matrix((data.zval, data.zidx, data.zptr), shape=(len(data.wy), data.q))
    eta0 = data.linear_fixed(beta)[:, None] + Z[:, ~st.is_a] @ U[~st.is_a]
    wy, wn, X = data.wy, data.wn, data.X

    def terms(eta, i):
        if kind == "poisson":
            mu = np.exp(eta)
            return wy[i] * eta - wn[i] * mu, wn[i] * mu
        pr = expit(eta)
        return wy[i] * eta - wn[i] * np.logaddexp(0.0, eta), wn[i] * pr * (1.0 - pr)

    out = np.zeros((data.n_blocks, p, p))
    for b in range(data.n_blocks):
        qbt = st.qbt_sampled[b]
        lw = (-HALF_LOG2PI * qbt.sum() - 0.5 * qbt @ lognu - logf[b]
              - 0.5 * (S[b] / nu[:, None]).sum(axis=0))
        h = {}
        for i in st.free_obs[st.free_bptr[b]:st.free_bptr[b + 1]]:
            ll, h[i] = terms(eta0[i], i)
            lw = lw + ll
        for a in range(st.lev_bptr[b], st.lev_bptr[b + 1]):
            rows = st.ro[st.lev_ptr[a]:st.lev_ptr[a + 1]]
            z = st.za[st.lev_ptr[a]:st.lev_ptr[a + 1]]
            tc = st.lev_comp[a]
            c0, c1 = smp.cptr[a], smp.cptr[a + 1]
            mu = smp.m0[a] + smp.cval[c0:c1] @ U[smp.cidx[c0:c1]]
            alpha = mu[None, :] + smp.s[a] * smp.xs[:, None]  # nodes x draws
            lq = (smp.logw[:, None] + np.log(smp.s[a]) - HALF_LOG2PI - 0.5 * lognu[tc]
                  - 0.5 * alpha**2 / nu[tc])
            cpp = []
            for i, zi in zip(rows, z, strict=True):
                ll, c = terms(eta0[i][None, :] + zi * alpha, i)
                lq = lq + ll
                cpp.append((i, c))
            la = logsumexp(lq, axis=0)
            om = np.exp(lq - la)
            lw = lw + la
            for i, c in cpp:
                h[i] = (om * c).sum(axis=0)
        w = np.exp(lw - lw.max())
        for i, hi in h.items():
            out[b] += (w @ hi) * np.outer(X[i], X[i])
    return out


@pytest.mark.parametrize("kind", ["bernoulli", "binomial", "poisson"])
def test_fixed_effects_hessian_matches_a_numpy_evaluation(kind):
    eng, params = _engine(_design(kind, 400), m=100)
    assert len(eng.structure.free_obs) == 400
    th = params * 1.03
    got = eng._partial_sums(eng._sums(th), th).hxx[0]
    ref = _reference_hxx(kind, eng, th)
    assert np.max(np.abs(got - ref)) <= 1e-11 * np.max(np.abs(ref))
