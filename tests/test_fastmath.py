"""The kernel's vectorisable exp, log1p, log and reciprocal against numpy."""

import numpy as np

from glmm_sm.mcla.kernels.fastmath import (
    _fexp_array,
    _flog1p_array,
    _flog_ge1_array,
    _frecip_array,
)


def test_fexp_matches_numpy_over_kernel_range():
    x = np.concatenate([np.linspace(-708, 709, 400_001),
                        np.random.default_rng(0).uniform(-40, 40, 100_000)])
    out = np.empty_like(x)
    _fexp_array(x, out)
    assert np.max(np.abs(out / np.exp(x) - 1)) < 1e-15


def test_fexp_clamps_below_range():
    out = np.empty(2)
    _fexp_array(np.array([-800.0, -np.inf]), out)
    assert np.all(out >= 0) and np.all(out < 1e-300)


def test_flog1p_unit_matches_numpy():
    t = np.concatenate([np.linspace(0, 1, 200_001), np.geomspace(1e-300, 1, 5000)])
    out = np.empty_like(t)
    _flog1p_array(t, out)
    ref = np.log1p(t)
    pos = t > 0
    assert out[0] == 0.0
    assert np.max(np.abs(out[pos] / ref[pos] - 1)) < 1e-15


def test_frecip_unit_is_within_one_ulp_on_its_range():
    x = np.concatenate([np.linspace(1, 2, 1_000_001),
                        np.random.default_rng(1).uniform(1, 2, 100_000)])
    out = np.empty_like(x)
    _frecip_array(x, out)
    ref = 1.0 / x
    assert np.max(np.abs(out - ref) / np.spacing(ref)) <= 1.0


def test_flog_ge1_matches_numpy_on_its_range():
    """``flog_ge1`` (the log of the deep kernel's products of factors in [1, 2]) on [1,
    2**1000]: within a relative 1e-15 of numpy's log (both terms positive: the sum adds no
    cancellation), exactly 0 at 1 and ``n ln 2`` to rounding at the powers of 2."""
    x = np.concatenate([np.linspace(1, 4, 300_001), np.geomspace(1, 2.0**1000, 200_001),
                        2.0 ** np.arange(0, 1001), np.nextafter(2.0 ** np.arange(1, 1001), 0),
                        np.random.default_rng(2).uniform(1, 2, 100_000)])
    out = np.empty_like(x)
    _flog_ge1_array(x, out)
    ref = np.log(x)
    assert out[0] == 0.0
    pos = x > 1
    assert np.max(np.abs(out[pos] / ref[pos] - 1)) < 1e-15
