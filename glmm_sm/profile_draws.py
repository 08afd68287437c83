"""The draw sets of a profile likelihood and the deviance each one gives.

A profile (:mod:`glmm_sm.profile`) maximizes ``l_m`` with the profiled parameter ``psi``
held fixed, on several draw sets: the fit's final draws (set 0) and *fresh* sets drawn from
the sampler built at a profile point where the fit's draws degrade.  Each set ``k`` defines
its own Monte Carlo log-likelihood ``l_k`` (smooth in ``theta``), with its own maximum
``L_k = max_theta l_k(theta)`` at ``theta_k``; for set 0, ``L_0 = llf_mc`` at
``theta_hat``.

A deviance compares two values of one Monte Carlo log-likelihood.  For a point ``theta_psi``
(the constrained maximizer on set ``k``) there are two estimates of
``D(psi) = 2 (l(theta_hat) - l_p(psi))``:

* *same set*: ``D_k = 2 (L_k - l_k(theta_psi))``, with ``L_k`` from one trust-region
  maximization over all parameters on set ``k`` (started at ``theta_hat``).  It is
  ``>= 0`` up to the optimizer's tolerance.  Its MCSE, by the delta method on the logs of two
  weighted means of the same draws, is ``2 sqrt(sum_b sum_j (v_j(theta_k) -
  v_j(theta_psi))^2)`` (``v`` the block's self-normalized weights): small when the set
  covers both points, large when it does not.
* *across sets*: ``2 (llf_mc - l_k(theta_psi))``, two independent estimates, MCSE
  ``2 sqrt(llf_mcse^2 + mcse_k(theta_psi)^2)``.

For set 0 both are the same.  For a fresh set centred at a point far from ``theta_hat`` the
same-set estimate can be much worse: below ``nu_hat`` for a variance the draws, centred at a
small ``nu``, are too narrow for the posterior at ``nu_hat`` (salamander, ``nu_F = 0.3``:
MCSE 2.3 against 0.05 across sets), while above it (wider draws) the two are comparable.
Worse, where a set does not cover its own maximum the maximization follows the noise of a
few heavy draws (``L_k`` several units too high, with an MCSE estimate that cannot be
trusted), so ``L_k`` is used only where ``l_k``'s own MCSE at ``theta_k`` is at most the
profile's re-centring tolerance.  A point takes the estimate with the smaller MCSE, except
that an across-sets estimate below 0, which contradicts ``D >= 0``, gives way to the
same-set one.  Where there is no usable same-set maximum (that rule; a component the fit
put at 0, whose maximum is on the boundary, the fit's reduced model; exact values of a
GLM), the across-sets estimate is used, floored at 0 (the nearest value allowed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from ._random import child_seed
from ._validation import nonnegative_up_to_rounding
from .draws import DrawSet
from .engine import Evaluation, MCLAEngine, weight_chunks
from .params import CachedObjective, ParamTransform
from .rb_fit import rb_round, rb_structure

__all__ = ["ProfilePoint", "DrawSets", "maximize", "paired_deviance_mcse", "own_mcse"]


@dataclass
class ProfilePoint:
    """The constrained maximum at one value ``psi`` of the profiled parameter.

    Attributes
    ----------
    psi : float
    theta : ndarray
        The maximizer (parameters of the model the draws belong to).
    value : float
        ``l_m`` there on its draw set (without the family's constants).
    slope : float
        ``d l_m / d psi`` there, the derivative of the profile.
    mcse : float
        Monte Carlo standard error of ``value`` on its own draws.
    engine : int
        Draws used: 0 the fit's, ``k > 0`` the k-th fresh set, -1 an exact value or the
        maximum of the model without the component (``psi = 0``).
    dtheta : ndarray or None
        ``d theta / d psi`` along the profile (from the Hessian), to predict next starts.
    ess : ndarray or None
        Effective sample size per block there.
    """

    psi: float
    theta: np.ndarray
    value: float
    slope: float
    mcse: float
    engine: int
    dtheta: np.ndarray | None = None
    ess: np.ndarray | None = None
    deviance_cache: tuple | None = field(default=None, repr=False, compare=False)


class ExactGLM:
    """The GLM log-likelihood (every variance at 0) with the engine's interface."""

    m = 0

    def __init__(self, arrays):
        self.a = arrays

    def evaluate(self, theta, derivs=True):
        a = self.a
        eta = a.X @ theta + a.offset
        w, fam = a.weights, a.family
        value = float(np.sum(w * a.y * eta - w * a.ntrials * fam.cumulant(eta)))
        grad = a.X.T @ (w * (a.y - a.ntrials * fam.mean(eta)))
        H = -(a.X.T * (w * a.ntrials * fam.variance(eta))) @ a.X
        return Evaluation(value, grad, H, np.zeros_like(H), np.array([np.inf]),
                          np.array([value]))


class _Restricted(CachedObjective):
    """``-l_m`` over the free parameters on ``x = (gamma, log nu)``; parameter ``j`` is held
    at its value in ``theta`` (``j`` None: every parameter is free)."""

    def __init__(self, engine, theta, j, p):
        self.theta = np.array(theta, dtype=float)
        free = np.array([i for i in range(len(theta)) if i != j], dtype=int)
        beta_cols = [i for i in free if i < p]
        X = getattr(engine, "a", None)
        X = X.X if X is not None else engine.data.X
        super().__init__(engine, ParamTransform(X[:, beta_cols], int(np.sum(free >= p))),
                         free)

    def to_theta(self, x):
        theta = self.theta.copy()
        theta[self.free] = self.tr.to_theta(x)
        return theta


def maximize(engine, theta0, j, p, gtol=1e-8, maxiter=200):
    """Maximize ``l_m`` on ``engine``'s draws from ``theta0``, parameter ``j`` held fixed
    (None: all free), by a trust region with the exact gradient and Hessian.

    Returns
    -------
    theta : ndarray
    evaluation : Evaluation
        At ``theta``.
    free : ndarray
        Indices of the free parameters.
    """
    theta0 = np.array(theta0, dtype=float)
    obj = _Restricted(engine, theta0, j, p)
    if len(obj.free):
        r = minimize(obj.fun, obj.tr.to_x(theta0[obj.free]), jac=obj.jac, hess=obj.hess,
                     method="trust-exact", options={"gtol": gtol, "maxiter": maxiter})
        obj._eval(r.x)
        return obj.to_theta(r.x), obj.last, obj.free
    obj._eval(np.zeros(0))
    return theta0, obj.last, obj.free


def own_mcse(ev, m):
    """MCSE of ``l_m`` at one point: ``sqrt(sum_b (1 / ESS_b - 1 / m))``."""
    if not m:
        return 0.0
    # ESS <= m (Cauchy-Schwarz): below 0 only by rounding.
    return float(np.sqrt(np.sum(nonnegative_up_to_rounding(
        1.0 / ev.ess - 1.0 / m, 1.0 / ev.ess, "MCSE of l_m: 1 / ESS - 1 / m"))))


def paired_deviance_mcse(engine, theta1, theta2):
    """MCSE of ``2 (l_m(theta1) - l_m(theta2))`` on the same draws of ``engine``.

    ``2 sqrt(sum_b sum_k (v_k(theta1) - v_k(theta2))^2)`` with ``v`` each block's
    self-normalized weights, accumulated chunk by chunk with running maxima.
    """
    B = engine.data.n_blocks
    s1, s2, q1, q2, c = (np.zeros(B) for _ in range(5))
    for (w1, a1), (w2, a2) in zip(weight_chunks(engine, theta1),
                                  weight_chunks(engine, theta2), strict=True):
        s1, q1 = s1 * a1 + w1.sum(axis=1), q1 * a1**2 + (w1 * w1).sum(axis=1)
        s2, q2 = s2 * a2 + w2.sum(axis=1), q2 * a2**2 + (w2 * w2).sum(axis=1)
        c = c * a1 * a2 + (w1 * w2).sum(axis=1)
    var = q1 / s1**2 + q2 / s2**2 - 2.0 * c / (s1 * s2)
    return 2.0 * float(np.sqrt(max(float(var.sum()), 0.0)))


@dataclass
class _Maximum:
    value: float
    theta: np.ndarray
    ess: np.ndarray | None
    usable: bool = True
    version: int = 0


def _paired_mcse_bound(ess1, ess2):
    """A lower bound on :func:`paired_deviance_mcse` from the two points' ESS alone:
    per block ``||v_1 - v_2|| >= | ||v_1|| - ||v_2|| |`` with ``||v||^2 = 1 / ESS``."""
    if ess1 is None or ess2 is None:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        d = 1.0 / np.sqrt(ess1) - 1.0 / np.sqrt(ess2)
    return 2.0 * float(np.sqrt(np.sum(np.where(np.isfinite(d), d * d, np.inf))))


class DrawSets:
    """The draw sets of one profile, each with its maximum, and the deviance of a point.

    Parameters
    ----------
    model : MonteCarloGLMM
        The model the draws belong to (the fit's, less components held at 0).
    opts : FitOptions
        The fit's options (sampler, kernel, chunks, memory, optimizer tolerances).
    seed : SeedSequence
        Fresh set ``k`` uses its child ``k + 1``.
    m, n_jobs : int
        Draws per fresh set; threads.
    j, p : int
        Index of the profiled parameter; number of fixed effects.
    theta_hat, l_hat, l_hat_mcse
        The fit's estimate, ``llf_mc`` and ``llf_mcse``.
    tol : float
        Largest MCSE of ``l_k`` at a fresh set's maximum for the same-set estimate to be
        used (beyond it the set does not cover its own maximum: the maximization would
        follow the noise of a few draws).
    first : MCLAEngine, ExactGLM or None
        Set 0 (the fit's draws, or the exact GLM), centred at ``psi_hat``.
    interior : bool
        Whether the maximum over all parameters is interior (False for a component the fit
        put at 0: fresh sets then have no same-set maximum).
    """

    def __init__(self, model, opts, seed, m, n_jobs, j, p, theta_hat, l_hat, l_hat_mcse,
                 tol, first=None, interior=True):
        self.model, self.opts, self.seed, self.m, self.n_jobs = model, opts, seed, m, n_jobs
        self.tol = tol
        self.j, self.p, self.interior = j, p, interior
        self.theta_hat, self.l_hat, self.l_hat_mcse = theta_hat, l_hat, l_hat_mcse
        self.engines, self.centres, self.maxima, self.floors = [], [], [], []
        if first is not None:
            self.engines, self.centres = [first], [float(theta_hat[j])]
            self.maxima, self.floors = [_Maximum(l_hat, theta_hat, None)], [l_hat_mcse]

    def __len__(self):
        return len(self.engines)

    def add(self, theta):
        """Draw a fresh set from the sampler built at ``theta`` (Rao-Blackwellized where
        the fit was); its index."""
        opts, model = self.opts, self.model
        factorize = model.factorize if opts.factorize is None else bool(opts.factorize)
        seed = child_seed(self.seed, len(self.engines) + 1)
        if "_rb" not in self.__dict__:  # the same split for every set
            self._rb = rb_structure(model, opts, factorize, None)
        rb = self._rb
        if rb is not None:
            engine = rb_round(model, rb, np.asarray(theta, dtype=float), None, factorize,
                              self.m, seed, opts, self.n_jobs)[1]
        else:
            smp = model.make_sampler(theta, opts.sampler, factorize, **opts.sampler_options)
            draws = DrawSet.from_sampler(smp, self.m, seed, opts.memory_budget,
                                         n_jobs=self.n_jobs)
            engine = MCLAEngine(draws, opts.kernel, opts.chunk_size, self.n_jobs)
        self.engines.append(engine)
        self.centres.append(float(theta[self.j]))
        self.maxima.append(None)
        self.floors.append(np.inf)
        return len(self.engines) - 1

    def retire(self, k):
        """Serve no more new points from set ``k`` (superseded by a better-centred set)."""
        self.centres[k] = np.nan

    def nearest(self, psi, log_scale):
        """The set centred nearest to ``psi`` (in ``log psi`` for a variance); None if none."""
        c = np.array(self.centres, dtype=float)
        if not np.any(np.isfinite(c)):
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = np.abs(np.log(c) - np.log(psi)) if log_scale else np.abs(c - psi)
        return int(np.nanargmin(dist))

    def maximize(self, k, theta0, j):
        return maximize(self.engines[k], theta0, j, self.p, self.opts.gtol, self.opts.maxiter)

    def maximum(self, k, pt=None):
        """``L_k`` and ``theta_k`` of set ``k`` (computed once, from ``theta_hat``; again
        from ``pt.theta`` if ``pt`` is higher), or None where there is none or the set does
        not cover it (its MCSE there above ``tol``)."""
        if not self.interior or not self.engines[k].m:
            return None
        top = self.maxima[k]
        if top is None:
            top = self.maxima[k] = self._climb(k, self.theta_hat, 0)
        if top.usable and pt is not None and pt.value > top.value and k > 0:
            top = self.maxima[k] = self._climb(k, pt.theta, top.version + 1)
        return top if top.usable else None

    def _climb(self, k, start, version):
        theta, ev, _ = self.maximize(k, start, None)
        ok = ev.gradient is not None and np.isfinite(ev.value) \
            and own_mcse(ev, self.engines[k].m) <= self.tol
        return _Maximum(float(ev.value), theta, ev.ess, bool(ok), version)

    def deviance(self, pt):
        """``(D, mcse)`` of a point (see the module docstring)."""
        top = None if pt.engine < 0 else self.maximum(pt.engine, pt)
        key = (pt.engine, None if top is None else top.version)
        if pt.deviance_cache is not None and pt.deviance_cache[0] == key:
            return pt.deviance_cache[1]
        across = (2.0 * (self.l_hat - pt.value), 2.0 * float(np.hypot(self.l_hat_mcse,
                                                                    pt.mcse)))
        if top is None:
            out = (max(across[0], 0.0), across[1])
        elif pt.engine and across[0] >= 0 and _paired_mcse_bound(top.ess, pt.ess) > across[1]:
            out = across  # the same-set estimate cannot be the more precise
        else:
            same = (2.0 * (top.value - pt.value),
                    paired_deviance_mcse(self.engines[pt.engine], top.theta, pt.theta))
            out = same if pt.engine == 0 or same[1] <= across[1] or across[0] < 0 else across
        pt.deviance_cache = (key, out)
        return out
