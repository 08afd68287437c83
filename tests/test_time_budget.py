"""The time budget is a safety stop, not a tuning knob (issue 23, item 2).

Before, a round's m was capped by the seconds left (``affordable = left / seconds per
draw``), so the same seed gave a different, unflagged fit on a slower machine, or with a
cold numba cache (compilation counted against the budget).  Now m is what the Monte Carlo
error asks for; a round that would not finish in the time left is not started, and the fit
then says so (``converged=False``, the reason in ``fit_log.message`` and the summary).
Compilation is timed and left out of the budget.

The integration test runs one fit under fake clocks from 1x to 30000x slower: each fit is
either bit-identical to the real-clock fit or stopped and flagged, and both outcomes occur.
"""

from __future__ import annotations

import time
import types
import warnings

import numpy as np
import pytest

import glmm_sm
from glmm_sm import MonteCarloGLMM
from glmm_sm.fit import driver
from glmm_sm.fit.options import FitLog, FitOptions


def _state(m, left, opts):
    """A rounds state with ``left`` seconds to its deadline (no model: the memory rule,
    tested in ``tests/test_memory_plan.py``, lets m through)."""
    st = object.__new__(driver._RoundState)
    st.opts, st.log, st.m, st.rb = opts, FitLog(), m, None
    st.deadline = time.perf_counter() + left
    st._memory_cap = lambda info, m_next, alloc: (m_next, alloc)
    return st


def test_the_budget_stops_a_round_it_cannot_afford_and_never_shrinks_m():
    opts = FitOptions(target_ratio=0.1)
    info = {"round": 1, "max_ratio": 0.2, "min_ess": 1e4, "moved": 1.0, "seconds": 1.0}
    wanted = driver._next_m(4000, 0.2, 1e4, opts)  # the Monte Carlo error's m
    assert wanted > 3 * 4000
    roomy = _state(4000, 3600.0, opts)
    assert roomy._out_of_time(info) is False and roomy.m == wanted
    # 3 s left, the next round needs about wanted / 4000 = 4.8 s: the old rule ran it with
    # m = 12000, capped by the time left; now the fit stops and says why
    tight = _state(4000, 3.0, opts)
    assert tight._out_of_time(info) is True and tight.m == 4000
    assert f"the next round, m = {wanted}" in tight.log.message
    assert "time budget of 600 s used up" in tight.log.message


def _slow_clock(factor):
    start = time.perf_counter()
    return types.SimpleNamespace(
        perf_counter=lambda: start + (time.perf_counter() - start) * factor)


@pytest.fixture(scope="module")
def salamander():
    df = glmm_sm.datasets.load("salamander")
    return MonteCarloGLMM.from_formula("Mate ~ 0 + Cross + (1 | Female) + (1 | Male)",
                                       data=df, family="bernoulli")


def _fit(mod):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mod.fit(random_state=3, disp=False, n_jobs=1, target_ratio=0.05,
                       time_budget=600.0)


@pytest.mark.slow
def test_a_slower_machine_gives_the_same_fit_or_a_flagged_stop(salamander, monkeypatch):
    ref = _fit(salamander)  # warm: no compilation in what follows
    assert ref.converged and len(ref.fit_log.rounds) >= 2
    seen = set()
    for factor in (1.0, 30.0, 300.0, 3000.0, 30000.0):
        monkeypatch.setattr(driver, "time", _slow_clock(factor))
        res = _fit(salamander)
        monkeypatch.setattr(driver, "time", time)
        if res.converged:
            np.testing.assert_array_equal(np.asarray(res.params), np.asarray(ref.params))
            assert [r["m"] for r in res.fit_log.rounds] == [r["m"] for r in ref.fit_log.rounds]
            seen.add("same")
        else:
            assert "time budget of 600 s used up" in res.fit_log.message
            assert "time budget" in str(res.summary())
            seen.add("stopped")
    assert seen == {"same", "stopped"}
