"""Profiles are bounded and visible (issue 23, item 3).

``conf_int(method="profile")``, ``profile_conf_int`` and ``profile`` take a ``time_budget``
(seconds for the whole call, 600 by default as the fit's; None: no limit) and ``disp`` (a
progress bar on a terminal).  When the budget runs out they return what they have: the ends
found, NaN for the others with the reason in ``note`` and ``attrs["stopped"]``, and a
ConvergenceWarning.  The budget is checked before every profile point, fresh draw set,
reduced fit and engine evaluation, so a profile on a fit with m = 10^6 (seconds per
evaluation) cannot run for hours.  Before, none of these had a bound or a way to stop.

A fake clock makes the early stop deterministic: it advances one second at every reading,
so a budget of K seconds stops after K readings, wherever that falls.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from statsmodels.tools.sm_exceptions import ConvergenceWarning

import glmm_sm
import glmm_sm.inference.profile as profile_module
from glmm_sm import MonteCarloGLMM


@pytest.fixture(scope="module")
def booth():
    df = glmm_sm.datasets.load("BoothHobert")
    model = MonteCarloGLMM.from_formula("y ~ 0 + x1", {"z1": "0 + C(z1)"}, df,
                                        family="bernoulli")
    return model.fit(random_state=1, disp=False, n_jobs=1)


class FakeClock:
    """``time`` for the profile module: one second passes at every reading."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1.0
        return self.now


def test_tiny_budget_returns_the_ends_found_and_says_why(booth, monkeypatch):
    full = booth.profile_conf_int(random_state=5, time_budget=None)
    assert full.attrs["stopped"] == "" and np.all(np.isfinite(full[["lower", "upper"]]))
    monkeypatch.setattr(profile_module, "time", FakeClock())
    with pytest.warns(ConvergenceWarning, match=r"profile intervals stopped early: time "
                                                r"budget of 40 s used up .*NaN"):
        part = booth.profile_conf_int(random_state=5, time_budget=40)
    assert part.attrs["stopped"].startswith("time budget of 40 s used up (")
    ends = part[["lower", "upper"]].to_numpy()
    found, missing = np.isfinite(ends), np.isnan(ends)
    assert found.any() and missing.any()
    # what was found is what the unlimited call finds (same seeds, same draws)
    np.testing.assert_array_equal(ends[found], full[["lower", "upper"]].to_numpy()[found])
    for name in part.index[missing.any(axis=1)]:
        assert "time budget of 40 s used up" in part.loc[name, "note"]


def test_tiny_budget_conf_int_and_profile_curve(booth, monkeypatch):
    monkeypatch.setattr(profile_module, "time", FakeClock())
    with pytest.warns(ConvergenceWarning, match="stopped early"):
        ci = booth.conf_int(method="profile", random_state=5, time_budget=2)
    assert ci.shape == (2, 2) and np.isnan(np.asarray(ci)).any()
    with pytest.warns(ConvergenceWarning, match=r"the profile of z1 stopped early: time "
                                                r"budget of 30 s used up"):
        curve = booth.profile("z1", random_state=5, n_points=4, time_budget=30)
    assert curve.attrs["stopped"].startswith("time budget of 30 s used up")
    assert 1 <= len(curve) < 9 and booth.params["z1"] in set(curve["value"])
    assert np.all(curve["deviance"] >= 0)


def test_budget_is_checked_and_progress_is_shown_only_when_asked(booth, monkeypatch):
    with pytest.raises(ValueError, match="time_budget must be a positive number"):
        booth.profile_conf_int(time_budget=0)
    bars = []
    import glmm_sm.fit.driver as driver

    real = driver._progress

    def spy(disp, total, desc="MCLA rounds", unit="round"):
        bars.append((disp, total, desc))
        return real(disp, total, desc, unit)

    monkeypatch.setattr(driver, "_progress", spy)
    booth.profile_conf_int(cols="x1", random_state=6, disp=False)
    assert bars == [(False, 2, "profile ends")]


# The case of the issue: a simulated data set of the salamander design whose profile ran for
# more than 15 minutes (the fit grew m to 10^6 after an ESS collapse in round 2, and every
# profile evaluation then took seconds).  The driver's ESS trust region now keeps round 2
# inside the region where its draws' weights hold up, and the fit ends at m = 65,650; the
# budget is cut to match, so that the profile still outlasts it.
RESPONSES = ("011111010100000101100010011010110100101001011101100010111111001011101111001000"
             "101110111010000011101011100010110001100010000110110100000111010110001110011000"
             "000010111000110100001011010100110101001100001101101110000001100100010011110111"
             "000001010011000110000110010001010100110100001111101100011000011011110110101011"
             "101000001110110100100101011110100111001101000000")


@pytest.mark.slow
def test_the_issues_hanging_profile_ends_within_its_budget():
    df = glmm_sm.datasets.load("salamander").assign(Mate=[int(c) for c in RESPONSES])
    model = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross", {"F": "0 + C(Female)",
                                                             "M": "0 + C(Male)"}, df,
                                        family="bernoulli")
    res = model.fit(random_state=43, disp=False)
    assert res.m < 10**6  # no ESS collapse (fit/driver.py's trust region)
    budget = 5.0
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ci = res.profile_conf_int(time_budget=budget)
    took = time.perf_counter() - t0
    # at most one engine evaluation past the budget
    assert took < budget + 60.0
    assert "time budget of 5 s used up" in ci.attrs["stopped"]
    assert np.isnan(ci[["lower", "upper"]].to_numpy()).any()
    assert any("profile intervals stopped early" in str(w.message) for w in caught)


def test_profiles_with_a_correlated_term_respect_the_budget(slope_data, monkeypatch):
    """The correlated terms' profiles (inference/profile_cov.py) stop at the budget too, with
    NaN ends, the reason in ``note`` and ``attrs["stopped"]``, and a ConvergenceWarning."""
    model = MonteCarloGLMM.from_formula("y ~ x + (1 + x | g)", None, slope_data,
                                        family="bernoulli")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit(random_state=3, disp=False, n_jobs=1)
    monkeypatch.setattr(profile_module, "time", FakeClock())
    with pytest.warns(ConvergenceWarning, match=r"profile intervals stopped early: time "
                                                r"budget of 5 s used up"):
        ci = res.profile_conf_int(cols=["x", "g Var(x)"], time_budget=5)
    assert ci.attrs["stopped"].startswith("time budget of 5 s used up")
    assert np.isnan(ci.loc["g Var(x)", ["lower", "upper"]].to_numpy(dtype=float)).all()
    assert "time budget of 5 s used up" in ci.loc["g Var(x)", "note"]
