"""A profile end of a correlated term's slope variance near its zero end (issue 24).

Data set 19 of the profile-coverage design (``benchmarks/bench_profile_coverage.py``: 50
groups of 12, Bernoulli ``y ~ x + (1 + x | g)``, true ``Var(x) = 0.5``) has its fitted slope
variance at 0.20 and the lower end of its 95% profile interval near 0.01: the constrained
maxima there lie at a correlation of +-1 (with the slope's SD small, the slope moves with
the intercept).  The profile of the deterministic (tensor-rule) fit used to spend more than
150 s of CPU on that end (re-placed rules creeping along ``atanh(rho)``, 87 rules and about
15,000 evaluations before the study's time budget stopped it) and returned NaN.

The reference is independent of the package: the exact profile deviance by 2-D adaptive
Gauss-Hermite quadrature (``tests/aghq2d.py``, 20 nodes per dimension, a node study at 14
nodes), maximized over the other parameters by L-BFGS-B with the correlation in the same box
``|rho| <= RHO_EDGE`` (the supremum at ``|rho| = 1`` is checked to differ by far less than the
tolerance).  The end must be where that deviance is the chi2(1) quantile, to 0.02 (the root's
tolerance in ``zeta``, 2e-3, is 0.008 in the deviance; the rest optimizer slack), and the
work is bounded: at most ``MAX_RULES`` rules placed and ``MAX_EVALUATIONS`` likelihood
evaluations for the end (the old code exceeded both within seconds).
"""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import pytest
from cov_coverage_design import coverage_data
from scipy import optimize, stats

from glmm_sm import MonteCarloGLMM
from glmm_sm.inference import profile_cov

#: Work allowed for the lower end (the fix needs 17 rules and as many evaluations).
MAX_RULES, MAX_EVALUATIONS = 60, 200
CUT = float(stats.chi2.ppf(0.95, 1))


@cache
def _fit():
    d = coverage_data(19)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MonteCarloGLMM.from_formula("y ~ x + (1 + x | g)", data=d,
                                          family="bernoulli").fit(random_state=19, disp=False,
                                                                  n_jobs=1)
    return d, res


def _reference(d, n_nodes):
    """The exact likelihood (``tests/aghq2d.py``) with its conditional modes found to a
    relative step of 1e-9 instead of 1e-13: at ``|rho| = RHO_EDGE`` the prior precision's
    condition number is about 1e4 times that at the estimate and rounding stops Newton's
    method short of 1e-13; a mode off by 1e-9 moves the rule's value by far less than the
    node study's 1e-3."""
    from aghq2d import VectorRandomEffectsGLMM

    class Reference(VectorRandomEffectsGLMM):
        def _modes(self, eta0, Sigma_inv, tol=1e-9, maxiter=400):
            return super()._modes(eta0, Sigma_inv, tol=tol, maxiter=maxiter)

    Z = np.c_[np.ones(len(d)), d["x"]]
    return Reference(d["y"], Z, Z, d["g"], "bernoulli", n_nodes=n_nodes)


class _Work(Exception):
    """Raised once the profile exceeds its work bound."""


def _reference_profile(ref, theta0, var_x, rho_edge):
    """The exact profile log-likelihood with ``Var(x) = var_x``, maximized over the fixed
    effects, ``log SD(Intercept)`` and ``atanh(rho)`` in ``|rho| <= rho_edge``."""
    sb = np.sqrt(var_x)

    def theta(f):
        sa, rho = np.exp(f[2]), np.tanh(f[3])
        return np.r_[f[0], f[1], sa * sa, rho * sa * sb, var_x]

    rho0 = np.clip(theta0[3] / np.sqrt(theta0[2] * theta0[4]), -0.99, 0.99)
    start = [theta0[0], theta0[1], 0.5 * np.log(theta0[2]), np.arctanh(rho0)]
    z = np.arctanh(rho_edge)
    r = optimize.minimize(lambda f: -ref.loglike(theta(f)), start, method="L-BFGS-B",
                          bounds=[(None, None)] * 3 + [(-z, z)],
                          options={"ftol": 1e-13, "gtol": 1e-8, "maxiter": 500})
    return -r.fun, theta(r.x)


def test_slope_variance_end_near_zero_matches_the_exact_profile_with_bounded_work():
    d, res = _fit()
    assert res.fit_log.sampler["used"] == "quadrature"
    p = np.asarray(res.params)
    prof = profile_cov.CovProfiler(res, "g Var(x)")
    # count the rules placed and the likelihood evaluations (on every rule, the fit's too)
    work = {"rules": 0, "evaluations": 0}

    def counted(engine):
        evaluate = engine.evaluate

        def wrapper(*args, **kwargs):
            work["evaluations"] += 1
            if work["evaluations"] > MAX_EVALUATIONS:
                raise _Work(f"more than {MAX_EVALUATIONS} evaluations")
            return evaluate(*args, **kwargs)

        engine.evaluate = wrapper

    add = prof.sets.add

    def add_counted(theta):
        work["rules"] += 1
        if work["rules"] > MAX_RULES:
            raise _Work(f"more than {MAX_RULES} rules")
        k = add(theta)
        counted(prof.sets.engines[k])
        return k

    prof.sets.add = add_counted
    counted(prof.sets.engines[0])
    try:
        end, mcse, note = prof.limit(-1, 0.05)
    except _Work as e:
        pytest.fail(f"the lower end of g Var(x) took {e} (work so far: {work})")
    assert work["rules"] <= MAX_RULES and work["evaluations"] <= MAX_EVALUATIONS
    assert mcse == 0.0
    # near zero: a twentieth of the estimate, and not the boundary (D(0) is above the cut)
    assert 0.0 < end < 0.05 * p[4], (end, note)
    ref = _reference(d, 20)
    top = ref.fit(p)
    assert top.success
    rho_edge = profile_cov.RHO_EDGE
    l_end, th = _reference_profile(ref, np.asarray(top.params), end, rho_edge)
    dev = 2.0 * (top.llf - l_end)
    assert dev == pytest.approx(CUT, abs=0.02), (end, dev, th)
    # node study: 14 nodes per dimension give the same profile value to 1e-3
    coarse = _reference(d, 14)
    assert abs(coarse.loglike(th) - ref.loglike(th)) < 1e-3
    # the box costs nothing: closer to the edge, the exact value gains less than 1e-3
    rho = th[3] / np.sqrt(th[2] * th[4])
    if abs(rho) > 0.99 * rho_edge:
        closer = th.copy()
        closer[3] = np.sign(rho) * (1.0 - 1e-6) * np.sqrt(th[2] * th[4])
        assert ref.loglike(closer) - l_end < 1e-3
