"""Profile likelihood of one parameter: curves and confidence intervals.

For a parameter ``psi`` (a fixed effect or a variance) with the others ``lambda``, the
profile log-likelihood is ``l_p(psi) = max_lambda l_m(psi, lambda)``, maximized here on the
fit's final frozen draws (``res.engine``: ``l_m`` is smooth in ``theta`` for fixed draws) by
a trust region with the engine's exact gradient and Hessian over ``(beta, log nu)`` of the
free parameters.  The profile deviance is ``D(psi) = 2 (l_m(theta_hat) - l_p(psi))`` and its
signed root ``zeta(psi) = sign(psi - psi_hat) sqrt(D(psi))`` (lme4's name).  By the envelope
theorem ``dl_p/dpsi`` is the partial derivative of ``l_m`` in ``psi`` at the constrained
optimum, so ``dzeta/dpsi = -(dl_m/dpsi) / zeta``.

A ``1 - alpha`` interval is ``{psi : D(psi) <= chi2_{1, 1-alpha}}``; each end is a root of
``zeta(psi) = -+ z_{1-alpha/2}``, found by safeguarded Newton steps on ``zeta`` in ``log nu``
for a variance (where ``zeta`` is nearly linear) and in ``beta`` for a fixed effect.  A
profile interval is invariant to reparametrization, so unlike the Wald interval it follows a
skewed likelihood (a variance's likelihood is skewed to the right).

The boundary ``nu_t = 0``.  The lower end of a variance's interval is 0 when
``D(0) <= chi2_{1, 1-alpha}``.  Frozen draws cannot give ``D(0)``: as ``nu_t -> 0`` the
prior of the component's effects collapses onto 0, the draws (spread as the posterior at
``nu_hat``) get vanishing weights and ``l_m`` degrades (ESS of a few draws within a factor of
5 of ``nu_hat`` for crossed designs).  But the model with ``nu_t = 0`` is the model without
component ``t``, so ``l_p(0)`` is the maximum of that smaller model: a GLM fitted exactly
when no component is left, else a Monte Carlo MLE of the smaller model (independent draws,
seeded from the fit's seed).  Between 0 and ``nu_hat``, and for far upper ends,
the draws are *re-centred* when a profile point's own ``l_m`` is no longer trustworthy (its
MCSE, ``sqrt(sum_b (1/ESS_b - 1/m))``, above ``max(0.05, 2 llf_mcse)``): a fresh draw set
from the sampler built at that point, which then serves the nearby points; a point on draws
centred at it is accepted (they are the best ``m`` draws can do there).  An end found on the
fit's draws is also re-solved on draws centred at it when that makes ``D``'s MCSE smaller.
A variance the fit put at 0 has the interval ``[0, upper]``; its profile for ``nu > 0`` uses
fresh draws of the model with the component back (the fit's draws have none for it).

A deviance compares two values of one Monte Carlo log-likelihood: on a fresh draw set, ``D``
is twice the maximum over all parameters of ``l_m`` on that set (one more trust-region
maximization per set) less the constrained maximum on it, so ``D >= 0`` up to the
optimizer's tolerance; where that set covers the unconstrained maximum too poorly, the
comparison with the fit's maximum (two independent estimates) is used instead, whichever
has the smaller MCSE (below: draw sets and deviances).  Curves report
``loglike = llf_mc - D / 2``, on the fit's scale whatever the draws.

Monte Carlo error of an end point, by the delta method: ``mcse(end) = mcse(D(end)) /
|D'(end)|``.  On one draw set, ``l_m(theta_1) - l_m(theta_2)`` has variance
``sum_b sum_k (v_k(theta_1) - v_k(theta_2))^2`` (``v_k`` the self-normalized weights; the
delta method on the log of two means of the same draws).  Compared across draw sets the two
errors are independent: ``mcse(D)^2 = 4 (llf_mcse^2 + mcse(l_m(theta))^2)``.

Draw sets and deviances
-----------------------

A profile maximizes ``l_m`` with the profiled parameter ``psi``
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

import time
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import minimize
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from glmm_sm.core.random import as_seed_sequence, child_seed
from glmm_sm.fit.boundary import glm_fit, nb_glm_loglike, reduced_model
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.engine import Evaluation, MCLAEngine, effective_n_jobs, weight_chunks
from glmm_sm.mcla.rb.round import rb_round, rb_structure
from glmm_sm.spec.params import CachedObjective, ParamTransform
from glmm_sm.spec.validation import nonnegative_up_to_rounding

__all__ = ["ProfilePoint", "DrawSets", "ExactGLM", "Profiler", "profile_frame", "profile_conf_int",
           "param_indices", "maximize", "paired_deviance_mcse", "own_mcse", "TimeBudget",
           "PROFILE_TIME_BUDGET", "DECREMENT_TOL"]

#: Default time budget, in seconds, of one call of :func:`profile_conf_int` (all its
#: parameters together) or :func:`profile_frame`: the fit's own default
#: (:class:`~glmm_sm.FitOptions` ``time_budget``).
PROFILE_TIME_BUDGET = 600.0
#: A profile maximization stops once the Newton decrement ``g' (-H)^{-1} g`` of ``l_m`` (free
#: parameters) is below this: the value is then within about half of it of the maximum on
#: those draws, far below any deviance's Monte Carlo error and the root finder's tolerance.
#: (``gtol`` alone is not reached where the gradient has a roundoff floor: at m = 10^6 every
#: further step cost an evaluation of seconds, up to ``maxiter`` of them.)
DECREMENT_TOL = 1e-8
#: Most trust-region iterations of one profile maximization (each starts at a prediction
#: along the profile, a few Newton steps from its maximum).
PROFILE_MAXITER = 50


class _OutOfTime(Exception):
    """The profile's time budget ran out (internal: caught where results are assembled)."""


class TimeBudget:
    """Seconds a profile computation may take, counted from construction.

    Parameters
    ----------
    seconds : float or None
        None: no limit.
    """

    def __init__(self, seconds):
        if seconds is not None and not (isinstance(seconds, (int, float, np.integer,
                                                             np.floating))
                                        and not isinstance(seconds, bool) and seconds > 0):
            raise ValueError("time_budget must be a positive number of seconds or None; got "
                             f"{seconds!r}")
        self.seconds = None if seconds is None else float(seconds)
        self.start = time.perf_counter()
        #: Why the computation stopped early ("" while it has not).
        self.reason = ""

    def left(self):
        """Seconds left (inf without a limit)."""
        if self.seconds is None:
            return np.inf
        return self.seconds - (time.perf_counter() - self.start)

    def check(self, during):
        """Raise the internal out-of-time signal once the budget is used up."""
        if self.left() <= 0:
            if not self.reason:
                self.reason = f"time budget of {self.seconds:g} s used up ({during})"
            raise _OutOfTime(self.reason)



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
        if a.family.code == 2:  # the negative binomial GLM: theta = (beta, alpha)
            if not (np.all(np.isfinite(theta)) and theta[-1] > 0):
                return Evaluation(-np.inf, None, None, None, np.array([np.inf]),
                                  np.array([-np.inf]))
            value, grad, H = nb_glm_loglike(a, theta)
            return Evaluation(value, grad, H, np.zeros_like(H), np.array([np.inf]),
                              np.array([value]))
        eta = a.X @ theta + a.offset
        w, fam = a.weights, a.family
        ll, r, h = fam.obs_terms(eta, w * a.y, w * a.ntrials)
        value = float(np.sum(ll))
        grad = a.X.T @ r
        H = -(a.X.T * h) @ a.X
        return Evaluation(value, grad, H, np.zeros_like(H), np.array([np.inf]),
                          np.array([value]))


class _Restricted(CachedObjective):
    """``-l_m`` over the free parameters on ``x = (gamma, log nu)``; parameter ``j`` is held
    at its value in ``theta`` (``j`` None: every parameter is free)."""

    def __init__(self, engine, theta, j, p, budget=None):
        self.theta = np.array(theta, dtype=float)
        self.budget = budget
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

    def _eval(self, x):
        # Each evaluation on a large draw set takes seconds: the budget is checked before
        # every new one, not only between iterations.
        if self.budget is not None and (self._x is None or not np.array_equal(x, self._x)):
            self.budget.check("in a profile maximization")
        return super()._eval(x)


def maximize(engine, theta0, j, p, gtol=1e-8, maxiter=200, budget=None, nu_floor=0.0):
    """Maximize ``l_m`` on ``engine``'s draws from ``theta0``, parameter ``j`` held fixed
    (None: all free), by a trust region with the exact gradient and Hessian.

    It stops at ``gtol``, after ``maxiter`` iterations, once the Newton decrement is below
    :data:`DECREMENT_TOL` (``-H`` positive definite), or once a free variance is below
    ``nu_floor`` (the fit's ``boundary_tol``: a variance on its way to 0 follows a ridge
    of ``l_m`` in ``log nu``, flat to within ``nu`` times the slope at 0, on which every
    step gains a little and costs an evaluation), whichever comes first.  With a
    :class:`TimeBudget` ``budget``, the budget is checked after every iteration.

    Returns
    -------
    theta : ndarray
    evaluation : Evaluation
        At ``theta``.
    free : ndarray
        Indices of the free parameters.
    """
    theta0 = np.array(theta0, dtype=float)
    obj = _Restricted(engine, theta0, j, p, budget)
    if len(obj.free):
        n_beta = int(np.sum(obj.free < p))
        lognu_min = np.log(nu_floor) if nu_floor > 0 else -np.inf

        def stop(intermediate_result):
            if budget is not None:
                budget.check("in a profile maximization")
            if np.any(intermediate_result.x[n_beta:] < lognu_min):
                raise StopIteration
            if obj._x is not None and np.array_equal(intermediate_result.x, obj._x) \
                    and _newton_decrement(obj._out) <= DECREMENT_TOL:
                raise StopIteration

        x0 = obj.tr.to_x(theta0[obj.free])
        best = {"x": np.array(x0), "f": np.inf}

        def fun(x):
            f = obj.fun(x)
            if f < best["f"]:
                best["x"], best["f"] = np.array(x), f
            return f

        try:
            x = minimize(fun, x0, jac=obj.jac, hess=obj.hess,
                         method="trust-exact", callback=stop,
                         options={"gtol": gtol, "maxiter": maxiter}).x
        except (ValueError, OverflowError, np.linalg.LinAlgError):
            # The trust-region subproblem failed numerically (a Hessian of extreme scale,
            # as where a fixed effect runs off along a separation): the best point
            # evaluated (else the start) stands, its own evaluation telling how good it is.
            x = best["x"]
        obj._eval(x)
        return obj.to_theta(x), obj.last, obj.free
    obj._eval(np.zeros(0))
    return theta0, obj.last, obj.free


def _newton_decrement(out):
    """``g' H^{-1} g`` of the objective ``(value, g, H)`` (``-l_m`` on the optimizer's
    scale); inf where ``H`` is not positive definite or not finite."""
    _, g, H = out
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(H))):
        return np.inf
    try:
        c = np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return np.inf
    y = np.linalg.solve(c, g)
    return float(y @ y)


def own_mcse(ev, m):
    """MCSE of ``l_m`` at one point: ``sqrt(sum_b (1 / ESS_b - 1 / m))``."""
    if not m or np.all(np.isinf(ev.ess)):
        return 0.0  # a deterministic (quadrature) engine reports ESS = inf: no Monte Carlo
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
    budget : TimeBudget, optional
        Checked before a fresh set is drawn and after every optimizer iteration.
    """

    def __init__(self, model, opts, seed, m, n_jobs, j, p, theta_hat, l_hat, l_hat_mcse,
                 tol, first=None, interior=True, budget=None):
        self.model, self.opts, self.seed, self.m, self.n_jobs = model, opts, seed, m, n_jobs
        self.budget = budget if budget is not None else TimeBudget(None)
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
        self.budget.check(f"before drawing fresh set {len(self.engines)} of {self.m:,} draws")
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
        return maximize(self.engines[k], theta0, j, self.p, self.opts.gtol,
                        min(self.opts.maxiter, PROFILE_MAXITER), self.budget,
                        self.opts.boundary_tol)

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


#: Re-centre when a point's own ``l_m`` MCSE exceeds this (or twice ``llf_mcse``), and
#: this factor times the MCSE of its draw set at the set's centre, or the cap times it.
RECENTRE_MCSE, RECENTRE_FACTOR, RECENTRE_CAP = 0.05, 1.5, 2.0
#: Re-solve an end on centred draws when its ``D`` MCSE exceeds this multiple of theirs.
POLISH_FACTOR = 1.5
#: Root-finding tolerance on ``zeta``; largest Newton step, and distance from the estimate
#: beyond which an end is infinite, on the root-finding scale (log nu, or beta in SEs).
ZETA_TOL, MAX_STEP, MAX_DISTANCE = 1e-3, 2.0, 12.0
MAX_ITER, MAX_ENGINES = 40, 12
#: Spawn key of the profile's seeds under the fit's seed.
PROFILE_KEY = 7001


def param_indices(res, cols):
    """Indices of ``cols`` (None: all; names or integer positions) among the parameters."""
    names = list(res.model.data.param_names)
    if cols is None:
        return list(range(len(names)))
    if isinstance(cols, (str, int, np.integer)):
        cols = [cols]
    out = []
    for c in cols:
        if isinstance(c, str):
            if c not in names:
                raise ValueError(f"cols: unknown parameter {c!r}; use one of {names}")
            out.append(names.index(c))
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool) \
                and -len(names) <= c < len(names):
            out.append(int(c) % len(names))
        else:
            raise ValueError(f"cols: {c!r} is neither a parameter name nor a position in "
                             f"0..{len(names) - 1}")
    return out


def _check_profilable(res):
    if getattr(res, "method", "mcla") == "laplace":
        raise ValueError("profile likelihoods need a Monte Carlo fit's draws; this is a "
                         "Laplace fit (use method='wald', or fit with method='mcla')")
    T = res.model.k_vcp
    if res.engine is None and len(res._boundary_idx) < T:
        raise ValueError("profile likelihoods need the fit's final draws (res.engine), and "
                         "this result has none")


class Profiler:
    """Profile of one parameter of a Monte Carlo GLMM fit (see the module docstring).

    Parameters
    ----------
    results : MonteCarloGLMMResults
    param : str or int
        Parameter name or position in ``params``.
    random_state : None, int, SeedSequence or Generator
        Seeds the draws of any re-centred draw set and of the fit without a variance
        component (for ``D(0)``); by default a child of the fit's seed, so the profile is
        reproducible.
    budget : TimeBudget, optional
        Shared by every step (default: no limit); when it runs out, :meth:`limit` returns
        a NaN end whose note says so, and ``budget.reason`` is set.
    """

    def __init__(self, results, param, random_state=None, budget=None):
        res = getattr(results, "_results", results)
        _check_profilable(res)
        self.res, model = res, res.model
        p, T = model.k_fe, model.k_vcp
        self.index = param_indices(res, [param])[0]
        self.name = res.param_names[self.index]
        # The negative binomial's alpha (after the variances) is profiled on the log scale,
        # as the variances are; it has no "0" end of its own (alpha -> 0 is the Poisson
        # model, reached only in the limit).
        self.is_fam = self.index >= p + T
        self.log_scale = self.index >= p
        self.is_var, t = p <= self.index < p + T, self.index - p
        bnd = [i - p for i in res._boundary_idx]
        self.on_boundary = self.is_var and t in bnd
        drop = [s for s in bnd if s != t]
        self.keep = [s for s in range(T) if s not in drop]
        self.model = reduced_model(model, drop) if drop else model
        self.p, self.j = p, (p + len(self.keep) if self.is_fam else
                             self.index if not self.is_var else p + self.keep.index(t))
        params = np.asarray(res.params, dtype=float)
        self.theta_hat = np.concatenate([params[:p], params[p:][self.keep],
                                         params[p + T :]])  # (the negative binomial's alpha)
        self.psi_hat = float(params[self.index])
        self.l_hat, self.l_hat_mcse = float(res.llf_mc), float(res.llf_mcse)
        from glmm_sm.fit.driver import FitOptions
        from glmm_sm.fit.options import M_START

        self.opts = getattr(res, "fit_options", None) or FitOptions()
        self.seed = (child_seed(res.seed, PROFILE_KEY, self.index) if random_state is None
                     else as_seed_sequence(random_state))
        m_opt = self.opts.m if isinstance(self.opts.m, int) else (self.opts.m_start or M_START)
        self.m = int(res.m) if res.m else int(m_opt)
        self.n_jobs = effective_n_jobs(self.opts.n_jobs)
        self.tol = max(RECENTRE_MCSE, 2.0 * self.l_hat_mcse)
        self.budget = budget if budget is not None else TimeBudget(None)
        first = (ExactGLM(model.arrays) if self.model is None
                 else None if self.on_boundary else res.engine)
        self.sets = DrawSets(self.model, self.opts, self.seed, self.m, self.n_jobs, self.j, p,
                             self.theta_hat, self.l_hat, self.l_hat_mcse, self.tol, first,
                             interior=not self.on_boundary, budget=self.budget)
        self.points, self._zero = [], None
        bse = float(np.asarray(res.bse)[self.index])
        self.se = bse if np.isfinite(bse) and bse > 0 else np.nan

    # ------------------------------------------------------------------ points
    def _optimum(self, k, psi, start):
        theta0 = np.array(start, dtype=float)
        theta0[self.j] = psi
        theta, ev, f = self.sets.maximize(k, theta0, self.j)
        if ev.gradient is None:
            return ProfilePoint(psi, theta, -np.inf, np.nan, np.inf, k)
        j = self.j
        dtheta = np.zeros(len(theta))
        dtheta[j] = 1.0
        try:
            dtheta[f] = -np.linalg.solve(ev.hessian[np.ix_(f, f)], ev.hessian[f, j])
        except np.linalg.LinAlgError:
            dtheta = None
        pt = ProfilePoint(float(psi), theta, float(ev.value), float(ev.gradient[j]),
                          own_mcse(ev, self.sets.engines[k].m), k, dtheta, ev.ess)
        if not np.isfinite(self.sets.floors[k]):  # the first point on a set is its centre
            self.sets.floors[k] = pt.mcse
        return pt

    def _reliable(self, pt, fresh=False):
        """Whether ``pt``'s own ``l_m`` is trustworthy: MCSE at most ``tol``, or (on an
        existing set) within ``RECENTRE_FACTOR`` of the set's MCSE at its centre, which
        fresh draws would not improve on much (far ends, where no ``m`` draws reach
        ``tol``), but never above ``RECENTRE_CAP * tol``."""
        if pt is None or not np.isfinite(pt.value):
            return False
        if pt.engine < 0 or not self.sets.engines[pt.engine].m:
            return True
        floor = self.sets.floors[pt.engine]
        floor = RECENTRE_FACTOR * floor if np.isfinite(floor) and not fresh else 0.0
        return bool(pt.mcse <= max(self.tol, min(floor, RECENTRE_CAP * self.tol)))

    def _start(self, psi):
        """A start for ``psi``: the nearest point's maximizer moved along ``dtheta``."""
        if not self.points:
            start = self.theta_hat.copy()
            if self.on_boundary:
                start[self.j] = psi
            return start
        near = min(self.points, key=lambda q: abs(q.psi - psi))
        start = near.theta.copy()
        if near.dtheta is not None:
            moved = near.theta + near.dtheta * (psi - near.psi)
            nu_ok = np.all(moved[self.p:][np.arange(len(moved) - self.p) != self.j - self.p]
                           > 0)
            if np.all(np.isfinite(moved)) and nu_ok:
                start = moved
        start[self.j] = psi
        return start

    def point(self, psi, prefer=None):
        """The profile point at ``psi``: on set ``prefer`` (the root finder's last) or the
        set centred nearest, re-centring the draws when neither is reliable there."""
        if self.is_var and psi == 0.0:
            return self.zero_point()
        self.budget.check(f"before the profile point at {self.name} = {psi:.4g}")
        start, pt = self._start(psi), None
        for k in dict.fromkeys([prefer, self.sets.nearest(psi, self.log_scale)]):
            if k is not None and k >= 0 and np.isfinite(self.sets.centres[k]):
                pt = self._optimum(k, psi, start)
                if self._reliable(pt):
                    break
        # Fresh draws centred at the optimum; a second set, centred at the optimum on the
        # first, when the first centre (an optimum on poorly placed draws) was off.  The
        # point with the smallest MCSE is kept, the other fresh set retired.
        found, ok = [] if pt is None else [pt], self._reliable(pt)
        for _ in range(2):
            if ok or len(self.sets) >= MAX_ENGINES:
                break
            centre = start if pt is None or not np.isfinite(pt.value) else pt.theta
            pt = self._optimum(self.sets.add(centre), psi, centre)
            ok = self._reliable(pt, fresh=True)
            found.append(pt)
        if found:
            pt = min(found, key=lambda q: q.mcse if np.isfinite(q.value) else np.inf)
            for q in found[1:]:
                if q is not pt:
                    self.sets.retire(q.engine)
        self.points.append(pt)
        return pt

    def zero_point(self):
        """The profile at ``nu = 0``: the maximum of the model without the component."""
        if self._zero is not None:
            return self._zero
        if self.on_boundary:
            self._zero = ProfilePoint(0.0, self.theta_hat, self.l_hat, np.nan,
                                      self.l_hat_mcse, -1)
            return self._zero
        res, p = self.res, self.p
        drop = [t for t in range(res.model.k_vcp) if t not in self.keep] + [self.j - p]
        red = reduced_model(res.model, sorted(drop))
        theta = self.theta_hat.copy()
        theta[self.j] = 0.0
        if red is None:
            beta, _, value, _ = glm_fit(res.model)  # (negative binomial: alpha last)
            theta[:p], mcse = beta[:p], 0.0
            theta[len(theta) - (len(beta) - p):] = beta[p:]
        else:
            from glmm_sm.fit.driver import mcmle
            from glmm_sm.fit.options import check_draw_budget

            rest = np.array([i for i in range(p, len(theta)) if i != self.j], dtype=int)
            start = np.concatenate([theta[:p], np.maximum(theta[rest], 1e-4)])
            left = self.budget.left()
            self.budget.check("before the fit without the component")
            opts = replace(self.opts, n_jobs=self.n_jobs, deadline=None,
                           time_budget=None if not np.isfinite(left) else left)
            try:
                check_draw_budget(opts, red.arrays.X.shape[0])
            except ValueError as exc:  # the fit's own m cannot fit the time left
                self.budget.reason = (f"time budget of {self.budget.seconds:g} s: too little "
                                      f"left for the fit without the component ({exc})")
                raise _OutOfTime(self.budget.reason) from None
            out = mcmle(red, opts, child_seed(self.seed, 0), start, disp=False)
            self.budget.check("in the fit without the component, for D(0)")
            value = float(out.evaluation.value)
            theta[:p], theta[rest] = out.params[:p], out.params[p:]
            mcse = own_mcse(out.evaluation, out.n_draws) if out.n_draws else 0.0
        self._zero = ProfilePoint(0.0, theta, value, np.nan, mcse, -1)
        return self._zero

    # ------------------------------------------------------------------ deviance
    def deviance(self, pt):
        """``D`` at ``pt``, from one draw set's maximum where that is the more precise
        (:meth:`glmm_sm.inference.profile.DrawSets.deviance`)."""
        return self.sets.deviance(pt)[0]

    def zeta(self, pt):
        d = max(self.deviance(pt), 0.0)  # >= -optimizer tolerance on one draw set
        return float(np.sign(pt.psi - self.psi_hat) * np.sqrt(d))

    def deviance_mcse(self, pt):
        """Monte Carlo standard error of ``D`` at ``pt`` (see the module docstring)."""
        return self.sets.deviance(pt)[1]

    # ------------------------------------------------------------------ limits
    def _to_s(self, psi):
        if self.log_scale:
            return np.log(psi) if psi > 0 else -np.inf
        return psi / (self.se if np.isfinite(self.se) else 1.0)

    def _from_s(self, s):
        if self.log_scale:
            return float(np.exp(s))
        return float(s * (self.se if np.isfinite(self.se) else 1.0))

    def _first_guess(self, side, target):
        s_hat = self._to_s(self.psi_hat)
        if self.on_boundary:  # D(nu) ~ -2 d nu near 0, d the one-sided derivative
            d = self.res.fit_log.boundary.get(self.name, np.nan)
            guess = target**2 / (-2.0 * d) if np.isfinite(d) and d < 0 else 1.0
            return float(np.log(np.clip(guess, 1e-4, 1e4)))
        if self.log_scale:
            step = target * self.se / self.psi_hat if np.isfinite(self.se) else side
        else:
            step = target
        return s_hat + float(np.clip(step, -MAX_STEP, MAX_STEP))

    def limit(self, side, alpha):
        """``(end, mcse, note)`` of the ``1 - alpha`` interval; ``side`` -1 or +1.  When
        the time budget runs out the end is NaN and the note gives the reason."""
        try:
            return self._limit(side, alpha)
        except _OutOfTime as exc:
            return np.nan, np.nan, f"not found: {exc}"

    def _limit(self, side, alpha):
        cut = float(stats.chi2.ppf(1.0 - alpha, 1))
        with threadpool_limits(1, user_api="blas"):
            if self.is_var and side < 0:
                if self.on_boundary:
                    return 0.0, 0.0, "estimate at the boundary 0"
                z = self.zero_point()
                d0 = self.deviance(z)
                if d0 <= cut:
                    return 0.0, 0.0, f"D(0) = {d0:.3g} <= {cut:.3g}"
            target = side * np.sqrt(cut)
            pt, note = self._root(side, target)
            if pt is None and self.is_fam and side < 0:
                # log alpha -> -inf: alpha -> 0, the Poisson model's limit
                return 0.0, 0.0, note + " (alpha -> 0: the Poisson model)"
            if pt is None:
                return side * np.inf, np.nan, note
            pt, note, dev_mcse = self._polish(pt, note, side, target)
            slope = abs(2.0 * pt.slope)
            mcse = dev_mcse / slope if slope > 0 else np.nan
            return pt.psi, float(mcse), note

    def _polish(self, pt, note, side, target):
        """Re-solve an end found on the fit's draws on draws centred at it, when that makes
        ``D``'s Monte Carlo error clearly smaller: ``(point, note, mcse of D)``.

        On the fit's draws ``D`` at a far end compares ``l_m`` at two points the draws are
        not centred on both; on draws centred at the end the error is about
        ``2 sqrt(2) llf_mcse`` (two independent estimates, each as good as the fit's).
        """
        dev_mcse = self.deviance_mcse(pt)
        fresh = 2.0 * np.sqrt(2.0) * self.l_hat_mcse
        if pt.engine != 0 or not self.sets.engines[0].m or dev_mcse <= POLISH_FACTOR * fresh \
                or len(self.sets) >= MAX_ENGINES:
            return pt, note, dev_mcse
        try:
            k = self.sets.add(pt.theta)
            new, new_note = self._root(side, target, self._to_s(pt.psi))
        except _OutOfTime as exc:  # the end found stands, with its larger MCSE
            return pt, "; ".join(n for n in (note, f"not re-solved on centred draws: {exc}")
                                 if n), dev_mcse
        if new is None or new.engine != k:
            return pt, note, dev_mcse
        new_mcse = self.deviance_mcse(new)
        if new_mcse >= dev_mcse:
            return pt, note, dev_mcse
        return new, new_note, new_mcse

    def _root(self, side, target, s0=None):
        """Safeguarded Newton on ``zeta`` in ``s``; ``(point, note)``, point None: no end."""
        s_in = -np.inf if self.on_boundary else self._to_s(self.psi_hat)
        s_out, s = None, (self._first_guess(side, target) if s0 is None else s0)
        s_ref, pt = (s if self.on_boundary else s_in), None
        for _ in range(MAX_ITER):
            pt = self.point(self._from_s(s), None if pt is None else pt.engine)
            z = self.zeta(pt)
            err = z - target
            if abs(err) < ZETA_TOL:
                return pt, f"end on re-centred draws (set {pt.engine})" if pt.engine > 0 else ""
            if side * err < 0:
                s_in = s
            else:
                s_out = s
            dpsi_ds = pt.psi if self.log_scale else self._from_s(1.0)
            dz = -pt.slope / z * dpsi_ds if abs(z) > 1e-8 else np.nan
            newton = s - err / dz if np.isfinite(dz) and dz > 0 else np.nan
            if s_out is None:
                if not (np.isfinite(newton) and side * (newton - s) > 0):
                    newton = s + side * MAX_STEP
                s_new = s + float(np.clip(newton - s, -MAX_STEP, MAX_STEP))
                if abs(s_new - s_ref) > MAX_DISTANCE:
                    return None, "profile deviance stays below the cut: no finite end"
            elif np.isfinite(s_in):
                lo, hi = sorted((s_in, s_out))
                if hi - lo < 1e-6 * max(1.0, abs(hi)):
                    return pt, ("bracket closed with |zeta - target| = "
                                f"{abs(err):.2g}: Monte Carlo noise in the profile")
                s_new = newton if np.isfinite(newton) and lo < newton < hi else 0.5 * (lo + hi)
            else:
                s_new = newton if np.isfinite(newton) and newton < s_out else s_out - MAX_STEP
            s = s_new
        return pt, f"root finding stopped after {MAX_ITER} steps (|zeta - target| = " \
                   f"{abs(self.zeta(pt) - target):.2g})"


def profile_conf_int(results, alpha=0.05, cols=None, random_state=None,
                     time_budget=PROFILE_TIME_BUDGET, disp=True):
    """Profile-likelihood confidence intervals with the Monte Carlo error of each end.

    Parameters
    ----------
    results : MonteCarloGLMMResults
    alpha : float
        ``1 - alpha`` intervals.
    cols : None, str, int or sequence of them
        Parameters (default all).
    random_state : optional
        Seeds re-centred draws and reduced fits (default: derived from the fit's seed).
    time_budget : float or None
        Seconds for the whole call, all parameters together (default
        :data:`PROFILE_TIME_BUDGET`, 600, the fit's own default; None: no limit).  A safety
        stop: when it runs out, the ends not yet found are NaN, their ``note`` gives the
        reason, and a ConvergenceWarning says which are missing.
    disp : bool
        Show a progress bar of the ends (on a terminal or in a notebook only, as the fit).

    Returns
    -------
    DataFrame
        Index: the parameters; columns ``lower``, ``upper``, ``lower_mcse``, ``upper_mcse``
        and ``note``.  ``attrs["stopped"]``: why the call stopped early ("" when it did
        not).
    """
    from glmm_sm.fit.driver import _progress

    res = getattr(results, "_results", results)
    _check_alpha(alpha)
    budget = TimeBudget(time_budget)
    rows = {}
    cache = getattr(res, "_cache", {})
    idx = param_indices(res, cols)
    bar = _progress(disp, 2 * len(idx), desc="profile ends", unit="end")
    try:
        for i in idx:
            name = res.param_names[i]
            key = ("profile_conf_int", i, float(alpha))  # cached for the default seeds only
            row = cache.get(key) if random_state is None else None
            if row is None:
                if budget.left() <= 0:
                    budget.reason = budget.reason or (f"time budget of {budget.seconds:g} s "
                                                      "used up")
                    row = (np.nan, np.nan, np.nan, np.nan,
                           f"not computed: {budget.reason}")
                else:
                    prof = Profiler(res, i, random_state, budget)
                    bar.set_postfix(param=name)
                    lo = prof.limit(-1, alpha)
                    bar.update(1)
                    up = prof.limit(+1, alpha)
                    row = (lo[0], up[0], lo[1], up[1], "; ".join(n for n in (lo[2], up[2])
                                                                  if n))
                    if random_state is None and not budget.reason:  # complete rows only
                        cache[key] = row
                    bar.update(1)
                    rows[name] = row
                    continue
            bar.update(2)
            rows[name] = row
    finally:
        bar.close()
    out = pd.DataFrame.from_dict(rows, orient="index",
                                 columns=["lower", "upper", "lower_mcse", "upper_mcse", "note"])
    out.attrs["stopped"] = budget.reason
    if budget.reason:
        missing = [f"{n} {side}" for n in out.index for side in ("lower", "upper")
                   if np.isnan(out.loc[n, side])]
        warnings.warn(f"profile intervals stopped early: {budget.reason}; the ends not "
                      f"found are NaN ({missing}). Allow a larger time_budget (or None), ask "
                      "for fewer parameters (cols), or use the Wald intervals",
                      ConvergenceWarning, stacklevel=3)
    return out


def _check_alpha(alpha):
    if not (isinstance(alpha, (float, int, np.floating)) and 0 < alpha < 1):
        raise ValueError(f"alpha must be a number in (0, 1); got {alpha!r}")


def profile_frame(results, param, alpha=0.01, n_points=8, random_state=None,
                  time_budget=PROFILE_TIME_BUDGET, disp=True):
    """The profile of one parameter as a curve, for plotting (lme4's ``profile``).

    Parameters
    ----------
    results : MonteCarloGLMMResults
    param : str or int
        Parameter name or position.
    alpha : float
        The curve spans the ``1 - alpha`` profile interval (default 0.01: ``|zeta|`` up to
        2.58, as lme4).
    n_points : int
        Points on each side of the estimate, the end included (spaced evenly in ``log nu``
        or ``beta``, in ``nu`` towards an end at 0).
    random_state : optional
        As for :class:`Profiler`.
    time_budget : float or None
        Seconds for the whole curve (default :data:`PROFILE_TIME_BUDGET`, 600; None: no
        limit).  When it runs out the curve holds the points found so far (an end not
        found is NaN in ``attrs``), ``attrs["stopped"]`` gives the reason and a
        ConvergenceWarning is issued.
    disp : bool
        Show a progress bar of the ends and points (on a terminal or in a notebook only).

    Returns
    -------
    DataFrame
        Columns ``value`` (the parameter), ``deviance`` (``D``, each from one draw set's
        maximum, or across draw sets where that is more precise: see the module
        docstring; ``>= 0``), ``loglike`` (the profile log-likelihood on the fit's scale,
        ``llf_mc - D / 2``: without the family's constants, as ``llf_mc``) and ``zeta``
        (``D``'s signed root), in increasing ``value``.  ``attrs`` holds ``name``,
        ``estimate``, ``loglike_max`` (``llf_mc``), ``alpha``, the ends, ``deviance_mcse``
        per row, ``draw_set`` per row (0 the fit's draws, ``k > 0`` a fresh set, -1 an
        exact value or the fit without the component), and ``stopped`` (why the curve
        stopped early; "" when it did not).
    """
    from glmm_sm.fit.driver import _progress

    _check_alpha(alpha)
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) \
            or n_points < 1:
        raise ValueError(f"n_points must be an integer >= 1; got {n_points!r}")
    budget = TimeBudget(time_budget)
    prof = Profiler(results, param, random_state, budget)
    bar = _progress(disp, 2 + 2 * n_points, desc=f"profile of {prof.name}", unit="point")
    pts, ends = [_hat_point(prof)], [np.nan, np.nan]
    try:
        for k, side in enumerate((-1, +1)):
            ends[k] = prof.limit(side, alpha)[0]
            bar.update(1)
        with threadpool_limits(1, user_api="blas"):
            for end in ends:
                pts += _side_points(prof, end, n_points, bar)
    except _OutOfTime:
        pass  # the points found so far; budget.reason says why
    finally:
        bar.close()
    pts = sorted({pt.psi: pt for pt in pts}.values(), key=lambda q: q.psi)
    dev, mcse = np.zeros(len(pts)), np.zeros(len(pts))
    with threadpool_limits(1, user_api="blas"):
        for r, q in enumerate(pts):
            dev[r], mcse[r] = _deviance_in_budget(prof, q)
    mcse[[q.psi == prof.psi_hat for q in pts]] = 0.0
    zeta = np.sign([q.psi - prof.psi_hat for q in pts]) * np.sqrt(np.maximum(dev, 0.0))
    frame = pd.DataFrame({"value": [q.psi for q in pts], "loglike": prof.l_hat - dev / 2.0,
                          "deviance": dev, "zeta": zeta})
    frame.attrs.update(name=prof.name, estimate=prof.psi_hat, loglike_max=prof.l_hat,
                       alpha=alpha, lower=ends[0], upper=ends[1], deviance_mcse=list(mcse),
                       draw_set=[q.engine for q in pts], stopped=budget.reason)
    if budget.reason:
        warnings.warn(f"the profile of {prof.name} stopped early: {budget.reason}; it has "
                      f"{len(pts)} of its {2 * n_points + 1} points (ends found: lower "
                      f"{ends[0]:.4g}, upper {ends[1]:.4g}). Allow a larger time_budget (or "
                      "None), or fewer n_points", ConvergenceWarning, stacklevel=3)
    return frame


def _deviance_in_budget(prof, pt):
    """``(D, mcse)`` of ``pt``; once the budget is used up, without a new maximization
    (the same-set estimate where it was computed, else across draw sets)."""
    if not prof.budget.reason:
        try:
            return prof.sets.deviance(pt)
        except _OutOfTime:
            pass
    if pt.deviance_cache is not None:
        return pt.deviance_cache[1]
    return (max(2.0 * (prof.l_hat - pt.value), 0.0),
            2.0 * float(np.hypot(prof.l_hat_mcse, pt.mcse)))


def _hat_point(prof):
    return ProfilePoint(prof.psi_hat, prof.theta_hat, prof.l_hat, 0.0, prof.l_hat_mcse,
                        0 if len(prof.sets) and not prof.on_boundary else -1)


def _side_points(prof, end, n, bar=None):
    """Points from the estimate out to ``end`` (spaced in ``log nu`` or ``beta``; linear
    in ``nu`` towards an end at 0), nearest first so each start is predicted well."""
    if not np.isfinite(end) or end == prof.psi_hat:
        return []
    if prof.is_var and (end == 0.0 or prof.psi_hat == 0.0):
        # (k / n first: the last point is then ``end`` exactly, 0 for a variance, never
        # a roundoff below it)
        values = prof.psi_hat + (end - prof.psi_hat) * (np.arange(1, n + 1) / n)
    elif prof.is_fam and end == 0.0:  # alpha -> 0 (Poisson) is a limit, not a point
        values = prof.psi_hat * (1.0 - np.arange(1, n) / n)
    else:
        s0, s1 = prof._to_s(prof.psi_hat), prof._to_s(end)
        values = [prof._from_s(s) for s in s0 + (s1 - s0) * np.arange(1, n + 1) / n]
    out = []
    for v in values:
        out.append(prof.point(float(v)))
        if bar is not None:
            bar.update(1)
    return out
