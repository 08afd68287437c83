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
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from glmm_sm.fit.information import information_errors
from glmm_sm.spec.compat import sm_family

__all__ = ["BOUNDARY_NU", "BOUNDARY_Z", "BoundaryEvidence", "BoundaryView", "boundary_view",
           "at_boundary", "reduced_model",
           "glm_fit", "boundary_scores", "boundary_evidence", "boundary_decision"]
__all__ += ["nb_glm_fit", "nb_glm_loglike"]

#: A variance below this (an SD below 1e-3 on the linear-predictor scale) is taken as 0.
BOUNDARY_NU = 1e-6


def at_boundary(nu, tol=BOUNDARY_NU):
    """Indices of the variance components below ``tol``."""
    return [int(t) for t in np.flatnonzero(np.asarray(nu) < tol)]


@dataclass(frozen=True)
class BoundaryView:
    """A fit as its final engine sees it.

    When variance components went to 0 the final engine (and its draws) belongs to the
    model without them; every use of that engine after the fit (tail diagnostics,
    conditional moments, predictions, plots) goes through this one view.

    Attributes
    ----------
    engine : EngineBase or None
        The final engine (None when the fit has none: every component at 0, or data removed).
    theta : ndarray
        The estimate in the engine's parametrization (the components at 0 left out).
    keep : ndarray of int
        The model's variance parameters the engine has, in order.
    col_map : ndarray of int
        The model column (of ``exog_vc``) of each of the engine's random-effect columns.
    """

    engine: object
    theta: np.ndarray
    keep: np.ndarray
    col_map: np.ndarray


def boundary_view(model, params, boundary, engine):
    """The :class:`BoundaryView` of a fit of ``model`` with estimate ``params`` whose
    variance components ``boundary`` (indices among the model's) were set to 0."""
    p, T = model.k_fe, model.k_vcp
    params = np.asarray(params, dtype=float)
    if model.design.cov.has_vector:  # no boundary procedure with correlated terms
        return BoundaryView(engine, params, np.arange(T), np.arange(model.ident.size))
    drop = set(int(t) for t in boundary)
    keep = np.array([t for t in range(T) if t not in drop], dtype=int)
    # (the negative binomial's alpha, after the variances, stays)
    theta = np.concatenate([params[:p], params[p + keep], params[p + T :]])
    return BoundaryView(engine, theta, keep, np.flatnonzero(np.isin(model.ident, keep)))


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
    """Exact ML fit of the model with every variance component at 0:
    ``(beta, cov, value, converged)``.

    For the negative binomial the model without random effects is the negative binomial
    GLM (:func:`~glmm_sm.fit.boundary.nb_glm_fit`): ``beta`` then ends with its ``alpha``
    and ``cov`` is over ``(beta, alpha)``.
    """
    import statsmodels.api as sm

    a = model.arrays
    w = a.weights
    if a.family.code == 2:
        return nb_glm_fit(a)
    if a.family.code == 0:
        n = a.ntrials
        ok = n > 0
        endog = np.where(ok, a.y / np.where(ok, n, 1.0), 0.0)
        glm = sm.GLM(endog, a.X, family=sm_family(a.family), offset=a.offset,
                     var_weights=w * n)
    else:
        glm = sm.GLM(a.y, a.X, family=sm.families.Poisson(), offset=a.offset, var_weights=w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = glm.fit(maxiter=200, tol=1e-13)
    beta = np.asarray(fit.params, dtype=float)
    eta = a.X @ beta + a.offset
    wn = w * a.ntrials
    ll, _, h = a.family.obs_terms(eta, w * a.y, wn)
    info = (a.X.T * h) @ a.X
    # No pseudo-inverse: NaN where the information is singular (separated data).
    cov = information_errors(-info).cov
    value = float(np.sum(ll))
    return beta, cov, value, bool(fit.converged)


#: Exact Newton steps that polish statsmodels' negative binomial GLM fit on glmm_sm's own
#: formulas (its derivatives then vanish to roundoff); at most this many.
NB_GLM_NEWTON = 8


def nb_glm_fit(a):
    """The negative binomial (NB2) GLM of the arrays ``a`` (every variance component at 0):
    ``(beta + [alpha], cov, value, converged)``.

    statsmodels' discrete ``NegativeBinomial`` (``loglike_method="nb2"``, with the offset)
    fits it, as a statsmodels user would; a few exact Newton steps on ``(beta, log alpha)``
    with :func:`~glmm_sm.spec.families.nb_draw_terms` and
    :func:`~glmm_sm.spec.families.nb_constant` then put it at the maximum of glmm_sm's
    log-likelihood (the same function: the steps move it by the optimizer's tolerance).
    ``value`` omits ``-sum log y!`` as the other families' values omit their constants, and
    ``cov`` is the inverse observed information over ``(beta, alpha)``.  Prior weights are
    refused (statsmodels' discrete models have none).
    """
    import statsmodels.api as sm

    w = np.asarray(a.weights, dtype=float)
    if not np.all(w == 1.0):
        raise NotImplementedError(
            "every variance component of this negative binomial model is at 0: the model is "
            "a negative binomial GLM, which is fitted with statsmodels' discrete "
            "NegativeBinomial, and that takes no weights; refit without weights= (or with "
            "a random effect kept)")
    y, X, off = a.y, a.X, a.offset
    p = X.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = sm.NegativeBinomial(y, X, loglike_method="nb2", offset=off).fit(
            disp=0, maxiter=200, method="newton")
    start = np.asarray(fit.params, dtype=float)
    beta, alpha = start[:p].copy(), float(start[p])
    converged = bool(fit.mle_retvals.get("converged", False)) and alpha > 0
    if not alpha > 0:
        raise ValueError("the negative binomial GLM (every variance component at 0) has no "
                         f"positive alpha (statsmodels' estimate {alpha:.3g}): the counts "
                         "are not overdispersed; fit the Poisson model")

    def terms(beta, alpha):
        return nb_glm_loglike(a, np.r_[beta, alpha])

    value, g, H = terms(beta, alpha)
    for _ in range(NB_GLM_NEWTON):
        # Newton in (beta, log alpha): the chain rule's extra term is alpha's score
        J = np.r_[np.ones(p), alpha]
        Hs = H * np.outer(J, J)
        Hs[p, p] += alpha * g[p]
        try:
            step = -np.linalg.solve(Hs, g * J)
        except np.linalg.LinAlgError:
            break
        nb, na = beta + step[:p], alpha * np.exp(step[p])
        nv, ng, nH = terms(nb, na)
        if not nv >= value - 1e-12 * abs(value):
            break
        done = np.max(np.abs(step)) <= 1e-12 * (1.0 + np.max(np.abs(np.r_[beta, alpha])))
        beta, alpha, value, g, H = nb, na, nv, ng, nH
        if done:
            break
    cov = information_errors(H).cov
    return np.r_[beta, alpha], cov, value, converged


def nb_glm_loglike(a, params):
    """``(value, gradient, Hessian)`` of the negative binomial GLM of the arrays ``a`` at
    ``params = (beta, alpha)``, exact (:func:`~glmm_sm.spec.families.nb_draw_terms`,
    :func:`~glmm_sm.spec.families.nb_constant`; ``value`` without ``-sum w log y!``)."""
    from glmm_sm.spec.families import nb_constant, nb_draw_terms

    X, p = a.X, a.X.shape[1]
    w = np.asarray(a.weights, dtype=float)
    beta, alpha = np.asarray(params[:p], dtype=float), float(params[p])
    t = nb_draw_terms(w * a.y, w, X @ beta + a.offset, alpha)
    c = nb_constant(a.y, w, alpha)
    g = np.r_[X.T @ t.r, t.la.sum() + c[1]]
    H = np.zeros((p + 1, p + 1))
    H[:p, :p] = -(X.T * t.h) @ X
    H[:p, p] = H[p, :p] = X.T @ t.lea
    H[p, p] = t.laa.sum() + c[2]
    return float(t.ll.sum() + c[0]), g, H


def boundary_scores(model, beta, drop, engine=None, red_params=None, chunk=512):
    """One-sided derivatives ``d l / d nu_t`` at ``nu_t = 0`` for ``t`` in ``drop``.

    ``engine`` and ``red_params`` are the reduced model's final engine and estimate (omit
    both when no variance component is left).
    """
    if engine is None:
        return _glm_scores(model, beta, drop)
    return _ScorePass(model, engine, drop, chunk).derivatives(red_params)


def boundary_evidence(model, drop, beta=None, engine=None, red_params=None, mcse_cov=None,
                      chunk=512):
    """The one-sided derivatives at ``nu_t = 0`` for ``t`` in ``drop``, with their MCSEs.

    Parameters
    ----------
    model : MonteCarloGLMM
        The full model.
    drop : list of int
        Components set to 0.
    beta : ndarray, optional
        The fixed effects of the exact GLM fit, when no component is left (then the
        derivatives are exact: MCSE 0).
    engine, red_params, mcse_cov : optional
        The reduced model's final engine, estimate and Monte Carlo covariance of that
        estimate (the MCSE sandwich of its final round).
    chunk : int

    Returns
    -------
    list of BoundaryEvidence
        One per component of ``drop``, its ``decision`` by :func:`boundary_decision`.
    """
    names = [model.vcp_names[t] for t in drop]
    if engine is None:
        d = _glm_scores(model, beta, drop)
        zero = np.zeros(len(drop))
        return _evidence(names, d, zero, zero, 0)
    sp = _ScorePass(model, engine, drop, chunk)
    red_params = np.asarray(red_params, dtype=float)
    d, sd_draws = sp.derivatives(red_params, with_mcse=True)
    # The reduced estimate is itself a Monte Carlo estimate: d(theta_hat) moves with it by
    # g' (theta_hat - theta), g = dd/dtheta on the same draws (central differences).  Its
    # covariance with the draws' error in d at fixed theta is not estimated: the two SDs
    # are added (Cauchy-Schwarz), an upper bound of the combined MCSE.
    sd_est = np.zeros(len(drop))
    if mcse_cov is not None:
        mc = np.asarray(mcse_cov, dtype=float)
        if np.all(np.isfinite(mc)):
            G = sp.jacobian(red_params)
            sd_est = np.sqrt(np.maximum(np.einsum("ti,ij,tj->t", G, mc, G), 0.0))
        else:
            sd_est = np.full(len(drop), np.inf)
    return _evidence(names, d, sd_draws, sd_est, engine.m)


#: A component is at the boundary when its one-sided derivative at 0 is at most
#: ``-BOUNDARY_Z`` MCSEs, inside the parameter space when it is above ``+BOUNDARY_Z`` MCSEs;
#: in between the Monte Carlo evidence is ambiguous (m grows).
BOUNDARY_Z = 3.0
#: Draws for the derivatives' sensitivity to the reduced estimate (see
#: :meth:`_ScorePass.jacobian`).
JACOBIAN_DRAWS = 4000


@dataclass(frozen=True)
class BoundaryEvidence:
    """The Monte Carlo evidence on one variance component set to 0.

    Attributes
    ----------
    component : str
    derivative : float
        One-sided derivative of the log-likelihood in ``nu_t`` at ``nu_t = 0``, at the
        estimate of the model without the dropped components.
    mcse : float
        Its Monte Carlo standard error, ``mcse_draws + mcse_estimate`` (an upper bound; 0
        when exact).
    mcse_draws : float
        Over the draws, at the reduced estimate held fixed (delta method on the
        self-normalized importance sampling sums).
    mcse_estimate : float
        Carried from the Monte Carlo error of the reduced estimate.
    m : int
        Draws of the reduced fit (0: the derivative is exact: no component left, or the
        reduced fit is a deterministic quadrature fit).
    decision : str
        ``"boundary"`` (``derivative <= -BOUNDARY_Z * mcse``; with ``mcse = 0``,
        ``derivative <= 0``), ``"interior"`` (``derivative > BOUNDARY_Z * mcse``) or
        ``"undecided"``.
    """

    component: str
    derivative: float
    mcse: float
    mcse_draws: float
    mcse_estimate: float
    m: int
    decision: str
    #: Which refit of the boundary procedure gave it, and what was done: ``"at 0"``,
    #: ``"at 0 (unresolved)"`` (m could not grow further), ``"put back"`` or ``"more
    #: draws"`` (set by :func:`glmm_sm.fit.boundary_refit.fit_with_boundary`).
    attempt: int = 0
    action: str = ""


def boundary_decision(derivative, mcse, z=BOUNDARY_Z):
    """``"boundary"``, ``"interior"`` or ``"undecided"`` from a derivative and its MCSE."""
    if not (np.isfinite(derivative) and np.isfinite(mcse)):
        return "undecided"
    if derivative > z * mcse:
        return "interior"
    if derivative <= -z * mcse:
        return "boundary"
    return "undecided"


def _evidence(names, d, sd_draws, sd_est, m):
    out = []
    for name, di, s1, s2 in zip(names, d, sd_draws, sd_est, strict=True):
        s = float(s1 + s2)
        out.append(BoundaryEvidence(name, float(di), s, float(s1), float(s2), int(m),
                                    boundary_decision(float(di), s)))
    return out


def _glm_scores(model, beta, drop):
    """The derivatives at the exact GLM fit (no component left): no expectation to take."""
    a = model.arrays
    fam = a.family
    w = a.weights
    p = a.X.shape[1]
    if fam.code == 2:  # the negative binomial GLM: beta ends with its alpha
        fam, beta = fam.with_alpha(float(beta[p])), beta[:p]
    eta = a.X @ beta + a.offset
    _, r, c = fam.obs_terms(eta, w * a.y, w * a.ntrials)
    out = []
    for t in drop:
        Zt = model.exog_vc[:, np.flatnonzero(model.ident == t)]
        s = Zt.T @ r
        h = -(Zt.multiply(Zt)).T @ c
        out.append(0.5 * float(np.sum(s * s + h)))
    return np.array(out)


class _ScorePass:
    """Importance-sampling estimates of the one-sided derivatives on a reduced model's draws.

    Column ``j`` of a dropped component has score ``s_j = sum_b s_jb`` and curvature
    ``h_j = sum_b h_jb``, summed over the reduced model's blocks ``b`` (independent given the
    data), so

        d_t = 1/2 sum_{j in t} [ (sum_b E s_jb)^2 + sum_b (Var s_jb + E h_jb) ],

    each ``E`` a self-normalized sum over block ``b``'s draws.  The sums run over the
    ``(block, column)`` pairs where the column has entries (one sparse product per chunk).
    """

    def __init__(self, model, engine, drop, chunk=512):
        data = engine.data
        self.engine, self.chunk, self.drop = engine, chunk, list(drop)
        self.fam = data.family
        self.wy, self.wn = data.wy, data.wn
        drop_cols = np.flatnonzero(np.isin(model.ident, drop))
        Zd = model.exog_vc[data.layout.obs_perm][:, drop_cols].tocoo()
        qd, n, B = len(drop_cols), Zd.shape[0], data.n_blocks
        blk = np.repeat(np.arange(B), np.diff(data.obs_ptr))[Zd.row]
        key = blk * qd + Zd.col
        uniq, pair = np.unique(key, return_inverse=True)
        P = len(uniq)
        self.block, self.col = uniq // qd, uniq % qd
        self.A = sparse.csr_matrix((Zd.data, (pair, Zd.row)), shape=(P, n))
        self.A2 = sparse.csr_matrix((Zd.data**2, (pair, Zd.row)), shape=(P, n))
        comp = model.ident[drop_cols][self.col]
        self.comp = np.array([self.drop.index(int(t)) for t in comp], dtype=int)
        self.qd, self.B = qd, B
        # (block, component) groups of pairs, for the per-block influence sums.
        gkey = self.block * len(self.drop) + self.comp
        self.guniq, gidx = np.unique(gkey, return_inverse=True)
        self.G = sparse.csr_matrix((np.ones(P), (gidx, np.arange(P))),
                                   shape=(len(self.guniq), P))

    def _chunks(self, params, max_draws=None):
        fam, wy, wn = self.fam, self.wy, self.wn
        for _, eta, v, sc in self.engine.weighted_draws(params, self.chunk, max_draws):
            _, R, C = fam.obs_terms(eta, wy[:, None], wn[:, None])
            yield self.A @ R, -(self.A2 @ C), v, sc

    def _moments(self, params, max_draws=None):
        """Per pair: ``(E s, E s^2, E h)`` and each block's weight total."""
        P = len(self.block)
        s0 = np.zeros(self.B)
        m = np.zeros((3, P))
        for S, H, v, sc in self._chunks(params, max_draws):
            vp = v[self.block]
            s0 = s0 * sc + v.sum(axis=1)
            m *= sc[self.block]
            m[0] += np.einsum("pk,pk->p", S, vp)
            m[1] += np.einsum("pk,pk->p", S * S, vp)
            m[2] += np.einsum("pk,pk->p", H, vp)
        return m / s0[self.block], s0

    def _combine(self, e):
        e1, e2, eh = e
        S1 = np.bincount(self.col, weights=e1, minlength=self.qd)
        # Blocks are independent given the data: E[(sum_b s_b)^2] = (sum_b E s_b)^2 +
        # sum_b Var s_b.
        per_pair = e2 - e1**2 + eh
        per_col = S1**2 + np.bincount(self.col, weights=per_pair, minlength=self.qd)
        comp_of_col = np.zeros(self.qd, dtype=int)
        comp_of_col[self.col] = self.comp
        return 0.5 * np.bincount(comp_of_col, weights=per_col, minlength=len(self.drop)), S1

    def derivatives(self, params, with_mcse=False, max_draws=None):
        """The derivatives at ``params`` and, with ``with_mcse``, their MCSEs over the
        draws (a second pass: the delta method on the per-block self-normalized sums).
        ``max_draws``: on the first ``max_draws`` draws only (without MCSE)."""
        e, s0 = self._moments(params, max_draws)
        d, S1 = self._combine(e)
        if not with_mcse:
            return d
        e1, e2, eh = e
        a1 = S1[self.col] - e1  # dd/dE s_jb; dd/dE s^2 = dd/dE h = 1/2
        q2 = np.zeros(len(self.guniq))
        gblk = self.guniq // len(self.drop)
        for S, H, v, sc in self._chunks(params):
            psi = (a1[:, None] * (S - e1[:, None]) + 0.5 * (S * S - e2[:, None])
                   + 0.5 * (H - eh[:, None]))
            psi_g = self.G @ psi  # (groups, K)
            q2 = q2 * sc[gblk] ** 2 + np.einsum("gk,gk->g", psi_g**2, v[gblk] ** 2)
        var = np.bincount(self.guniq % len(self.drop), weights=q2 / s0[gblk] ** 2,
                          minlength=len(self.drop))
        return d, np.sqrt(var)

    def jacobian(self, params, rel=1e-4, max_draws=JACOBIAN_DRAWS):
        """``dd_t / dtheta_i`` by central differences on the first ``max_draws`` draws (the
        same draws at every point: the differences are smooth).  It only scales the
        estimate's share of the MCSE, so a few thousand draws do."""
        params = np.asarray(params, dtype=float)
        p = self.engine.data.k_fe
        J = np.zeros((len(self.drop), len(params)))
        for i in range(len(params)):
            h = rel * (max(1.0, abs(params[i])) if i < p else params[i])
            up, dn = params.copy(), params.copy()
            up[i] += h
            dn[i] -= h
            J[:, i] = (self.derivatives(up, max_draws=max_draws)
                       - self.derivatives(dn, max_draws=max_draws)) / (2 * h)
        return J
