"""Profile likelihoods of models with correlated random-effect terms (lme4's ``(1 + x | g)``).

:mod:`glmm_sm.inference.profile` profiles a parameter of a model whose covariance
parameters are all variances (each on ``log nu``).  With a correlated term the covariance
parameters are the lower triangle of ``Sigma`` (``Var(a)``, ``Cov(b, a)``, ``Var(b)``), and a
profile holds one *profiled coordinate* fixed and maximizes the Monte Carlo
log-likelihood ``l_m`` over all the others.  The coordinates here (a profiled
parametrization, as lme4's ``profile`` on its ``.sig``/``.cor`` scale):

* a fixed effect: ``beta_j`` (the others whitened as in ``glmm_sm.spec.params``);
* a scalar variance component: ``log nu``;
* a term's variance ``Sigma_aa``: ``s_a = log SD_a``, the interval of the variance being
  the square of the SD's (a profile interval is invariant to reparametrization);
* a term's correlation ``rho_ab``: ``z_ab = atanh(rho_ab)``;
* a term's covariance ``Sigma_ab``: ``Sigma_ab`` itself, with ``s_a, s_b`` (and the term's
  other coordinates) free; a point where the matrix would not be positive definite is
  outside the parameter space (``l_m = -inf`` there).

Every other covariance coordinate of a term is ``s_a`` or ``z_ab``:
``Sigma_aa = exp(2 s_a)``, ``Sigma_ab = tanh(z_ab) exp(s_a + s_b)``; the chain rule gives the
gradient and Hessian of ``l_m`` in the free coordinates from the engine's exact ones
(``g_phi = J' g``, ``H_phi = J' H J + sum_r g_r d2 theta_r / d phi d phi'``), and the trust
region maximizes on them.  By the envelope theorem the derivative of the profile
log-likelihood in the profiled coordinate is the partial derivative of ``l_m`` there, so the
signed root ``zeta = sign(psi - psi_hat) sqrt(D)`` of the profile deviance
``D(psi) = 2 (l_max - l_p(psi))`` has ``dzeta/dpsi = -(dl_m/dpsi) / zeta``: the ends of a
``1 - alpha`` interval (``zeta = -+ z_{1 - alpha/2}``, i.e. ``D`` at the ``chi2(1)``
quantile) are found by safeguarded Newton steps on the coordinate.

Draws and deviances.  The profile maximizes on the fit's final draws (set 0), where ``D =
2 (L_0 - l_0(theta_psi))`` with ``L_0`` the maximum of ``l_0`` over all parameters (``>= 0``
by construction), its Monte Carlo error from the paired weights
(:func:`glmm_sm.inference.profile.paired_deviance_mcse`).  Where the fit's draws no longer
cover a profile point (the MCSE of ``l_0`` there, ``sqrt(sum_b (1/ESS_b - 1/m))``, above
``max(0.05, 2 llf_mcse)``), a fresh draw set is drawn from the sampler built at the point
and the point re-solved on it; its deviance is then ``2 (llf_mc - l_k(theta_psi))``, two
independent estimates, with MCSE ``2 sqrt(llf_mcse^2 + mcse_k^2)``.  The MCSE of an end is
``mcse(D) / |dD/dpsi|`` (delta method).

The parameter space's edges.  A variance's lower end is 0 when ``D(0) <= chi2_{1,1-alpha}``;
``D(0)`` compares the fit with the maximum of the model without that effect (the term
without the column and its covariances), a Monte Carlo MLE of the smaller model on its own
draws.  A correlation's end is ``-1`` or ``+1`` when ``D`` at ``|rho| = RHO_EDGE`` is still
below the cut; the note says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import minimize
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from glmm_sm.core.random import as_seed_sequence, child_seed
from glmm_sm.inference.profile import (
    PROFILE_TIME_BUDGET,
    DrawSets,
    TimeBudget,
    _check_alpha,
    _OutOfTime,
    own_mcse,
    paired_deviance_mcse,
    param_indices,
)
from glmm_sm.mcla.engine import effective_n_jobs
from glmm_sm.spec.params import ParamTransform

__all__ = ["ProfileTarget", "CovProfiler", "profile_targets", "cov_profile_conf_int",
           "cov_profile_frame", "varcorr_profile", "model_without"]

#: Re-centring tolerance on a point's own MCSE (as :mod:`glmm_sm.inference.profile`).
RECENTRE_MCSE = 0.05
#: A deterministic fit's profile point (``CovProfiler._recentred``): damped Newton steps on
#: the adaptive quadrature log-likelihood, each iterate on its own rule, until the Newton
#: decrement is below ``ADAPTIVE_DECREMENT`` (log-likelihood) or
#: a kept step gains less than ``ADAPTIVE_GAIN``; at most ``ADAPTIVE_MAXITER`` steps of at
#: most ``ADAPTIVE_HALVINGS`` halvings, a step kept while the value drops by at most
#: ``ADAPTIVE_F_TOL``; the largest step ``ADAPTIVE_MAX_STEP`` (whitened fixed effects, log
#: SDs, atanh of correlations).
ADAPTIVE_DECREMENT, ADAPTIVE_GAIN, ADAPTIVE_MAXITER = 1e-6, 1e-7, 60
ADAPTIVE_HALVINGS, ADAPTIVE_F_TOL, ADAPTIVE_MAX_STEP = 8, 1e-9, 1.0
#: Root finding: tolerance on ``zeta``, largest step and largest distance from the estimate
#: (on the coordinate, in units of its standard error for ``beta`` and a covariance).
ZETA_TOL, MAX_STEP, MAX_DISTANCE, MAX_ITER, MAX_SETS = 2e-3, 1.5, 12.0, 40, 12
#: How many times a fixed effect's or a covariance's search range (``MAX_DISTANCE`` units)
#: is doubled while the profile, still below the cut at its end, keeps rising towards it.
MAX_EXTEND = 4
#: A covariance's root-finding unit is at least this times the product of its SDs.
COV_SCALE_FLOOR = 0.25
#: The largest ``|rho|`` profiled; ``D`` below the cut there puts the end at the edge.
RHO_EDGE = 1.0 - 1e-4
#: ``atanh(RHO_EDGE)``: the box of a deterministic point's free correlations.
Z_EDGE = float(np.arctanh(RHO_EDGE))
#: Spawn key of the profile's seeds under the fit's seed.
PROFILE_COV_KEY = 7002


@dataclass(frozen=True)
class ProfileTarget:
    """One profiled quantity.

    Attributes
    ----------
    kind : str
        ``"beta"``, ``"scalar"`` (a scalar variance component), ``"var"`` (a term's
        variance), ``"corr"`` or ``"cov"`` (a pair of a term's effects).
    name : str
        Its name: a parameter's name, or ``g Corr(b, a)`` for a correlation.
    index : int
        Position in ``theta = (beta, covariance parameters)`` (a correlation: its
        covariance's).
    unit, i, j : int
        The term (unit of ``CovStructure``) and positions in
        it (``i >= j``); -1 for a fixed effect.
    """

    kind: str
    name: str
    index: int
    unit: int = -1
    i: int = -1
    j: int = -1


def profile_targets(model):
    """Every profiled quantity of ``model``: its parameters, then each term's correlations.

    Returns
    -------
    list of ProfileTarget
    """
    p, cov = model.k_fe, model.design.cov
    names = list(model.data.param_names)
    out = [ProfileTarget("beta", names[j], j) for j in range(p)]
    corrs = []
    for ui, u in enumerate(cov.units):
        p0 = p + int(cov.param_ptr[ui])
        if len(u) == 1:
            out.append(ProfileTarget("scalar", names[p0], p0, ui, 0, 0))
            continue
        r, c = np.tril_indices(len(u))
        for n, (i, j) in enumerate(zip(r, c, strict=True)):
            name = names[p0 + n]
            if i == j:
                out.append(ProfileTarget("var", name, p0 + n, ui, int(i), int(j)))
            else:
                out.append(ProfileTarget("cov", name, p0 + n, ui, int(i), int(j)))
                corrs.append(ProfileTarget("corr", name.replace(" Cov(", " Corr("), p0 + n,
                                           ui, int(i), int(j)))
    return out + corrs


class _Coords:
    """``theta`` from the profile's coordinates ``phi`` (module docstring), with ``J`` and
    the second derivatives of the covariance parameters."""

    def __init__(self, model, target):
        self.p, self.cov = model.k_fe, model.design.cov
        self.target = target
        self.d = self.p + self.cov.k_vcp
        self.fix = target.index  # the profiled coordinate has its parameter's position
        kinds = [("b", j) for j in range(self.p)]
        for ui, u in enumerate(self.cov.units):
            if len(u) == 1:
                kinds.append(("l",))
                continue
            p0 = self.p + int(self.cov.param_ptr[ui])
            r, c = np.tril_indices(len(u))
            pos = {(a, b): p0 + n for n, (a, b) in enumerate(zip(r, c, strict=True))}
            for a, b in zip(r, c, strict=True):
                if a == b:
                    kinds.append(("s",))
                elif target.kind == "cov" and pos[(a, b)] == target.index:
                    kinds.append(("c",))
                else:
                    kinds.append(("z", pos[(a, a)], pos[(b, b)]))
        self.kinds = kinds
        #: A covariance's two variances (positions ``a``, ``b``) have the coordinates
        #: ``u = s_a + s_b`` (at ``a``) and ``v = s_a - s_b`` (at ``b``): with the covariance
        #: ``c`` held, ``|rho| = |c| e^{-u}``, so the parameter space is ``u > log|c|`` and
        #: the box ``|rho| <= RHO_EDGE`` a bound on ``u`` alone (``CovProfiler.u_bound``).
        self.pair = None
        if target.kind == "cov":
            p0 = target.index - (target.i * (target.i + 1) // 2 + target.j)
            self.pair = (p0 + target.i * (target.i + 1) // 2 + target.i,
                         p0 + target.j * (target.j + 1) // 2 + target.j)

    def _to_s(self, phi):
        """``phi`` with a covariance's ``(u, v)`` back to ``(s_a, s_b)``."""
        phi = np.array(phi, dtype=float)
        if self.pair is not None:
            a, b = self.pair
            phi[a], phi[b] = 0.5 * (phi[a] + phi[b]), 0.5 * (phi[a] - phi[b])
        return phi

    def to_phi(self, theta):
        theta = np.asarray(theta, dtype=float)
        phi = theta.copy()
        for r, k in enumerate(self.kinds):
            if k[0] == "l":
                phi[r] = np.log(theta[r])
            elif k[0] == "s":
                phi[r] = 0.5 * np.log(theta[r])
            elif k[0] == "z":
                rho = theta[r] / np.sqrt(theta[k[1]] * theta[k[2]])
                phi[r] = np.arctanh(rho)
        if self.pair is not None:
            a, b = self.pair
            phi[a], phi[b] = phi[a] + phi[b], phi[a] - phi[b]
        return phi

    def to_theta(self, phi):
        """``(theta, J, hess)``: ``J = d theta / d phi`` (d x d) and ``hess[r]`` the Hessian
        of ``theta_r`` (only the covariance rows are nonzero)."""
        if self.pair is None:
            return self._to_theta_s(phi)
        theta, J, hess = self._to_theta_s(self._to_s(phi))
        a, b = self.pair
        K = np.eye(self.d)  # d phi_s / d phi, linear
        K[a, a], K[a, b], K[b, a], K[b, b] = 0.5, 0.5, 0.5, -0.5
        return theta, J @ K, np.einsum("rst,sx,ty->rxy", hess, K, K)

    def _to_theta_s(self, phi):
        """:meth:`to_theta` with every variance of a term on its ``s`` coordinate."""
        phi = np.asarray(phi, dtype=float)
        d = self.d
        theta, J, hess = phi.copy(), np.eye(d), np.zeros((d, d, d))
        for r, k in enumerate(self.kinds):
            if k[0] == "l":
                theta[r] = J[r, r] = hess[r, r, r] = np.exp(phi[r])
            elif k[0] == "s":
                theta[r] = np.exp(2.0 * phi[r])
                J[r, r], hess[r, r, r] = 2.0 * theta[r], 4.0 * theta[r]
        for r, k in enumerate(self.kinds):
            if k[0] != "z":
                continue
            a, b = k[1], k[2]  # positions of the two variances (coordinates s_a, s_b)
            e = np.exp(phi[a] + phi[b])
            t = np.tanh(phi[r])
            sech2 = 1.0 - t * t
            theta[r] = t * e
            J[r, r], J[r, a], J[r, b] = sech2 * e, t * e, t * e
            hess[r, r, r] = -2.0 * t * sech2 * e
            for x in (a, b):
                hess[r, r, x] = hess[r, x, r] = sech2 * e
            for x in (a, b):
                for y in (a, b):
                    hess[r, x, y] = t * e
        return theta, J, hess

    def psi(self, s):
        """The profiled quantity on its natural scale from the coordinate value ``s``
        (the variance for ``"var"``; ``rho`` for ``"corr"``)."""
        kind = self.target.kind
        if kind == "var":
            return float(np.exp(2.0 * s))
        if kind == "scalar":
            return float(np.exp(s))
        if kind == "corr":
            return float(np.tanh(s))
        return float(s)

    def dpsi_ds(self, s):
        kind = self.target.kind
        if kind == "var":
            return 2.0 * float(np.exp(2.0 * s))
        if kind == "scalar":
            return float(np.exp(s))
        if kind == "corr":
            return 1.0 - float(np.tanh(s)) ** 2
        return 1.0


class _Objective:
    """``-l_m`` over the free coordinates (beta whitened), the profiled one held at ``s``
    (``s`` None: every coordinate free)."""

    def __init__(self, engine, coords, phi0, X, fixed=True, budget=None):
        self.engine, self.c, self.budget = engine, coords, budget
        self.phi0 = np.array(phi0, dtype=float)
        d, p = coords.d, coords.p
        self.free = np.array([r for r in range(d) if not (fixed and r == coords.fix)], int)
        bfree = [r for r in self.free if r < p]
        self.nb = len(bfree)
        self.T = ParamTransform(X[:, bfree], 0).T if bfree else np.zeros((0, 0))
        self.T_inv = np.linalg.inv(self.T) if bfree else self.T
        self._x, self._out, self.last, self.theta = None, None, None, None

    def to_x(self, phi):
        f = phi[self.free]
        return np.concatenate([self.T_inv @ f[:self.nb], f[self.nb:]])

    def to_phi(self, x):
        phi = self.phi0.copy()
        phi[self.free] = np.concatenate([self.T @ x[:self.nb], x[self.nb:]])
        return phi

    def _eval(self, x):
        if self._x is not None and np.array_equal(x, self._x):
            return self._out
        phi = self.to_phi(x)
        theta, J, hess = self.c.to_theta(phi)
        out, ev = (np.inf, np.zeros_like(x), np.eye(len(x))), None
        if np.all(np.isfinite(theta)) and self.c.cov.valid(theta[self.c.p:]):
            if self.budget is not None:
                self.budget.check("a constrained maximization")
            ev = self.engine.evaluate(theta)
            if ev.gradient is not None and np.isfinite(ev.value) \
                    and np.all(np.isfinite(ev.gradient)) and np.all(np.isfinite(ev.hessian)):
                g = J.T @ ev.gradient
                H = J.T @ ev.hessian @ J + np.einsum("r,rst->st", ev.gradient, hess)
                f = self.free
                M = np.eye(len(f))
                M[:self.nb, :self.nb] = self.T
                gx, Hx = M.T @ g[f], M.T @ H[np.ix_(f, f)] @ M
                out = (-float(ev.value), -gx, -0.5 * (Hx + Hx.T))
                self.g_phi = g
            else:
                ev = None
        self._x, self._out, self.last, self.theta = np.array(x), out, ev, theta
        return out

    def fun(self, x):
        return self._eval(x)[0]

    def jac(self, x):
        return self._eval(x)[1]

    def hess(self, x):
        return self._eval(x)[2]


@dataclass
class _Point:
    s: float
    theta: np.ndarray
    value: float
    slope: float  # d l_m / d s at the constrained maximum
    mcse: float  # own MCSE of l_m there
    engine: int


class CovProfiler:
    """The profile of one quantity of a fit with correlated terms (module docstring).

    Parameters
    ----------
    results : MonteCarloGLMMResults
    target : ProfileTarget or str or int
        A :class:`ProfileTarget`, a parameter name or position, or a correlation's name
        (``g Corr(x, Intercept)``).
    random_state : optional
        Seeds the fresh draw sets and the fits without an effect (default: a child of the
        fit's seed).
    """

    def __init__(self, results, target, random_state=None, budget=None):
        res = getattr(results, "_results", results)
        self.res, model = res, res.model
        self.budget = budget
        self.target = _resolve_target(res, target)
        self.coords = _Coords(model, self.target)
        self.X = model.arrays.X
        self.p = model.k_fe
        self.theta_hat = np.asarray(res.params, dtype=float)
        cov = model.design.cov
        if not cov.valid(self.theta_hat[self.p:]):
            raise ValueError(
                f"cannot profile {self.target.name}: the estimated covariance is singular "
                f"(boundary (singular) fit: {res.singular}); profile the reduced models of "
                "res.reduced_fits() instead")
        self.phi_hat = self.coords.to_phi(self.theta_hat)
        self.s_hat = float(self.phi_hat[self.coords.fix])
        self.l_hat, self.l_hat_mcse = float(res.llf_mc), float(res.llf_mcse)
        from glmm_sm.fit.driver import FitOptions

        self.opts = getattr(res, "fit_options", None) or FitOptions()
        self.seed = (child_seed(res.seed, PROFILE_COV_KEY, self.target.index,
                                int(self.target.kind == "corr"))
                     if random_state is None else as_seed_sequence(random_state))
        self.n_jobs = effective_n_jobs(self.opts.n_jobs)
        self.m = int(res.m)
        self.tol = max(RECENTRE_MCSE, 2.0 * self.l_hat_mcse)
        # a deterministic (quadrature) fit: every point on a rule placed at it
        self.deterministic = bool(getattr(res, "deterministic", False))
        self.sets = DrawSets(model, self.opts, self.seed, self.m, self.n_jobs,
                             self.target.index, self.p, self.theta_hat, self.l_hat,
                             self.l_hat_mcse, self.tol, res.engine)
        self.points, self._zero = [], None
        #: Rules placed for a deterministic fit's points (``_recentred``).
        self.adaptive_rules = 0
        with threadpool_limits(1, user_api="blas"):
            top = self._maximize(0, self.phi_hat, fixed=False)
        self.L0, self.theta_top = top[0], top[1]
        Hs = top[2]
        # The coordinate's standard error from the Hessian over all coordinates.
        try:
            Vi = np.linalg.inv(-Hs)
            v = float(Vi[self.coords.fix, self.coords.fix])
            # not a strict maximum in this coordinate (a near-singular fit): no SE
            self.se_s = float(np.sqrt(v)) if v > 0 else np.nan
        except np.linalg.LinAlgError:
            self.se_s = np.nan
        if not (np.isfinite(self.se_s) and self.se_s > 0):
            self.se_s = 0.5
        #: How far a deterministic fit's top (``_free_top``; for a covariance also its
        #: own point at the estimate's covariance) rose above the fit's log-likelihood (0 if
        #: it did not).
        self.top_gain = 0.0
        if self.deterministic:
            # A near-singular fit can stop short of its maximum along the ridge |rho| = 1,
            # and its log-likelihood can be its pilot rule's (data set 92 of the coverage
            # study: 0.015 below the exact maximum, every deviance 0.03 too low): the
            # deviances are from the highest of the fit, the maximum of the adaptive
            # quadrature log-likelihood over every coordinate in the box, and, for a
            # covariance, the constrained maximum at the estimate's covariance.
            with threadpool_limits(1, user_api="blas"):
                tops = [self._free_top()]
                if self.target.kind == "cov":
                    tops.append(self._best_of(self._cov_starts(self.s_hat), self.s_hat).value)
            best = max((v for v in tops if np.isfinite(v)), default=-np.inf)
            if best > self.l_hat:
                self.top_gain = float(best - self.l_hat)
                self.l_hat = float(best)

    # ------------------------------------------------------------------ maxima
    def _maximize(self, k, phi0, fixed=True):
        """``(value, theta, H_phi, obj)`` of the maximum on set ``k`` from ``phi0``."""
        obj = _Objective(self.sets.engines[k], self.coords, phi0, self.X, fixed, self.budget)
        r = minimize(obj.fun, obj.to_x(np.asarray(phi0, dtype=float)), jac=obj.jac,
                     hess=obj.hess, method="trust-exact",
                     options={"gtol": self.opts.gtol, "maxiter": self.opts.maxiter})
        obj._eval(r.x)
        if obj.last is None:
            return -np.inf, obj.theta, None, obj
        theta, J, hess = self.coords.to_theta(obj.to_phi(r.x))
        ev = obj.last
        H = J.T @ ev.hessian @ J + np.einsum("r,rst->st", ev.gradient, hess)
        return float(ev.value), theta, H, obj

    def _start(self, s, side=None):
        """A valid start for the coordinate at ``s``: the nearest point's coordinates (for a
        deterministic fit, the nearest point on the estimate's side of ``s``: continuation
        from the estimate, so that a point past the end, whose maximum may lie on another
        branch, such as the slope's variance at 0 in a correlation's profile, does not
        carry the points back inside it onto that branch).  ``side`` "far": the nearest
        point on the other side of ``s`` instead (None if there is none; a covariance's
        restart, :meth:`_cov_starts`)."""
        pts = self.points
        if self.deterministic and side == "far":
            pts = [q for q in pts if (q.s - s) * (self.s_hat - s) < 0 and np.isfinite(q.value)]
        elif self.deterministic:
            pts = [q for q in pts if (q.s - s) * (self.s_hat - s) >= 0 and np.isfinite(q.value)]
        if pts:
            near = min(pts, key=lambda q: abs(q.s - s))
            phi = self.coords.to_phi(near.theta)
        elif side == "far":
            return None
        else:
            phi = self.phi_hat.copy()
        phi[self.coords.fix] = s
        if self.target.kind == "cov":  # keep |rho| <= 0.95 at the start
            a = self.coords.pair[0]  # u = s_a + s_b: |rho| = |s| e^{-u}
            need = np.log(abs(s) / 0.95) if s != 0 else -np.inf
            phi[a] = max(phi[a], need)
        return phi

    def u_bound(self, s):
        """A covariance's box at ``s``: ``(position of u, lower bound)`` with ``|rho| =
        RHO_EDGE`` at the bound (None for other targets and at ``s = 0``)."""
        if self.target.kind != "cov" or s == 0:
            return None
        return self.coords.pair[0], float(np.log(abs(s) / RHO_EDGE))

    def _cov_starts(self, s):
        """A deterministic covariance point's starts: the continuation from the estimate's
        side (:meth:`_start`), the nearest point on the other side, and both with the
        correlation at the box's edge, ``|rho| = RHO_EDGE``.

        Why several: near a singular estimate (``|rho|`` near 1) the constrained maxima lie
        on more than one branch, and which one a continuation follows depends on where it
        came from; the profile is the highest of them (its value is continuous in ``s``,
        its argmax need not be).  Near-duplicate starts are dropped."""
        out = []
        ub = self.u_bound(s)
        for side in (None, "far"):
            phi = self._start(s, side)
            if phi is None:
                continue
            out.append(phi)
            if ub is not None:
                edge = phi.copy()
                edge[ub[0]] = ub[1]
                out.append(edge)
        kept = []
        for phi in out:
            if all(np.max(np.abs(phi - q)) > 1e-6 for q in kept):
                kept.append(phi)
        return kept

    def point(self, s):
        """The constrained maximum with the coordinate at ``s``: on the set centred nearest
        (the fit's draws first), or on fresh sets centred at the optimum when that one does
        not cover it (at most two; the point with the smaller MCSE of ``D`` is kept)."""
        if self.deterministic:
            if self.target.kind == "cov":
                return self._best_of(self._cov_starts(s), s)
            return self._recentred(None, self._start(s), s)
        start = self._start(s)
        pt = self._solve(self._nearest(s), start, s)
        found = [pt]
        for _ in range(2):
            if self._reliable(pt) or len(self.sets) >= MAX_SETS:
                break
            centre = pt.theta if np.isfinite(pt.value) else self.coords.to_theta(start)[0]
            k = self.sets.add(centre)
            self.sets.centres[k] = s
            pt = self._solve(k, self.coords.to_phi(centre), s)
            found.append(pt)
        best = min(found, key=lambda q: self.deviance(q)[1] if np.isfinite(q.value)
                   else np.inf)
        for q in found[1:]:
            if q is not best:
                self.sets.retire(q.engine)
        self.points.append(best)
        return best

    def _recentred(self, pt, start, s):
        """A deterministic fit's point: the constrained maximum of the adaptive quadrature
        log-likelihood ``F(phi)``, the value on the rule placed at ``phi`` itself (its
        conditional modes and curvatures, as the fit's rounds place it at the estimate),
        with every free correlation in ``|rho| <= RHO_EDGE``.

        Why not a maximization on one rule, re-placed at its maximum until that is stable
        (the earlier scheme): near a variance's zero end the constrained maximum lies at a
        correlation of +-1 (with the slope's SD small, the slope moves with the intercept),
        so ``z = atanh(rho)`` runs off to infinity; a rule placed at one ``rho`` and
        maximized over ``z`` followed its own error to log-likelihoods 200 above the fit's,
        and the re-placed rules crept along ``z`` by about 0.01 in ``l`` per rule, tens of
        rules and thousands of optimizer iterations per point (a 50 x 12 data set's
        ``Var(x)`` profile ran past 150 s of CPU without an end).  Here each iterate gets
        its own rule, the step is a damped Newton step from the gradient and Hessian on
        that rule at its own centre (they differ from ``F``'s by the rule's error only),
        projected on the box ``|z| <= atanh(RHO_EDGE)`` (a coordinate at the box's edge
        whose gradient points out is held there: the supremum at ``|rho| = 1`` differs from
        the value at the edge by ``O(Var (1 - RHO_EDGE))``, far below the root's
        tolerance); a step is kept when ``F`` does not decrease beyond
        ``ADAPTIVE_F_TOL``, else halved.  The iteration stops once the Newton decrement on
        the free coordinates is below ``ADAPTIVE_DECREMENT``, a kept step gains less than
        ``ADAPTIVE_GAIN`` or no halving gains: the fit's own stopping rule (the rule at the
        point, gradient zero there) to well below the root's tolerance (2e-3 in ``zeta``,
        0.008 in the deviance at the 95% cut).  ``pt`` is not used, ``start`` is (clipped to
        the box).  There is no Monte Carlo error to weigh.

        A covariance's box is ``|rho| <= RHO_EDGE`` too: with the covariance held it is the
        bound ``u >= log(|c| / RHO_EDGE)`` on ``u = s_a + s_b`` (:class:`_Coords`), held
        the same way.  (On ``(s_a, s_b)`` with no box, a maximum at ``|rho|`` near 1 lies
        against the edge of positive definiteness, where the steps out of the space were
        halved until a kept step gained less than ``ADAPTIVE_GAIN``: the iteration stopped
        far along the ridge ``|rho| = 1`` from the maximum, with deviances up to 3.6 too
        high on data set 92 of the coverage study.)"""
        del pt
        pt = self._climb(start, s)
        self.points.append(pt)
        return pt

    def _best_of(self, starts, s):
        """The highest of the deterministic points climbed from ``starts`` (each by
        :meth:`_recentred`'s iteration); only it is kept in ``points``."""
        found = [self._climb(st, s) for st in starts]
        best = max(found, key=lambda q: q.value if np.isfinite(q.value) else -np.inf)
        for q in found:
            if q is not best and np.isfinite(q.value):
                self.sets.retire(q.engine)
        self.points.append(best)
        return best

    def _free_top(self):
        """A deterministic fit's top: the maximum of the adaptive quadrature log-likelihood
        over every coordinate, every correlation in ``|rho| <= RHO_EDGE``, climbed from the
        estimate as :meth:`_recentred`'s points are (on a fixed effect's coordinates, where
        the box is ``|atanh(rho)| <= Z_EDGE``, nothing held); its value (``-inf`` if the
        climb fails).  Computed once per fit (kept in the results' cache).

        Why: at a near-singular estimate the fit can stop short of the maximum along the
        ridge ``|rho| = 1`` (its log-Cholesky coordinate runs off to ``-inf`` and the
        optimizer stops at its iteration limit), and a fit that stops after its pilot round
        reports the pilot rule's log-likelihood (another rule, placed at another point);
        the deviances would then be too low and the intervals too wide."""
        cache = getattr(self.res, "_cache", None)
        key = ("cov_profile_top",)
        if cache is not None and key in cache:
            return cache[key]
        coords = _Coords(self.res.model, ProfileTarget("beta", "top", -1))
        pt = self._climb(coords.to_phi(self.theta_hat), self.s_hat, coords=coords)
        if np.isfinite(pt.value):
            self.sets.retire(pt.engine)
        if cache is not None:
            cache[key] = pt.value
        return pt.value

    def _climb(self, start, s, coords=None):
        """:meth:`_recentred`'s iteration from ``start``; the point (not kept).  With
        ``coords`` (:meth:`_free_top`): on those coordinates, every one free."""
        free = coords is not None
        coords = self.coords if coords is None else coords
        phi = np.array(start, dtype=float)
        if not free:
            phi[coords.fix] = s
        zr = [r for r, k in enumerate(coords.kinds)
              if k[0] == "z" and (free or r != coords.fix)]
        phi[zr] = np.clip(phi[zr], -Z_EDGE, Z_EDGE)
        ub = None if free else self.u_bound(s)
        if ub is not None:
            phi[ub[0]] = max(phi[ub[0]], ub[1])
        cur = self._adaptive_eval(phi, s, coords if free else None)
        for _ in range(ADAPTIVE_MAXITER):
            if cur is None:
                break
            obj, x, f, g, H = cur[1:]
            zx = np.array([list(obj.free).index(r) for r in zr], dtype=int)
            fixed = np.zeros(len(x), dtype=bool)  # at the box's edge, gradient pointing out
            fixed[zx] = (np.abs(x[zx]) >= Z_EDGE * (1 - 1e-12)) & (np.sign(x[zx]) * g[zx] < 0)
            if ub is not None:
                ux = list(obj.free).index(ub[0])
                fixed[ux] = (x[ux] <= ub[1] + 1e-12 * max(1.0, abs(ub[1]))) and g[ux] > 0
            fr = ~fixed
            step = np.zeros(len(x))
            step[fr], decrement = _damped_newton_step(g[fr], H[np.ix_(fr, fr)])
            if decrement <= ADAPTIVE_DECREMENT:
                break
            new, t = None, 1.0
            for _ in range(ADAPTIVE_HALVINGS):
                xt = x + t * step
                xt[zx] = np.clip(xt[zx], -Z_EDGE, Z_EDGE)
                if ub is not None:
                    xt[ux] = max(xt[ux], ub[1])
                trial = self._adaptive_eval(obj.to_phi(xt), s, coords if free else None)
                if trial is not None and trial[3] <= f + ADAPTIVE_F_TOL:
                    new = trial
                    break
                if trial is not None:
                    self.sets.retire(trial[0].engine)
                t *= 0.5
            if new is None:
                break
            self.sets.retire(cur[0].engine)
            gain = f - new[3]
            cur = new
            if gain < ADAPTIVE_GAIN:
                break
        return cur[0] if cur is not None else _Point(float(s), coords.to_theta(phi)[0],
                                                     -np.inf, np.nan, np.inf, 0)

    def _adaptive_eval(self, phi, s, coords=None):
        """``(point, obj, x, f, g, H)`` of ``-F`` at ``phi`` on a rule placed there (None
        outside the parameter space or where the rule or its evaluation fails).  With
        ``coords``: ``phi`` on those coordinates, every one free (:meth:`_free_top`)."""
        free = coords is not None
        coords = self.coords if coords is None else coords
        theta = coords.to_theta(phi)[0]
        if not (np.all(np.isfinite(theta)) and coords.cov.valid(theta[self.p:])):
            return None
        try:
            k = self.sets.add(theta)
        except (np.linalg.LinAlgError, FloatingPointError, ValueError):
            return None
        self.sets.centres[k] = s
        self.adaptive_rules += 1
        obj = _Objective(self.sets.engines[k], coords, phi, self.X, not free, self.budget)
        x = obj.to_x(phi)
        f, g, H = obj._eval(x)
        if obj.last is None or not np.isfinite(f):
            self.sets.retire(k)
            return None
        slope = np.nan if free else float(obj.g_phi[coords.fix])
        pt = _Point(float(s), obj.theta, -float(f), slope,
                    own_mcse(obj.last, self.sets.engines[k].m), k)
        return pt, obj, x, float(f), g, H

    def _nearest(self, s):
        c = np.array([self.s_hat] + list(self.sets.centres[1:]), dtype=float)
        with np.errstate(invalid="ignore"):
            return int(np.nanargmin(np.abs(c - s)))

    def _reliable(self, pt):
        """Whether ``D`` at ``pt`` is as precise as a fresh set centred there would give
        at the re-centring tolerance: ``mcse(D) <= 2 sqrt(llf_mcse^2 + tol^2)``."""
        if not np.isfinite(pt.value):
            return False
        return bool(self.deviance(pt)[1] <= 2.0 * np.hypot(self.l_hat_mcse, self.tol))

    def _solve(self, k, start, s):
        value, theta, _, obj = self._maximize(k, start)
        if obj.last is None:
            return _Point(s, theta, -np.inf, np.nan, np.inf, k)
        slope = float(obj.g_phi[self.coords.fix])
        return _Point(float(s), theta, value, slope, own_mcse(obj.last, self.sets.engines[k].m),
                      k)

    # ------------------------------------------------------------------ deviance
    def deviance(self, pt):
        """``(D, mcse)`` at ``pt`` (module docstring)."""
        if pt.engine < 0:  # the fit without the effect
            return (max(2.0 * (self.l_hat - pt.value), 0.0),
                    2.0 * float(np.hypot(self.l_hat_mcse, pt.mcse)))
        if pt.engine == 0:
            mc = paired_deviance_mcse(self.sets.engines[0], self.theta_top, pt.theta)
            return max(2.0 * (self.L0 - pt.value), 0.0), mc
        return (max(2.0 * (self.l_hat - pt.value), 0.0),
                2.0 * float(np.hypot(self.l_hat_mcse, pt.mcse)))

    def zeta(self, pt):
        return float(np.sign(pt.s - self.s_hat) * np.sqrt(self.deviance(pt)[0]))

    def zero_point(self):
        """The maximum of the model without the profiled variance's effect (``D`` at
        variance 0), a Monte Carlo MLE on its own draws (an exact GLM with no effect
        left)."""
        if self._zero is not None:
            return self._zero
        from glmm_sm.fit.boundary import glm_fit
        from glmm_sm.fit.driver import mcmle

        t, model = self.target, self.res.model
        comp = model.design.cov.units[t.unit][t.i]
        red, keep = model_without(model, [comp])
        if red is None:
            value, mcse = glm_fit(model)[2], 0.0
        else:
            start = _start_without(model, self.theta_hat, keep)
            opts = replace(self.opts, n_jobs=self.n_jobs)
            out = mcmle(red, opts, child_seed(self.seed, 0), start, disp=False)
            value = float(out.evaluation.value)
            mcse = own_mcse(out.evaluation, out.n_draws) if out.n_draws else 0.0
        self._zero = _Point(-np.inf, self.theta_hat, value, np.nan, mcse, -1)
        return self._zero

    # ------------------------------------------------------------------ ends
    def limit(self, side, alpha):
        """``(end, mcse, note)`` of the ``1 - alpha`` interval on the natural scale (a
        variance for ``"var"``, ``rho`` for ``"corr"``); ``side`` -1 or +1."""
        cut = float(stats.chi2.ppf(1.0 - alpha, 1))
        target = side * np.sqrt(cut)
        kind = self.target.kind
        with threadpool_limits(1, user_api="blas"):
            if kind in ("var", "scalar") and side < 0:
                z = self.zero_point()
                d0, m0 = self.deviance(z)
                if d0 <= cut:
                    return 0.0, 0.0, f"D(0) = {d0:.3g} (MCSE {m0:.2g}) <= {cut:.3g}"
            pt, note = self._root(side, target)
            if pt is None:
                if kind == "corr":
                    return float(side), 0.0, note
                return float(side * np.inf), np.nan, note
            d_mcse = self.deviance(pt)[1]
            dD = abs(2.0 * pt.slope)
            mcse = d_mcse / dD * self.coords.dpsi_ds(pt.s) if dD > 0 else np.nan
            return self.coords.psi(pt.s), float(mcse), note

    def _scale(self):
        """The root finder's unit on the coordinate: its standard error, for a covariance
        at least ``COV_SCALE_FLOOR`` times the product of the two SDs at the estimate.  At
        an estimate with ``|rho|`` near 1 the Hessian's standard error of the covariance is
        tiny (1e-4 on a 50 x 12 data set with ``rho = 0.9999``): 12 of them from the
        estimate the deviance was still below the cut, and the interval came out as
        ``(-inf, inf)``."""
        t = self.target
        if t.kind != "cov":
            return self.se_s
        p0 = t.index - (t.i * (t.i + 1) // 2 + t.j)
        a, b = p0 + t.i * (t.i + 1) // 2 + t.i, p0 + t.j * (t.j + 1) // 2 + t.j
        return max(self.se_s, COV_SCALE_FLOOR * float(np.sqrt(self.theta_hat[a]
                                                              * self.theta_hat[b])))

    def _root(self, side, target):
        """Safeguarded Newton on ``zeta`` in the coordinate; ``(point, note)``, point None:
        the profile stays below the cut to the parameter space's edge.

        A fixed effect's or a covariance's search reaches ``MAX_DISTANCE`` units
        (:meth:`_scale`) from the estimate; where the deviance there is still below the cut
        but the Newton step on ``zeta`` puts the cut within the range doubled, the range is
        doubled (at most ``MAX_EXTEND`` times) and the search goes on: the unit is the
        Hessian's standard error, or for a covariance a quarter of the product of the SDs at
        the estimate, and at a near-singular estimate either can be a small fraction of the
        interval (coverage data set 59: the covariance's unit 0.024 at ``SD_b = 0.11``, the
        deviance 3.12 at 12 units and the end at 0.42, reported as no finite end).  A
        profile that flattens below the cut (no Newton step to it within the doubled range)
        still ends there with no finite end."""
        kind = self.target.kind
        edge = np.arctanh(RHO_EDGE) if kind == "corr" else np.inf
        if kind in ("var", "scalar"):
            far = self.s_hat + side * MAX_DISTANCE / (2.0 if kind == "var" else 1.0)
        else:
            far = self.s_hat + side * MAX_DISTANCE * self._scale()
        limit = side * edge if kind == "corr" else far
        step_max = MAX_STEP * (self._scale() if kind in ("beta", "cov") else 1.0)
        s = self.s_hat + side * min(abs(target) * self._scale(), step_max)
        s_in, s_out, pt, extended = self.s_hat, None, None, 0
        for _ in range(MAX_ITER):
            if side * (s - limit) >= 0:
                s = limit
            pt = self.point(s)
            if not np.isfinite(pt.value):  # outside the space (or no evaluation): shrink
                s_out = s
                s = 0.5 * (s + s_in)
                continue
            z = self.zeta(pt)
            err = z - target
            if abs(err) < ZETA_TOL:
                return pt, "" if pt.engine == 0 else f"end on re-centred draws (set {pt.engine})"
            if side * err < 0:
                s_in = s
            else:
                s_out = s
            dz = -pt.slope / z if abs(z) > 1e-8 else np.nan
            newton = s - err / dz if np.isfinite(dz) and dz > 0 else np.nan
            if side * err < 0 and s == limit:
                if kind == "corr":
                    d = self.deviance(pt)[0]
                    return None, (f"D = {d:.3g} < the cut at rho = {side * RHO_EDGE:g}: "
                                  f"the end is the edge {side:+d}")
                wider = self.s_hat + 2.0 * (limit - self.s_hat)
                if (kind in ("beta", "cov") and extended < MAX_EXTEND and np.isfinite(newton)
                        and side * (wider - newton) > 0):
                    limit, extended = wider, extended + 1
                else:
                    return None, "profile deviance stays below the cut: no finite end"
            if s_out is None:
                if not (np.isfinite(newton) and side * (newton - s) > 0):
                    newton = s + side * step_max
                s = s + float(np.clip(newton - s, -step_max, step_max))
            else:
                lo, hi = sorted((s_in, s_out))
                if hi - lo < 1e-7 * max(1.0, abs(hi)):
                    return pt, (f"bracket closed with |zeta - target| = {abs(err):.2g}: "
                                "Monte Carlo noise in the profile")
                s = newton if np.isfinite(newton) and lo < newton < hi else 0.5 * (lo + hi)
        return pt, f"root finding stopped after {MAX_ITER} steps"


def _damped_newton_step(g, H):
    """``(step, decrement)`` minimizing ``f`` from its gradient ``g`` and Hessian ``H``:
    the Newton step with the Hessian's eigenvalues floored at ``1e-8`` times the largest
    (a flat direction, such as a correlation at a variance near 0, gets no wild step); where
    that step is longer than ``ADAPTIVE_MAX_STEP``, the minimizer of the same quadratic
    model on the ball of that radius (the trust-region step ``-(H + lambda I)^{-1} g`` with
    ``lambda >= 0`` giving the radius).  The decrement is the gain
    ``-(g' step + step' H step / 2)`` the full floored Newton step predicts.

    Why the ball's minimizer and not the Newton step scaled down: near ``|rho| = 1`` the
    profiled log-likelihood is flat in ``z = atanh(rho)`` (``drho/dz = 1 - rho^2``), so the
    Newton step's ``z`` part is huge whatever its tiny gradient; scaled to the radius, the
    step left every other coordinate a ten-thousandth of its Newton step, and a climb ran
    out of iterations far below its maximum (data set 325 of the coverage study: the
    fixed effect ``x``'s upper end came out where the exact deviance is 0.83, not 3.84).
    On the ball each direction moves by ``g_i / (w_i + lambda)``: the flat direction with
    no gradient stays put and the others take their steps."""
    w, V = np.linalg.eigh(0.5 * (H + H.T))
    floor = 1e-8 * max(float(np.max(np.abs(w))), 1.0)
    wf = np.maximum(w, floor)
    gv = V.T @ g
    decrement = 0.5 * float(np.sum(gv * gv / wf))
    lam = _ball_multiplier(gv, wf, ADAPTIVE_MAX_STEP)
    step = -V @ (gv / (wf + lam))
    return step, decrement


def _ball_multiplier(gv, w, radius):
    """The ``lambda >= 0`` with ``||gv / (w + lambda)|| = radius`` (0 where the Newton step
    ``gv / w`` is already inside the ball); ``w > 0``.  Newton's iteration on
    ``1 / ||s(lambda)|| - 1 / radius`` (concave and increasing in ``lambda``, so the
    iterates rise monotonically to the root from 0)."""
    def norm(lam):
        return float(np.sqrt(np.sum((gv / (w + lam)) ** 2)))

    if norm(0.0) <= radius:
        return 0.0
    lam = 0.0
    for _ in range(100):
        d = w + lam
        n = norm(lam)
        # d/dlam of 1/n = (sum gv^2 / d^3) / n^3
        slope = float(np.sum(gv * gv / d**3)) / n**3
        step = (1.0 / radius - 1.0 / n) / slope
        lam += step
        if step <= 1e-12 * max(lam, 1e-300):
            break
    return lam


def _resolve_target(res, target):
    if isinstance(target, ProfileTarget):
        return target
    targets = profile_targets(res.model)
    if isinstance(target, str):
        for t in targets:
            if t.name == target:
                return t
        raise ValueError(f"unknown parameter {target!r}; use one of "
                         f"{[t.name for t in targets]}")
    i = param_indices(res, [target])[0]
    return next(t for t in targets if t.index == i and t.kind != "corr")


def model_without(model, comps, uncorrelate=()):
    """``model`` without the random-effect components ``comps`` (each correlated term
    keeps its other columns, correlated), and with the terms ``uncorrelate`` (unit
    indices) split into independent components.

    Returns
    -------
    (model or None, keep)
        The new model (None when no component is left) and, for each of its covariance
        parameters, the position of the same parameter in ``model``'s (-1 where it has
        none, never the case here).
    """
    import warnings

    design = model.design
    cov = design.cov
    drop = set(int(c) for c in comps)
    keep_comp = [t for t in range(design.k_vc) if t not in drop]
    if not keep_comp:
        return None, []
    new_t = {t: i for i, t in enumerate(keep_comp)}
    cols = np.flatnonzero(np.isin(model.ident, keep_comp))
    ident = np.array([new_t[t] for t in model.ident[cols]], dtype=int)
    terms, keep = [], []
    for ui, u in enumerate(cov.units):
        left = [a for a in u if a not in drop]
        p0 = int(cov.param_ptr[ui])
        if len(u) == 1:
            if left:
                keep.append(p0)
            continue
        name, _, labels = next(tm for tm in design.cov_terms if tuple(tm[1]) == tuple(u))
        pos = [u.index(a) for a in left]
        if len(left) >= 2 and ui not in set(uncorrelate):
            terms.append((name, [new_t[a] for a in left], [labels[i] for i in pos]))
            for x, i in enumerate(pos):
                for j in pos[:x + 1]:
                    keep.append(p0 + i * (i + 1) // 2 + j)
        else:
            keep += [p0 + i * (i + 1) // 2 + i for i in pos]
    # Parameters are ordered by the units of the new model (first component order).
    cls = type(model)
    with warnings.catch_warnings():  # the user saw the full model's design warnings
        warnings.simplefilter("ignore", UserWarning)
        red = cls(model.endog, model.exog, model.exog_vc[:, cols], ident,
                  vcp_names=[design.vcp_names[t] for t in keep_comp], family=model.family,
                  weights=model.weights, offset=model.arrays.offset,
                  vc_names=[model.vc_names[j] for j in cols], factorize=model.factorize,
                  cov_terms=terms or None)
    return red, _order_like(red, model, keep)


def _order_like(red, model, keep):
    """``keep`` (positions in ``model``'s covariance parameters) in ``red``'s order, by
    name (a scalar left of a term is named by its component, a term's by ``g Var(a)``)."""
    names = list(model.vcp_names)
    comp_names = list(model.design.vcp_names)
    by_name = {}
    for q in keep:
        by_name[names[q]] = q
    out = []
    cov = model.design.cov
    for n in red.vcp_names:
        if n in by_name:
            out.append(by_name[n])
            continue
        # A scalar component that was a term's column: its variance's name in model.
        t = comp_names.index(n)
        ui = next(ui for ui, u in enumerate(cov.units) if t in u)
        i = cov.units[ui].index(t)
        out.append(int(cov.param_ptr[ui]) + i * (i + 1) // 2 + i)
    return out


def _start_without(model, theta, keep):
    p = model.k_fe
    return np.concatenate([theta[:p], theta[p:][keep]])


def cov_profile_conf_int(results, alpha=0.05, targets=None, random_state=None,
                         time_budget=PROFILE_TIME_BUDGET):
    """Profile intervals of a fit with correlated terms (module docstring).

    Parameters
    ----------
    results : MonteCarloGLMMResults
    alpha : float
    targets : None or sequence of ProfileTarget, str, int
        Default: every parameter and every correlation.
    random_state : optional
    time_budget : float or None
        Seconds for the whole call (default 600; None: no limit), as in
        :func:`glmm_sm.inference.profile.profile_conf_int`: when it runs out, the
        quantities not finished are NaN with the reason in ``note`` and
        ``attrs["stopped"]``, and a ConvergenceWarning lists them.

    Returns
    -------
    DataFrame
        Index: the names; columns ``lower``, ``upper``, ``lower_mcse``, ``upper_mcse``,
        ``note`` on the parameter's scale (a variance, covariance or correlation).
    """
    res = getattr(results, "_results", results)
    _check_alpha(alpha)
    if targets is None:
        targets = profile_targets(res.model)
    cache = getattr(res, "_cache", {})
    budget = TimeBudget(time_budget)
    rows = {}
    for t in targets:
        t = _resolve_target(res, t)
        key = ("cov_profile_conf_int", t, float(alpha))
        row = cache.get(key) if random_state is None else None
        if row is None:
            try:
                if budget.reason:
                    raise _OutOfTime(budget.reason)
                budget.check("before the profile of " + t.name)
                prof = CovProfiler(res, t, random_state, budget)
                lo, up = prof.limit(-1, alpha), prof.limit(+1, alpha)
            except _OutOfTime:
                row = (np.nan, np.nan, np.nan, np.nan, f"not computed: {budget.reason}")
            else:
                row = (lo[0], up[0], lo[1], up[1], "; ".join(n for n in (lo[2], up[2]) if n))
                if random_state is None:
                    cache[key] = row
        rows[t.name] = row
    out = pd.DataFrame.from_dict(rows, orient="index",
                                 columns=["lower", "upper", "lower_mcse", "upper_mcse", "note"])
    out.attrs["stopped"] = budget.reason
    if budget.reason:
        missing = [n for n in out.index if np.isnan(out.loc[n, "lower"])]
        warnings.warn(f"profile intervals stopped early: {budget.reason}; the intervals not "
                      f"found are NaN ({missing}). Allow a larger time_budget (or None), ask "
                      "for fewer parameters (cols), or use the Wald intervals",
                      ConvergenceWarning, stacklevel=3)
    return out


def varcorr_profile(results, alpha=0.05, random_state=None):
    """lme4's ``as.data.frame(VarCorr(fit))`` with profile intervals.

    Returns
    -------
    DataFrame
        Columns ``grp``, ``var1``, ``var2`` (empty for an SD), ``vcov`` (variance or
        covariance), ``sdcor`` (SD or correlation), then ``lower``, ``upper`` (on the
        ``sdcor`` scale: an SD's interval is the square root of the variance's),
        ``lower_mcse``, ``upper_mcse`` and ``note``.
    """
    res = getattr(results, "_results", results)
    model = res.model
    p, cov = model.k_fe, model.design.cov
    theta = np.asarray(res.params, dtype=float)[p:]
    targets = [t for t in profile_targets(model) if t.kind in ("scalar", "var", "corr")]
    ci = cov_profile_conf_int(res, alpha, targets, random_state)
    rows = []
    for t in targets:
        ui = t.unit
        u = cov.units[ui]
        r = ci.loc[t.name]
        if len(u) == 1:
            grp, var1, var2 = t.name, "(Intercept)", ""
        else:
            grp = t.name.split(" Var(")[0].split(" Corr(")[0]
            inner = t.name.split("(", 1)[1][:-1]
            parts = [s.strip() for s in inner.split(",")]
            var1 = parts[0] if t.kind == "var" else parts[1]
            var2 = "" if t.kind == "var" else parts[0]
        if t.kind == "corr":
            S = cov.sigma(theta, ui)
            vcov = S[t.i, t.j]
            sdcor = vcov / np.sqrt(S[t.i, t.i] * S[t.j, t.j])
            lo, up, lm, um = r["lower"], r["upper"], r["lower_mcse"], r["upper_mcse"]
        else:
            vcov = theta[t.index - p]
            sdcor = np.sqrt(vcov)
            lo, up = np.sqrt(r["lower"]), np.sqrt(r["upper"])
            lm = r["lower_mcse"] / (2 * lo) if lo > 0 else 0.0
            um = r["upper_mcse"] / (2 * up) if np.isfinite(up) and up > 0 else np.nan
        rows.append({"grp": grp, "var1": var1, "var2": var2, "vcov": float(vcov),
                     "sdcor": float(sdcor), "lower": float(lo), "upper": float(up),
                     "lower_mcse": float(lm), "upper_mcse": float(um), "note": r["note"]})
    return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor", "lower",
                                       "upper", "lower_mcse", "upper_mcse", "note"])


def cov_profile_frame(results, target, alpha=0.01, n_points=8, random_state=None):
    """The profile of one quantity as a curve (as
    :func:`glmm_sm.inference.profile.profile_frame`): columns ``value`` (natural scale),
    ``loglike``, ``deviance``, ``zeta``; ``attrs`` with ``name``, ``estimate``, ``lower``,
    ``upper``, ``deviance_mcse`` and ``draw_set`` per row."""
    _check_alpha(alpha)
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) \
            or n_points < 1:
        raise ValueError(f"n_points must be an integer >= 1; got {n_points!r}")
    prof = CovProfiler(results, target, random_state)
    lo, up = prof.limit(-1, alpha), prof.limit(+1, alpha)
    c = prof.coords
    pts = [_Point(prof.s_hat, prof.theta_top, prof.L0, 0.0, prof.l_hat_mcse, 0)]
    with threadpool_limits(1, user_api="blas"):
        for end in (lo[0], up[0]):
            s_end = _to_s(c, end)
            if not np.isfinite(s_end):  # an end at 0, +-1 or infinity: up to the last point
                done = [q.s for q in prof.points if np.isfinite(q.s)
                        and np.sign(q.s - prof.s_hat) == np.sign(end - c.psi(prof.s_hat))]
                if not done:
                    continue
                s_end = max(done, key=lambda v: abs(v - prof.s_hat))
            for f in np.arange(1, n_points + 1) / n_points:
                pts.append(prof.point(float(prof.s_hat + f * (s_end - prof.s_hat))))
    pts = sorted({q.s: q for q in pts if np.isfinite(q.value)}.values(), key=lambda q: q.s)
    dev = np.array([prof.deviance(q)[0] for q in pts])
    frame = pd.DataFrame({"value": [c.psi(q.s) for q in pts], "loglike": prof.l_hat - dev / 2,
                          "deviance": dev, "zeta": [prof.zeta(q) for q in pts]})
    frame.attrs.update(name=prof.target.name, estimate=c.psi(prof.s_hat),
                       loglike_max=prof.l_hat, alpha=alpha, lower=lo[0], upper=up[0],
                       deviance_mcse=[prof.deviance(q)[1] for q in pts],
                       draw_set=[q.engine for q in pts])
    return frame


def _to_s(c, psi):
    kind = c.target.kind
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "var":
            return 0.5 * np.log(psi) if psi > 0 else -np.inf
        if kind == "scalar":
            return np.log(psi) if psi > 0 else -np.inf
        if kind == "corr":
            return np.arctanh(psi) if abs(psi) < 1 else np.sign(psi) * np.inf
    return psi
