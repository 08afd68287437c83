"""Rounds ended by the ESS trust region while making progress do not exhaust ``max_rounds``
(:func:`glmm_sm.fit.driver._RoundState.trust_progress`).

On VerbAgg's ``(1 | id) + (1 + Gender | item)`` the Laplace start lies several
trust-region widths from the MLE: each round ends at the edge of the region where its
draws' weights hold up, and six of the default eight rounds were spent walking there (the
fit stopped unconverged).  The rule: a round ended by the region whose estimate moved by
more than ``TRUST_PROGRESS_MOVED`` combined MCSEs up an ``l_m`` it increased is not
counted, for at most ``max_rounds`` such rounds (never with ``max_rounds=1``).  The rounds
are scripted here (the driver's loop and rule run for real on a small model's Laplace
start), so that each branch of the rule is checked exactly.
"""

import warnings

import numpy as np
import pytest
from test_rb_correlated import simulate

from glmm_sm.core.random import as_seed_sequence
from glmm_sm.fit import driver
from glmm_sm.fit.options import FitOptions


@pytest.fixture(scope="module")
def model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return simulate(12, 8)


def _script(monkeypatch, rounds):
    """Replace a round by the scripted ``rounds[rnd] = (status, moved, gain, converged)``
    (the last entry repeats); returns the log of rounds the driver ran."""
    seen = []

    def fake_round(self, rnd, callback, bar):
        status, moved, gain, conv = rounds[min(rnd, len(rounds) - 1)]
        self.log.evaluations.append({"round": rnd, "value": -100.0, "finite": True})
        self.log.evaluations.append({"round": rnd, "value": -200.0, "finite": True,
                                     "inside": False})  # a rejected point outside
        self.log.evaluations.append({"round": rnd, "value": -100.0 + gain, "finite": True,
                                     "inside": True})
        self.log.rounds.append({"round": rnd, "optimizer_status": status, "moved": moved,
                                "value": -100.0 + gain, "converged": conv})
        seen.append(self.log.rounds[-1])
        if conv:
            self.log.message = f"converged after {rnd + 1} rounds"
        return conv

    monkeypatch.setattr(driver._RoundState, "round", fake_round)
    return seen


def _fit(model, max_rounds):
    opts = FitOptions(max_rounds=max_rounds, time_budget=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        driver._mcmle(model, opts, as_seed_sequence(0), None, None, False, None)


T = driver.TRUST_STATUS


def test_progressing_trust_rounds_are_not_counted(model, monkeypatch):
    """Five rounds ended by the region, each moving 10 MCSEs up ``l_m``, then a converged
    one: with ``max_rounds=3`` the fit reaches it (the old loop stopped after 3 rounds,
    unconverged)."""
    seen = _script(monkeypatch, [(T, np.inf, 5.0, False)] + [(T, 10.0, 2.0, False)] * 4
                   + [(0, 1.0, 0.1, True)])
    _fit(model, 3)
    assert len(seen) == 6 and seen[-1]["converged"]
    assert [r["counted"] for r in seen[:5]] == [False] * 3 + [True] * 2


def test_at_most_max_rounds_go_uncounted(model, monkeypatch):
    """A fit whose every round ends by the region runs at most twice ``max_rounds``
    rounds, and says how many the region ended."""
    seen = _script(monkeypatch, [(T, 10.0, 2.0, False)])
    _fit(model, 3)
    assert len(seen) == 6
    assert sum(not r["counted"] for r in seen) == 3


@pytest.mark.parametrize("status, moved, gain", [
    (T, 2.0, 2.0),   # within 3 combined MCSEs of its centre: no progress
    (T, 10.0, 0.0),  # no step accepted (l_m not increased)
    (0, 10.0, 2.0),  # ended at a maximum (an ordinary round)
    (-1, 10.0, 2.0),  # the optimizer failed
])
def test_rounds_without_progress_count(model, monkeypatch, status, moved, gain):
    seen = _script(monkeypatch, [(status, moved, gain, False)])
    _fit(model, 3)
    assert len(seen) == 3 and all(r["counted"] for r in seen)


def test_one_round_means_one(model, monkeypatch):
    """``max_rounds=1`` (a single round asked for) runs one round, whatever it did."""
    seen = _script(monkeypatch, [(T, 10.0, 2.0, False)])
    _fit(model, 1)
    assert len(seen) == 1
