"""Independent likelihood of a two-factor crossed Bernoulli GLMM (no glmm_sm code).

The model: ``y_si ~ Bernoulli(expit(x_si' beta + u_s + v_i))`` with subject effects
``u_s ~ N(0, nu_u)`` and item effects ``v_i ~ N(0, nu_v)``, one row per observed
(subject, item) cell.  Given the items, the subjects are independent, so

    L(theta) = int phi(v; nu_v) prod_s I_s(v) dv,
    I_s(v) = int phi(u; nu_u) prod_{i in s} f(y_si | eta_si) du.

Each ``I_s`` is a one-dimensional integral, computed by Gauss-Hermite quadrature with
``K`` nodes placed once per subject (at its conditional mode and SD given the item mode at a
pilot ``theta``) and then held fixed for every ``v`` and ``theta``: a different rule from
the package's 12 nodes that move with each draw of ``v``; the node study in the script
(``K = 15, 20, 30``) shows its error.  The item integral is computed by randomized
quasi-Monte Carlo importance sampling: scrambled Sobol points mapped to a multivariate t
with 10 degrees of freedom centred at the mode of ``log phi(v) + sum_s log I_s(v)`` at a
pilot ``theta``, with the inverse curvature there as scale (the target's tails in ``v`` are
the normal prior's, so the weights are bounded).  Independent scrambles give independent
estimates of the maximum-likelihood estimate, whose spread is the reference's error
estimate.

Everything here is numpy/scipy only: a shared bias with the package's Rao-Blackwellized
estimator (nodes, proposal, derivative code) cannot cancel against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats
from scipy.special import expit, log_expit, logsumexp


@dataclass
class CrossedData:
    """Observations grouped by subject: ``y``, ``X`` rows, and the item of each row."""

    y: np.ndarray
    X: np.ndarray
    subj: np.ndarray  # subject code 0..S-1 of each row
    item: np.ndarray  # item code 0..I-1 of each row
    n_subj: int
    n_item: int

    @classmethod
    def from_codes(cls, y, X, subj, item):
        subj = np.unique(np.asarray(subj), return_inverse=True)[1]
        item = np.unique(np.asarray(item), return_inverse=True)[1]
        return cls(np.asarray(y, dtype=float), np.asarray(X, dtype=float), subj, item,
                   int(subj.max()) + 1, int(item.max()) + 1)


class CrossedLikelihood:
    """``log L(theta)`` and its gradient for ``theta = (beta, nu_u, nu_v)``.

    The subject integrals use a Gauss-Hermite rule with ``n_nodes`` nodes per subject,
    placed once (at a pilot ``theta`` and item effects ``v``: :meth:`place_nodes`) at the
    conditional mode of ``u_s`` with the conditional SD as scale; the nodes then stay fixed,
    so the rule is one fixed quadrature formula whose integrand ``phi(u; nu_u) prod f`` is
    differentiated exactly in ``theta``.  Before :meth:`place_nodes` the nodes are those of
    the prior, ``u = sqrt(2 nu_u) t_k``, at ``nu_u = 1``.

    Parameters
    ----------
    data : CrossedData
    n_nodes : int
        Gauss-Hermite nodes per subject integral.
    """

    def __init__(self, data, n_nodes=20):
        self.d = data
        self.t, w = np.polynomial.hermite.hermgauss(n_nodes)
        self.logw_gh = np.log(w) + self.t**2  # int g = sum_k w_k e^{t_k^2} g(t_k)
        self.p = data.X.shape[1]
        self.centre = np.zeros(data.n_subj)
        self.scale = np.full(data.n_subj, 1.0)
        self._nodes()

    def _nodes(self):
        self.u = self.centre[:, None] + np.sqrt(2.0) * self.scale[:, None] * self.t  # (S, K)
        self.logw = self.logw_gh[None, :] + np.log(np.sqrt(2.0) * self.scale)[:, None]

    def place_nodes(self, theta, v, iters=50):
        """Centre each subject's nodes at the mode of ``u_s`` given ``v`` at ``theta`` (by
        Newton's method), with the conditional SD there as scale."""
        d, p = self.d, self.p
        beta, nu_u = theta[:p], theta[p]
        a = d.X @ beta + np.asarray(v)[d.item]
        u = np.zeros(d.n_subj)
        for _ in range(iters):
            mu = expit(a + u[d.subj])
            g = np.bincount(d.subj, d.y - mu, d.n_subj) - u / nu_u
            h = np.bincount(d.subj, mu * (1 - mu), d.n_subj) + 1.0 / nu_u
            step = g / h
            u += step
            if np.max(np.abs(step)) < 1e-13:
                break
        mu = expit(a + u[d.subj])
        h = np.bincount(d.subj, mu * (1 - mu), d.n_subj) + 1.0 / nu_u
        self.centre, self.scale = u, 1.0 / np.sqrt(h)
        self._nodes()

    # -------------------------------------------------------------- subject integrals
    def _subject_terms(self, beta, nu_u, V, grad):
        """``sum_s log I_s(v_n)`` for every row of ``V`` (N x I) and, with ``grad``, its
        derivatives in ``beta`` (N x p) and ``nu_u`` (N,)."""
        d = self.d
        u = self.u  # (S, K)
        logphi = -0.5 * u**2 / nu_u - 0.5 * np.log(2 * np.pi * nu_u)  # (S, K)
        a = d.X @ beta  # (n,)
        eta = a[None, :, None] + V[:, d.item][:, :, None] + u[d.subj][None, :, :]  # (N, n, K)
        ll = d.y[None, :, None] * eta + log_expit(-eta)  # y eta - log(1 + e^eta)
        logk = _sum_by(ll, d.subj, d.n_subj) + (self.logw + logphi)[None]  # (N, S, K)
        logI = logsumexp(logk, axis=2)  # (N, S)
        if not grad:
            return logI.sum(axis=1), None, None
        post = np.exp(logk - logI[:, :, None])  # node posterior weights (N, S, K)
        r = d.y[None, :, None] - expit(eta)  # (N, n, K)
        rsum = (r * post[:, d.subj, :]).sum(axis=2)  # (N, n)
        g_beta = rsum @ d.X
        dphi = -0.5 / nu_u + 0.5 * u**2 / nu_u**2  # (S, K)
        g_nu = np.einsum("nsk,sk->n", post, dphi)
        return logI.sum(axis=1), g_beta, g_nu

    # ------------------------------------------------------------------- item prior
    def _log_prior_v(self, V, nu_v):
        return -0.5 * (V**2).sum(axis=1) / nu_v - 0.5 * V.shape[1] * np.log(2 * np.pi * nu_v)

    def log_integrand(self, theta, V, grad=False, chunk=256):
        """``log phi(v_n; nu_v) + sum_s log I_s(v_n)`` per row of ``V``, and its gradient
        in ``theta`` (N x (p + 2)) with ``grad``."""
        p = self.p
        beta, nu_u, nu_v = theta[:p], theta[p], theta[p + 1]
        out = np.empty(V.shape[0])
        G = np.zeros((V.shape[0], p + 2)) if grad else None
        for j in range(0, V.shape[0], chunk):
            sl = slice(j, j + chunk)
            logI, gb, gn = self._subject_terms(beta, nu_u, V[sl], grad)
            out[sl] = logI + self._log_prior_v(V[sl], nu_v)
            if grad:
                G[sl, :p] = gb
                G[sl, p] = gn
                G[sl, p + 1] = (-0.5 * V.shape[1] / nu_v
                                + 0.5 * (V[sl] ** 2).sum(axis=1) / nu_v**2)
        return out, G

    def item_mode(self, theta, v0=None):
        """Mode and curvature (negative Hessian) of ``v -> log integrand`` at ``theta``."""
        n_item = self.d.n_item

        def f(v):
            return -self.log_integrand(theta, v[None, :])[0][0]

        v0 = np.zeros(n_item) if v0 is None else v0
        res = optimize.minimize(f, v0, method="BFGS", options={"gtol": 1e-9})
        h = 1e-4
        H = np.empty((n_item, n_item))
        for i in range(n_item):
            e = np.zeros(n_item)
            e[i] = h
            gp = optimize.approx_fprime(res.x + e, f, 1e-6)
            gm = optimize.approx_fprime(res.x - e, f, 1e-6)
            H[i] = (gp - gm) / (2 * h)
        return res.x, 0.5 * (H + H.T)


class TProposal:
    """Multivariate t (``df`` degrees of freedom) at ``mu`` with scale matrix ``S``, sampled
    by scrambled Sobol points (randomized QMC)."""

    def __init__(self, mu, S, df=10.0):
        self.mu, self.df = np.asarray(mu, float), float(df)
        self.L = np.linalg.cholesky(S)
        self.logdet = 2.0 * np.log(np.diag(self.L)).sum()

    def draws(self, log2_n, seed):
        dim = self.mu.size
        U = stats.qmc.Sobol(dim + 1, scramble=True, seed=seed).random_base2(log2_n)
        U = np.clip(U, 1e-16, 1 - 1e-16)
        z = stats.norm.ppf(U[:, :dim])
        w = stats.chi2.ppf(U[:, dim], self.df) / self.df
        V = self.mu + (z @ self.L.T) / np.sqrt(w)[:, None]
        return V, self.logpdf(V)

    def logpdf(self, V):
        dim, df = self.mu.size, self.df
        r = np.linalg.solve(self.L, (V - self.mu).T)
        q = (r**2).sum(axis=0)
        from scipy.special import gammaln
        return (gammaln((df + dim) / 2) - gammaln(df / 2) - 0.5 * dim * np.log(df * np.pi)
                - 0.5 * self.logdet - 0.5 * (df + dim) * np.log1p(q / df))


def loglike(lik, theta, V, logq, grad=False):
    """The importance-sampling estimate ``log (1/N) sum_n integrand(v_n) / q(v_n)`` and its
    gradient; the points ``V`` are fixed, so it is a smooth function of ``theta``."""
    A, G = lik.log_integrand(np.asarray(theta, float), V, grad)
    b = A - logq
    val = logsumexp(b) - np.log(b.size)
    if not grad:
        return val
    w = np.exp(b - logsumexp(b))
    return val, w @ G


def mle(lik, V, logq, start):
    """Maximize :func:`loglike` on fixed points (BFGS, analytic gradient, variances kept
    positive by a log transform of the optimizer's coordinates)."""
    p = lik.p
    start = np.asarray(start, float)

    def to_theta(z):
        return np.r_[z[:p], np.exp(z[p:])]

    def f(z):
        th = to_theta(z)
        v, g = loglike(lik, th, V, logq, grad=True)
        g = g.copy()
        g[p:] *= th[p:]  # chain rule for nu = exp(z)
        return -v, -g

    z0 = np.r_[start[:p], np.log(start[p:])]
    res = optimize.minimize(f, z0, jac=True, method="BFGS", options={"gtol": 1e-8,
                                                                     "maxiter": 500})
    th = to_theta(res.x)
    _, g = loglike(lik, th, V, logq, grad=True)
    return th, g, res


def _sum_by(a, codes, n):
    """Sum ``a`` (N, rows, K) over rows with the same code: (N, n, K)."""
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=n)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    return np.add.reduceat(a[:, order, :], starts, axis=1)
