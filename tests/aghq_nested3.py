"""The log-likelihood of a GLMM with nested random intercepts of any depth (three levels:
pupils in classes in schools), by nested adaptive Gauss-Hermite quadrature.  Plain
numpy/scipy, written independently of ``glmm_sm`` (it shares only the cumulants of
:mod:`aghq`, the one-level reference); the idea of :mod:`aghq_nested` (two levels) carried to
any depth by one recursion.

Model: observation ``i`` with units ``u_0(i)`` (a school), ``u_1(i)`` (a class in it),
``u_2(i)`` (a pupil in that class), ...,
``eta_i = x_i' beta + b_0[u_0(i)] + b_1[u_1(i)] + b_2[u_2(i)]``, ``b_l ~ N(0, nu_l)``
independent, canonical link.  A unit's integral given the sum ``o`` its ancestors add to
its observations' linear predictors is

    I_u(o) = int phi(b; nu_l) prod_{children c of u} I_c(o + b) db,

the children of a leaf being its observations (``I_i(o) = f(y_i | x_i' beta + o)``).  Each
integral is adaptive, at every value of ``o`` it is asked for: the mode of its log integrand
in ``b`` by Newton's method (halved until the value does not fall; the derivatives in ``b``
are the posterior moments of the children's derivatives in their offset, Louis' identity,
exact for the children's rules), then ``K_l`` Gauss-Hermite nodes scaled by the curvature
there.  The error falls quickly with the numbers of nodes: :func:`node_study` shows it.

The score and Hessian in ``theta = (beta, nu_0, ..., nu_{D-1})`` are central differences of
the value (the modes are found to ``1e-11``, far below the differences' steps).
"""

from __future__ import annotations

import numpy as np
from aghq import cumulants, log_constant

__all__ = ["Nested3GLMM", "node_study"]

LOG_2PI = np.log(2.0 * np.pi)


class Nested3GLMM:
    """Log-likelihood of a nested random-intercept GLMM of any depth by nested AGHQ.

    Parameters
    ----------
    y, X : array_like
        Responses (successes for binomial) and the fixed-effects design.
    levels : list of array_like
        Unit labels from the top level down; a label is read within its parent unit (the
        same class label in two schools is two classes, as lme4's ``(1 | school/class)``).
    family : {"bernoulli", "binomial", "poisson"}
    trials : array_like, optional
    n_nodes : tuple of int
        Gauss-Hermite nodes per level, from the top.
    """

    def __init__(self, y, X, levels, family, trials=None, n_nodes=(15, 15, 15)):
        self.y = np.asarray(y, dtype=float)
        self.X = np.asarray(X, dtype=float)
        self.trials = (np.ones_like(self.y) if trials is None
                       else np.asarray(trials, dtype=float))
        self.family = family
        self.D = len(levels)
        if len(n_nodes) != self.D:
            raise ValueError("n_nodes needs one number per level")
        # unit of each observation at each level: the path of labels down to that level
        path = np.zeros(len(self.y), dtype=object)
        path[:] = ""
        self.unit = []
        for lab in levels:
            path = np.char.add(np.char.add(path.astype(str), "\x00"),
                               np.asarray(lab).astype(str))
            self.unit.append(np.unique(path, return_inverse=True)[1].ravel())
        self.n_units = [int(u.max()) + 1 for u in self.unit]
        self.log_const = log_constant(family, self.y, self.trials)
        self.n_nodes = tuple(int(k) for k in n_nodes)
        self.rules = []
        for k in self.n_nodes:
            x, w = np.polynomial.hermite.hermgauss(k)
            self.rules.append((x, np.log(w) + x**2))

    def _sum(self, lev, a):
        """Sums of ``a`` (rows first) over the observations of each unit of level ``lev``."""
        out = np.zeros((self.n_units[lev],) + a.shape[1:])
        np.add.at(out, self.unit[lev], a)
        return out

    def _children(self, lev, off, nu):
        """Per unit of level ``lev`` and context (columns of ``off``, the offsets of every
        observation), the sums over its children of ``log I_c``, ``d log I_c / d o`` and
        ``d2 log I_c / d o2`` at the children's offsets ``off``."""
        if lev == self.D - 1:  # the children are the observations
            c0, c1, c2 = cumulants(self.family, off, self.trials[:, None])
            y = self.y[:, None]
            return (self._sum(lev, y * off - c0), self._sum(lev, y - c1),
                    -self._sum(lev, c2))
        logI, d1, d2 = self._integrate(lev + 1, off, nu)
        # the children of level lev + 1 summed into their parents
        parent = np.zeros(self.n_units[lev + 1], dtype=int)
        parent[self.unit[lev + 1]] = self.unit[lev]
        out = []
        for a in (logI, d1, d2):
            s = np.zeros((self.n_units[lev],) + a.shape[1:])
            np.add.at(s, parent, a)
            out.append(s)
        return tuple(out)

    def _integrate(self, lev, off, nu, tol=1e-11, maxiter=100):
        """``(log I_u, d/do, d2/do2)`` of every unit of level ``lev`` at the offsets ``off``
        (n, C): each (J, C)."""
        J, C = self.n_units[lev], off.shape[1]
        u = self.unit[lev]
        v = nu[lev]

        def g(b):
            c, c1, c2 = self._children(lev, off + b[u], nu)
            return c - 0.5 * b**2 / v, c1 - b / v, c2 - 1.0 / v

        b = np.zeros((J, C))
        g0, g1, g2 = g(b)
        for _ in range(maxiter):
            step = -g1 / g2
            if np.all(np.abs(step) <= tol * (1.0 + np.abs(b))):
                break
            for _ in range(60):
                h0, h1, h2 = g(b + step)
                worse = h0 < g0 - 1e-13 * (1.0 + np.abs(g0))
                if not worse.any():
                    break
                step = np.where(worse, 0.5 * step, step)
            gain = h0 - g0
            b, g0, g1, g2 = b + step, h0, h1, h2
            # the derivatives are the children's rules' posterior moments, exact up to their
            # quadrature error: where steps along them no longer raise the value, the mode
            # is found to that accuracy (as tests/aghq_nested.py's outer modes)
            if np.all((np.abs(step) <= 1e-9 * (1.0 + np.abs(b))) | (gain <= 1e-13)):
                break
        else:
            raise RuntimeError(f"modes of level {lev} did not converge")
        x, lw = self.rules[lev]
        K = len(x)
        s = np.sqrt(2.0 / -g2)                                       # (J, C)
        nodes = b[:, :, None] + s[:, :, None] * x                    # (J, C, K)
        off_k = (off[:, :, None] + nodes[u]).reshape(len(u), C * K)
        c, c1, c2 = (a.reshape(J, C, K) for a in self._children(lev, off_k, nu))
        terms = lw + c - 0.5 * nodes**2 / v - 0.5 * (LOG_2PI + np.log(v))
        mx = terms.max(axis=2, keepdims=True)
        w = np.exp(terms - mx)
        tot = w.sum(axis=2, keepdims=True)
        logI = (mx + np.log(tot))[:, :, 0] + np.log(s)
        w = w / tot
        d1 = (w * c1).sum(axis=2)
        d2 = (w * (c2 + c1**2)).sum(axis=2) - d1**2
        return logI, d1, d2

    def loglike(self, params):
        """The log-likelihood at ``params = (beta, nu_0, ..., nu_{D-1})`` (top first), the
        family's constants included."""
        params = np.asarray(params, dtype=float)
        beta, nu = params[: -self.D], params[-self.D :]
        if not np.all(nu > 0):
            return -np.inf
        logI = self._integrate(0, (self.X @ beta)[:, None], nu)[0]
        return float(logI.sum() + self.log_const)

    def score(self, params, rel=1e-5):
        """Central differences of :meth:`loglike`."""
        params = np.asarray(params, dtype=float)
        g = np.zeros(len(params))
        for i in range(len(params)):
            h = rel * max(1.0, abs(params[i]))
            e = np.zeros(len(params))
            e[i] = h
            g[i] = (self.loglike(params + e) - self.loglike(params - e)) / (2 * h)
        return g

    def hessian(self, params, rel=1e-4):
        """Central differences of :meth:`score`, symmetrized."""
        params = np.asarray(params, dtype=float)
        k = len(params)
        H = np.zeros((k, k))
        for i in range(k):
            h = rel * max(1.0, abs(params[i]))
            e = np.zeros(k)
            e[i] = h
            H[:, i] = (self.score(params + e) - self.score(params - e)) / (2 * h)
        return 0.5 * (H + H.T)

    def newton_step(self, params):
        """One Newton step toward the maximum from ``params``: ``(step, cov)`` with ``cov``
        the inverse observed information there."""
        H = self.hessian(params)
        cov = np.linalg.inv(-H)
        return cov @ self.score(params), cov


def node_study(y, X, levels, family, params, nodes=((8, 8, 8), (12, 12, 12), (16, 16, 16)),
               trials=None):
    """The log-likelihood at ``params`` with each rule of ``nodes``: the differences show
    the quadrature error."""
    return {k: Nested3GLMM(y, X, levels, family, trials, k).loglike(params) for k in nodes}
