"""A brute-force profile of a ``(1 + x | g)`` term's covariance by the independent 2-D AGHQ.

Independent of ``glmm_sm``: the exact log-likelihood is ``tests/aghq2d.py``'s adaptive
Gauss-Hermite rule (its conditional modes to a relative step of 1e-9, as
``tests/test_profile_cov_zero.py`` does near ``|rho| = 1``).  With the covariance held at
``c != 0`` the other parameters are ``beta``, ``s_a = log SD_a`` and ``q``, with

    SD_a SD_b = |c| (1 + e^q),   rho = sign(c) / (1 + e^q),

so that every ``(beta, s_a, q)`` is a positive definite ``Sigma`` with that covariance and
the box ``|rho| <= rho_edge`` is the bound ``q >= log(1 / rho_edge - 1)``.  The constrained
maximum is found from several starts (the global one is wanted, not the one a continuation
happens to follow): a scan of ``(s_a, rho)`` with ``beta`` held at the estimate's, then
L-BFGS-B over all four coordinates from the best scan points of distinct ``s_a``, from the
maxima already found at the nearest covariances on either side and from the caller's starts;
the highest is kept.  ``D(c) = 2 (l_top - l_p(c))`` with ``l_top`` the
highest of the full fit and every profile value seen.  Ends are where ``D`` crosses the
chi2(1) quantile, by bisection in a bracket from a scan outward from the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

#: The scan: SD_a multiples of the estimate's, and correlations.
SD_FACTORS = (0.5, 0.7, 0.85, 1.0, 1.2, 1.45, 1.75, 2.1, 2.6)
RHOS = (0.05, 0.3, 0.6, 0.85, 0.95, 0.99, 0.999, 0.9999)
#: L-BFGS-B restarts from the scan: this many best points of distinct SD_a.
N_RESTARTS = 3


def reference_model(d, n_nodes=20):
    """``tests/aghq2d.py``'s model of the data frame ``d`` (columns y, x, g), its modes to
    a relative step of 1e-9 (near ``|rho| = 1`` rounding stops Newton short of 1e-13)."""
    from aghq2d import VectorRandomEffectsGLMM

    class Reference(VectorRandomEffectsGLMM):
        def _modes(self, eta0, Sigma_inv, tol=1e-9, maxiter=400):
            return super()._modes(eta0, Sigma_inv, tol=tol, maxiter=maxiter)

    Z = np.c_[np.ones(len(d)), d["x"].to_numpy(float)]
    return Reference(d["y"].to_numpy(float), Z, Z, d["g"].to_numpy(), "bernoulli",
                     n_nodes=n_nodes)


@dataclass
class CovProfileReference:
    """The brute-force profile of ``Cov`` (``theta = (b0, b1, Var_a, Cov, Var_b)``).

    Parameters
    ----------
    ref : aghq2d.VectorRandomEffectsGLMM
    theta_hat : array_like
        A start for the maximum over all parameters (for example ``tests/aghq2d.py``'s own
        fit, or any rough estimate); the scan's scales and fixed effects are the maximum's.
    rho_edge : float
        The box on the correlation (the package's ``RHO_EDGE``).
    """

    ref: object
    theta_hat: np.ndarray
    rho_edge: float
    values: dict = field(default_factory=dict)
    argmax: dict = field(default_factory=dict)
    l_top: float = -np.inf
    theta_top: np.ndarray = None

    def __post_init__(self):
        self.q_min = float(np.log(1.0 / self.rho_edge - 1.0))
        self.top()

    def top(self):
        """The maximum over all parameters (``|rho| <= rho_edge``): L-BFGS-B over ``(beta,
        log SD_a, log SD_b, atanh rho)`` from ``theta_hat`` and from it with the
        correlation at 0, 0.9 and the edge; ``l_top`` is the highest of these and of every
        profile value found since."""
        th = np.asarray(self.theta_hat, dtype=float)
        self.theta_hat = th
        z_edge = float(np.arctanh(self.rho_edge))

        def theta(f):
            sa, sb, r = np.exp(f[2]), np.exp(f[3]), np.tanh(f[4])
            return np.array([f[0], f[1], sa * sa, r * sa * sb, sb * sb])

        def fun(f):
            t = theta(f)
            try:
                ll, g = self.ref.loglike(t), self.ref.score(t)
            except (ValueError, RuntimeError, np.linalg.LinAlgError, FloatingPointError):
                return 1e10, np.zeros(5)
            r, e = np.tanh(f[4]), t[3]
            gf = np.array([g[0], g[1], 2.0 * t[2] * g[2] + e * g[3],
                           2.0 * t[4] * g[4] + e * g[3],
                           (1.0 - r * r) * np.sqrt(t[2] * t[4]) * g[3]])
            return -ll, -gf

        rho0 = float(np.clip(th[3] / np.sqrt(th[2] * th[4]), -self.rho_edge, self.rho_edge))
        base = np.array([th[0], th[1], 0.5 * np.log(th[2]), 0.5 * np.log(th[4]), 0.0])
        for rho in sorted({rho0, 0.0, 0.9, -0.9, self.rho_edge, -self.rho_edge}):
            f0 = base.copy()
            f0[4] = np.arctanh(rho)
            r = optimize.minimize(fun, f0, jac=True, method="L-BFGS-B",
                                  bounds=[(None, None)] * 2 + [(-8.0, 5.0)] * 2
                                  + [(-z_edge, z_edge)],
                                  options={"ftol": 1e-14, "gtol": 1e-8, "maxiter": 500})
            t = theta(r.x)
            v = self._safe(t)
            if v > self.l_top:
                self.l_top, self.theta_top = v, t
        return self.l_top

    def _safe(self, theta):
        try:
            return float(self.ref.loglike(theta))
        except (ValueError, RuntimeError, np.linalg.LinAlgError, FloatingPointError):
            return -np.inf

    @staticmethod
    def _theta(f, c):
        b0, b1, sa, q = f
        e = np.exp(q)
        sda = np.exp(sa)
        sdb = abs(c) * (1.0 + e) / sda
        return np.array([b0, b1, sda * sda, c, sdb * sdb])

    def _fun(self, f, c):
        th = self._theta(f, c)
        try:
            ll = self.ref.loglike(th)
            g = self.ref.score(th)
        except (ValueError, RuntimeError, np.linalg.LinAlgError, FloatingPointError):
            return 1e10, np.zeros(4)
        va, vb = th[2], th[4]
        sig = 1.0 / (1.0 + np.exp(-f[3]))
        grad = np.array([g[0], g[1], 2.0 * va * g[2] - 2.0 * vb * g[4], 2.0 * vb * sig * g[4]])
        return -ll, -grad

    def _f_from_theta(self, theta, c):
        """``(b0, b1, s_a, q)`` of ``theta``'s fixed effects and SDs moved to covariance
        ``c`` (the correlation clipped into ``[0.05, rho_edge]``)."""
        sda, sdb = np.sqrt(theta[2]), np.sqrt(theta[4])
        rho = float(np.clip(abs(c) / (sda * sdb), 0.05, self.rho_edge))
        return np.array([theta[0], theta[1], np.log(sda), np.log(1.0 / rho - 1.0)])

    def profile(self, c, starts=()):
        """``l_p(c)``: the highest constrained maximum from the scan's and ``starts``'
        (thetas) starting points; cached."""
        c = float(c)
        if c in self.values:
            return self.values[c]
        if c == 0.0:
            raise ValueError("c = 0 is outside this parametrization; use a c near 0")
        th = self.theta_top
        sda0 = np.sqrt(th[2])
        scan = []
        for fa in SD_FACTORS:
            for rho in RHOS:
                if rho > self.rho_edge:
                    continue
                f = np.array([th[0], th[1], np.log(fa * sda0),
                              np.log(1.0 / rho - 1.0)])
                scan.append((self._safe(self._theta(f, c)), fa, f))
        scan.sort(key=lambda t: -t[0])
        chosen, used = [], set()
        for v, fa, f in scan:
            if fa in used or not np.isfinite(v):
                continue
            used.add(fa)
            chosen.append(f)
            if len(chosen) == N_RESTARTS:
                break
        known = sorted(self.argmax)
        below = [k for k in known if k < c]
        above = [k for k in known if k > c]
        near = ([self.argmax[below[-1]]] if below else []) + \
            ([self.argmax[above[0]]] if above else [])  # continuation from both sides
        chosen += [self._f_from_theta(np.asarray(t, dtype=float), c)
                   for t in list(starts) + near]
        chosen.append(self._f_from_theta(th, c))
        best, best_theta = -np.inf, None
        bounds = [(None, None), (None, None), (-8.0, 5.0), (self.q_min, 12.0)]
        for f0 in chosen:
            f0 = f0.copy()
            f0[3] = max(f0[3], self.q_min)
            r = optimize.minimize(self._fun, f0, args=(c,), jac=True, method="L-BFGS-B",
                                  bounds=bounds,
                                  options={"ftol": 1e-13, "gtol": 1e-7, "maxiter": 400})
            th = self._theta(r.x, c)
            v = self._safe(th)
            if v > best:
                best, best_theta = v, th
        self.values[c], self.argmax[c] = best, best_theta
        if best > self.l_top:
            self.l_top, self.theta_top = best, best_theta
        return best

    def deviance(self, c, starts=()):
        """``D(c) = 2 (l_top - l_p(c))`` (``l_top`` as known so far)."""
        return 2.0 * (self.l_top - self.profile(c, starts))

    def end(self, side, cut, start, step, max_steps=40, tol=1e-4):
        """The end of ``{c : D(c) <= cut}`` on ``side`` (-1, +1): scan outward from
        ``start`` by ``step`` until ``D > cut``, then bisect to ``tol``; None when the scan
        runs out first."""
        inside = float(start)
        for _ in range(max_steps):
            c = inside + side * step
            if c == 0.0:
                c += side * 1e-9
            if self.deviance(c) > cut:
                outside = c
                break
            inside = c
        else:
            return None
        while abs(outside - inside) > tol:
            mid = 0.5 * (inside + outside)
            if mid == 0.0:
                mid += side * 1e-9
            if self.deviance(mid) > cut:
                outside = mid
            else:
                inside = mid
        # l_top may have risen during the scan: re-check the bracket once
        if self.deviance(inside) > cut or self.deviance(outside) <= cut:
            return self.end(side, cut, start, step, max_steps, tol)
        return 0.5 * (inside + outside)
