"""The deviances of a near-singular deterministic fit's profiles start from its true top
(issue 24).

Data set 92 of the profile-coverage design (``benchmarks/bench_profile_coverage.py``: 50
groups of 12, Bernoulli ``y ~ x + (1 + x | g)``) is fitted with ``|rho|`` within 1e-3 of 1.
Its log-Cholesky coordinate runs off to ``-inf`` along the ridge ``|rho| = 1``: the pilot
round stops at the optimizer's iteration limit, and the fit ended there (a singular fit that
is not a strict maximum), its log-likelihood the pilot's 4-node rule, placed at the Laplace
fit, at an estimate short of the maximum along the ridge.  It was 0.015 below the exact
maximum, so every profile deviance ``2 (l_hat - l_p)`` was 0.03 too low (intervals too
wide); only the covariance's profile had its own top.  (The fit now goes on to the 7-node
rule's round, which stops on the ridge at the same estimate: its log-likelihood is 0.007
below the exact maximum.)  Every deterministic profile now
takes the highest of the fit and the maximum of the adaptive quadrature log-likelihood over
all coordinates in the box ``|rho| <= RHO_EDGE`` (``CovProfiler._free_top``).

The reference is independent of the package (``tests/aghq2d_cov_profile.py``): the exact
likelihood by ``tests/aghq2d.py``'s 2-D adaptive Gauss-Hermite rule at 20 nodes per
dimension, maximized by L-BFGS-B from several starts in the same box.  Tolerances: the
package's 7-node rule differs from the exact likelihood by about the reference's own 7-node
rule's error (measured here at the top, and required below ``RULE_ERR``); the climb stops at
a Newton decrement of 1e-6; so the top must agree to ``TOP_TOL`` (a deviance of 0.006,
below the root finder's 0.008).  An end must be where the exact deviance is the chi2(1)
quantile to ``END_TOL``: the root's 2e-3 in ``zeta`` (0.008 in the deviance) plus twice the
top's tolerance.  The old code fails both: its top is 0.015 low and the exact deviance at
its fixed effects' ends about 0.03 above the cut.
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

CUT = float(stats.chi2.ppf(0.95, 1))
SEED = 92
#: Largest error of the reference's 7-node rule at the top (log-likelihood) accepted as
#: the scale of the package's 7-node rule's error.
RULE_ERR = 1e-3
#: The top: rule error and the climb's stopping rule.
TOP_TOL = 3e-3
#: An end's exact deviance against the cut: the root's 0.008 plus twice the top's.
END_TOL = 0.008 + 2 * TOP_TOL


@cache
def _fit():
    d = coverage_data(SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MonteCarloGLMM.from_formula("y ~ x + (1 + x | g)", data=d,
                                          family="bernoulli").fit(random_state=SEED,
                                                                  disp=False, n_jobs=1)
    return d, res


@cache
def _reference():
    from aghq2d_cov_profile import CovProfileReference, reference_model

    d, res = _fit()
    return CovProfileReference(reference_model(d, 20), np.asarray(res.params),
                               profile_cov.RHO_EDGE)


def _beta_profile(P, j, b, starts):
    """The exact profile log-likelihood with ``beta_j = b``: L-BFGS-B over the other fixed
    effect, ``log SD_a``, ``log SD_b`` and ``atanh(rho)`` in ``|rho| <= rho_edge`` from
    each of ``starts`` (thetas); the highest."""
    z_edge = float(np.arctanh(P.rho_edge))
    k = 1 - j

    def theta(f):
        sa, sb, r = np.exp(f[1]), np.exp(f[2]), np.tanh(f[3])
        t = np.array([0.0, 0.0, sa * sa, r * sa * sb, sb * sb])
        t[j], t[k] = b, f[0]
        return t

    def fun(f):
        t = theta(f)
        try:
            ll, g = P.ref.loglike(t), P.ref.score(t)
        except (ValueError, RuntimeError, np.linalg.LinAlgError, FloatingPointError):
            return 1e10, np.zeros(4)
        r, e = np.tanh(f[3]), t[3]
        gf = np.array([g[k], 2.0 * t[2] * g[2] + e * g[3], 2.0 * t[4] * g[4] + e * g[3],
                       (1.0 - r * r) * np.sqrt(t[2] * t[4]) * g[3]])
        return -ll, -gf

    best = -np.inf
    for t0 in starts:
        rho = float(np.clip(t0[3] / np.sqrt(t0[2] * t0[4]), -P.rho_edge, P.rho_edge))
        f0 = np.array([t0[k], 0.5 * np.log(t0[2]), 0.5 * np.log(t0[4]), np.arctanh(rho)])
        r = optimize.minimize(fun, f0, jac=True, method="L-BFGS-B",
                              bounds=[(None, None), (-8.0, 5.0), (-8.0, 5.0),
                                      (-z_edge, z_edge)],
                              options={"ftol": 1e-14, "gtol": 1e-8, "maxiter": 500})
        best = max(best, P._safe(theta(r.x)))
    return best


def test_near_singular_fit_profiles_start_from_the_exact_top():
    from aghq2d_cov_profile import reference_model

    d, res = _fit()
    p = np.asarray(res.params)
    assert res.fit_log.sampler["used"] == "quadrature"
    assert abs(p[3]) / np.sqrt(p[2] * p[4]) > 0.999  # near-singular
    P = _reference()
    # the reference's own 7-node rule at the top: the scale of the package rule's error
    rule_err = abs(reference_model(d, 7).loglike(P.theta_top) - P.l_top)
    assert rule_err < RULE_ERR
    # the old code's top was the fit's log-likelihood, 0.015 below the exact maximum
    for name in ("Intercept", "g Var(Intercept)"):
        prof = profile_cov.CovProfiler(res, name)
        assert prof.l_hat == pytest.approx(P.l_top, abs=TOP_TOL), (name, prof.l_hat)


def test_near_singular_fit_fixed_effect_ends_match_the_exact_profile():
    d, res = _fit()
    P = _reference()
    for j, name in enumerate(("Intercept", "x")):
        prof = profile_cov.CovProfiler(res, name)
        for side in (-1, +1):
            end, mcse, _ = prof.limit(side, 0.05)
            assert mcse == 0.0
            pts = [q for q in prof.points if np.isfinite(q.value)]
            near = min(pts, key=lambda q: abs(q.s - end))
            lp = _beta_profile(P, j, end, [P.theta_top, near.theta])
            dev = 2.0 * (P.l_top - lp)
            assert dev == pytest.approx(CUT, abs=END_TOL), (name, side, end, dev)


def test_near_singular_fit_reports_the_full_rule_log_likelihood():
    """The fit itself no longer ends in its pilot round on the ridge: a deterministic pilot
    (a coarse rule placed at the Laplace fit) only places the next round, so the reported
    log-likelihood is the 7-node rule's at the estimate, within the rule's error of the
    exact one there (the old code reported the pilot's, 0.0085 below it)."""
    d, res = _fit()
    P = _reference()
    assert [r["round"] for r in res.fit_log.rounds] == [0, 1]
    assert res.llf == pytest.approx(P.ref.loglike(np.asarray(res.params)), abs=RULE_ERR)
