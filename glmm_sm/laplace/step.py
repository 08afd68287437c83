"""The Laplace step: conditional modes per block, the Laplace log-likelihood and its maximizer.

For fixed ``theta = (beta, nu)`` the conditional mode ``u(theta)`` maximizes, block by block,

    h_b(u) = sum_{i in b} w_i (y_i eta_i - c_i(eta_i)) - 1/2 sum_{j in b} u_j^2 / nu_t(j)

and the Laplace approximation of the block's log-likelihood is
``h_b(u) - 1/2 sum_j log nu_t(j) - 1/2 log det P_b`` with the precision
``P_b = Z_b' diag(w c''(eta)) Z_b + D_b^{-1}``.  The Laplace MLE supplies start values and
the centre of the importance sampler.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.linalg import solve_triangular
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from glmm_sm.laplace.prior import PriorPrecision, vector_laplace_score
from glmm_sm.spec.arrays import LayoutData
from glmm_sm.spec.families import nb_constant, nb_draw_terms
from glmm_sm.spec.folds import block_grams, block_sums, fold
from glmm_sm.spec.params import ParamTransform

__all__ = ["BlockSystem", "ModeResult", "conditional_mode", "laplace_loglike", "laplace_score",
           "laplace_fit", "mode_derivatives", "glm_start", "robust_cholesky", "spd_solve",
           "checked_cholesky", "SchurBlock", "SchurFactor", "schur_blocks", "SCHUR_MIN_Q",
           "SCHUR_MAX_REST", "SCHUR_CHUNK_ROWS", "SchurProducts", "SCHUR_DENSE_AV",
           "LaplaceFit", "family_system", "split_params", "laplace_value", "score_blocks",
           "score_from_sums", "glm_block_terms", "glm_newton", "LocalLaplace",
           "laplace_optimize", "value_blocks"]

LOGNU_BOUNDS = (np.log(1e-8), np.log(1e8))

#: Blocks of at least this many effects are factored through a Schur complement
#: (:class:`SchurFactor`) where one scalar component's part of the precision is diagonal
#: (every observation of the block loads on at most one of its levels: the groups of a
#: groups x items design).  A dense factor of such a block costs ``q^2`` memory and ``q^3 / 3``
#: flops per evaluation (800 MB and 3e11 flops at q = 10,020).
SCHUR_MIN_Q = 500
#: ... provided the other effects of the block (the dense Schur complement's dimension) are
#: at most this many.
SCHUR_MAX_REST = 2000
#: Rows per chunk of the Schur blocks' leverages (bounds the working set to this many rows
#: times the Schur complement's dimension).
SCHUR_CHUNK_ROWS = 65536


@dataclass
class SchurBlock:
    """The fixed pattern of one block factored through a Schur complement.

    The block's effects are ordered ``cols = (a_cols, v_cols)``: the levels ``a`` of a scalar
    component on which every observation loads at most once (so that ``P_aa`` is diagonal),
    then the other effects ``v``.  With ``P_aa = diag(d)``, ``B = P_av`` and the Schur
    complement ``S = P_vv - B' diag(1/d) B``, ``det P = prod(d) det S`` and every solve,
    draw and leverage costs ``O(rows + nonzeros)`` plus ``O(n_v^3)``.

    Attributes
    ----------
    block : int
    component : int
        The component of the ``a`` levels.
    a_cols, v_cols, cols : ndarray of int
        Layout columns (``cols`` their concatenation, the block-local order of
        :class:`SchurFactor`).
    row0, row1 : int
        The block's rows (layout order).
    a_of_row, za : ndarray
        Per row of the block, its ``a`` level (index into ``a_cols``; -1 for none) and its
        coefficient there (0 for none).
    Zv : scipy.sparse.csr_matrix (rows, n_v)
        The block's rows of ``Z`` on ``v_cols``.
    """

    block: int
    component: int
    a_cols: np.ndarray
    v_cols: np.ndarray
    cols: np.ndarray
    row0: int
    row1: int
    a_of_row: np.ndarray
    za: np.ndarray
    Zv: object

    @property
    def n_a(self) -> int:
        return len(self.a_cols)

    @functools.cached_property
    def products(self):
        """The fixed patterns of :meth:`SchurFactor.build`'s products (a
        :class:`SchurProducts`), found once per block."""
        return SchurProducts.of(self)

    @functools.cached_property
    def Za(self):
        """The block's rows of ``Z`` on ``a_cols`` (CSR, at most one entry per row)."""
        has = self.a_of_row >= 0
        n = self.row1 - self.row0
        return sp.csr_matrix((self.za[has], (np.flatnonzero(has), self.a_of_row[has])),
                             shape=(n, self.n_a))


@dataclass
class SchurProducts:
    """The fixed sparsity patterns of a :class:`SchurBlock`'s ``B = Z_a' diag(h) Z_v`` and
    ``Z_v' diag(h) Z_v``, so that :meth:`SchurFactor.build` forms both with one weighted
    count over the nonzeros of ``Z_v`` (``O(nonzeros)``, the rows read in order) instead of
    sparse products that gather rows at random over the levels.

    Attributes
    ----------
    indptr, indices : ndarray of int
        ``B``'s CSR pattern (rows: the ``a`` levels; sorted columns): every ``(a, v)`` pair
        on which some row of the block loads.
    b_row, b_weight, b_target : ndarray
        Per nonzero of ``Z_v`` in a row with an ``a`` level: its row (block-local), its
        value times the row's ``a`` coefficient, and its position in ``B``'s data.
    v_row, v_weight, v_target : ndarray
        Per pair of nonzeros of ``Z_v`` in one row: the row, the product of the two values,
        and the pair's position in the raveled ``(n_v, n_v)`` matrix.
    """

    indptr: np.ndarray
    indices: np.ndarray
    b_row: np.ndarray
    b_weight: np.ndarray
    b_target: np.ndarray
    v_row: np.ndarray
    v_weight: np.ndarray
    v_target: np.ndarray

    @classmethod
    def of(cls, sb):
        Zv = sp.csr_matrix(sb.Zv)
        n, n_v, n_a = Zv.shape[0], Zv.shape[1], sb.n_a
        cnt = np.diff(Zv.indptr)
        rows = np.repeat(np.arange(n, dtype=np.int64), cnt)
        cols = Zv.indices.astype(np.int64)
        a = sb.a_of_row[rows]
        has = a >= 0
        key = a[has] * n_v + cols[has]
        uniq, target = np.unique(key, return_inverse=True)
        indptr = np.zeros(n_a + 1, dtype=np.int64)
        np.cumsum(np.bincount(uniq // max(n_v, 1), minlength=n_a), out=indptr[1:])
        vr, vw, vt = [], [], []
        for k in np.unique(cnt[cnt > 0]):
            rsel = np.flatnonzero(cnt == k)
            idx = Zv.indptr[rsel][:, None] + np.arange(k)[None, :]
            c, x = cols[idx], Zv.data[idx]
            vr.append(np.repeat(rsel, k * k))
            vw.append((x[:, :, None] * x[:, None, :]).ravel())
            vt.append((c[:, :, None] * n_v + c[:, None, :]).ravel())
        return cls(indptr, (uniq % max(n_v, 1)).astype(np.int64), rows[has],
                   Zv.data[has] * sb.za[rows[has]], target.reshape(-1).astype(np.int64),
                   _cat(vr, np.int64), _cat(vw, np.float64), _cat(vt, np.int64))

    def b_matrix(self, hb, n_v):
        """``B = Z_a' diag(hb) Z_v`` (CSR, ``n_a x n_v``)."""
        data = np.bincount(self.b_target, weights=self.b_weight * hb[self.b_row],
                           minlength=len(self.indices))
        return sp.csr_matrix((data, self.indices, self.indptr),
                             shape=(len(self.indptr) - 1, n_v))

    def vv_matrix(self, hb, n_v):
        """``Z_v' diag(hb) Z_v`` (dense ``n_v x n_v``)."""
        return np.bincount(self.v_target, weights=self.v_weight * hb[self.v_row],
                           minlength=n_v * n_v).reshape(n_v, n_v)


def _cat(parts, dtype):
    """``parts`` concatenated (an empty array of ``dtype`` for none)."""
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


#: A Schur block's leverages use the dense ``L^{-1} B' diag(1/d)`` (``n_v x n_a``, also
#: :meth:`SchurFactor.inv_diag`'s) where it holds at most this many numbers; a larger one
#: takes the row-chunked triangular solves instead.
SCHUR_DENSE_AV = 2**24


@dataclass
class SchurFactor:
    """A :class:`SchurBlock`'s precision ``P = [[diag(d), B], [B', P_vv]]`` at one point,
    factored through ``S = P_vv - B' diag(1/d) B = L L'``.

    Attributes
    ----------
    d : ndarray (n_a,)
        ``P_aa``'s diagonal.
    B : scipy.sparse.csr_matrix (n_a, n_v)
        ``P_av``.
    L : ndarray (n_v, n_v)
        Lower Cholesky factor of ``S``; where ``ok`` is false, that of a jittered matrix
        (:func:`robust_cholesky`), with ``d`` replaced where it is not positive (a usable
        scale for Newton steps and proposals, never in a log-likelihood).
    ok : bool
        ``P`` is finite and positive definite in floating point (every ``d > 0`` and ``S``
        factored).
    """

    d: np.ndarray
    B: object
    L: np.ndarray
    ok: bool

    @classmethod
    def build(cls, sb: SchurBlock, h, dinv):
        """The factor at the per-row weights ``h`` (``w c''``, the whole layout's) and the
        prior precision's diagonal ``dinv`` (layout order)."""
        hb = h[sb.row0 : sb.row1]
        has = sb.a_of_row >= 0
        d = np.bincount(sb.a_of_row[has], weights=hb[has] * sb.za[has] ** 2,
                        minlength=sb.n_a) + dinv[sb.a_cols]
        pr, n_v = sb.products, len(sb.v_cols)
        B = pr.b_matrix(hb, n_v)
        Pvv = pr.vv_matrix(hb, n_v) + np.diag(dinv[sb.v_cols])
        ok = bool(np.all(np.isfinite(d)) and np.all(d > 0))
        if not ok:
            fin = np.isfinite(d) & (d > 0)
            big = float(np.max(np.abs(d[np.isfinite(d)]))) if np.isfinite(d).any() else 1.0
            d = np.where(fin, d, max(big, 1e-300))
        DiB = sp.diags(1.0 / d) @ B
        S = Pvv - np.asarray((B.T @ DiB).toarray())
        S = 0.5 * (S + S.T)
        if S.shape[0] == 0:
            return cls(d, B, np.zeros((0, 0)), ok)
        L, ok_s = checked_cholesky(S[None])
        return cls(d, B, L[0], bool(ok and ok_s[0]))

    @property
    def n_a(self) -> int:
        return len(self.d)

    @property
    def logdet(self) -> float:
        """``log det P`` (meaningful where ``ok``)."""
        return float(np.log(self.d).sum() + 2.0 * np.log(np.diag(self.L)).sum())

    def solve(self, R):
        """``P^{-1} R`` for ``R`` of shape ``(n_a + n_v,)`` or ``(n_a + n_v, k)``."""
        R = np.asarray(R, dtype=float)
        na = self.n_a
        ra, rv = R[:na], R[na:]
        dd = self.d if R.ndim == 1 else self.d[:, None]
        t = rv - self.B.T @ (ra / dd)
        xv = _tri_solve(self.L, _tri_solve(self.L, t[..., None] if R.ndim == 1 else t),
                        trans=True)
        if R.ndim == 1:
            xv = xv[:, 0]
        xa = (ra - self.B @ xv) / dd
        return np.concatenate([xa, xv])

    def color(self, Zs):
        """``x`` with ``x' P x = z' z``, for standard normal ``z`` ((n_a + n_v, k)): then
        ``x ~ N(0, P^{-1})``.  ``x_v = L^{-T} z_v`` and ``x_a = (z_a / sqrt(d)) - B x_v / d``
        (the conditional of ``a`` given ``v``)."""
        na = self.n_a
        xv = _tri_solve(self.L, Zs[na:], trans=True)
        xa = Zs[:na] / np.sqrt(self.d)[:, None] - (self.B @ xv) / self.d[:, None]
        return np.concatenate([xa, xv])

    def whiten(self, X):
        """``z`` with ``z' z = x' P x`` (the inverse of :meth:`color`)."""
        na = self.n_a
        zv = self.L.T @ X[na:]
        za = np.sqrt(self.d)[:, None] * X[:na] + (self.B @ X[na:]) / np.sqrt(self.d)[:, None]
        return np.concatenate([za, zv])

    def inv_diag(self):
        """The diagonal of ``P^{-1}`` (block-local order)."""
        na = self.n_a
        out = np.empty(na + self.L.shape[0])
        if self.L.shape[0]:
            Li = self._l_inverse
            out[na:] = np.einsum("ij,ij->j", Li, Li)
            # (P^-1)_aa = 1/d + diag(D^-1 B S^-1 B' D^-1), row by row.
            W = self._solved_b
            out[:na] = 1.0 / self.d + np.einsum("ij,ij->j", W, W)
        else:
            out[:na] = 1.0 / self.d
        return out

    @functools.cached_property
    def _l_inverse(self):
        """``L^{-1}`` (dense ``n_v x n_v``), shared by :meth:`inv_diag`, :meth:`inv_vv` and
        :meth:`leverage`."""
        return _tri_solve(self.L, np.eye(self.L.shape[0]))

    @functools.cached_property
    def _solved_b(self):
        """``L^{-1} B' diag(1/d)`` (dense ``n_v x n_a``), shared by :meth:`inv_diag` and
        :meth:`leverage`."""
        return _tri_solve(self.L, np.asarray((self.B.T @ sp.diags(1.0 / self.d)).toarray()))

    def dense(self):
        """``P`` itself, dense (block-local order): ``(n_a + n_v)^2`` numbers, for callers
        that need the whole matrix of a block small enough to hold."""
        na = self.n_a
        B = np.asarray(self.B.toarray())
        P = np.empty((na + self.L.shape[0],) * 2)
        P[:na, :na] = np.diag(self.d)
        P[:na, na:] = B
        P[na:, :na] = B.T
        P[na:, na:] = self.L @ self.L.T + B.T @ (B / self.d[:, None])
        return P

    def inv_vv(self):
        """``(P^{-1})_vv = S^{-1}``."""
        Li = self._l_inverse
        M = Li.T @ Li
        return 0.5 * (M + M.T)

    def leverage(self, sb: SchurBlock):
        """``z_i' P^{-1} z_i`` for each row ``i`` of the block: with
        ``w_i = z_iv - B' z_ia / d`` (the row's loadings given ``a``),
        ``z_ia^2 / d_a + |L^{-1} w_i|^2``; in chunks of :data:`SCHUR_CHUNK_ROWS` rows."""
        n = sb.row1 - sb.row0
        has = sb.a_of_row >= 0
        out = np.zeros(n)
        out[has] = sb.za[has] ** 2 / self.d[sb.a_of_row[has]]
        if not self.L.shape[0]:
            return out
        if self.L.shape[0] * self.n_a <= SCHUR_DENSE_AV:
            # L^{-1} w_i = L^{-1} z_iv - z_ia (L^{-1} B' D^{-1})[:, a_i]: the solved columns
            # of B' D^{-1} (computed once, n_v^2 n_a flops) gathered per row, instead of
            # one triangular solve per row (n_v^2 flops each).
            Wt = np.ascontiguousarray(self._solved_b.T)  # a level's column, contiguous
            Li = self._l_inverse
            Zv = sp.csr_matrix(sb.Zv)
            for r0 in range(0, n, SCHUR_CHUNK_ROWS):
                r1 = min(n, r0 + SCHUR_CHUNK_ROWS)
                Y = np.asarray(Zv[r0:r1] @ Li.T)
                a, hs = sb.a_of_row[r0:r1], has[r0:r1]
                if hs.all():
                    G = Wt[a]
                    G *= sb.za[r0:r1, None]
                    Y -= G
                else:
                    Y[hs] -= sb.za[r0:r1][hs, None] * Wt[a[hs]]
                out[r0:r1] += np.einsum("ij,ij->i", Y, Y)
            return out
        Za = sb.Za
        DiB = sp.csr_matrix(sp.diags(1.0 / self.d) @ self.B)
        for r0 in range(0, n, SCHUR_CHUNK_ROWS):
            r1 = min(n, r0 + SCHUR_CHUNK_ROWS)
            W = np.asarray((sb.Zv[r0:r1] - Za[r0:r1] @ DiB).toarray())
            Y = _tri_solve(self.L, W.T)
            out[r0:r1] += np.einsum("ij,ij->j", Y, Y)
        return out


def schur_blocks(data: LayoutData, min_q=SCHUR_MIN_Q, max_rest=SCHUR_MAX_REST):
    """The blocks of ``data`` factored through a Schur complement (list of
    :class:`SchurBlock`).

    A block qualifies with at least ``min_q`` effects and a scalar component of which every
    observation of the block loads on at most one column, leaving at most ``max_rest``
    other effects; among such components, the one with the most columns in the block (the
    rule of the Rao-Blackwellized split, so that both integrate the same levels).  Models
    with correlated terms (an off-diagonal prior precision) are factored densely.
    """
    if data.cov.has_vector or data.q == 0:
        return []
    qb = np.diff(data.col_ptr)
    out = []
    Z = data.Z
    for b in np.flatnonzero(qb >= min_q):
        r0, r1 = int(data.obs_ptr[b]), int(data.obs_ptr[b + 1])
        c0 = int(data.col_ptr[b])
        Zb = Z[r0:r1]
        comp = data.ident[Zb.indices]
        rows = np.repeat(np.arange(r1 - r0), np.diff(Zb.indptr))
        counts = np.zeros((r1 - r0, data.k_vc), dtype=np.int64)
        np.add.at(counts, (rows, comp), 1)
        most = counts.max(axis=0) if r1 > r0 else np.zeros(data.k_vc, np.int64)
        ok = (most <= 1) & (data.qbt[b] > 0)
        if not ok.any():
            continue
        best = np.flatnonzero(ok)
        t = int(best[np.argmax(data.qbt[b, best])])
        cols = np.arange(c0, int(data.col_ptr[b + 1]))
        is_a = data.ident[cols] == t
        a_cols, v_cols = cols[is_a], cols[~is_a]
        if len(v_cols) > max_rest:
            continue
        pos = np.full(data.q, -1)
        pos[a_cols] = np.arange(len(a_cols))
        in_a = comp == t
        a_of_row = np.full(r1 - r0, -1, dtype=np.int64)
        za = np.zeros(r1 - r0)
        a_of_row[rows[in_a]] = pos[Zb.indices[in_a]]
        za[rows[in_a]] = Zb.data[in_a]
        vpos = np.full(data.q, -1)
        vpos[v_cols] = np.arange(len(v_cols))
        Zv = sp.csr_matrix((Zb.data[~in_a], (rows[~in_a], vpos[Zb.indices[~in_a]])),
                           shape=(r1 - r0, len(v_cols)))
        out.append(SchurBlock(int(b), t, a_cols, v_cols, np.concatenate([a_cols, v_cols]),
                              r0, r1, a_of_row, za, Zv))
    return out


class BlockSystem:
    """Block-diagonal linear algebra for one layout, batched over blocks of equal size.

    Blocks are grouped by their number of random effects ``qs``; each group's precision
    matrices are one stacked array of shape ``(n_g, qs, qs)``.  Large blocks with a diagonal
    part (:func:`schur_blocks`) are in no group: they are listed in ``schur`` and factored
    through their Schur complement (:class:`SchurFactor`).

    Parameters
    ----------
    data : LayoutData
    schur_min_q : int, optional
        :func:`schur_blocks`'s ``min_q`` (default :data:`SCHUR_MIN_Q`); ``None`` or a number
        above every block's size factors every block densely.
    """

    def __init__(self, data: LayoutData, schur_min_q=SCHUR_MIN_Q):
        self.data = data
        col_ptr = data.col_ptr
        qb = np.diff(col_ptr).copy()
        self.schur = [] if schur_min_q is None else schur_blocks(data, schur_min_q)
        in_schur = np.zeros(len(qb), dtype=bool)
        in_schur[[sb.block for sb in self.schur]] = True
        qb[in_schur] = 0
        self.groups = []  # (qs, block ids, layout column index array (n_g, qs))
        sizes = sorted(set(qb[qb > 0].tolist()))
        group_of_block = np.full(len(qb), -1)
        pos_of_block = np.zeros(len(qb), dtype=np.int64)
        offsets = [0]
        for g, qs in enumerate(sizes):
            ids = np.flatnonzero(qb == qs)
            group_of_block[ids] = g
            pos_of_block[ids] = np.arange(len(ids))
            cols = col_ptr[ids][:, None] + np.arange(qs)[None, :]
            self.groups.append((qs, ids, cols))
            offsets.append(offsets[-1] + len(ids) * qs * qs)
        self.offsets = offsets
        self.group_of_block, self.pos_of_block = group_of_block, pos_of_block
        self._group_qs = np.array([qs for qs, _, _ in self.groups] or [0])
        # Pairs of non-zeros in one row give the entries of Z' W Z.
        Z = data.Z
        tgt, obs, val = [], [], []
        group_qs = np.array([qs for qs, _, _ in self.groups] or [0])
        nnz_row = np.diff(Z.indptr).copy()
        nnz_row[in_schur[data.block_of_obs]] = 0
        for k in np.unique(nnz_row[nnz_row > 0]):
            rsel = np.flatnonzero(nnz_row == k)
            starts = Z.indptr[rsel]
            idx = starts[:, None] + np.arange(k)[None, :]  # (r, k) positions into data
            cols = Z.indices[idx]
            vals = Z.data[idx]
            b = data.block_of_obs[rsel]
            g = group_of_block[b]
            qs = group_qs[g]
            base = np.array(offsets)[g] + pos_of_block[b] * qs * qs
            local = cols - col_ptr[b][:, None]
            t = base[:, None, None] + local[:, :, None] * qs[:, None, None] + local[:, None, :]
            v = vals[:, :, None] * vals[:, None, :]
            tgt.append(t.ravel())
            val.append(v.ravel())
            obs.append(np.repeat(rsel, k * k))
        self.pair_target = np.concatenate(tgt) if tgt else np.zeros(0, np.int64)
        self.pair_val = np.concatenate(val) if val else np.zeros(0)
        self.pair_obs = np.concatenate(obs) if obs else np.zeros(0, np.int64)
        self.total = offsets[-1]
        # Each group's diagonal entries in the concatenated stacked matrices, and their
        # layout columns (the prior precision's diagonal is added there in one step).
        self._diag_pos = np.concatenate(
            [offsets[g] + (np.arange(len(ids))[:, None] * qs * qs
                           + np.arange(qs)[None, :] * (qs + 1)).ravel()
             for g, (qs, ids, _) in enumerate(self.groups)] or [np.zeros(0, np.int64)])
        self._diag_col = np.concatenate(
            [cols.ravel() for _, _, cols in self.groups] or [np.zeros(0, np.int64)])
        # Each dense block's first entry in the concatenated matrices, size and first layout
        # column (a block's columns are contiguous), for :meth:`solve_flat`.
        self._blk_start = np.concatenate(
            [offsets[g] + np.arange(len(ids), dtype=np.int64) * qs * qs
             for g, (qs, ids, _) in enumerate(self.groups)] or [np.zeros(0, np.int64)])
        self._blk_q = np.concatenate(
            [np.full(len(ids), qs, dtype=np.int64) for qs, ids, _ in self.groups]
            or [np.zeros(0, np.int64)])
        self._blk_id = np.concatenate(
            [ids.astype(np.int64) for _, ids, _ in self.groups] or [np.zeros(0, np.int64)])
        self._blk_col = np.concatenate(
            [cols[:, 0].astype(np.int64) for _, _, cols in self.groups]
            or [np.zeros(0, np.int64)])

    def schur_factors(self, h, dinv):
        """:class:`SchurFactor` of each of ``schur`` at the weights ``h`` and prior precision
        ``dinv`` (a :class:`~glmm_sm.laplace.prior.PriorPrecision` or its diagonal)."""
        d = dinv.dinv if isinstance(dinv, PriorPrecision) else dinv
        return [SchurFactor.build(sb, h, d) for sb in self.schur]

    def ztwz(self, h):
        """Stacked ``Z_b' diag(h) Z_b`` per group."""
        flat = np.bincount(self.pair_target, weights=h[self.pair_obs] * self.pair_val,
                           minlength=self.total)
        out = []
        for g, (qs, ids, _) in enumerate(self.groups):
            out.append(flat[self.offsets[g] : self.offsets[g + 1]].reshape(len(ids), qs, qs))
        return out

    def flat_index(self, r, c):
        """Positions of the entries ``(r, c)`` (layout columns of one block) in the
        concatenated stacked per-group matrices."""
        b = self.data.block_of_col[r]
        g = self.group_of_block[b]
        qs = self._group_qs[g]
        c0 = self.data.col_ptr[b]
        return (np.asarray(self.offsets)[g] + self.pos_of_block[b] * qs * qs
                + (r - c0) * qs + (c - c0))

    def split(self, flat):
        """The concatenated per-group matrices ``flat`` as the stacked list."""
        return [flat[self.offsets[g] : self.offsets[g + 1]].reshape(len(ids), qs, qs)
                for g, (qs, ids, _) in enumerate(self.groups)]

    def precision(self, h, dinv):
        """Stacked ``Z_b' diag(h) Z_b + D_b^{-1}`` per group; ``dinv`` is the prior
        precision's diagonal (an array) or a :class:`~glmm_sm.laplace.prior.PriorPrecision`."""
        return self.split(self.precision_flat(h, dinv))

    def precision_flat(self, h, dinv):
        """:meth:`precision`'s matrices concatenated (group by group, each stacked array
        raveled: the layout of :meth:`split`)."""
        prior = dinv if isinstance(dinv, PriorPrecision) else None
        flat = np.bincount(self.pair_target, weights=h[self.pair_obs] * self.pair_val,
                           minlength=self.total).astype(np.float64, copy=False)  # (int when empty)
        d = prior.dinv if prior is not None else dinv
        flat[self._diag_pos] += d[self._diag_col]
        if prior is not None and prior.off is not None:
            flat += prior.off_flat(self)
        return flat

    def cholesky_flat(self, flat):
        """Every dense block's lower Cholesky factor of the precision ``flat``
        (:meth:`precision_flat`), in one compiled pass (``_ragged_cholesky``).

        Returns
        -------
        L : ndarray
            The factors in ``flat``'s layout (:meth:`split` gives the stacked groups);
            where a block does not factor, :func:`robust_cholesky`'s factor of a
            jittered matrix, as :func:`checked_cholesky` gives.
        logdet : ndarray
            ``log det P_b`` of each dense block, in the order of the groups' ``ids``
            concatenated (meaningless where not ``ok``).
        ok : ndarray of bool
            Which blocks factored, in the same order.
        """
        flat = np.ascontiguousarray(flat, dtype=np.float64)
        n = len(self._blk_q)
        L, logdet, ok = np.zeros(self.total), np.zeros(n), np.ones(n, dtype=bool)
        if n:
            _jit_ragged(_ragged_cholesky)(flat, self._blk_start, self._blk_q, L, logdet, ok)
        for b in np.flatnonzero(~ok):
            q, s0 = int(self._blk_q[b]), int(self._blk_start[b])
            L[s0 : s0 + q * q] = _cholesky_one(flat[s0 : s0 + q * q].reshape(q, q)).ravel()
        return L, logdet, ok

    def inverse_flat(self, Lflat):
        """Every dense block's ``P_b^{-1}`` from its factor (:meth:`cholesky_flat`), in
        the same layout, in one compiled pass (``_ragged_inverse``)."""
        out = np.zeros(self.total)
        if len(self._blk_q):
            _jit_ragged(_ragged_inverse)(np.ascontiguousarray(Lflat, dtype=np.float64),
                                         self._blk_start, self._blk_q, out)
        return out

    def apply_flat(self, Mflat, R):
        """``blockdiag(M_b) @ R`` over the dense blocks for ``R`` (q, k) in layout order
        (the Schur blocks' rows 0), in one compiled pass (``_ragged_apply``)."""
        R = np.ascontiguousarray(R, dtype=np.float64)
        out = np.zeros_like(R)
        if len(self._blk_q):
            _jit_ragged(_ragged_apply)(np.ascontiguousarray(Mflat, dtype=np.float64),
                                       self._blk_start, self._blk_q, self._blk_col, R, out)
        return out

    def solve_flat(self, flat, rhs):
        """``P_b^{-1} rhs_b`` in every dense block, for the precision ``flat``
        (:meth:`precision_flat`) and ``rhs`` (q,) in layout order; the Schur blocks'
        entries are 0.

        All blocks are factored and solved in one compiled pass (``_ragged_spd_solve``:
        no Python loop over the blocks or their sizes).  If any block's matrix is not
        positive definite in floating point, every group is solved by :func:`spd_solve`
        instead (its jittered factors), as :func:`conditional_mode` did before.
        """
        out = np.zeros(self.data.q)
        if not len(self._blk_q):
            return out
        ok = _jit_ragged()(np.ascontiguousarray(flat, dtype=np.float64), self._blk_start,
                           self._blk_q, self._blk_col,
                           np.ascontiguousarray(rhs, dtype=np.float64), out)
        if not ok:
            out[:] = 0.0
            for (_, _, cols), M in zip(self.groups, self.split(flat), strict=True):
                out[cols] = spd_solve(M, rhs[cols])
        return out


def _ragged_spd_solve(flat, start, qs, col0, rhs, out):
    """Cholesky solve of every block: block ``b``'s matrix is ``flat[start[b]:][:q*q]``
    (``q = qs[b]``, row-major), its right-hand side and solution the layout entries
    ``col0[b] : col0[b] + q`` of ``rhs`` and ``out``.  Returns False (with ``out``
    partly written) at the first block whose pivot is not positive and finite."""
    qmax = 0
    for b in range(qs.shape[0]):
        qmax = max(qmax, qs[b])
    L = np.empty((qmax, qmax))
    y = np.empty(qmax)
    for b in range(qs.shape[0]):
        q, s, c = qs[b], start[b], col0[b]
        for j in range(q):
            d = flat[s + j * q + j]
            for k in range(j):
                d -= L[j, k] * L[j, k]
            if not (d > 0.0 and d < np.inf):
                return False
            ljj = np.sqrt(d)
            L[j, j] = ljj
            for i in range(j + 1, q):
                v = flat[s + i * q + j]
                for k in range(j):
                    v -= L[i, k] * L[j, k]
                L[i, j] = v / ljj
        for i in range(q):
            v = rhs[c + i]
            for k in range(i):
                v -= L[i, k] * y[k]
            y[i] = v / L[i, i]
        for i in range(q - 1, -1, -1):
            v = y[i]
            for k in range(i + 1, q):
                v -= L[k, i] * out[c + k]
            out[c + i] = v / L[i, i]
    return True


def _ragged_cholesky(flat, start, qs, Lflat, logdet, ok):
    """Lower Cholesky factor of every block (layout of ``_ragged_spd_solve``) into
    ``Lflat`` (zeros above the diagonal), ``log det`` into ``logdet``; ``ok[b]`` False
    where a pivot is not positive and finite (that block's factor is left partial)."""
    for b in range(qs.shape[0]):
        q, s = qs[b], start[b]
        ld = 0.0
        ok[b] = True
        for j in range(q):
            d = flat[s + j * q + j]
            for k in range(j):
                d -= Lflat[s + j * q + k] * Lflat[s + j * q + k]
            if not (d > 0.0 and d < np.inf):
                ok[b] = False
                break
            ljj = np.sqrt(d)
            ld += np.log(ljj)
            Lflat[s + j * q + j] = ljj
            for i in range(j + 1, q):
                v = flat[s + i * q + j]
                for k in range(j):
                    v -= Lflat[s + i * q + k] * Lflat[s + j * q + k]
                Lflat[s + i * q + j] = v / ljj
                Lflat[s + j * q + i] = 0.0
        logdet[b] = 2.0 * ld


def _ragged_inverse(Lflat, start, qs, out):
    """``P_b^{-1} = L_b^{-T} L_b^{-1}`` of every block from its lower factor (layout of
    ``_ragged_spd_solve``) into ``out``."""
    qmax = 0
    for b in range(qs.shape[0]):
        qmax = max(qmax, qs[b])
    W = np.empty((qmax, qmax))  # L^{-1}, lower
    for b in range(qs.shape[0]):
        q, s = qs[b], start[b]
        for j in range(q):
            W[j, j] = 1.0 / Lflat[s + j * q + j]
            for i in range(j + 1, q):
                v = 0.0
                for k in range(j, i):
                    v -= Lflat[s + i * q + k] * W[k, j]
                W[i, j] = v / Lflat[s + i * q + i]
        for i in range(q):
            for j in range(i + 1):
                v = 0.0
                for k in range(i, q):
                    v += W[k, i] * W[k, j]
                out[s + i * q + j] = v
                out[s + j * q + i] = v


def _ragged_apply(Mflat, start, qs, col0, R, out):
    """``out[cols_b] = M_b @ R[cols_b]`` in every block (layout of
    ``_ragged_spd_solve``; ``R`` and ``out`` (q, k))."""
    for b in range(qs.shape[0]):
        q, s, c = qs[b], start[b], col0[b]
        for i in range(q):
            for t in range(R.shape[1]):
                v = 0.0
                for j in range(q):
                    v += Mflat[s + i * q + j] * R[c + j, t]
                out[c + i, t] = v


_RAGGED = {}


def _jit_ragged(f=None):
    """``f`` (default ``_ragged_spd_solve``) compiled by numba on first use (numba is
    imported then, not with the package)."""
    f = _ragged_spd_solve if f is None else f
    g = _RAGGED.get(f.__name__)
    if g is None:
        import numba

        g = _RAGGED[f.__name__] = numba.njit(cache=True, nogil=True,
                                             error_model="numpy")(f)
    return g


def robust_cholesky(M):
    """Lower Cholesky factors of the stacked symmetric matrices ``M`` (k, q, q), never raising.

    For Newton steps (:func:`spd_solve`) and proposal scales only: a jittered factor is not
    the matrix's, so log-determinants and log-likelihoods use :func:`checked_cholesky`,
    which says which matrices did not factor.

    The precisions ``Z' W Z + D^{-1}`` are positive definite in exact arithmetic; in floating
    point one whose entries span many orders of magnitude (a Poisson mean of ``e^500`` beside
    a prior precision of ``1e-8``) can fail to factor.  Such a matrix gets a diagonal jitter,
    ``1e-14`` of its largest diagonal entry, growing tenfold until it factors (at most
    ``1e-4``), then its eigenvalues are clipped from below as a last resort.  Non-finite
    entries are replaced by the finite diagonal (they come only from overflow).
    """
    M = np.array(M, dtype=np.float64)
    try:
        with np.errstate(all="ignore"):
            return np.linalg.cholesky(M)
    except np.linalg.LinAlgError:
        pass
    out = np.empty_like(M)
    for i in range(M.shape[0]):
        out[i] = _cholesky_one(M[i])
    return out


def checked_cholesky(M):
    """Lower Cholesky factors of the stacked matrices ``M`` (k, q, q) and which factored.

    Returns
    -------
    L : ndarray (k, q, q)
        Exact factors where ``ok``; elsewhere :func:`robust_cholesky`'s factor of a
        jittered matrix (a usable scale, not the matrix's own factor).
    ok : ndarray of bool (k,)
        The matrix is finite and positive definite in floating point.
    """
    M = np.asarray(M, dtype=np.float64)
    ok = np.ones(M.shape[0], dtype=bool)
    try:
        with np.errstate(all="ignore"):
            L = np.linalg.cholesky(M)
        if np.all(np.isfinite(L)):
            return L, ok
    except np.linalg.LinAlgError:
        pass
    L = np.empty_like(M)
    for i in range(M.shape[0]):
        try:
            with np.errstate(all="ignore"):
                L[i] = np.linalg.cholesky(M[i])
            ok[i] = bool(np.all(np.isfinite(L[i])))
        except np.linalg.LinAlgError:
            ok[i] = False
        if not ok[i]:
            L[i] = _cholesky_one(M[i])
    return L, ok


def _cholesky_one(A):
    q = A.shape[0]
    if not np.all(np.isfinite(A)):
        d = np.diag(A).copy()
        d[~np.isfinite(d)] = np.finfo(np.float64).max / (4.0 * max(q, 1))
        A = np.diag(np.maximum(d, 1e-300))
    scale = max(float(np.max(np.abs(np.diag(A)))), 1e-300)
    eye = np.eye(q)
    for k in (None, *range(-14, -3)):
        try:
            return np.linalg.cholesky(A if k is None else A + (10.0**k * scale) * eye)
        except np.linalg.LinAlgError:
            continue
    lam, V = np.linalg.eigh(0.5 * (A + A.T))
    lam = np.maximum(lam, 1e-8 * scale)
    return np.linalg.cholesky((V * lam) @ V.T + 1e-12 * scale * eye)


def spd_solve(M, rhs):
    """Solve ``M_i x_i = rhs_i`` for stacked positive definite ``M`` (k, q, q), ``rhs`` (k, q).

    Uses :func:`robust_cholesky`, so it never raises; a nearly singular system gets the
    solution of a slightly regularized one (the damped Newton step of the mode solver).
    """
    L = robust_cholesky(M)
    y = _tri_solve(L, rhs[..., None])
    return _tri_solve(L, y, trans=True)[..., 0]


#: Blocks of at least this many effects are solved with their triangular factors (LAPACK
#: ``trtrs``, O(q^2) per right-hand side; for q = 340 ten times faster than a general
#: solve); smaller ones by numpy's batched general solver, whose per-block overhead is far
#: lower (hundreds of 1 x 1 blocks).
TRI_SOLVE_MIN_Q = 64


def _tri_solve(L, B, trans=False):
    """``L^{-1} B`` (``L^{-T} B`` with ``trans``) for stacked lower-triangular ``L``."""
    if L.shape[-1] >= TRI_SOLVE_MIN_Q:
        return solve_triangular(L, B, lower=True, trans="T" if trans else "N",
                                check_finite=False)
    return np.linalg.solve(np.swapaxes(L, -1, -2) if trans else L, B)


def _tri_inverse(L):
    """``L^{-1}`` for stacked lower-triangular ``L`` (the same choice as :func:`_tri_solve`)."""
    if L.shape[-1] >= TRI_SOLVE_MIN_Q:
        return _tri_solve(L, np.broadcast_to(np.eye(L.shape[-1]), L.shape))
    return np.linalg.inv(L)


@dataclass
class ModeResult:
    """Conditional modes and the Laplace pieces at one ``theta``.

    Attributes
    ----------
    u : ndarray (q,)
        Conditional modes in layout column order.
    chol : list of ndarray
        Per group, lower Cholesky factors of the precision, shape ``(n_g, qs, qs)``.
    h_block : ndarray (n_blocks,)
        ``h_b(u)`` per block.
    logdet_block : ndarray (n_blocks,)
        ``log det P_b`` per block; ``+inf`` for a block whose precision is not positive
        definite in floating point (its Laplace log-likelihood is ``-inf``).
    converged : bool
    not_pd : ndarray of int
        Blocks whose precision did not factor: their ``chol`` is that of a jittered matrix
        (usable as a proposal's scale, never in a log-likelihood).
    schur : list of SchurFactor
        The factors of the system's ``schur`` blocks (:class:`BlockSystem`), in its order;
        those blocks have no entry in ``chol``.
    """

    u: np.ndarray
    chol: list
    h_block: np.ndarray
    logdet_block: np.ndarray
    converged: bool
    not_pd: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    schur: list = field(default_factory=list)


def _block_objective(data, xb, u, prior):
    """``h_b(u)`` per block, the residuals and ``w c''``, and the roundoff scale of ``h_b``.

    The scale bounds the sum of the magnitudes of the terms added up in ``h_b``; ``h_b`` is
    known only to about ``1e-16`` times it.  It matters when ``h_b`` is a small difference
    of large terms, e.g. a cluster whose responses are all 1 (``y eta - c(eta) ~ -e^-eta``
    from terms ``~ eta``).
    """
    eta = xb + data.Z @ u
    ll, r, h = data.loglik_terms(eta)
    nb = data.n_blocks
    pen = prior.penalty(u)
    obj = np.bincount(data.block_of_obs, weights=ll, minlength=nb)
    obj -= 0.5 * np.bincount(data.block_of_col, weights=pen, minlength=nb)
    # |w y eta| + |w c| <= 2 |w y eta| + |ll|.
    scale = np.bincount(data.block_of_obs, weights=2.0 * np.abs(data.wy * eta) + np.abs(ll),
                        minlength=nb)
    scale += 0.5 * np.bincount(data.block_of_col, weights=np.abs(pen), minlength=nb)
    return obj, r, h, scale


def _fixed_point(u_next, u):
    """Whether a Newton iteration of :func:`conditional_mode` left ``u`` unchanged in
    floating point: a block whose decrement stays above ``tol`` at roundoff level (e.g. a
    near-singular prior) would then repeat the same iteration until ``maxiter``."""
    return np.array_equal(u_next, u)


def conditional_mode(system: BlockSystem, beta, nu, u0=None, maxiter=100, tol=1e-18):
    """Maximize ``h_b`` in every block by damped Newton.

    Parameters
    ----------
    system : BlockSystem
    beta : ndarray (p,)
    nu : ndarray (k_vcp,)
        Covariance parameters (the variances with scalar components only), valid.
    u0 : ndarray (q,), optional
        Start (layout order); zeros by default.
    maxiter : int
    tol : float
        Stop when every block's Newton decrement is below ``tol``.

    Returns
    -------
    ModeResult
    """
    data = system.data
    xb = data.linear_fixed(beta)
    dinv = PriorPrecision(data, nu)
    u = np.zeros(data.q) if u0 is None else np.array(u0, dtype=float)
    obj, r, h, scale = _block_objective(data, xb, u, dinv)
    converged = data.q == 0
    for _ in range(maxiter if data.q else 0):
        grad = data.Z.T @ r - dinv.apply(u)
        step = system.solve_flat(system.precision_flat(h, dinv), grad)
        for sb, fac in zip(system.schur, system.schur_factors(h, dinv), strict=True):
            step[sb.cols] = fac.solve(grad[sb.cols])
        dec = np.bincount(data.block_of_col, weights=grad * step, minlength=data.n_blocks)
        if dec.max() < tol:
            converged = True
            break
        alpha = np.ones(data.n_blocks)
        todo = dec >= tol
        for _ in range(60):
            u_try = u + (alpha * todo)[data.block_of_col] * step
            obj_try, r_try, h_try, scale_try = _block_objective(data, xb, u_try, dinv)
            # A step may lose what roundoff in h_b can hide: near the mode the gradient
            # (and so the Newton step) stays accurate while h_b no longer resolves the
            # gain, and insisting on an increase would stall the iteration there.
            slack = 1e-13 * np.maximum(scale, scale_try)
            worse = todo & ~(obj_try >= obj - slack)
            if not worse.any():
                break
            alpha[worse] *= 0.5
        # Far from the mode (decrement > 1) a full Newton step can be far too short: where
        # e^eta dominates (Poisson, or the far side of a logit) it moves eta by about 1, so
        # a start at eta ~ 600 would take hundreds of steps.  Blocks whose full step was
        # accepted go on doubling it while h_b strictly increases.
        grow = todo & (alpha == 1.0) & (dec > 1.0)
        for _ in range(40):
            if not grow.any():
                break
            a2 = np.where(grow, 2.0 * alpha, alpha)
            u2 = u + (a2 * todo)[data.block_of_col] * step
            obj2, r2, h2, scale2 = _block_objective(data, xb, u2, dinv)
            grow &= obj2 > obj_try
            cols, rows = grow[data.block_of_col], grow[data.block_of_obs]
            u_try[cols], r_try[rows], h_try[rows] = u2[cols], r2[rows], h2[rows]
            obj_try[grow], scale_try[grow], alpha[grow] = obj2[grow], scale2[grow], a2[grow]
        if _fixed_point(u_try, u):
            break
        u, obj, r, h, scale = u_try, obj_try, r_try, h_try, scale_try
    Lflat, ld, ok = system.cholesky_flat(_concat_flat(system.precision(h, dinv)))
    chol, logdet = system.split(Lflat), np.zeros(data.n_blocks)
    bad = np.zeros(data.n_blocks, dtype=bool)
    logdet[system._blk_id] = ld
    bad[system._blk_id[~ok]] = True
    schur = system.schur_factors(h, dinv)
    for sb, fac in zip(system.schur, schur, strict=True):
        logdet[sb.block] = fac.logdet if fac.ok else 0.0
        bad[sb.block] = not fac.ok
    # A precision that does not factor has no log-determinant: the Laplace value is -inf
    # there (a trial point the optimizer is turned back from), never a jittered number.
    logdet[bad] = np.inf
    return ModeResult(u, chol, obj, logdet, converged, np.flatnonzero(bad), schur)


def family_system(system: BlockSystem, alpha):
    """``system`` with the negative binomial's ``alpha`` set in its data's family (a shallow
    copy: the arrays are shared); ``system`` itself for the other families."""
    data = system.data
    if not data.k_fam or alpha is None:
        return system
    if data.family.alpha == float(alpha):
        return system
    d = copy.copy(data)
    d.family = data.family.with_alpha(float(alpha))
    out = copy.copy(system)
    out.data = d
    return out


def split_params(data, params):
    """``(beta, nu, alpha)`` of ``params`` (``alpha`` None unless negative binomial)."""
    p, k = data.k_fe, data.k_fe + data.k_vcp
    params = np.asarray(params, dtype=float)
    return params[:p], params[p:k], (float(params[k]) if data.k_fam else None)


def laplace_loglike(system: BlockSystem, beta, nu, u0=None):
    """Laplace log-likelihood (without the family's constants) and the mode result.

    For the negative binomial, ``system.data.family.alpha`` is the dispersion
    (:func:`family_system`) and the value includes its terms that depend on ``alpha`` only
    (:func:`~glmm_sm.spec.families.nb_constant`), as the Monte Carlo likelihood does.
    """
    data = system.data
    nu = np.asarray(nu, dtype=float)
    mode = conditional_mode(system, beta, nu, u0=u0)
    return laplace_value(data, nu, fold(value_blocks(mode))), mode


def value_blocks(mode):
    """Per block ``(h_b, log det P_b)`` at the conditional modes (n_blocks, 2)."""
    return np.stack([mode.h_block, mode.logdet_block], axis=1)


def laplace_value(data, nu, sums):
    """The Laplace log-likelihood from the blocks' ``(h_b, log det P_b)`` summed in block
    order (:func:`~glmm_sm.spec.folds.fold`), with the prior's ``log nu`` terms (and the
    negative binomial's constant); ``data`` needs the family, ``cov`` and ``qbt`` only
    (and the response for the negative binomial)."""
    value = sums[0] - 0.5 * sums[1]
    if data.k_fam:
        value += nb_constant(data.y, data.wn, data.family.alpha)[0]
    if data.cov.has_vector:
        value -= 0.5 * data.cov.logdet_terms(nu, data.qbt)
    else:
        value -= 0.5 * float(data.qbt.sum(axis=0) @ np.log(nu))
    return value


def _precision_inverses(mode, system=None):
    """Per group, the stacked inverses ``P_b^{-1} = L^{-T} L^{-1}`` (with ``system``, all
    blocks in one compiled pass: :meth:`BlockSystem.inverse_flat`)."""
    if system is not None:
        return system.split(system.inverse_flat(_concat_flat(mode.chol)))
    out = []
    for L in mode.chol:
        Li = _tri_inverse(L)
        out.append(np.swapaxes(Li, 1, 2) @ Li)
    return out


def _concat_flat(mats):
    """The stacked per-group matrices ``mats`` raveled and concatenated (the layout of
    :meth:`BlockSystem.split`)."""
    return np.concatenate([M.ravel() for M in mats]) if mats else np.zeros(0)


def _apply_blocks(system, mats, R, mode=None):
    """``blockdiag(mats) @ R`` for ``R`` of shape ``(q, k)`` in layout order; the
    system's Schur blocks get ``P^{-1} R`` from ``mode.schur`` (``mats`` holding the dense
    groups' ``P^{-1}``)."""
    out = system.apply_flat(_concat_flat(mats), R)
    if system.schur:
        for sb, fac in zip(system.schur, mode.schur, strict=True):
            out[sb.cols] = fac.solve(R[sb.cols])
    return out


def _mode_pieces(system, beta, nu, mode, nu_derivs=True, dP=None):
    """The linear predictor, ``r``, ``h``, the inverses ``P_b^{-1}`` and the modes'
    derivatives at ``(beta, nu)`` (:func:`mode_derivatives`); ``dP``: the prior
    precision's derivatives (``CovStruct.precision_derivatives``) where the caller has
    them (correlated terms), so that they are formed once."""
    data = system.data
    nu = np.asarray(nu, dtype=float)
    eta = data.linear_fixed(beta) + data.Z @ mode.u
    _, r, h = data.loglik_terms(eta)
    pinv = _precision_inverses(mode, system)
    zthx = np.asarray(data.Z.T @ (h[:, None] * data.X))
    du_dbeta = -_apply_blocks(system, pinv, zthx, mode)
    du_dnu = None
    if nu_derivs and data.cov.has_vector:
        if dP is None:
            dP = data.cov.precision_derivatives(nu, data.pairs, data.ident)
        E = -np.stack([np.asarray(D @ mode.u) for D in dP], axis=1)
        du_dnu = _apply_blocks(system, pinv, E, mode)
    elif nu_derivs:
        E = np.zeros((data.q, data.k_vc))
        E[np.arange(data.q), data.ident] = mode.u / nu[data.ident] ** 2
        du_dnu = _apply_blocks(system, pinv, E, mode)
    return eta, r, h, pinv, du_dbeta, du_dnu


def mode_derivatives(system: BlockSystem, beta, nu, mode: ModeResult, nu_derivs=True):
    """Derivatives of the conditional modes ``u(theta)`` with respect to ``beta`` and ``nu``.

    By the implicit function theorem applied to ``Z' w (y - c'(eta)) - D^{-1} u = 0``:
    ``du/dbeta = -P^{-1} Z' diag(w c'') X`` and ``du/dnu_t = P^{-1} E_t u / nu_t^2``, with
    ``P`` the precision at the mode (block diagonal: each block's modes move with their own
    block's data only).

    ``du/dbeta`` says how the conditional distribution of the random effects shifts when the
    fixed effects move.  Where a fixed effect is confounded with random effects (an
    intercept and cluster effects; radish2's Site and the Site:Block effects) its column is
    close to minus the indicator of the confounded effects.

    Parameters
    ----------
    system : BlockSystem
    beta, nu : ndarray
    mode : ModeResult
        Converged conditional modes at ``(beta, nu)``.
    nu_derivs : bool
        Also compute ``du/dnu`` (needs every ``nu > 0``).

    Returns
    -------
    du_dbeta : ndarray (q, p)
    du_dnu : ndarray (q, T) or None
        Both in layout column order.
    """
    _, _, _, _, du_dbeta, du_dnu = _mode_pieces(system, beta, nu, mode, nu_derivs)
    return du_dbeta, du_dnu


def _third_cumulant(data, eta, h):
    """``w c3(eta)`` (third derivative of the cumulant) from ``h = w c''(eta)``; for a
    non-canonical link the derivative of the observed information ``h`` in ``eta``
    (:meth:`glmm_sm.spec.families.Family.info_derivative`)."""
    return data.family.info_derivative(eta, data.wy, data.wn, h)


def _leverages(system, mode, pinv, n):
    """The dense groups' ``P^{-1}`` flattened, and each observation's conditional variance
    ``s_i = z_i' P^{-1} z_i`` of ``(Z u)_i`` (the Schur blocks' from their factors)."""
    flat = np.concatenate([M.ravel() for M in pinv]) if pinv else np.zeros(0)
    lev = np.bincount(system.pair_obs, weights=system.pair_val * flat[system.pair_target],
                      minlength=n).astype(np.float64, copy=False)  # (int when empty)
    for sb, fac in zip(system.schur, mode.schur, strict=True):
        lev[sb.row0 : sb.row1] = fac.leverage(sb)
    return flat, lev


def _inverse_diagonal(system, mode, pinv):
    """The diagonal of ``P^{-1}`` in layout order (the Schur blocks' from their factors)."""
    diag = np.zeros(system.data.q)
    for (_, _, cols), M in zip(system.groups, pinv, strict=True):
        diag[cols] = np.diagonal(M, axis1=1, axis2=2)
    for sb, fac in zip(system.schur, mode.schur, strict=True):
        diag[sb.cols] = fac.inv_diag()
    return diag


def laplace_score(system: BlockSystem, beta, nu, mode: ModeResult):
    """Gradient of :func:`laplace_loglike` with respect to ``(beta, nu)``.

    With ``u`` the conditional mode (where ``dh/du = 0``), the total derivative of
    ``h(u) - 1/2 log det P - 1/2 sum_t q_t log nu_t`` is

    * ``d/dbeta = X' r - 1/2 (X + Z du/dbeta)' (w c3 * s)``,
    * ``d/dnu_t = |u_t|^2 / (2 nu_t^2) - q_t / (2 nu_t) + tr(P^{-1} E_t) / (2 nu_t^2)
      - 1/2 (Z du/dnu_t)' (w c3 * s)``,

    where ``r = w (y - c'(eta))``, ``c3`` is the cumulant's third derivative and
    ``s_i = z_i' P^{-1} z_i`` the conditional variance of ``(Z u)_i`` under the Laplace
    approximation (:func:`mode_derivatives` gives ``du/dbeta`` and ``du/dnu``).

    Parameters
    ----------
    system : BlockSystem
    beta, nu : ndarray
    mode : ModeResult
        Converged conditional modes at ``(beta, nu)``.

    Returns
    -------
    ndarray (p + T,)
    """
    data = system.data
    nu = np.asarray(nu, dtype=float)
    if not (data.cov.has_vector or data.k_fam):
        return score_from_sums(data, nu, fold(score_blocks(system, beta, nu, mode)))
    # the prior precision's derivatives, formed once for du/dnu and the score's terms
    dP = (data.cov.precision_derivatives(nu, data.pairs, data.ident)
          if data.cov.has_vector else None)
    eta, r, h, pinv, du_dbeta, du_dnu = _mode_pieces(system, beta, nu, mode, dP=dP)
    flat, lev = _leverages(system, mode, pinv, len(eta))
    a = _third_cumulant(data, eta, h) * lev
    gb = data.X.T @ r - 0.5 * (data.X + data.Z @ du_dbeta).T @ a
    if data.cov.has_vector:
        out = [gb, vector_laplace_score(system, nu, mode, flat, du_dnu, a, dP=dP)]
        if data.k_fam:
            out.append([_laplace_alpha_score(system, eta, pinv, lev, a, mode)])
        return np.concatenate(out)
    T = data.k_vc
    diag = _inverse_diagonal(system, mode, pinv)
    uu = np.bincount(data.ident, weights=mode.u**2, minlength=T)
    tr = np.bincount(data.ident, weights=diag, minlength=T)
    qt = data.qbt.sum(axis=0)
    gn = 0.5 * (uu + tr) / nu**2 - 0.5 * qt / nu - 0.5 * np.asarray(data.Z @ du_dnu).T @ a
    if data.k_fam:
        return np.concatenate([gb, gn, [_laplace_alpha_score(system, eta, pinv, lev, a,
                                                             mode)]])
    return np.concatenate([gb, gn])


def score_blocks(system, beta, nu, mode):
    """Per block the sums :func:`laplace_score` adds (scalar components, no family
    parameter): ``(n_blocks, p + 3 T)``, the rows' ``x_i r_i - 1/2 (x_i + z_i du/dbeta)
    a_i`` and ``(z_i du/dnu) a_i``, then the columns' ``u_j^2`` and ``(P^{-1})_jj`` per
    component (:func:`score_from_sums` forms the gradient from their fold)."""
    data = system.data
    nu = np.asarray(nu, dtype=float)
    eta, r, h, pinv, du_dbeta, du_dnu = _mode_pieces(system, beta, nu, mode)
    flat, lev = _leverages(system, mode, pinv, len(eta))
    a = _third_cumulant(data, eta, h) * lev
    rows = np.concatenate([data.X * r[:, None] - 0.5 * (data.X + data.Z @ du_dbeta)
                           * a[:, None], np.asarray(data.Z @ du_dnu) * a[:, None]], axis=1)
    T = data.k_vc
    diag = _inverse_diagonal(system, mode, pinv)
    E = np.zeros((data.q, 2 * T))
    j = np.arange(data.q)
    E[j, data.ident] = mode.u**2
    E[j, T + data.ident] = diag
    return np.concatenate([block_sums(data.obs_ptr, rows), block_sums(data.col_ptr, E)],
                          axis=1)


def score_from_sums(data, nu, s):
    """:func:`laplace_score` from the fold of :func:`score_blocks` (``data`` needs
    ``k_fe``, ``k_vc`` and ``qbt`` only)."""
    p, T = data.k_fe, data.k_vc
    gb, zdn, uu, tr = s[:p], s[p : p + T], s[p + T : p + 2 * T], s[p + 2 * T :]
    qt = data.qbt.sum(axis=0)
    gn = 0.5 * (uu + tr) / nu**2 - 0.5 * qt / nu - 0.5 * zdn
    return np.concatenate([gb, gn])


def _laplace_alpha_score(system, eta, pinv, lev, a, mode=None):
    """The negative binomial's ``d/d alpha`` of :func:`laplace_loglike` at the mode:
    ``sum la + k'(alpha) - 1/2 sum_i s_i (ha_i + dh_i (Z du/dalpha)_i)`` with
    ``du/dalpha = P^{-1} Z' lea`` (implicit function theorem), ``s_i`` the conditional
    variance of ``(Z u)_i``, ``a = dh * s`` and the terms of
    :func:`~glmm_sm.spec.families.nb_draw_terms`."""
    data = system.data
    t = nb_draw_terms(data.wy, data.wn, eta, data.family.alpha)
    du = _apply_blocks(system, pinv, np.asarray(data.Z.T @ t.lea)[:, None], mode)[:, 0]
    k1 = nb_constant(data.y, data.wn, data.family.alpha)[1]
    return float(t.la.sum() + k1 - 0.5 * (lev @ t.ha) - 0.5 * (data.Z @ du) @ a)


def glm_start(data: LayoutData, maxiter=50):
    """Fixed-effects-only MLE by damped Newton (random effects set to zero).

    Newton runs in whitened coordinates (:class:`~glmm_sm.spec.params.ParamTransform`), so it
    takes the same steps whatever the covariates' scale; a separated design (no finite MLE)
    stops after ``maxiter`` steps with large coefficients.  Its sums run block by block
    (:func:`glm_block_terms`, :mod:`glmm_sm.spec.folds`).
    """
    tr = ParamTransform.for_layout(data, 0)
    return glm_newton(lambda beta: tuple(fold(c) for c in glm_block_terms(data, beta)), tr.T,
                      maxiter)


def glm_block_terms(data, beta):
    """Per block the fixed-effects-only GLM log-likelihood, score ``X_b' r_b`` and
    information ``X_b' diag(h_b) X_b`` at ``beta``."""
    eta = data.linear_fixed(np.asarray(beta, dtype=np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        val, r, h = data.family.obs_terms(eta, data.wy, data.wn)
    ptr = data.obs_ptr
    return block_sums(ptr, val), block_sums(ptr, data.X * r[:, None]), \
        block_grams(ptr, data.X, h)


def glm_newton(terms, T, maxiter=50):
    """Damped Newton for the GLM start in the coordinates ``beta = T gamma``; ``terms(beta)``
    gives the summed ``(value, score, information)``."""
    p = T.shape[0]

    def objective(gm):
        val, g, H = terms(T @ gm)
        if not (np.isfinite(val) and np.isfinite(g).all() and np.isfinite(H).all()):
            # an overflowing trial point: the line search halves the step
            return -np.inf, None, None
        return val, T.T @ g, T.T @ H @ T

    gamma = np.zeros(p)
    val, g, H = objective(gamma)
    for _ in range(maxiter):
        H = H + 1e-10 * max(float(np.trace(H)), 1e-300) / max(len(H), 1) * np.eye(len(H))
        step = spd_solve(H[None], g[None])[0]
        a = 1.0
        for _ in range(40):
            new, g_new, H_new = objective(gamma + a * step)
            if new >= val:
                break
            a *= 0.5
        else:
            break
        # Converged when the Newton decrement is negligible, or when the line search had to
        # shrink the step to gain no more than the value's rounding (a log-likelihood of
        # 6e4 carries rounding of ~1e-11: the decrement's absolute 1e-12 is never reached
        # there, and every further iteration halved its step ~27 times for nothing).
        stalled = a < 1.0 and new - val <= 16 * np.finfo(float).eps * abs(val)
        done = g @ step < 1e-12 or stalled
        gamma, val, g, H = gamma + a * step, new, g_new, H_new
        if done:
            break
    return T @ gamma


@dataclass
class LaplaceFit:
    """The Laplace MLE and how its optimizer ended.

    Attributes
    ----------
    params : ndarray
        ``(beta, nu)`` at the Laplace MLE.
    value : float
        The Laplace log-likelihood there (without the family's constants).
    mode : ModeResult
        Conditional modes at the estimate.
    info : scipy.optimize.OptimizeResult
        L-BFGS-B's own result (``success``, ``status``, ``message``, ``nit``), in the
        whitened coordinates of :class:`~glmm_sm.spec.params.ParamTransform`.
    n_nonfinite : int
        Evaluations where the Laplace log-likelihood was not finite (the optimizer was
        turned back from them).
    notes : list of str
        What the fit should record and warn about (whitening not done, precisions that
        are not positive definite at trial points).
    """

    params: np.ndarray
    value: float
    mode: ModeResult
    info: object
    n_nonfinite: int = 0
    notes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """A finite value at converged conditional modes (the optimizer's own status is
        in ``info``: L-BFGS-B often stops on a line-search failure at roundoff level)."""
        return bool(np.isfinite(self.value) and self.mode.converged)

    def record(self):
        """A plain dict for the fit log."""
        return {"params": self.params, "value": self.value,
                "optimizer_success": bool(self.info.success),
                "optimizer_status": int(self.info.status),
                "optimizer_message": str(self.info.message),
                "iterations": int(self.info.nit), "mode_converged": bool(self.mode.converged),
                "nonfinite_evaluations": int(self.n_nonfinite), "notes": list(self.notes)}

    def __iter__(self):  # (params, value, mode, info), as laplace_fit used to return
        return iter((self.params, self.value, self.mode, self.info))


def laplace_fit(system: BlockSystem, start=None):
    """Maximize the Laplace log-likelihood over ``(beta, log nu)``.

    L-BFGS-B with the analytic gradient, in whitened coordinates
    (:class:`~glmm_sm.spec.params.ParamTransform`), so that the path does not depend on the
    covariates' units or locations; the estimate is mapped back exactly.

    Parameters
    ----------
    system : BlockSystem
    start : ndarray, optional
        ``(beta, nu)``; by default the fixed-effects GLM estimate and ``nu = 1``.

    Returns
    -------
    LaplaceFit
        Unpacks as ``(params, value, mode, info)``.
    """
    return laplace_optimize(LocalLaplace(system), start)


class LocalLaplace:
    """The Laplace objective of a layout held here, as :func:`laplace_optimize` asks for it
    (a fit whose data are in pieces gives the same numbers from its pieces:
    :mod:`glmm_sm.fit.partitioned`)."""

    def __init__(self, system):
        self.system, self.data = system, system.data

    def glm_start(self):
        """The fixed-effects GLM estimate (:func:`glm_start`)."""
        return glm_start(self.data)

    def transform(self, k):
        """The optimizer's :class:`~glmm_sm.spec.params.ParamTransform` (``k`` parameters
        after beta)."""
        return ParamTransform.for_layout(self.data, k, cov=self.data.cov)

    def evaluate(self, theta, u0, gradient=True):
        """``(value, gradient or None, ModeResult)`` at ``theta``, modes from ``u0``."""
        beta, nu, alpha = split_params(self.data, theta)
        sysa = family_system(self.system, alpha)
        val, mode = laplace_loglike(sysa, beta, nu, u0=u0)
        g = laplace_score(sysa, beta, nu, mode) if gradient and np.isfinite(val) else None
        return val, g, mode


def laplace_optimize(oracle, start=None):
    """:func:`laplace_fit` on an objective ``oracle`` (:class:`LocalLaplace`, or a fit's
    data in pieces): its ``data`` (sizes, ``cov``, family), ``glm_start()``,
    ``transform(k)`` and ``evaluate(theta, u0, gradient)``."""
    with threadpool_limits(1, user_api="blas"):
        return _laplace_fit(oracle, start)


def _laplace_fit(oracle, start):
    data = oracle.data
    p, T, nf = data.k_fe, data.k_vcp, data.k_fam
    k = p + T
    if start is None:
        start = np.concatenate([oracle.glm_start(), data.cov.start(),
                                [data.family.alpha] * nf])
    start = np.asarray(start, dtype=float).copy()
    if data.cov.has_vector:
        start[p:k] = data.cov.clipped(start[p:k], 1e-8, 1e8)
    else:
        start[p:k] = np.clip(start[p:k], 1e-8, 1e8)
    start[k:] = np.clip(start[k:], 1e-8, 1e8)  # the negative binomial's alpha
    tr = oracle.transform(T + nf)
    state = {"u": None, "nonfinite": 0, "not_pd": 0, "not_pd_blocks": set()}

    def f(x):
        theta = tr.to_theta(x)
        val, g, mode = oracle.evaluate(theta, state["u"])
        if mode.not_pd.size:
            state["not_pd"] += 1
            state["not_pd_blocks"].update(mode.not_pd.tolist())
        if not np.isfinite(val):
            # Turned back by the line search; counted and reported in LaplaceFit.
            state["nonfinite"] += 1
            return 1e300, np.zeros_like(x)
        if mode.converged:
            state["u"] = mode.u
        # Analytic gradient: finite differences of a value of size |val| are accurate to
        # only ~1e-8 |val| (radish2: |val| ~ 7e5 left gradients ~0.1 at the optimum).
        return -val, -tr.gradient(g, theta)

    info = minimize(f, tr.to_x(start), jac=True, method="L-BFGS-B",
                    bounds=tr.x_bounds(LOGNU_BOUNDS),
                    options={"maxiter": 500, "ftol": 1e-13, "gtol": 1e-7})
    params = tr.to_theta(info.x)
    value, _, mode = oracle.evaluate(params, state["u"], gradient=False)
    notes = [] if tr.whitening_note is None else [tr.whitening_note]
    if state["not_pd"] or mode.not_pd.size:
        blocks = sorted(state["not_pd_blocks"] | set(mode.not_pd.tolist()))
        notes.append(f"the Laplace precision Z'WZ + D^-1 was not positive definite in floating "
                     f"point at {state['not_pd']} trial point(s) of the Laplace optimizer "
                     f"(blocks {blocks[:10]}); the Laplace log-likelihood there is -inf and "
                     "the optimizer was turned back"
                     + (", also at the estimate" if mode.not_pd.size else ""))
    return LaplaceFit(params, value, mode, info, state["nonfinite"], notes)
