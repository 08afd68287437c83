"""Exact maximum likelihood for a GLMM with a vector random effect per cluster (correlated
random intercept and slopes, unstructured covariance) by adaptive Gauss-Hermite quadrature.
Plain numpy/scipy, written independently of ``glmm_sm``.

Model: ``y_i | b ~ f(. ; eta_i)``, canonical link, ``eta_i = x_i' beta + z_i' b_l`` for
observation ``i`` of cluster ``l``, with ``b_l ~ N(0, Sigma)`` (``k x k``) independent over
clusters.  The likelihood is a product of ``k``-dimensional integrals

    L_l = int exp(g_l(b)) db,
    g_l(b) = sum_{i in l} [y_i eta_i - c(eta_i)] - b' Sigma^{-1} b / 2
             - log|Sigma| / 2 - k log(2 pi) / 2

(family constants added separately).  ``g_l`` is strictly concave.  Per cluster: its mode
``b_l`` (Newton with backtracking, :meth:`VectorRandomEffectsGLMM._modes`), the negative
Hessian there ``H_l = Z_l' W Z_l + Sigma^{-1}`` and the lower Cholesky factor ``R_l`` of
``H_l^{-1}``.  With the product rule of ``K`` Gauss-Hermite nodes per dimension (nodes
``x_q`` in R^k, weights ``w_q``, for ``int e^{-|x|^2} f(x) dx``; Liu and Pierce 1994,
Pinheiro and Bates 1995),

    L_l ~= 2^{k/2} |R_l| sum_q w_q exp(|x_q|^2 + g_l(b_l + sqrt(2) R_l x_q)).

The parameters are ``theta = (beta, vech(Sigma))``, the lower triangle of ``Sigma`` by rows
on the natural scale (for ``k = 2``: ``Var(first), Cov(second, first), Var(second)``).  With
``D_j = dSigma/dtheta_j`` and ``S = b b'``, the complete-data scores and curvatures in
``Sigma`` are (MCLA_SPEC section 12.1, one level)

    G_j = tr(Sigma^{-1} D_j Sigma^{-1} S) / 2 - tr(Sigma^{-1} D_j) / 2,
    H_ij = -tr(Sigma^{-1} D_i Sigma^{-1} D_j Sigma^{-1} S) + tr(Sigma^{-1} D_i Sigma^{-1} D_j) / 2.

Score and Hessian of the log-likelihood are the posterior moments of these (Louis'
identity) under the same quadrature rule, nodes held where the value put them; they differ
from the derivatives of the quadrature value by the quadrature error only.  The MLE
maximizes over ``(beta, log-Cholesky of Sigma)`` (Pinheiro and Bates 1996) with scipy's
``trust-exact``, then takes Newton steps on the natural scale; the standard errors are the
square roots of the diagonal of the inverse observed information on the natural scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from aghq import cumulants, glm_beta, log_constant
from scipy import optimize, special

__all__ = ["VectorAGHQResult", "VectorRandomEffectsGLMM", "log_cholesky_map", "product_rule",
           "vech_patterns"]

FAMILIES = ("bernoulli", "binomial", "poisson")
LOG_2PI = np.log(2.0 * np.pi)
#: A fit succeeds when the remaining Newton step is at most this many standard errors.
STEP_TOL = 1e-6


def vech_patterns(k):
    """The derivatives ``D_j = dSigma/dtheta_j`` of a symmetric ``k x k`` matrix.

    Returns
    -------
    rows, cols : ndarray of int, shape (k (k + 1) / 2,)
        The lower-triangle positions ``(r_j, s_j)``, ``r_j >= s_j``, row by row.
    D : ndarray, shape (k (k + 1) / 2, k, k)
        Symmetric 0/1 patterns: ones at ``(r_j, s_j)`` and ``(s_j, r_j)``.
    """
    rows, cols = np.tril_indices(k)
    D = np.zeros((len(rows), k, k))
    D[np.arange(len(rows)), rows, cols] = 1.0
    D[np.arange(len(rows)), cols, rows] = 1.0
    return rows, cols, D


def log_cholesky_map(phi, k):
    """The log-Cholesky map ``phi -> theta = vech(L L')`` and its first two derivatives.

    ``L`` is lower triangular with ``L_rr = exp(phi_rr)`` and ``L_rs = phi_rs`` (``r > s``),
    ``phi`` listing the lower triangle row by row, as ``theta`` does.

    Returns
    -------
    theta : ndarray, shape (m,)
    jac : ndarray, shape (m, m)
        ``d theta_j / d phi_p``.
    hess : ndarray, shape (m, m, m)
        ``d2 theta_j / d phi_p d phi_q`` (first index ``j``).
    """
    rows, cols, _ = vech_patterns(k)
    rows, cols = rows.tolist(), cols.tolist()  # Python ints: bool sums count, not "or"
    phi = np.asarray(phi, dtype=float)
    diag = np.equal(rows, cols)
    lvec = np.where(diag, np.exp(phi), phi)
    L = np.zeros((k, k))
    L[rows, cols] = lvec
    dl = np.where(diag, lvec, 1.0)  # dl_p / dphi_p
    d2l = np.where(diag, lvec, 0.0)
    m = len(rows)
    jac, hess = np.zeros((m, m)), np.zeros((m, m, m))
    for j, (r, s) in enumerate(zip(rows, cols, strict=True)):
        for p, (a, c) in enumerate(zip(rows, cols, strict=True)):
            # Sigma_rs = sum_t L_rt L_st
            d_sigma = (r == a) * L[s, c] + (s == a) * L[r, c]
            jac[j, p] = d_sigma * dl[p]
            hess[j, p, p] += d_sigma * d2l[p]
            for q, (d, e) in enumerate(zip(rows, cols, strict=True)):
                d2_sigma = (c == e) * ((r == a) * (s == d) + (s == a) * (r == d))
                hess[j, p, q] += d2_sigma * dl[p] * dl[q]
    return (L @ L.T)[rows, cols], jac, hess


def product_rule(n_nodes, k):
    """The ``k``-dimensional product Gauss-Hermite rule for ``int e^{-|x|^2} f(x) dx``.

    Returns
    -------
    nodes : ndarray, shape (n_nodes**k, k)
    log_w : ndarray, shape (n_nodes**k,)
        ``log w_q + |x_q|^2`` (the rule for ``int f(x) dx``).
    """
    x, w = np.polynomial.hermite.hermgauss(n_nodes)
    grids = np.meshgrid(*([x] * k), indexing="ij")
    nodes = np.stack([g.ravel() for g in grids], axis=1)
    log_w1 = np.log(w) + x**2
    log_w = sum(g.ravel() for g in np.meshgrid(*([log_w1] * k), indexing="ij"))
    return nodes, np.asarray(log_w, dtype=float)


@dataclass
class VectorAGHQResult:
    """The AGHQ maximum-likelihood estimate.

    Attributes
    ----------
    params : ndarray
        ``(beta..., vech(Sigma)...)`` on the natural scale.
    bse : ndarray
        Standard errors from the inverse observed information on that scale.
    cov : ndarray
        That inverse.
    llf : float
        Log-likelihood at ``params`` including the family's constants.
    gradient : ndarray
        Score at ``params`` on the natural scale.
    newton_step : ndarray
        ``-H^{-1} g`` at ``params``: how far the maximum may still be (optimizer error).
    hessian : ndarray
    n_nodes : int
        Gauss-Hermite nodes per dimension.
    success : bool
        The Hessian is negative definite and every remaining Newton step is at most
        ``STEP_TOL`` standard errors.
    nit : int
    message : str
        scipy's message (before the final Newton steps).
    optimizer_gradient_norm : float
        Norm of the gradient on the unconstrained scale where scipy stopped.
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
    optimizer_gradient_norm: float


class VectorRandomEffectsGLMM:
    """Log-likelihood, score and Hessian of a GLMM with a ``k``-vector effect per cluster.

    Parameters
    ----------
    y : array_like, shape (n,)
        Responses (successes for binomial).
    X : array_like, shape (n, p)
        Fixed-effects design.
    Z : array_like, shape (n, k)
        Random-effects design: row ``i`` multiplies the effect vector of its cluster.
    groups : array_like, shape (n,)
        Cluster labels (any hashable values).
    family : {"bernoulli", "binomial", "poisson"}
    trials : array_like, shape (n,), optional
        Binomial trials (default 1).
    n_nodes : int
        Gauss-Hermite nodes per dimension (``n_nodes**k`` per cluster).
    """

    def __init__(self, y, X, Z, groups, family, trials=None, n_nodes=20):
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}; got {family!r}")
        X, Z = np.asarray(X, dtype=float), np.asarray(Z, dtype=float)
        y = np.asarray(y, dtype=float)
        n = len(y)
        if (X.ndim != 2 or Z.ndim != 2 or y.shape != (n,) or X.shape[0] != n
                or Z.shape[0] != n or len(groups) != n):
            raise ValueError("y, X, Z and groups must have n rows: got shapes "
                             f"{y.shape}, {X.shape}, {Z.shape}, {np.shape(groups)}")
        if not (isinstance(n_nodes, int) and n_nodes >= 1):
            raise ValueError(f"n_nodes must be an integer >= 1; got {n_nodes!r}")
        trials = np.ones_like(y) if trials is None else np.asarray(trials, dtype=float)
        _, codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
        order = np.argsort(codes, kind="stable")
        self.family, self.n_nodes = family, n_nodes
        self.y, self.X, self.Z, self.trials = y[order], X[order], Z[order], trials[order]
        self.codes = codes[order]
        self.starts = np.flatnonzero(np.r_[True, np.diff(self.codes) != 0])
        self.n_clusters = len(self.starts)
        self.k_fe, self.k_re = X.shape[1], Z.shape[1]
        self.rows, self.cols, self.D = vech_patterns(self.k_re)
        self.k_vc = len(self.rows)
        self.log_const = log_constant(family, self.y, self.trials)
        self.nodes, self.log_w = product_rule(n_nodes, self.k_re)
        self._cache = None

    def _csum(self, a):
        """Sums of the rows of ``a`` within each cluster."""
        return np.add.reduceat(a, self.starts, axis=0)

    def _split(self, params):
        """``beta``, ``Sigma`` and ``Sigma^{-1}`` from ``params``, Sigma checked positive
        definite."""
        params = np.asarray(params, dtype=float)
        if params.shape != (self.k_fe + self.k_vc,):
            raise ValueError(f"params must be (beta ({self.k_fe}), vech(Sigma) "
                             f"({self.k_vc})); got {params}")
        Sigma = np.zeros((self.k_re, self.k_re))
        Sigma[self.rows, self.cols] = params[self.k_fe:]
        Sigma[self.cols, self.rows] = params[self.k_fe:]
        if not np.all(np.linalg.eigvalsh(Sigma) > 0):
            raise ValueError(f"Sigma must be positive definite; got {Sigma.tolist()}")
        return params[:self.k_fe], Sigma, np.linalg.inv(Sigma)

    def _mode_terms(self, eta0, b, Sigma_inv):
        """Per cluster: ``g(b)`` without constants, its gradient and negative Hessian."""
        eta = eta0 + np.einsum("ia,ia->i", self.Z, b[self.codes])
        c, c1, c2 = cumulants(self.family, eta, self.trials)
        Sb = b @ Sigma_inv
        value = self._csum(self.y * eta - c) - 0.5 * np.einsum("ja,ja->j", b, Sb)
        grad = self._csum(self.Z * (self.y - c1)[:, None]) - Sb
        neg_hess = self._csum(self.Z[:, :, None] * self.Z[:, None, :] * c2[:, None, None])
        return value, grad, neg_hess + Sigma_inv

    def _modes(self, eta0, Sigma_inv, tol=1e-13, maxiter=200):
        """Conditional modes ``b_l`` (J, k) and the negative Hessians ``H_l`` (J, k, k) there.

        Newton's method from ``b = 0`` with step halving until the Armijo condition holds
        (``g`` is strictly concave, so this converges from anywhere).  Within ``1e-10`` of
        the maximum the full step is taken: rounding would make ``g`` look flat there, and
        Newton's method converges quadratically.
        """
        b = np.zeros((self.n_clusters, self.k_re))
        value, grad, neg_hess = self._mode_terms(eta0, b, Sigma_inv)
        for _ in range(maxiter):
            step = np.linalg.solve(neg_hess, grad[:, :, None])[:, :, 0]
            if np.all(np.abs(step) <= tol * (1.0 + np.abs(b))):
                b = b + step
                return b, self._mode_terms(eta0, b, Sigma_inv)[2]
            decrement = np.einsum("ja,ja->j", grad, step)  # >= 0: the Newton decrement^2
            t = np.ones(self.n_clusters)
            for _ in range(60):
                new = b + t[:, None] * step
                new_value, new_grad, new_neg_hess = self._mode_terms(eta0, new, Sigma_inv)
                ok = (new_value >= value + 1e-4 * t * decrement) | (decrement <= 1e-10)
                if np.all(ok):
                    break
                t = np.where(ok, t, 0.5 * t)
            b, value, grad, neg_hess = new, new_value, new_grad, new_neg_hess
        raise RuntimeError(f"conditional modes did not converge in {maxiter} iterations")

    def quadrature(self, params):
        """The adaptive rule at ``params`` (the last one is cached).

        Returns
        -------
        log_l : ndarray, shape (J,)
            Log cluster integrals (without the family constants).
        b : ndarray, shape (J, Q, k)
            The nodes on the random-effects scale (``Q = n_nodes**k``).
        v : ndarray, shape (J, Q)
            Normalized weights (posterior probabilities of the nodes).
        eta : ndarray, shape (n, Q)
            Linear predictors at the nodes.
        """
        key = np.asarray(params, dtype=float).tobytes()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        beta, Sigma, Sigma_inv = self._split(params)
        eta0 = self.X @ beta
        b_hat, neg_hess = self._modes(eta0, Sigma_inv)
        R = np.linalg.cholesky(np.linalg.inv(neg_hess))
        b = b_hat[:, None, :] + np.sqrt(2.0) * np.einsum("jab,qb->jqa", R, self.nodes)
        eta = np.repeat(eta0[:, None], len(self.log_w), axis=1)
        for a in range(self.k_re):
            eta += self.Z[:, [a]] * b[self.codes, :, a]
        c, _, _ = cumulants(self.family, eta, self.trials[:, None])
        _, log_det = np.linalg.slogdet(Sigma)
        g = (self._csum(self.y[:, None] * eta - c)
             - 0.5 * np.einsum("jqa,ab,jqb->jq", b, Sigma_inv, b)
             - 0.5 * (log_det + self.k_re * LOG_2PI))
        a = g + self.log_w[None, :]
        log_jac = 0.5 * self.k_re * np.log(2.0) + np.log(np.diagonal(R, axis1=1, axis2=2)).sum(1)
        log_l = log_jac + special.logsumexp(a, axis=1)
        v = np.exp(a - special.logsumexp(a, axis=1, keepdims=True))
        self._cache = (key, (log_l, b, v, eta))
        return log_l, b, v, eta

    def loglike(self, params):
        """Log-likelihood including the family's constants."""
        return float(self.quadrature(params)[0].sum()) + self.log_const

    def _node_scores(self, params):
        """Complete-data scores ``G`` (J, p + m, Q) at every node, ``v``, ``A = Sigma^{-1} b``
        (J, Q, k) and ``c''`` (n, Q)."""
        _, _, Sigma_inv = self._split(params)
        _, b, v, eta = self.quadrature(params)
        _, c1, c2 = cumulants(self.family, eta, self.trials[:, None])
        r = self.y[:, None] - c1
        G_beta = np.stack([self._csum(self.X[:, [a]] * r) for a in range(self.k_fe)], axis=1)
        A = b @ Sigma_inv
        mult = np.where(self.rows == self.cols, 0.5, 1.0)
        G_vc = mult[None, :, None] * (A[:, :, self.rows] * A[:, :, self.cols]
                                      - Sigma_inv[self.rows, self.cols]).transpose(0, 2, 1)
        return np.concatenate([G_beta, G_vc], axis=1), v, A, c2

    def score(self, params):
        """Gradient of the log-likelihood on the natural scale ``(beta, vech(Sigma))``."""
        G, v, _, _ = self._node_scores(params)
        return np.einsum("jak,jk->a", G, v)

    def hessian(self, params):
        """Hessian on the natural scale: ``E[H_c] + Var[G]`` under the posterior (Louis)."""
        _, _, Sigma_inv = self._split(params)
        G, v, A, c2 = self._node_scores(params)
        p = self.k_fe
        D = G - np.einsum("jak,jk->ja", G, v)[:, :, None]
        H = np.einsum("jak,jbk,jk->ab", D, D, v)
        w_obs = np.einsum("ik,ik->i", c2, v[self.codes])
        H[:p, :p] -= (self.X * w_obs[:, None]).T @ self.X
        C = np.einsum("jqa,jqb,jq->ab", A, A, v)  # sum_l E_l[Sigma^-1 b b' Sigma^-1]
        P = Sigma_inv @ self.D  # Sigma^-1 D_j, (m, k, k)
        H[p:, p:] += (-np.einsum("iab,bc,jcd,da->ij", self.D, Sigma_inv, self.D, C)
                      + 0.5 * self.n_clusters * np.einsum("iab,jba->ij", P, P))
        return H

    def fit(self, start=None, gtol=1e-9, maxiter=200):
        """Maximize over ``(beta, log-Cholesky of Sigma)``; see :class:`VectorAGHQResult`.

        Parameters
        ----------
        start : array_like, optional
            ``(beta, vech(Sigma))``; default the GLM estimate of beta and ``Sigma = I``.
        gtol : float
            scipy's gradient tolerance on the unconstrained scale.
        maxiter : int
        """
        if start is None:
            vc = np.eye(self.k_re)[self.rows, self.cols]
            start = np.r_[glm_beta(self.y, self.X, self.family, self.trials), vc]
        start = np.asarray(start, dtype=float)
        _, Sigma, _ = self._split(start)
        phi = np.linalg.cholesky(Sigma)[self.rows, self.cols]
        diag = self.rows == self.cols
        phi[diag] = np.log(phi[diag])
        res = optimize.minimize(self._objective, np.r_[start[:self.k_fe], phi], jac=True,
                                hess=self._objective_hess, method="trust-exact",
                                options={"gtol": gtol, "maxiter": maxiter})
        params = self._polish(self._natural(res.x))
        return self._result(params, res)

    def _natural(self, x):
        """Natural-scale parameters from the unconstrained ``(beta, phi)``."""
        return np.r_[x[:self.k_fe], log_cholesky_map(x[self.k_fe:], self.k_re)[0]]

    def _polish(self, params, n_steps=3):
        """Plain Newton steps on the natural scale from near the maximum (scipy's trust
        region may stop on a roundoff-limited decrease before ``gtol``)."""
        for _ in range(n_steps):
            new = params - np.linalg.solve(self.hessian(params), self.score(params))
            try:
                self._split(new)
            except ValueError:
                break
            params = new
        return params

    def _objective(self, x):
        params = self._natural(x)
        g = self.score(params)
        _, jac, _ = log_cholesky_map(x[self.k_fe:], self.k_re)
        g = np.r_[g[:self.k_fe], jac.T @ g[self.k_fe:]]
        return -self.loglike(params), -g

    def _objective_hess(self, x):
        params = self._natural(x)
        p = self.k_fe
        _, jac, hess2 = log_cholesky_map(x[p:], self.k_re)
        J = np.eye(len(x))
        J[p:, p:] = jac
        H = J.T @ self.hessian(params) @ J
        H[p:, p:] += np.einsum("j,jpq->pq", self.score(params)[p:], hess2)
        return -H

    def _result(self, params, res):
        H = self.hessian(params)
        g = self.score(params)
        negdef = bool(np.all(np.linalg.eigvalsh(H) < 0))
        cov = -np.linalg.inv(H)
        bse = np.sqrt(np.diag(cov))
        step = -np.linalg.solve(H, g)
        return VectorAGHQResult(
            params=params, bse=bse, cov=cov, llf=self.loglike(params), gradient=g,
            newton_step=step, hessian=H, n_nodes=self.n_nodes,
            success=negdef and bool(np.all(np.abs(step) <= STEP_TOL * bse)),
            nit=int(res.nit), message=str(res.message),
            optimizer_gradient_norm=float(np.linalg.norm(res.jac)))
