"""The ESS trust region of a round's maximization (:mod:`glmm_sm.fit.driver`).

On the maximal crossed design of ``tests/test_rb_correlated.py`` (60 subjects x 40 items,
``y ~ cond + (1 + cond | subject) + (1 + cond | item)``, the items' 80 effects sampled) at
m = 600 draws centred near the MLE, the maximum of ``l_m`` on some seeds' draws lies where
their weights have collapsed: without the region the optimizer follows them to an ESS
below 5 of 600 (the seed below; 5 of 30 seeds did so, the item slope variance moving by up
to 8 of the other seeds' MCSEs).  With the region the round stays where the weights hold
up, and says that it stopped there.
"""

import warnings

import numpy as np
import pytest
from test_rb_correlated import simulate

from glmm_sm.core.random import as_seed_sequence
from glmm_sm.fit import driver
from glmm_sm.fit.options import FitLog, FitOptions
from glmm_sm.laplace.step import conditional_mode
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.rb.vector import VectorRBEngine, VectorRBSampler, VectorRBStructure
from glmm_sm.spec.params import ParamTransform

#: Near the MLE of ``simulate(60, 40)`` (a default fit, seed 0).
CENTRE = np.array([-0.4037, 0.8807, 0.9486, 0.2161, 0.4045, 0.5926, -0.1579, 0.2581])
M, SEED = 600, 1002


@pytest.fixture(scope="module")
def setup():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = simulate(60, 40)
        system = mod.block_system()
    p = mod.k_fe
    mode = conditional_mode(system, CENTRE[:p], CENTRE[p:])
    smp = VectorRBSampler(system, CENTRE, mode, VectorRBStructure(system.data))
    tr = ParamTransform(mod.arrays.X, mod.k_vcp + mod.k_fam, cov=mod.design.cov)
    return mod, smp, tr


def _round(setup, **opts):
    mod, smp, tr = setup
    draws = DrawSet.from_sampler(smp, M, as_seed_sequence(SEED))
    engine = VectorRBEngine(draws, n_jobs=1)
    log = FitLog()
    theta, res, ev = driver._maximize(engine, CENTRE, tr, FitOptions(**opts), log, 1)
    return engine, theta, res, ev, log


def test_round_stays_where_the_weights_hold_up(setup):
    """Every point the round accepts has each block's ESS at or above its floor,
    ``min(ESS_TRUST * ESS at the start, min_ess)``; the round ends with the trust region's
    status and says so; the same draws give the same bits twice."""
    engine, theta, res, ev, log = _round(setup)
    start = engine.evaluate(CENTRE).ess
    floor = np.fmin(driver.ESS_TRUST * start, FitOptions().min_ess)
    assert np.all(ev.ess >= floor), (ev.ess, floor)
    assert res.status == driver.TRUST_STATUS and not res.success
    assert "trust region" in res.message
    assert res.n_outside >= driver.TRUST_EXITS
    outside = [e for e in log.evaluations if e.get("inside") is False]
    assert len(outside) == res.n_outside
    assert all(e["min_ess"] < floor.min() for e in outside)
    # same seed, same answer
    theta2 = _round(setup)[1]
    assert np.array_equal(theta, theta2)


def test_without_the_region_the_weights_collapse(setup, monkeypatch):
    """The design is one where the region matters: with it switched off (``ESS_TRUST =
    0``) the same round's maximum sits on a handful of draws."""
    monkeypatch.setattr(driver, "ESS_TRUST", 0.0)
    engine, theta, res, ev, log = _round(setup)
    assert ev.ess.min() < driver.ESS_COLLAPSE
    assert res.n_outside == 0


def test_min_ess_zero_switches_the_region_off(setup):
    """``min_ess=0`` (no ESS requirement) leaves the optimizer unbounded: the collapsed
    maximum, as with ``ESS_TRUST = 0``."""
    ev = _round(setup, min_ess=0.0)[3]
    assert ev.ess.min() < driver.ESS_COLLAPSE
