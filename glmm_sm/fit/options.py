"""What a Monte Carlo MLE fit is told and what it hands back: plain records.

:class:`FitOptions` (the settings, checked before any work), :class:`FitLog` (every
evaluation and round, with the optimizers' own returns, as statsmodels keeps
``mle_retvals``) and :class:`FitOutcome` (the estimate, its last evaluation and engine, the
log).  The stages of a fit (:mod:`glmm_sm.fit.driver` for the rounds,
:mod:`glmm_sm.fit.boundary_refit` for refits without components at 0) exchange these records
only.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from glmm_sm.fit.boundary import BOUNDARY_NU
from glmm_sm.fit.information import information_errors
from glmm_sm.mcla.draws import DEFAULT_MEMORY_BUDGET, GEN_SIZE
from glmm_sm.mcla.engine import MCLAEngine, effective_n_jobs

__all__ = ["FitOptions", "FitLog", "FitOutcome", "monte_carlo_errors"]


#: First-round draws of an automatic-m fit (plain / Rao-Blackwellized: the integrated
#: proposal's ESS is about 95% of m on VerbAgg, so 400 draws clear ``min_ess`` = 200 and give
#: an MCSE of about 1% of the SE).
M_START, M_START_RB = 4000, 400


@dataclass(frozen=True)
class FitOptions:
    """Settings of a Monte Carlo MLE fit (see :meth:`MonteCarloGLMM.fit`)."""

    m: int | str = "auto"
    #: "auto" (default): "quadrature" where the structure allows a deterministic fit, else
    #: "laplace" (:func:`glmm_sm.mcla.rb.round.resolve_sampler`); the fit's options hold the
    #: resolved name.
    sampler: str = "auto"
    target_ratio: float = 0.1
    max_m: int = 10**6
    #: Draws of the first round with ``m="auto"``; None: :data:`M_START` (4000), or
    #: :data:`M_START_RB` (400) when a block is Rao-Blackwellized (its weights are far more
    #: even, so fewer draws reach the same MCSE; m still grows as the MCSE requires).
    m_start: int | None = None
    max_rounds: int = 8
    min_ess: float = 200.0
    time_budget: float | None = 600.0
    gtol: float = 1e-8
    maxiter: int = 200
    kernel: str = "numba"
    chunk_size: int | None = None
    n_jobs: int | None = None
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    factorize: bool | None = None
    sampler_options: dict = field(default_factory=dict)
    boundary_tol: float = BOUNDARY_NU
    #: Integrate the levels of one crossed factor by quadrature and sample the rest
    #: (:mod:`glmm_sm.mcla.rb.split`): "auto" (default) where a large block gains, True
    #: wherever a block allows it, False never.
    rao_blackwell: bool | str = "auto"
    #: Per-block draw counts with ``m="auto"`` (:mod:`glmm_sm.mcla.block_m`): after each
    #: round every independent block gets the draws its own share of the MCSE needs (work
    #: ``sum_b rows_b m_b`` minimised at the target ratio, each block at least the ESS
    #: target), a prefix of the round's draws.  False (default): one m for every block, as
    #: the fits pinned bit for bit (``tests/test_bit_identity.py``) were made.  The plain
    #: importance-sampling engine only (local threads or a Dask client).
    per_block_m: bool = False
    #: Internal: why the sampler was chosen (set by ``fit`` when it resolves "auto").
    sampler_reason: str = ""
    #: Internal: the absolute ``time.perf_counter()`` by which the whole fit (boundary
    #: refits included) must end; set by :func:`mcmle` from ``time_budget``.
    deadline: float | None = None

    def __post_init__(self):
        if isinstance(self.m, str):
            if self.m != "auto":
                raise ValueError(f"m must be 'auto' or a positive integer; got {self.m!r}")
        else:
            object.__setattr__(self, "m", _count(self.m, "m", "'auto' or an integer >= 2",
                                                 least=2))
        if self.m_start is not None:
            object.__setattr__(self, "m_start", _count(self.m_start, "m_start",
                                                       "None or an integer >= 2", least=2))
        for name in ("max_m", "max_rounds", "maxiter"):
            object.__setattr__(self, name, _count(getattr(self, name), name, "an integer >= 1"))
        for name, lo, hi in (("target_ratio", 0, 10), ("min_ess", 0, np.inf),
                             ("gtol", 0, np.inf)):
            v = getattr(self, name)
            if not _real(v) or not (lo < v < hi or (name == "min_ess" and v == 0)):
                raise ValueError(f"{name} must be a number in ({lo}, {hi}); got {v!r}")
        effective_n_jobs(self.n_jobs)
        if not _real(self.boundary_tol) or not self.boundary_tol >= 0:
            raise ValueError(f"boundary_tol must be a number >= 0; got {self.boundary_tol!r}")
        if self.time_budget is not None and not (_real(self.time_budget)
                                                 and self.time_budget > 0):
            raise ValueError("time_budget must be a positive number of seconds or None; got "
                             f"{self.time_budget!r}")
        if self.kernel not in ("numba", "numpy"):
            raise ValueError(f"kernel must be 'numba' or 'numpy'; got {self.kernel!r}")
        if self.chunk_size is not None:
            object.__setattr__(self, "chunk_size",
                               _count(self.chunk_size, "chunk_size", "None or an integer >= 1"))
        if not _real(self.memory_budget) or self.memory_budget < 0:
            raise ValueError("memory_budget must be a number of bytes >= 0; got "
                             f"{self.memory_budget!r}")
        if not (self.rao_blackwell == "auto" or isinstance(self.rao_blackwell, (bool, np.bool_))):
            raise ValueError(f"rao_blackwell must be 'auto', True or False; got "
                             f"{self.rao_blackwell!r}")
        if not isinstance(self.per_block_m, (bool, np.bool_)):
            raise TypeError(f"per_block_m must be True or False; got {self.per_block_m!r}")
        if self.factorize is not None and not isinstance(self.factorize, (bool, np.bool_)):
            raise TypeError(f"factorize must be True, False or None; got {self.factorize!r}")
        if not isinstance(self.sampler_options, dict):
            raise TypeError("sampler_options must be a dict; got "
                            f"{type(self.sampler_options).__name__}")


def _real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and v == v


def _count(v, name, what, least=1):
    """``v`` as an int >= ``least`` (integer-valued floats such as 1e6 accepted).  Draw
    counts need ``least=2``: with one draw the Monte Carlo variance has no estimate (its
    MCSE would show as 0)."""
    if not _real(v) or not float(v).is_integer() or v < least:
        extra = ("" if least < 2 or not _real(v) or v < 1 else
                 " (the Monte Carlo standard errors are estimated from the spread of the "
                 "draws: one draw has none)")
        raise ValueError(f"{name} must be {what}; got {v!r}{extra}")
    return int(v)


@dataclass
class FitLog:
    """Record of a fit: every evaluation and every round.

    Attributes
    ----------
    evaluations : list of dict
        ``round``, ``theta`` (beta, nu), ``value``, ``grad_norm`` for every objective call;
        with ``min_ess`` > 0 also the smallest block ``min_ess`` and, after a round's first
        point, whether the point was ``inside`` the ESS trust region
        (:mod:`glmm_sm.fit.driver`).
    rounds : list of dict
        ``round``, ``m``, ``params``, ``value``, ``min_ess``, ``max_ratio`` (largest
        MCSE/SE), ``moved`` (largest move since the sampler centre, in units of the larger
        of the combined MCSE and 1% of the SE), ``iterations``, the trust-region
        optimizer's own ``optimizer_success``, ``optimizer_status`` and
        ``optimizer_message``, ``at_maximum`` (its stop accepted: success, or a Newton step
        far below Monte Carlo error), ``hessian_negative_definite``,
        ``nonfinite_evaluations`` (trial points where ``l_m`` was not finite),
        ``outside_evaluations`` (trial points outside the ESS trust region; optimizer status
        10 when they ended the round), ``converged``, ``seconds`` (wall), ``cpu_seconds``
        (the process's, every thread's, compilation included), ``se`` and ``mcse``
        (per parameter, as ``params``), ``unmet`` (when not converged: the
        convergence conditions the round missed) and, where the fit goes on to another
        Monte Carlo round of ``m="auto"``, ``m_asked`` (the m the MCSE/SE and ESS rule asked
        for) and ``m_next`` (the next round's m, after the growth caps).  The round after
        a Rao-Blackwellized pilot round whose movement across the two rules alone would
        ask for another round has ``pilot_rule`` (``moved`` is then measured from the
        pilot's draws' maximum under this round's rule:
        ``glmm_sm.fit.driver._RoundState._pilot_rule_moved``).
    laplace : dict
        The Laplace start: ``params``, ``value``, L-BFGS-B's ``optimizer_success``,
        ``optimizer_status``, ``optimizer_message`` and ``iterations``, ``mode_converged``,
        ``nonfinite_evaluations``, ``seconds`` (wall) and ``cpu_seconds``.  Always the
        model's own, with a variance component estimated at 0 too.
    laplace_reduced : dict
        With a variance component estimated at 0: the Laplace start of the model without it
        (the refit's), the same keys; empty otherwise.
    seed_entropy : int
        Entropy of the root ``SeedSequence`` (repeat the fit with ``random_state`` set to a
        ``SeedSequence(entropy)``).
    message : str
    boundary : dict
        Variance components estimated at 0, each with the one-sided derivative of the
        log-likelihood at 0 (negative: the boundary is a maximum); see
        :mod:`glmm_sm.fit.boundary`.
    boundary_evidence : list of BoundaryEvidence
        Every decision of the boundary procedure (:mod:`glmm_sm.fit.boundary_refit`): per
        refit and dropped component, the one-sided derivative at 0, its MCSE, the draws,
        the decision (``"boundary"``, ``"interior"``, ``"undecided"``) and the action taken;
        empty when no variance went to 0.
    warnings : list of str
        Problems found along the way, each also issued as a ConvergenceWarning.
    sampler : dict
        ``used``: the sampler of the rounds; ``reason``: why (``sampler="auto"`` chooses
        the deterministic quadrature where the structure allows it).
    quadrature : dict
        A deterministic fit's measured quadrature error: ``nodes``, ``finer_nodes``,
        ``step_in_se``, ``max_step_in_se``, ``llf_change`` and the ``refinements`` (the
        same for each coarser rule the fit refined); empty otherwise.
    rao_blackwell : dict
        With Rao-Blackwellized blocks (:mod:`glmm_sm.mcla.rb.split`): the integrated
        component of each block, the number of integrated levels, the sampled dimension of
        the largest block and the quadrature nodes; empty otherwise.
    hopeless : str
        Why no number of rounds or draws could make the fit converge (no finite MLE, a
        separation within groups, a collapsed ESS, a slope variance not identified), with
        the model to fit instead; "" for a fit that was not stopped for such a reason.
    """

    evaluations: list = field(default_factory=list)
    rounds: list = field(default_factory=list)
    laplace: dict = field(default_factory=dict)
    laplace_reduced: dict = field(default_factory=dict)
    seed_entropy: int | None = None
    message: str = ""
    boundary: dict = field(default_factory=dict)
    boundary_evidence: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    rao_blackwell: dict = field(default_factory=dict)
    hopeless: str = ""
    #: The sampler used (``"used"``) and why (``"reason"``): ``sampler="auto"`` resolves to
    #: ``"quadrature"`` where the structure allows a deterministic fit.
    sampler: dict = field(default_factory=dict)
    #: A deterministic fit's measured quadrature error: the rule's ``nodes`` (inner,
    #: outer), the ``finer_nodes`` it was checked against, the Newton step there in standard
    #: errors (``step_in_se``, ``max_step_in_se``) and the log-likelihood's ``llf_change``.
    quadrature: dict = field(default_factory=dict)

    def to_frame(self):
        """The rounds as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rounds)


@dataclass
class FitOutcome:
    """What :func:`mcmle` returns to the model.

    ``boundary`` lists variance components at 0; ``cov``, ``mcse_cov``, ``m`` and
    ``re_moments`` are set when they do not follow from ``evaluation`` and ``engine`` (a fit
    with components at the boundary).
    """

    params: np.ndarray
    evaluation: object
    engine: MCLAEngine | None
    log: FitLog
    converged: bool
    seed: np.random.SeedSequence
    boundary: list = field(default_factory=list)
    singular: list = field(default_factory=list)
    cov: np.ndarray | None = None
    mcse_cov: np.ndarray | None = None
    m: int | None = None
    re_moments: tuple | None = None
    #: A deterministic fit refined to a finer rule: the ``sampler_options`` it ended with.
    sampler_options: dict | None = None

    def errors(self):
        """``(cov, mcse_cov)`` of the estimate."""
        if self.cov is not None:
            return self.cov, self.mcse_cov
        return monte_carlo_errors(self.evaluation)

    def random_effect_moments(self):
        """Conditional means and SDs of the random effects at the estimate."""
        if self.re_moments is not None:
            return self.re_moments
        return self.engine.random_effect_moments(self.params)

    @property
    def n_draws(self) -> int:
        return self.m if self.m is not None else self.engine.m


def monte_carlo_errors(ev):
    """``(cov, mcse_cov)``: inverse observed information and the MCSE sandwich at ``ev``;
    NaN rows for parameters where ``-H`` is not positive definite
    (:func:`~glmm_sm.fit.information.information_errors`)."""
    err = information_errors(ev.hessian, ev.score_var)
    return err.cov, err.mcse_cov


#: A lower bound on the cost of one evaluation with derivatives, in nanoseconds per
#: (observation x draw): the kernels measure 4 to 9 ns on one core
#: (``benchmarks/bench_engine.py``), so a request that needs more than the time budget at
#: this rate cannot finish.
MIN_NS_PER_OBS_DRAW = 1.0
#: Bytes an evaluation's bookkeeping takes per generation chunk of draws (its ``(k0, k1)``
#: range and the partition it belongs to), a lower bound.
BYTES_PER_CHUNK = 64


def check_draw_budget(opts, n_obs):
    """Refuse, before any work, a number of draws no fit can afford.

    ``m`` (when a number) and ``m_start`` are checked: one evaluation on ``m`` draws takes at
    least ``m * n_obs * MIN_NS_PER_OBS_DRAW`` ns, which must fit ``time_budget``, and the
    bookkeeping of its ``m / GEN_SIZE`` chunks must fit ``memory_budget`` (draws beyond the
    budget are regenerated, not stored, so their own size is not the limit).  The message
    gives the largest ``m`` that passes.
    """
    for name in ("m", "m_start"):
        m = getattr(opts, name)
        if not isinstance(m, (int, np.integer)) or isinstance(m, (bool, np.bool_)):
            continue
        limits = []
        if opts.time_budget is not None:
            seconds = m * n_obs * MIN_NS_PER_OBS_DRAW * 1e-9
            m_max = int(opts.time_budget / (n_obs * MIN_NS_PER_OBS_DRAW * 1e-9))
            if seconds > opts.time_budget:
                limits.append(f"one evaluation on {m:,} draws of {n_obs:,} observations takes "
                              f"at least {seconds:,.0f} s (at {MIN_NS_PER_OBS_DRAW:g} ns per "
                              f"observation and draw), more than time_budget="
                              f"{opts.time_budget:g} s: at most {name}={m_max:,} fits it")
        chunk_bytes = -(-m // GEN_SIZE) * BYTES_PER_CHUNK
        if chunk_bytes > opts.memory_budget:
            m_max = opts.memory_budget // BYTES_PER_CHUNK * GEN_SIZE
            limits.append(f"its {-(-m // GEN_SIZE):,} chunks of {GEN_SIZE} draws need at "
                          f"least {chunk_bytes:,} bytes of bookkeeping, more than "
                          f"memory_budget={opts.memory_budget:,}: at most {name}={m_max:,}")
        if limits:
            raise ValueError(f"{name}={m:,} cannot fit the fit's budgets: "
                             + "; ".join(limits) + ". Ask for fewer draws, or raise "
                             "time_budget / memory_budget.")

