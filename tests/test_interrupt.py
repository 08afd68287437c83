"""Stopping a fit: Ctrl-C (a real SIGINT) and the callback; and reproducibility of seeds."""

import signal
import warnings

import numpy as np
import pytest
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from glmm_sm.mcla.engine import MCLAEngine

VC = {"F": "0 + C(Female)", "M": "0 + C(Male)"}


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Python's own SIGINT handler (``KeyboardInterrupt``) during each test, whatever handler
    the process inherited: a shell starts a background job with SIGINT ignored, and Python
    then leaves it ignored (a real SIGINT would do nothing)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def model(salamander_model):
    return salamander_model


@pytest.fixture(scope="module")
def reference(model):
    return model.fit(random_state=3, disp=False, n_jobs=1)


def _sigint_at(monkeypatch, call):
    """Send this process a real SIGINT during the ``call``-th objective evaluation."""
    original = MCLAEngine.evaluate
    seen = {"n": 0}

    def evaluate(self, params, derivs=True):
        seen["n"] += 1
        if seen["n"] == call:
            signal.raise_signal(signal.SIGINT)
        return original(self, params, derivs)

    monkeypatch.setattr(MCLAEngine, "evaluate", evaluate)
    return seen


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_ctrl_c_returns_the_last_finished_round(model, reference, monkeypatch, n_jobs):
    round0_evals = sum(e["round"] == 0 for e in reference.fit_log.evaluations)
    assert sum(e["round"] == 1 for e in reference.fit_log.evaluations) >= 2
    _sigint_at(monkeypatch, round0_evals + 2)  # round 1's second evaluation
    with pytest.warns(UserWarning, match="interrupted during round 1; returning round 0"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = model.fit(random_state=3, disp=False, n_jobs=n_jobs)
    assert not res.converged and len(res.fit_log.rounds) == 1
    # Round 0 as the uninterrupted fit computed it; the log keeps what round 1 did so far.
    np.testing.assert_array_equal(res.params, reference.fit_log.rounds[0]["params"])
    assert any(e["round"] == 1 for e in res.fit_log.evaluations)
    assert np.all(np.isfinite(res.params)) and np.all(np.isfinite(res.bse))
    monkeypatch.undo()
    # Nothing is left behind: the model fits again exactly as before.
    again = model.fit(random_state=3, disp=False, n_jobs=n_jobs)
    np.testing.assert_array_equal(again.params, reference.params)


def test_ctrl_c_before_any_round_propagates(model, monkeypatch):
    _sigint_at(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        model.fit(random_state=3, disp=False)


def test_callback_stops_the_fit_and_sees_each_round(model, reference):
    seen = []

    def stop_after_first(info):
        seen.append(info)
        return True

    with pytest.warns(ConvergenceWarning, match="stopped by callback after round 0"):
        res = model.fit(random_state=3, disp=False, callback=stop_after_first)
    assert len(seen) == 1 and seen[0]["round"] == 0
    assert set(seen[0]) >= {"m", "params", "value", "min_ess", "max_ratio", "moved"}
    np.testing.assert_array_equal(res.params, reference.fit_log.rounds[0]["params"])
    assert res.fit_log.message == "stopped by callback after round 0"
    assert len(res.fit_log.to_frame()) == 1


def test_random_state_none_records_a_seed_that_repeats_the_fit(model):
    res = model.fit(random_state=None, disp=False)
    entropy = res.fit_log.seed_entropy
    assert isinstance(entropy, int)
    again = model.fit(random_state=np.random.SeedSequence(entropy), disp=False)
    np.testing.assert_array_equal(again.params, res.params)
    np.testing.assert_array_equal(again.mcse_cov, res.mcse_cov)


def test_same_seed_same_fit_for_any_chunk_size(model, reference):
    for chunk_size in (1000, 2048, 10**6):
        res = model.fit(random_state=3, disp=False, chunk_size=chunk_size)
        np.testing.assert_allclose(res.params, reference.params, rtol=1e-12, atol=0)


def test_progress_bar_on_a_terminal_or_in_a_notebook_only(monkeypatch):
    """The rounds' bar is off for disp=False and when stderr is not a terminal (CI, logs),
    on in a notebook (tqdm.auto), and left on screen after the fit."""
    import sys
    import types

    from glmm_sm.fit.driver import _progress

    assert _progress(False, 3).disable
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert _progress(True, 3).disable
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    bar = _progress(True, 3)
    assert not bar.disable and bar.leave
    bar.close()
