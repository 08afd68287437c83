"""Fits whose data stay partitioned: a Dask fit where each worker holds only its partitions.

``MonteCarloGLMM.from_formula(formula, data=parts, family=...)`` with ``parts`` a
``dask.dataframe.DataFrame`` or a list of partitions (pandas data frames, or Dask futures of
them) gives a :class:`PartitionedGLMM`.  Its :meth:`~PartitionedGLMM.fit` with
``client=`` builds each partition's design where the partition is, and the client only
receives sizes, names and small sums:

1. *Metadata*: per partition its rows, blocks, random-effect levels (and per block its
   effects per component), and the levels of the fixed effects' categorical columns, whose
   union codes every partition alike.  A grouping level in two partitions is refused (a
   block must lie in one partition; see :func:`check_aligned`); empty partitions are left
   out.
2. *Start*: the whitening from the Gram matrix, the fixed-effects GLM by Newton and the
   Laplace MLE by L-BFGS-B (:func:`~glmm_sm.laplace.step.laplace_optimize`), every sum over
   the data formed as on one machine: per block where the partition is, then folded in
   block order (:mod:`glmm_sm.spec.folds`; a partition sends the sums of the chunks of
   blocks it holds whole and its own blocks' terms in the chunks it shares).  The
   conditional modes (one number per random effect) come back to the client, which sends
   them as the next evaluation's start, as the single machine keeps them.
3. *Monte Carlo rounds*: per round each partition builds its blocks' Laplace sampler and
   draws its share of the round's draws (the single machine's numbers:
   :mod:`glmm_sm.mcla.partitioned`); every evaluation sends ``theta`` and receives each
   block's ESS and ``l_b`` and the partitions' shares of the folded sums.  Rounds,
   stopping rules and m follow :mod:`glmm_sm.fit.driver`.

Same answer: the fit is ``fit(sampler="laplace")`` of the concatenated data, bit for bit
(with ``rao_blackwell=False`` where that fit would Rao-Blackwellize a crossed block), in
this process (``client=None``) and on any cluster, whatever worker computes which
partition and whether workers die (Dask recomputes a lost partition from its lineage).
Not done on partitioned data: the separation checks (``fit`` warns of a separation of the
whole data; here none is looked for), the boundary refits (a variance at 0 ends the fit
with the advice to fit a local model), correlated terms, the negative binomial, and the
post-fit tools that need the rows.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from glmm_sm.core.random import as_seed_sequence, child_seed
from glmm_sm.fit.boundary import at_boundary
from glmm_sm.fit.driver import (
    _maximize,
    _mcse,
    _progress,
    _RoundState,
    _warn_hessian,
    _warn_unconverged,
)
from glmm_sm.fit.information import information_errors
from glmm_sm.fit.options import M_START, FitLog, FitOptions, check_draw_budget
from glmm_sm.laplace.step import glm_newton, laplace_optimize, laplace_value, score_from_sums
from glmm_sm.mcla.partitioned import (
    BlocksMeta,
    PartitionedEngine,
    Pieces,
    draw_plans,
    piece_glm,
    piece_gram,
    piece_laplace,
    piece_meta,
    piece_sampler,
)
from glmm_sm.spec.folds import merge_folds
from glmm_sm.spec.params import ParamTransform

__all__ = ["PartitionedGLMM", "PartitionedResults", "check_aligned", "is_partitioned"]


def is_partitioned(data):
    """Whether ``data`` is partitioned data: a Dask DataFrame, or a list or tuple of
    partitions (pandas data frames or Dask futures)."""
    if hasattr(data, "to_delayed") and hasattr(data, "npartitions"):
        return True
    return isinstance(data, (list, tuple)) and len(data) > 0 and all(
        isinstance(p, pd.DataFrame) or type(p).__name__ == "Future" for p in data)


def _fixed_part(formula):
    """The formula without its lme4 random-effect terms ``( ... | ... )``."""
    return re.sub(r"\([^()]*\|[^()]*\)", "", formula)


def partition_levels(frame, columns):
    """The levels of ``columns`` in one partition (run where the partition is)."""
    return {c: pd.unique(frame[c].dropna()).tolist() for c in columns if c in frame}


def with_levels(frame, levels):
    """``frame`` with ``levels``' columns as categoricals of the union's levels, so that
    every partition codes the fixed effects alike."""
    if not levels:
        return frame
    frame = frame.copy()
    for c, lv in levels.items():
        frame[c] = pd.Categorical(frame[c], categories=lv)
    return frame


def check_aligned(metas):
    """Refuse partitions that split a block: a random effect (a grouping level) present in
    two partitions.  Returns nothing; raises ValueError saying how to partition."""
    owner = {}
    for i, m in enumerate(metas):
        for name in m.col_names:
            j = owner.setdefault(name, i)
            if j != i:
                raise ValueError(
                    f"data: the random effect {name!r} has rows in partitions {j} and {i}; "
                    "every block (a grouping level and the levels crossed or nested with "
                    "it) must lie in one partition, so that a worker integrates it alone. "
                    "Partition by the grouping factor, e.g. ddf.shuffle(on='g') or "
                    "ddf.set_index('g') for (1 | g), or split the pandas frame with "
                    "groupby('g') before giving the partitions")


class PartitionedGLMM:
    """A GLMM whose data stay in partitions (see the module docstring).

    Built by :meth:`MonteCarloGLMM.from_formula <glmm_sm.MonteCarloGLMM.from_formula>`
    when ``data`` is a ``dask.dataframe.DataFrame`` or a list of partitions; only the
    importance-sampling fit (``sampler="laplace"``) is available, with Bernoulli, binomial
    or Poisson responses.  Post-fit tools that need the rows (predictions, profiles,
    likelihood-ratio tests, random-effect predictions) need a local model: build one with
    ``MonteCarloGLMM.from_formula(formula, data=<a pandas frame>)``.

    Parameters
    ----------
    partitions : dask DataFrame or list
        The partitions (pandas data frames, or Dask futures of them).
    build : callable
        ``build(frame, levels)``: one partition's :class:`~glmm_sm.mcla.partitioned.Piece`
        (a picklable function: it runs on the workers).
    formula : str
        The model's formula (its fixed part names the columns coded by the union of
        their levels).
    """

    def __init__(self, partitions, build, formula):
        self.partitions = partitions
        self.build = build
        self.formula = formula
        self.pieces = None
        self.metas = None

    # ------------------------------------------------------------------ partitions
    def _frames(self, client):
        """The partitions: local frames (``client`` None) or futures on the cluster."""
        parts = self.partitions
        if hasattr(parts, "to_delayed"):
            delayed = parts.to_delayed()
            if client is None:
                return [d.compute() for d in delayed]
            return client.compute(delayed)
        parts = list(parts)
        futures = [p for p in parts if not isinstance(p, pd.DataFrame)]
        if futures and client is None:
            raise ValueError("data: partitions given as Dask futures need fit(client=...)")
        if client is None:
            return parts
        return [client.scatter(p, hash=False) if isinstance(p, pd.DataFrame) else p
                for p in parts]

    def _categorical_columns(self, frames, client):
        fixed = _fixed_part(self.formula)
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", fixed))
        if hasattr(self.partitions, "dtypes"):
            dtypes = self.partitions.dtypes
        elif client is None:
            dtypes = frames[0].dtypes
        else:
            dtypes = client.submit(lambda f: f.dtypes, frames[0], pure=False).result()
        return [c for c, t in dtypes.items() if c in words and not (
            pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t))]

    def _prepare(self, client):
        """Build the pieces where the partitions are and gather their metadata."""
        frames = self._frames(client)
        # Empty partitions (a shuffle by the grouping factor leaves some) hold no block.
        rows = Pieces(frames, client).gather(len)
        frames = [f for f, r in zip(frames, rows, strict=True) if r]
        if not frames:
            raise ValueError("data: every partition is empty")
        cats = self._categorical_columns(frames, client)
        levels = {}
        if cats:
            per = Pieces(frames, client).gather(partition_levels, columns=cats)
            for c in cats:
                seen = []
                for d in per:
                    seen.extend(d.get(c, []))
                levels[c] = sorted(set(seen), key=lambda v: (str(type(v)), v))
        pieces = Pieces(Pieces(frames, client).keep(self.build, levels=levels), client)
        metas = pieces.gather(piece_meta)
        names = {m.param_names for m in metas}
        if len(names) != 1:
            raise ValueError(f"data: the partitions give different parameters {sorted(names)}; "
                             "give every partition every column, with the same types")
        check_aligned(metas)
        self.pieces, self.metas, self._frames_kept = pieces, metas, frames
        return pieces, metas

    # ------------------------------------------------------------------ fit
    def fit(self, client=None, m="auto", random_state=None, sampler="laplace", *,
            max_rounds=8, target_ratio=0.1, max_m=10**6, m_start=None, min_ess=200.0,
            time_budget=600.0, kernel="numba", chunk_size=None, memory_budget=None,
            sampler_options=None, start_params=None, disp=False, callback=None):
        """Monte Carlo MLE with the data kept in their partitions.

        Parameters
        ----------
        client : dask.distributed.Client, optional
            Build and evaluate each partition on the cluster's workers; ``None`` evaluates
            the partitions one after the other in this process (the same fit, bit for bit).
        m, random_state, max_rounds, target_ratio, max_m, m_start, min_ess, time_budget, \
kernel, chunk_size, memory_budget, sampler_options, disp, callback
            As for :meth:`MonteCarloGLMM.fit <glmm_sm.MonteCarloGLMM.fit>`.
        sampler : {"laplace"}
            The importance sampler (the only one available with partitioned data).
        start_params : array_like, optional
            Start of the Laplace step ``(beta, nu)``; default the fixed-effects GLM and
            ``nu = 1``.

        Returns
        -------
        PartitionedResults
        """
        if sampler != "laplace":
            raise ValueError(f"sampler: partitioned data are fitted with sampler='laplace' "
                             f"(importance sampling per block); got {sampler!r}. For "
                             "sampler='quadrature' or 'glmm' fit a local model")
        if client is not None:
            from glmm_sm.mcla.distributed import check_client

            check_client(client)
        opts = FitOptions(m=m, sampler="laplace", max_rounds=max_rounds,
                          target_ratio=target_ratio, max_m=max_m, m_start=m_start,
                          min_ess=min_ess, time_budget=time_budget, kernel=kernel,
                          chunk_size=chunk_size, rao_blackwell=False,
                          sampler_options=dict(sampler_options or {}),
                          sampler_reason="sampler='laplace' (partitioned data)",
                          **({} if memory_budget is None else {"memory_budget": memory_budget}))
        seed = as_seed_sequence(random_state)
        pieces, metas = self._prepare(client)
        view = _ModelView(metas)
        if view.k_fam:
            raise NotImplementedError("family: the negative binomial is not available with "
                                      "partitioned data; fit a local model")
        if view.blocks.cov.has_vector:
            raise NotImplementedError(
                "correlated random effects ((1 + x | g)) are not available with partitioned "
                "data yet; write independent effects (1 + x || g) or fit a local model")
        check_draw_budget(opts, view.nobs)
        t_start = time.perf_counter()
        if opts.time_budget is not None:
            opts = replace(opts, deadline=t_start + opts.time_budget)
        log = FitLog(seed_entropy=seed.entropy)
        log.sampler = {"used": "laplace", "reason": opts.sampler_reason}
        p, kc = view.k_fe, view.k_fe + view.k_vcp
        with threadpool_limits(1, user_api="blas"):
            oracle = PiecesLaplace(pieces, metas, view)
            t0 = time.perf_counter()
            lapfit = laplace_optimize(oracle, start_params)
            log.laplace = {**lapfit.record(), "seconds": time.perf_counter() - t0}
            log.warnings.extend(lapfit.notes)
            if not lapfit.ok:
                log.warnings.append(
                    "the Laplace step (start values and sampler centre) ended without "
                    "converged conditional modes or with a non-finite value "
                    f"({lapfit.info.message}); the Monte Carlo rounds start from it anyway: "
                    "check the fit, or give start_params")
            if at_boundary(lapfit.params[p:kc], opts.boundary_tol):
                raise ValueError(
                    "the Laplace estimate has a variance at 0 (boundary): the boundary "
                    "procedure (refits without the component) needs a local model; fit "
                    "MonteCarloGLMM.from_formula(formula, data=<a pandas frame>)")
            state = _PartitionedRounds(view, oracle, metas, opts, seed, client, log, t_start,
                                       lapfit)
            bar = _progress(disp, opts.max_rounds)
            try:
                for rnd in range(opts.max_rounds):
                    if state.round(rnd, callback, bar):
                        break
                else:
                    log.message = f"no convergence in max_rounds={opts.max_rounds} rounds"
            finally:
                bar.close()
        outcome = state.outcome
        if outcome.boundary:
            outcome.converged = False
            log.message = (f"{log.message}: a variance went to 0, and the boundary procedure "
                           "(refits without the component) needs a local model")
        _warn_hessian(view, outcome)
        if not outcome.converged:
            _warn_unconverged(log, opts)
        for text in log.warnings:
            warnings.warn(text, ConvergenceWarning, stacklevel=2)
        return PartitionedResults.from_outcome(view, outcome, state.m, lapfit.params)


class _ModelView:
    """What the round logic of :mod:`glmm_sm.fit.driver` reads of a model, from the
    partitions' metadata."""

    def __init__(self, metas):
        m0 = metas[0]
        self.k_fe = len(m0.exog_names)
        self.exog_names = list(m0.exog_names)
        self.param_names = list(m0.param_names)
        cov = m0.cov
        self.k_vcp = cov.k_vcp
        self.k_fam = m0.family.k_fam
        self.vcp_names = self.param_names[self.k_fe : self.k_fe + self.k_vcp]
        self.design = _Design(cov)
        self.data = _Names(self.param_names)
        self.nobs = sum(m.nobs for m in metas)
        self.blocks = BlocksMeta(np.concatenate([m.qbt for m in metas]),
                                 sum(m.q for m in metas), self.k_fe, cov, m0.family)


class _Design:
    def __init__(self, cov):
        self.cov = cov


class _Names:
    def __init__(self, names):
        self.param_names = names


class PiecesLaplace:
    """The Laplace objective from the pieces, as
    :func:`~glmm_sm.laplace.step.laplace_optimize` asks for it: the numbers of
    :class:`~glmm_sm.laplace.step.LocalLaplace` on the whole data, bit for bit (every sum
    is the pieces' per-block sums folded in block order)."""

    def __init__(self, pieces, metas, view):
        self.pieces, self.data = pieces, view.blocks
        self.nobs = view.nobs
        q = np.cumsum([0] + [m.q for m in metas])
        self.q_slices = [slice(int(a), int(b)) for a, b in zip(q[:-1], q[1:], strict=True)]
        b = np.cumsum([0] + [m.n_blocks for m in metas])
        self.block_offsets = [int(v) for v in b[:-1]]
        self.n_blocks = int(b[-1])
        self.gram = self._fold(piece_gram)
        note = self.transform(0).whitening_note
        if note is not None and "rank deficient" in note:
            # (each partition was built without the rank check: a level it lacks)
            raise ValueError(f"exog: the partitions' fixed-effects design together is not of "
                             f"full column rank ({note}); the fixed effects are not "
                             "identifiable: drop or recode the aliased column(s)")

    def transform(self, k):
        """The optimizer's :class:`~glmm_sm.spec.params.ParamTransform`."""
        return ParamTransform.from_gram(self.gram, self.nobs, k, cov=self.data.cov)

    def _fold(self, fn, **common):
        """:func:`~glmm_sm.spec.folds.fold` of the blocks' terms that ``fn`` gives per
        piece (as :class:`~glmm_sm.spec.folds.PartialFold`)."""
        got = self.pieces.gather(fn, self.block_offsets, n_blocks=self.n_blocks, **common)
        return merge_folds(got, self.n_blocks)

    def glm_start(self):
        """The fixed-effects GLM estimate (:func:`~glmm_sm.laplace.step.glm_newton`)."""
        def terms(beta):
            got = self.pieces.gather(piece_glm, self.block_offsets, beta=beta,
                                     n_blocks=self.n_blocks)
            return tuple(merge_folds([g[i] for g in got], self.n_blocks) for i in range(3))

        return glm_newton(terms, self.transform(0).T)

    def evaluate(self, theta, u0, gradient=True):
        """``(value, gradient or None, modes)`` at ``theta``, modes from ``u0``."""
        theta = np.asarray(theta, dtype=np.float64)
        u0s = [None] * len(self.q_slices) if u0 is None else [u0[s] for s in self.q_slices]
        got = self.pieces.gather(piece_laplace, u0s, self.block_offsets, params=theta,
                                 n_blocks=self.n_blocks, gradient=gradient)
        d = self.data
        nu = theta[d.k_fe : d.k_fe + d.k_vcp]
        val = laplace_value(d, nu, merge_folds([t.values for t in got], self.n_blocks))
        g = None
        if gradient and np.isfinite(val):
            g = score_from_sums(d, nu, merge_folds([t.scores for t in got], self.n_blocks))
        mode = _Modes(np.concatenate([t.u for t in got]), all(t.converged for t in got),
                      np.concatenate([t.not_pd + o for t, o in
                                      zip(got, self.block_offsets, strict=True)]))
        return val, g, mode


class _Modes:
    """The pieces' conditional modes, in layout order (what the Laplace fit keeps of a
    :class:`~glmm_sm.laplace.step.ModeResult`)."""

    def __init__(self, u, converged, not_pd):
        self.u, self.converged, self.not_pd = u, converged, np.asarray(not_pd, dtype=np.int64)


class _PartitionedRounds(_RoundState):
    """``_RoundState`` whose rounds draw and evaluate on the
    pieces (:class:`~glmm_sm.mcla.partitioned.PartitionedEngine`)."""

    def __init__(self, view, oracle, metas, opts, seed, client, log, t_start, lapfit):
        self.model, self.opts, self.seed, self.factorize = view, opts, seed, True
        self.client, self.log, self.t_start = client, log, t_start
        self.deadline = opts.deadline
        self.n_jobs = 1
        self.tr = oracle.transform(view.k_vcp + view.k_fam)
        self.rb = None
        self.centre, self.centre_mode = lapfit.params, lapfit.mode
        m_start = M_START if opts.m_start is None else opts.m_start
        m = m_start if opts.m == "auto" else int(opts.m)
        self.m = min(m, opts.max_m) if opts.m == "auto" else m
        self.prev_mcse = None
        self.outcome = None
        self.runaway, self.collapsed = None, 0
        self.oracle, self.plans = oracle, draw_plans(metas)

    def _run(self, rnd):
        opts, oracle = self.opts, self.oracle
        u0 = [None] * len(oracle.q_slices)
        if self.centre_mode is not None:  # the Laplace fit's modes (round 0)
            u0 = [self.centre_mode.u[s] for s in oracle.q_slices]
        samplers = oracle.pieces.keep(piece_sampler, u0,
                                      params=np.asarray(self.centre, dtype=np.float64),
                                      options=dict(opts.sampler_options))
        engine = PartitionedEngine(oracle.pieces, samplers, self.plans, self.model.blocks,
                                   self.m, child_seed(self.seed, rnd), opts.kernel,
                                   opts.chunk_size, opts.memory_budget,
                                   shift=opts.sampler_options.get("shift", True),
                                   block_offsets=oracle.block_offsets)
        theta, res, ev = _maximize(engine, self.centre, self.tr, opts, self.log, rnd)
        return engine, theta, res, ev

    def _laplace_loglike(self, theta):
        """The Laplace log-likelihood from the pieces (the same numbers as the local
        model's, see :class:`PiecesLaplace`)."""
        oracle = self.oracle

        def ll(x):
            return oracle.evaluate(x, None, gradient=False)[0]

        return ll


class PartitionedResults:
    """Estimates of a partitioned fit: what follows from the final evaluation.

    Attributes
    ----------
    params, bse, mcse : pandas.Series
    cov_params : pandas.DataFrame
        ``-H^{-1}`` at the estimate.
    mcse_cov : ndarray
        The Monte Carlo covariance of the estimate ``H^{-1} V H^{-1}``.
    llf_mc : float
        ``l_m`` at the estimate (without the family's constants).
    converged : bool
    fit_log : FitLog
    m : int
        Draws of the last round.
    laplace_params : ndarray
        The Laplace MLE (the first round's centre).
    nobs : int
    """

    @classmethod
    def from_outcome(cls, view, outcome, m, lap):
        self = cls()
        names = view.param_names
        err = information_errors(outcome.evaluation.hessian, outcome.evaluation.score_var)
        self.params = pd.Series(np.asarray(outcome.params, dtype=float), index=names)
        self.cov_params = pd.DataFrame(err.cov, index=names, columns=names)
        self.bse = pd.Series(np.sqrt(np.diag(err.cov)), index=names)
        self.mcse_cov = err.mcse_cov
        self.mcse = pd.Series(_mcse(err.mcse_cov), index=names)
        self.llf_mc = float(outcome.evaluation.value)
        self.converged = bool(outcome.converged)
        self.fit_log = outcome.log
        self.m = int(m)
        self.laplace_params = np.asarray(lap, dtype=float)
        self.nobs = int(view.nobs)
        return self

    def summary(self):
        """The estimates, standard errors and Monte Carlo standard errors as a table."""
        return pd.DataFrame({"coef": self.params, "std err": self.bse, "mcse": self.mcse})

    def __repr__(self):
        return (f"PartitionedResults(nobs={self.nobs}, m={self.m}, converged="
                f"{self.converged})\n{self.summary()}")
