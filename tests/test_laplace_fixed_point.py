"""The conditional-mode Newton iteration stops at a floating-point fixed point.

A block whose Newton decrement stays above ``conditional_mode``'s ``tol`` (1e-18) at
roundoff level, here a correlated term near a singular covariance (no slope variance in
the data, ``tests/test_hopeless.py``'s design at its Laplace estimate, ``rho`` near 1),
had every one of its remaining iterations halve its step about 27 times and accept a step
that no longer changed ``u``: 100 iterations, 2,595 evaluations of the blocks' objective
per mode and a 30 s Laplace fit for 200 rows.  An iteration that leaves ``u`` unchanged is
repeated exactly by every later one, so the loop now stops there: the same mode to the
bit, no longer declared converged (as before), in a few dozen iterations.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_hopeless import slope_data

from glmm_sm import MonteCarloGLMM
from glmm_sm.laplace import step

#: The Laplace estimate of this design (``fit(method="laplace")``; singular: rho 0.999).
THETA = np.array([0.50802841, 0.89294054, 0.46391913, 0.13225814, 0.03770532])


def test_conditional_mode_stops_at_a_fixed_point(monkeypatch):
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 + x | g)", None, slope_data(),
                                      family="bernoulli")
    system = mod.block_system()
    calls = []
    objective = step._block_objective

    def counted(*args):
        calls.append(1)
        return objective(*args)

    monkeypatch.setattr(step, "_block_objective", counted)
    res = step.conditional_mode(system, THETA[:2], THETA[2:])
    assert not res.converged  # a decrement above tol at roundoff level, as before
    assert len(calls) < 300, len(calls)  # 2,595 before: 100 iterations to maxiter
    # a fixed point: one more Newton iteration from the mode changes nothing
    again = step.conditional_mode(system, THETA[:2], THETA[2:], u0=res.u, maxiter=1)
    assert np.array_equal(again.u, res.u)
    assert np.array_equal(again.h_block, res.h_block)


def test_laplace_fit_of_the_near_singular_design_is_unchanged(monkeypatch):
    """The whole Laplace fit with the fixed-point stop and without it (every mode iterated
    to ``maxiter``, the old code): the same bits on the machine running the test.  (A value
    pinned on one machine does not carry over: on this near-singular ridge the optimizer's
    stopping point moves with the last bits of the host CPU's arithmetic: 3.2e-4 in the
    estimates and 4e-9 relative in the log-likelihood between the machine that wrote
    ``THETA`` and the one of session 14.)"""
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 + x | g)", None, slope_data(),
                                      family="bernoulli")
    fits = []
    for stop in (True, False):
        if not stop:
            monkeypatch.setattr(step, "_fixed_point", lambda u_next, u: False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits.append(mod.fit(method="laplace", disp=False))
    new, old = fits
    assert new.llf.hex() == old.llf.hex()
    assert np.array_equal(np.asarray(new.params), np.asarray(old.params))
    # where THETA (8 digits, another machine) puts it: the two machines' stopping points
    # on the ridge differ by at most 3.2e-4
    assert np.allclose(new.params, THETA, atol=1e-3)
