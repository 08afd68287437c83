"""A covariance's profile at a near-singular fit is the global constrained maximum (issue 24).

Data set 92 of the profile-coverage design (``benchmarks/bench_profile_coverage.py``: 50
groups of 12, Bernoulli ``y ~ x + (1 + x | g)``, true covariance 0.3) is fitted with
``|rho| = 0.9998``.  Holding the covariance ``c`` and maximizing over ``(s_a, s_b)`` (the log
SDs), the constrained maxima lie on the ridge ``|rho| = |c| e^{-(s_a + s_b)} = 1``; the damped
Newton iteration, its steps out of the positive definite cone halved until a step gained
almost nothing, stopped far along that ridge from the maximum (``Var(Intercept)`` 2.1 where
the maximum has 1.2), with deviances up to 3.6 too high, and the continuation from the
estimate's side carried those points on: the 95% interval's upper end came out at 0.267,
where the exact profile deviance is 0.03, and the interval missed the truth.

The reference is independent of the package (``tests/aghq2d_cov_profile.py``): the exact
likelihood by ``tests/aghq2d.py``'s 2-D adaptive Gauss-Hermite rule at 20 nodes per
dimension, each constrained maximum the best of L-BFGS-B runs from a scan of ``(SD_a, rho)``
and from the neighbouring maxima, in the same box ``|rho| <= RHO_EDGE``.  An end must be where
that deviance is the chi2(1) quantile to ``TOL``: the root's tolerance (2e-3 in ``zeta``,
0.008 in the deviance) plus the difference between the package's 7-node rule and the 20-node
one (the node study below bounds the reference's own error).
"""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import pytest
from cov_coverage_design import coverage_data
from scipy import stats

from glmm_sm import MonteCarloGLMM
from glmm_sm.inference import profile_cov

CUT = float(stats.chi2.ppf(0.95, 1))
NAME = "g Cov(x, Intercept)"
#: Deviance tolerance at an end: root 0.008, the 7- against the 20-node rule, optimizers.
TOL = 0.03


def _model(d):
    return MonteCarloGLMM.from_formula("y ~ x + (1 + x | g)", data=d, family="bernoulli")


@cache
def _fit(seed):
    d = coverage_data(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = _model(d).fit(random_state=seed, disp=False, n_jobs=1)
    return d, res


def test_covariance_coordinates_map_the_box_to_a_bound_with_exact_derivatives():
    # u = s_a + s_b, v = s_a - s_b with the covariance held: |rho| = |c| e^{-u}, and the
    # Jacobian and second derivatives of theta in phi match central differences.
    model = _model(coverage_data(3))
    target = next(t for t in profile_cov.profile_targets(model) if t.name == NAME)
    c = profile_cov._Coords(model, target)
    a, b = c.pair
    theta = np.array([-0.2, 0.6, 1.3, 0.45, 0.4])
    phi = c.to_phi(theta)
    assert phi[c.fix] == theta[c.fix]
    assert np.isclose(abs(theta[3]) * np.exp(-phi[a]), abs(theta[3]) / np.sqrt(1.3 * 0.4))
    assert {a, b} == {2, 4}
    assert np.isclose(phi[b], 0.5 * np.log(theta[a] / theta[b]))
    th, J, hess = c.to_theta(phi)
    np.testing.assert_allclose(th, theta, rtol=1e-13)
    h = 1e-5
    for k in range(len(phi)):
        e = np.zeros(len(phi))
        e[k] = h
        tp, Jp, _ = c.to_theta(phi + e)
        tm, Jm, _ = c.to_theta(phi - e)
        np.testing.assert_allclose(J[:, k], (tp - tm) / (2 * h), atol=1e-8)
        np.testing.assert_allclose(hess[:, :, k], (Jp - Jm) / (2 * h), atol=1e-7)


@cache
def _reference(seed):
    from aghq2d_cov_profile import CovProfileReference, reference_model

    d, res = _fit(seed)
    ref = reference_model(d, 20)
    return CovProfileReference(ref, np.asarray(res.params), profile_cov.RHO_EDGE)


def test_covariance_ends_at_a_near_singular_fit_match_the_brute_force_profile():
    d, res = _fit(92)
    assert res.fit_log.sampler["used"] == "quadrature"
    p = np.asarray(res.params)
    assert p[3] / np.sqrt(p[2] * p[4]) > 0.999  # near-singular
    prof = profile_cov.CovProfiler(res, NAME)
    lo, lo_mcse, _ = prof.limit(-1, 0.05)
    up, up_mcse, note = prof.limit(+1, 0.05)
    assert lo_mcse == 0.0 and up_mcse == 0.0
    assert "bracket closed" not in note, note  # a crossing, not a jump
    P = _reference(92)
    # the old code's upper end, 0.267, has an exact deviance of 0.03
    for end in (lo, up):
        P.profile(end)
    dev = [2.0 * (P.l_top - P.profile(end)) for end in (lo, up)]
    assert dev[0] == pytest.approx(CUT, abs=TOL), (lo, dev)
    assert dev[1] == pytest.approx(CUT, abs=TOL), (up, dev)
    # every point the profile kept is no lower than the exact constrained maximum there by
    # more than the tolerance: the profile is the global maximum, not a branch
    for q in sorted(prof.points, key=lambda q: q.s)[::3]:
        if np.isfinite(q.value) and q.s != 0.0:
            d_ref = 2.0 * (P.l_top - P.profile(q.s))
            assert prof.deviance(q)[0] == pytest.approx(d_ref, abs=TOL), (q.s, q.theta)
    # node study of the reference at the upper end's maximum: 14 against 20 nodes
    from aghq2d_cov_profile import reference_model

    th = P.argmax[up]
    assert abs(reference_model(d, 14).loglike(th) - P.ref.loglike(th)) < 5e-3
