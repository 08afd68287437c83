"""The value-only pass of the correlated Rao-Blackwellized kernel
(:func:`glmm_sm.mcla.kernels.rb_vector.rbv_chunk_sums` with ``work.derivs`` False), used
for the optimizer's trial points: the same value, ESS, block values and log weights as the
full pass, bit for bit, on frozen and moving draws, one chunk or several, the logit kernel
and the generic family path (Poisson).
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from test_ess_trust_region import CENTRE, _round
from test_rb_correlated import _engine, _near, _theta, simulate

from glmm_sm import MonteCarloGLMM
from glmm_sm.fit import driver
from glmm_sm.laplace.step import conditional_mode
from glmm_sm.mcla.rb.vector import VectorRBEngine, VectorRBSampler, VectorRBStructure
from glmm_sm.spec.params import ParamTransform


@pytest.fixture(scope="module")
def small():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = simulate(12, 8)
    centre = np.r_[mod._laplace_estimate()[0][:2], 0.6, 0.1, 0.3, 0.4, -0.05, 0.2]
    system = mod.block_system()
    mode = conditional_mode(system, centre[:2], centre[2:])
    return mod, system, centre, mode, VectorRBStructure(system.data)


@pytest.fixture(scope="module")
def poisson():
    """Counts on 10 x 6 crossed levels with correlated slopes on both factors."""
    rng = np.random.default_rng(7)
    s, i = np.repeat(np.arange(10), 6), np.tile(np.arange(6), 10)
    x = ((s + i) % 2) - 0.5
    eta = 0.3 + 0.4 * x + rng.normal(0, 0.5, 10)[s] + rng.normal(0, 0.3, 6)[i]
    d = pd.DataFrame({"y": rng.poisson(np.exp(eta)), "x": x, "s": s, "i": i})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = MonteCarloGLMM.from_formula("y ~ x + (1 + x | s) + (1 + x | i)", data=d,
                                          family="poisson")
    centre = np.r_[0.3, 0.4, 0.3, 0.02, 0.1, 0.1, -0.01, 0.05]
    system = mod.block_system()
    mode = conditional_mode(system, centre[:2], centre[2:])
    return mod, system, centre, mode, VectorRBStructure(system.data)


def _same(eng, theta):
    full = eng.evaluate(theta, derivs=True)
    lw_full = np.concatenate(list(eng.iter_log_weights(theta)), axis=1)
    eng._last = None  # no cached full evaluation to serve the value-only one
    eng._log_weights = None
    val = eng.evaluate(theta, derivs=False)
    assert val.gradient is None and val.hessian is None
    lw_val = np.concatenate(list(eng.iter_log_weights(theta)), axis=1)
    assert val.value == full.value
    assert np.array_equal(val.ess, full.ess)
    assert np.array_equal(val.block_values, full.block_values)
    assert np.array_equal(lw_val, lw_full)
    return full


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 64])
def test_value_only_equals_the_full_pass(small, shift, chunk_size):
    eng = _engine(small, 300, 3, chunk_size=chunk_size, shift=shift)
    for theta in (small[2], _near(small[2]), _theta(small[2])):
        full = _same(eng, theta)
        assert np.isfinite(full.value) and full.gradient is not None


def test_value_only_poisson(poisson):
    eng = _engine(poisson, 200, 5)
    assert eng.data.family.code != 0  # the generic family path of the kernel
    _same(eng, poisson[2])
    _same(eng, poisson[2] * np.r_[1.0, 1.1, 0.9, 1.0, 1.1, 0.9, 1.0, 1.2])


def test_value_only_leaves_the_moments_alone(small):
    """A value-only pass does not replace the conditional moments of the last full one."""
    eng = _engine(small, 200, 4)
    theta = small[2]
    eng.evaluate(theta)
    mean, sd = eng.random_effect_moments(theta)
    eng.evaluate(_near(theta), derivs=False)
    mean2, sd2 = eng.random_effect_moments(theta)
    assert np.array_equal(mean, mean2) and np.array_equal(sd, sd2)


def test_value_only_then_full_at_the_same_point(small):
    """The engine's cache never serves a value-only evaluation where derivatives are
    asked for."""
    eng = _engine(small, 200, 6)
    theta = _near(small[2])
    val = eng.evaluate(theta, derivs=False)
    full = eng.evaluate(theta)
    assert full.gradient is not None and full.value == val.value


@pytest.fixture(scope="module")
def trust():
    """The setup of ``tests/test_ess_trust_region.py``: 60 x 40 near the MLE."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = simulate(60, 40)
        system = mod.block_system()
    mode = conditional_mode(system, CENTRE[:2], CENTRE[2:])
    smp = VectorRBSampler(system, CENTRE, mode, VectorRBStructure(system.data))
    tr = ParamTransform(mod.arrays.X, mod.k_vcp + mod.k_fam, cov=mod.design.cov)
    return mod, smp, tr


def test_trust_region_round_value_first(trust, monkeypatch):
    """The driver's use of the pass (``_Objective``): once a trial point was outside the ESS
    trust region the next ones are evaluated value first, and a round ended by the region
    takes its final Evaluation from its own full ones.  The round of
    ``tests/test_ess_trust_region.py`` (60 x 40, m = 600, a seed whose round leaves the
    region) ends at the same point, with the same Evaluation, as with every trial point
    evaluated in full, in fewer full evaluations."""
    st = trust
    full_calls = []
    real = VectorRBEngine._evaluate

    def counting(self, params, derivs):
        full_calls.append(bool(derivs))
        return real(self, params, derivs)

    monkeypatch.setattr(VectorRBEngine, "_evaluate", counting)
    _, theta, res, ev, log = _round(st)
    fast = list(full_calls)
    full_calls.clear()
    monkeypatch.setattr(VectorRBEngine, "cheap_value_only", False)
    _, theta0, res0, ev0, log0 = _round(st)
    assert res.status == res0.status == driver.TRUST_STATUS
    assert np.array_equal(theta, theta0)
    assert ev.value == ev0.value and np.array_equal(ev.gradient, ev0.gradient)
    assert np.array_equal(ev.hessian, ev0.hessian)
    assert res.n_outside == res0.n_outside
    assert any(e.get("value_only") for e in log.evaluations)
    assert not any(e.get("value_only") for e in log0.evaluations)
    # fewer full passes: outside points after the first and the final Evaluation
    assert sum(fast) < sum(full_calls), (fast, full_calls)
