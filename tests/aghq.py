"""Exact maximum likelihood for a GLMM with one random intercept per cluster, by adaptive
Gauss-Hermite quadrature (AGHQ).  Plain numpy/scipy, written independently of ``glmm_sm``.

Model: ``y_ij | u_i ~ f(. ; eta_ij)`` with ``eta_ij = x_ij' beta + u_i``, canonical link (or,
for the binomial families, the probit or complementary log-log link: see :func:`obs_terms`),
``u_i ~ N(0, nu)`` independent.  The likelihood is a product of one-dimensional integrals

    L_i(beta, nu) = int exp(g_i(u)) du,
    g_i(u) = sum_j [y_ij (x_ij' beta + u) - c(x_ij' beta + u)] - u^2 / (2 nu) - log(2 pi nu) / 2

(family constants ``log C(n, y)`` / ``-log y!`` added separately; with a non-canonical link
the bracket holds ``y log F(eta) + (n - y) log(1 - F(eta))``).  ``g_i`` is strictly
concave (``F`` and ``1 - F`` are log-concave for the three binomial links).  Per cluster:
its mode ``u_i`` (safeguarded Newton inside a bracket that must hold the root, see
:func:`_modes`), its curvature ``h_i = -g_i''(u_i)``, and then with the K Gauss-Hermite
nodes ``x_k`` and weights ``w_k`` (for ``int e^{-x^2} f(x) dx``),

    L_i ~= s_i sum_k w_k exp(x_k^2 + g_i(u_i + s_i x_k)),   s_i = sqrt(2 / h_i).

The score and Hessian are the posterior moments of the complete-data score and Hessian
(Louis' identity) under the same quadrature rule, with the nodes held where the value put
them; they differ from the exact derivatives of the quadrature value by the quadrature
error only.  The MLE maximizes over ``(beta, log nu)`` with scipy's ``trust-exact``; the
standard errors are the square roots of the diagonal of the inverse observed information
on the ``(beta, nu)`` scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

__all__ = ["AGHQResult", "RandomInterceptGLMM", "glm_beta"]

FAMILIES = ("bernoulli", "binomial", "poisson")
LINKS = {"bernoulli": ("logit", "probit", "cloglog"), "binomial": ("logit", "probit", "cloglog"),
         "poisson": ("log",)}
LOG_2PI = np.log(2.0 * np.pi)
#: A fit succeeds when the remaining Newton step is at most this many standard errors.
STEP_TOL = 1e-6


def cumulants(family, eta, trials):
    """``c(eta)``, ``c'(eta)``, ``c''(eta)`` of the family (canonical link), elementwise.

    ``trials`` broadcasts against ``eta`` (1 for Bernoulli; unused for Poisson).
    """
    if family == "poisson":
        mu = np.exp(np.minimum(eta, 700.0))
        return mu, mu, mu
    p = special.expit(eta)
    return trials * np.logaddexp(0.0, eta), trials * p, trials * p * special.expit(-eta)


def obs_terms(family, link, eta, y, trials):
    """Per observation: the log-density without constants, its first derivative in ``eta``
    and minus its second derivative (the observed information), elementwise.

    Canonical links give ``y eta - c``, ``y - c'`` and ``c''``.  Probit: with
    ``lam(x) = phi(x) / Phi(x)``, ``d log Phi(x) = lam(x)`` and
    ``-d^2 log Phi(x) = lam(x) (x + lam(x))``; ``1 - Phi(eta) = Phi(-eta)``.  Complementary
    log-log, ``F = 1 - exp(-mu)``, ``mu = e^eta``: ``log(1 - F) = -mu``, ``d log F = mu /
    (e^mu - 1)`` and ``-d^2 log F = mu (mu e^mu - e^mu + 1) / (e^mu - 1)^2``.
    """
    if link in ("logit", "log"):
        c, c1, c2 = cumulants(family, eta, trials)
        return y * eta - c, y - c1, c2
    f = trials - y
    if link == "probit":
        def lam(x):
            return np.exp(special.log_ndtr(x) * -1.0 - 0.5 * x * x - 0.5 * LOG_2PI)
        a, b = lam(eta), lam(-eta)
        ll = y * special.log_ndtr(eta) + f * special.log_ndtr(-eta)
        return ll, y * a - f * b, y * a * (eta + a) + f * b * (b - eta)
    mu = np.exp(np.minimum(eta, 700.0))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        em1 = np.expm1(mu)
        d1 = np.where(mu > 700.0, 0.0, mu / em1)
        # mu e^mu - e^mu + 1 = (mu - 1) em1 + mu: its Taylor series mu^2/2 + mu^3/3 + ...
        # where the two parts cancel.
        num = np.where(mu < 1e-4, mu * mu * (0.5 + mu / 3.0 + mu * mu / 8.0),
                       (mu - 1.0) * em1 + mu)
        d2 = np.where(mu > 700.0, 0.0, mu * (num / em1) / em1)
        lp = np.where(mu > 1.0, np.log1p(-np.exp(-mu)), np.log(-np.expm1(-mu)))
    return y * lp - f * mu, y * d1 - f * mu, y * d2 + f * mu


def log_constant(family, y, trials):
    """The family's normalizing constant summed over observations: ``sum log C(n, y)`` or
    ``-sum log y!``."""
    if family == "poisson":
        return float(-special.gammaln(y + 1.0).sum())
    return float((special.gammaln(trials + 1.0) - special.gammaln(y + 1.0)
                  - special.gammaln(trials - y + 1.0)).sum())


@dataclass
class AGHQResult:
    """The AGHQ maximum-likelihood estimate.

    Attributes
    ----------
    params : ndarray
        ``(beta..., nu)``, ``nu`` the variance of the random intercept.
    bse : ndarray
        Standard errors from the inverse observed information on the ``(beta, nu)`` scale.
    cov : ndarray
        That inverse.
    llf : float
        Log-likelihood at ``params`` including the family's constants.
    gradient : ndarray
        Score at ``params`` on the ``(beta, nu)`` scale.
    newton_step : ndarray
        ``-H^{-1} g`` at ``params``: how far the maximum may still be (optimizer error).
    hessian : ndarray
    n_nodes : int
    success : bool
        The Hessian is negative definite and every remaining Newton step is at most
        ``STEP_TOL`` standard errors.
    nit : int
    message : str
        scipy's message (before the final Newton steps).
    """

    params: np.ndarray
    bse: np.ndarray
    cov: np.ndarray
    llf: float
    gradient: np.ndarray
    newton_step: np.ndarray
    hessian: np.ndarray
    n_nodes: int
    success: bool
    nit: int
    message: str


class RandomInterceptGLMM:
    """Log-likelihood, score and Hessian of a random-intercept GLMM by AGHQ.

    Parameters
    ----------
    y : array_like, shape (n,)
        Responses (successes for binomial).
    X : array_like, shape (n, p)
        Fixed-effects design.
    groups : array_like, shape (n,)
        Cluster labels (any hashable values).
    family : {"bernoulli", "binomial", "poisson"}
    trials : array_like, shape (n,), optional
        Binomial trials (default 1).
    n_nodes : int
        Gauss-Hermite nodes per cluster.
    link : {"logit", "probit", "cloglog", "log"}, optional
        Default the canonical link (logit, or log for Poisson).
    """

    def __init__(self, y, X, groups, family, trials=None, n_nodes=60, link=None):
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}; got {family!r}")
        link = link or LINKS[family][0]
        if link not in LINKS[family]:
            raise ValueError(f"link must be one of {LINKS[family]}; got {link!r}")
        self.link = link
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        if X.ndim != 2 or y.shape != (X.shape[0],) or len(groups) != len(y):
            raise ValueError("y, X and groups must have n rows: got shapes "
                             f"{y.shape}, {X.shape}, {np.shape(groups)}")
        if not (isinstance(n_nodes, int) and n_nodes >= 1):
            raise ValueError(f"n_nodes must be an integer >= 1; got {n_nodes!r}")
        trials = np.ones_like(y) if trials is None else np.asarray(trials, dtype=float)
        _, codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
        order = np.argsort(codes, kind="stable")
        self.family, self.n_nodes = family, n_nodes
        self.y, self.X, self.trials = y[order], X[order], trials[order]
        self.codes = codes[order]
        self.starts = np.flatnonzero(np.r_[True, np.diff(self.codes) != 0])
        self.n_clusters = len(self.starts)
        self.k_fe = X.shape[1]
        self.log_const = log_constant(family, self.y, self.trials)
        nodes, weights = np.polynomial.hermite.hermgauss(n_nodes)
        self.nodes, self.log_w = nodes, np.log(weights) + nodes**2
        self._cache = None

    def _csum(self, a):
        """Sums of the rows of ``a`` within each cluster."""
        return np.add.reduceat(a, self.starts, axis=0)

    def _mode_derivs(self, eta0, u, nu):
        """``g'(u)`` and ``g''(u)`` per cluster (``u`` one value per cluster)."""
        _, d1, info = obs_terms(self.family, self.link, eta0 + u[self.codes], self.y,
                                self.trials)
        return self._csum(d1) - u / nu, -self._csum(info) - 1.0 / nu

    def _modes(self, eta0, nu, tol=1e-13, maxiter=200):
        """Conditional modes of the random intercepts and the curvature ``h = -g''``.

        ``g'`` is decreasing with ``g'(u) = S(u) - u/nu`` and ``S`` decreasing, so the root
        lies between 0 and ``nu S(0)``: Newton steps that leave the current bracket are
        replaced by bisection, and the bracket shrinks at every step.
        """
        u = np.zeros(self.n_clusters)
        d1, d2 = self._mode_derivs(eta0, u, nu)
        lo, hi = np.minimum(0.0, nu * d1), np.maximum(0.0, nu * d1)
        for _ in range(maxiter):
            step = -d1 / d2
            if np.all(np.abs(step) <= tol * (1.0 + np.abs(u))):
                return u + step, -d2
            new = u + step
            new = np.where((new < lo) | (new > hi), 0.5 * (lo + hi), new)
            d1, d2 = self._mode_derivs(eta0, new, nu)
            lo, hi = np.where(d1 > 0, new, lo), np.where(d1 > 0, hi, new)
            u = new
        raise RuntimeError(f"conditional modes did not converge in {maxiter} iterations")

    def _split(self, params):
        params = np.asarray(params, dtype=float)
        if params.shape != (self.k_fe + 1,) or not params[-1] > 0:
            raise ValueError(f"params must be (beta ({self.k_fe}), nu > 0); got {params}")
        return params[:-1], float(params[-1])

    def quadrature(self, params):
        """The adaptive rule at ``params`` (the last one is cached).

        Returns
        -------
        log_l : ndarray, shape (J,)
            Log cluster integrals (without the family constants).
        u : ndarray, shape (J, K)
            The nodes on the random-intercept scale.
        v : ndarray, shape (J, K)
            Normalized weights (posterior probabilities of the nodes).
        eta : ndarray, shape (n, K)
            Linear predictors at the nodes.
        """
        beta, nu = self._split(params)
        key = np.asarray(params, dtype=float).tobytes()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        eta0 = self.X @ beta
        u_hat, h = self._modes(eta0, nu)
        s = np.sqrt(2.0 / h)
        u = u_hat[:, None] + s[:, None] * self.nodes[None, :]
        eta = eta0[:, None] + u[self.codes]
        ll, _, _ = obs_terms(self.family, self.link, eta, self.y[:, None], self.trials[:, None])
        g = self._csum(ll) - u**2 / (2 * nu) - 0.5 * (LOG_2PI + np.log(nu))
        a = g + self.log_w[None, :]
        log_l = np.log(s) + special.logsumexp(a, axis=1)
        v = np.exp(a - special.logsumexp(a, axis=1, keepdims=True))
        self._cache = (key, (log_l, u, v, eta))
        return log_l, u, v, eta

    def loglike(self, params):
        """Log-likelihood including the family's constants."""
        return float(self.quadrature(params)[0].sum()) + self.log_const

    def _node_scores(self, params):
        """Complete-data scores ``G`` (J, p+1, K) at every node, ``v``, ``u``, ``c''``."""
        _, nu = self._split(params)
        _, u, v, eta = self.quadrature(params)
        _, r, c2 = obs_terms(self.family, self.link, eta, self.y[:, None], self.trials[:, None])
        G_beta = self._csum(self.X[:, :, None] * r[:, None, :])
        G_nu = (u**2 / nu - 1.0) / (2.0 * nu)
        return np.concatenate([G_beta, G_nu[:, None, :]], axis=1), v, u, c2

    def score(self, params):
        """Gradient of the log-likelihood on the ``(beta, nu)`` scale."""
        G, v, _, _ = self._node_scores(params)
        return np.einsum("jak,jk->a", G, v)

    def hessian(self, params):
        """Hessian on the ``(beta, nu)`` scale: ``E[H_c] + Var[G]`` under the posterior."""
        _, nu = self._split(params)
        G, v, u, c2 = self._node_scores(params)
        p = self.k_fe
        gbar = np.einsum("jak,jk->ja", G, v)
        D = G - gbar[:, :, None]
        H = np.einsum("jak,jbk,jk->ab", D, D, v)
        w_obs = np.einsum("ik,ik->i", c2, v[self.codes])
        H[:p, :p] -= (self.X * w_obs[:, None]).T @ self.X
        H[p, p] += float(np.sum(v * (0.5 / nu**2 - u**2 / nu**3)))
        return H

    def fit(self, start=None, gtol=1e-9, maxiter=200):
        """Maximize over ``(beta, log nu)``; see :class:`AGHQResult`.

        Parameters
        ----------
        start : array_like, optional
            ``(beta, nu)``; default the GLM estimate of beta and ``nu = 1``.
        gtol : float
            scipy's gradient tolerance on the ``(beta, log nu)`` scale.
        """
        if start is None:
            start = np.r_[glm_beta(self.y, self.X, self.family, self.trials, link=self.link),
                          1.0]
        start = np.asarray(start, dtype=float)
        res = optimize.minimize(self._objective, np.r_[start[:-1], np.log(start[-1])],
                                jac=True, hess=self._objective_hess, method="trust-exact",
                                options={"gtol": gtol, "maxiter": maxiter})
        params = self._polish(np.r_[res.x[:-1], np.exp(res.x[-1])])
        return self._result(params, res)

    def _polish(self, params, n_steps=3):
        """Plain Newton steps on the ``(beta, nu)`` scale from near the maximum: scipy's trust
        region may stop on a roundoff-limited decrease before ``gtol``; quadratic
        convergence then takes the step far below the standard errors."""
        for _ in range(n_steps):
            step = -np.linalg.solve(self.hessian(params), self.score(params))
            if not params[-1] + step[-1] > 0:
                break
            params = params + step
        return params

    def _objective(self, x):
        params = np.r_[x[:-1], np.exp(x[-1])]
        g = self.score(params)
        g[-1] *= params[-1]
        return -self.loglike(params), -g

    def _objective_hess(self, x):
        params = np.r_[x[:-1], np.exp(x[-1])]
        nu = params[-1]
        J = np.r_[np.ones(self.k_fe), nu]
        H = self.hessian(params) * np.outer(J, J)
        H[-1, -1] += self.score(params)[-1] * nu
        return -H

    def _result(self, params, res):
        H = self.hessian(params)
        g = self.score(params)
        negdef = bool(np.all(np.linalg.eigvalsh(H) < 0))
        cov = -np.linalg.inv(H)
        bse = np.sqrt(np.diag(cov))
        step = -np.linalg.solve(H, g)
        return AGHQResult(params=params, bse=bse, cov=cov, llf=self.loglike(params),
                          gradient=g, newton_step=step, hessian=H, n_nodes=self.n_nodes,
                          success=negdef and bool(np.all(np.abs(step) <= STEP_TOL * bse)),
                          nit=int(res.nit), message=str(res.message))


def glm_beta(y, X, family, trials=None, tol=1e-12, maxiter=100, link=None):
    """The GLM (no random effect) MLE of beta by Newton's method, a start for :meth:`fit`."""
    y, X = np.asarray(y, dtype=float), np.asarray(X, dtype=float)
    trials = np.ones_like(y) if trials is None else np.asarray(trials, dtype=float)
    link = link or LINKS[family][0]
    if family == "poisson":
        z = np.log(y + 0.5)
    else:
        pr = (y + 0.5) / (trials + 1.0)
        z = {"logit": special.logit, "probit": special.ndtri,
             "cloglog": lambda q: np.log(-np.log1p(-q))}[link](pr)
    beta = np.linalg.lstsq(X, z, rcond=None)[0]
    for _ in range(maxiter):
        _, d1, info = obs_terms(family, link, X @ beta, y, trials)
        step = np.linalg.solve((X * info[:, None]).T @ X, X.T @ d1)
        beta = beta + step
        if np.max(np.abs(step)) <= tol * (1.0 + np.max(np.abs(beta))):
            break
    return beta


class NegBinRandomIntercept(RandomInterceptGLMM):
    """The negative binomial (NB2, log link) random-intercept model by AGHQ, with an offset.

    ``y_ij | u_i ~ NB(mean mu_ij, variance mu_ij + alpha mu_ij^2)``,
    ``log mu_ij = offset_ij + x_ij' beta + u_i``; with ``theta = 1/alpha``

        log f(y | eta) = lgamma(y + theta) - lgamma(theta) - lgamma(y + 1)
                         + theta log theta + y eta - (y + theta) log(theta + e^eta),

    written with ``log1p`` as ``... + y log alpha + y eta - (y + theta) log(1 + alpha e^eta)``.
    ``g_i`` is strictly concave in ``u`` (``d2/d eta2 log f = -(y + theta) theta mu /
    (theta + mu)^2``), so the bracketed Newton of :meth:`_modes` applies.  Parameters are
    ``(beta..., nu, alpha)``.  The score and Hessian are central finite differences of the
    quadrature log-likelihood (a smooth deterministic function of the parameters), and the
    fit maximizes over ``(beta, log nu, log alpha)``.
    """

    def __init__(self, y, X, groups, offset=None, n_nodes=60):
        super().__init__(y, X, groups, "poisson", None, n_nodes)
        n = len(self.y)
        _, codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
        order = np.argsort(codes, kind="stable")
        off = np.zeros(n) if offset is None else np.asarray(offset, dtype=float)
        self.offset = off[order]
        self.log_const = float(-special.gammaln(self.y + 1).sum())
        self._alpha = None

    def _split(self, params):
        params = np.asarray(params, dtype=float)
        if params.shape != (self.k_fe + 2,) or not (params[-1] > 0 and params[-2] > 0):
            raise ValueError(f"params must be (beta ({self.k_fe}), nu > 0, alpha > 0); "
                             f"got {params}")
        return params[:-2], float(params[-2])

    def _mode_derivs(self, eta0, u, nu):
        a = self._alpha
        mu = np.exp(eta0 + u[self.codes])
        d1 = (self.y - mu) / (1.0 + a * mu)
        d2 = (1.0 + a * self.y) * mu / (1.0 + a * mu) ** 2
        return self._csum(d1) - u / nu, -self._csum(d2) - 1.0 / nu

    def _log_f(self, eta):
        a = self._alpha
        th = 1.0 / a
        y = self.y[:, None]
        return (special.gammaln(y + th) - special.gammaln(th) + y * np.log(a)
                + y * eta - (y + th) * np.log1p(a * np.exp(eta)))

    def quadrature(self, params):
        beta, nu = self._split(params)
        self._alpha = float(params[-1])
        eta0 = self.X @ beta + self.offset
        u_hat, h = self._modes(eta0, nu)
        s = np.sqrt(2.0 / h)
        u = u_hat[:, None] + s[:, None] * self.nodes[None, :]
        eta = eta0[:, None] + u[self.codes]
        g = (self._csum(self._log_f(eta)) - u**2 / (2 * nu)
             - 0.5 * (LOG_2PI + np.log(nu)))
        a = g + self.log_w[None, :]
        return np.log(s) + special.logsumexp(a, axis=1), u, None, eta

    def _x_to_params(self, x):
        return np.r_[x[:-2], np.exp(x[-2:])]

    def _fd(self, f, x, h):
        x = np.asarray(x, dtype=float)
        out = []
        for j in range(len(x)):
            e = np.zeros_like(x)
            e[j] = h[j]
            out.append((f(x + e) - f(x - e)) / (2.0 * h[j]))
        return np.array(out).T

    def score(self, params):
        params = np.asarray(params, dtype=float)
        return self._fd(self.loglike, params, 1e-5 * np.maximum(np.abs(params), 0.1))

    def hessian(self, params):
        params = np.asarray(params, dtype=float)
        H = self._fd(self.score, params, 1e-4 * np.maximum(np.abs(params), 0.1))
        return 0.5 * (H + H.T)

    def fit(self, start=None, gtol=1e-9, maxiter=200):
        """Maximize over ``(beta, log nu, log alpha)`` (BFGS on the quadrature value with
        difference gradients, then Newton steps on the ``(beta, nu, alpha)`` scale)."""
        if start is None:
            start = np.r_[glm_beta(self.y, self.X, "poisson"), 0.5, 0.5]
        start = np.asarray(start, dtype=float)

        def obj(x):
            return -self.loglike(self._x_to_params(x))

        x0 = np.r_[start[:-2], np.log(start[-2:])]
        res = optimize.minimize(obj, x0, method="BFGS",
                                options={"gtol": 1e-7, "maxiter": maxiter})
        params = self._x_to_params(res.x)
        for _ in range(4):
            step = -np.linalg.solve(self.hessian(params), self.score(params))
            if not np.all(params[-2:] + step[-2:] > 0):
                break
            params = params + step
        return self._result(params, res)
