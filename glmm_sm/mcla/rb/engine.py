"""Evaluate the Rao-Blackwellized ``l_m`` (:mod:`glmm_sm.mcla.rb.split`) and its derivatives.

The kernel (:func:`glmm_sm.mcla.kernels.rb.rb_chunk_sums`) returns, per partition of the draws,
the sums the plain engine combines (:class:`~glmm_sm.mcla.partials.PartialSums`, with the sums of
squares replaced by their node expectations) plus the node covariances ``sC``; partitions
are combined in a fixed order (the same bits for any number of threads), the plain formulas
give the value, gradient, Hessian and MCSE middle (:func:`glmm_sm.mcla.engine.finish`), and the
node covariances complete the Hessian (Louis' identity within each draw).
"""

from __future__ import annotations

import copy
import functools
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from glmm_sm.core.constants import HALF_LOG2PI
from glmm_sm.mcla.draws import DrawSet, chunk_width
from glmm_sm.mcla.engine import EngineBase, finish
from glmm_sm.mcla.kernels.rb import make_state, rb_chunk_sums, rb_log_weights, tile_width
from glmm_sm.mcla.kernels.records import Draws, RBBlocks, RBInputs, RBSums
from glmm_sm.mcla.partials import DrawShift, PartialSums, _scales
from glmm_sm.spec.validation import nonnegative_up_to_rounding

__all__ = ["RBEngine", "KEEP_LOG_WEIGHTS"]

#: An evaluation keeps its draws' log weights when there are at most this many (blocks x
#: draws; 32 MB): the tail diagnostics then need no kernel pass of their own.
KEEP_LOG_WEIGHTS = 4_000_000
#: The levels' products of their nodes' beta slopes (``RBEngine._malpha_products``) are
#: kept with the engine up to this many numbers (32 MB).
KEEP_MALPHA_PRODUCTS = 4_000_000


class RBEngine(EngineBase):
    """``l_m`` on frozen draws of an :class:`~glmm_sm.mcla.rb.split.RBSampler`.

    Parameters
    ----------
    draws : DrawSet
        Draws from an ``RBSampler`` (``draws.sampler``).
    chunk_size : int, optional
        Draws per evaluation chunk of resident draws.  By default the draw set's width
        (:func:`~glmm_sm.mcla.draws.chunk_width`) rounded down to a whole number of the
        kernel's tiles, where it is narrower than the draws and wider than one tile: each
        tile pays a fixed cost per integrated level, the same for a tile cut short by the
        chunk's end, so chunks of 83 draws with tiles of 64 paid for ten tiles per 400
        draws instead of seven (``benchmarks/README.md``, issue 21, session 14).
    n_jobs : int or None
        Threads (the result does not depend on it).
    """

    kernel = "numba-rb"
    #: Its draws are of the sampled effects only (see :func:`glmm_sm.mcla.engine.weight_chunks`).
    joint_draws = False

    def __init__(self, draws, chunk_size=None, n_jobs=None):
        if chunk_size is None:
            chunk_size = self._whole_tiles(draws)
        self._setup(draws, chunk_size, n_jobs)
        self.sampler = draws.sampler
        self.structure = self.sampler.structure

    #: Whether the kernel takes its draws in tiles (``tile_width`` of
    #: ``glmm_sm.mcla.kernels.rb``); chunks are then cut at whole tiles.
    tiled = True

    def _whole_tiles(self, draws):
        """The default chunk width of resident ``draws``: ``chunk_width`` rounded down to a
        multiple of the kernel's tile where that width is narrower than the draws and at
        least one tile; None (the draw set's own choice) otherwise, and for draws that are
        not resident (cut at generation chunks)."""
        if not (self.tiled and draws.resident):
            return None
        width = chunk_width(draws.data, draws.memory_budget)
        tile = _tile(draws.sampler.structure.n_levels, draws.m)
        if width >= draws.m or width < tile:
            return None
        return width - width % tile

    def with_nodes(self, n_nodes):
        """An engine on the same draws whose integrated levels are summed by an
        ``n_nodes``-point Gauss-Hermite rule (:meth:`RBSampler.with_nodes
        <glmm_sm.mcla.rb.split.RBSampler.with_nodes>`) in place of the sampler's: the
        ``l_m`` of another rule on these draws.  The draws are shared (not copied); the
        evaluation caches are not."""
        twin = copy.copy(self)
        twin.sampler = self.sampler.with_nodes(n_nodes)
        for key in ("_last", "_moments", "_log_weights"):
            twin.__dict__.pop(key, None)
        return twin

    def centre_probe(self):
        """An engine on one draw, the sampler's centre draw (:meth:`RBSampler.centre_draw
        <glmm_sm.mcla.rb.split.RBSampler.centre_draw>`), with this engine's rule and
        observation order: its gradients under two rules (:meth:`with_nodes`) give the
        rules' difference at the proposal's centre, at the cost of one draw.  None where
        the sampler has no centre draw."""
        make = getattr(self.sampler, "centre_draw", None)
        if make is None:
            return None
        probe = copy.copy(self)
        probe._setup(DrawSet(self.data, 1, chunk=make(), sampler=self.sampler), None,
                     self.n_jobs)
        for key in ("_last", "_moments", "_log_weights"):
            probe.__dict__.pop(key, None)
        probe._obs_order = self._obs_order  # shared, as with_nodes twins share it
        return probe

    def _shift(self):
        """``(DrawShift of the sampled effects, shifted design X + Z M)`` or None."""
        got = self.__dict__.get("_shift_cache")
        if got is None and self.sampler.shift:
            data, smp = self.data, self.sampler
            Mv = np.where(self.structure.is_a[:, None], 0.0, smp.du_dbeta)
            got = (DrawShift(data, Mv, smp.beta0),
                   np.ascontiguousarray(data.X + data.Z @ smp.du_dbeta))
            self._shift_cache = got
        return got

    def _inputs(self, params):
        data, st = self.data, self.structure
        p, k = data.k_fe, data.k_fe + data.k_vcp
        params = np.asarray(params, dtype=np.float64)
        beta, nu = params[:p], np.ascontiguousarray(params[p:k])
        lognu = np.log(nu)
        qb = (st.qbt_sampled).sum(axis=1)
        const_b = -HALF_LOG2PI * qb - 0.5 * st.qbt_sampled @ lognu
        order = self._obs_order
        blocks = RBBlocks(st.lev_bptr, st.free_bptr, order.free_obs,
                          data.col_ptr.astype(np.int64), np.ascontiguousarray(const_b), data.qbt)
        shift, X, rule, dv = self._shift(), order.X, self.sampler.rule(), None
        if shift is not None:
            X = order.shifted_X(shift[1])
            rule, dv = self.sampler.moved_rule(beta)
        rule = rule._replace(ro=order.ro)
        ev = RBInputs(np.take(data.linear_fixed(beta), order.perm), order.wy, order.wn, X,
                      order.zptr, order.zidx, order.zval, st.is_a, nu, lognu,
                      np.zeros((data.n_blocks, p, 0)), np.ascontiguousarray(params[k:]))
        return blocks, rule, ev, dv

    @functools.cached_property
    def _obs_order(self):
        """The kernel's observations in the order it reads them (:class:`ObsOrder`, built
        once per engine and shared by its :meth:`with_nodes` twins)."""
        return ObsOrder(self.data, self.structure)

    def _chunk(self, ev, dv, k0, k1):
        """``(draws, ev)`` for draws ``k0:k1``: the :class:`Draws` (moved when the draws
        move), and ``ev`` with the moved draws' prior beta scores ``gp``."""
        U, logf, S, j0, j1 = self.draws.chunk_arrays(k0, k1)
        logf = np.ascontiguousarray(logf[:, j0:j1])
        if dv is None:
            return Draws(np.ascontiguousarray(U[:, j0:j1]), logf,
                         np.ascontiguousarray(S[:, :, j0:j1])), ev
        shift = self._shift()[0]
        U = shift.move(U, j0, j1, dv)
        S = shift.sums_of_squares(U)
        return Draws(U, logf, S), ev._replace(gp=shift.prior_scores(U, shift.prior_matrix(ev.nu)))

    def _state(self):
        """Fresh work arrays for the kernel (one set per thread; their size does not depend
        on the number of observations: :func:`~glmm_sm.mcla.kernels.rb.make_state`)."""
        data, st = self.data, self.structure
        lens = np.diff(st.lev_ptr)
        return make_state(_tile(st.n_levels, self.m), len(self.sampler.xs), data.k_fe,
                          data.k_vc, st.n_levels,
                          int(lens.max()) if lens.size else 1, data.k_fam,
                          int(np.diff(st.lev_bptr).max()) if st.n_levels else 0)

    def _partition(self, params, c0, c1, keep_lw):
        """Combined sums of chunks ``c0:c1`` and their draws' log weights (or Nones)."""
        data, st = self.data, self.structure
        blocks, rule, ev, dv = self._inputs(params)
        B, T, p, nf = data.n_blocks, data.k_vc, data.k_fe, data.k_fam
        d = p + T + nf
        acc, lws = None, []
        for k0, k1 in self.ranges[c0:c1]:
            draws, ev_k = self._chunk(ev, dv, k0, k1)
            K = draws.U.shape[1]
            out = RBSums(np.full(B, -np.inf), np.zeros(B), np.zeros(B), np.zeros((B, d)),
                         np.zeros((B, d)), np.zeros((B, d, d)), np.zeros((B, d, d)),
                         np.zeros((B, T)), np.zeros(0), np.zeros((B, d, d)),
                         np.zeros((st.n_levels, 2)), np.zeros(data.q), np.zeros(data.q),
                         np.zeros(0), np.zeros(B if nf else 0),
                         np.zeros((B, p * (p + 1) // 2)), np.zeros((B, p if nf else 0)))
            lw = np.empty((B, K if keep_lw else 0))
            rb_chunk_sums(data.family.kernel, blocks, _draw_rule(rule, k0, k1), ev_k, draws, 0, K,
                          out, self._state(), lw)
            # folded in chunk by chunk: memory does not grow with the number of chunks
            acc = out if acc is None else _combine([acc, out], st, data)
            lws.append(lw if keep_lw else None)
        return acc, lws

    def _sums(self, params):
        """The combined sums at ``params``; the draws' log weights are kept (for the tail
        diagnostics) when they take at most
        :data:`KEEP_LOG_WEIGHTS` numbers."""
        keep = self.data.n_blocks * self.m <= KEEP_LOG_WEIGHTS
        got = self._map_partitions(lambda c0, c1: self._partition(params, c0, c1, keep))
        self._log_weights = (params.tobytes(), [lw for g in got for lw in g[1]]) if keep \
            else None
        return _combine([g[0] for g in got], self.structure, self.data)

    def _evaluate(self, params, derivs):
        out = self._sums(params)
        tot = self._partial_sums(out, params)
        # nodes, not draws: no MCSE middle to form (_deterministic reports zeros)
        ev = finish(tot, params, self.data, self.m, derivs,
                    mc_var=not getattr(self.sampler, "deterministic", False))
        if ev.hessian is not None:  # Louis: the node covariances within each draw
            C = (out.sC / out.s0[:, None, None]).sum(axis=0)
            ev.hessian = ev.hessian + 0.5 * (C + C.T)
        self._moments = (params.tobytes(), out)
        return self._deterministic(ev)

    def _deterministic(self, ev):
        """``ev`` of a deterministic sampler (nodes, not draws): no Monte Carlo error, and no
        effective sample size to speak of (ESS inf); other samplers' ``ev`` as it is."""
        if getattr(self.sampler, "deterministic", False):
            if ev.score_var is not None:
                ev.score_var = np.zeros_like(ev.score_var)
            ev.ess = np.full(self.data.n_blocks, np.inf)
        return ev

    def _malpha_products(self, Ma):
        """:class:`MalphaProducts` of ``Ma``, kept for ``Ma`` (the sampler's, the same at
        every evaluation) where they take at most :data:`KEEP_MALPHA_PRODUCTS` numbers."""
        got = self.__dict__.get("_mm")
        if got is not None and got.of is Ma:
            return got
        rows, cols = np.tril_indices(Ma.shape[1])
        out = MalphaProducts(Ma, rows, cols, Ma[:, rows] * Ma[:, cols])
        if out.products.size <= KEEP_MALPHA_PRODUCTS:
            self._mm = out
        return out

    def _level_sums(self):
        """The sparse ``(n_blocks, n_levels)`` indicator of each integrated level's block,
        and per component ``(t, its levels, their columns of the indicator)``."""
        got = self.__dict__.get("_level_ind")
        if got is None:
            st = self.structure
            L = st.n_levels
            ind = sp.csr_matrix((np.ones(L), (st.lev_block, np.arange(L))),
                                shape=(self.data.n_blocks, L))
            per_comp = [(int(tc), st.lev_comp == tc, ind[:, st.lev_comp == tc])
                        for tc in np.unique(st.lev_comp)]
            got = self._level_ind = (ind, per_comp)
        return got

    def _partial_sums(self, out, params):
        """The combined sums as :class:`PartialSums`, with the fixed-effects Hessian
        ``X' diag(h) X`` per block (summed by the kernel) and, for moving draws, the
        prior's beta parts."""
        data, st = self.data, self.structure
        p, nb, T = data.k_fe, data.n_blocks, data.k_vc
        a, s0, s0sq, s1, s1sq, s2, s2sq, sS, hc, sC, mA, sU, sUU = out[:13]
        shift = self._shift()
        # the kernel's X' diag(h) X (with the shifted design for moving draws)
        hxx = np.zeros((1, nb, p, p))
        low = np.tril_indices(p)  # the kernel's order: row by row
        hxx[0][:, low[0], low[1]] = out.hxx
        hxx[0][:, low[1], low[0]] = out.hxx
        smu = np.zeros((1, nb, p, T))
        if shift is not None:
            nu = np.asarray(params, dtype=float)[p : p + T]
            Ma = self.sampler.malpha
            prior = shift[0].prior_hessian(nu)
            # per block sums over its levels (a sparse product: np.add.at over the levels
            # took a tenth of a guPrenat evaluation) of the levels' M_a M_a' / nu, lower
            # triangle only (the upper is the same numbers: the same products, divisions
            # and sums), mirrored
            ind, per_comp = self._level_sums()
            mm = self._malpha_products(Ma)
            tri = ind @ (mm.products / nu[st.lev_comp][:, None])
            full = np.empty(prior.shape)
            full[:, mm.rows, mm.cols] = tri
            full[:, mm.cols, mm.rows] = tri
            prior += full
            hxx[0] += s0[:, None, None] * prior
            smu[0] = shift[0].cross_sums(sU)
            ma = Ma * mA[:, :1]
            for tc, sel, ind_tc in per_comp:
                smu[0][:, :, tc] += ind_tc @ ma[sel]
        fam = {}
        if data.k_fam:  # the negative binomial: X_b' (weighted d2 log f / d eta d alpha)
            fam = {"hxa": out.hxa[None], "saa": out.saa[None]}
        return PartialSums(a[None], s0[None], s0sq[None], s1[None], s1sq[None], s2[None],
                           s2sq[None], sS[None], hxx, smu, **fam)

    def random_effect_moments(self, params):
        """Conditional means and SDs of every random effect (model column order): sampled
        effects from the weighted draws, integrated ones from their node means."""
        data, st = self.data, self.structure
        params = np.asarray(params, dtype=np.float64)
        got = self.__dict__.get("_moments")
        if got is None or got[0] != params.tobytes():
            self.evaluate(params)
            got = self._moments
        s0, mA, sU, sUU = got[1].s0, got[1].mA, got[1].sU, got[1].sUU
        boc = data.block_of_col
        mean_l, m2_l = sU / s0[boc], sUU / s0[boc]
        lb = st.lev_block
        mean_l[st.lev_col] = mA[:, 0] / s0[lb]
        m2_l[st.lev_col] = mA[:, 1] / s0[lb]
        q_model = data.arrays.Z.shape[1]
        nu = params[data.k_fe : data.k_fe + data.k_vcp]
        mean = np.zeros(q_model)
        sd = np.sqrt(nu[data.arrays.ident])
        cp = data.layout.col_perm
        mean[cp] = mean_l
        # E[u^2] - E[u]^2 >= 0 (weighted moments): below 0 only by rounding.
        sd[cp] = np.sqrt(nonnegative_up_to_rounding(
            m2_l - mean_l**2, m2_l, "conditional variances of the random effects"))
        return mean, sd

    def iter_log_weights(self, params):
        """The draws' log weights, chunk by chunk, as ``(n_blocks, K)`` arrays (those of
        the last evaluation when it was at ``params``, else from a kernel pass)."""
        params = np.asarray(params, dtype=np.float64)
        got = self.__dict__.get("_log_weights")
        if got is not None and got[0] == params.tobytes():
            yield from got[1]
            return
        blocks, rule, ev, dv = self._inputs(params)
        for k0, k1 in self.ranges:
            draws, ev_k = self._chunk(ev, dv, k0, k1)
            lw = np.empty((self.data.n_blocks, draws.U.shape[1]))
            rb_log_weights(self.data.family.kernel, blocks, _draw_rule(rule, k0, k1), ev_k,
                           draws, 0, draws.U.shape[1], lw, self._state())
            yield lw

    def weighted_draws(self, params, chunk_size=512):
        raise NotImplementedError(
            "this quantity needs joint draws of every random effect, which a "
            "Rao-Blackwellized fit does not keep (its integrated effects are summed by "
            "quadrature); refit with rao_blackwell=False for it")


class MalphaProducts(NamedTuple):
    """Each level's products ``Ma[a, rows] * Ma[a, cols]`` (``products``: levels x the
    lower triangle, row by row) of ``Ma`` (``of``), the levels' nodes' beta slopes."""

    of: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    products: np.ndarray


class ObsOrder:
    """The scalar RB kernel's per-observation inputs in the order it reads them.

    The kernel visits each block's integrated levels in turn and, within a level, its
    observations ``structure.ro[lev_ptr[a]:lev_ptr[a + 1]]``; then the block's free
    observations ``structure.free_obs``.  With the layout's rows in data order (a crossed
    design's rows fall on the integrated factor's levels at random) each of those reads is
    a random gather over the whole data.  Here the rows are renumbered once, in the order
    of their first visit (``ro``, then ``free_obs``, then rows on neither), so that the
    kernel reads ``X``, ``wy``, ``wn``, ``X beta + offset`` and the rows of ``Z``
    sequentially.  The kernel visits the same observations in the same order as before,
    with the same values: the sums, and so every result, are unchanged (to the bit); the
    users' row order no longer matters to the speed.

    Memory: the permutation ``perm`` (``n`` int64) and the kernel's renumbered ``ro`` and
    ``free_obs``, plus the permuted copies of ``X``, ``wy``, ``wn`` and ``Z``'s CSR arrays
    (the data's own size once more; for moving draws also the shifted design's).

    Attributes
    ----------
    perm : ndarray of int64, shape (n,)
        Layout row of the kernel's observation ``i`` (``perm[i]``).
    ro, free_obs : ndarray of int64
        ``structure.ro`` and ``structure.free_obs`` as kernel observation numbers.
    X, wy, wn, zptr, zidx, zval : ndarray
        The data's ``X``, ``wy``, ``wn`` and ``Z`` (CSR) rows in ``perm`` order.
    """

    def __init__(self, data, structure):
        n = data.wy.shape[0]
        visits = np.concatenate([structure.ro, structure.free_obs]).astype(np.int64)
        # each row at its first visit, then the rows visited by no block: O(n) where each
        # row is visited at most once (every scalar RB layout), else by a sort
        count = np.bincount(visits, minlength=n)
        if count.max(initial=0) <= 1:
            perm = np.concatenate([visits, np.flatnonzero(count == 0)])
        else:
            where = np.sort(np.unique(visits, return_index=True)[1])
            perm = np.concatenate([visits[where], np.flatnonzero(count == 0)])
        inv = np.empty(n, dtype=np.int64)
        inv[perm] = np.arange(n, dtype=np.int64)
        self.perm = perm
        self.ro = inv[structure.ro]
        self.free_obs = inv[structure.free_obs]
        self.X = np.ascontiguousarray(data.X[perm])
        self.wy = np.ascontiguousarray(data.wy[perm])
        self.wn = np.ascontiguousarray(data.wn[perm])
        lens = np.diff(data.zptr)[perm]
        self.zptr = np.zeros(n + 1, dtype=data.zptr.dtype)
        np.cumsum(lens, out=self.zptr[1:])
        # each row's nonzeros keep their order
        src = np.repeat(data.zptr[:-1][perm] - self.zptr[:-1], lens) + np.arange(
            self.zptr[-1], dtype=np.int64)
        self.zidx = np.ascontiguousarray(data.zidx[src])
        self.zval = np.ascontiguousarray(data.zval[src])
        self._shifted = None

    def shifted_X(self, X):
        """The shifted design ``X`` (layout order) in ``perm`` order (kept for ``X``)."""
        if self._shifted is None or self._shifted[0] is not X:
            self._shifted = (X, np.ascontiguousarray(X[self.perm]))
        return self._shifted[1]


def _tile(n_levels, m):
    """The kernel's tile for ``n_levels`` integrated levels and ``m`` draws: no wider
    than the draws (a quadrature fit's outer nodes may be one "draw")."""
    return max(min(tile_width(n_levels), m), 1)


def _draw_rule(rule, k0, k1):
    """``rule`` for draws ``k0:k1``: a re-centred rule's per-draw centres and scales
    (``dmu``, ``sk``) cut to those columns (the kernel numbers a chunk's draws from 0)."""
    if not rule.dmu.shape[1]:
        return rule
    return rule._replace(dmu=np.ascontiguousarray(rule.dmu[:, k0:k1]),
                         sk=np.ascontiguousarray(rule.sk[:, k0:k1]))


def _combine(rows, st, data):
    """Sum partial-sum tuples (chunks or partitions) in order, each rescaled per block to
    the common maximum log weight."""
    if len(rows) == 1:
        return rows[0]
    a = np.stack([r.a for r in rows])
    sc = _scales(a)
    sc2 = sc * sc
    boc, lb = data.block_of_col, st.lev_block

    def tot(name, s, extra=0):
        acc = 0.0
        for j, r in enumerate(rows):  # fixed order: the same bits for any threads
            acc = acc + s[j].reshape(s[j].shape + (1,) * extra) * getattr(r, name)
        return acc

    def some(name, s, extra=0):  # sums a kernel leaves empty stay empty
        first = getattr(rows[0], name)
        return tot(name, s, extra) if first.shape[0] else first

    # per observation (the vector kernel; the scalar one sums X' diag(h) X per block)
    bo_h = np.concatenate([data.block_of_obs[st.ro], data.block_of_obs[st.free_obs]]) \
        if rows[0].hc.shape[0] else None
    hc, hca = some("hc", None if bo_h is None else sc[:, bo_h]), \
        some("hca", None if bo_h is None else sc[:, bo_h])
    return RBSums(a.max(axis=0), tot("s0", sc), tot("s0sq", sc2), tot("s1", sc, 1),
                  tot("s1sq", sc2, 1), tot("s2", sc, 2), tot("s2sq", sc2, 2),
                  tot("sS", sc, 1), hc, tot("sC", sc, 2),
                  tot("mA", sc[:, lb], 1), tot("sU", sc[:, boc]), tot("sUU", sc[:, boc]),
                  hca, some("saa", sc), some("hxx", sc, 1), some("hxa", sc, 1))
