"""A deterministic fit's rounds far from their centre stop at a looser Newton step
(issue 20: guPrenat's default fit).

A deterministic round re-places its rule at the last estimate; the rounds stop only once
the estimate moves by less than ``QUADRATURE_TOL_SE`` standard errors.  A round whose
estimate is more than ``FAR_ROUND_SE`` standard errors from its centre is therefore never
the last: its estimate only centres the next rule.  Its optimizer stops once the remaining
Newton step is below ``FAR_STEP_FRACTION`` of that distance (in each parameter's SE)
instead of ``STOP_STEP`` hundredths of an SE (``fit/driver.py``, ``_near_maximum``).
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from test_outer_mode_secant import mothers_model

import glmm_sm.fit.driver as driver


def _ev(step_se, se=2.0):
    """An evaluation at theta = 0 of a quadratic log-likelihood with Hessian
    ``-I / se^2`` whose Newton step is ``step_se`` SEs in every parameter."""
    H = -np.eye(2) / se**2
    g = step_se * se / se**2 * np.ones(2)
    return SimpleNamespace(hessian=H, gradient=g, score_var=np.zeros((2, 2)))


def test_far_rounds_stop_at_a_fraction_of_their_distance():
    ev = _ev(0.05)  # 0.05 SE left to go
    theta = np.zeros(2)
    # the usual stop: STOP_STEP hundredths of an SE
    assert not driver._near_maximum(ev, driver.STOP_STEP)
    # 10 SE from the centre: 1% of 10 SE = 0.1 SE >= 0.05
    assert driver._near_maximum(ev, driver.STOP_STEP, np.array([0.0, -20.0]), theta)
    # 4 SE: 0.04 SE < 0.05
    assert not driver._near_maximum(ev, driver.STOP_STEP, np.array([8.0, 0.0]), theta)
    # 0.5 SE, beyond FAR_ROUND_SE (= QUADRATURE_TOL_SE: a round that moved more is not
    # the last): 1% of 0.5 SE = 0.005 SE
    half = np.array([1.0, 0.0])
    assert driver.FAR_ROUND_SE == driver.QUADRATURE_TOL_SE
    assert driver._near_maximum(_ev(0.004), driver.STOP_STEP, half, theta)
    assert not driver._near_maximum(_ev(0.006), driver.STOP_STEP, half, theta)
    # within FAR_ROUND_SE of the centre (a round that may be the last): the usual stop
    # (STOP_STEP hundredths of an SE), however close the remaining step
    inside = np.array([0.19, 0.0])  # 0.095 SE
    near = _ev(0.5 * driver.STOP_STEP * driver.MOVE_FLOOR_SE * 100)
    assert not driver._near_maximum(near, driver.STOP_STEP, inside, theta)
    assert driver._near_maximum(_ev(1e-5), driver.STOP_STEP, inside, theta)


def _fit(monkeypatch, far_se):
    with monkeypatch.context() as m:
        m.setattr(driver, "FAR_ROUND_SE", far_se)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mothers_model(seed=3).fit(random_state=0, disp=False)


def test_same_estimate_fewer_evaluations(monkeypatch):
    loose = _fit(monkeypatch, driver.FAR_ROUND_SE)
    tight = _fit(monkeypatch, np.inf)  # every round to STOP_STEP, as before
    assert loose.fit_log.sampler["used"] == "quadrature"
    moved = [r["moved"] * driver.MOVE_FLOOR_SE for r in tight.fit_log.rounds[1:]]
    assert max(moved) > driver.FAR_ROUND_SE  # the design has far rounds
    n_loose, n_tight = len(loose.fit_log.evaluations), len(tight.fit_log.evaluations)
    assert n_loose < n_tight
    # the final round is not far: it stops as before, at its rule's maximum to STOP_STEP
    ev = loose.fit_log.rounds[-1]
    assert ev["moved"] * driver.MOVE_FLOOR_SE <= driver.QUADRATURE_TOL_SE
    # the estimates: the rounds' resolution is QUADRATURE_TOL_SE (they stop there); the
    # far rounds' looser stops move the centres by 1% of their distance, which the
    # following rounds re-place: far inside that resolution
    se = np.asarray(tight.bse)
    diff = np.abs(np.asarray(loose.params) - np.asarray(tight.params)) / se
    assert np.max(diff) < 0.1 * driver.QUADRATURE_TOL_SE
    assert loose.fit_log.quadrature["max_step_in_se"] == pytest.approx(
        tight.fit_log.quadrature["max_step_in_se"], abs=0.1 * driver.QUADRATURE_TOL_SE)
