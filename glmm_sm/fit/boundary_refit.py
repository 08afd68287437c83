"""Refits without the variance components estimated at 0 (see :mod:`glmm_sm.fit.boundary`).

When the rounds end with components below the boundary tolerance, the model without them
is fitted (by the ``refit`` callable the driver, :func:`glmm_sm.fit.driver.mcmle`, hands in),
components that also fall to 0 are dropped in turn, and one whose one-sided derivative at 0
(:func:`~glmm_sm.fit.boundary.boundary_scores`) is positive is put back once.  The reduced fit
is then mapped back to a full-size :class:`~glmm_sm.fit.options.FitOutcome`: the dropped
variances at 0, their standard errors undefined (NaN, zero covariance rows).
"""

from __future__ import annotations

import warnings

import numpy as np

from glmm_sm.core.random import child_seed
from glmm_sm.fit.boundary import boundary_scores, glm_fit, reduced_model
from glmm_sm.fit.options import FitLog, FitOutcome
from glmm_sm.mcla.engine import Evaluation

__all__ = ["fit_with_boundary"]


def _fit_without(model, drop, start, refit, seed, attempt):
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
        red_start = np.concatenate([start[:p], np.maximum(start[p:][keep], 1e-4)])
        outcome = refit(red, child_seed(seed, 1000 + attempt), red_start)
        if not outcome.boundary:
            return red, outcome, drop, attempt
        drop = sorted(set(drop) | {keep[t] for t in outcome.boundary})
        start = start.copy()
        start[:p] = outcome.params[:p]
        start[p:][keep] = outcome.params[p:]


def fit_with_boundary(model, first, refit):
    """Refit ``model`` with the components ``first.boundary`` at 0; a full-size outcome.

    A dropped component whose one-sided derivative at 0 is positive (the likelihood rises
    away from 0: Monte Carlo noise took the optimizer to the boundary) is put back once,
    starting from its Laplace estimate or 0.01, and the fit repeated.

    Parameters
    ----------
    model : MonteCarloGLMM
    first : FitOutcome
        The fit of the full model, with ``first.boundary`` non-empty.
    refit : callable
        ``refit(model, seed, start_params) -> FitOutcome``: the rounds of a Monte Carlo MLE
        (the driver's, with its options, callback and executor), for ``model`` or a reduced
        one.
    """
    seed = first.seed
    drop = sorted(first.boundary)
    p, T = model.k_fe, model.k_vcp
    start = np.asarray(first.params, dtype=float).copy()
    lap_nu = np.asarray(first.log.laplace["params"], dtype=float)[p:]
    readded, attempt = set(), 0
    while True:
        red, outcome, drop, attempt = _fit_without(model, drop, start, refit, seed, attempt)
        if red is None:
            glm = glm_fit(model)
            scores = boundary_scores(model, glm[0], drop)
            start[:p] = glm[0]
        else:
            glm = None
            scores = boundary_scores(model, outcome.params[:p], drop, outcome.engine,
                                     outcome.params)
            keep = [t for t in range(T) if t not in drop]
            start[:p] = outcome.params[:p]
            start[p:][keep] = outcome.params[p:]
        back = [t for t, sc in zip(drop, scores, strict=True) if sc > 0 and t not in readded]
        if not back:
            return _boundary_outcome(model, first, drop, scores, outcome, glm)
        readded |= set(back)
        drop = [t for t in drop if t not in back]
        for t in back:
            start[p + t] = max(lap_nu[t], 1e-2)
        if not drop:  # every component is back: an ordinary fit from here
            full = refit(model, child_seed(seed, 2000 + attempt), start)
            if not full.boundary:
                _prepend_log(first.log, full.log)
                return full
            # Back at 0 after being put back: accepted there (a component is re-added once),
            # with the warning that the derivative at 0 is positive if it still is.
            _prepend_log(first.log, full.log)
            first = full
            drop = sorted(full.boundary)
            start = np.asarray(full.params, dtype=float).copy()


def _prepend_log(first, log):
    """Put the full model's evaluations and rounds before those of the refit."""
    log.evaluations = first.evaluations + log.evaluations
    log.rounds = first.rounds + log.rounds


def _boundary_outcome(model, first, drop, scores, outcome, glm):
    """The full model's outcome from the fit without ``drop`` (``outcome``, or the exact
    ``glm = (beta, cov, value, converged)`` when no component is left)."""
    p, T = model.k_fe, model.k_vcp
    q = model.exog_vc.shape[1]
    params = np.zeros(p + T)
    cov = np.zeros((p + T, p + T))
    mcse_cov = np.zeros((p + T, p + T))
    mean, sd = np.zeros(q), np.zeros(q)
    if glm is not None:
        beta, cov_b, value, converged = glm
        params[:p] = beta
        cov[:p, :p] = cov_b
        log = FitLog(seed_entropy=first.seed.entropy)
        log.laplace = first.log.laplace
        ev = Evaluation(value, None, None, None, np.zeros(0), np.zeros(0))
        m, engine = 0, None
        message = "no variance component left: fitted exactly as a GLM"
    else:
        keep = [t for t in range(T) if t not in drop]
        idx = np.concatenate([np.arange(p), p + np.array(keep, dtype=int)]).astype(int)
        params[idx] = outcome.params
        c_red, mc_red = outcome.errors()
        cov[np.ix_(idx, idx)] = c_red
        mcse_cov[np.ix_(idx, idx)] = mc_red
        cols = np.flatnonzero(np.isin(model.ident, keep))
        mean[cols], sd[cols] = outcome.random_effect_moments()
        log, ev, converged = outcome.log, outcome.evaluation, outcome.converged
        m, engine = outcome.n_draws, outcome.engine
        message = log.message
    names = [model.vcp_names[t] for t in drop]
    log.boundary = dict(zip(names, (float(s) for s in scores), strict=True))
    log.message = (f"variance component(s) {names} estimated at 0 (boundary); the model "
                   f"without them: {message}")
    _prepend_log(first.log, log)
    bad = [n for n, s in log.boundary.items() if s > 0]
    if bad:
        warnings.warn(f"variance component(s) {bad} were estimated at 0, but the one-sided "
                      "derivative of the log-likelihood there is positive "
                      f"({[round(log.boundary[n], 4) for n in bad]}) even after refitting "
                      "with them: the likelihood is flat there, or Monte Carlo error is "
                      "large (increase m)", UserWarning, stacklevel=4)
    return FitOutcome(params, ev, engine, log, converged, first.seed, boundary=drop,
                      cov=cov, mcse_cov=mcse_cov, m=m, re_moments=(mean, sd))
