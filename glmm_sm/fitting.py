"""Monte Carlo maximum likelihood: trust-region maximization of ``l_m``, re-centring, choice of m.

One *round* draws ``m`` importance-sampling draws from a sampler centred at the current
estimate, freezes them, and maximizes ``l_m`` over ``(beta, log nu)`` with scipy's
``trust-exact`` (exact Hessian).  The next round re-centres the sampler at the new estimate
with fresh draws.  Rounds stop when

* the estimate moved by less than 3 combined Monte Carlo standard errors since the sampler's
  centre (so the sampler sits at the estimate, up to Monte Carlo error),
* with ``m="auto"``, the largest MCSE/SE ratio is at most ``target_ratio`` (else m grows by
  ``(ratio / target_ratio)^2``, as MCSE shrinks like ``m^(-1/2)``), and
* every block's effective sample size is at least ``min_ess`` (an MCSE estimated from a
  handful of effective draws is not to be trusted).
"""

from __future__ import annotations

import math
import numbers
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from ._random import as_seed_sequence, child_seed
from .boundary import BOUNDARY_NU, at_boundary
from .draws import DEFAULT_MEMORY_BUDGET, DrawSet
from .engine import MCLAEngine, effective_n_jobs

__all__ = ["FitOptions", "FitLog", "FitOutcome", "mcmle"]


@dataclass(frozen=True)
class FitOptions:
    """Settings of a Monte Carlo MLE fit (see :meth:`MonteCarloGLMM.fit`)."""

    m: int | str = "auto"
    sampler: str = "laplace"
    target_ratio: float = 0.1
    max_m: int = 10**6
    m_start: int = 4000
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

    def __post_init__(self):
        if isinstance(self.m, str):
            if self.m != "auto":
                raise ValueError(f"m must be 'auto' or a positive integer; got {self.m!r}")
        else:
            object.__setattr__(self, "m", _count(self.m, "m", "'auto' or an integer >= 1"))
        for name in ("max_m", "m_start", "max_rounds", "maxiter"):
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
        if self.factorize is not None and not isinstance(self.factorize, (bool, np.bool_)):
            raise TypeError(f"factorize must be True, False or None; got {self.factorize!r}")
        if not isinstance(self.sampler_options, dict):
            raise TypeError("sampler_options must be a dict; got "
                            f"{type(self.sampler_options).__name__}")


def _real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and v == v


def _count(v, name, what):
    """``v`` as an int >= 1 (integer-valued floats such as 1e6 accepted)."""
    if not _real(v) or not float(v).is_integer() or v < 1:
        raise ValueError(f"{name} must be {what}; got {v!r}")
    return int(v)


@dataclass
class FitLog:
    """Record of a fit: every evaluation and every round.

    Attributes
    ----------
    evaluations : list of dict
        ``round``, ``theta`` (beta, nu), ``value``, ``grad_norm`` for every objective call.
    rounds : list of dict
        ``round``, ``m``, ``params``, ``value``, ``min_ess``, ``max_ratio`` (largest
        MCSE/SE), ``moved`` (largest move since the sampler centre, in combined MCSEs),
        ``iterations``, ``seconds``.
    laplace : dict
        The Laplace start: ``params``, ``value``, ``seconds``.
    seed_entropy : int
        Entropy of the root ``SeedSequence`` (repeat the fit with ``random_state`` set to a
        ``SeedSequence(entropy)``).
    message : str
    boundary : dict
        Variance components estimated at 0, each with the one-sided derivative of the
        log-likelihood at 0 (negative: the boundary is a maximum); see
        :mod:`glmm_sm.boundary`.
    """

    evaluations: list = field(default_factory=list)
    rounds: list = field(default_factory=list)
    laplace: dict = field(default_factory=dict)
    seed_entropy: int | None = None
    message: str = ""
    boundary: dict = field(default_factory=dict)

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
    cov: np.ndarray | None = None
    mcse_cov: np.ndarray | None = None
    m: int | None = None
    re_moments: tuple | None = None

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


class _Objective:
    """``-l_m`` on ``x = (beta, log nu)`` with cached evaluations and chain-rule derivatives."""

    def __init__(self, engine, p, log, rnd):
        self.engine, self.p, self.log, self.rnd = engine, p, log, rnd
        self._x = None
        self._out = None

    def _eval(self, x):
        if self._x is None or not np.array_equal(x, self._x):
            p = self.p
            theta = np.concatenate([x[:p], np.exp(x[p:])])
            ev = self.engine.evaluate(theta)
            if ev.gradient is None or not (np.all(np.isfinite(ev.gradient))
                                           and np.all(np.isfinite(ev.hessian))):
                out = (np.inf, np.zeros_like(x), np.eye(len(x)))
            else:
                nu = theta[p:]
                g = ev.gradient.copy()
                H = ev.hessian.copy()
                J = np.concatenate([np.ones(p), nu])
                gx = g * J
                Hx = H * np.outer(J, J)
                Hx[p:, p:] += np.diag(gx[p:])
                out = (-ev.value, -gx, -Hx)
            self.log.evaluations.append({"round": self.rnd, "theta": theta,
                                         "value": -out[0],
                                         "grad_norm": float(np.linalg.norm(out[1]))})
            self._x, self._out = np.array(x), out
        return self._out

    def fun(self, x):
        return self._eval(x)[0]

    def jac(self, x):
        return self._eval(x)[1]

    def hess(self, x):
        return self._eval(x)[2]


def _maximize(engine, start, p, opts, log, rnd):
    obj = _Objective(engine, p, log, rnd)
    x0 = np.concatenate([start[:p], np.log(start[p:])])
    res = minimize(obj.fun, x0, jac=obj.jac, hess=obj.hess, method="trust-exact",
                   options={"gtol": opts.gtol, "maxiter": opts.maxiter})
    theta = np.concatenate([res.x[:p], np.exp(res.x[p:])])
    return theta, res


def _at_maximum(ev, mcse, tol=1e-2):
    """Whether ``ev`` is at a maximum to far below Monte Carlo error, though the optimizer
    stopped short of ``gtol`` (badly scaled designs leave a roundoff floor in the gradient):
    the Hessian is negative definite and the remaining Newton step is below ``tol`` MCSEs.
    """
    H, g = ev.hessian, ev.gradient
    if H is None or not (np.all(np.isfinite(H)) and np.all(np.isfinite(g))):
        return False
    try:
        np.linalg.cholesky(-H)
    except np.linalg.LinAlgError:
        return False
    step = np.linalg.solve(H, g)
    return bool(np.all(np.abs(step) <= tol * mcse))


def monte_carlo_errors(ev):
    """``(cov, mcse_cov)``: inverse observed information and the MCSE sandwich at ``ev``."""
    H = ev.hessian
    try:
        Hinv = np.linalg.inv(H)
    except np.linalg.LinAlgError:
        Hinv = np.linalg.pinv(H)
    cov = -Hinv
    mc = Hinv @ ev.score_var @ Hinv
    return 0.5 * (cov + cov.T), 0.5 * (mc + mc.T)


def mcmle(model, opts: FitOptions, random_state=None, start_params=None, callback=None,
          disp=True, client=None):
    """Monte Carlo MLE of ``model``; see the module docstring for the rounds.

    ``client`` (a ``dask.distributed.Client``) evaluates the Monte Carlo sums on its workers;
    the estimates are the same as without it.
    """
    seed = as_seed_sequence(random_state)
    # Small dense algebra only: BLAS threads cost far more than they gain here.
    with threadpool_limits(1, user_api="blas"):
        outcome = _mcmle(model, opts, seed, start_params, callback, disp, client)
        if outcome.boundary:
            from .boundary import fit_with_boundary

            outcome = fit_with_boundary(model, outcome, opts, callback, disp, client)
    if outcome.engine is not None:
        outcome.engine.detach()
    if not outcome.converged:
        _warn_unconverged(outcome.log, opts)
    return outcome


def _mcmle(model, opts, seed, start_params, callback, disp, client):
    """The rounds; stops early (``outcome.boundary``) when a variance goes to 0."""
    t_start = time.perf_counter()
    n_jobs = effective_n_jobs(opts.n_jobs)
    log = FitLog(seed_entropy=seed.entropy)
    p = model.k_fe
    factorize = model.factorize if opts.factorize is None else bool(opts.factorize)
    t0 = time.perf_counter()
    lap, lap_value, mode = model.fit_laplace(start_params, factorize=factorize)
    log.laplace = {"params": lap, "value": lap_value, "seconds": time.perf_counter() - t0}
    zero = at_boundary(lap[p:], opts.boundary_tol)
    if zero:
        log.message = "Laplace estimate at the boundary"
        return FitOutcome(lap, None, None, log, False, seed, boundary=zero)
    centre, centre_mode = lap, mode
    m = opts.m_start if opts.m == "auto" else int(opts.m)
    m = min(m, opts.max_m) if opts.m == "auto" else m
    prev_mcse = None
    outcome = None
    bar = _progress(disp, opts.max_rounds)
    try:
        for rnd in range(opts.max_rounds):
            t_round = time.perf_counter()
            smp = model.make_sampler(centre, opts.sampler, factorize, mode=centre_mode,
                                     **opts.sampler_options)
            draws = DrawSet.from_sampler(smp, m, child_seed(seed, rnd), opts.memory_budget,
                                         materialize=client is None, n_jobs=n_jobs)
            engine = MCLAEngine(draws, opts.kernel, opts.chunk_size, n_jobs, client)
            theta, res = _maximize(engine, centre, p, opts, log, rnd)
            ev = engine.evaluate(theta)
            cov, mc = monte_carlo_errors(ev)
            se = np.sqrt(np.clip(np.diag(cov), 0, None))
            mcse = np.sqrt(np.clip(np.diag(mc), 0, None))
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = float(np.nanmax(np.where(se > 0, mcse / se, np.inf)))
                ref = mcse if prev_mcse is None else np.sqrt(mcse**2 + prev_mcse**2)
                moved = float(np.max(np.abs(theta - centre) / np.maximum(ref, 1e-300)))
            if prev_mcse is None:
                moved = math.inf  # the first centre is the Laplace fit, not an MCMLE
            min_ess = float(ev.ess.min())
            opt_ok = res.success or _at_maximum(ev, mcse)
            info = {"round": rnd, "m": m, "params": theta, "value": ev.value,
                    "min_ess": min_ess, "max_ratio": ratio, "moved": moved,
                    "iterations": int(res.nit), "optimizer_success": bool(opt_ok),
                    "seconds": time.perf_counter() - t_round}
            log.rounds.append(info)
            outcome = FitOutcome(theta, ev, engine, log, False, seed)
            bar.update(1)
            bar.set_postfix(m=m, ess=f"{min_ess:.0f}", ratio=f"{ratio:.3f}")
            zero = at_boundary(theta[p:], opts.boundary_tol)
            if zero:
                outcome.boundary = zero
                log.message = f"variance went to 0 in round {rnd}"
                break
            ok_m = opts.m != "auto" or ratio <= opts.target_ratio
            ok_ess = min_ess >= opts.min_ess
            if moved <= 3.0 and ok_m and ok_ess and opt_ok:
                outcome.converged = True
                log.message = f"converged after {rnd + 1} rounds"
                break
            if callback is not None and callback(info):
                log.message = f"stopped by callback after round {rnd}"
                break
            elapsed = time.perf_counter() - t_start
            if opts.time_budget is not None and elapsed > opts.time_budget:
                log.message = f"time budget of {opts.time_budget:g} s used up"
                break
            if opts.m == "auto":
                m = _next_m(m, ratio, min_ess, opts)
            centre, centre_mode, prev_mcse = theta, None, mcse
        else:
            log.message = f"no convergence in max_rounds={opts.max_rounds} rounds"
    except KeyboardInterrupt:
        if outcome is None:
            raise
        log.message = f"interrupted during round {len(log.rounds)}; returning round " \
                      f"{len(log.rounds) - 1}"
        warnings.warn(log.message, UserWarning, stacklevel=3)
    finally:
        bar.close()
    return outcome


def _next_m(m, ratio, min_ess, opts):
    grow = 1.0
    if math.isfinite(ratio) and ratio > opts.target_ratio:
        grow = max(grow, 1.2 * (ratio / opts.target_ratio) ** 2)
    if min_ess < opts.min_ess:
        grow = max(grow, 1.5 * opts.min_ess / max(min_ess, 1.0))
    return int(min(opts.max_m, math.ceil(m * min(grow, 100.0))))


def _warn_unconverged(log, opts):
    if not log.rounds:
        warnings.warn(f"The fit did not converge ({log.message}).", ConvergenceWarning,
                      stacklevel=3)
        return
    last = log.rounds[-1]
    advice = []
    if last["max_ratio"] > opts.target_ratio:
        advice.append(f"MCSE/SE is {last['max_ratio']:.3g} (> {opts.target_ratio}): allow a "
                      "larger max_m or time_budget")
    if last["min_ess"] < opts.min_ess:
        advice.append(f"the smallest block ESS is {last['min_ess']:.0f}: increase m, or check "
                      "for variance components at zero")
    if not last["optimizer_success"]:
        advice.append("the trust-region optimizer did not converge: try start_params or "
                      "more maxiter")
    if last["moved"] > 3:
        advice.append("the estimate still moves between rounds: allow more max_rounds")
    warnings.warn(f"Monte Carlo MLE did not converge ({log.message}). " + "; ".join(advice),
                  ConvergenceWarning, stacklevel=3)


def _progress(disp, total):
    from tqdm.auto import tqdm

    enabled = bool(disp) and sys.stderr.isatty()
    return tqdm(total=total, desc="MCLA rounds", disable=not enabled, leave=False)
