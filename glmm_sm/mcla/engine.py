"""The MCLA engine: value, gradient and Hessian of ``l_m`` at ``theta = (beta, nu)``.

For each block ``b`` with draws ``u_k`` and log weights ``b_k(theta)`` (see
:mod:`glmm_sm.mcla.kernels.plain`), ``l_b = log((1/m) sum_k e^{b_k})``, and
``l_m = sum_b l_b``.  With
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

from glmm_sm.core.constants import HALF_LOG2PI
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.partials import (  # noqa: F401  (re-exported: their home was this module)
    KERNELS,
    N_PARTITIONS,
    DrawShift,
    PartialSums,
    _scales,
    draw_shift,
    kernel_prior,
    moved_draws,
    partition_bounds,
    partition_sums,
    weight_pass,
)
from glmm_sm.spec.families import nb_constant
from glmm_sm.spec.folds import fold
from glmm_sm.spec.validation import nonnegative_up_to_rounding

__all__ = ["Evaluation", "EngineBase", "MCLAEngine", "PartialSums", "DrawShift", "draw_shift",
           "finish_blocks", "finish_sums", "block_score_var",
           "partition_sums", "effective_n_jobs", "weight_chunks", "ROW_DRAWS"]

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
    block_score_var : ndarray (n_blocks, d, d) or None
        Each block's term of ``score_var`` (they sum to it), in the model's coordinates;
        only where the engine was asked to keep them (``keep_block_var``: the per-block
        draw counts of :mod:`glmm_sm.mcla.block_m` are allocated from them).
    """

    value: float
    gradient: np.ndarray | None
    hessian: np.ndarray | None
    score_var: np.ndarray | None
    ess: np.ndarray
    block_values: np.ndarray
    block_score_var: np.ndarray | None = None


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


#: Most numbers an ``(observations, draws)`` array of :meth:`MCLAEngine.weighted_draws`
#: holds (32 MB): the linear predictor and the per-observation terms of a chunk of draws.
ROW_DRAWS = 2**22


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


class EngineBase:
    """The protocol every engine follows (:class:`MCLAEngine`, and
    :class:`~glmm_sm.mcla.rb.engine.RBEngine` for Rao-Blackwellized draws).

    It owns what they share: the draw set cut into chunks (``ranges``) and at most
    ``N_PARTITIONS`` partitions (``parts``), the number of
    threads, the validation of ``params`` (length, finite, a valid covariance: otherwise
    ``value = -inf``, as in glmm), and the one-point cache (an evaluation with derivatives
    also answers a later value-only call at the same point).  A subclass computes one
    evaluation in ``_evaluate``; its partitions, combined in their fixed order, give the
    same bits for any number of threads.
    """

    #: Whether the draws hold every random effect (False: some are integrated).
    joint_draws = True

    def _setup(self, draws, chunk_size, n_jobs):
        self.draws = draws
        self.data = draws.data
        self.ranges = draws.chunk_ranges(chunk_size)
        self.parts = partition_bounds(len(self.ranges))
        self.n_jobs = effective_n_jobs(n_jobs)

    @property
    def m(self) -> int:
        return self.draws.m

    @property
    def block_m(self):
        """Each block's number of draws (int64, n_blocks): the first ``m_b`` of the draw
        set's draws (:meth:`~glmm_sm.mcla.draws.DrawSet.set_block_m`); None when every
        block uses all ``m``."""
        return getattr(self.draws, "block_m", None)

    @property
    def m_per_block(self):
        """``block_m``, or ``m`` (a scalar) when every block uses every draw: the ``m`` of
        each block's ``l_b = log((1/m_b) sum_k e^{b_k})``."""
        bm = self.block_m
        return self.m if bm is None else bm

    @property
    def k_params(self) -> int:
        return self.data.k_fe + self.data.k_vcp + self.data.k_fam

    def detach(self):
        """Drop any cluster: later evaluations run on local threads (same results)."""

    def evaluate(self, params, derivs=True):
        """:class:`Evaluation` of ``l_m`` at ``params = (beta, nu)``.

        Any ``nu`` outside the parameter space (a variance ``<= 0``, a covariance that is
        not positive definite) gives ``value = -inf`` and no derivatives, as in glmm.
        ``derivs=False`` gives the value, ESS and block values only.
        """
        data = self.data
        params = np.asarray(params, dtype=np.float64)
        if params.shape != (self.k_params,):
            raise ValueError(f"params must have length {self.k_params}; got {params.shape}")
        nb = data.n_blocks
        k = data.k_fe + data.k_vcp
        if (not np.all(np.isfinite(params)) or not _valid_cov(data, params[data.k_fe:k])
                or np.any(params[k:] <= 0)):  # the negative binomial's alpha > 0
            return Evaluation(-np.inf, None, None, None, np.zeros(nb), np.full(nb, -np.inf))
        # One evaluation per point: score(p) then hessian(p) (or loglike after either)
        # reuse the last one; the draws are frozen, so it is the same computation.
        key = params.tobytes()
        last = self.__dict__.get("_last")
        if last is not None and last[0] == key and (last[1] or not derivs):
            return last[2]
        ev = self._evaluate(params, bool(derivs))
        self._last = (key, bool(derivs), ev)
        return ev

    def _evaluate(self, params, derivs):  # pragma: no cover - the subclasses'
        raise NotImplementedError

    def _map_partitions(self, fn):
        """``[fn(c0, c1) for each partition]``, in order, on up to ``n_jobs`` threads."""
        if self.n_jobs == 1 or len(self.parts) == 1:
            return [fn(c0, c1) for c0, c1 in self.parts]
        with ThreadPoolExecutor(min(self.n_jobs, len(self.parts))) as pool:
            return list(pool.map(lambda b: fn(*b), self.parts))


class MCLAEngine(EngineBase):
    """Evaluate ``l_m`` and its derivatives on a frozen :class:`~glmm_sm.mcla.draws.DrawSet`.

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
        (see :mod:`glmm_sm.mcla.distributed`).
    """

    def __init__(self, draws: DrawSet, kernel="numba", chunk_size=None, n_jobs=None,
                 client=None):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {sorted(KERNELS)}; got {kernel!r}")
        self._setup(draws, chunk_size, n_jobs)
        self.kernel = kernel
        self.shift = draw_shift(draws.sampler)
        self.backend = ThreadBackend(self.n_jobs)
        #: Keep each block's MCSE-middle term on the evaluations
        #: (``Evaluation.block_score_var``), for allocating per-block draw counts.
        self.keep_block_var = False
        if client is not None:
            from glmm_sm.mcla.distributed import DaskBackend

            self.backend = DaskBackend(client, self)

    def detach(self):
        """Drop a Dask client: later evaluations run on local threads (same results)."""
        self.backend = ThreadBackend(self.n_jobs)

    def set_block_m(self, block_m):
        """Per-block draw counts (:meth:`~glmm_sm.mcla.draws.DrawSet.set_block_m`; None:
        every block uses all ``m``); the cached evaluation is dropped.  A Dask backend's
        workers get them with the next evaluation."""
        self.draws.set_block_m(block_m)
        if hasattr(self.backend, "set_block_m"):
            self.backend.set_block_m(self.draws.block_m)
        self._last = None

    def __getstate__(self):
        d = self.__dict__.copy()
        d["backend"] = ThreadBackend(self.n_jobs)
        return d

    def partial_sums(self, params, derivs=True):
        """Partial sums at ``params = (beta, nu)``, one row per partition, in order."""
        return PartialSums.stack(self.backend.run(self, params, derivs))

    def _evaluate(self, params, derivs):
        tot = self.partial_sums(params, derivs).combine()
        ev = finish(tot, params, self.data, self.m_per_block, derivs)
        if derivs and self.keep_block_var and ev.gradient is not None:
            ev.block_score_var = block_score_var(tot, params, self.data)
        return ev

    def draw_terms(self, params, U, logf, S, j0, j1):
        """``(U, eta, b)`` of draws ``j0:j1`` at ``params`` (numpy): the draws (moved with
        beta when they move), the linear predictor (n, K) and the log importance weights
        ``b_k`` (n_blocks, K)."""
        data = self.data
        p = data.k_fe
        params = np.asarray(params, dtype=np.float64)
        beta, nu = params[:p], params[p : p + data.k_vcp]
        U, S = moved_draws(self.shift, beta, U, S, j0, j1)
        eta = data.linear_fixed(beta)[:, None] + data.Z @ U
        alpha = params[p + data.k_vcp] if data.k_fam else None
        ll = data.family.data_loglik(data.wy[:, None], data.wn[:, None], eta, alpha)
        starts = data.obs_ptr[:-1]
        lfy = np.add.reduceat(ll, starts, axis=0)
        qb = np.diff(data.col_ptr)
        T = data.k_vc
        nu, lognu, pc = kernel_prior(data, nu)
        lfu = (-HALF_LOG2PI * qb - 0.5 * data.qbt @ lognu)[:, None]
        lfu = lfu - 0.5 * np.einsum("btk,t->bk", S[:, :T], 1.0 / nu)
        if len(pc):
            lfu = lfu - np.einsum("bck,c->bk", S[:, T:], pc)
        return U, eta, lfy + lfu - logf[:, j0:j1]

    def iter_log_weights(self, params):
        """The draws' log importance weights at ``params``, ``(n_blocks, K)`` per draw range
        (one value-only kernel pass)."""
        for *_, lw in weight_pass(self.kernel, self.data, self.draws, self.ranges,
                                  np.asarray(params, dtype=np.float64), self.shift):
            yield lw

    def weighted_draws(self, params, chunk_size=512, max_draws=None):
        """Yield ``(U, eta, v, sc)`` for every ``chunk_size`` draws, for running
        self-normalised sums: ``v = exp(b - A)`` (n_blocks, K) are the draws' weights
        relative to the running maximum ``A`` of each block's log weights, and ``sc`` the
        factor by which sums over earlier draws must be rescaled to that maximum.
        ``max_draws``: only the first ``max_draws`` draws (all when None).  ``chunk_size``
        is lowered to ``ROW_DRAWS // n`` (at least 1) for ``n`` observations, so the
        ``(n, K)`` arrays of a chunk hold at most :data:`ROW_DRAWS` numbers."""
        chunk_size = max(1, min(int(chunk_size), ROW_DRAWS // self.data.X.shape[0]))
        A = np.full(self.data.n_blocks, -np.inf)
        left = self.m if max_draws is None else int(max_draws)
        bm = self.block_m
        for k0, k1 in self.ranges:
            if left <= 0:
                return
            U, logf, S, j0, j1 = self.draws.chunk_arrays(k0, k1)
            for a0 in range(j0, min(j1, j0 + left), chunk_size):
                a1 = min(a0 + chunk_size, j1, a0 + left)
                left -= a1 - a0
                Ub, eta, b = self.draw_terms(params, U, logf, S, a0, a1)
                if bm is not None:  # a block's draws beyond its own m_b weigh nothing
                    k = k0 + (a0 - j0) + np.arange(a1 - a0)
                    b = np.where(k[None, :] < bm[:, None], b, -np.inf)
                A, v, sc = _rescaled(A, b)
                yield Ub, eta, v, sc

    def random_effect_moments(self, params):
        """Conditional means and SDs of every random effect given the data at ``params``.

        Self-normalised importance-sampling estimates ``sum_k v_k u_k`` per block, returned
        in the model's column order; effects outside every block keep their prior
        (mean 0, SD ``sqrt(nu)``).
        """
        data = self.data
        params = np.asarray(params, dtype=np.float64)
        nu = params[data.k_fe : data.k_fe + data.k_vcp]
        boc = data.block_of_col
        acc = None  # running sums, each range folded in at the common maximum
        for a, *sums, _ in weight_pass(self.kernel, data, self.draws, self.ranges, params,
                                       self.shift, moments=True):
            if acc is None:
                acc = [a, *sums]
                continue
            sc = _scales(np.stack([acc[0], a]))
            acc = [np.maximum(acc[0], a), sc[0] * acc[1] + sc[1] * sums[0],
                   sc[0, boc] * acc[2] + sc[1, boc] * sums[1],
                   sc[0, boc] * acc[3] + sc[1, boc] * sums[2]]
        _, s0, s1, s2 = acc
        q_model = data.arrays.Z.shape[1]
        prior_sd = np.sqrt(data.cov.variances(nu)[data.arrays.ident])
        mean = np.zeros(q_model)
        sd = prior_sd.copy()
        cp = data.layout.col_perm
        mean[cp] = s1 / s0[boc]
        m2 = s2 / s0[boc]
        # E[u^2] - E[u]^2 >= 0 (weighted moments): below 0 only by rounding.
        sd[cp] = np.sqrt(nonnegative_up_to_rounding(
            m2 - mean[cp] ** 2, m2, "conditional variances of the random effects"))
        return mean, sd


def weight_chunks(engine, params):
    """Yield ``(v, sc)`` chunk by chunk over ``engine``'s draws at ``params``: ``v = exp(b -
    A)`` (n_blocks, K) the draws' weights relative to the running maximum ``A`` of each
    block's log weights, ``sc`` the factor that rescales sums over earlier chunks to it.

    Works for every engine: from :meth:`MCLAEngine.weighted_draws` where the draws are joint
    draws of every effect, else (a Rao-Blackwellized engine) from its log weights.
    """
    if getattr(engine, "joint_draws", True):
        for _, _, v, sc in engine.weighted_draws(params):
            yield v, sc
        return
    A = np.full(engine.data.n_blocks, -np.inf)
    for lw in engine.iter_log_weights(params):
        A, v, sc = _rescaled(A, lw)
        yield v, sc


def _rescaled(A, b):
    """One step of running self-normalized sums: the new running maximum of the log
    weights ``b`` (n_blocks, K), the weights relative to it and the factor that rescales
    the earlier sums (0 where there were none).

    A draw with log weight ``-inf`` has weight 0, also while every weight of its block so
    far is 0.  A NaN log weight is an error naming its block: the draw's weight is not
    defined (an overflow in the likelihood or the proposal density), and leaving it out
    would silently change the estimate.
    """
    nan = np.isnan(b)
    if nan.any():
        blocks = np.flatnonzero(nan.any(axis=1))
        raise FloatingPointError(
            f"importance weights: NaN log weight(s) in block(s) {blocks[:10].tolist()} "
            f"({int(nan.sum())} draw(s)); the likelihood or the proposal density of those "
            "draws is not a number (overflow?): check the data and the parameters")
    newA = np.maximum(A, b.max(axis=1))
    with np.errstate(invalid="ignore"):
        sc = np.where(np.isfinite(A), np.exp(A - newA), 0.0)
        v = np.where(np.isneginf(b), 0.0, np.exp(b - newA[:, None]))
    return newA, v, sc


def _valid_cov(data, nu):
    if data.cov.has_vector:
        return data.cov.valid(nu)
    return not np.any(nu <= 0)


def block_score_var(tot: PartialSums, params, data):
    """Each block's term of the MCSE middle ``sum_k v_k^2 (G_k - g_b)(G_k - g_b)'``
    (n_blocks, d, d), in the model's coordinates (correlated terms mapped by ``J . J'`` as
    in :func:`finish`); their sum over the blocks is ``Evaluation.score_var`` (to
    rounding).  A block without weight gets NaN."""
    S0 = tot.s0[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        gh = tot.s1[0] / S0[:, None]
        cross = np.einsum("bj,bl->bjl", gh, tot.s1sq[0])
        V = (tot.s2sq[0] - cross - np.swapaxes(cross, 1, 2)
             + tot.s0sq[0][:, None, None] * np.einsum("bj,bl->bjl", gh, gh)) \
            / (S0**2)[:, None, None]
    if data.cov.has_vector:
        p, nf = data.k_fe, data.k_fam
        k = p + data.cov.k_vcp
        nu = np.asarray(params, dtype=np.float64)[p:k]
        Jc, _ = data.cov.score_map(nu, data.qbt)
        J = np.zeros((k + nf, p + data.n_s + nf))
        J[:p, :p] = np.eye(p)
        J[p:k, p : p + data.n_s] = Jc
        J[k:, p + data.n_s :] = np.eye(nf)
        V = np.einsum("ij,bjk,lk->bil", J, V, J)
    return 0.5 * (V + np.swapaxes(V, 1, 2))


def _value_ess(tot, m):
    """``(l_m, ESS per block, l_b per block)`` from combined partial sums."""
    S0 = tot.s0[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        block_values = tot.a[0] + np.log(S0) - np.log(m)
        ess = np.where(S0 > 0, S0**2 / tot.s0sq[0], 0.0)
    return float(block_values.sum()), ess, block_values


def finish(tot: PartialSums, params, data, m, derivs=True, mc_var=True):
    """Form the value, derivatives, MCSE middle and ESS from combined partial sums.

    Each block's terms (:func:`finish_blocks`) are summed over the blocks by
    :func:`~glmm_sm.spec.folds.fold` (block order, in chunks), so that a layout held in
    pieces sums them to the same bits (:mod:`glmm_sm.mcla.partitioned`).  Without
    ``mc_var`` (nodes, not draws: no Monte Carlo error) the MCSE middle is zeros."""
    if data.cov.has_vector:
        return _finish_vector(tot, params, data, m, derivs)
    ess, block_values, terms = finish_blocks(tot, m, derivs, mc_var)
    return finish_sums(fold(terms), ess, block_values, params, data, derivs)


def finish_blocks(tot: PartialSums, m, derivs=True, mc_var=True):
    """``(ess, block_values, terms)``: per block the ESS, ``l_b`` and the row of the terms
    whose sums over the blocks :func:`finish_sums` takes (scalar components): ``l_b``, the
    block's score ``g_b = s1/S0``, ``hxx/S0``, ``sS/S0``, ``s2/S0 - g_b g_b'``,
    ``smu/S0``, the MCSE middle's block term (zeros without ``mc_var``), and for the
    negative binomial ``hxa/S0`` and ``saa/S0`` (only ``l_b`` without ``derivs``)."""
    S0 = tot.s0[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        block_values = tot.a[0] + np.log(S0) - np.log(m)
        ess = np.where(S0 > 0, S0**2 / tot.s0sq[0], 0.0)
        B = len(S0)
        cols = [block_values[:, None]]
        if derivs:
            gb = tot.s1[0] / S0[:, None]  # (B, d)
            outer = np.einsum("bj,bl->bjl", gb, gb)
            if mc_var:
                cross = np.einsum("bj,bl->bjl", gb, tot.s1sq[0])
                V = (tot.s2sq[0] - cross - np.swapaxes(cross, 1, 2)
                     + tot.s0sq[0][:, None, None] * outer) / (S0**2)[:, None, None]
            else:
                V = np.zeros_like(outer)
            cols += [gb, tot.hxx[0] / S0[:, None, None], tot.sS[0] / S0[:, None],
                     tot.s2[0] / S0[:, None, None] - outer, tot.smu[0] / S0[:, None, None], V]
            if tot.hxa is not None:
                cols += [tot.hxa[0] / S0[:, None], (tot.saa[0] / S0)[:, None]]
    return ess, block_values, np.concatenate([c.reshape(B, -1) for c in cols], axis=1)


def finish_sums(s, ess, block_values, params, data, derivs=True):
    """:func:`finish` from the blocks' terms (:func:`finish_blocks`) summed over the blocks
    (``data`` needs the sizes, ``cov``, ``qbt`` and, for the negative binomial, the
    response)."""
    p, T = data.k_fe, data.k_vc
    k, nf = p + T, data.k_fam
    d = k + nf
    nu = params[p:k]
    value = float(s[0])
    const = _family_constant(data, params)
    value += const[0]
    if not derivs or not np.isfinite(value):
        return Evaluation(value, None, None, None, ess, block_values)
    sizes = {"g": d, "hxx": p * p, "sS": T, "h2": d * d, "smu": p * T, "V": d * d,
             "hxa": p if nf else 0, "saa": 1 if nf else 0}
    parts, i = {}, 1
    for name, size in sizes.items():
        parts[name] = s[i : i + size]
        i += size
    grad = parts["g"].copy()
    H = np.zeros((d, d))
    H[:p, :p] = -parts["hxx"].reshape(p, p)
    SSv = parts["sS"]
    qt = data.qbt.sum(axis=0)
    H[p:k, p:k] = np.diag(qt / (2.0 * nu**2) - SSv / nu**3)
    H += parts["h2"].reshape(d, d)
    # Shifted draws: the prior's beta-nu cross derivative, sum_j M_j ubar_j / nu_t^2 (zero
    # for draws that do not move).
    C = parts["smu"].reshape(p, T) / nu**2
    H[:p, p:k] += C
    H[p:k, :p] += C.T
    if nf:
        H[:p, -1] += parts["hxa"]
        H[-1, :p] += parts["hxa"]
        H[-1, -1] += parts["saa"][0] + const[2]
        grad[-1] += const[1]
    H = 0.5 * (H + H.T)
    V = parts["V"].reshape(d, d)
    V = 0.5 * (V + V.T)
    return Evaluation(value, grad, H, V, ess, block_values)


def _family_constant(data, params):
    """The negative binomial's terms that do not depend on the random effects,
    ``sum w (lgamma(y + 1/alpha) - lgamma(1/alpha) + y log alpha)``, and their first two
    alpha derivatives (:func:`~glmm_sm.spec.families.nb_constant`); zeros otherwise.  They
    come out of the importance-sampling average and are added once."""
    if not data.k_fam:
        return 0.0, 0.0, 0.0
    alpha = float(params[data.k_fe + data.k_vcp])
    if not alpha > 0:
        return -np.inf, 0.0, 0.0
    return nb_constant(data.y, data.wn, alpha)


def _add_family_terms(tot, S0, p, const, grad, H):
    """Add the negative binomial's expected complete-data second derivatives involving
    alpha (the last parameter) and its constant's derivatives to ``grad`` and ``H``."""
    cross = (tot.hxa[0] / S0[:, None]).sum(axis=0)  # sum_i x_i E[d2 log f / d eta d alpha]
    H[:p, -1] += cross
    H[-1, :p] += cross
    H[-1, -1] += (tot.saa[0] / S0).sum() + const[2]
    grad[-1] += const[1]


def _finish_vector(tot: PartialSums, params, data, m, derivs=True):
    """:func:`finish` with correlated terms: the kernel's scores ``h`` (beta, per
    sub-component, cross sums) map to the model's by ``G = c_b + J h``
    (:meth:`~glmm_sm.spec.covstruct.CovStructure.score_map`), so weighted covariances map by
    ``J . J'`` and the expected complete-data Hessian of the prior comes from the weighted
    means of ``S``."""
    p, cov = data.k_fe, data.cov
    k, nf = p + cov.k_vcp, data.k_fam
    nu = params[p:k]
    S0 = tot.s0[0]
    value, ess, block_values = _value_ess(tot, m)
    const = _family_constant(data, params)
    value += const[0]
    if not derivs or not np.isfinite(value):
        return Evaluation(value, None, None, None, ess, block_values)
    Jc, c = cov.score_map(nu, data.qbt)
    d = k + nf
    J = np.zeros((d, p + data.n_s + nf))
    J[:p, :p] = np.eye(p)
    J[p:k, p : p + data.n_s] = Jc
    J[k:, p + data.n_s :] = np.eye(nf)  # the family's parameters map to themselves
    gh = tot.s1[0] / S0[:, None]  # (B, d_kernel)
    gb = gh @ J.T
    gb[:, p:k] += c
    grad = gb.sum(axis=0)
    outer_h = np.einsum("bj,bl->bjl", gh, gh)
    cov_h = (tot.s2[0] / S0[:, None, None] - outer_h).sum(axis=0)
    H = J @ cov_h @ J.T
    H[:p, :p] -= (tot.hxx[0] / S0[:, None, None]).sum(axis=0)
    H[p:k, p:k] += cov.prior_hessian(nu, data.qbt, tot.sS[0] / S0[:, None])
    if np.any(tot.smu[0]):
        C = (tot.smu[0] / S0[:, None, None]).sum(axis=0)
        H[:p, p:k] += C
        H[p:k, :p] += C.T
    if nf:
        _add_family_terms(tot, S0, p, const, grad, H)
    H = 0.5 * (H + H.T)
    cross = np.einsum("bj,bl->bjl", gh, tot.s1sq[0])
    V = (tot.s2sq[0] - cross - np.swapaxes(cross, 1, 2)
         + tot.s0sq[0][:, None, None] * outer_h) / (S0**2)[:, None, None]
    V = J @ V.sum(axis=0) @ J.T
    V = 0.5 * (V + V.T)
    return Evaluation(value, grad, H, V, ess, block_values)
