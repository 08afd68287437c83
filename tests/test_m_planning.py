"""How the next round's m is planned from this round's MCSE/SE (issue 24).

A round's ratio at its estimate (the sandwich ``H^-1 V H^-1`` with ``V`` there) overstates
the next round's: the estimate was moved by the round's own draws away from their centre,
where their weights are less even, and the next round is re-centred there.  The next m is
planned from the ratio with ``V`` at the round's start (its draws' centre,
``ratio_at_centre`` in the round's log), with the margin ``PLAN_MARGIN``, and grows by at
least ``ratio / target`` where the ratio misses the target.  The reported MCSE is not
changed.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from glmm_sm.fit import driver
from glmm_sm.fit.information import information_errors
from glmm_sm.fit.options import FitLog, FitOptions


def _state(m, opts):
    st = object.__new__(driver._RoundState)
    st.opts, st.log, st.m, st.rb = opts, FitLog(), m, None
    st.deadline = time.perf_counter() + 3600.0
    # no model: the memory rule (tests/test_memory_plan.py) lets m through
    st._memory_cap = lambda info, m_next, alloc: (m_next, alloc)
    return st


def _info(ratio, at_centre=None):
    info = {"round": 1, "max_ratio": ratio, "min_ess": 1e4, "moved": 1.0, "seconds": 1.0}
    if at_centre is not None:
        info["ratio_at_centre"] = at_centre
    return info


def test_a_ratio_that_the_centre_does_not_confirm_grows_m_by_ratio_over_target():
    # the 60 x 40 maximal design, seed 6, round 1: 0.118 at the estimate, 0.067 at the
    # centre; the old rule planned 1.2 (0.118 / 0.1)^2 x 2000 = 3342 draws
    opts = FitOptions(target_ratio=0.1)
    st = _state(2000, opts)
    assert st._out_of_time(_info(0.118, 0.067)) is False
    assert st.m == math.ceil(2000 * 1.18)
    # without a ratio at the centre, the ratio at the estimate plans, as before
    old = _state(2000, opts)
    assert old._out_of_time(_info(0.118)) is False
    assert old.m == math.ceil(2000 * 1.2 * 1.18**2)
    inf = _state(2000, opts)
    assert inf._out_of_time(_info(0.118, math.inf)) is False
    assert inf.m == old.m


def test_the_plan_brings_the_ratio_at_the_centre_to_the_target_with_the_margin():
    opts = FitOptions(target_ratio=0.1)
    for at_centre in (0.096, 0.15, 0.3):
        st = _state(2000, opts)
        st._out_of_time(_info(0.12, at_centre))
        want = max(driver.PLAN_MARGIN * (at_centre / 0.1) ** 2, 1.2)
        assert st.m == math.ceil(2000 * min(want, driver.MAX_M_GROWTH))
    # a ratio within the target never grows m, whatever the centre's
    st = _state(2000, opts)
    st._out_of_time(_info(0.09, 0.3))
    assert st.m == 2000


def test_m_keeps_growing_while_rounds_miss_the_target():
    # the floor ratio / target: repeated misses that the centre does not confirm still
    # grow m geometrically (no stall at a fixed m)
    opts = FitOptions(target_ratio=0.1)
    m = 2000
    for _ in range(4):
        m_new = driver._next_m(m, 0.11, 1e4, opts, plan=0.01)
        assert m_new >= 1.1 * m
        m = m_new


def test_planning_ratio_reads_the_round_log():
    assert driver._planning_ratio({"ratio_at_centre": 0.07}) == 0.07
    assert driver._planning_ratio({}) is None
    assert driver._planning_ratio({"ratio_at_centre": math.nan}) is None


@pytest.fixture(scope="module")
def salamander_fit():
    import warnings

    import glmm_sm
    from glmm_sm import MonteCarloGLMM

    df = glmm_sm.datasets.load("salamander")
    mod = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross + (1 | Female) + (1 | Male)",
                                      data=df, family="bernoulli")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mod.fit(random_state=3, disp=False, n_jobs=1, target_ratio=0.05)


def test_the_ratio_at_the_centre_is_the_sandwich_with_v_at_the_rounds_start(salamander_fit):
    res = salamander_fit
    last = res.fit_log.rounds[-1]
    start = [e for e in res.fit_log.evaluations if e["round"] == last["round"]][0]
    ev0 = res.engine.evaluate(np.asarray(start["theta"]))  # the draws' centre
    ev = res.engine.evaluate(np.asarray(last["params"]))  # the round's estimate
    err = information_errors(ev.hessian, ev.score_var)
    Hinv = np.linalg.inv(ev.hessian)
    want = np.sqrt(np.diag(Hinv @ ev0.score_var @ Hinv))
    np.testing.assert_allclose(last["mcse_at_centre"], want, rtol=1e-8)
    se = np.sqrt(np.diag(err.cov))
    assert last["ratio_at_centre"] == pytest.approx(np.max(want / se), rel=1e-8)
    # the reported MCSE is still the sandwich at the estimate
    np.testing.assert_allclose(np.asarray(res.mcse()), np.sqrt(np.diag(err.mcse_cov)),
                               rtol=1e-8)


def test_each_rounds_m_asked_follows_the_plan(salamander_fit):
    res = salamander_fit
    opts = FitOptions(target_ratio=0.05)
    grew = 0
    for info in res.fit_log.rounds[:-1]:
        want = driver._next_m(info["m"], info["max_ratio"], info["min_ess"], opts,
                              plan=driver._planning_ratio(info))
        assert info["m_asked"] == want
        grew += info["max_ratio"] > 0.05
    assert grew >= 1  # the plan was exercised
