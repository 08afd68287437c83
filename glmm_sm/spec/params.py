"""Parameters ``theta = (beta, nu)`` and the unconstrained coordinates the optimizers work in.

Both optimizers (the Laplace step and each Monte Carlo round) maximize over
``x = (gamma, log nu)`` with ``beta = T gamma``.  ``T`` whitens the fixed-effects design:
with ``X D^{-1} = Q R`` (``D`` the column norms) it is ``T = sqrt(n) D^{-1} R^{-1}``, so that
``X T = sqrt(n) Q`` has orthogonal columns of equal length whatever the covariates' units or
locations.  A covariate given as ``1000 x + 5000`` instead of ``x`` then leads to the same
sequence of linear predictors, hence the same fit, mapped back exactly to ``beta``.  Without
it a step of 1 in the coefficient of a covariate of size 500 moves ``eta`` by 500 (the red
grouse ticks' HEIGHT), far outside where the conditional modes can be computed.

The chain rule from ``theta`` to ``x``: with ``J = (T, diag(nu))``,

* ``g_x = (T' g_beta, nu * g_nu)``,
* ``H_x = J' H J + diag(0, nu * g_nu)``.
"""

from __future__ import annotations

import numpy as np

from glmm_sm.spec.covstruct import log_cholesky_inverse, log_cholesky_map

__all__ = ["ParamTransform", "CachedObjective"]


class ParamTransform:
    """Map ``theta = (beta, nu)`` to the optimizers' ``x = (T^{-1} beta, log nu)`` and back.

    Parameters
    ----------
    X : ndarray (n, p)
        Fixed-effects design (full column rank).
    k_vc : int
        Number of variance parameters.
    whiten : bool
        Use the whitening ``T`` described in the module docstring; ``False`` gives
        ``T = I`` (plain ``(beta, log nu)``).
    cov : CovStructure, optional
        With correlated terms, their parameters are mapped to log-Cholesky coordinates
        (:func:`~glmm_sm.spec.covstruct.log_cholesky_map`) and the scalar ones to ``log nu``.
    """

    def __init__(self, X, k_vc, whiten=True, cov=None):
        X = np.asarray(X, dtype=np.float64)
        n, p = X.shape
        self.p, self.k_vc = p, int(k_vc)
        self.cov = cov if cov is not None and cov.has_vector else None
        self.T = np.eye(p)
        #: Why whitening was asked for and not done (None when done or not asked for); the
        #: fit records it in ``fit_log.warnings`` and warns.
        self.whitening_note = None
        if whiten and p and n < p:
            self.whitening_note = (f"the fixed-effects design has fewer rows ({n}) than "
                                   f"columns ({p}); the optimizers work on beta unwhitened")
        elif whiten and p:
            norms = np.linalg.norm(X, axis=0)
            norms = np.where(norms > 0, norms, 1.0)
            R = np.linalg.qr(X / norms, mode="r")
            d = np.abs(np.diag(R))
            if d.min() > 1e-10 * d.max():
                Rinv = np.linalg.solve(R, np.eye(p))
                self.T = np.sqrt(n) * Rinv / norms[:, None]
            else:
                self.whitening_note = (
                    "the fixed-effects design is nearly rank deficient (condition number of "
                    f"its scaled columns about {d.max() / max(d.min(), 1e-300):.3g}); the "
                    "optimizers work on beta unwhitened, so the path (not the maximum) "
                    "depends on the covariates' units: rescale or drop nearly collinear "
                    "columns")
        self.T_inv = np.linalg.inv(self.T) if p else self.T

    @classmethod
    def from_gram(cls, G, n, k_vc, cov=None):
        """The transform of a design with Gram matrix ``G = X'X`` (p, p) and ``n`` rows:
        ``T = sqrt(n) D^{-1} R^{-1}`` with ``R'R = D^{-1} G D^{-1}`` (a Cholesky factor; the
        same ``T`` as the QR of ``X D^{-1}`` in exact arithmetic), for fits whose data are
        summed block by block (:meth:`for_layout`) or held in pieces.  A scaled Gram
        matrix that is not positive definite in floating point, or whose factor's diagonal
        spans more than 10 orders of magnitude, leaves ``T = I`` with a note."""
        G = np.asarray(G, dtype=np.float64)
        p = G.shape[0]
        out = cls(np.zeros((0, p)), k_vc, whiten=False, cov=cov)
        if n < p:
            out.whitening_note = (f"the fixed-effects design has fewer rows ({n}) than "
                                  f"columns ({p}); the optimizers work on beta unwhitened")
            return out
        if not p:
            return out
        norms = np.sqrt(np.maximum(np.diag(G), 0.0))
        norms = np.where(norms > 0, norms, 1.0)
        C = G / norms[:, None] / norms[None, :]
        try:
            d = np.abs(np.diag(np.linalg.cholesky(C)))
            ok = d.min() > 1e-10 * d.max()
        except np.linalg.LinAlgError:
            ok = False
        if ok:
            R = np.linalg.cholesky(C).T
            out.T = np.sqrt(n) * np.linalg.solve(R, np.eye(p)) / norms[:, None]
            out.T_inv = np.linalg.inv(out.T)
            return out
        ev = np.linalg.eigvalsh(C)
        cond = np.sqrt(ev.max() / ev.min()) if ev.min() > 0 else np.inf
        out.whitening_note = (
            "the fixed-effects design is nearly rank deficient (condition number of "
            f"its scaled columns about {cond:.3g}); the optimizers work on beta unwhitened, "
            "so the path (not the maximum) depends on the covariates' units: rescale or "
            "drop nearly collinear columns")
        return out

    @classmethod
    def for_layout(cls, data, k_vc, cov=None):
        """:meth:`from_gram` of a layout's design, its Gram matrix summed block by block in
        block order (:mod:`glmm_sm.spec.folds`): the same bits whether the blocks are
        summed here or in pieces elsewhere."""
        from glmm_sm.spec.folds import block_grams, fold

        return cls.from_gram(fold(block_grams(data.obs_ptr, data.X)), data.X.shape[0], k_vc,
                             cov=cov)

    def to_x(self, theta):
        """``x = (T^{-1} beta, log nu)``; needs every ``nu > 0``."""
        theta = np.asarray(theta, dtype=np.float64)
        p = self.p
        if self.cov is not None:
            kc = p + self.cov.k_vcp  # then the family's parameters (alpha), on the log scale
            return np.concatenate([self.T_inv @ theta[:p], self._cov_x(theta[p:kc]),
                                   np.log(theta[kc:])])
        return np.concatenate([self.T_inv @ theta[:p], np.log(theta[p:])])

    def to_theta(self, x):
        """``theta = (T gamma, exp(log nu))``."""
        x = np.asarray(x, dtype=np.float64)
        p = self.p
        if self.cov is not None:
            kc = p + self.cov.k_vcp
            return np.concatenate([self.T @ x[:p], self._cov_map(x[p:kc])[0],
                                   np.exp(x[kc:])])
        return np.concatenate([self.T @ x[:p], np.exp(x[p:])])

    def _cov_x(self, nu):
        out = np.empty(len(nu))
        for ui, u in enumerate(self.cov.units):
            sl = self.cov.unit_params(ui)
            out[sl] = (np.log(nu[sl]) if len(u) == 1
                       else log_cholesky_inverse(nu[sl], len(u)))
        return out

    def _cov_jac(self, nu):
        """:meth:`_cov_map` at the covariance parameters and the family's parameters
        ``nu`` (these last on the log scale: ``d nu / dx = d2 nu / dx2 = nu``)."""
        kc = self.cov.k_vcp
        val, jac, hess = self._cov_map(self._cov_x(nu[:kc]))
        m, ke = len(nu), len(nu) - kc
        if not ke:
            return val, jac, hess
        J, Hs = np.zeros((m, m)), np.zeros((m, m, m))
        J[:kc, :kc], Hs[:kc, :kc, :kc] = jac, hess
        i = np.arange(kc, m)
        J[i, i] = Hs[i, i, i] = nu[kc:]
        return np.concatenate([val, nu[kc:]]), J, Hs

    def _cov_map(self, xc):
        """``(nu, d nu / dx, d2 nu / dx2)`` of the covariance coordinates."""
        m = len(xc)
        nu, jac, hess = np.empty(m), np.zeros((m, m)), np.zeros((m, m, m))
        for ui, u in enumerate(self.cov.units):
            sl = self.cov.unit_params(ui)
            if len(u) == 1:
                nu[sl] = np.exp(xc[sl])
                jac[sl, sl] = hess[sl, sl, sl] = nu[sl]
                continue
            nu[sl], jac[sl, sl], hess[sl, sl, sl] = log_cholesky_map(xc[sl], len(u))
        return nu, jac, hess

    def gradient(self, g, theta):
        """Gradient in ``x`` from the gradient ``g`` in ``theta``."""
        p = self.p
        nu = np.asarray(theta, dtype=np.float64)[p:]
        if self.cov is not None:
            jac = self._cov_jac(nu)[1]
            return np.concatenate([self.T.T @ g[:p], jac.T @ g[p:]])
        return np.concatenate([self.T.T @ g[:p], g[p:] * nu])

    def hessian(self, H, g, theta):
        """Hessian in ``x`` from the Hessian ``H`` and gradient ``g`` in ``theta``."""
        p = self.p
        nu = np.asarray(theta, dtype=np.float64)[p:]
        if self.cov is not None:
            _, jac, hess = self._cov_jac(nu)
            J = np.zeros((p + self.k_vc, p + self.k_vc))
            J[:p, :p] = self.T
            J[p:, p:] = jac
            Hx = J.T @ H @ J
            Hx[p:, p:] += np.einsum("r,rst->st", g[p:], hess)
            return 0.5 * (Hx + Hx.T)
        J = np.zeros((p + self.k_vc, p + self.k_vc))
        J[:p, :p] = self.T
        J[p:, p:] = np.diag(nu)
        Hx = J.T @ H @ J
        Hx[p:, p:] += np.diag(g[p:] * nu)
        return 0.5 * (Hx + Hx.T)

    def x_bounds(self, lognu_bounds):
        """Bounds for ``scipy.optimize.minimize``: free ``gamma``, bounded ``log nu``
        (a Cholesky factor's log-diagonal within half of them, its other entries free)."""
        if self.cov is None:
            return [(None, None)] * self.p + [lognu_bounds] * self.k_vc
        half = (0.5 * lognu_bounds[0], 0.5 * lognu_bounds[1])
        out = [(None, None)] * self.p
        for u in self.cov.units:
            k = len(u)
            if k == 1:
                out.append(lognu_bounds)
                continue
            r, c = np.tril_indices(k)
            out += [half if a == b else (None, None) for a, b in zip(r, c, strict=True)]
        return out + [lognu_bounds] * (self.k_vc - self.cov.k_vcp)


class CachedObjective:
    """``-l_m`` and its derivatives on the optimizer's ``x``, the last evaluation cached.

    ``scipy.optimize.minimize`` asks for ``fun``, ``jac`` and ``hess`` at the same point one
    after the other; one engine evaluation serves all three.  A non-finite evaluation gives
    ``(inf, 0, I)``: only ever a trial point, which a trust region rejects without asking
    for its derivatives.

    Parameters
    ----------
    engine : MCLAEngine
    tr : ParamTransform
        Over the free parameters.
    free : ndarray of int, optional
        Indices of the free parameters in ``theta`` (default: all); subclasses then give
        :meth:`to_theta`.
    """

    def __init__(self, engine, tr, free=None):
        self.engine, self.tr, self.free = engine, tr, free
        self._x, self._out, self.last = None, None, None  # last: the Evaluation at _x

    def to_theta(self, x):
        """``theta`` at the optimizer's ``x``."""
        return self.tr.to_theta(x)

    def on_evaluation(self, theta, out, finite):
        """Called once per new evaluation (logging, counting)."""

    def _eval(self, x):
        if self._x is None or not np.array_equal(x, self._x):
            theta = self.to_theta(x)
            ev = self.engine.evaluate(theta)
            finite = (ev.gradient is not None and np.isfinite(ev.value)
                      and np.all(np.isfinite(ev.gradient)) and np.all(np.isfinite(ev.hessian)))
            if finite:
                g, H, t = ev.gradient, ev.hessian, theta
                if self.free is not None:
                    f = self.free
                    g, H, t = g[f], H[np.ix_(f, f)], theta[f]
                out = (-ev.value, -self.tr.gradient(g, t), -self.tr.hessian(H, g, t))
                # (the chain rule to x can overflow where theta is finite: a trial point)
                finite = bool(np.all(np.isfinite(out[1])) and np.all(np.isfinite(out[2])))
            if not finite:
                out = (np.inf, np.zeros_like(x), np.eye(len(x)))
            self.on_evaluation(theta, out, finite)
            self._x, self._out, self.last = np.array(x), out, ev
        return self._out

    def fun(self, x):
        return self._eval(x)[0]

    def jac(self, x):
        return self._eval(x)[1]

    def hess(self, x):
        return self._eval(x)[2]

    def evaluation_at(self, x):
        """The engine's Evaluation at ``x`` (cached when it was the last one)."""
        self._eval(np.asarray(x, dtype=np.float64))
        return self.last
