"""Monte Carlo maximum likelihood: trust-region maximization of ``l_m``, re-centring, choice of m.

One *round* draws ``m`` importance-sampling draws from a sampler centred at the current
estimate, freezes them, and maximizes ``l_m`` over ``(beta, log nu)`` with scipy's
``trust-exact`` (exact Hessian).  The next round re-centres the sampler at the new estimate
with fresh draws.  Rounds stop when

* the estimate moved by less than 3 combined Monte Carlo standard errors since the sampler's
  centre (so the sampler sits at the estimate, up to Monte Carlo error),
* with ``m="auto"``, the largest MCSE/SE ratio is at most ``target_ratio`` (else m grows by
  ``(ratio / target_ratio)^2``, as MCSE shrinks like ``m^(-1/2)``, with the ratio planned
  from the gradient's Monte Carlo variance at the draws' centre: ``_planning_ratio``), and
* every block's effective sample size is at least ``min_ess`` (an MCSE estimated from a
  handful of effective draws is not to be trusted).

Within a round the optimizer stays where the frozen draws' importance weights are usable
(a trust region bounded by the ESS): a trial point at which some block's ESS falls below
``min(ESS_TRUST * ESS at the round's start, min_ess)`` is outside, and is rejected (the
trust radius shrinks, so the step is shortened); after ``TRUST_EXITS`` (3) such trial
points the round ends at the last accepted point, and the next round draws afresh there;
such a round that moved the estimate beyond Monte Carlo error does not count against
``max_rounds`` (``TRUST_PROGRESS_MOVED``).
Without it, ``l_m`` far from the draws' centre is the log of a handful of weights and its
maximum follows them (on VerbAgg's ``(1 + Gender | item)`` the ESS fell to 1).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from dataclasses import replace
from time import process_time as _cpu_clock
from typing import NamedTuple

import numpy as np
from scipy.optimize import OptimizeResult, minimize
from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning
from threadpoolctl import threadpool_limits

from glmm_sm.core.random import as_seed_sequence, child_seed
from glmm_sm.fit.boundary import BoundaryEvidence, at_boundary, boundary_decision
from glmm_sm.fit.boundary_refit import fit_with_boundary
from glmm_sm.fit.information import information_errors
from glmm_sm.fit.options import (  # noqa: F401  (FitLog and monte_carlo_errors: their home was here)
    M_START,
    M_START_RB,
    FitLog,
    FitOptions,
    FitOutcome,
    check_draw_budget,
    monte_carlo_errors,
)
from glmm_sm.fit.separation import separation_direction, within_group_separation
from glmm_sm.laplace.step import family_system, laplace_fit, laplace_loglike, split_params
from glmm_sm.mcla.block_m import ESS_MARGIN, allocate_block_m, block_contributions
from glmm_sm.mcla.draws import GEN_SIZE, DrawSet
from glmm_sm.mcla.engine import MCLAEngine, effective_n_jobs
from glmm_sm.mcla.memory import check_fit_memory, fit_max_m, fit_plan
from glmm_sm.mcla.rb.round import (
    centre_mode,
    centre_system,
    rb_m_start,
    rb_record,
    rb_round,
    rb_structure,
    resolve_sampler,
)
from glmm_sm.spec.covstruct import SINGULAR_TOL, singular_terms
from glmm_sm.spec.params import CachedObjective, ParamTransform

__all__ = ["FitOptions", "FitLog", "FitOutcome", "mcmle"]

#: Movement between rounds is measured against the larger of the combined MCSE and this
#: fraction of the standard error.
MOVE_FLOOR_SE = 0.01
#: A round's optimizer stops once the remaining Newton step is below this many MCSEs (each
#: parameter; at least 1% of its SE): the estimate is then the maximizer of ``l_m`` on the
#: final draws to far below Monte Carlo error (profiles and LR tests use it as such).
STOP_STEP = 0.01
#: ... in the first round, whose estimate only centres the next round.
PILOT_STOP_STEP = 0.25
#: A deterministic fit's round whose estimate is more than :data:`FAR_ROUND_SE` standard
#: errors (some parameter) from the round's centre cannot be its last (the rounds stop only
#: once the estimate moves by less than :data:`QUADRATURE_TOL_SE`): its estimate only
#: centres the next round's rule, which moves the maximum by a fraction of that distance.
#: Its optimizer stops once the remaining Newton step is below this fraction of the
#: distance (each parameter, in its SE), or the usual :data:`STOP_STEP` if that is larger.
FAR_STEP_FRACTION = 0.01
#: See :data:`FAR_STEP_FRACTION`: :data:`QUADRATURE_TOL_SE`, the largest movement with
#: which a deterministic fit's rounds may stop (:meth:`_RoundState._record`: converged
#: below 0.03 SE, or stalled below this).  A round stopped at a point farther from its
#: centre thus moved by more: not its last.  (On guPrenat the rounds that move 0.1-1 SE,
#: the 24 x 30 refit's first two, then take 2 evaluations fewer; 1 SE before.)
FAR_ROUND_SE = 0.1
#: The next round's m brings the MCSE/SE it is expected to have (:func:`_planning_ratio`)
#: to the target with this factor to spare in m: MCSE/SE is planned at
#: ``target / sqrt(1.2)``.  With the planning ratio's log standard deviation of about 0.18
#: (measured on the 60 x 40 maximal design) that is its 69% quantile: a planned round meets
#: the target about two times in three at worst (where the plan grows m at all), the rest
#: take one more round.  A 93% quantile (1.5) would add 25% to every planned round to save
#: one more round in about a quarter of them: no gain on average.
PLAN_MARGIN = 1.2
#: A round whose Monte Carlo information ``1 / SE^2`` for a variance exceeds the Laplace
#: approximation's curvature ``-d^2 l_LA / d nu^2`` at the same estimate by more than this
#: factor is not converged: the curvature is the draws' own (their weights in that variance
#: degenerate away from their centre), not the likelihood's, and the sandwich MCSE built
#: with it is too small by about the same factor.  Measured (``benchmarks/README.md``,
#: 2026-12-07): 0.87-2.7 on fits that reach the MLE (cbpp, salamander, the nested
#: three-level designs), 56-2,300 on the rounds that stopped near a put-back pupil variance
#: of 0.004-0.014 whose exact MLE is 0.19 (Laplace's curvature there within 30% of the
#: exact one).
CURVATURE_FACTOR = 10.0
#: Largest factor by which m may grow from one round to the next.
MAX_M_GROWTH = 10.0
#: ... and from a round whose estimate moved by more than 3 (combined MCSE) from its centre.
MAX_M_GROWTH_MOVED = 3.0
#: A round whose smallest block ESS is below this has collapsed: ``l_m`` is the log of a
#: handful of weights, and its maximum follows them.  Two such rounds in a row after the
#: first (which is centred at the Laplace fit; the second with m grown, re-centred at the
#: first's estimate), or one where the estimate is not a strict maximum, end the fit: more
#: draws would not help a proposal that does not cover the posterior.
ESS_COLLAPSE = 5.0
#: The ESS trust region (see the module docstring): a trial point where some block's ESS
#: is below this fraction of its ESS at the round's start (and below ``min_ess``) is outside
#: the region where the round's draws can be trusted ...
ESS_TRUST = 0.25
#: ... and the round ends at the last accepted point once this many trial points were
#: outside (each rejection shrinks scipy's trust radius four-fold first).
TRUST_EXITS = 3
#: ``optimizer_status`` of a round ended by the ESS trust region.
TRUST_STATUS = 10
#: A round ended by the ESS trust region whose estimate moved by more than this many combined
#: Monte Carlo standard errors from its centre (the convergence test's own "still moving"),
#: up an ``l_m`` that it increased, is *progress* toward a maximum beyond its draws' region:
#: it does not count against ``max_rounds``.  At most ``max_rounds`` rounds go uncounted (a
#: fit runs at most twice ``max_rounds`` rounds), none with ``max_rounds=1``, and the time
#: budget still applies.  (A start many region-widths from the MLE, as on VerbAgg's nearly
#: singular ``(1 + Gender | item)``, otherwise spends every round walking there.)
TRUST_PROGRESS_MOVED = 3.0
#: A correlated term whose relative Cholesky diagonal is below this (a correlation beyond
#: +-0.9987 for two effects) where the Hessian is not negative definite is diagnosed as a
#: slope variance the data do not identify (the fit ends; lme4's "singular fit" uses 1e-4
#: at a converged maximum, this is a fit that cannot reach one).
NEAR_SINGULAR = 0.05
#: A fixed effect whose coefficient times its covariate's SD exceeds this (log-odds moving by
#: more than 10 per SD, an odds ratio above 22,000) along a direction that separates the
#: responses within groups (:func:`~glmm_sm.fit.separation.within_group_separation`): the
#: estimate is running off to infinity, and the fit stops.
RUNAWAY_EFFECT = 10.0


class _Objective(CachedObjective):
    """``-l_m`` on the optimizer's ``x = (gamma, log nu)``, every evaluation logged and the
    non-finite ones counted.

    With ``min_ess`` > 0 it bounds the optimizer by the ESS (see the module docstring): the
    first evaluation (the round's start) sets each block's floor,
    ``min(ESS_TRUST * ESS_b, min_ess)``, and a later point where some block's ESS is below
    its floor is *outside*: it gets ``-l_m = inf``, which scipy's trust region rejects
    (shrinking its radius), and is counted in ``n_outside``.
    """

    def __init__(self, engine, tr, log, rnd, min_ess=0.0):
        super().__init__(engine, tr)
        self.log, self.rnd = log, rnd
        self.n_nonfinite = 0
        self.min_ess = float(min_ess)
        self.ess_floor = None  # per block, set by the first evaluation
        self.n_outside = 0
        self.outside_ess = math.inf  # the smallest ESS seen outside
        # Once a trial point was outside, the next ones are evaluated value first where the
        # engine's value-only pass is cheap: outside, the derivatives are never needed.
        self.value_first = bool(getattr(engine, "cheap_value_only", False))
        self._full = {}  # x bytes -> (out, Evaluation) of the inside, full evaluations
        self.first = None  # the Evaluation at the round's start (its draws' centre)

    def on_evaluation(self, theta, out, finite):
        self.n_nonfinite += not finite
        self.log.evaluations.append({"round": self.rnd, "theta": theta, "value": -out[0],
                                     "grad_norm": float(np.linalg.norm(out[1])),
                                     "finite": bool(finite)})

    def evaluation_at(self, x):
        """As :meth:`CachedObjective.evaluation_at`, from this round's full evaluations
        where ``x`` is one of them (a round ended by the trust region ends at an earlier
        point than its last evaluation)."""
        x = np.asarray(x, dtype=np.float64)
        got = self._full.get(x.tobytes())
        if got is None:
            return super().evaluation_at(x)
        self._x, (self._out, self.last) = np.array(x), got
        return self.last

    def _outside_by_value(self, x):
        """A trial point found outside the region by a value-only evaluation: its
        ``(inf, 0, I)`` (logged and counted as :meth:`_eval` does), or None."""
        theta = self.to_theta(x)
        ev = self.engine.evaluate(theta, derivs=False)
        ess = np.asarray(ev.ess, dtype=float)
        if not (np.isfinite(ev.value) and ess.size and not np.all(ess >= self.ess_floor)):
            return None  # inside (or not finite): the full evaluation follows
        self.n_outside += 1
        self.outside_ess = min(self.outside_ess, float(ess.min()))
        self.log.evaluations.append({"round": self.rnd, "theta": theta, "value": ev.value,
                                     "grad_norm": math.nan, "finite": True,
                                     "min_ess": float(ess.min()), "inside": False,
                                     "value_only": True})
        out = (np.inf, np.zeros_like(x), np.eye(len(x)))
        self._x, self._out, self.last = np.array(x), out, ev
        return out

    def _eval(self, x):
        new = self._x is None or not np.array_equal(x, self._x)
        if (new and self.value_first and self.n_outside and self.min_ess > 0
                and self.ess_floor is not None):
            out = self._outside_by_value(x)
            if out is not None:
                return out
        out = super()._eval(x)
        if self.first is None and self.last is not None:
            self.first = self.last
        if not new or self.min_ess <= 0 or self.last is None:
            return out
        ess = np.asarray(self.last.ess, dtype=float)
        rec = self.log.evaluations[-1]
        rec["min_ess"] = float(ess.min()) if ess.size else math.inf
        if self.ess_floor is None:
            with np.errstate(invalid="ignore"):
                self.ess_floor = np.fmin(ESS_TRUST * ess, self.min_ess)
            if np.isfinite(out[0]):
                self._full[np.asarray(x, dtype=np.float64).tobytes()] = (out, self.last)
            return out
        inside = bool(np.all(ess >= self.ess_floor))
        rec["inside"] = inside
        if not inside and np.isfinite(out[0]):
            # Outside the draws' trust region: a trial point the trust region rejects.
            self.n_outside += 1
            self.outside_ess = min(self.outside_ess, float(ess.min()))
            out = (np.inf, np.zeros_like(x), np.eye(len(x)))
            self._out = out
        elif np.isfinite(out[0]):
            self._full[np.asarray(x, dtype=np.float64).tobytes()] = (out, self.last)
        return out


def _maximize(engine, start, tr, opts, log, rnd):
    """Maximize ``l_m`` from ``start``: ``(theta, optimizer result, Evaluation at theta)``.

    A linear-algebra failure inside the optimizer ends the round as an optimizer failure
    (status -1, its message kept) at the best point seen, instead of reaching the user.
    """
    obj = _Objective(engine, tr, log, rnd, opts.min_ess)
    x0 = tr.to_x(start)
    n_vc = engine.data.k_vcp  # log alpha (negative binomial) may go low: Poisson's boundary
    lognu_min = math.log(opts.boundary_tol) if opts.boundary_tol > 0 else -math.inf
    if tr.cov is not None:
        # Correlated terms: no boundary procedure (a singular fit is flagged at the end).
        lognu_min = -math.inf

    at_max, left_region = [], []
    tol = PILOT_STOP_STEP if _is_pilot(rnd, opts) else STOP_STEP
    # a deterministic round far from its centre: a looser stop (FAR_STEP_FRACTION)
    centre = start if opts.sampler == "quadrature" else None

    def at_edge(intermediate_result):
        # A variance on its way to 0 (log nu -> -inf) would take every remaining iteration;
        # below boundary_tol the round stops and the boundary procedure takes over.
        x = intermediate_result.x
        if np.any(x[tr.p : tr.p + n_vc] < lognu_min):
            raise StopIteration
        # At a maximum to far below the Monte Carlo error: the steps that remain (towards
        # gtol, or against the gradient's roundoff floor) would each cost an evaluation
        # and move the estimate by less than STOP_STEP of its MCSE (PILOT_STOP_STEP in the
        # first round, which is centred at the Laplace fit and only places the next one).
        if (obj._x is not None and np.array_equal(x, obj._x)
                and _near_maximum(obj.last, tol, centre, obj.to_theta(x))):
            at_max.append(True)
            raise StopIteration
        # The maximum of l_m on these draws lies where their weights are not to be trusted:
        # the round ends here, and the next one draws afresh at this point.
        if obj.n_outside >= TRUST_EXITS:
            left_region.append(True)
            raise StopIteration

    try:
        res = minimize(obj.fun, x0, jac=obj.jac, hess=obj.hess, method="trust-exact",
                       callback=at_edge, options={"gtol": opts.gtol, "maxiter": opts.maxiter})
    except (np.linalg.LinAlgError, FloatingPointError) as exc:
        x = obj._x if obj._x is not None and np.isfinite(obj._out[0]) else x0
        res = OptimizeResult(x=x, success=False, status=-1, nit=0,
                             message=f"trust-exact failed: {type(exc).__name__}: {exc}")
    if at_max:
        res.success, res.status = True, 0
        res.message = (f"at a maximum: the remaining Newton step is below {tol:g} Monte "
                       "Carlo standard errors")
    elif left_region:
        res.success, res.status = False, TRUST_STATUS
        res.message = (f"left the draws' trust region: {obj.n_outside} trial steps reached "
                       f"points where a block's ESS fell below its floor (down to "
                       f"{obj.outside_ess:.1f}; floor min({ESS_TRUST:g} x the ESS at the "
                       f"round's start, min_ess={opts.min_ess:g})); the round ends at the "
                       "last point inside, where the next round draws afresh")
    ev = obj.evaluation_at(res.x)
    res.n_nonfinite = obj.n_nonfinite
    res.n_outside = obj.n_outside
    res.start_evaluation = obj.first
    return tr.to_theta(res.x), res, ev


def _is_pilot(rnd, opts):
    """Whether round ``rnd`` is a pilot: the first, centred at the Laplace fit, when more
    rounds may follow (it then only places the next round and is never the final one)."""
    return rnd == 0 and opts.max_rounds > 1


def _near_maximum(ev, tol, centre=None, theta=None):
    """:func:`_at_maximum` from an Evaluation alone (False where it has no Hessian).

    With ``centre`` (a deterministic round's, ``ev`` at ``theta``): where ``theta`` is more
    than :data:`FAR_ROUND_SE` standard errors from it, ``tol`` is at least that distance
    times :data:`FAR_STEP_FRACTION` (in the units of :func:`_at_maximum`'s ``tol``)."""
    if ev is None or ev.hessian is None or not np.all(np.isfinite(ev.hessian)):
        return False
    err = information_errors(ev.hessian, ev.score_var)
    if centre is not None and err.positive_definite:
        far = _distance_in_se(ev, centre, theta, err)
        if far > FAR_ROUND_SE:
            tol = max(tol, FAR_STEP_FRACTION * far / MOVE_FLOOR_SE)
    return _at_maximum(ev, err, _mcse(err.mcse_cov), tol)


def _distance_in_se(ev, centre, theta, err=None):
    """The largest ``|theta - centre|`` in the standard errors of ``ev``'s Hessian (at
    ``theta``; ``err`` its :func:`information_errors` where known), over the parameters
    with a finite SE; 0 where ``ev`` has no finite, negative definite Hessian."""
    if err is None:
        if ev is None or ev.hessian is None or not np.all(np.isfinite(ev.hessian)):
            return 0.0
        err = information_errors(ev.hessian, ev.score_var)
    if not err.positive_definite:
        return 0.0
    se = np.sqrt(np.diag(err.cov))
    with np.errstate(divide="ignore", invalid="ignore"):
        far = np.abs(np.asarray(theta, dtype=float) - centre) / se
    return float(np.max(far, initial=0.0, where=np.isfinite(far)))


def _at_maximum(ev, errors, mcse, tol=1e-2):
    """Whether ``ev`` is at a maximum to far below Monte Carlo error, though the optimizer
    stopped short of ``gtol`` (badly scaled designs leave a roundoff floor in the gradient):
    the Hessian is negative definite and the remaining Newton step is below ``tol`` times
    the larger of the MCSE and 1% of the SE.
    """
    H, g = ev.hessian, ev.gradient
    if H is None or not errors.positive_definite or not np.all(np.isfinite(g)):
        return False
    step = errors.cov @ g  # -H^{-1} g, the Newton step
    se = np.sqrt(np.diag(errors.cov))
    return bool(np.all(np.abs(step) <= tol * np.maximum(mcse, MOVE_FLOOR_SE * se)))


def _mcse(mcse_cov):
    """Square roots of the diagonal of a Monte Carlo covariance ``H^{-1} V H^{-1}``.

    The sandwich is positive semi-definite by construction (``V`` is a sum of outer
    products), so a negative diagonal entry is roundoff around 0 and is read as 0.
    """
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.maximum(np.diag(mcse_cov), 0.0))


def mcmle(model, opts: FitOptions, random_state=None, start_params=None, callback=None,
          disp=True, client=None):
    """Monte Carlo MLE of ``model``; see the module docstring for the rounds.

    ``client`` (a ``dask.distributed.Client``) evaluates the Monte Carlo sums on its workers;
    the estimates are the same as without it.
    """
    seed = as_seed_sequence(random_state)
    if opts.sampler == "auto":
        used, why = resolve_sampler(model, opts)
        opts = replace(opts, sampler=used, sampler_reason=why)
    check_draw_budget(opts, model.arrays.X.shape[0])
    _check_memory(model, opts, client)
    separated = _check_separation(model)
    if separated is not None:
        # No finite MLE: more rounds would only follow the estimate out, growing m to the
        # time budget.  One round gives the results their draws; the fit ends unconverged.
        opts = replace(opts, max_rounds=1)
    runaway = None if separated is not None else _within_separation(model)
    if opts.time_budget is not None and opts.deadline is None:
        opts = replace(opts, deadline=time.perf_counter() + opts.time_budget)
    # Small dense algebra only: BLAS threads cost far more than they gain here.
    with threadpool_limits(1, user_api="blas"):
        outcome = _mcmle(model, opts, seed, start_params, callback, disp, client, runaway)
        decided = False
        if (outcome.boundary and opts.sampler == "quadrature"
                and not model.design.cov.has_vector):
            # A deterministic fit decides the boundary deterministically: the reduced model
            # refitted by quadrature where its structure allows it, the one-sided
            # derivatives at 0 exact (MCSE 0); no draws.
            outcome = _quadrature_boundary(model, outcome, opts, callback, disp, client)
            decided = True
        if outcome.boundary and opts.sampler == "quadrature" and not decided:
            # The boundary procedure weighs the evidence for a variance at 0 with joint
            # draws (its one-sided derivative and that derivative's MCSE): importance
            # sampling from here on, recorded.
            log = outcome.log
            opts = replace(opts, sampler="laplace", sampler_options={
                k: v for k, v in opts.sampler_options.items()
                if k not in ("n_nodes", "outer_nodes", "recentre")}, sampler_reason=(
                f"{log.sampler.get('reason', '')}; a variance went to 0 "
                f"({log.message}): the boundary procedure needs draws, so the fit "
                "importance-samples (sampler='laplace')"))
            outcome = _mcmle(model, opts, seed, start_params, callback, disp, client, runaway)
            outcome.log.warnings[:0] = [w for w in log.warnings
                                        if w not in outcome.log.warnings]
        if outcome.boundary and not decided:
            first = outcome

            def refit(reduced, seed, start, m_start=None, inside=False):
                o = replace(opts, rao_blackwell=False)  # boundary scores need joint draws
                if m_start is not None:
                    o = replace(o, m_start=int(m_start))
                # The full model with components put back (their one-sided derivative at
                # 0 said they are inside, beyond its MCSE): its rounds start at the put-back
                # start, not at its Laplace fit, which sends them to 0 again where Laplace
                # underestimates them and ends the fit before its first round (as
                # _quadrature_boundary); one put back on ambiguous evidence starts at the
                # Laplace fit, which has the last word (fit_with_boundary)
                centre = _put_back_centre(model, reduced, start, inside)
                out = _mcmle(reduced, o, seed, start, callback, disp, client, centre=centre)
                if centre is not None and not out.log.laplace:
                    out.log.laplace = first.log.laplace
                return out

            outcome = fit_with_boundary(model, outcome, refit, opts)
    if (opts.sampler == "quadrature" and not outcome.boundary and not outcome.log.hopeless
            and separated is None):
        # (a hopeless fit or one without a finite MLE ends where it stopped: no finer rule
        # can give it an estimate)
        outcome = _refine_quadrature(model, outcome, opts, seed, callback, disp, client)
    if not outcome.log.sampler:  # the boundary procedure's log: the sampler of the fit
        outcome.log.sampler = {"used": opts.sampler, "reason": opts.sampler_reason
                               or f"sampler={opts.sampler!r} given"}
    if outcome.engine is not None:
        outcome.engine.detach()
    if separated is not None:
        outcome.converged = False
        outcome.log.message = (f"{separated}. The fit stopped after its first round (more "
                               "rounds would only follow the estimate out)")
        outcome.log.hopeless = outcome.log.message
    _warn_hessian(model, outcome)
    _flag_singular(model, outcome)
    if not outcome.converged:
        _warn_unconverged(outcome.log, opts)
    for text in outcome.log.warnings:
        warnings.warn(text, ConvergenceWarning, stacklevel=3)
    return outcome


#: The one-sided derivative of a deterministic fit at ``nu_t = 0`` is extrapolated from the
#: exact quadrature gradients at ``nu_t = eps`` and ``2 eps`` (``2 g(eps) - g(2 eps)``, error
#: ``O(eps^2)``), ``eps`` this variance.
QUADRATURE_BOUNDARY_EPS = 1e-6


def _quadrature_boundary(model, first, opts, callback, disp, client):
    """The boundary procedure of a deterministic (quadrature) fit whose variance(s) went to
    0 (:func:`~glmm_sm.fit.boundary_refit.fit_with_boundary` with no draws): the model
    without them is refitted with ``sampler="auto"`` (a deterministic fit where its
    structure allows it, else importance sampling without Rao-Blackwellization, as the Monte
    Carlo procedure does), and each dropped component's one-sided derivative of the
    log-likelihood at 0 is computed on the full model's quadrature at the reduced estimate
    (:data:`QUADRATURE_BOUNDARY_EPS`): at most 0, the component stays at 0; above 0 it is
    put back.  The evidence is recorded as the Monte Carlo procedure records its own
    (``log.boundary_evidence``), with MCSE 0 and ``m = 0`` (exact)."""
    factorize = model.factorize if opts.factorize is None else bool(opts.factorize)
    n_jobs = effective_n_jobs(opts.n_jobs)

    def refit(reduced, seed, start, m_start=None, inside=False):
        used, why = resolve_sampler(reduced, replace(opts, sampler="auto", m="auto"))
        if used == "quadrature":
            o = replace(opts, sampler="quadrature", sampler_reason=(
                f"{why}; the model without the variance component(s) at 0, fitted "
                "deterministically (the boundary decided from exact derivatives, no draws)"))
        else:
            o = replace(opts, sampler="laplace", rao_blackwell=False, sampler_options={
                k: v for k, v in opts.sampler_options.items()
                if k not in ("n_nodes", "outer_nodes", "recentre")}, sampler_reason=(
                f"{why}; the model without the variance component(s) at 0 is not "
                "deterministic: importance sampling (sampler='laplace')"))
            if m_start is not None:
                o = replace(o, m_start=int(m_start))
        # The full model with components put back (their exact derivative at 0 said they
        # are inside): its rounds start at the put-back start, not at its Laplace fit,
        # which sends them to 0 again where Laplace underestimates them (and a Laplace
        # estimate at the boundary ends a fit before its first round)
        centre = _put_back_centre(model, reduced, start, inside)
        out = _mcmle(reduced, o, seed, start, callback, disp, client, centre=centre)
        if centre is not None and not out.log.laplace:
            out.log.laplace = first.log.laplace
        if o.sampler == "quadrature" and not out.boundary and not out.log.hopeless:
            # the reduced fit's quadrature error, measured as a default fit's is
            out = _refine_quadrature(reduced, out, o, seed, callback, disp, client)
        return out

    def evidence_of(full, drop, outcome):
        if outcome.log.sampler.get("used") != "quadrature":
            return None  # Monte Carlo evidence on the reduced fit's draws
        d = quadrature_boundary_derivatives(full, drop, outcome.params, opts, factorize,
                                            n_jobs, first.seed)
        return [BoundaryEvidence(full.vcp_names[t], float(dt), 0.0, 0.0, 0.0, 0,
                                 boundary_decision(float(dt), 0.0))
                for t, dt in zip(drop, d, strict=True)]

    return fit_with_boundary(model, first, refit, opts, evidence_of=evidence_of)


def _put_back_centre(model, reduced, start, inside):
    """The first centre of a boundary refit: ``start`` when the refit is of the full
    ``model`` itself with every variance positive and the components just put back are
    inside by their evidence (``inside``; always so for the exact evidence of a
    deterministic fit), else None (the refit's own Laplace fit)."""
    k = model.k_fe + model.k_vcp
    if inside and reduced is model and start is not None and np.all(
            np.asarray(start, dtype=float)[model.k_fe:k] > 0):
        return np.asarray(start, dtype=float)
    return None


def quadrature_boundary_derivatives(model, drop, red_params, opts, factorize, n_jobs, seed):
    """Exact (to quadrature accuracy) one-sided derivatives ``d l / d nu_t`` at ``nu_t = 0``
    for the components ``drop``, at the estimate ``red_params`` of the model without them
    (its fixed effects, kept variances, then the family's parameters).

    The full model's quadrature (:func:`~glmm_sm.mcla.rb.round.rb_round` with
    ``sampler="quadrature"``) is placed at the reduced estimate with the dropped variances at
    ``eps`` = :data:`QUADRATURE_BOUNDARY_EPS`, and again at ``2 eps``; the exact gradients
    there are extrapolated to 0 (``2 g(eps) - g(2 eps)``).

    Returns
    -------
    ndarray (len(drop),)
    """
    p, T = model.k_fe, model.k_vcp
    keep = [t for t in range(T) if t not in drop]
    red_params = np.asarray(red_params, dtype=float)
    theta = np.zeros(len(red_params) + len(drop))
    theta[:p] = red_params[:p]
    theta[p + np.array(keep, dtype=int)] = red_params[p : p + len(keep)]
    theta[p + T :] = red_params[p + len(keep) :]
    idx = p + np.asarray(drop, dtype=int)
    eps = QUADRATURE_BOUNDARY_EPS
    qopts = replace(opts, sampler="quadrature")
    structure = rb_structure(model, qopts, factorize, None)
    g = []
    for h in (eps, 2 * eps):
        # the rule placed at each point (a rule placed at eps integrates the variance's
        # score at 2 eps poorly: its nodes are sqrt(2) too narrow there)
        theta[idx] = h
        _, engine = rb_round(model, structure, theta, None, factorize, 1, seed, qopts, n_jobs)
        g.append(engine.evaluate(theta).gradient[idx])
        engine.detach()
    return 2 * g[0] - g[1]


#: A deterministic fit's quadrature error is acceptable below this many standard errors
#: (the Monte Carlo fits' target_ratio default).
QUADRATURE_TOL_SE = 0.1
#: A deterministic fit's rounds stop once the estimate moves by less than
#: :data:`QUADRATURE_TOL_SE` standard errors and by more than this fraction of the round
#: before's movement (see :meth:`_RoundState._record`).
STALL_SHRINK = 0.5
#: Refits with a finer rule (twice the inner nodes, 1.5 times the outer) while the error is
#: larger, at most this many times.
QUADRATURE_REFINE = 2


def _refine_quadrature(model, outcome, opts, seed, callback, disp, client):
    """Measure the deterministic fit's quadrature error (:func:`_quadrature_error`) and,
    while it exceeds :data:`QUADRATURE_TOL_SE`, refit from the estimate with the finer rule
    (at most :data:`QUADRATURE_REFINE` times); the last measurement is kept and a warning
    issued if it still exceeds the tolerance.  Every refit is recorded in the fit log."""
    history = []  # the measurements that asked for a finer rule
    for k in range(QUADRATURE_REFINE + 1):
        check = _quadrature_error(model, outcome, opts, warn=k == QUADRATURE_REFINE)
        finer = None if check is None else check.options
        if finer is None or k == QUADRATURE_REFINE:
            break
        history.append(dict(outcome.log.quadrature))
        opts = replace(opts, sampler_options={**opts.sampler_options, **finer})
        log = outcome.log
        theta = np.asarray(outcome.params, dtype=float)
        # the refit's rounds start at the estimate (not at the Laplace fit: on guPrenat that
        # is a mother variance of 330 against 49, five rounds away)
        # its first round's rule is the finer rule the measurement placed at the estimate:
        # that engine (and its evaluation there, where the measurement made a full one: the
        # nested rule's measurement takes the gradient alone) is the round's
        refit = _mcmle(model, opts, seed, theta, callback, disp, client, centre=theta,
                       first_rule=check)
        if refit.boundary or refit.evaluation is None:
            break
        # one log for the whole fit: the refit's rounds follow the first fit's
        log.rounds.extend(refit.log.rounds)
        log.evaluations.extend(refit.log.evaluations)
        log.warnings.extend(w for w in refit.log.warnings if w not in log.warnings)
        log.message = f"{refit.log.message} (refit with {finer} nodes)"
        refit.log = log
        if outcome.engine is not None:
            outcome.engine.detach()
        outcome = refit
        outcome.sampler_options = dict(opts.sampler_options)
    if history and outcome.log.quadrature:
        outcome.log.quadrature["refinements"] = history
    return outcome


def _outer_modes(engine):
    """The outer modes of a two-level deterministic rule's engine (its sampler's
    ``outer_modes``, where the next rule's start), or None for the other rules."""
    return getattr(getattr(engine, "sampler", None), "outer_modes", None)


class _FinerRule(NamedTuple):
    """What :func:`_quadrature_error` returns when a finer rule is needed: its
    ``sampler_options`` (``options``), the ``engine`` of that rule placed at the estimate
    (the refit's first round, :func:`_mcmle`'s ``first_rule``), the joint conditional
    modes it was placed with (``mode_u``, where the refit's next rule starts its own) and
    where its outer modes started (``outer_start``: the measured fit's last rule's; a
    refit that places that rule itself starts there too, for the same rule)."""

    options: dict
    engine: object
    mode_u: object
    outer_start: object = None


def _quadrature_error(model, outcome, opts, warn=True):
    """The quadrature error of a deterministic fit, measured: the Newton step from the
    estimate under a finer rule (twice the inner nodes, 1.5 times the outer ones), in
    standard errors, and the change of the log-likelihood; in ``outcome.log.quadrature``.
    When the step exceeds :data:`QUADRATURE_TOL_SE` (the MCSE of 0 would otherwise hide
    it): returns a ``_FinerRule``, the finer rule's ``sampler_options`` and its engine
    at the estimate (and, with ``warn``, adds a warning); None otherwise."""
    from glmm_sm.mcla.rb.split import N_NODES, OUTER_NODES

    ev = outcome.evaluation
    if outcome.engine is None or ev is None or ev.hessian is None:
        return None
    so = opts.sampler_options
    if getattr(outcome.engine.structure, "vector", False):  # nodes per dimension
        from glmm_sm.mcla.rb.vector import N_NODES_VECTOR as N_NODES
    if getattr(outcome.engine.structure, "deep", False):  # a tree of depth >= 3
        from glmm_sm.mcla.rb.deep import DEEP_NODES as N_NODES
        from glmm_sm.mcla.rb.deep import DEEP_OUTER_NODES as OUTER_NODES
    rule = (int(so.get("n_nodes", N_NODES)), int(so.get("outer_nodes", OUTER_NODES)))
    finer = (2 * rule[0], (3 * rule[1] + 1) // 2)
    fopts = replace(opts, sampler_options={**so, "n_nodes": finer[0], "outer_nodes": finer[1]})
    factorize = model.factorize if opts.factorize is None else bool(opts.factorize)
    theta = np.asarray(outcome.params, dtype=float)
    # the joint conditional modes the rule is placed with (as rb_round finds them; kept
    # for a refit's next rule)
    mode = centre_mode(model, centre_system(model, factorize, theta), theta)
    outer_start = _outer_modes(outcome.engine)
    _, engine = rb_round(model, outcome.engine.structure, theta, mode, factorize, finer[1],
                         outcome.seed, fopts, effective_n_jobs(opts.n_jobs),
                         outer_start=outer_start)
    # only the finer rule's gradient is needed (the step takes the fit's Hessian): an
    # engine that can leave its Hessian out does (the nested rule's, the same bits)
    score_only = getattr(engine, "evaluate_score", None)
    fine = engine.evaluate(theta) if score_only is None else score_only(theta)
    engine.detach()  # (a local engine: no client to drop, as the rounds' own)
    H = ev.hessian
    try:
        cov = np.linalg.inv(-H)
        step = -np.linalg.solve(H, fine.gradient)
    except np.linalg.LinAlgError:
        return None
    se = np.sqrt(np.abs(np.diag(cov)))
    with np.errstate(divide="ignore", invalid="ignore"):
        in_se = np.abs(step) / se
    worst = float(np.nanmax(in_se)) if in_se.size else 0.0
    outcome.log.quadrature = {"nodes": rule, "finer_nodes": finer,
                              "step_in_se": in_se.tolist(), "max_step_in_se": worst,
                              "llf_change": float(fine.value - ev.value)}
    if worst <= QUADRATURE_TOL_SE:
        return None
    if warn:
        names = list(model.data.param_names)
        j = int(np.nanargmax(in_se))
        if getattr(outcome.engine.structure, "vector", False):
            what = (f"{finer[0]} nodes per dimension of each level's tensor rule against "
                    f"{rule[0]}")
        else:
            what = f"{finer[0]} inner x {finer[1]} outer nodes against {rule[0]} x {rule[1]}"
        outcome.log.warnings.append(
            f"the quadrature error of this deterministic fit is not negligible: a finer rule "
            f"({what}) moves "
            f"{names[j]!r} by {worst:.2g} standard errors and the log-likelihood by "
            f"{fine.value - ev.value:.3g}; refit with sampler_options={{'n_nodes': "
            f"{finer[0]}, 'outer_nodes': {finer[1]}}} or more, and compare")
    return _FinerRule({"n_nodes": finer[0], "outer_nodes": finer[1]}, engine, mode.u,
                      outer_start)


def _flag_singular(model, outcome):
    """With correlated terms: a warning naming each covariance matrix that is singular at
    the estimate (a variance at 0 or a correlation at +-1), lme4's "boundary (singular)
    fit"; the names go to ``outcome.singular``."""
    cov = model.design.cov
    if not cov.has_vector:
        return
    names = singular_terms(cov, outcome.params[model.k_fe : model.k_fe + model.k_vcp],
                           model.vcp_names)
    outcome.singular = names
    if names:
        outcome.log.warnings.append(
            f"boundary (singular) fit: the covariance of {names} is singular at the estimate "
            "(a variance at 0 or a correlation at +-1; relative Cholesky diagonal below "
            f"{SINGULAR_TOL:g}); Wald standard errors there are not reliable: simplify the "
            "random-effects structure (e.g. || for independent effects)")


def _check_separation(model):
    """Warn (statsmodels' PerfectSeparationWarning) when the fixed-effects MLE does not exist;
    the text for the fit log, or None."""
    a = model.arrays
    d = separation_direction(a.X, a.y, a.ntrials, a.weights, a.family.code)
    if d is None:
        return None
    names = list(model.exog_names)
    which = [f"{names[j]} ({'+' if d[j] > 0 else '-'})" for j in np.flatnonzero(d)]
    if a.family.code == 0 and np.all(a.y[a.weights > 0] == 0):
        kind = "every response is 0 (no successes)"
    elif a.family.code == 0 and np.all((a.y == a.ntrials)[a.weights > 0]):
        kind = "every response is a success"
    elif a.family.code == 1 and np.all(a.y[a.weights > 0] == 0):
        kind = "every count is 0"
    else:
        kind = "perfect separation"
    text = (f"the maximum likelihood estimate does not exist ({kind}): the likelihood keeps "
            f"increasing as the fixed effect(s) {which} go to +-infinity, so their estimates "
            "and standard errors only say where the optimizer stopped. Drop or merge the "
            "separating covariate or level, or use a penalized (Bayesian) fit")
    warnings.warn(text, PerfectSeparationWarning, stacklevel=4)
    return text


def _within_separation(model):
    """The covariates and components of a separation within groups
    (:func:`~glmm_sm.fit.separation.within_group_separation`), or None."""
    a = model.arrays
    found = within_group_separation(a.X, a.Z, a.y, a.ntrials, a.weights, a.family.code)
    if found is None:
        return None
    cols = np.flatnonzero(found.fixed)
    sd = a.X[:, cols].std(axis=0)
    comps = [model.design.vcp_names[t] for t in np.unique(a.ident[found.columns])]
    return {"columns": cols, "scale": np.where(sd > 0, sd, 1.0),
            "covariates": [model.exog_names[j] for j in cols], "components": comps}


def _warn_hessian(model, outcome):
    """ConvergenceWarning when ``-H`` is not positive definite at the final estimate."""
    ev = outcome.evaluation
    if outcome.cov is not None or ev is None or ev.hessian is None:
        return
    err = information_errors(ev.hessian, ev.score_var)
    if err.positive_definite:
        return
    names = list(model.data.param_names)
    bad = [names[j] for j in np.flatnonzero(err.bad)]
    outcome.converged = False
    outcome.log.message = ("the Hessian of the log-likelihood is not negative definite at "
                           f"the estimate (directions involving {bad}); "
                           + outcome.log.message)
    warnings.warn(f"the Hessian of the Monte Carlo log-likelihood is not negative definite "
                  f"at the estimate: it is not a strict maximum in the directions involving "
                  f"{bad}, whose standard errors are reported as NaN. Causes: parameters "
                  "that are not identified (aliased random effects, a variance component "
                  "with too few levels), a fit stopped short (increase m or max_rounds), or "
                  "a maximum on the boundary", ConvergenceWarning, stacklevel=4)


def _check_memory(model, opts, client):
    """Refuse, before the Laplace fit and any draw, a fit whose first round's evaluation
    cannot fit ``memory_budget`` (:func:`~glmm_sm.mcla.memory.check_fit_memory`).  Not
    with a Dask client: its workers hold the draws and run the kernels."""
    if client is not None:
        return
    factorize = model.factorize if opts.factorize is None else bool(opts.factorize)
    structure = rb_structure(model, opts, factorize, None, notes=[])
    check_fit_memory(model.layout_data(factorize), structure, opts, _first_m(opts, structure),
                     effective_n_jobs(opts.n_jobs), opts.per_block_m and opts.m == "auto")


def _first_m(opts, structure):
    """The first round's m: the fixed ``m``, else ``m_start`` (by default
    ``M_START``, or for a Rao-Blackwellized ``structure`` its ``rb_m_start``) capped at
    ``max_m``."""
    if opts.m != "auto":
        return int(opts.m)
    m = opts.m_start
    if m is None:
        m = rb_m_start(structure, M_START_RB) if structure is not None else M_START
    return min(m, opts.max_m)


def _mcmle(model, opts, seed, start_params, callback, disp, client, runaway=None,
           centre=None, first_rule=None):
    """The rounds; stops early (``outcome.boundary``) when a variance goes to 0, and
    (unconverged, saying why) when the fit is hopeless (:meth:`_RoundState._hopeless`);
    ``runaway``: a separation within groups (:func:`_within_separation`); ``centre``: the
    first round's centre where it is not the Laplace fit (a deterministic fit refined from
    its estimate); ``first_rule``: a deterministic rule already placed at ``centre`` with
    ``opts``' nodes (the quadrature error measurement's ``_FinerRule``), whose engine the
    first round uses instead of placing the same rule again."""
    t_start = time.perf_counter()
    log = FitLog(seed_entropy=seed.entropy)
    log.sampler = {"used": opts.sampler,
                   "reason": opts.sampler_reason or f"sampler={opts.sampler!r} given"}
    p = model.k_fe
    factorize = model.factorize if opts.factorize is None else bool(opts.factorize)
    t0, c0 = time.perf_counter(), _cpu_clock()
    if centre is not None:
        lapfit = None
        lap, mode = np.asarray(centre, dtype=float), None
    else:
        lapfit = laplace_fit(model.block_system(factorize), start_params)
        lap, mode = lapfit.params, lapfit.mode
        log.laplace = {**lapfit.record(), "seconds": time.perf_counter() - t0,
                       "cpu_seconds": _cpu_clock() - c0}
        log.warnings.extend(lapfit.notes)  # whitening not done, precisions not PD
    if lapfit is not None and not lapfit.ok:
        log.warnings.append(
            "the Laplace step (start values and sampler centre) ended without converged "
            f"conditional modes or with a non-finite value ({lapfit.info.message}); the "
            "Monte Carlo rounds start from it anyway: check the fit, or give start_params")
    kc = p + model.k_vcp  # the negative binomial's alpha after the variances
    zero = not model.design.cov.has_vector and at_boundary(lap[p:kc], opts.boundary_tol)
    if zero:
        log.message = "Laplace estimate at the boundary"
        return FitOutcome(lap, None, None, log, False, seed, boundary=zero)
    state = _RoundState(model, opts, seed, factorize, client, log, t_start, lap, mode)
    state.runaway = runaway
    if first_rule is not None and state.rb is not None and centre is not None:
        state.first_engine, state.mode_u = first_rule.engine, first_rule.mode_u
        state.outer_v = first_rule.outer_start
    bar = _progress(disp, opts.max_rounds)
    try:
        rnd = counted = 0
        while counted < opts.max_rounds:
            if state.round(rnd, callback, bar):
                break
            counted += not state.trust_progress()
            rnd += 1
        else:
            log.message = f"no convergence in max_rounds={opts.max_rounds} rounds" + (
                f" (and {rnd - counted} more ended by the ESS trust region while making "
                "progress)" if rnd > counted else "")
    except KeyboardInterrupt:
        if state.outcome is None:
            raise
        log.message = f"interrupted during round {len(log.rounds)}; returning round " \
                      f"{len(log.rounds) - 1}"
        warnings.warn(log.message, UserWarning, stacklevel=3)
    finally:
        bar.close()
    return state.outcome


class _RoundState:
    """What carries from one Monte Carlo round to the next: centre, m, MCSEs, history."""

    #: Per-block draw counts (``FitOptions.per_block_m``; a subclass that sets up its own
    #: rounds, as the partitioned fit's, has none).
    per_block = False
    block_m = None
    #: The first round's engine where it is given (:func:`_mcmle`'s ``first_rule``).
    first_engine = None

    def __init__(self, model, opts, seed, factorize, client, log, t_start, lap, mode):
        self.model, self.opts, self.seed, self.factorize = model, opts, seed, factorize
        self.client, self.log, self.t_start = client, log, t_start
        # The time budget covers the whole fit, boundary refits included.
        self.deadline = opts.deadline
        if self.deadline is None and opts.time_budget is not None:
            self.deadline = t_start + opts.time_budget
        self.n_jobs = effective_n_jobs(opts.n_jobs)
        # The Gram matrix summed block by block (the same bits with the data in pieces).
        self.tr = ParamTransform.for_layout(model.layout_data(factorize),
                                            model.k_vcp + model.k_fam, cov=model.design.cov)
        self.rb = rb_structure(model, opts, factorize, client, notes=log.warnings)
        if self.rb is not None:
            log.rao_blackwell = rb_record(model, self.rb)
        self.centre, self.centre_mode = lap, mode
        # the conditional modes of the last rule placed (a deterministic fit's next rule
        # starts its modes' Newton iterations there: _warm_mode)
        self.mode_u = None if mode is None else mode.u
        # the outer modes of the last two-level deterministic rule (the next rule's
        # Newton iterations start there: _outer_modes)
        self.outer_v = None
        self.m = _first_m(opts, self.rb)
        self.prev_mcse = None
        self.outcome = None
        self.runaway, self.collapsed = None, 0
        # Per-block draw counts (mcla.block_m): from the second round on, allocated from
        # the last round's blocks' MCSE terms; None: every block uses all m.
        self.block_m, self._alloc = None, None
        self.per_block = bool(opts.per_block_m)
        if self.per_block:
            why = ("m is fixed" if opts.m != "auto" else
                   "the fit is Rao-Blackwellized or deterministic" if self.rb is not None
                   else "")
            if why:
                self.per_block = False
                log.warnings.append(f"per_block_m=True is not used: {why} (per-block draw "
                                    "counts need m='auto' and the plain importance-sampling "
                                    "engine); every block used the same m")
        if self.per_block:
            self.rows = np.diff(model.layout_data(factorize).obs_ptr).astype(float)
        self.uncounted = 0  # rounds not counted against max_rounds (trust_progress)

    def trust_progress(self):
        """Whether the last round is not counted against ``max_rounds``: ended by the ESS
        trust region after moving its estimate by more than :data:`TRUST_PROGRESS_MOVED`
        combined MCSEs up an ``l_m`` it increased, while fewer than ``max_rounds`` rounds
        went uncounted (never with ``max_rounds=1``).  Recorded in the round's log entry
        (``counted``)."""
        log, opts = self.log, self.opts
        info = log.rounds[-1]
        evs = [e["value"] for e in log.evaluations
               if e["round"] == info["round"] and e.get("inside", True) and e["finite"]]
        gained = len(evs) > 1 and info["value"] > evs[0]
        free = (opts.max_rounds > 1 and self.uncounted < opts.max_rounds
                and info["optimizer_status"] == TRUST_STATUS
                and info["moved"] > TRUST_PROGRESS_MOVED and bool(gained))
        self.uncounted += free
        info["counted"] = not free
        return free

    def _run(self, rnd):
        """Round ``rnd``'s engine on fresh draws, and the maximum on them."""
        opts, log = self.opts, self.log
        if rnd == 0 and self.first_engine is not None:
            # a deterministic rule placed at this centre already (no draws: the seed is not
            # used), with its evaluation there where the measurement kept one
            engine, self.first_engine = self.first_engine, None
            draws = engine.draws
        elif self.rb is not None:
            mode = self.centre_mode
            if mode is None and opts.sampler == "quadrature":
                mode = self._warm_mode(self.centre)
            draws, engine = rb_round(self.model, self.rb, self.centre, mode,
                                     self.factorize, self.m, child_seed(self.seed, rnd), opts,
                                     self.n_jobs, pilot=_is_pilot(rnd, opts),
                                     reserve=self._reserve(), outer_start=self.outer_v)
        else:
            smp = self.model.make_sampler(self.centre, opts.sampler, self.factorize,
                                          mode=self.centre_mode, **opts.sampler_options)
            draws = DrawSet.from_sampler(smp, self.m, child_seed(self.seed, rnd),
                                         opts.memory_budget, materialize=self.client is None,
                                         n_jobs=self.n_jobs, reserve=self._reserve())
            engine = MCLAEngine(draws, opts.kernel, opts.chunk_size, self.n_jobs, self.client)
            if self.per_block:
                engine.keep_block_var = True
                engine.set_block_m(self.block_m)
        if opts.sampler == "quadrature":  # the nodes: set by the sampler, never grown
            self.m = draws.m
            self.outer_v = _outer_modes(engine)
        theta, res, ev = _maximize(engine, self.centre, self.tr, opts, log, rnd)
        return engine, theta, res, ev

    def _reserve(self):
        """The bytes this round's evaluation needs beside its stored draws
        (:attr:`MemoryPlan.reserve <glmm_sm.mcla.memory.MemoryPlan.reserve>`): the draws
        are stored only where both fit ``memory_budget``.  0 with a Dask client (its
        workers hold the draws)."""
        if self.client is not None:
            return 0
        return fit_plan(self.model.layout_data(self.factorize), self.rb, self.opts, self.m,
                        self.n_jobs, self.per_block, stored=True).reserve

    def _warm_mode(self, centre):
        """The joint conditional modes at ``centre``
        (:func:`~glmm_sm.mcla.rb.round.centre_mode`, as the rule's set-up would find them
        from 0), by Newton's method from the last rule's modes where there are some (to
        the same tolerance, in fewer iterations); None where that start does not converge
        (the set-up then starts from 0)."""
        model = self.model
        mode = centre_mode(model, centre_system(model, self.factorize, centre), centre,
                           u0=self.mode_u)
        if self.mode_u is not None and not mode.converged:
            return None
        self.mode_u = mode.u
        return mode

    def round(self, rnd, callback, bar):
        """Run round ``rnd``; True when the fit stops after it."""
        opts, log, p = self.opts, self.log, self.model.k_fe
        t_round, c_round = time.perf_counter(), _cpu_clock()
        if self.outcome is not None and self.outcome.engine is not None:
            # the last round's stored draws are not held while this round's are drawn (at
            # most one round's draws in memory); should this round be interrupted, the
            # last round's engine regenerates them from their seeds
            self.outcome.engine.draws.release()
        with _compile_timer() as compiling:
            engine, theta, res, ev = self._run(rnd)
        # Compilation is not the fit's work: it counts neither in the round's seconds (which
        # size the next round) nor against the time budget.
        compiled = compiling.duration if compiling.done else 0.0
        if compiled and self.deadline is not None:
            self.deadline += compiled
        info, err, mcse = self._record(rnd, theta, res, ev,
                                       time.perf_counter() - t_round - compiled, engine)
        # the process's CPU seconds (every thread's; compilation included), for benchmarks
        info["cpu_seconds"] = _cpu_clock() - c_round
        self.outcome = FitOutcome(theta, ev, engine, log, False, self.seed)
        bar.update(1)
        bar.set_postfix(m=self.m, ess=f"{info['min_ess']:.0f}", ratio=f"{info['max_ratio']:.3f}")
        stop = bool(callback(info)) if callback is not None else False
        kc = p + self.model.k_vcp
        zero = (not self.model.design.cov.has_vector
                and (at_boundary(theta[p:kc], opts.boundary_tol)
                     or self._shrinking(rnd, theta, err)))
        if zero:
            self.outcome.boundary = zero
            if not log.message:
                log.message = f"variance went to 0 in round {rnd}"
            return True
        hopeless = self._hopeless(rnd, theta, err, info)
        if hopeless:
            log.message = log.hopeless = hopeless
            return True
        if info["converged"]:
            self.outcome.converged = True
            log.message = f"converged after {rnd + 1} rounds"
            if info["stalled"]:
                log.message += (f" (the estimate moved by {info['moved'] * MOVE_FLOOR_SE:.2g} "
                                "SE as the rule was re-placed, no less than the round before: "
                                "the rule's resolution)")
            return True
        if stop:
            log.message = f"stopped by callback after round {rnd}"
            return True
        if self._out_of_time(info):
            return True
        self.centre, self.centre_mode, self.prev_mcse = theta, None, mcse
        return False

    def _record(self, rnd, theta, res, ev, seconds, engine=None):
        """The round's log entry (raw optimizer status included) and its errors.

        After a pilot round (:func:`_is_pilot`) of a Rao-Blackwellized fit, whose coarser
        rule shifts its estimate, the movement is measured under this round's rule for
        both estimates (:meth:`_pilot_rule_moved`) where the movement across rules would
        ask for another round."""
        opts, centre = self.opts, self.centre
        err = information_errors(ev.hessian, ev.score_var)
        se = np.sqrt(np.diag(err.cov))
        mcse = _mcse(err.mcse_cov)
        ok = np.isfinite(se) & (se > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = float(np.max(mcse[ok] / se[ok])) if ok.any() else math.inf
            ref = mcse if self.prev_mcse is None else np.sqrt(mcse**2 + self.prev_mcse**2)
            # Parameters the random effects barely touch (within-cluster contrasts) have an
            # MCSE of ~1e-10: movement is measured against at least 1% of the SE.
            ref = np.fmax(ref, MOVE_FLOOR_SE * se)
            moved = float(np.max(np.abs(theta - centre) / np.maximum(ref, 1e-300)))
        if self.prev_mcse is None or not np.isfinite(moved):
            moved = math.inf  # the first centre is the Laplace fit, not an MCMLE
        min_ess = float(ev.ess.min())
        accepted = bool(res.success) or _at_maximum(ev, err, mcse)
        rest = ((opts.m != "auto" or ratio <= opts.target_ratio)
                and min_ess >= opts.min_ess and accepted and err.positive_definite)
        rule_check = None
        if rest and moved > 3.0 and math.isfinite(moved):
            rule_check = self._pilot_rule_moved(rnd, engine, theta, ref)
            if rule_check is not None:
                rule_check["moved_across_rules"] = moved
                moved = rule_check["moved"]
                seconds += rule_check["seconds"]
        converged = moved <= 3.0 and rest
        curvature = None
        if converged and opts.sampler != "quadrature" and self.rb is None:
            curvature = self._curvature_check(theta, ev, err)
            if curvature is not None and curvature["ratio"] > CURVATURE_FACTOR:
                # the round's curvature is its draws' own: not converged, and the MCSE/SE
                # the next round's m is planned from is the one with Laplace's curvature
                converged = False
                ratio = max(ratio, curvature["mcse_ratio"])
            else:
                curvature = None
        # A deterministic fit's rounds re-place the rule at each estimate: once the movement
        # is below QUADRATURE_TOL_SE and stops shrinking (less than halved since the round
        # before), the rounds are at the rule's own resolution (its placement moves the
        # maximum by about its quadrature error) and more of them change nothing the
        # quadrature error measurement that follows (_quadrature_error) would not say.
        before = self.log.rounds[-1]["moved"] if self.log.rounds else math.inf
        stalled = (opts.sampler == "quadrature" and not converged and math.isfinite(before)
                   and STALL_SHRINK * before < moved <= QUADRATURE_TOL_SE / MOVE_FLOOR_SE
                   and accepted and err.positive_definite)
        info = {"round": rnd, "m": self.m, "params": theta, "value": ev.value,
                "min_ess": min_ess, "max_ratio": ratio, "moved": moved,
                "iterations": int(res.nit), "optimizer_success": bool(res.success),
                "optimizer_status": int(res.status), "optimizer_message": str(res.message),
                "at_maximum": accepted, "hessian_negative_definite": err.positive_definite,
                "nonfinite_evaluations": int(res.n_nonfinite),
                "outside_evaluations": int(getattr(res, "n_outside", 0)),
                "converged": converged or stalled, "stalled": stalled, "seconds": seconds,
                "se": se.tolist(), "mcse": mcse.tolist()}
        if rule_check is not None:
            info["pilot_rule"] = rule_check
        # The sandwich with V from the round's start (its draws' centre): the MCSE/SE the
        # next round, centred at this estimate, is expected to have (_planning_ratio); a
        # record, not the reported MCSE.
        first = getattr(res, "start_evaluation", None)
        if first is not None and first.score_var is not None and err.positive_definite:
            Hinv = -err.cov
            with np.errstate(invalid="ignore", divide="ignore"):
                mc0 = np.sqrt(np.abs(np.diag(Hinv @ first.score_var @ Hinv)))
                info["ratio_at_centre"] = float(np.max(mc0[ok] / se[ok])) if ok.any() else math.inf
                info["mcse_at_centre"] = mc0.tolist()
        if curvature is not None:
            info["curvature"] = curvature
        if not info["converged"]:
            # which of the convergence conditions this round missed (why another round)
            info["unmet"] = [why for why, ok in (
                (f"moved {moved:.3g} > 3 combined MCSEs", moved <= 3.0),
                (f"MCSE/SE {ratio:.3g} > target_ratio {opts.target_ratio:g}",
                 opts.m != "auto" or ratio <= opts.target_ratio),
                (f"min ESS {min_ess:.3g} < min_ess {opts.min_ess:g}", min_ess >= opts.min_ess),
                ("optimizer stop not accepted", accepted),
                ("Hessian not negative definite", err.positive_definite),
                (f"the Monte Carlo curvature in {(curvature or {}).get('name')} is "
                 f"{(curvature or {}).get('ratio', 0):.3g} times Laplace's",
                 curvature is None)) if not ok]
        if self.per_block:
            bm = np.full(len(self.rows), self.m, dtype=np.int64) if self.block_m is None \
                else self.block_m
            info.update({"draws_total": int(bm.sum()), "m_block_min": int(bm.min()),
                         "m_block_median": float(np.median(bm)),
                         "m_block_max": int(bm.max()),
                         "draw_rows": float(np.sum(bm * self.rows))})
            self._alloc = (ev, err, bm)
        self.log.rounds.append(info)
        return info, err, mcse

    def _pilot_rule_moved(self, rnd, engine, theta, ref):
        """The movement from the pilot round's estimate to this round's ``theta``, both
        under this round's rule, or None where the last round was not a Rao-Blackwellized
        pilot with another rule of scalar levels (the correlated engine's tensor-rule
        pilot is compared with the next round across the two rules).

        A pilot round (:func:`_is_pilot`) integrates with
        :data:`~glmm_sm.mcla.rb.round.PILOT_NODES` nodes: its estimate is the maximum of
        another ``l_m``, shifted from this round's rule's by the coarser rule's error.
        That shift does not shrink with the data, while the Monte Carlo errors do (as the
        standard errors, about ``n^{-1/2}``): on the crossed design of
        ``benchmarks/bench_scale.py`` at 10^5 rows the pilot's rule moved ``var(g)`` by
        2.5 of the combined MCSEs, enough at 10^6 rows for a third round that the sampler
        centre did not need.  What the movement asks (has the estimate settled where the
        draws are centred?) is answered under one rule: the maximum of the pilot's draws'
        ``l_m`` under this round's rule, one Newton step from the pilot's estimate (this
        round's centre), and ``theta``'s distance from it in the same combined MCSEs
        (``ref``, per parameter).

        That maximum is found from the pilot's own ``l_m`` (its last evaluation, at its
        estimate: gradient ``g``, Hessian ``H``) plus the two rules' difference in the
        log-likelihood of the proposal's centre draw
        (:meth:`~glmm_sm.mcla.rb.engine.RBEngine.centre_probe`, one draw under each rule:
        gradients ``g_N - g_K``, Hessians ``H_N - H_K``), taken as every draw's: the rules
        differ in how each integrated level is summed given the sampled effects, about
        equally for the draws near the centre.  The step is ``(-(H + H_N - H_K))^{-1}
        (g + g_N - g_K)``.  On the crossed design it agreed with the pilot's draws
        evaluated under this round's rule (the check before: one evaluation of every draw
        with derivatives, 17-20 s of CPU at 10^6 rows) to 1% of the rules' shift, and on
        ``tests/test_pilot_rule_movement.py``'s design (a shift of 13 combined MCSEs)
        within 0.09 of them; it costs two evaluations of one draw
        (``benchmarks/README.md``, issue 21, session 15).  Where there is no centre probe
        or no pilot Hessian, the pilot's draws are evaluated under this round's rule as
        before.  (The pilot's rule on this round's draws would not do: a coarse rule's
        error depends on where it is placed, and the two rounds place it at different
        centres.)

        Returns
        -------
        dict or None
            ``moved`` (under this round's rule), ``nodes`` (the pilot's), ``probe``
            (``"centre draw"`` or ``"pilot draws"``), ``seconds``; the round's log entry
            keeps it as ``pilot_rule``, with ``moved_across_rules`` (the movement from the
            pilot's estimate itself).
        """
        prev = None if self.outcome is None else self.outcome.engine
        if (rnd != 1 or not _is_pilot(0, self.opts) or self.opts.sampler == "quadrature"
                or type(prev) is not type(engine)
                or getattr(getattr(prev, "sampler", None), "with_nodes", None) is None):
            return None
        nodes, full = len(prev.sampler.xs), len(engine.sampler.xs)
        if nodes == full:
            return None
        t0 = time.perf_counter()
        ev, H, how = self.outcome.evaluation, None, "centre draw"
        probe = getattr(prev, "centre_probe", lambda: None)()
        if (probe is not None and ev is not None and ev.hessian is not None
                and np.array_equal(self.outcome.params, self.centre)):
            coarse = probe.evaluate(self.centre)
            fine = probe.with_nodes(full).evaluate(self.centre)
            if coarse.hessian is not None and fine.hessian is not None:
                H = ev.hessian + (fine.hessian - coarse.hessian)
                g = ev.gradient + (fine.gradient - coarse.gradient)
        if H is None:
            ev = prev.with_nodes(full).evaluate(self.centre)
            H, g, how = ev.hessian, ev.gradient, "pilot draws"
        if H is None or not (np.all(np.isfinite(H)) and np.all(np.isfinite(g))):
            return None
        try:
            step = np.linalg.solve(-H, g)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(step)):
            return None
        moved = float(np.max(np.abs(theta - self.centre - step) / np.maximum(ref, 1e-300)))
        return {"moved": moved, "nodes": nodes, "probe": how,
                "seconds": time.perf_counter() - t0}

    def _curvature_check(self, theta, ev, err):
        """The variance whose Monte Carlo information ``1 / SE^2`` is largest relative to
        the Laplace approximation's curvature ``-d^2 l_LA / d nu_t^2`` at ``theta`` (central
        differences with steps of 10% of ``nu_t``), as a record: ``name``, ``nu``,
        ``ratio`` (that factor), ``laplace_curvature``, ``mcse_ratio`` (its MCSE/SE with
        Laplace's curvature in place of the draws': ``sqrt(V_tt / -d2)``).  None where there
        is no scalar variance, or Laplace's curvature is not negative at any (see
        :data:`CURVATURE_FACTOR`)."""
        model, p = self.model, self.model.k_fe
        kc = p + model.k_vcp
        if model.design.cov.has_vector or ev.score_var is None or not err.positive_definite:
            return None
        theta = np.asarray(theta, dtype=float)
        ll = self._laplace_loglike(theta)
        se2 = np.diag(err.cov)
        l0, best = ll(theta), None
        for t in range(p, kc):
            h = 0.1 * theta[t]
            if not (h > 0 and np.isfinite(se2[t]) and se2[t] > 0):
                continue
            up, down = theta.copy(), theta.copy()
            up[t] += h
            down[t] -= h
            d2 = (ll(up) - 2.0 * l0 + ll(down)) / h**2
            if not (np.isfinite(d2) and d2 < 0):
                continue
            rec = {"name": model.vcp_names[t - p], "nu": float(theta[t]),
                   "ratio": float(1.0 / se2[t] / -d2), "laplace_curvature": float(d2),
                   "mcse_ratio": float(np.sqrt(max(ev.score_var[t, t], 0.0) / -d2))}
            if best is None or rec["ratio"] > best["ratio"]:
                best = rec
        return best

    def _laplace_loglike(self, theta):
        """The Laplace log-likelihood as a function of the whole parameter vector, with the
        fixed effects and the family parameters of ``theta`` (for
        :meth:`_curvature_check`, which varies the variances only)."""
        model, p = self.model, self.model.k_fe
        kc = p + model.k_vcp
        system = model.block_system(self.factorize)
        beta, _, alpha = split_params(system.data, theta)
        fsys = family_system(system, alpha)

        def ll(x):
            return laplace_loglike(fsys, beta, x[p:kc])[0]

        return ll

    def _hopeless(self, rnd, theta, err, info):
        """Why no number of rounds or draws can make this fit converge, or "" (the fit goes
        on): an estimate running off along a separation within groups, or an ESS that
        collapsed and did not recover (see :data:`ESS_COLLAPSE`), with what to fit
        instead."""
        model, p = self.model, self.model.k_fe
        names = list(model.data.param_names)
        sep = self.runaway
        if sep is not None:
            effect = np.abs(theta[sep["columns"]]) * sep["scale"]
            if np.any(effect > RUNAWAY_EFFECT):
                est = ", ".join(f"{n} = {theta[j]:.4g}" for n, j in zip(
                    sep["covariates"], sep["columns"], strict=True))
                var = ", ".join(f"{names[p + t]} = {theta[p + t]:.4g}"
                                for t in range(model.k_vcp))
                return (f"the responses are separated within the levels of "
                        f"{sep['components']} by {sep['covariates']}: every response is "
                        f"fitted exactly by a threshold on {sep['covariates']} of its own in "
                        "each group, and the likelihood keeps increasing as their "
                        "coefficient(s) and the variance(s) grow together (round "
                        f"{rnd}: {est}; {var}; an effect above {RUNAWAY_EFFECT:g} per SD of "
                        "the covariate): the maximum likelihood estimate is at infinity. "
                        f"Fit the model without the within-group variation of "
                        f"{sep['covariates']} (e.g. its group means), or use a penalized "
                        "(Bayesian) fit")
        curv = info.get("curvature")
        if curv is not None:
            need = self.m * (curv["mcse_ratio"] / self.opts.target_ratio) ** 2
            if self.opts.m != "auto" or need > self.opts.max_m:
                return (f"round {rnd}: the Monte Carlo curvature of the log-likelihood in "
                        f"{curv['name']} (at {curv['nu']:.4g}) is {curv['ratio']:.3g} times "
                        "the Laplace approximation's: it is the draws' own (their weights "
                        f"in {curv['name']} degenerate away from their centre), not the "
                        "likelihood's, and the MCSE built with it is too small by about "
                        "that factor; with Laplace's curvature the MCSE/SE is "
                        f"{curv['mcse_ratio']:.3g}, which would take m of about {need:.2g} "
                        f"(max_m={self.opts.max_m}). Fit with sampler='quadrature' (a "
                        "deterministic fit) where the model allows it")
        singular = singular_terms(model.design.cov, theta[p:], model.vcp_names,
                                  NEAR_SINGULAR)
        unidentified = [names[j] for j in np.flatnonzero(err.bad)]
        if (unidentified and _vector_terms(model, singular)
                and not (_is_pilot(rnd, self.opts) and self.opts.sampler == "quadrature")):
            # A correlated term at a singular covariance where the likelihood is not a
            # strict maximum: the optimizer cannot leave it (the Cholesky parametrization's
            # edge) and no m makes the Hessian negative definite there.  (A deterministic
            # pilot goes on: its coarse rule only places the next round, and ending there
            # would report the pilot rule's log-likelihood short of the ridge's top.)
            return (f"round {rnd}: the estimate is a singular fit that is not a strict "
                    f"maximum (the Hessian is not negative definite in {unidentified}); "
                    + _culprits(model, theta, singular, unidentified, self.centre))
        if info["min_ess"] >= ESS_COLLAPSE:
            self.collapsed = 0
            return ""
        if rnd == 0:  # centred at the Laplace fit: the next round re-centres
            return ""
        self.collapsed += 1
        if not (self.collapsed >= 2 or unidentified):
            return ""
        fixed = ("" if self.opts.m == "auto" else
                 f"; with m fixed at {self.m}, a larger m (or m='auto') may be all it needs")
        return (f"the Monte Carlo likelihood collapsed: the smallest block ESS was "
                f"{info['min_ess']:.1f} of m = {self.m} draws in round {rnd}"
                + (f" and below {ESS_COLLAPSE:g} in the round before" if self.collapsed >= 2
                   else " where the estimate is not a strict maximum")
                + ", so the estimate follows a few draws; "
                + _culprits(model, theta, singular, unidentified, self.centre) + fixed)

    def _shrinking(self, rnd, theta, err):
        """Components whose variance keeps shrinking toward 0 (a boundary maximum that the
        optimizer on ``log nu`` can only approach): in this round the estimate fell below a
        quarter of the sampler centre's and below one standard error."""
        p = self.model.k_fe
        kc = p + self.model.k_vcp  # the variances (not the negative binomial's alpha)
        nu = np.asarray(theta[p:kc], dtype=float)
        prev = np.asarray(self.centre[p:kc], dtype=float)  # the previous round's, or Laplace's
        if self.opts.boundary_tol <= 0:
            return []
        se = np.sqrt(np.diag(err.cov))[p:kc]
        out = [int(t) for t in np.flatnonzero((nu < 0.25 * prev) & ~(nu >= se))]
        if out:
            names = [self.model.vcp_names[t] for t in out]
            self.log.message = (f"variance(s) {names} kept shrinking toward 0 (round "
                                f"{rnd}: {prev[out]} -> {nu[out]}, "
                                "within one SE of 0): treated as at the boundary")
        return out

    def _out_of_time(self, info):
        """Choose the next m within the time budget; True when the budget is used up."""
        opts, log = self.opts, self.log
        left = None if self.deadline is None else self.deadline - time.perf_counter()
        if left is not None and left <= 0:
            log.message = f"time budget of {opts.time_budget:g} s used up"
            return True
        if opts.m != "auto" or opts.sampler == "quadrature":
            return False
        ratio = info["max_ratio"]
        if _is_pilot(info["round"], opts) and getattr(self.rb, "vector", False):
            # A vector Rao-Blackwellized pilot's MCSE/SE (Laplace-centred proposal, a
            # 4-node rule) overstates the next round's (60 x 40 maximal design, 12 seeds:
            # the four pilots above the 0.1 target, 0.109-0.269 at m = 2000, were followed
            # by rounds at 0.058-0.118 with the same m): it does not grow m; the next
            # round's own ratio does (the pilot's ESS still may).
            ratio = math.nan
        m_next = _next_m(self.m, ratio, info["min_ess"], opts, plan=_planning_ratio(info))
        info["m_asked"] = m_next  # by the MCSE/SE and ESS rule, before the caps below
        off_centre = info["moved"] > 3.0 if math.isfinite(info["moved"]) else (
            self.rb is not None)
        if off_centre:
            # The sampler was off-centre (the estimate moved): its MCSE overstates the one
            # at a re-centred sampler, so grow modestly and re-centre first.  The first
            # round of a Rao-Blackwellized fit counts as off-centre (it is centred at the
            # Laplace fit, with a coarser quadrature rule).
            m_next = min(m_next, int(math.ceil(MAX_M_GROWTH_MOVED * self.m)))
        alloc = None
        if self.per_block:
            alloc = self._allocate(info, MAX_M_GROWTH_MOVED if off_centre else MAX_M_GROWTH)
            if alloc is not None:
                m_next = alloc.m
        m_next, alloc = self._memory_cap(info, m_next, alloc)
        if left is not None:
            # The budget is a safety stop, never a tuning knob: m is what the Monte Carlo
            # error asks for, whatever the machine's speed, and a round that would not finish
            # in the time left (a round costs about in proportion to m) is not started: the
            # fit stops there, unconverged, and says why.
            per_draw = info["seconds"] / self.m
            cost = per_draw * m_next
            if self.per_block and alloc is not None:  # in proportion to draws x rows
                cost = info["seconds"] * alloc.work / info["draw_rows"]
            if cost > left:
                log.message = (f"time budget of {opts.time_budget:g} s used up (the next "
                               f"round, m = {m_next}, would take about "
                               f"{cost:.0f} s more)")
                return True
        self.m = info["m_next"] = m_next
        if self.per_block:
            self.block_m = None if alloc is None else alloc.block_m
            if alloc is not None:
                info["next_block_m"] = alloc.record()
        return False

    def _memory_cap(self, info, m_next, alloc):
        """``(m_next, alloc)`` within ``memory_budget``: the whole evaluation
        (:mod:`~glmm_sm.mcla.memory`) must fit it, so m grows no further than it allows, with
        one m for every block, and the fit warns once, naming the budget the Monte Carlo
        error's m would take.  Unchanged with a Dask client (its workers hold the draws)."""
        opts, log = self.opts, self.log
        if self.client is not None:
            return m_next, alloc
        data = self.model.layout_data(self.factorize)
        m_fit = fit_max_m(data, self.rb, opts, m_next, self.n_jobs, self.per_block,
                          least=self.m)
        if m_fit < m_next:
            info["m_memory"] = m_fit
            m_next, alloc = max(m_fit, self.m), None
            need = fit_plan(data, self.rb, opts, info["m_asked"], self.n_jobs,
                            self.per_block).total
            text = (f"memory_budget={opts.memory_budget:.0f} bytes allows at most "
                    f"m = {m_fit} draws, and round {info['round']} asked for m = "
                    f"{info['m_asked']} (about {need / 1e6:.0f} MB): m grows only to "
                    f"{m_next}, so the fit may end unconverged; give memory_budget="
                    f"{int(need) + 1} (or fewer threads, n_jobs=1) for the m the "
                    "Monte Carlo error asks")
            if not any(t.startswith("memory_budget=") for t in log.warnings):
                log.warnings.append(text)
        return m_next, alloc

    def _allocate(self, info, growth):
        """The next round's per-block draw counts
        (:func:`~glmm_sm.mcla.block_m.allocate_block_m`) from this round's blocks' MCSE
        terms at its estimate, or None (one m for every block, by the uniform rule) where
        they give no ratio (``-H`` not positive definite, no finite MCSE/SE)."""
        ev, err, bm = self._alloc
        opts = self.opts
        V = getattr(ev, "block_score_var", None)
        if V is None or not math.isfinite(info["max_ratio"]) or not err.positive_definite:
            return None
        w = block_contributions(V, err.cov, bm)
        # each block's ESS target at its measured ESS per draw
        with np.errstate(divide="ignore"):
            lower = np.ceil(ESS_MARGIN * opts.min_ess * bm / np.maximum(ev.ess, 1.0))
        m_min = min(GEN_SIZE, opts.max_m)
        return allocate_block_m(w, self.rows, opts.target_ratio, m_min=m_min,
                                m_max=opts.max_m, lower=lower,
                                upper=np.ceil(growth * bm).astype(float))


def _vector_terms(model, singular):
    """The correlated terms among the names :func:`singular_terms` gave."""
    names = list(model.data.param_names)[model.k_fe:]
    return [n for n in singular if any(v.startswith(n + " Var(") for v in names)]


def _culprits(model, theta, singular, unidentified, centre):
    """What the ESS collapse points at and the model to fit instead (text)."""
    p, cov = model.k_fe, model.design.cov
    names = list(model.data.param_names)
    vector = _vector_terms(model, singular)
    if vector:
        fixes = []
        for n in vector:
            eff = [v[len(n) + 5:-1] for v in names[p:] if v.startswith(n + " Var(")]
            terms = ["1" if e == "Intercept" else e for e in eff]
            drop = f"(1 | {n})" if "1" in terms else f"({terms[0]} | {n})"
            fixes.append(f"{drop} without the slope(s), or ({' + '.join(terms)} || {n}) "
                         "with independent effects")
        return (f"the covariance of {vector} is singular at the estimate (a slope variance "
                "at 0 or a correlation at +-1: the slope's variance is not identified by "
                "these data). Fit " + "; or ".join(fixes) + " instead")
    if singular or unidentified:
        which = list(dict.fromkeys(list(singular) + unidentified))
        return (f"the estimate is singular or not a strict maximum in {which} (not "
                "identified by these data). Drop those random effects (or the covariates "
                "aliased with them), or fix the model's structure")
    with np.errstate(divide="ignore", invalid="ignore"):
        moved = np.abs(np.log(np.asarray(theta[p:], float) / np.asarray(centre[p:], float)))
    moved = np.where(np.isfinite(moved), moved, np.inf)
    worst = names[p + int(np.argmax(moved))] if len(moved) else "?"
    kind = " (a correlated term)" if cov.has_vector else ""
    return (f"the parameter that moved most from the sampler's centre is {worst!r}{kind}. "
            "Check that each random effect is identified (levels with several rows, "
            "slopes that vary within groups); simplify the random effects (drop a slope, "
            "use the || form), or give start_params")


@contextlib.contextmanager
def _compile_timer():
    """The seconds numba spends compiling within the block (numba's timing listener on its
    ``numba:compile`` events: ``.done``, ``.duration``)."""
    from numba.core import event

    listener = event.TimingListener()
    with event.install_listener("numba:compile", listener):
        yield listener


def _next_m(m, ratio, min_ess, opts, plan=None):
    """The next round's m: MCSE shrinks like m^(-1/2); at most 10 times the last m, so that
    no round jumps by orders of magnitude on one noisy ratio.

    Where this round's largest MCSE/SE ``ratio`` is above the target, m grows to bring
    ``plan`` (the ratio the next round is expected to have at this m; None: ``ratio``) to
    the target with the margin :data:`PLAN_MARGIN`, and in any case by at least
    ``ratio / target_ratio`` (so that rounds that keep missing the target keep growing m
    however low ``plan`` is).  See :func:`_planning_ratio`."""
    grow = 1.0
    if math.isfinite(ratio) and ratio > opts.target_ratio:
        if plan is None or not math.isfinite(plan):
            plan = ratio
        grow = max(grow, PLAN_MARGIN * (plan / opts.target_ratio) ** 2,
                   ratio / opts.target_ratio)
    if min_ess < opts.min_ess:
        grow = max(grow, 1.5 * opts.min_ess / max(min_ess, 1.0))
    return int(min(opts.max_m, math.ceil(m * min(grow, MAX_M_GROWTH))))


def _planning_ratio(info):
    """The largest MCSE/SE that the next round is expected to have at this round's m: this
    round's ratio with the gradient's Monte Carlo variance ``V`` taken at the round's start
    (its draws' centre, ``ratio_at_centre``) instead of at its estimate; None where the
    round has none (no start evaluation with a ``V``, ``-H`` not positive definite) or its
    curvature was flagged.

    The next round is centred at this round's estimate, and its own estimate lies within
    about one MCSE of that centre.  ``V`` at *this* round's estimate is not that: the
    estimate was moved by this round's draws, away from their centre, to where their
    weights are less even (on the 60 x 40 maximal design the ESS halves within about one
    MCSE of the centre), so it overstates the next round's ``V``; at the centre it does
    not.  On that design (12 seeds, 14 pairs of successive rounds, ``benchmarks/README.md``)
    the ratio at the estimate overstated the next round's, rescaled to the same m, by a
    factor of 1.30 on average (geometric; 0.79-2.28, log standard deviation 0.31: 0.118
    twice where the next rounds gave 0.067-0.068), the ratio at the centre by 1.00
    (0.73-1.43, log standard deviation 0.18).  The reported MCSE is not changed: it stays
    the sandwich at the estimate."""
    plan = info.get("ratio_at_centre")
    if info.get("curvature") or plan is None or not math.isfinite(plan):
        # a round whose curvature is its draws' own (_curvature_check) plans from its ratio
        # with Laplace's curvature (in max_ratio), which the draws' centre does not see
        return None
    return float(plan)


def _warn_unconverged(log, opts):
    if not log.rounds:
        warnings.warn(f"The fit did not converge ({log.message}).", ConvergenceWarning,
                      stacklevel=3)
        return
    if log.hopeless:  # more draws, rounds or time would not help: the message says what would
        warnings.warn(f"Monte Carlo MLE did not converge ({log.message}).", ConvergenceWarning,
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
    if last["optimizer_status"] == TRUST_STATUS:
        advice.append("the last round's maximum lay beyond the points where its draws' "
                      "weights hold up (the ESS trust region): allow more max_rounds, or "
                      "simplify the random effects")
    elif not last["optimizer_success"]:
        advice.append("the trust-region optimizer did not converge: try start_params or "
                      "more maxiter")
    if last["moved"] > 3:
        advice.append("the estimate still moves between rounds: allow more max_rounds")
    warnings.warn(f"Monte Carlo MLE did not converge ({log.message}). " + "; ".join(advice),
                  ConvergenceWarning, stacklevel=3)


class _NoBar:
    """The bar of :func:`_progress` when it is off: the calls a bar takes, doing nothing
    (``tqdm`` is not imported for it: its import and the lock its first bar creates, a
    ``multiprocessing`` one, were about 0.04 s of a process's first fit)."""

    disable = True
    leave = True

    def update(self, n=1):
        """Nothing."""

    def set_postfix(self, **kwargs):
        """Nothing."""

    def close(self):
        """Nothing."""


def _progress(disp, total, desc="MCLA rounds", unit="round"):
    """A bar of rounds with m, the smallest ESS, MCSE/SE and the elapsed time; shown on a
    terminal or in a notebook (``tqdm.auto``) when ``disp``, and left in place after.
    Profiles use it too (``desc``, ``unit``: what is counted).  Off, a ``_NoBar``."""
    notebook = "ipykernel" in sys.modules
    enabled = bool(disp) and (sys.stderr.isatty() or notebook)
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=False, leave=True)
