"""Rao-Blackwellized MCLA with correlated random-effect terms (issue 24).

The scalar machinery of :mod:`glmm_sm.mcla.rb.split` integrates one *scalar* component per
block.  In a model with correlated terms (the "maximal" crossed model
``y ~ cond + (1 + cond | subject) + (1 + cond | item)``, or VerbAgg's
``(1 | id) + (1 + Gender | item)``) a block is split here by *units*
(``CovStructure.units`` of :class:`~glmm_sm.spec.covstruct.CovStructure`: a scalar
component, or a correlated term's ``r`` sub-components together): the integrated unit is
one whose levels each observation loads on at most once (all of a level's ``r`` effects
counting as one level); every other effect, correlated or not, is importance-sampled.
Each level's ``r``-vector of effects is integrated given the draw by a tensor-product
adaptive Gauss-Hermite rule (:mod:`glmm_sm.mcla.kernels.rb_vector`), centred at the
level's Laplace conditional mean
given ``v`` and scaled by the Cholesky factor of its conditional covariance (the inverse of
its block of the joint Laplace precision).

Why a tensor rule: ``r`` is 2 (or 3) for the terms of practice; a tensor rule of ``n`` nodes
per dimension keeps positive weights (the node weights are a probability distribution, as
Louis' identity within a draw needs) and is exact for polynomials of degree ``2n - 1`` in
each coordinate; a Gauss-Hermite Smolyak grid saves few nodes in two dimensions and has
negative weights.

* :func:`choose_vector_split` picks the integrated unit per block.
* :class:`VectorRBStructure` holds the bookkeeping, :class:`VectorRBSampler` the draws of
  the sampled effects (the joint Laplace marginal with a defensive t) and the rule.
* :class:`VectorRBEngine` evaluates ``l_m`` with exact derivatives (frozen or moving
  draws, threads; the numba kernel is a plain per-draw loop, not yet tiled as the scalar
  one is).
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp

from glmm_sm.core.constants import HALF_LOG2PI
from glmm_sm.laplace.step import mode_derivatives
from glmm_sm.mcla.engine import finish
from glmm_sm.mcla.kernels import plain as _kernels
from glmm_sm.mcla.kernels.rb_vector import make_work, rbv_chunk_sums
from glmm_sm.mcla.kernels.records import Draws, RBBlocks, RBInputs, RBSums, RBVPrior, RBVRule
from glmm_sm.mcla.partials import PartialSums
from glmm_sm.mcla.rb.engine import RBEngine, _combine
from glmm_sm.mcla.rb.split import AUTO_MIN_Q, RBSampler
from glmm_sm.mcla.sampler import DrawChunk
from glmm_sm.spec.validation import nonnegative_up_to_rounding

__all__ = ["choose_vector_split", "vector_rb_eligible", "VectorRBStructure",
           "VectorRBSampler", "VectorRBEngine", "N_NODES_VECTOR", "PILOT_NODES_VECTOR",
           "FEWER_NODES_VECTOR", "FEWER_NODES_MIN_OBS", "round_nodes_vector",
           "AUTO_MAX_SHARE_VECTOR", "M_START_PER_SAMPLED", "tensor_nodes",
           "vector_integrated_laplace", "vector_quadrature_layout", "VectorQuadratureSampler"]

#: Gauss-Hermite nodes per dimension of an integrated level (``n ** r`` nodes per level).
N_NODES_VECTOR = 7
#: Nodes per dimension of a Monte Carlo fit's (non-pilot) rounds where every integrated
#: level has at least :data:`FEWER_NODES_MIN_OBS` observations (:func:`round_nodes_vector`).
FEWER_NODES_VECTOR = 6
#: The rule's error shrinks as a level's observations make its integrand more nearly
#: Gaussian.  With the draws held fixed, the first-order shift of the estimate from 12 nodes
#: per dimension to 6 (to 7) was at most 0.0035 (0.0008) SE with 8 observations per level,
#: 0.0019 (0.0006) with 16 and 0.0008 (0.0003) with 40 (the maximal model; about
#: 0.03 / n_obs SE at 6 nodes, benchmarks/README.md, "Maximal crossed fits at 2x glmer's
#: time"); from 24 observations on, 6 nodes move it by at most about 0.0013 SE, a twentieth
#: of the smallest MCSE such fits reach (0.025 SE), and save a quarter of the kernel's work.
FEWER_NODES_MIN_OBS = 24
#: Nodes per dimension of a pilot round.
PILOT_NODES_VECTOR = 4
#: A vector Rao-Blackwellized fit's first round draws at least this many per sampled effect
#: (``glmm_sm.mcla.rb.round.rb_m_start``).
M_START_PER_SAMPLED = 25
#: With correlated terms, ``"auto"`` integrates where at most this share of a large block
#: stays sampled (the maximal 60 x 40 design keeps 80 of 200 effects sampled).
AUTO_MAX_SHARE_VECTOR = 0.5


def _unit_levels(data):
    """``(unit_of_col, level_of_col)``: each layout column's unit and a level id (the first
    column of its level)."""
    cov = data.cov
    unit_of_sub = {a: ui for ui, u in enumerate(cov.units) for a in u}
    unit_of_col = np.array([unit_of_sub[int(t)] for t in data.ident], dtype=np.int64)
    level_of_col = np.arange(data.q, dtype=np.int64)
    for ui, u in enumerate(cov.units):
        if len(u) > 1:
            pr = np.asarray(data.pairs[cov.vector_index(ui)])
            for i in range(len(u)):
                level_of_col[pr[:, i]] = pr[:, 0]
    return unit_of_col, level_of_col


def choose_vector_split(data):
    """Per block, the unit (index into ``data.cov.units``) integrated by quadrature, or -1.

    The unit's levels must each be loaded on by an observation at most once (a level's
    ``r`` columns counting once); among such units, the one with the most levels in the
    block.  Every integrated unit has the same dimension ``r`` (that of the block with the
    most integrated levels); blocks whose best unit has another ``r`` are not split.
    """
    cov = data.cov
    Z = data.Z.tocsr()
    n, U = Z.shape[0], len(cov.units)
    out = np.full(data.n_blocks, -1)
    if not Z.nnz:
        return out
    unit_of_col, level_of_col = _unit_levels(data)
    rows = np.repeat(np.arange(n), np.diff(Z.indptr))
    key = np.unique(np.stack([rows, unit_of_col[Z.indices], level_of_col[Z.indices]], 1),
                    axis=0)
    counts = np.zeros((n, U), dtype=np.int64)
    np.add.at(counts, (key[:, 0], key[:, 1]), 1)
    starts = np.asarray(data.obs_ptr[:-1])
    nonempty = np.diff(data.obs_ptr) > 0
    most = np.zeros((data.n_blocks, U), dtype=np.int64)
    if nonempty.any():
        most[nonempty] = np.maximum.reduceat(counts, starts[nonempty], axis=0)
    levels = np.stack([data.qbt[:, u[0]] for u in cov.units], axis=1)
    ok = (most <= 1) & (levels > 0)
    for b in np.flatnonzero(ok.any(axis=1)):
        best = np.flatnonzero(ok[b])
        out[b] = int(best[np.argmax(levels[b, best])])
    if np.any(out >= 0):
        lv = np.array([levels[b, u] if u >= 0 else 0 for b, u in enumerate(out)])
        r = len(cov.units[out[int(np.argmax(lv))]])
        out[[u >= 0 and len(cov.units[u]) != r for u in out]] = -1
    return out


def vector_rb_eligible(data, split=None):
    """Whether ``rao_blackwell="auto"`` integrates a model with correlated terms: some
    block of at least :data:`~glmm_sm.mcla.rb.split.AUTO_MIN_Q` effects keeps at most
    :data:`AUTO_MAX_SHARE_VECTOR` of them sampled."""
    split = choose_vector_split(data) if split is None else split
    qb = np.diff(data.col_ptr)
    for b in np.flatnonzero(split >= 0):
        u = data.cov.units[split[b]]
        sampled = qb[b] - data.qbt[b, list(u)].sum()
        if qb[b] >= AUTO_MIN_Q and sampled <= AUTO_MAX_SHARE_VECTOR * qb[b]:
            return True
    return False


def vector_quadrature_layout(data, names=None):
    """Whether :class:`VectorQuadratureSampler` can integrate a layout with correlated
    terms, and why (not).

    It can when, in every block, the unit :func:`choose_vector_split` picks holds every
    effect of the block: a single grouping factor with a correlated term ``(1 + x | g)``
    (each level's effect vector integrated by the tensor rule, nothing sampled).  Anything
    left to sample (a second grouping factor, crossed or nested, or a second term on the
    same factor) makes it importance sampling.

    Why the tensor rule rather than sampling: with nothing left to sample, the likelihood
    is a product over levels of ``r``-dimensional integrals (``r = 2`` for an intercept and
    a slope); the tensor rule's ``n**r`` nodes (49 at the default 7 per dimension) per level
    cost a fixed, small multiple of one Laplace evaluation, have no Monte Carlo error, and
    their error is measured by the fit (a finer rule's Newton step, in SEs); importance
    sampling the same integrals needs thousands of joint draws per round for the same
    accuracy (issue 21: 79 s against this rule's seconds on 100,000 rows).

    Parameters
    ----------
    data : LayoutData
    names : list of str, optional
        The covariance parameters' names, for the reason.

    Returns
    -------
    ok : bool
    reason : str
        One sentence for the fit log.
    """
    cov = data.cov
    split = choose_vector_split(data)
    qb = np.diff(data.col_ptr)
    left = qb - np.array([data.qbt[b, list(cov.units[u])].sum() if u >= 0 else 0.0
                          for b, u in enumerate(split)])
    if left.size and left.max() <= 0 and np.all(split >= 0):
        r = max(len(cov.units[u]) for u in split)
        return True, (f"one grouping factor: each level's {r}-vector of correlated effects "
                      f"is integrated by a tensor adaptive Gauss-Hermite rule "
                      f"({N_NODES_VECTOR}^{r} nodes per level), nothing is sampled: a "
                      "deterministic fit with no Monte Carlo error (cheaper and exact "
                      "where importance sampling would need thousands of draws)")
    b = int(np.argmax(left))
    if split[b] < 0:
        what = "no term"
    elif names is not None:
        what = repr(names[int(cov.param_ptr[split[b]])].split(" Var(")[0])
    else:
        what = f"unit {split[b]}"
    return False, (f"block {b} keeps {int(left[b])} effects once {what} is integrated "
                   "(more than one grouping factor, or a second term on the factor): "
                   "importance sampling")


def _block_pairs(data, vi, c0, c1, by_first):
    """The column pairs of vector term ``vi`` whose first column is in ``c0:c1`` (a
    block), in their stored order: ``pairs[(pairs[:, 0] >= c0) & (pairs[:, 0] < c1)]``,
    found by bisection in the pairs sorted by first column (kept in ``by_first``) instead
    of a pass over every pair per block."""
    got = by_first.get(vi)
    if got is None:
        pr = np.asarray(data.pairs[vi])
        order = np.argsort(pr[:, 0], kind="stable")
        got = by_first[vi] = (pr, order, pr[order, 0])
    pr, order, first = got
    idx = np.sort(order[np.searchsorted(first, c0, "left"):np.searchsorted(first, c1,
                                                                            "left")])
    return pr[idx]


def _level_block(Zc, rows, cols):
    """``Z[rows][:, cols]`` as a dense ``(len(rows), len(cols))`` array, from the CSC
    columns ``cols`` alone (``rows`` sorted, holding every row those columns touch): the
    work is their nonzeros, where slicing the CSR rows by columns cost the number of
    columns of ``Z`` per level (quadratic in the data over all levels)."""
    out = np.zeros((len(rows), len(cols)), dtype=Zc.dtype)
    for j, c in enumerate(cols):
        k0, k1 = Zc.indptr[c], Zc.indptr[c + 1]
        np.add.at(out[:, j], np.searchsorted(rows, Zc.indices[k0:k1]), Zc.data[k0:k1])
    return out


class VectorRBStructure:
    """Fixed bookkeeping of a Rao-Blackwellized layout with vector levels.

    Attributes
    ----------
    split : ndarray (B,)
        Integrated unit per block (-1: none).
    r : int
        Effects per integrated level.
    lev_cols : ndarray (L, r)
        Layout columns of each integrated level, block by block.
    lev_bptr, lev_ptr, ro, za, free_bptr, free_obs, is_a, qbt_sampled, lev_block
        As :class:`~glmm_sm.mcla.rb.split.RBStructure` (``za`` is (n_int, r)).
    lev_sub, lev_srow : ndarray
        See :class:`~glmm_sm.mcla.kernels.records.RBVRule`.
    """

    vector = True

    def __init__(self, data, split=None):
        self.data = data
        cov = data.cov
        self.split = choose_vector_split(data) if split is None else np.asarray(split)
        units = [cov.units[u] for u in self.split if u >= 0]
        self.r = len(units[0]) if units else 1
        Z = sp.csr_matrix(data.Z)
        Zc = sp.csc_matrix(data.Z)
        T = data.k_vc
        cross_row = {(ui, i, j): T + c for c, (ui, i, j) in enumerate(cov.cross)}
        self.is_a = np.zeros(data.q, dtype=np.bool_)
        lev_cols, lev_bptr, lev_ptr, ro, za, lev_unit = [], [0], [0], [], [], []
        free_bptr, free_obs = [0], []
        covered = np.zeros(Z.shape[0], dtype=bool)
        by_first = {}  # the pairs' order by first column, per vector term (_block_pairs)
        for b in range(data.n_blocks):
            ui = int(self.split[b])
            if ui >= 0:
                u = cov.units[ui]
                c0, c1 = data.col_ptr[b], data.col_ptr[b + 1]
                if len(u) > 1:
                    pr = _block_pairs(data, cov.vector_index(ui), c0, c1, by_first)
                else:
                    cols = np.arange(c0, c1)
                    pr = cols[data.ident[cols] == u[0]][:, None]
                for cols in pr:
                    self.is_a[cols] = True
                    rows = np.unique(np.concatenate(
                        [Zc.indices[Zc.indptr[c]:Zc.indptr[c + 1]] for c in cols]))
                    lev_cols.append(cols)
                    lev_unit.append(ui)
                    ro.extend(rows.tolist())
                    za.append(_level_block(Zc, rows, cols))
                    covered[rows] = True
                    lev_ptr.append(len(ro))
            lev_bptr.append(len(lev_cols))
            obs = np.arange(data.obs_ptr[b], data.obs_ptr[b + 1])
            free_obs.extend(obs[~covered[obs]].tolist())
            free_bptr.append(len(free_obs))
        r = self.r
        L = len(lev_cols)
        self.lev_cols = np.asarray(lev_cols, np.int64).reshape(L, r)
        self.lev_unit = np.asarray(lev_unit, np.int64)
        self.lev_bptr, self.lev_ptr = np.asarray(lev_bptr, np.int64), np.asarray(lev_ptr,
                                                                               np.int64)
        self.ro = np.asarray(ro, np.int64)
        self.za = np.ascontiguousarray(np.concatenate(za) if za else np.zeros((0, r)))
        self.free_bptr = np.asarray(free_bptr, np.int64)
        self.free_obs = np.asarray(free_obs, np.int64)
        self.lev_sub = data.ident[self.lev_cols].astype(np.int64) if L else \
            np.zeros((0, r), np.int64)
        self.lev_srow = np.zeros((L, r, r), np.int64)
        for a in range(L):
            for i in range(r):
                self.lev_srow[a, i, i] = self.lev_sub[a, i]
                for j in range(i):
                    self.lev_srow[a, i, j] = self.lev_srow[a, j, i] = \
                        cross_row[(int(self.lev_unit[a]), i, j)]
        self.qbt_sampled = data.qbt.copy()
        for b in np.flatnonzero(self.split >= 0):
            self.qbt_sampled[b, list(cov.units[self.split[b]])] = 0.0
        self.lev_block = np.repeat(np.arange(data.n_blocks), np.diff(self.lev_bptr))
        # the old scalar attributes some callers read
        self.lev_col = self.lev_cols[:, 0] if L else np.zeros(0, np.int64)

    @property
    def n_levels(self) -> int:
        return len(self.lev_cols)

    def h_layout(self, hc):
        """Per-observation sums ``hc`` (integrated in ``ro`` order, then free) in layout
        order."""
        h = np.zeros(self.data.Z.shape[0])
        n_int = len(self.ro)
        h[self.ro] = hc[:n_int]
        h[self.free_obs] = hc[n_int:]
        return h


def round_nodes_vector(structure):
    """Nodes per dimension of a Monte Carlo fit's rounds (the pilot's are
    ``PILOT_NODES_VECTOR``): :data:`FEWER_NODES_VECTOR` where every integrated level of
    ``structure`` (a :class:`VectorRBStructure`) has at least :data:`FEWER_NODES_MIN_OBS`
    observations, else :data:`N_NODES_VECTOR`."""
    lens = np.diff(structure.lev_ptr)
    if lens.size and int(lens.min()) >= FEWER_NODES_MIN_OBS:
        return FEWER_NODES_VECTOR
    return N_NODES_VECTOR


def tensor_nodes(n, r):
    """``(zs, logw)``: the ``n**r`` standard tensor Gauss-Hermite nodes (K, r) for
    ``int g(z) dz ~ sum_j exp(logw_j) g(z_j)``."""
    x, w = np.polynomial.hermite.hermgauss(int(n))
    lw1 = np.log(w) + x * x + 0.5 * np.log(2.0)
    idx = np.array(list(itertools.product(range(int(n)), repeat=int(r))), dtype=np.int64)
    return np.ascontiguousarray(np.sqrt(2.0) * x[idx]), lw1[idx].sum(axis=1)


class VectorRBSampler(RBSampler):
    """Draws of the sampled effects and the tensor rule of the integrated vector levels.

    Parameters
    ----------
    system, params, mode, t_weight, df, shift
        As :class:`~glmm_sm.mcla.rb.split.RBSampler`.
    structure : VectorRBStructure
    n_nodes : int
        Gauss-Hermite nodes per dimension.
    integrated : bool
        Centre and spread the sampled effects' proposal at the mode and curvature of their
        integrated density (:func:`vector_integrated_laplace`; default); ``False`` keeps
        the joint Laplace marginal.
    """

    name = "rao-blackwell-vector"
    #: The tensor rule is not swapped for another on the same draws (the fitting driver
    #: then measures a pilot round's movement across the two rules), nor probed at a
    #: centre draw (:meth:`RBSampler.centre_draw
    #: <glmm_sm.mcla.rb.split.RBSampler.centre_draw>`).
    with_nodes = None
    centre_draw = None

    def __init__(self, system, params, mode, structure, t_weight=0.1, df=5.0,
                 n_nodes=N_NODES_VECTOR, shift=True, integrated=True):
        self.system, self.structure = system, structure
        self.params = np.asarray(params, dtype=float).copy()
        self.t_weight, self.df = float(t_weight), float(df)
        data = system.data
        self.u_hat = mode.u.copy()
        self.shift = bool(shift)
        p = data.k_fe
        self.beta0 = self.params[:p].copy()
        self.du_dbeta = mode_derivatives(system, self.beta0, self.params[p:], mode,
                                         nu_derivs=False)[0]
        st = structure
        L, r = st.n_levels, st.r
        self.malpha = np.ascontiguousarray(
            self.du_dbeta[st.lev_cols] if self.shift else np.zeros((L, r, p)))
        self.zs, self.logw = tensor_nodes(n_nodes, r)
        self.n_nodes = int(n_nodes)
        self._per_block_vector(system, mode, data)
        self.adapted = self._adapt(vector_integrated_laplace(self, self.params)
                                   if integrated else {})

    def _per_block_vector(self, system, mode, data):
        st = self.structure
        L, r = st.n_levels, st.r
        self.m0, self.R, self.logdet = np.zeros((L, r)), np.zeros((L, r, r)), np.zeros(L)
        crow, ccol, cval = [], [], []
        self.v_cols, self.v_root, self.v_half_logdet = [], [], []
        lev_of_col = np.full(data.q, -1)
        if L:
            lev_of_col[st.lev_cols[:, 0]] = np.arange(L)
        for (_, ids, cols), Lc in zip(system.groups, mode.chol, strict=True):
            P = Lc @ np.swapaxes(Lc, 1, 2)
            for g, b in enumerate(ids):
                cb = cols[g]
                pos = {int(c): i for i, c in enumerate(cb)}
                v_loc = np.flatnonzero(~st.is_a[cb])
                Pb = P[g]
                for i0 in np.flatnonzero(lev_of_col[cb] >= 0):
                    lv = lev_of_col[cb[i0]]
                    ia = np.array([pos[int(c)] for c in st.lev_cols[lv]])
                    cov = np.linalg.inv(Pb[np.ix_(ia, ia)])
                    cov = 0.5 * (cov + cov.T)
                    Rl = np.linalg.cholesky(cov)
                    C = -cov @ Pb[np.ix_(ia, v_loc)]
                    self.R[lv], self.logdet[lv] = Rl, float(np.log(np.diag(Rl)).sum())
                    self.m0[lv] = self.u_hat[cb[ia]] - C @ self.u_hat[cb[v_loc]]
                    for i in range(r):
                        nz = np.flatnonzero(C[i])
                        crow.extend([lv * r + i] * nz.size)
                        ccol.extend(cb[v_loc][nz].tolist())
                        cval.extend(C[i, nz].tolist())
                self._v_marginal(b, cb[v_loc], Pb, v_loc)
        Cm = sp.csr_matrix((cval, (crow, ccol)), shape=(L * r, data.q))
        Cm.sort_indices()
        self.C = Cm
        self.cptr, self.cidx = Cm.indptr.astype(np.int64), Cm.indices.astype(np.int64)
        self.cval = Cm.data.astype(np.float64)

    def rule(self):
        """The kernel's rule (:class:`~glmm_sm.mcla.kernels.records.RBVRule`)."""
        st = self.structure
        return RBVRule(st.lev_ptr, st.lev_sub, st.lev_srow, st.ro, st.za, self.m0, self.cptr,
                       self.cidx, self.cval, self.R, self.logdet, self.zs, self.logw,
                       self.malpha)

    def moved_rule(self, beta):
        """The rule at ``beta`` with moving draws (as
        :meth:`glmm_sm.mcla.rb.split.RBSampler.moved_rule`)."""
        st = self.structure
        du = self.du_dbeta @ (np.asarray(beta, dtype=float) - self.beta0)
        dv = np.where(st.is_a, 0.0, du)
        m0 = self.m0 + du[st.lev_cols] - (self.C @ dv).reshape(self.m0.shape)
        return self.rule()._replace(m0=np.ascontiguousarray(m0)), dv

    def generate(self, seed, size):
        """One chunk of draws of the sampled effects, with their cross sums."""
        chunk = super().generate(seed, size)
        S = chunk.S
        T = self.data.k_vc
        if self.data.cov.n_cross:
            S = np.ascontiguousarray(
                np.concatenate([S[:, :T], self.data.cross_sums(chunk.U)], axis=1))
        return DrawChunk(chunk.U, chunk.logf, S)


class VectorQuadratureSampler(VectorRBSampler):
    """The tensor rule alone: a deterministic fit of a layout with nothing left to sample
    (:func:`vector_quadrature_layout`; a single grouping factor with a correlated term).

    Each level's ``r``-vector is integrated by the tensor adaptive Gauss-Hermite rule of
    :class:`VectorRBSampler`, centred at its Laplace conditional mode and scaled by the
    Cholesky factor of its conditional covariance at the round's centre (moving with the
    fixed effects); there are no sampled effects, so the draw set is one empty "draw"
    (``U = 0``, ``logf = 0``) and the engine's value is the quadrature log-likelihood, with
    exact derivatives and no Monte Carlo error (the engine reports MCSE 0).

    Parameters
    ----------
    system, params, mode, structure, shift
        As :class:`VectorRBSampler`.
    n_nodes : int
        Gauss-Hermite nodes per dimension.
    """

    name = "quadrature-vector"
    deterministic = True

    def __init__(self, system, params, mode, structure, n_nodes=N_NODES_VECTOR, shift=True):
        super().__init__(system, params, mode, structure, t_weight=0.0, n_nodes=n_nodes,
                         shift=shift, integrated=False)
        sizes = np.array([c.size for c in self.v_cols])
        if sizes.size and sizes.max() > 0:
            b = int(np.argmax(sizes))
            raise ValueError(f"sampler='quadrature' with correlated terms needs every effect "
                             f"of a block integrated (one grouping factor); block {b} keeps "
                             f"{sizes[b]} to sample: use sampler='laplace'")
        self.outer = 1

    def generate(self, seed, size):
        """The one empty "draw" (``seed`` is not used)."""
        if size != 1:
            raise ValueError(f"a quadrature draw set with correlated terms has m = 1; got "
                             f"{size}")
        data = self.data
        return DrawChunk(np.zeros((data.q, 1)), np.zeros((data.n_blocks, 1)),
                         np.zeros((data.n_blocks, data.n_s, 1)))


#: Newton's method on the integrated density stops once every step is below this fraction
#: of the effect's SD.
NEWTON_TOL, NEWTON_MAXITER = 1e-6, 30


def vector_integrated_laplace(smp, params):
    """``{b: (mode, covariance)}`` of the *integrated* density of the sampled effects ``v``
    of every split block (as :func:`~glmm_sm.mcla.rb.proposal.integrated_laplace` for
    scalar levels): ``log g(v) = log N(v; 0, Sigma_v) + sum_free log f(y_i | v)
    + sum_a log I_a(v)``, each ``I_a`` by the sampler's tensor rule.  Gradient
    ``sum_i z_iv E[w_i (y_i - mu_i)] - Sigma_v^-1 v``, Hessian
    ``-sum_i z_iv z_iv' E[w_i c''_i] + sum_a Cov(g_a) - Sigma_v^-1`` (node moments, Louis'
    identity per level).  A block where Newton's method fails keeps the joint Laplace
    marginal (it is left out)."""
    data, st = smp.data, smp.structure
    params = np.asarray(params, dtype=float)
    p = data.k_fe
    nu = params[p:]
    fam = data.family
    xb = data.linear_fixed(params[:p])
    Pfull = data.cov.precision_matrix(nu, data.pairs, data.ident).tocsr()
    Pl = {}
    for ui in np.unique(st.lev_unit):
        Pi = np.linalg.inv(data.cov.sigma(nu, int(ui)))
        Pl[int(ui)] = 0.5 * (Pi + Pi.T)
    Z = data.Z.tocsr()
    out = {}
    for b in np.flatnonzero(st.split >= 0):
        vcols = smp.v_cols[b]
        if not vcols.size:
            continue
        Pv = Pfull[vcols][:, vcols].toarray()
        a0, a1 = st.lev_bptr[b], st.lev_bptr[b + 1]
        # The block's levels' rows of Z and of C over the sampled columns, selected once
        # (the levels' rows are consecutive in ``st.ro``): each level's dense pieces are
        # row ranges of these.
        o0 = st.lev_ptr[a0]
        Zb = Z[st.ro[o0:st.lev_ptr[a1]]][:, vcols].toarray()
        Cb = smp.C[a0 * st.r:a1 * st.r][:, vcols].toarray()
        lev = []
        for a in range(a0, a1):
            rows = st.ro[st.lev_ptr[a]:st.lev_ptr[a + 1]]
            P = Pl[int(st.lev_unit[a])]
            C = Cb[(a - a0) * st.r:(a - a0 + 1) * st.r]
            lev.append((rows, st.za[st.lev_ptr[a]:st.lev_ptr[a + 1]],
                        Zb[st.lev_ptr[a] - o0:st.lev_ptr[a + 1] - o0], C, P, a))
        free = st.free_obs[st.free_bptr[b]:st.free_bptr[b + 1]]
        Zf = Z[free][:, vcols].toarray()

        def derivs(v, lev=lev, free=free, Zf=Zf, Pv=Pv):
            f = -0.5 * v @ Pv @ v
            g = -Pv @ v
            H = -Pv.copy()
            e = xb[free] + Zf @ v
            f += np.sum(data.wy[free] * e - data.wn[free] * fam.cumulant(e))
            g += Zf.T @ (data.wy[free] - data.wn[free] * fam.mean(e))
            H -= Zf.T @ ((data.wn[free] * fam.variance(e))[:, None] * Zf)
            for rows, za, Zr, C, P, a in lev:
                alpha = smp.m0[a] + C @ v + smp.zs @ smp.R[a].T  # (K, r)
                eta = (xb[rows] + Zr @ v)[:, None] + za @ alpha.T  # (n_a, K)
                wy, wn = data.wy[rows][:, None], data.wn[rows][:, None]
                lq = (smp.logw - 0.5 * np.einsum("ki,ij,kj->k", alpha, P, alpha)
                      + np.sum(wy * eta - wn * fam.cumulant(eta), axis=0))
                mx = lq.max()
                om = np.exp(lq - mx)
                f += mx + np.log(om.sum())
                om /= om.sum()
                gi = (wy - wn * fam.mean(eta)).T @ Zr  # (K, n_v)
                ga = om @ gi
                d = gi - ga
                g += ga
                H += d.T @ (om[:, None] * d)
                H -= Zr.T @ (((wn * fam.variance(eta)) @ om)[:, None] * Zr)
            return f, g, H

        v = smp.u_hat[vcols].copy()
        f, g, H = derivs(v)
        ok = False
        for _ in range(NEWTON_MAXITER):
            try:
                c = np.linalg.cholesky(-H)
            except np.linalg.LinAlgError:
                break
            step = np.linalg.solve(c.T, np.linalg.solve(c, g))
            sd = 1.0 / np.sqrt(np.diag(-H))
            if np.all(np.abs(step) <= NEWTON_TOL * sd):
                ok = True
                break
            t = 1.0
            for _ in range(30):
                f_new, g_new, H_new = derivs(v + t * step)
                if f_new >= f - 1e-10 * abs(f):
                    break
                t *= 0.5
            v, f, g, H = v + t * step, f_new, g_new, H_new
        if ok and np.all(np.isfinite(H)):
            cov = np.linalg.inv(-H)
            out[int(b)] = (v, 0.5 * (cov + cov.T))
    return out


class VectorRBEngine(RBEngine):
    """``l_m`` on frozen draws of a :class:`VectorRBSampler` (see
    :class:`~glmm_sm.mcla.rb.engine.RBEngine`)."""

    kernel = "numba-rb-vector"
    #: The vector kernel takes its draws one at a time: the draw set's chunks as they are.
    tiled = False
    #: ``evaluate(..., derivs=False)`` runs the kernel's value-only pass (about half the
    #: cost of a full one): the driver evaluates trial points value first after one was
    #: outside the ESS trust region.
    cheap_value_only = True

    def _level_prior(self, nu):
        """``(P (L, r, r), lnorm (L,), Sigma per unit)`` of the integrated levels."""
        st, cov = self.structure, self.data.cov
        L, r = st.n_levels, st.r
        P, lnorm, sig = np.zeros((L, r, r)), np.zeros(L), {}
        for ui in np.unique(st.lev_unit):
            Sg = cov.sigma(nu, int(ui))
            Pi = np.linalg.inv(Sg)
            sig[int(ui)] = (Sg, 0.5 * (Pi + Pi.T))
            sel = st.lev_unit == ui
            P[sel] = sig[int(ui)][1]
            lnorm[sel] = -0.5 * np.linalg.slogdet(Sg)[1] - r * HALF_LOG2PI
        return P, lnorm, sig

    def _inputs(self, params):
        data, st = self.data, self.structure
        p = data.k_fe
        params = np.asarray(params, dtype=np.float64)
        beta, nu = params[:p], np.ascontiguousarray(params[p:])
        nud, lognud, pc = data.cov.kernel_inputs(nu)
        qb = st.qbt_sampled.sum(axis=1)
        const_b = -HALF_LOG2PI * qb - 0.5 * st.qbt_sampled @ lognud
        blocks = RBBlocks(st.lev_bptr, st.free_bptr, st.free_obs,
                          data.col_ptr.astype(np.int64), np.ascontiguousarray(const_b), data.qbt)
        shift, X, rule, dv = self._shift(), data.X, self.sampler.rule(), None
        if shift is not None:
            X = shift[1]
            rule, dv = self.sampler.moved_rule(beta)
        ev = RBInputs(np.ascontiguousarray(data.linear_fixed(beta)), data.wy, data.wn, X,
                      data.zptr, data.zidx, data.zval, st.is_a, np.ascontiguousarray(nud),
                      np.ascontiguousarray(lognud), np.zeros((data.n_blocks, p, 0)))
        P, lnorm, _ = self._level_prior(nu)
        prior = RBVPrior(np.ascontiguousarray(pc, dtype=np.float64), P, lnorm)
        return blocks, (rule, prior), ev, dv

    def _vchunk(self, ev, dv, nu, k0, k1):
        """``RBEngine._chunk`` with the moved draws' prior beta scores at the full
        precision of ``nu`` (the model's covariance parameters)."""
        U, logf, S, j0, j1 = self.draws.chunk_arrays(k0, k1)
        logf = np.ascontiguousarray(logf[:, j0:j1])
        if dv is None:
            return Draws(np.ascontiguousarray(U[:, j0:j1]), logf,
                         np.ascontiguousarray(S[:, :, j0:j1])), ev
        shift = self._shift()[0]
        U = shift.move(U, j0, j1, dv)
        S = shift.sums_of_squares(U)
        return Draws(U, logf, S), ev._replace(gp=shift.prior_scores(U, shift.prior_matrix(nu)))

    def _work(self):
        data, st = self.data, self.structure
        lens = np.diff(st.lev_ptr)
        return make_work(data.k_fe, data.n_s, st.r, len(self.sampler.logw),
                         len(st.ro) + len(st.free_obs), st.n_levels,
                         int(lens.max()) if lens.size else 1,
                         derivs=not self.__dict__.get("_value_only", False))

    def _empty(self):
        data, st = self.data, self.structure
        B, d, n_s = data.n_blocks, data.k_fe + data.n_s, data.n_s
        r = st.r
        return RBSums(np.full(B, -np.inf), np.zeros(B), np.zeros(B), np.zeros((B, d)),
                      np.zeros((B, d)), np.zeros((B, d, d)), np.zeros((B, d, d)),
                      np.zeros((B, n_s)), np.zeros(len(st.ro) + len(st.free_obs)),
                      np.zeros((B, d, d)), np.zeros((st.n_levels, r + r * r)),
                      np.zeros(data.q), np.zeros(data.q))

    def _run(self, params, k0, k1, lw_cols):
        """Kernel sums of draws ``k0:k1`` and their log weights (``lw_cols`` 0: none)."""
        nu = np.asarray(params, dtype=np.float64)[self.data.k_fe:]
        blocks, (rule, prior), ev, dv = self._inputs(params)
        draws, ev_k = self._vchunk(ev, dv, nu, k0, k1)
        K = draws.U.shape[1]
        out = self._empty()
        lw = np.empty((self.data.n_blocks, K if lw_cols else 0))
        rbv_chunk_sums(self.data.family.code, blocks, rule, ev_k, prior, draws, (0, K), out,
                       self._work(), lw)
        return out, lw

    def _partition(self, params, c0, c1, keep_lw):
        rows, lws = [], []
        for k0, k1 in self.ranges[c0:c1]:
            out, lw = self._run(params, k0, k1, keep_lw)
            rows.append(out)
            lws.append(lw if keep_lw else None)
        return _combine(rows, self.structure, self.data), lws

    def _evaluate(self, params, derivs):
        # Without derivatives (a trial point) the kernel forms the log weights alone: the
        # same value and ESS bit for bit, at about half the cost (the node loop's
        # residuals, curvatures and score moments skipped).
        self._value_only = not derivs
        try:
            out = self._sums(params)
        finally:
            self._value_only = False
        if not derivs:
            return self._deterministic(finish(self._partial_sums(out, params), params,
                                              self.data, self.m, False))
        tot = self._partial_sums(out, params)
        ev = finish(tot, params, self.data, self.m, derivs)
        if ev.hessian is not None:  # Louis: the node covariances within each draw
            p = self.data.k_fe
            Jc, _ = self.data.cov.score_map(params[p:], self.data.qbt)
            J = np.zeros((p + Jc.shape[0], p + Jc.shape[1]))
            J[:p, :p] = np.eye(p)
            J[p:, p:] = Jc
            C = J @ (out.sC / out.s0[:, None, None]).sum(axis=0) @ J.T
            ev.hessian = ev.hessian + 0.5 * (C + C.T)
        self._moments = (params.tobytes(), out)
        return self._deterministic(ev)

    def _partial_sums(self, out, params):
        """As ``RBEngine._partial_sums``, with the correlated terms' prior parts."""
        data, st = self.data, self.structure
        p, nb = data.k_fe, data.n_blocks
        params = np.asarray(params, dtype=float)
        nu = params[p:]
        a, s0, s0sq, s1, s1sq, s2, s2sq, sS, hc, sC, mA, sU, sUU = out[:13]
        shift = self._shift()
        X = data.X if shift is None else shift[1]
        hxx = np.zeros((1, nb, p, p))
        _kernels.block_xhx(data.obs_ptr, X, st.h_layout(hc), hxx[0])
        k = data.k_vcp
        smu = np.zeros((1, nb, p, k))
        if shift is not None:
            Ma = self.sampler.malpha  # (L, r, p)
            P, _, _ = self._level_prior(nu)
            prior = shift[0].prior_hessian(nu)
            np.add.at(prior, st.lev_block, np.einsum("aip,aij,ajq->apq", Ma, P, Ma))
            hxx[0] += s0[:, None, None] * prior
            smu[0] = shift[0].cross_sums(sU, nu)
            r = st.r
            Ea = mA[:, :r]
            cov = data.cov
            for ui in np.unique(st.lev_unit):
                sel = np.flatnonzero(st.lev_unit == ui)
                sl = cov.unit_params(int(ui))
                if len(cov.units[int(ui)]) == 1:
                    Ms = [np.array([[1.0 / nu[sl.start] ** 2]])]
                else:
                    Ms = cov._term_pieces(nu, int(ui))[2]
                for jj, M in enumerate(Ms):
                    contrib = np.einsum("aip,ij,aj->ap", Ma[sel], M, Ea[sel])
                    np.add.at(smu[0], (st.lev_block[sel], slice(None), sl.start + jj),
                              contrib)
        return PartialSums(a[None], s0[None], s0sq[None], s1[None], s1sq[None], s2[None],
                           s2sq[None], sS[None], hxx, smu)

    def random_effect_moments(self, params):
        """Conditional means and SDs of every random effect (model column order)."""
        data, st = self.data, self.structure
        params = np.asarray(params, dtype=np.float64)
        got = self.__dict__.get("_moments")
        if got is None or got[0] != params.tobytes():
            self.evaluate(params)
            got = self._moments
        s0, mA, sU, sUU = got[1].s0, got[1].mA, got[1].sU, got[1].sUU
        boc = data.block_of_col
        mean_l, m2_l = sU / s0[boc], sUU / s0[boc]
        lb, r = st.lev_block, st.r
        for i in range(r):
            mean_l[st.lev_cols[:, i]] = mA[:, i] / s0[lb]
            m2_l[st.lev_cols[:, i]] = mA[:, r + i * r + i] / s0[lb]
        q_model = data.arrays.Z.shape[1]
        nu = params[data.k_fe:]
        mean = np.zeros(q_model)
        sd = np.sqrt(data.cov.variances(nu)[data.arrays.ident])
        cp = data.layout.col_perm
        mean[cp] = mean_l
        sd[cp] = np.sqrt(nonnegative_up_to_rounding(
            m2_l - mean_l**2, m2_l, "conditional variances of the random effects"))
        return mean, sd

    def iter_log_weights(self, params):
        """The draws' log weights chunk by chunk (see
        :meth:`glmm_sm.mcla.rb.engine.RBEngine.iter_log_weights`)."""
        params = np.asarray(params, dtype=np.float64)
        got = self.__dict__.get("_log_weights")
        if got is not None and got[0] == params.tobytes():
            yield from got[1]
            return
        for k0, k1 in self.ranges:
            yield self._run(params, k0, k1, True)[1]
