"""The boundary decision of a deterministic (quadrature) fit takes no draws
(``glmm_sm.fit.driver._quadrature_boundary``): the model without the variance at 0 is
refitted by quadrature, and the one-sided derivative of the log-likelihood at 0 is exact
(MCSE 0).

lme4's grouseticks (``tests/data/grouseticks.csv``, Poisson, broods nested in locations):
the LOCATION variance is at 0.  References are independent of glmm_sm: the one-level MLE of
the model without LOCATION by ``tests/aghq.py``, and the nested log-likelihood by
``tests/aghq_nested.py`` at small positive LOCATION variances (its one-sided derivative at 0
by finite differences).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import patsy
import pytest
from aghq import RandomInterceptGLMM
from aghq_nested import NestedInterceptGLMM

from glmm_sm import MonteCarloGLMM
from glmm_sm.core.random import as_seed_sequence
from glmm_sm.fit.driver import quadrature_boundary_derivatives
from glmm_sm.fit.options import FitOptions

DATA = Path(__file__).parent / "data" / "grouseticks.csv"
FORMULA = "TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION)"


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


@pytest.fixture(scope="module")
def grouse():
    d = pd.read_csv(DATA)
    mod = MonteCarloGLMM.from_formula(FORMULA, data=d, family="poisson")
    return d, mod, _quiet(mod.fit, random_state=0, disp=False)


def _log(res):
    return res.fit_log if hasattr(res, "fit_log") else res.mle_retvals


def _design(d):
    X = np.asarray(patsy.dmatrix("YEAR + HEIGHT", d))
    return X, d["TICKS"].to_numpy(float)


def test_no_draws(grouse):
    """The default fit decides LOCATION = 0 deterministically: every round (the full
    model's and the reduced model's) is a quadrature round, the evidence exact."""
    _, mod, res = grouse
    log = res.fit_log
    assert log.sampler["used"] == "quadrature", log.sampler
    assert log.rounds and all(r["m"] == 1 for r in log.rounds if "m" in r), log.rounds
    names = list(mod.vcp_names)
    assert res.params.iloc[names.index("LOCATION") + mod.k_fe] == 0.0
    assert res.params.iloc[names.index("BROOD") + mod.k_fe] > 0.5
    (ev,) = log.boundary_evidence
    assert ev.component == "LOCATION" and ev.decision == "boundary" and ev.action == "at 0"
    assert ev.mcse == 0.0 and ev.m == 0
    assert ev.derivative < 0
    assert log.boundary == {"LOCATION": ev.derivative}
    assert np.all(np.nan_to_num(np.asarray(res.mcse())[: mod.k_fe + 1]) == 0.0)
    # the reduced fit's quadrature error is measured as a default deterministic fit's
    assert log.quadrature and log.quadrature["max_step_in_se"] <= 0.1, log.quadrature


def test_matches_independent_quadrature(grouse):
    """The reduced estimate is the exact one-level MLE (``tests/aghq.py``), and the one-sided
    derivative at 0 is that of the exact nested likelihood (``tests/aghq_nested.py``, 20 x
    20 nodes; 30 x 30 moves it by 1e-6), by finite differences at LOCATION variances h, 2h,
    3h (the quadratic through them, error O(h^2); h = 1e-4 and 1e-5 agree to 1e-6).

    The recorded derivative is on the default rule, whose quadrature error in it is 1e-3
    relative here (a node study: 12, 20, 30 inner nodes give -0.84028, -0.83950, -0.83944):
    it is checked to 3e-3 relative, and the same derivative on 30 x 30 nodes to 1e-5."""
    d, mod, res = grouse
    X, y = _design(d)
    p = X.shape[1]
    red = RandomInterceptGLMM(y, X, d["BROOD"], "poisson", n_nodes=30).fit()
    theta = np.asarray(res.params, dtype=float)
    ours = np.r_[theta[:p], theta[p]]  # beta, BROOD (LOCATION, last, is 0)
    assert np.all(np.abs(ours - red.params) <= 1e-3 * red.bse), (ours, red.params, red.bse)
    nested = NestedInterceptGLMM(y, X, d["LOCATION"], d["BROOD"], "poisson", n_nodes=(20, 20))
    h = 1e-4
    l1, l2, l3 = (nested.loglike(np.r_[red.params[:p], j * h, red.params[p]])
                  for j in (1, 2, 3))
    fd = (-5 * l1 + 8 * l2 - 3 * l3) / (2 * h)
    (ev,) = res.fit_log.boundary_evidence
    assert fd < 0
    assert abs(ev.derivative - fd) <= 3e-3 * abs(fd), (ev.derivative, fd)
    opts = FitOptions(sampler="quadrature", sampler_options={"n_nodes": 30, "outer_nodes": 30})
    fine = quadrature_boundary_derivatives(mod, [1], red.params, opts, mod.factorize, 1,
                                           as_seed_sequence(0))
    assert abs(fine[0] - fd) <= 1e-5 * abs(fd), (fine, fd)


@pytest.mark.slow
def test_agrees_with_monte_carlo_procedure(grouse):
    """The importance-sampling boundary procedure (``sampler="laplace"``, the default's
    fallback before) reaches the same estimate within 3 of its MCSEs."""
    d, mod, res = grouse
    mc = _quiet(mod.fit, sampler="laplace", random_state=0, disp=False)
    k = mod.k_fe + 1  # the fixed effects and BROOD (LOCATION is 0 in both)
    assert mc.params.iloc[-1] == 0.0
    diff = np.abs(np.asarray(res.params)[:k] - np.asarray(mc.params)[:k])
    assert np.all(diff <= 3 * np.asarray(mc.mcse())[:k] + 1e-8), (diff, mc.mcse())
