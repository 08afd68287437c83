"""Partial sums of one partition of draws, and the one reduction that combines them.

The draws of a draw set are cut into chunks (``DrawSet.chunk_ranges``) and the chunks into
at most :data:`N_PARTITIONS` contiguous partitions (:func:`partition_bounds`), fixed by the
draw set alone.  :func:`partition_sums` runs the kernel
(:mod:`glmm_sm.mcla.kernels.plain`) over one partition's chunks and returns a single row of
:class:`PartialSums`; rows are combined by
:meth:`PartialSums.combine`, exactly (each rescaled to the common maximum log weight per
block), in partition order.  The executors (local threads in :mod:`glmm_sm.mcla.engine`, Dask
workers in :mod:`glmm_sm.mcla.distributed`) only decide where a partition is computed, never
what is summed in which order, so every backend gives the same bits.

:class:`DrawShift` moves the draws with the fixed effects (draws centred at ``u*(beta)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from glmm_sm.mcla.kernels import reference as _kernels_numpy
from glmm_sm.mcla.kernels.records import Design, Draws, Prior, Sums

__all__ = ["KERNELS", "N_PARTITIONS", "PartialSums", "DrawShift", "draw_shift",
           "moved_draws", "partition_bounds", "partition_sums", "block_kend"]



def _numba_kernels():
    """:mod:`glmm_sm.mcla.kernels.plain`, imported on first use: importing it imports numba
    (about 0.2 s), which a model that is never fitted by MCLA does not need."""
    from glmm_sm.mcla.kernels import plain

    return plain


class _Kernels(Mapping):
    """The chunk kernels by name, ``"numba"`` (:func:`glmm_sm.mcla.kernels.plain.chunk_sums`)
    and ``"numpy"`` (:func:`glmm_sm.mcla.kernels.reference.chunk_sums`); the numba module is
    imported when its kernel is first asked for."""

    _NAMES = ("numba", "numpy")

    def __getitem__(self, name):
        if name == "numba":
            return _numba_kernels().chunk_sums
        if name == "numpy":
            return _kernels_numpy.chunk_sums
        raise KeyError(name)

    def __iter__(self):
        return iter(self._NAMES)

    def __len__(self):
        return len(self._NAMES)


KERNELS = _Kernels()


@dataclass
class PartialSums:
    """Partial sums over some draws, one row per chunk or partition (see :mod:`.kernels.plain`).

    ``hxx[b]`` is ``X_b' diag(h_b) X_b`` for the observations of block ``b``, where ``h``
    sums the weighted ``c''(eta)``: the fixed-effects part of the Hessian, reduced to
    ``p x p`` per block so that a partition's sums do not grow with ``n``.  With shifted
    draws (:class:`DrawShift`) it also holds ``sum e M_b' D_b^{-1} M_b`` (the prior's part of
    the beta Hessian), and ``smu[b, :, t]`` is ``sum_{j in b, t} M_j' sum_k e_k u_kj``, the
    weighted sums the beta-nu cross term needs (zero for draws that do not move).
    """

    a: np.ndarray
    s0: np.ndarray
    s0sq: np.ndarray
    s1: np.ndarray
    s1sq: np.ndarray
    s2: np.ndarray
    s2sq: np.ndarray
    sS: np.ndarray
    hxx: np.ndarray
    smu: np.ndarray
    #: Negative binomial only (else None): ``hxa[b] = X_b' (sum e d2 log f / d eta d
    #: alpha)`` (p,) and ``saa[b] = sum e d2 log f / d alpha2`` per block.
    hxa: np.ndarray = None
    saa: np.ndarray = None

    @classmethod
    def empty(cls, n_rows, n_blocks, d, T, p, k_smu=None, nf=0):
        """Zero sums: ``d`` kernel scores, ``T`` rows of ``S``, ``k_smu`` covariance
        parameters in the cross term (default ``T``), ``nf`` family parameters."""
        z = np.zeros
        k_smu = T if k_smu is None else k_smu
        return cls(np.full((n_rows, n_blocks), -np.inf), z((n_rows, n_blocks)),
                   z((n_rows, n_blocks)), z((n_rows, n_blocks, d)),
                   z((n_rows, n_blocks, d)), z((n_rows, n_blocks, d, d)),
                   z((n_rows, n_blocks, d, d)), z((n_rows, n_blocks, T)),
                   z((n_rows, n_blocks, p, p)), z((n_rows, n_blocks, p, k_smu)),
                   *((z((n_rows, n_blocks, p)), z((n_rows, n_blocks))) if nf else ()))

    @classmethod
    def stack(cls, rows):
        """Stack single-row partial sums, in the given order."""
        return cls(*(None if getattr(rows[0], f) is None
                     else np.concatenate([getattr(r, f) for r in rows]) for f in _FIELDS))

    def combine(self):
        """Sum the rows into one, rescaling each to the common maximum per block."""
        sc = _scales(self.a)
        sc2 = sc * sc
        nb = {} if self.saa is None else {
            "hxa": (sc[..., None] * self.hxa).sum(0)[None], "saa": (sc * self.saa).sum(0)[None]}
        return PartialSums(
            self.a.max(axis=0)[None], (sc * self.s0).sum(0)[None],
            (sc2 * self.s0sq).sum(0)[None],
            (sc[..., None] * self.s1).sum(0)[None], (sc2[..., None] * self.s1sq).sum(0)[None],
            (sc[..., None, None] * self.s2).sum(0)[None],
            (sc2[..., None, None] * self.s2sq).sum(0)[None],
            (sc[..., None] * self.sS).sum(0)[None],
            (sc[..., None, None] * self.hxx).sum(0)[None],
            (sc[..., None, None] * self.smu).sum(0)[None], **nb)


_FIELDS = ("a", "s0", "s0sq", "s1", "s1sq", "s2", "s2sq", "sS", "hxx", "smu", "hxa", "saa")

#: Most partitions an evaluation is split into.  The partitions of a draw set do not depend
#: on threads or workers, so neither does the order of the final sum.
N_PARTITIONS = 16


def _scales(a):
    """``exp(a_row - max_row a)`` per row and block (0 where a row has no weight)."""
    A = a.max(axis=0)
    finite = np.isfinite(A)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(np.isfinite(a), np.exp(a - np.where(finite, A, 0.0)), 0.0)


def partition_bounds(n_chunks, n_partitions=N_PARTITIONS):
    """Contiguous ``(c0, c1)`` chunk-index ranges: ``min(n_chunks, n_partitions)`` of them."""
    P = max(1, min(n_chunks, n_partitions))
    base, extra = divmod(n_chunks, P)
    sizes = [base + (i < extra) for i in range(P)]
    edges = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(P)]


class DrawShift:
    """Draws that move with the fixed effects: ``u_k(beta) = U0_k + M (beta - beta0)``.

    ``M = du_hat/dbeta`` (q x p, layout column order) is how the conditional modes move with
    ``beta`` at the sampler's centre ``beta0``.  The proposal translated by the same amount
    has the same density at the translated draws, so ``log f~`` is unchanged and ``l_m``
    stays an importance-sampling estimate, for each ``theta``, smooth in ``theta``.  Where
    fixed effects are confounded with random effects (radish2), frozen draws make the
    Hessian of ``l_m`` a difference of two huge nearly equal terms (Monte Carlo noise);
    moving draws remove the confounded direction from the complete-data score.

    With ``u_k = U0_k + du``, ``du = M (beta - beta0)`` and ``D = diag(nu)`` per column, the
    complete-data beta score of draw ``k`` in block ``b`` is
    ``Xs_b' w (y - c'(eta_k)) - M_b' D_b^{-1} u_kb`` with ``Xs = X + Z M``; its beta Hessian
    is ``-Xs_b' W Xs_b - M_b' D_b^{-1} M_b`` and its beta-nu_t cross derivative
    ``sum_{j in b, t} M_j u_kj / nu_t^2``.

    Attributes
    ----------
    M : ndarray (q, p)
    beta0 : ndarray (p,)
    Xs : ndarray (n, p)
        The shifted design ``X + Z M`` in layout order.
    """

    def __init__(self, data, M, beta0):
        q, p = data.q, data.k_fe
        B, T = data.n_blocks, data.k_vc
        self.M = np.ascontiguousarray(M, dtype=np.float64)
        if self.M.shape != (q, p):
            raise ValueError(f"M must have shape ({q}, {p}); got {self.M.shape}")
        self.beta0 = np.array(beta0, dtype=np.float64)
        self.Xs = np.ascontiguousarray(data.X + data.Z @ self.M)
        boc, ident = data.block_of_col, data.ident
        cols = np.arange(q)
        # Rows b * p + i: block b's sum_j M[j, i] x_j (the prior's beta score).
        self._mblk = sp.csr_matrix(
            (self.M.ravel(), ((boc[:, None] * p + np.arange(p)).ravel(), np.repeat(cols, p))),
            shape=(B * p, q))
        # Rows b * T + t: block b's sum over the columns of component t.
        self._ind = sp.csr_matrix((np.ones(q), (boc * T + ident, cols)), shape=(B * T, q))
        # Rows (b * p + i) * T + t: block b's sum_{j in t} M[j, i] x_j (the cross term).
        self._mcross = sp.csr_matrix(
            (self.M.ravel(),
             (((boc[:, None] * p + np.arange(p)) * T + ident[:, None]).ravel(),
              np.repeat(cols, p))), shape=(B * p * T, q))
        # MM[b, t] = sum_{j in b, t} M_j M_j' (p x p), each sum in column order from 0 (a
        # sparse product with the indicator: np.add.at's numbers, a tenth of its time)
        MM = np.einsum("ji,jl->jil", self.M, self.M)
        self._mm = (self._ind @ MM.reshape(q, p * p)).reshape(B, T, p, p)
        self._dims = (B, T, p)
        self._data = data
        self.vector = data.cov.has_vector

    def offset(self, beta):
        """``du = M (beta - beta0)`` (q,), each effect's entry from its own row of ``M``
        (as ``linear_fixed``: a partition's effects get
        the bits of the same effects of the whole layout)."""
        return np.einsum("ij,j->i", self.M, np.asarray(beta, dtype=np.float64) - self.beta0)

    def move(self, U, j0, j1, du):
        """Draws ``j0:j1`` of ``U`` moved by ``du`` (:meth:`offset`), as a new array."""
        from glmm_sm.mcla.kernels.shift import add_offset

        out = np.empty((U.shape[0], j1 - j0))
        add_offset(U, j0, j1, du, out)
        return out

    def sums_of_squares(self, U):
        """``S`` (B, T + C, K) of the (moved) draws ``U`` (q, K), cross sums included."""
        from glmm_sm.mcla.kernels.shift import csr_times

        B, T, _ = self._dims
        ind = self._ind
        S = np.empty((B * T, U.shape[1]))
        csr_times(ind.indptr, ind.indices, ind.data, _c(U), True, S)
        S = S.reshape(B, T, U.shape[1])
        if self.vector:
            S = np.ascontiguousarray(np.concatenate([S, self._data.cross_sums(U)], axis=1))
        return S

    def _precision(self, nu):
        d = self._data
        return d.cov.precision_matrix(nu, d.pairs, d.ident).tocsr()

    def prior_matrix(self, nu):
        """Sparse ``(B p, q)``: row ``b p + i`` holds ``-(M' P)[i, j]`` for ``j`` in block b
        (``P`` the prior precision; ``-M[j, i] / nu_j`` for scalar components), at the
        covariance parameters ``nu``."""
        A = self._mblk
        if self.vector:
            return sp.csr_matrix(-(A @ self._precision(nu)))
        nu_col = np.asarray(nu)[self._data.ident]
        return sp.csr_matrix((A.data * (-1.0 / nu_col[A.indices]), A.indices, A.indptr),
                             shape=A.shape)

    def prior_scores(self, U, A):
        """``Gp[b, :, k] = -M_b' D_b^{-1} u_kb`` (B, p, K) of the moved draws ``U``; ``A``
        from :meth:`prior_matrix`."""
        from glmm_sm.mcla.kernels.shift import csr_times

        B, _, p = self._dims
        out = np.empty((B * p, U.shape[1]))
        csr_times(A.indptr, A.indices, A.data, _c(U), False, out)
        return out.reshape(B, p, U.shape[1])

    def cross_sums(self, sU, nu=None):
        """``smu[b, :, t] = sum_{j in b, t} M_j sU_j`` (B, p, T); with correlated terms
        ``smu[b, :, j] = M_b' P D_j P sU_b`` (B, p, k_vcp), the whole beta-theta cross
        derivative of the prior's beta score (scalar components: divided by ``nu_t^2``
        later)."""
        B, T, p = self._dims
        if not self.vector:
            return (self._mcross @ sU).reshape(B, p, T)
        d = self._data
        dP = d.cov.precision_derivatives(nu, d.pairs, d.ident)
        return np.stack([(self._mblk @ -(D @ sU)).reshape(B, p) for D in dP], axis=2)

    def prior_hessian(self, nu):
        """``M_b' D_b^{-1} M_b`` per block (B, p, p)."""
        if self.vector:
            B, _, p = self._dims
            PM = np.asarray(self._precision(nu) @ self.M)
            out = np.zeros((B, p, p))
            np.add.at(out, self._data.block_of_col, np.einsum("ji,jl->jil", self.M, PM))
            return out
        return np.einsum("btij,t->bij", self._mm, 1.0 / nu)


def _c(a):
    return np.ascontiguousarray(a, dtype=np.float64)


def draw_shift(sampler):
    """The :class:`DrawShift` of a sampler's draws, or None (draws that do not move).

    Draws move when the sampler was built with ``shift=True``; the shift (with its shifted
    design ``X + Z M``) is built once per sampler and kept with it.
    """
    if sampler is None or not getattr(sampler, "shift", False):
        return None
    got = sampler.__dict__.get("_draw_shift")
    if got is None:
        got = DrawShift(sampler.data, sampler.du_dbeta, sampler.beta0)
        sampler._draw_shift = got
    return got


def moved_draws(shift, beta, U, S, j0, j1):
    """``(U, S)`` of draws ``j0:j1`` at ``beta``: as given, or moved by ``shift``."""
    if shift is None:
        return U[:, j0:j1], S[:, :, j0:j1]
    Uc = shift.move(U, j0, j1, shift.offset(beta))
    return Uc, shift.sums_of_squares(Uc)


#: Empty optional outputs of the kernels (no moments, no log weights).
_NONE1, _NONE2 = np.zeros(0), np.zeros((0, 0))
_NO_KEND = np.zeros(0, dtype=np.int64)


def block_kend(draws, k0, k1, j0):
    """Where each block's draws end among the columns ``j0:j0 + (k1 - k0)`` holding draws
    ``k0:k1`` (the kernels' ``Draws.kend``): ``j0 + clip(m_b - k0, 0, k1 - k0)`` for the
    per-block draw counts ``m_b`` of ``draws.block_m``; empty (every block uses every draw)
    when ``draws`` has none."""
    bm = getattr(draws, "block_m", None)
    if bm is None:
        return _NO_KEND
    return (j0 + np.clip(bm - k0, 0, k1 - k0)).astype(np.int64)


def kernel_prior(data, nu):
    """``(nuk, lognu, pc)``: each component's kernel variance and its log, and the cross
    sums' coefficients (empty without correlated terms; :mod:`glmm_sm.spec.covstruct`)."""
    if data.cov.has_vector:
        return data.cov.kernel_inputs(nu)
    return nu, np.log(nu), np.zeros(0)


def _kernel_args(data, params, X):
    """``(beta, nu, design, prior)``: what the kernel takes at ``params`` with design ``X``
    (``design`` a :class:`~glmm_sm.mcla.kernels.records.Design`, ``prior`` a
    :class:`~glmm_sm.mcla.kernels.records.Prior`)."""
    p, k = data.k_fe, data.k_fe + data.k_vcp
    params = np.asarray(params, dtype=np.float64)
    beta, nu = params[:p], np.ascontiguousarray(params[p:k])
    xb = np.ascontiguousarray(data.linear_fixed(beta))
    nuk, lognu, pc = kernel_prior(data, nu)
    design = Design(data.obs_ptr, data.col_ptr, xb, data.wy, data.wn, X, data.zptr,
                    data.zidx, data.zval, np.ascontiguousarray(params[k:]))
    return beta, nu, design, Prior(lognu, nuk, pc, data.qbt)


def weight_pass(kernel, data, draws, ranges, params, shift=None, moments=False):
    """One value-only kernel pass: yields, per draw range, ``(a, s0, sU, sUU, lw)`` with the
    draws' log weights ``lw`` (n_blocks, K) and, with ``moments``, the weighted sums of
    every effect and of its square (``sU``, ``sUU``; relative to ``a`` per block).  The
    draws are moved by ``shift`` when they move."""
    fn = KERNELS[kernel]
    p = data.k_fe
    beta, _, design, prior = _kernel_args(data, params, data.X if shift is None else shift.Xs)
    B, q, T, d = data.n_blocks, data.q, data.n_s, p + data.n_s + data.k_fam
    for k0, k1 in ranges:
        U, logf, S, j0, j1 = draws.chunk_arrays(k0, k1)
        if shift is not None:
            U = shift.move(U, j0, j1, shift.offset(beta))
            S = shift.sums_of_squares(U)
            logf = np.ascontiguousarray(logf[:, j0:j1])
            j0, j1 = 0, j1 - j0
        a, s0, s0sq = np.full(B, -np.inf), np.zeros(B), np.zeros(B)
        sU, sUU = np.zeros(q), np.zeros(q if moments else 0)
        lw = np.empty((B, j1 - j0))
        out = Sums(a, s0, s0sq, np.zeros((B, d)), np.zeros((B, d)), np.zeros((B, d, d)),
                   np.zeros((B, d, d)), np.zeros((B, T)), np.zeros(data.X.shape[0]), sU, sUU,
                   lw)
        fn(data.family.kernel, False, design,
           Draws(U, logf, S, block_kend(draws, k0, k1, j0)), j0, j1, prior, False,
           np.zeros((B, p, 0)), out)
        yield a, s0, sU, sUU, lw


def partition_sums(kernel, data, draws, ranges, params, derivs=True, shift=None):
    """One partition's partial sums (a single row) over the draw ranges ``ranges``.

    Parameters
    ----------
    kernel : {"numba", "numpy"}
    data : LayoutData
    draws : object with ``chunk_arrays(k0, k1)``
        A :class:`~glmm_sm.mcla.draws.DrawSet`, or a worker's view of its share of one.
    ranges : list of (k0, k1)
    params : ndarray
        ``(beta, nu)`` with every ``nu > 0``.
    shift : DrawShift, optional
        Move the draws with the fixed effects (see :class:`DrawShift`).
    """
    fn = KERNELS[kernel]
    p = data.k_fe
    X = data.X if shift is None else shift.Xs
    beta, nu, design, prior = _kernel_args(data, params, X)
    nf = data.k_fam
    n, B, d = data.X.shape[0], data.n_blocks, p + data.n_s + nf
    # two rows: row 0 the sums of the ranges so far, row 1 the range at hand, folded into
    # row 0 after each range (so memory does not grow with the number of ranges)
    R = min(len(ranges), 2)
    rows = PartialSums.empty(R, B, d, data.n_s, p, len(nu), nf)
    hc = np.zeros((R, n))
    hca = np.zeros((R, n if nf else 0))
    Gp, sU_out = np.zeros((B, p, 0)), np.zeros(data.q)  # unused by frozen draws
    suc = None
    if shift is not None:
        du = shift.offset(beta)
        A = shift.prior_matrix(nu)
        suc = np.zeros((R, data.q))
    for i, (k0, k1) in enumerate(ranges):
        c = min(i, 1)
        if i > 1:  # row 1 again: start from zero sums
            for f in _FIELDS:
                if getattr(rows, f) is not None:
                    getattr(rows, f)[1] = 0.0
            rows.a[1] = -np.inf
            hc[1] = 0.0
            hca[1:] = 0.0
            if suc is not None:
                suc[1] = 0.0
        U, logf, S, j0, j1 = draws.chunk_arrays(k0, k1)
        if shift is not None:
            U = shift.move(U, j0, j1, du)
            S = shift.sums_of_squares(U)
            logf = np.ascontiguousarray(logf[:, j0:j1])
            j0, j1 = 0, j1 - j0
            sU_out = suc[c]
            if derivs:
                Gp = shift.prior_scores(U, A)
        out = Sums(rows.a[c], rows.s0[c], rows.s0sq[c], rows.s1[c], rows.s1sq[c], rows.s2[c],
                   rows.s2sq[c], rows.sS[c], hc[c], sU_out, _NONE1, _NONE2,
                   *((hca[c], rows.saa[c]) if nf else ()))
        fn(data.family.kernel, derivs, design,
           Draws(U, logf, S, block_kend(draws, k0, k1, j0)), j0, j1, prior,
           shift is not None and bool(derivs), Gp, out)
        if c:
            _fold(rows, hc, suc, data, hca)
    sc = _scales(rows.a[:1])
    out = PartialSums(*(None if getattr(rows, f) is None else getattr(rows, f)[:1].copy()
                        for f in _FIELDS))
    if derivs:
        h = (sc[:, data.block_of_obs] * hc[:1]).sum(axis=0)
        _numba_kernels().block_xhx(data.obs_ptr, X, h, out.hxx[0])
        if nf:  # X_b' (weighted d2 log f / d eta d alpha), per block
            ha = (sc[:, data.block_of_obs] * hca[:1]).sum(axis=0)
            np.add.at(out.hxa[0], data.block_of_obs, X * ha[:, None])
        if shift is not None:
            sU = (sc[:, data.block_of_col] * suc[:1]).sum(axis=0)
            out.smu[0] = shift.cross_sums(sU, nu)
            out.hxx[0] += out.s0[0][:, None, None] * shift.prior_hessian(nu)
    return out


def _fold(rows, hc, suc, data, hca):
    """Fold row 1 of a partition's running sums into row 0, both rescaled to their common
    maximum log weight per block, with the per-observation ``hc`` (and the negative
    binomial's ``hca``, empty otherwise) and per-effect ``suc`` (None when the draws do not
    move)."""
    sc = _scales(rows.a)
    one = rows.combine()
    for f in _FIELDS:
        if getattr(rows, f) is not None:
            getattr(rows, f)[0] = getattr(one, f)[0]
    bo = data.block_of_obs
    hc[0] = sc[0, bo] * hc[0] + sc[1, bo] * hc[1]
    if hca.shape[1]:
        hca[0] = sc[0, bo] * hca[0] + sc[1, bo] * hca[1]
    if suc is not None:
        boc = data.block_of_col
        suc[0] = sc[0, boc] * suc[0] + sc[1, boc] * suc[1]
