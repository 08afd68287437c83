"""Deterministic profiles near ``|rho| = 1`` reach their maxima and their ends (issue 24).

Data set 325 of the profile-coverage design (``benchmarks/bench_profile_coverage.py``: 50
groups of 12, Bernoulli ``y ~ x + (1 + x | g)``) has its constrained maxima in the fixed
effect ``x`` at ``rho`` within 2e-4 of 1.  There the profiled log-likelihood is flat in
``z = atanh(rho)`` (``drho/dz = 1 - rho^2``): the Newton step's ``z`` part is huge whatever
its gradient, and the climb's step, the Newton step scaled to the largest step's length,
moved every other coordinate by a ten-thousandth of its own Newton step.  The climbs ran
out of iterations far below their maxima, so the deviances came out too high and the upper
end too short: 0.698, where the exact deviance is 0.83 instead of the chi2(1) cut 3.84
(found by ``benchmarks/check_profile_misses.py`` among the misses of the coverage study's
session-13 batch; data sets 275 and 470 likewise).  The step is now the minimizer of the
same quadratic model on the ball (``profile_cov._damped_newton_step``).

The reference is independent of the package: the exact likelihood by ``tests/aghq2d.py``'s
2-D adaptive Gauss-Hermite rule (20 nodes per dimension), its constrained maximum by
L-BFGS-B from several starts (``tests/test_profile_cov_top.py``'s ``_beta_profile``).
Tolerance: as there, the root's 2e-3 in ``zeta`` (0.008 in the deviance) plus twice the
top's 3e-3 (the package's 7-node rule and the climb's stopping rule).

Data set 59 has its estimate at ``rho`` within 1e-4 of 1 with the slope's SD 0.11: the
covariance's root-finding unit (a quarter of the SDs' product at the estimate, 0.024) made
its search range, 12 units, end at 0.379, where the exact deviance is 3.12, and the upper
end was reported as infinite; it is 0.42.  The range is now doubled while the profile keeps
rising towards the cut (``profile_cov.MAX_EXTEND``).  Reference: the brute-force profile of
``tests/aghq2d_cov_profile.py`` (as ``tests/test_profile_cov_branches.py``, tolerance 0.03
there: the root, the 7- against the 20-node rule, the optimizers).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from test_profile_cov_branches import TOL as COV_TOL
from test_profile_cov_branches import _fit
from test_profile_cov_top import END_TOL, _beta_profile

from glmm_sm.inference import profile_cov

CUT = float(stats.chi2.ppf(0.95, 1))
SEED = 325


def test_ball_step_moves_the_curved_coordinates_past_a_flat_one():
    # a flat direction (curvature 1e-12) with a tiny gradient beside a curved one: the
    # curved coordinate's Newton step is -0.5; the old scaled step gave it -5e-7
    g = np.array([1.0, 1e-6])
    H = np.diag([2.0, 1e-12])
    step, dec = profile_cov._damped_newton_step(g, H)
    assert np.linalg.norm(step) == pytest.approx(profile_cov.ADAPTIVE_MAX_STEP, rel=1e-9)
    assert step[0] == pytest.approx(-0.5, rel=1e-5)
    # the decrement is the full Newton step's (the flat eigenvalue floored at 1e-8 x 2)
    assert dec == pytest.approx(0.5 * (1.0 / 2.0 + 1e-12 / 2e-8), rel=1e-12)
    # inside the ball the step is Newton's, unchanged
    H = np.array([[4.0, 1.0], [1.0, 3.0]])
    g = np.array([0.3, -0.2])
    step, _ = profile_cov._damped_newton_step(g, H)
    np.testing.assert_allclose(step, -np.linalg.solve(H, g), rtol=1e-13)


def test_fixed_effect_end_near_the_correlation_edge_matches_the_exact_profile():
    from aghq2d_cov_profile import CovProfileReference, reference_model

    d, res = _fit(SEED)
    assert res.fit_log.sampler["used"] == "quadrature"
    prof = profile_cov.CovProfiler(res, "x")
    end, mcse, _ = prof.limit(+1, 0.05)
    assert mcse == 0.0
    pts = [q for q in prof.points if np.isfinite(q.value)]
    near = min(pts, key=lambda q: abs(q.s - end))
    rho = near.theta[3] / np.sqrt(near.theta[2] * near.theta[4])
    assert rho > 0.999  # the case: the maximum against the box's edge
    P = CovProfileReference(reference_model(d, 20), np.asarray(res.params),
                            profile_cov.RHO_EDGE)
    lp = _beta_profile(P, 1, end, [P.theta_top, near.theta])
    dev = 2.0 * (P.l_top - lp)
    assert dev == pytest.approx(CUT, abs=END_TOL), (end, dev)
    # the climbs converge: a handful of rules per point, not the iteration limit's
    assert prof.adaptive_rules < 30 * len(prof.points)


def test_covariance_end_beyond_twelve_units_at_a_near_singular_fit_is_found():
    from aghq2d_cov_profile import CovProfileReference, reference_model

    d, res = _fit(59)
    p = np.asarray(res.params)
    assert res.fit_log.sampler["used"] == "quadrature"
    assert p[3] / np.sqrt(p[2] * p[4]) > 0.999  # near-singular
    prof = profile_cov.CovProfiler(res, "g Cov(x, Intercept)")
    up, mcse, note = prof.limit(+1, 0.05)
    # the case: the end lies past the old search range of MAX_DISTANCE units
    assert up - prof.s_hat > profile_cov.MAX_DISTANCE * prof._scale(), (up, note)
    assert mcse == 0.0
    P = CovProfileReference(reference_model(d, 20), p, profile_cov.RHO_EDGE)
    P.profile(up)
    dev = 2.0 * (P.l_top - P.profile(up))  # with l_top as raised by the profile
    assert dev == pytest.approx(CUT, abs=COV_TOL), (up, dev)
