"""The correlated Rao-Blackwellized kernel's node loops for 2-vectors and two fixed effects
(issue 24, the maximal model's round cost): per observation the linear predictor of a
2-vector level is formed in one node loop, and with two fixed effects the residuals' beta
scores are added in the loop that forms the residuals, where other designs keep a loop per
effect.

Checked against the general loops on the same draws: the maximal model with a third
covariate whose coefficient is 0 at the evaluation point takes the general beta-score loop
(three fixed effects), and its value, its gradient and Hessian in the other parameters and
its log weights are those of the two-effect model (which takes the new loop), to rounding.
The new loops' value is also checked against an independent numpy evaluation in
``tests/test_rb_vector_product.py`` (Bernoulli case) and their derivatives against finite
differences below.
"""

import warnings

import numpy as np
import pytest
from test_rb_correlated import _engine, _theta, assert_fd_derivatives, frame

from glmm_sm import MonteCarloGLMM
from glmm_sm.laplace.step import conditional_mode
from glmm_sm.mcla.rb.vector import VectorRBStructure


def _setup(formula, centre):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = MonteCarloGLMM.from_formula(formula, data=frame(12, 8, x2=True), family="bernoulli")
    system = mod.block_system()
    p = mod.k_fe
    mode = conditional_mode(system, centre[:p], centre[p:])
    return mod, system, np.asarray(centre, dtype=float), mode, VectorRBStructure(system.data)


COV = np.r_[0.6, 0.1, 0.3, 0.4, -0.05, 0.2]
BETA = np.r_[-0.3, 0.7]


@pytest.fixture(scope="module")
def pair():
    two = _setup("y ~ cond + (1 + cond | subject) + (1 + cond | item)", np.r_[BETA, COV])
    three = _setup("y ~ cond + x2 + (1 + cond | subject) + (1 + cond | item)",
                   np.r_[BETA, 0.0, COV])
    assert two[0].k_fe == 2 and three[0].k_fe == 3
    assert two[4].r == 2 and three[4].r == 2
    return two, three


def _drop(a, j=2):
    a = np.asarray(a)
    keep = np.r_[0:j, j + 1:a.shape[0]]
    return a[keep] if a.ndim == 1 else a[np.ix_(keep, keep)]


def test_two_fixed_effects_loop_equals_the_general_loop(pair):
    two, three = pair
    e2 = _engine(two, 300, 5, shift=False)
    e3 = _engine(three, 300, 5, shift=False)
    assert np.array_equal(e2.draws.sampler.zs, e3.draws.sampler.zs)
    for th in (two[2], _theta(two[2])):
        th3 = np.r_[th[:2], 0.0, th[2:]]
        a, b = e2.evaluate(th), e3.evaluate(th3)
        assert abs(a.value - b.value) <= 1e-12 * abs(a.value)
        assert np.allclose(a.ess, b.ess, rtol=1e-10)
        scale = max(1.0, np.abs(a.gradient).max())
        assert np.max(np.abs(a.gradient - _drop(b.gradient))) <= 1e-10 * scale
        hs = max(1.0, np.abs(a.hessian).max())
        assert np.max(np.abs(a.hessian - _drop(b.hessian))) <= 1e-10 * hs
        lw2 = np.concatenate(list(e2.iter_log_weights(th)), axis=1)
        lw3 = np.concatenate(list(e3.iter_log_weights(th3)), axis=1)
        assert np.max(np.abs(lw2 - lw3)) <= 1e-12 * np.max(np.abs(lw2))


@pytest.mark.parametrize("shift", [False, True])
def test_new_loops_derivatives_match_finite_differences(pair, shift):
    """Bernoulli, two fixed effects, 2-vector levels: only the new loops (the full pass)
    and the value-only pass, against central differences of the value and gradient."""
    two = pair[0]
    eng = _engine(two, 200, 7, shift=shift)
    theta = _theta(two[2])
    assert_fd_derivatives(eng, theta)
