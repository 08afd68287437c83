"""Refits without the variance components estimated at 0 (see :mod:`glmm_sm.fit.boundary`).

When the rounds end with components below the boundary tolerance, the model without them
is fitted (by the ``refit`` callable the driver, :func:`glmm_sm.fit.driver.mcmle`, hands in),
components that also fall to 0 are dropped in turn, and each is kept at 0 only when its
one-sided derivative at 0 (:func:`~glmm_sm.fit.boundary.boundary_evidence`) is negative beyond
its Monte Carlo error; ambiguous evidence makes m grow, a clearly positive derivative puts
the component back (see :func:`fit_with_boundary`).  The reduced fit is then mapped back
to a full-size :class:`~glmm_sm.fit.options.FitOutcome`: the dropped
variances at 0, their standard errors undefined (NaN, zero covariance rows).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import replace

import numpy as np

from glmm_sm.core.random import child_seed
from glmm_sm.fit.boundary import BOUNDARY_Z, boundary_evidence, glm_fit, reduced_model
from glmm_sm.fit.options import M_START, FitLog, FitOutcome
from glmm_sm.mcla.engine import Evaluation

__all__ = ["fit_with_boundary"]


def _fit_without(model, drop, start, refit, seed, attempt, m_start=None):
    """Fit ``model`` without components ``drop``, dropping more if they also go to 0.

    Returns ``(reduced model or None, its outcome or None, drop, attempt)``.
    """
    p, T = model.k_fe, model.k_vcp
    while True:
        attempt += 1
        red = reduced_model(model, drop)
        if red is None:
            return None, None, drop, attempt
        keep = [t for t in range(T) if t not in drop]
        # (the negative binomial's alpha, after the variances, is kept)
        red_start = np.concatenate([start[:p], np.maximum(start[p : p + T][keep], 1e-4),
                                    start[p + T :]])
        outcome = refit(red, child_seed(seed, 1000 + attempt), red_start, m_start)
        if not outcome.boundary:
            return red, outcome, drop, attempt
        drop = sorted(set(drop) | {keep[t] for t in outcome.boundary})
        start = _merged_start(start, outcome.params, p, T, keep)


def _merged_start(start, red_params, p, T, keep):
    """``start`` (the full model's parameters) with a reduced model's estimate
    ``red_params`` (its components ``keep``, then the family's parameters) put in."""
    start = np.array(start, dtype=float)
    start[:p] = red_params[:p]
    start[p : p + T][keep] = red_params[p : p + len(keep)]
    start[p + T :] = red_params[p + len(keep) :]
    return start


#: At most this many refits with components put back (a component sent to 0 again by the
#: rounds while the evidence says it is not at 0 is put back again, up to this count).
MAX_PUT_BACK = 4
#: The evidence's draws grow at most to this many (or ``max_m``): a derivative still within
#: ``BOUNDARY_Z`` MCSEs of 0 there is flat for any purpose (grouseticks' LOCATION: MCSE 2 at
#: 50,000 draws around a derivative of about 0; growing to max_m took 165 s for nothing).
EVIDENCE_MAX_M = 100_000
#: Smallest and largest factor by which m grows when the evidence is ambiguous.
MIN_EVIDENCE_GROWTH, MAX_EVIDENCE_GROWTH = 2.0, 10.0


class _Budget:
    """Whether, and to what, m may grow for the boundary decision: only with ``m="auto"``,
    up to ``max_m``, and while the fit's time budget lasts."""

    def __init__(self, opts):
        self.opts = opts

    def can_grow(self, m):
        o = self.opts
        return (o is not None and o.m == "auto" and m < min(o.max_m, EVIDENCE_MAX_M)
                and self.time_left())

    def time_left(self):
        o = self.opts
        return o is None or o.deadline is None or time.perf_counter() < o.deadline

    def grown(self, m, evidence=()):
        """The next m: enough for the ambiguous derivatives to clear ``BOUNDARY_Z`` MCSEs
        were they the truth (MCSE ~ m^(-1/2)), within the growth limits."""
        m = max(m, self.opts.m_start or M_START)
        need = MIN_EVIDENCE_GROWTH
        for e in evidence:
            if e.decision != "undecided":
                continue
            if e.derivative != 0 and np.isfinite(e.mcse):
                need = max(need, 1.2 * (BOUNDARY_Z * e.mcse / abs(e.derivative)) ** 2)
            else:
                need = MAX_EVIDENCE_GROWTH
        return int(min(self.opts.max_m, EVIDENCE_MAX_M,
                       math.ceil(m * min(need, MAX_EVIDENCE_GROWTH))))


def fit_with_boundary(model, first, refit, opts=None, evidence_of=None):
    """Refit ``model`` with the components ``first.boundary`` at 0; a full-size outcome.

    The decision rests on the one-sided derivative of the log-likelihood at ``nu_t = 0``,
    estimated on the draws of the model without the component, with its Monte Carlo
    standard error (:func:`~glmm_sm.fit.boundary.boundary_evidence`):

    * at most ``-BOUNDARY_Z`` MCSEs (or exactly ``<= 0`` when no component is left): the
      maximum is on the boundary, the component stays at 0;
    * above ``+BOUNDARY_Z`` MCSEs: the likelihood rises away from 0 (Monte Carlo noise took
      the optimizer to the boundary): the component is put back and the model refitted
      (from the options' first m);
    * in between: the reduced model is refitted with more draws (m grows, with
      ``m="auto"``, up to ``max_m`` and the time budget); still ambiguous at the budget,
      the component is put back, with a warning.

    When a refit with a component put back sends it to 0 again (the rounds of the full
    model meet Monte Carlo noise near 0), the evidence is taken again, on fresh draws, and
    decides as before; only after :data:`MAX_PUT_BACK` refits with components put back, or
    when the time budget is used up, is a component whose evidence does not say "boundary"
    left at 0, with a warning.
    Every piece of evidence and what was done with it is recorded in
    ``log.boundary_evidence``.

    Parameters
    ----------
    model : MonteCarloGLMM
    first : FitOutcome
        The fit of the full model, with ``first.boundary`` non-empty.
    refit : callable
        ``refit(model, seed, start_params, m_start, inside=False) -> FitOutcome``: the
        rounds of a Monte Carlo MLE (the driver's, with its options, callback and
        executor), for ``model`` or a reduced one; ``m_start`` None: the options' own first
        m; ``inside`` True (the full model, every component just put back on evidence that
        it is inside): the rounds start at ``start_params``, not at the model's Laplace
        fit, which may put them at 0 again (and end the fit before its first round).
    opts : FitOptions, optional
        The fit's options (``m``, ``max_m``, ``deadline``): whether and how far m may grow.
        None: m never grows.
    evidence_of : callable, optional
        ``evidence_of(model, drop, outcome) -> list of BoundaryEvidence or None``: the
        evidence from a reduced fit ``outcome`` computed otherwise (the driver's exact
        derivatives of a deterministic quadrature fit, MCSE 0); None (or a None answer):
        :func:`~glmm_sm.fit.boundary.boundary_evidence` on the reduced fit's draws.
    """
    seed = first.seed
    drop = sorted(first.boundary)
    p, T = model.k_fe, model.k_vcp
    start = np.asarray(first.params, dtype=float).copy()
    lap_nu = np.asarray(first.log.laplace["params"], dtype=float)[p:]
    budget = _Budget(opts)
    history = []  # BoundaryEvidence records, in order
    put_back = set()  # components put back at least once
    attempt, n_back = 0, 0
    m_red = None  # first m of the next fit without them (None: the options' own)
    while True:
        red, outcome, drop, attempt = _fit_without(model, drop, start, refit, seed, attempt,
                                                   m_red)
        if red is None:
            glm = glm_fit(model)
            evidence = boundary_evidence(model, drop, beta=glm[0])
            start[:p] = glm[0][:p]
            start[p + T :] = glm[0][p:]  # the negative binomial GLM's alpha
        else:
            glm = None
            evidence = None if evidence_of is None else evidence_of(model, drop, outcome)
            if evidence is None:
                evidence = boundary_evidence(model, drop, engine=outcome.engine,
                                             red_params=outcome.params,
                                             mcse_cov=outcome.errors()[1])
            keep = [t for t in range(T) if t not in drop]
            start = _merged_start(start, outcome.params, p, T, keep)
        decided = {t: e.decision for t, e in zip(drop, evidence, strict=True)}
        if (red is not None and "undecided" in decided.values()
                and budget.can_grow(outcome.n_draws)):
            _record(history, evidence, attempt, "more draws")
            m_red = budget.grown(outcome.n_draws, evidence)
            continue
        # A component put back before and sent to 0 again while the evidence still says
        # otherwise: the rounds of the full model met Monte Carlo noise near 0 (their own
        # m grows as they need); another refit, within the limits.
        # Evidence that the component is inside ("interior") earns up to MAX_PUT_BACK
        # refits; ambiguous evidence at the draws' limit, one: a full model that sends it to
        # 0 again has then spoken, and the component stays at 0 (recorded as unresolved).
        retry = n_back < MAX_PUT_BACK and budget.time_left()
        back = [t for t in drop if t not in put_back and decided[t] != "boundary"
                or retry and decided[t] == "interior"]
        if not back:
            _record(history, evidence, attempt,
                    {t: ("at 0" if decided[t] == "boundary" else "at 0 (unresolved)")
                     for t in drop})
            _warn_unresolved(model, history, sorted(put_back - set(drop)))
            return _boundary_outcome(model, first, drop, evidence, outcome, glm, history)
        _record(history, evidence, attempt,
                {t: ("put back" if t in back else "at 0") for t in drop})
        n_back += 1
        put_back |= set(back)
        drop = [t for t in drop if t not in back]
        for t in back:
            start[p + t] = max(lap_nu[t], 1e-2)
        m_red = None
        if not drop:  # every component is back: an ordinary fit from here
            # components put back on evidence that they are inside: the rounds start at
            # the put-back values (the full model's Laplace fit may put them at 0 again)
            inside = all(decided[t] == "interior" for t in back)
            full = refit(model, child_seed(seed, 2000 + attempt), start, None, inside=inside)
            _prepend_log(first.log, full.log)
            if not full.boundary:
                full.log.boundary_evidence = history
                _warn_unresolved(model, history, back)
                return full
            first = full
            drop = sorted(full.boundary)
            start = np.asarray(full.params, dtype=float).copy()


def _record(history, evidence, attempt, action):
    """Append the evidence of one attempt with what was done (one action, or per component
    index through a dict keyed like ``drop``)."""
    acts = list(action.values()) if isinstance(action, dict) else [action] * len(evidence)
    for e, a in zip(evidence, acts, strict=True):
        history.append(replace(e, attempt=attempt, action=a))


def _warn_unresolved(model, history, back):
    """A component put back while its evidence was still ambiguous at the budget."""
    last = {}
    for e in history:
        last[e.component] = e
    names = [model.vcp_names[t] for t in back]
    weak = [last[n] for n in names if n in last and last[n].decision == "undecided"]
    if weak:
        text = ", ".join(f"{e.component}: {e.derivative:.4g} (MCSE {e.mcse:.2g}, m={e.m})"
                         for e in weak)
        warnings.warn("whether variance component(s) "
                      f"{[e.component for e in weak]} are 0 stays ambiguous within the "
                      f"draws allowed: the one-sided derivative at 0 is within {BOUNDARY_Z:g} "
                      f"MCSEs of 0 ({text}); they are kept in the model (allow a larger "
                      "max_m or time_budget to decide)", UserWarning, stacklevel=4)


def _prepend_log(first, log):
    """Put the full model's evaluations and rounds before those of the refit."""
    log.evaluations = first.evaluations + log.evaluations
    log.rounds = first.rounds + log.rounds


def _boundary_outcome(model, first, drop, evidence, outcome, glm, history):
    """The full model's outcome from the fit without ``drop`` (``outcome``, or the exact
    ``glm = (beta, cov, value, converged)`` when no component is left)."""
    p, T = model.k_fe, model.k_vcp
    nf = getattr(model, "k_fam", 0)  # the negative binomial's alpha, last
    fam_idx = np.arange(p + T, p + T + nf)
    q = model.exog_vc.shape[1]
    params = np.zeros(p + T + nf)
    cov = np.zeros((p + T + nf, p + T + nf))
    mcse_cov = np.zeros((p + T + nf, p + T + nf))
    mean, sd = np.zeros(q), np.zeros(q)
    if glm is not None:
        beta, cov_b, value, converged = glm  # (beta then alpha for the negative binomial)
        idx = np.concatenate([np.arange(p), fam_idx]).astype(int)
        params[idx] = beta
        cov[np.ix_(idx, idx)] = cov_b
        log = FitLog(seed_entropy=first.seed.entropy)
        log.laplace = first.log.laplace
        ev = Evaluation(value, None, None, None, np.zeros(0), np.zeros(0))
        m, engine = 0, None
        message = "no variance component left: fitted exactly as a GLM"
    else:
        keep = [t for t in range(T) if t not in drop]
        idx = np.concatenate([np.arange(p), p + np.array(keep, dtype=int),
                              fam_idx]).astype(int)
        params[idx] = outcome.params
        c_red, mc_red = outcome.errors()
        cov[np.ix_(idx, idx)] = c_red
        mcse_cov[np.ix_(idx, idx)] = mc_red
        cols = np.flatnonzero(np.isin(model.ident, keep))
        mean[cols], sd[cols] = outcome.random_effect_moments()
        log, ev, converged = outcome.log, outcome.evaluation, outcome.converged
        m, engine = outcome.n_draws, outcome.engine
        message = log.message
        # the full model's Laplace fit (``laplace_params`` has the full model's length); the
        # reduced model's stays in the log as ``laplace_reduced``
        if log.laplace is not first.log.laplace:
            log.laplace_reduced = log.laplace
            log.laplace = first.log.laplace
    names = [model.vcp_names[t] for t in drop]
    log.boundary = {e.component: e.derivative for e in evidence}
    log.boundary_evidence = history
    log.message = (f"variance component(s) {names} estimated at 0 (boundary); the model "
                   f"without them: {message}")
    _prepend_log(first.log, log)
    bad = [e for e in evidence if e.decision != "boundary"]
    if bad:
        text = ", ".join(f"{e.component}: {e.derivative:.4g} (MCSE {e.mcse:.2g}, m={e.m})"
                         for e in bad)
        warnings.warn(f"variance component(s) {[e.component for e in bad]} were set to 0, but "
                      "the one-sided derivative of the log-likelihood there is not below "
                      f"-{BOUNDARY_Z:g} MCSEs ({text}) and the draws allowed do not settle it "
                      "(a refit with them put back went to 0 again): the likelihood is flat "
                      "there, or Monte Carlo error is large (allow a larger max_m or "
                      "time_budget)", UserWarning, stacklevel=4)
    return FitOutcome(params, ev, engine, log, converged, first.seed, boundary=drop,
                      cov=cov, mcse_cov=mcse_cov, m=m, re_moments=(mean, sd))
