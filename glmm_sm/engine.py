"""The MCLA engine: value, gradient and Hessian of ``l_m`` at ``theta = (beta, nu)``.

For each block ``b`` with draws ``u_k`` and log weights ``b_k(theta)`` (see
:mod:`glmm_sm._kernels`), ``l_b = log((1/m) sum_k e^{b_k})``, and ``l_m = sum_b l_b``.  With
normalized weights ``v_k``:

* gradient ``sum_b sum_k v_k G_k``;
* Hessian ``sum_b [sum_k v_k H_k + sum_k v_k G_k G_k' - g_b g_b']`` (Louis' identity);
* Monte Carlo variance of the gradient ``sum_b sum_k v_k^2 (G_k - g_b)(G_k - g_b)'`` (the
  Sung-Geyer sandwich middle), and the effective sample size ``1 / sum_k v_k^2`` per block.

The per-chunk partial sums are combined exactly (rescaled to a common maximum), first within
each partition of chunks, then across partitions, always in the same order, so the result does
not depend on which thread or worker computed what.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import _kernels, _kernels_numpy
from .draws import DrawSet

__all__ = ["Evaluation", "MCLAEngine", "PartialSums", "DrawShift", "draw_shift",
           "partition_sums", "effective_n_jobs"]

KERNELS = {"numba": _kernels.chunk_sums, "numpy": _kernels_numpy.chunk_sums}


@dataclass
class Evaluation:
    """The Monte Carlo log-likelihood and its derivatives at one ``theta``.

    Attributes
    ----------
    value : float
        ``l_m(theta)`` (without the family's normalizing constants).
    gradient : ndarray (d,) or None
    hessian : ndarray (d, d) or None
    score_var : ndarray (d, d) or None
        Estimated Monte Carlo variance of the gradient (the MCSE sandwich's middle).
    ess : ndarray (n_blocks,)
        Effective sample size ``1 / sum v_k^2`` per block.
    block_values : ndarray (n_blocks,)
        ``l_b(theta)`` per block.
    """

    value: float
    gradient: np.ndarray | None
    hessian: np.ndarray | None
    score_var: np.ndarray | None
    ess: np.ndarray
    block_values: np.ndarray


@dataclass
class PartialSums:
    """Partial sums over some draws, one row per chunk or partition (see :mod:`._kernels`).

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

    @classmethod
    def empty(cls, n_rows, n_blocks, d, T, p):
        z = np.zeros
        return cls(np.full((n_rows, n_blocks), -np.inf), z((n_rows, n_blocks)),
                   z((n_rows, n_blocks)), z((n_rows, n_blocks, d)),
                   z((n_rows, n_blocks, d)), z((n_rows, n_blocks, d, d)),
                   z((n_rows, n_blocks, d, d)), z((n_rows, n_blocks, T)),
                   z((n_rows, n_blocks, p, p)), z((n_rows, n_blocks, p, T)))

    @classmethod
    def stack(cls, rows):
        """Stack single-row partial sums, in the given order."""
        return cls(*(np.concatenate([getattr(r, f) for r in rows]) for f in _FIELDS))

    def combine(self):
        """Sum the rows into one, rescaling each to the common maximum per block."""
        sc = _scales(self.a)
        sc2 = sc * sc
        return PartialSums(
            self.a.max(axis=0)[None], (sc * self.s0).sum(0)[None],
            (sc2 * self.s0sq).sum(0)[None],
            (sc[..., None] * self.s1).sum(0)[None], (sc2[..., None] * self.s1sq).sum(0)[None],
            (sc[..., None, None] * self.s2).sum(0)[None],
            (sc2[..., None, None] * self.s2sq).sum(0)[None],
            (sc[..., None] * self.sS).sum(0)[None],
            (sc[..., None, None] * self.hxx).sum(0)[None],
            (sc[..., None, None] * self.smu).sum(0)[None])


_FIELDS = ("a", "s0", "s0sq", "s1", "s1sq", "s2", "s2sq", "sS", "hxx", "smu")

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
        # MM[b, t] = sum_{j in b, t} M_j M_j' (p x p).
        MM = np.einsum("ji,jl->jil", self.M, self.M)
        self._mm = np.zeros((B, T, p, p))
        np.add.at(self._mm, (boc, ident), MM)
        self._dims = (B, T, p)

    def offset(self, beta):
        """``du = M (beta - beta0)`` (q,)."""
        return self.M @ (np.asarray(beta, dtype=np.float64) - self.beta0)

    def sums_of_squares(self, U):
        """``S`` (B, T, K) of the (moved) draws ``U`` (q, K)."""
        B, T, _ = self._dims
        return np.ascontiguousarray((self._ind @ (U * U)).reshape(B, T, U.shape[1]))

    def prior_matrix(self, nu_col):
        """Sparse ``(B p, q)``: row ``b p + i`` holds ``-M[j, i] / nu_j`` for ``j`` in block b."""
        A = self._mblk
        return sp.csr_matrix((A.data * (-1.0 / nu_col[A.indices]), A.indices, A.indptr),
                             shape=A.shape)

    def prior_scores(self, U, A):
        """``Gp[b, :, k] = -M_b' D_b^{-1} u_kb`` (B, p, K) of the moved draws ``U``; ``A``
        from :meth:`prior_matrix`."""
        B, _, p = self._dims
        return np.ascontiguousarray((A @ U).reshape(B, p, -1))

    def cross_sums(self, sU):
        """``smu[b, :, t] = sum_{j in b, t} M_j sU_j`` (B, p, T)."""
        B, T, p = self._dims
        return (self._mcross @ sU).reshape(B, p, T)

    def prior_hessian(self, nu):
        """``M_b' D_b^{-1} M_b`` per block (B, p, p)."""
        return np.einsum("btij,t->bij", self._mm, 1.0 / nu)


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
    Uc = U[:, j0:j1] + shift.offset(beta)[:, None]
    return Uc, shift.sums_of_squares(Uc)


def partition_sums(kernel, data, draws, ranges, params, derivs=True, shift=None):
    """One partition's partial sums (a single row) over the draw ranges ``ranges``.

    Parameters
    ----------
    kernel : {"numba", "numpy"}
    data : LayoutData
    draws : object with ``chunk_arrays(k0, k1)``
        A :class:`DrawSet`, or a worker's view of its share of one.
    ranges : list of (k0, k1)
    params : ndarray
        ``(beta, nu)`` with every ``nu > 0``.
    shift : DrawShift, optional
        Move the draws with the fixed effects (see :class:`DrawShift`).
    """
    fn = KERNELS[kernel]
    p, T = data.k_fe, data.k_vc
    params = np.asarray(params, dtype=np.float64)
    beta, nu = params[:p], np.ascontiguousarray(params[p:])
    xb = np.ascontiguousarray(data.linear_fixed(beta))
    lognu = np.log(nu)
    n, B, d = len(xb), data.n_blocks, p + T
    rows = PartialSums.empty(len(ranges), B, d, T, p)
    hc = np.zeros((len(ranges), n))
    X = data.X
    Gp, sU_out = np.zeros((B, p, 0)), np.zeros(data.q)  # unused by frozen draws
    if shift is not None:
        X = shift.Xs
        du = shift.offset(beta)
        A = shift.prior_matrix(nu[data.ident])
        suc = np.zeros((len(ranges), data.q))
    for c, (k0, k1) in enumerate(ranges):
        U, logf, S, j0, j1 = draws.chunk_arrays(k0, k1)
        if shift is not None:
            U = U[:, j0:j1] + du[:, None]
            S = shift.sums_of_squares(U)
            logf = np.ascontiguousarray(logf[:, j0:j1])
            j0, j1 = 0, j1 - j0
            sU_out = suc[c]
            if derivs:
                Gp = shift.prior_scores(U, A)
        fn(data.family.code, derivs, data.obs_ptr, data.col_ptr, xb, data.wy, data.wn,
           X, data.zptr, data.zidx, data.zval, U, logf, S, j0, j1, lognu, nu, data.qbt,
           shift is not None and bool(derivs), Gp, rows.a[c], rows.s0[c], rows.s0sq[c],
           rows.s1[c], rows.s1sq[c], rows.s2[c], rows.s2sq[c], rows.sS[c], hc[c], sU_out)
    sc = _scales(rows.a)
    out = rows.combine()
    if derivs:
        h = (sc[:, data.block_of_obs] * hc).sum(axis=0)
        _kernels.block_xhx(data.obs_ptr, X, h, out.hxx[0])
        if shift is not None:
            sU = (sc[:, data.block_of_col] * suc).sum(axis=0)
            out.smu[0] = shift.cross_sums(sU)
            out.hxx[0] += out.s0[0][:, None, None] * shift.prior_hessian(nu)
    return out


def effective_n_jobs(n_jobs):
    """Threads to use: ``None`` or ``-1`` means every core this process may run on."""
    if n_jobs is None or (not isinstance(n_jobs, (bool, np.bool_))
                          and isinstance(n_jobs, (int, np.integer)) and n_jobs == -1):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)
    if isinstance(n_jobs, (bool, np.bool_)) or not isinstance(n_jobs, (int, np.integer)):
        raise TypeError(f"n_jobs must be an integer or None; got {n_jobs!r}")
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be at least 1 (or -1 / None for all cores); "
                         f"got {n_jobs}")
    return int(n_jobs)


class ThreadBackend:
    """Evaluate the partitions on a pool of ``n_jobs`` threads (the kernels release the GIL)."""

    def __init__(self, n_jobs=None):
        self.n_jobs = effective_n_jobs(n_jobs)

    def run(self, engine, params, derivs):
        def one(bounds):
            c0, c1 = bounds
            return partition_sums(engine.kernel, engine.data, engine.draws,
                                  engine.ranges[c0:c1], params, derivs, engine.shift)

        if self.n_jobs == 1 or len(engine.parts) == 1:
            return [one(b) for b in engine.parts]
        with ThreadPoolExecutor(min(self.n_jobs, len(engine.parts))) as pool:
            return list(pool.map(one, engine.parts))


class MCLAEngine:
    """Evaluate ``l_m`` and its derivatives on a frozen :class:`~glmm_sm.draws.DrawSet`.

    The draws are cut into chunks (``chunk_size`` draws) and the chunks into at most
    ``N_PARTITIONS`` contiguous partitions.  Each partition's sums are computed on one thread
    or Dask worker; the partitions are then combined in their fixed order, so the result is
    the same, bit for bit, for any ``n_jobs`` or cluster.

    Parameters
    ----------
    draws : DrawSet
    kernel : {"numba", "numpy"}
        The fused numba kernel (default) or the numpy reference.
    chunk_size : int, optional
        Draws per chunk for resident draws (default 4096); regenerated draws use their
        generation chunks.
    n_jobs : int or None
        Threads evaluating partitions in parallel; ``None`` or ``-1``: all cores.
    client : dask.distributed.Client, optional
        Evaluate on a Dask cluster instead; the workers generate and keep the draws
        (see :mod:`glmm_sm.distributed`).
    """

    def __init__(self, draws: DrawSet, kernel="numba", chunk_size=None, n_jobs=None,
                 client=None):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {sorted(KERNELS)}; got {kernel!r}")
        self.draws = draws
        self.data = draws.data
        self.kernel = kernel
        self.ranges = draws.chunk_ranges(chunk_size)
        self.parts = partition_bounds(len(self.ranges))
        self.shift = draw_shift(draws.sampler)
        self.n_jobs = effective_n_jobs(n_jobs)
        self.backend = ThreadBackend(self.n_jobs)
        if client is not None:
            from .distributed import DaskBackend

            self.backend = DaskBackend(client, self)

    def detach(self):
        """Drop a Dask client: later evaluations run on local threads (same results)."""
        self.backend = ThreadBackend(self.n_jobs)

    def __getstate__(self):
        d = self.__dict__.copy()
        d["backend"] = ThreadBackend(self.n_jobs)
        return d

    @property
    def m(self) -> int:
        return self.draws.m

    @property
    def k_params(self) -> int:
        return self.data.k_fe + self.data.k_vc

    def partial_sums(self, params, derivs=True):
        """Partial sums at ``params = (beta, nu)``, one row per partition, in order."""
        return PartialSums.stack(self.backend.run(self, params, derivs))

    def evaluate(self, params, derivs=True):
        """:class:`Evaluation` of ``l_m`` at ``params = (beta, nu)``.

        Any ``nu <= 0`` gives ``value = -inf`` (and no derivatives), as in glmm.
        """
        data = self.data
        p = data.k_fe
        params = np.asarray(params, dtype=np.float64)
        if params.shape != (self.k_params,):
            raise ValueError(f"params must have length {self.k_params}; got {params.shape}")
        nb = data.n_blocks
        if not np.all(np.isfinite(params)) or np.any(params[p:] <= 0):
            return Evaluation(-np.inf, None, None, None, np.zeros(nb), np.full(nb, -np.inf))
        tot = self.partial_sums(params, derivs).combine()
        return finish(tot, params, data, self.m, derivs)

    def draw_terms(self, params, U, logf, S, j0, j1):
        """``(U, eta, b)`` of draws ``j0:j1`` at ``params`` (numpy): the draws (moved with
        beta when they move), the linear predictor (n, K) and the log importance weights
        ``b_k`` (n_blocks, K)."""
        data = self.data
        p = data.k_fe
        params = np.asarray(params, dtype=np.float64)
        beta, nu = params[:p], params[p:]
        U, S = moved_draws(self.shift, beta, U, S, j0, j1)
        eta = data.linear_fixed(beta)[:, None] + data.Z @ U
        ll = data.wy[:, None] * eta - data.wn[:, None] * data.family.cumulant(eta)
        starts = data.obs_ptr[:-1]
        lfy = np.add.reduceat(ll, starts, axis=0)
        qb = np.diff(data.col_ptr)
        lfu = (-0.5 * np.log(2 * np.pi) * qb - 0.5 * data.qbt @ np.log(nu))[:, None]
        lfu = lfu - 0.5 * np.einsum("btk,t->bk", S, 1.0 / nu)
        return U, eta, lfy + lfu - logf[:, j0:j1]

    def weighted_draws(self, params, chunk_size=512):
        """Yield ``(U, eta, v, sc)`` for every ``chunk_size`` draws, for running
        self-normalised sums: ``v = exp(b - A)`` (n_blocks, K) are the draws' weights
        relative to the running maximum ``A`` of each block's log weights, and ``sc`` the
        factor by which sums over earlier draws must be rescaled to that maximum."""
        A = np.full(self.data.n_blocks, -np.inf)
        for k0, k1 in self.ranges:
            U, logf, S, j0, j1 = self.draws.chunk_arrays(k0, k1)
            for a0 in range(j0, j1, chunk_size):
                a1 = min(a0 + chunk_size, j1)
                Ub, eta, b = self.draw_terms(params, U, logf, S, a0, a1)
                newA = np.maximum(A, b.max(axis=1))
                with np.errstate(invalid="ignore"):
                    sc = np.where(np.isfinite(A), np.exp(A - newA), 0.0)
                A = newA
                yield Ub, eta, np.exp(b - newA[:, None]), sc

    def random_effect_moments(self, params, chunk_size=512):
        """Conditional means and SDs of every random effect given the data at ``params``.

        Self-normalised importance-sampling estimates ``sum_k v_k u_k`` per block, returned
        in the model's column order; effects outside every block keep their prior
        (mean 0, SD ``sqrt(nu)``).
        """
        data = self.data
        params = np.asarray(params, dtype=np.float64)
        nu = params[data.k_fe:]
        s0 = np.zeros(data.n_blocks)
        s1 = np.zeros(data.q)
        s2 = np.zeros(data.q)
        boc = data.block_of_col
        for Ub, _, w, sc in self.weighted_draws(params, chunk_size):
            s0 = s0 * sc + w.sum(axis=1)
            s1 = s1 * sc[boc] + np.einsum("jk,jk->j", w[boc], Ub)
            s2 = s2 * sc[boc] + np.einsum("jk,jk->j", w[boc], Ub * Ub)
        q_model = data.arrays.Z.shape[1]
        prior_sd = np.sqrt(nu[data.arrays.ident])
        mean = np.zeros(q_model)
        sd = prior_sd.copy()
        cp = data.layout.col_perm
        mean[cp] = s1 / s0[boc]
        sd[cp] = np.sqrt(np.clip(s2 / s0[boc] - mean[cp] ** 2, 0, None))
        return mean, sd


def finish(tot: PartialSums, params, data, m, derivs=True):
    """Form the value, derivatives, MCSE middle and ESS from combined partial sums."""
    p, T = data.k_fe, data.k_vc
    nu = params[p:]
    S0 = tot.s0[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        block_values = tot.a[0] + np.log(S0) - np.log(m)
        ess = np.where(S0 > 0, S0**2 / tot.s0sq[0], 0.0)
    value = float(block_values.sum())
    if not derivs or not np.isfinite(value):
        return Evaluation(value, None, None, None, ess, block_values)
    gb = tot.s1[0] / S0[:, None]  # (B, d)
    grad = gb.sum(axis=0)
    H = np.zeros((p + T, p + T))
    H[:p, :p] = -(tot.hxx[0] / S0[:, None, None]).sum(axis=0)
    SSv = (tot.sS[0] / S0[:, None]).sum(axis=0)
    qt = data.qbt.sum(axis=0)
    H[p:, p:] = np.diag(qt / (2.0 * nu**2) - SSv / nu**3)
    outer = np.einsum("bj,bl->bjl", gb, gb)
    H += (tot.s2[0] / S0[:, None, None] - outer).sum(axis=0)
    if np.any(tot.smu[0]):
        # Shifted draws: the prior's beta-nu cross derivative, sum_j M_j ubar_j / nu_t^2.
        C = (tot.smu[0] / S0[:, None, None]).sum(axis=0) / nu**2
        H[:p, p:] += C
        H[p:, :p] += C.T
    H = 0.5 * (H + H.T)
    cross = np.einsum("bj,bl->bjl", gb, tot.s1sq[0])
    V = (tot.s2sq[0] - cross - np.swapaxes(cross, 1, 2)
         + tot.s0sq[0][:, None, None] * outer) / (S0**2)[:, None, None]
    V = V.sum(axis=0)
    V = 0.5 * (V + V.T)
    return Evaluation(value, grad, H, V, ess, block_values)
