"""Exact maximum likelihood for a GLMM with nested random intercepts, by nested adaptive
Gauss-Hermite quadrature.  Plain numpy/scipy, written independently of ``glmm_sm`` (it shares
only the cumulants of :mod:`aghq`, the one-level reference).

Model: observation ``i`` of inner unit ``j`` (a mother) of outer unit ``c`` (a community),
``eta_i = x_i' beta + a_c + b_j``, ``a_c ~ N(0, nu_a)``, ``b_j ~ N(0, nu_b)``, all
independent, canonical link.  The likelihood is a product over outer units of

    L_c = int phi(a; nu_a) prod_{j in c} I_j(a) da,
    I_j(a) = int phi(b; nu_b) prod_{i in j} f(y_i | x_i' beta + a + b) db.

Inner integrals: for each outer node ``a`` and each inner unit, the mode of the integrand in
``b`` by safeguarded Newton (the integrand is log-concave) and ``K_in`` Gauss-Hermite nodes
around it, scaled by the curvature there.  Outer integral: the mode ``a_c`` of
``log phi(a) + sum_j log I_j(a)`` (Newton steps with the exact derivatives of the inner
rule's value in ``a``: the posterior mean and variance of the inner score, Louis' identity)
and ``K_out`` nodes scaled by its curvature.  Both rules are adaptive, so the error falls
quickly with the numbers of nodes; :func:`node_study` shows it.

The score is the posterior mean of the complete-data score under the nested rule (Louis'
identity).  The MLE maximizes over ``(beta, log nu_a, log nu_b)`` with BFGS on that score,
then polishes with Newton steps on the central differences of the score; standard errors
come from that Hessian on the ``(beta, nu)`` scale.  Every step is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from aghq import cumulants, log_constant
from scipy import optimize

__all__ = ["NestedInterceptGLMM", "NestedResult"]

LOG_2PI = np.log(2.0 * np.pi)


@dataclass
class NestedResult:
    """The nested-AGHQ maximum-likelihood estimate.

    Attributes
    ----------
    params : ndarray
        ``(beta..., nu_a, nu_b)``.
    bse : ndarray
        Standard errors from the inverse observed information on that scale.
    llf : float
        Log-likelihood at ``params``, the family's constants included.
    newton_step : ndarray
        The remaining Newton step at ``params`` (how far the maximum may still be).
    n_nodes : tuple of int
        ``(K_out, K_in)``.
    """

    params: np.ndarray
    bse: np.ndarray
    llf: float
    newton_step: np.ndarray
    n_nodes: tuple


class NestedInterceptGLMM:
    """Log-likelihood of a two-level nested random-intercept GLMM by nested AGHQ.

    Parameters
    ----------
    y, X : array_like
        Responses (successes for binomial) and the fixed-effects design.
    outer, inner : array_like, shape (n,)
        Outer and inner unit labels; an inner label is read within its outer unit (the same
        inner label in two outer units is two units, as lme4's ``(1 | outer/inner)``).
    family : {"bernoulli", "binomial", "poisson"}
    trials : array_like, optional
    n_nodes : (int, int)
        Gauss-Hermite nodes of the outer and inner rules.
    """

    def __init__(self, y, X, outer, inner, family, trials=None, n_nodes=(20, 20)):
        y = np.asarray(y, dtype=float)
        X = np.asarray(X, dtype=float)
        trials = np.ones_like(y) if trials is None else np.asarray(trials, dtype=float)
        oc = np.unique(np.asarray(outer).astype(str), return_inverse=True)[1]
        pair = np.char.add(np.char.add(np.asarray(outer).astype(str), "\x00"),
                           np.asarray(inner).astype(str))
        ic = np.unique(pair, return_inverse=True)[1]
        order = np.lexsort((ic, oc))
        self.family = family
        self.y, self.X, self.trials = y[order], X[order], trials[order]
        self.oc, self.ic = oc[order], ic[order]
        # inner units renumbered in order of appearance; their outer unit
        _, first, self.inner_of_obs = np.unique(self.ic, return_index=True, return_inverse=True)
        order_units = np.argsort(first)
        rank = np.empty_like(order_units)
        rank[order_units] = np.arange(len(order_units))
        self.inner_of_obs = rank[self.inner_of_obs]
        self.n_inner = len(first)
        self.outer_of_inner = np.zeros(self.n_inner, dtype=int)
        self.outer_of_inner[self.inner_of_obs] = self.oc
        self.n_outer = int(self.oc.max()) + 1
        self.k_fe = X.shape[1]
        self.log_const = log_constant(family, self.y, self.trials)
        self.n_nodes = tuple(int(k) for k in n_nodes)
        xo, wo = np.polynomial.hermite.hermgauss(self.n_nodes[0])
        xi, wi = np.polynomial.hermite.hermgauss(self.n_nodes[1])
        self.xo, self.lwo = xo, np.log(wo) + xo**2
        self.xi, self.lwi = xi, np.log(wi) + xi**2

    # ---------------------------------------------------------------- inner integrals
    def _inner_sum(self, a):
        """Sums over the observations of each inner unit (rows: inner units)."""
        out = np.zeros((self.n_inner,) + a.shape[1:])
        np.add.at(out, self.inner_of_obs, a)
        return out

    def _inner_derivs(self, base, b, nu_b):
        """``g(b)``, ``g'(b)``, ``g''(b)`` of each inner unit's log integrand (up to a
        constant)."""
        eta = base + b[self.inner_of_obs]
        c0, c1, c2 = cumulants(self.family, eta, self.trials[:, None])
        y = self.y[:, None]
        return (self._inner_sum(y * eta - c0) - 0.5 * b**2 / nu_b,
                self._inner_sum(y - c1) - b / nu_b, -self._inner_sum(c2) - 1.0 / nu_b)

    def _inner(self, eta0, a, nu_b, tol=1e-9, maxiter=100, want_score=False):
        """log I_j(a) and its first two derivatives in ``a``, for outer values ``a``
        (shape (J_outer, K) of each inner unit's outer unit, given per inner unit as
        ``a_inner`` of shape (J_inner, K)).

        Returns ``(log_I, d1, d2)``, each (J_inner, K).
        """
        J, K = a.shape
        obs_a = a[self.inner_of_obs]                                   # (n, K)
        base = eta0[:, None] + obs_a
        y, t = self.y[:, None], self.trials[:, None]
        # Newton steps on the concave log integrand g(b), halved until g does not decrease
        b = np.zeros((J, K))
        g0, g1, g2 = self._inner_derivs(base, b, nu_b)
        for _ in range(maxiter):
            step = -g1 / g2
            if np.all(np.abs(step) <= tol * (1.0 + np.abs(b))):
                b = b + step
                break
            for _ in range(60):
                h0, h1, h2 = self._inner_derivs(base, b + step, nu_b)
                worse = h0 < g0 - 1e-12 * (1.0 + np.abs(g0))  # beyond rounding
                if not worse.any():
                    break
                step = np.where(worse, 0.5 * step, step)
            b, g0, g1, g2 = b + step, h0, h1, h2
        else:
            raise RuntimeError("inner modes did not converge")
        _, _, c2 = cumulants(self.family, base + b[self.inner_of_obs], t)
        h = self._inner_sum(c2) + 1.0 / nu_b
        s = np.sqrt(2.0 / h)                                           # (J, K)
        nodes = b[:, :, None] + s[:, :, None] * self.xi                 # (J, K, Ki)
        eta = base[:, :, None] + nodes[self.inner_of_obs]              # (n, K, Ki)
        c0, c1, c2 = cumulants(self.family, eta, t[:, :, None])
        ll = self._inner_sum(y[:, :, None] * eta - c0)                   # (J, K, Ki)
        lp = -0.5 * nodes**2 / nu_b - 0.5 * (LOG_2PI + np.log(nu_b))
        terms = self.lwi + ll + lp
        mx = terms.max(axis=2, keepdims=True)
        w = np.exp(terms - mx)
        tot = w.sum(axis=2, keepdims=True)
        log_I = (mx + np.log(tot))[:, :, 0] + np.log(s)
        v = w / tot                                                    # posterior weights
        score = self._inner_sum(y[:, :, None] - c1)                    # d loglik / d a
        info = self._inner_sum(c2)
        m1 = (v * score).sum(axis=2)
        d1 = m1
        d2 = (v * (score**2 - info)).sum(axis=2) - m1**2
        if not want_score:
            return log_I, d1, d2
        # posterior means, under the inner rule at each outer value, of the complete-data
        # scores in beta (sum_i (y_i - c'_i) x_i) and in nu_b ((b^2 - nu_b) / (2 nu_b^2))
        r = (v[self.inner_of_obs] * (y[:, :, None] - c1)).sum(axis=2)     # (n, K)
        s_beta = np.zeros((self.n_inner, K, self.k_fe))
        np.add.at(s_beta, self.inner_of_obs, r[:, :, None] * self.X[:, None, :])
        s_nub = (v * (nodes**2 - nu_b)).sum(axis=2) / (2.0 * nu_b**2)
        return log_I, d1, d2, s_beta, s_nub

    def _outer_terms(self, eta0, a, nu_a, nu_b):
        """``log phi(a) + sum_j log I_j(a)`` per outer unit and its derivatives, for
        ``a`` of shape (C, K)."""
        log_I, d1, d2 = self._inner(eta0, a[self.outer_of_inner], nu_b)
        g = np.zeros(a.shape)
        g1 = np.zeros(a.shape)
        g2 = np.zeros(a.shape)
        np.add.at(g, self.outer_of_inner, log_I)
        np.add.at(g1, self.outer_of_inner, d1)
        np.add.at(g2, self.outer_of_inner, d2)
        g += -0.5 * a**2 / nu_a - 0.5 * (LOG_2PI + np.log(nu_a))
        return g, g1 - a / nu_a, g2 - 1.0 / nu_a

    def evaluate(self, params, score=False):
        """The log-likelihood at ``params = (beta, nu_a, nu_b)``, and with ``score`` its
        gradient on that scale (Louis' identity under the nested rule, nodes held where the
        value put them: it differs from the derivative of the quadrature value by the
        quadrature error only)."""
        params = np.asarray(params, dtype=float)
        beta, nu_a, nu_b = params[:-2], float(params[-2]), float(params[-1])
        if not (nu_a > 0 and nu_b > 0):
            return (-np.inf, None) if score else -np.inf
        eta0 = self.X @ beta
        # the outer integrand is log-concave too (a marginal of a log-concave density):
        # Newton steps, halved until its log does not decrease
        a = np.zeros((self.n_outer, 1))
        g0, g1, g2 = self._outer_terms(eta0, a, nu_a, nu_b)
        for _ in range(200):
            step = -g1 / g2
            if np.all(np.abs(step) <= 1e-9 * (1.0 + np.abs(a))):
                a = a + step
                break
            for _ in range(40):
                h0, h1, h2 = self._outer_terms(eta0, a + step, nu_a, nu_b)
                worse = h0 < g0 - 1e-12 * (1.0 + np.abs(g0))  # beyond rounding
                if not worse.any():
                    break
                step = np.where(worse, 0.5 * step, step)
            gain = h0 - g0
            a, g0, g1, g2 = a + step, h0, h1, h2
            # the derivatives are the rule's posterior moments, exact up to the quadrature
            # error: where steps along them no longer raise the value, the mode is found to
            # that accuracy (the rule is valid wherever it is centred)
            if np.all((np.abs(step) <= 1e-7 * (1.0 + np.abs(a))) | (gain <= 1e-10)):
                break
        else:
            raise RuntimeError("outer modes did not converge")
        _, _, g2 = self._outer_terms(eta0, a, nu_a, nu_b)
        s = np.sqrt(2.0 / -g2)                                         # (C, 1)
        nodes = a + s * self.xo[None, :]                               # (C, Ko)
        log_I, _, _, s_beta, s_nub = self._inner(eta0, nodes[self.outer_of_inner], nu_b,
                                                 want_score=True)
        g = np.zeros(nodes.shape)
        np.add.at(g, self.outer_of_inner, log_I)
        g += -0.5 * nodes**2 / nu_a - 0.5 * (LOG_2PI + np.log(nu_a))
        terms = self.lwo + g
        mx = terms.max(axis=1, keepdims=True)
        w = np.exp(terms - mx)
        tot = w.sum(axis=1, keepdims=True)
        log_L = mx[:, 0] + np.log(tot[:, 0]) + np.log(s[:, 0])
        value = float(log_L.sum() + self.log_const)
        if not score:
            return value
        u = (w / tot)[self.outer_of_inner]                             # (J, Ko)
        g_beta = np.einsum("jk,jkp->p", u, s_beta)
        g_nub = float((u * s_nub).sum())
        g_nua = float(((w / tot) * (nodes**2 - nu_a)).sum() / (2.0 * nu_a**2))
        return value, np.r_[g_beta, g_nua, g_nub]

    def loglike(self, params):
        """The log-likelihood at ``params = (beta, nu_a, nu_b)``."""
        return self.evaluate(params)

    def score(self, params):
        """Its gradient on the ``(beta, nu_a, nu_b)`` scale."""
        return self.evaluate(params, score=True)[1]

    # ---------------------------------------------------------------- maximum
    def _x_to_params(self, x):
        return np.r_[x[:-2], np.exp(x[-2:])]

    def fit(self, start, gtol=1e-6):
        """The MLE from ``start = (beta, nu_a, nu_b)``: BFGS on ``(beta, log nu)`` with the
        score of :meth:`evaluate`, then Newton steps on the Hessian of :meth:`hessian` until
        the step is below ``1e-4`` standard errors."""
        start = np.asarray(start, dtype=float)
        x0 = np.r_[start[:-2], np.log(start[-2:])]

        def f(x):
            params = np.r_[x[:-2], np.exp(x[-2:])]
            try:
                value, g = self.evaluate(params, score=True)
            except RuntimeError:  # a trial point far out: not a maximum
                return np.inf, np.zeros_like(x)
            if not np.isfinite(value):
                return np.inf, np.zeros_like(x)
            return -value, -np.r_[g[:-2], g[-2:] * params[-2:]]

        res = optimize.minimize(f, x0, jac=True, method="BFGS", options={"gtol": gtol})
        params = np.r_[res.x[:-2], np.exp(res.x[-2:])]
        for _ in range(6):
            H = self.hessian(params)
            if np.any(np.linalg.eigvalsh(H) >= 0):
                raise RuntimeError(f"the Hessian is not negative definite at {params} "
                                   f"(BFGS: {res.message})")
            step = -np.linalg.solve(H, self.score(params))
            params = params + step
            if np.all(np.abs(step) <= 1e-4 * np.sqrt(np.diag(np.linalg.inv(-H)))):
                break
        H = self.hessian(params)
        step = -np.linalg.solve(H, self.score(params))
        return NestedResult(params, np.sqrt(np.diag(np.linalg.inv(-H))), self.loglike(params),
                            step, self.n_nodes)

    def hessian(self, params, rel=1e-5):
        """Central differences of :meth:`score` on the ``(beta, nu)`` scale, symmetrized."""
        params = np.asarray(params, dtype=float)
        k = len(params)
        H = np.zeros((k, k))
        for i in range(k):
            h = rel * max(1.0, abs(params[i]))
            e = np.zeros(k)
            e[i] = h
            H[:, i] = (self.score(params + e) - self.score(params - e)) / (2 * h)
        return 0.5 * (H + H.T)


def node_study(y, X, outer, inner, family, params, nodes=((10, 10), (20, 20), (30, 30)),
               trials=None):
    """The log-likelihood at ``params`` with each ``(K_out, K_in)`` of ``nodes``: the
    differences show the quadrature error."""
    return {k: NestedInterceptGLMM(y, X, outer, inner, family, trials, k).loglike(params)
            for k in nodes}
