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

from glmm_sm.fit.information import information_errors

__all__ = ["BOUNDARY_NU", "at_boundary", "reduced_model", "glm_fit", "boundary_scores"]

#: A variance below this (an SD below 1e-3 on the linear-predictor scale) is taken as 0.
BOUNDARY_NU = 1e-6


def at_boundary(nu, tol=BOUNDARY_NU):
    """Indices of the variance components below ``tol``."""
    return [int(t) for t in np.flatnonzero(np.asarray(nu) < tol)]


def reduced_model(model, drop):
    """``model`` without the variance components ``drop`` (None when none would be left)."""
    keep = [t for t in range(model.k_vcp) if t not in set(drop)]
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


def glm_fit(model):
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
    # No pseudo-inverse: NaN where the information is singular (separated data).
    cov = information_errors(-info).cov
    value = float(np.sum(w * a.y * eta - wn * a.family.cumulant(eta)))
    return beta, cov, value, bool(fit.converged)


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
