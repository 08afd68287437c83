"""Variance components estimated at zero.

When the likelihood keeps increasing as ``nu_t`` decreases, the MLE sits on the boundary
``nu_t = 0``.  No optimizer on ``log nu`` gets there, and importance sampling degenerates as
``nu_t -> 0`` (the prior of component ``t``'s effects collapses onto 0).  But the model with
``nu_t = 0`` is simply the model without component ``t``: its effects are exactly zero.  So a
component whose estimate falls below ``BOUNDARY_NU`` is removed and the smaller model is
fitted instead (a plain GLM, fitted exactly, when no component is left).  Its estimate, with
``nu_t = 0``, is the estimate of the full model.

The boundary is then checked: the one-sided derivative of the log-likelihood in ``nu_t`` at
``nu_t = 0`` is (differentiating under the integral, with ``u_j ~ N(0, nu_t)``)

    d l / d nu_t = 1/2 sum_{j in t} E[ s_j(u)^2 + h_j(u) | y ],

where ``s_j = sum_i z_ij w_i (y_i - n_i mu_i)`` and ``h_j = -sum_i z_ij^2 w_i n_i var_i`` are
the score and curvature in the effect ``u_j`` at ``u_j = 0``, and the expectation is over the
remaining effects given the data (none in the GLM case, else estimated with the final round's
importance weights).  A negative derivative confirms the boundary maximum; a positive one is
reported with a warning.

The standard error of a boundary estimate is not defined (the estimator's distribution is a
mixture with an atom at 0): it is reported as NaN, with the covariance row set to zero so that
Wald tests and contrasts of the other parameters are unaffected.
"""

from __future__ import annotations

import warnings

import numpy as np

from ._random import child_seed
from .engine import Evaluation

__all__ = ["BOUNDARY_NU", "at_boundary", "reduced_model", "fit_with_boundary"]

#: A variance below this (an SD below 1e-3 on the linear-predictor scale) is taken as 0.
BOUNDARY_NU = 1e-6


def at_boundary(nu, tol=BOUNDARY_NU):
    """Indices of the variance components below ``tol``."""
    return [int(t) for t in np.flatnonzero(np.asarray(nu) < tol)]


def reduced_model(model, drop):
    """``model`` without the variance components ``drop`` (None when none would be left)."""
    keep = [t for t in range(model.k_vc) if t not in set(drop)]
    if not keep:
        return None
    cols = np.flatnonzero(np.isin(model.ident, keep))
    new_t = {t: i for i, t in enumerate(keep)}
    ident = np.array([new_t[t] for t in model.ident[cols]], dtype=int)
    cls = type(model)
    with warnings.catch_warnings():  # the user saw the full model's design warnings
        warnings.simplefilter("ignore", UserWarning)
        return cls(model.endog, model.exog, model.exog_vc[:, cols], ident,
                   vcp_names=[model.vcp_names[t] for t in keep], family=model.family,
                   weights=model.weights, offset=model.arrays.offset,
                   vc_names=[model.vc_names[j] for j in cols], factorize=model.factorize)


def _glm_fit(model):
    """Exact ML fit of the model with every variance component at 0: ``(beta, cov, value)``."""
    import statsmodels.api as sm

    a = model.arrays
    w = a.weights
    if a.family.code == 0:
        n = a.ntrials
        ok = n > 0
        endog = np.where(ok, a.y / np.where(ok, n, 1.0), 0.0)
        glm = sm.GLM(endog, a.X, family=sm.families.Binomial(), offset=a.offset,
                     var_weights=w * n)
    else:
        glm = sm.GLM(a.y, a.X, family=sm.families.Poisson(), offset=a.offset, var_weights=w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = glm.fit(maxiter=200, tol=1e-13)
    beta = np.asarray(fit.params, dtype=float)
    eta = a.X @ beta + a.offset
    wn = w * a.ntrials
    info = (a.X.T * (wn * a.family.variance(eta))) @ a.X
    cov = np.linalg.pinv(info)
    value = float(np.sum(w * a.y * eta - wn * a.family.cumulant(eta)))
    return beta, 0.5 * (cov + cov.T), value, bool(fit.converged)


def boundary_scores(model, beta, drop, engine=None, red_params=None, chunk=512):
    """One-sided derivatives ``d l / d nu_t`` at ``nu_t = 0`` for ``t`` in ``drop``.

    ``engine`` and ``red_params`` are the reduced model's final engine and estimate (omit
    both when no variance component is left).
    """
    a = model.arrays
    fam = a.family
    w = a.weights
    if engine is None:
        eta = a.X @ beta + a.offset
        r = w * (a.y - a.ntrials * fam.mean(eta))
        c = w * a.ntrials * fam.variance(eta)
        out = []
        for t in drop:
            Zt = model.exog_vc[:, np.flatnonzero(model.ident == t)]
            s = Zt.T @ r
            h = -(Zt.multiply(Zt)).T @ c
            out.append(0.5 * float(np.sum(s * s + h)))
        return np.array(out)

    data = engine.data
    op = data.layout.obs_perm
    wy, wn = data.wy, data.wn
    drop_cols = np.flatnonzero(np.isin(model.ident, drop))
    Zd = model.exog_vc[op][:, drop_cols].tocsr()
    Zd2 = Zd.multiply(Zd).tocsr()
    comp = model.ident[drop_cols]
    B, qd = data.n_blocks, len(drop_cols)
    s0 = np.zeros(B)
    m1 = np.zeros((B, qd))  # sum_k w_k s_jb(k)
    m2 = np.zeros((B, qd))  # sum_k w_k s_jb(k)^2
    mh = np.zeros((B, qd))  # sum_k w_k h_jb(k)
    blocks = [slice(data.obs_ptr[b], data.obs_ptr[b + 1]) for b in range(B)]
    for _, eta, v, sc in engine.weighted_draws(red_params, chunk):
        R = wy[:, None] - wn[:, None] * fam.mean(eta)
        C = wn[:, None] * fam.variance(eta)
        s0 = s0 * sc + v.sum(axis=1)
        m1 *= sc[:, None]
        m2 *= sc[:, None]
        mh *= sc[:, None]
        for b, rows in enumerate(blocks):
            Sb = Zd[rows].T @ R[rows]  # (qd, K)
            Hb = -(Zd2[rows].T @ C[rows])
            m1[b] += Sb @ v[b]
            m2[b] += (Sb * Sb) @ v[b]
            mh[b] += Hb @ v[b]
    e1, e2, eh = m1 / s0[:, None], m2 / s0[:, None], mh / s0[:, None]
    # Blocks are independent given the data: E[(sum_b s_b)^2] = (sum_b E s_b)^2 + sum_b Var s_b
    es2 = e1.sum(0) ** 2 + (e2 - e1**2).sum(0)
    per_col = 0.5 * (es2 + eh.sum(0))
    return np.array([float(per_col[comp == t].sum()) for t in drop])


def _fit_without(model, drop, start, opts, seed, attempt, callback, disp, client):
    """Fit ``model`` without components ``drop``, dropping more if they also go to 0.

    Returns ``(reduced model or None, its outcome or None, drop, attempt)``.
    """
    from .fitting import _mcmle

    p, T = model.k_fe, model.k_vc
    while True:
        attempt += 1
        red = reduced_model(model, drop)
        if red is None:
            return None, None, drop, attempt
        keep = [t for t in range(T) if t not in drop]
        red_start = np.concatenate([start[:p], np.maximum(start[p:][keep], 1e-4)])
        outcome = _mcmle(red, opts, child_seed(seed, 1000 + attempt), red_start, callback,
                         disp, client)
        if not outcome.boundary:
            return red, outcome, drop, attempt
        drop = sorted(set(drop) | {keep[t] for t in outcome.boundary})
        start = start.copy()
        start[:p] = outcome.params[:p]
        start[p:][keep] = outcome.params[p:]


def fit_with_boundary(model, first, opts, callback, disp, client):
    """Refit ``model`` with the components ``first.boundary`` at 0; a full-size outcome.

    A dropped component whose one-sided derivative at 0 is positive (the likelihood rises
    away from 0: Monte Carlo noise took the optimizer to the boundary) is put back once,
    starting from its Laplace estimate or 0.01, and the fit repeated.
    """
    from .fitting import _mcmle

    seed = first.seed
    drop = sorted(first.boundary)
    p, T = model.k_fe, model.k_vc
    start = np.asarray(first.params, dtype=float).copy()
    lap_nu = np.asarray(first.log.laplace["params"], dtype=float)[p:]
    readded, attempt = set(), 0
    while True:
        red, outcome, drop, attempt = _fit_without(model, drop, start, opts, seed, attempt,
                                                   callback, disp, client)
        if red is None:
            glm = _glm_fit(model)
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
            full = _mcmle(model, opts, child_seed(seed, 2000 + attempt), start, callback,
                          disp, client)
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
    from .fitting import FitLog, FitOutcome

    p, T = model.k_fe, model.k_vc
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
