"""A deterministic fit's outer modes start at the last rule's (issue 20).

Each round of a two-level deterministic fit places a new rule at its centre, and
:meth:`~glmm_sm.mcla.rb.split.QuadratureSampler._outer_mode` finds every block's outer mode
by Newton's method (secant steps where the rule's curvature is off the score's slope) to
``1e-7`` of the block's SD.  It started at the joint conditional mode, far from the rule's
own mode where the inner rule is poor (guPrenat: about 20 kernel calls per rule, 0.18 s a
fit); it now starts at the last rule's modes (``outer_start``, the last sampler's
``outer_modes``), which move little between rounds.  The root is the same to the
iterations' tolerance; a NaN start (or one whose terms are not usable) is the joint mode's.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_outer_mode_secant import mothers_model, quadrature_sampler

import glmm_sm.fit.driver as driver
import glmm_sm.mcla.rb.split as split

#: the outer modes' Newton tolerance (``_outer_mode``'s ``tol``, in the block's SD)
TOL = 1e-7


def _sd(smp):
    return np.array([r[0, 0] for r in smp.v_root])


@pytest.fixture(scope="module")
def mod():
    return mothers_model()


def test_a_warm_start_finds_the_same_modes_in_fewer_calls(mod):
    # two rules a round apart: the variances 5% and the fixed effects 0.05 apart
    prev = quadrature_sampler(mod, np.r_[-0.45, 0.35, 4.2, 30.0])
    theta = np.r_[-0.5, 0.3, 4.0, 31.5]
    cold = quadrature_sampler(mod, theta)
    warm = quadrature_sampler(mod, theta, outer_start=prev.outer_modes)
    assert len(cold.adapted) == len(warm.adapted) == mod.layout_data(mod.factorize).n_blocks
    assert np.all(np.isfinite(prev.outer_modes))
    vcol = np.array([c[0] for c in cold.v_cols])
    np.testing.assert_array_equal(cold.outer_modes, cold.u_hat[vcol])
    # the same root, each to 1e-7 of its SD from either start: 2 TOL apart at most (the
    # last Newton step, below TOL, is taken, so each lands well inside TOL of the root)
    sd = _sd(cold)
    assert np.max(np.abs(warm.outer_modes - cold.outer_modes) / sd) < 2 * TOL
    np.testing.assert_allclose(_sd(warm), sd, rtol=1e-6)
    # the kernel's work: the levels integrated over the iterations (on this design the
    # calls are as many, 4, from either start; fewer blocks still move in each)
    assert warm.outer_evaluations <= cold.outer_evaluations
    assert warm.outer_level_integrations < cold.outer_level_integrations


def test_a_nan_start_is_the_joint_modes(mod):
    theta = np.r_[-0.5, 0.3, 4.0, 31.5]
    cold = quadrature_sampler(mod, theta)
    nan = quadrature_sampler(mod, theta, outer_start=np.full(cold.data.n_blocks, np.nan))
    np.testing.assert_array_equal(nan.outer_modes, cold.outer_modes)
    np.testing.assert_array_equal(nan.u_hat, cold.u_hat)
    assert nan.outer_evaluations == cold.outer_evaluations


def test_an_unusable_start_falls_back_to_the_joint_modes(mod):
    """A start where the rule's terms are not finite: those blocks start at the joint
    mode (one more kernel call for them) and reach the same modes."""
    theta = np.r_[-0.5, 0.3, 4.0, 31.5]
    cold = quadrature_sampler(mod, theta)
    start = cold.outer_modes.copy()
    start[:3] = np.inf  # the levels' terms there are not finite
    warm = quadrature_sampler(mod, theta, outer_start=start)
    assert warm.recentre_failures == cold.recentre_failures == 0
    assert len(warm.adapted) == len(cold.adapted)
    sd = _sd(cold)
    assert np.max(np.abs(warm.outer_modes - cold.outer_modes) / sd) < 2 * TOL


def _fit(monkeypatch, warm):
    calls = []
    real = split.recentre_levels

    def counted(*a):
        calls.append(1)
        return real(*a)

    with monkeypatch.context() as m:
        m.setattr(split, "recentre_levels", counted)
        if not warm:  # every rule's outer modes from the joint modes, as before
            m.setattr(driver, "_outer_modes", lambda engine: None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = mothers_model(seed=3).fit(random_state=0, disp=False)
    return res, len(calls)


def test_a_fit_warm_started_has_the_same_estimates(monkeypatch):
    warm, n_warm = _fit(monkeypatch, True)
    cold, n_cold = _fit(monkeypatch, False)
    assert warm.fit_log.sampler["used"] == "quadrature"
    assert n_warm < n_cold
    # the rules' outer modes agree to 2e-7 of their SDs; the estimates follow them
    # smoothly (the value is smooth in the rule's centres): far inside the rounds'
    # resolution (QUADRATURE_TOL_SE) and the measured quadrature error
    se = np.asarray(cold.bse)
    diff = np.abs(np.asarray(warm.params) - np.asarray(cold.params)) / se
    assert np.max(diff) < 1e-3 * driver.QUADRATURE_TOL_SE
    assert warm.fit_log.quadrature["max_step_in_se"] == pytest.approx(
        cold.fit_log.quadrature["max_step_in_se"], abs=1e-3 * driver.QUADRATURE_TOL_SE)
    assert len(warm.fit_log.evaluations) == len(cold.fit_log.evaluations)


def test_the_secant_after_the_first_step_finds_the_same_modes_in_fewer_calls(mod, monkeypatch):
    """``SECANT_SWITCH`` 0: every step after the first is the secant's (superlinear), where
    0.25 kept Newton's steps with the rule's curvature (linear, at the rate of the
    mismatch) wherever the two were within 25%: the same roots, in fewer kernel calls."""
    assert split.SECANT_SWITCH == 0.0
    theta = np.r_[-0.5, 0.3, 4.0, 31.5]
    prev = quadrature_sampler(mod, np.r_[-0.45, 0.35, 4.2, 30.0]).outer_modes
    now = [quadrature_sampler(mod, theta, outer_start=s) for s in (None, prev)]
    monkeypatch.setattr(split, "SECANT_SWITCH", 0.25)
    before = [quadrature_sampler(mod, theta, outer_start=s) for s in (None, prev)]
    for a, b in zip(now, before, strict=True):
        assert np.max(np.abs(a.outer_modes - b.outer_modes) / _sd(b)) < 2 * TOL
        assert a.outer_level_integrations < b.outer_level_integrations
