"""A Monte Carlo round whose curvature in a variance is its draws' own is not converged.

Three-level Bernoulli tree (``tests/test_nested_deep.py``'s design with two answers per
pupil, ``sampler="laplace"``): the boundary procedure puts the pupil variance back at 0.01
and the rounds start there.  With ``random_state=2`` they stopped at 0.0043 and reported a
converged fit with SE 0.007 and MCSE 0.0005, where the exact MLE is 0.19 with SE 0.41: at a
tiny variance the per-draw score in it grows like ``1 / nu``, the draws' weights degenerate
away from their centre, and the Monte Carlo Hessian (2,300 times the Laplace curvature) is
the draws' own.  The round is now not converged (``CURVATURE_FACTOR``) and, as the m that
Laplace's curvature asks for is beyond ``max_m``, the fit ends with a warning that says so
(``benchmarks/README.md``, 2026-12-07: seeds 0, 2, 4, 5 of 0-7 stopped so; the others reach
the MLE and are unchanged, on the code before the next round's m was planned from the
draws' centre, which changes these seeds' paths).

The reference is independent of glmm_sm: the nested adaptive Gauss-Hermite log-likelihood
of ``tests/aghq_nested3.py`` (its second difference in the pupil variance at the estimate).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from aghq_nested3 import Nested3GLMM
from test_nested_deep import FORMULA, _data3, _reference

from glmm_sm import MonteCarloGLMM
from glmm_sm.fit.driver import CURVATURE_FACTOR


def _fit(seed):
    d = _data3(A=2)
    mod = MonteCarloGLMM.from_formula(FORMULA, data=d, family="bernoulli")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = mod.fit(random_state=seed, disp=False, sampler="laplace")
    return d, res, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def stuck():
    return _fit(2)


def test_a_round_with_the_draws_own_curvature_is_not_converged(stuck):
    _, res, caught = stuck
    assert not res.converged
    last = res.fit_log.rounds[-1]
    assert not last["converged"]
    curv = last["curvature"]
    assert curv["name"] == "school:klass:pupil"
    assert curv["ratio"] > CURVATURE_FACTOR
    assert any("Monte Carlo curvature" in m and "sampler='quadrature'" in m for m in caught)


def test_the_flagged_curvature_is_not_the_likelihoods(stuck):
    """At the estimate, the exact curvature in the pupil variance (second difference of the
    reference at two node counts, within their difference) is Laplace's within a factor of
    2, and the round's Monte Carlo information exceeds it by more than CURVATURE_FACTOR."""
    d, res, _ = stuck
    theta = np.asarray(res.params, dtype=float)
    curv = res.fit_log.rounds[-1]["curvature"]
    X = np.c_[np.ones(len(d)), d["x"]]
    h = 0.1 * theta[-1]
    d2 = {}
    for nodes in ((8, 8, 8), (10, 10, 10)):
        ref = Nested3GLMM(d["y"], X, [d["school"], d["klass"], d["pupil"]], "bernoulli",
                          n_nodes=nodes)
        v = [ref.loglike(np.r_[theta[:-1], theta[-1] + k * h]) for k in (-1, 0, 1)]
        d2[nodes] = (v[2] - 2 * v[1] + v[0]) / h**2
    exact, err = d2[(10, 10, 10)], abs(d2[(10, 10, 10)] - d2[(8, 8, 8)])
    assert exact + err < 0
    assert 0.5 < curv["laplace_curvature"] / exact < 2.0
    se = np.asarray(res.bse, dtype=float)[-1]
    assert 1.0 / se**2 > CURVATURE_FACTOR * (-exact + err)


def test_a_fit_that_reaches_the_mle_is_not_flagged():
    """The same tree with four answers per pupil (``_data3()``, pupil variance about 1.1):
    its Monte Carlo rounds reach the MLE, and no round is flagged.  The distance to the MLE
    is the Newton step of the independent nested reference (``_reference``'s score at the
    estimate, the fit's inverse information) in SEs: within 3 MCSE plus the reference's
    node error (10 against 12 nodes per level).

    (The two-answer design's seed 7 reached the MLE when this check was written, but its
    path depends on the rounds' m: after the next round's m was planned from the draws'
    centre, its rounds drifted to a pupil variance of 1e-4 and the check flagged it.)"""
    d = _data3()
    mod = MonteCarloGLMM.from_formula(FORMULA, data=d, family="bernoulli")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = mod.fit(random_state=0, disp=False, sampler="laplace")
    assert res.converged
    assert not any("curvature" in r for r in res.fit_log.rounds)
    assert not any("Monte Carlo curvature" in str(w.message) for w in caught)
    theta = np.asarray(res.params, dtype=float)
    se = np.asarray(res.bse, dtype=float)
    cov = np.asarray(res.cov_params(), dtype=float)
    mcse = np.asarray(res.fit_log.rounds[-1]["mcse"], dtype=float)
    steps = {k: cov @ _reference(d, k).score(theta) / se for k in ((10, 10, 10), (12, 12, 12))}
    err = np.abs(steps[(12, 12, 12)] - steps[(10, 10, 10)])
    assert np.all(np.abs(steps[(12, 12, 12)]) <= 3 * mcse / se + err)
