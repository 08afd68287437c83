"""The Laplace step's blocks are factored and solved in one compiled pass (issue 20).

:class:`~glmm_sm.laplace.step.BlockSystem` groups a nested design's blocks (a community
and its mothers) by their size; guPrenat has 24 sizes, and the conditional modes' Newton
steps, the final factors and the score's ``P^{-1}`` were one numpy call per size and
iteration (8,214 small solves a fit).  :meth:`~BlockSystem.solve_flat`,
:meth:`~BlockSystem.cholesky_flat`, :meth:`~BlockSystem.inverse_flat` and
:meth:`~BlockSystem.apply_flat` now treat every block in one pass over the concatenated
matrices.  Checked here against the per-group numpy formulas they replace (LAPACK's
factors and solves, to rounding), and their fallback where a block does not factor.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from glmm_sm import MonteCarloGLMM
from glmm_sm.laplace.prior import PriorPrecision
from glmm_sm.laplace.step import (
    _tri_inverse,
    checked_cholesky,
    conditional_mode,
    spd_solve,
)


def _system(seed=3, C=9):
    """Communities of 1 to 6 mothers of 1 to 3 births: blocks of 2 to 7 effects."""
    rng = np.random.default_rng(seed)
    n_moms = 1 + np.arange(C) % 6
    comm_of_mom = np.repeat(np.arange(C), n_moms)
    births = rng.integers(1, 4, comm_of_mom.size)
    mom = np.repeat(np.arange(comm_of_mom.size), births)
    comm = comm_of_mom[mom]
    x = rng.normal(size=mom.size)
    eta = 0.2 + 0.5 * x + rng.normal(0, 1.0, C)[comm] + rng.normal(0, 1.5, mom.max() + 1)[mom]
    y = (rng.random(mom.size) < 1 / (1 + np.exp(-eta))).astype(float)
    d = pd.DataFrame({"y": y, "x": x, "comm": comm, "mom": mom})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = MonteCarloGLMM.from_formula("y ~ x + (1 | comm) + (1 | mom)", d,
                                          family="bernoulli")
    return mod.block_system(None)


def _precision(system, seed=0):
    data = system.data
    rng = np.random.default_rng(seed)
    h = rng.uniform(0.05, 0.25, data.Z.shape[0])
    dinv = PriorPrecision(data, np.array([0.7, 2.3]))
    return system.precision_flat(h, dinv), system.precision(h, dinv)


def test_design_has_many_block_sizes():
    system = _system()
    assert len(system.groups) >= 5
    assert not system.schur


def test_precision_flat_is_the_stacked_precision():
    system = _system()
    flat, mats = _precision(system)
    np.testing.assert_array_equal(flat, np.concatenate([M.ravel() for M in mats]))


def test_solve_against_per_group_spd_solve():
    system = _system()
    flat, mats = _precision(system)
    rhs = np.random.default_rng(1).normal(size=system.data.q)
    got = system.solve_flat(flat, rhs)
    want = np.zeros(system.data.q)
    for (_, _, cols), M in zip(system.groups, mats, strict=True):
        want[cols] = spd_solve(M, rhs[cols])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_cholesky_inverse_apply_against_numpy():
    system = _system()
    flat, mats = _precision(system)
    L, logdet, ok = system.cholesky_flat(flat)
    assert ok.all()
    Ls = system.split(L)
    start = 0
    for (_, ids, _), M, Lg in zip(system.groups, mats, Ls, strict=True):
        Lw, okw = checked_cholesky(M)
        assert okw.all()
        np.testing.assert_allclose(Lg, Lw, rtol=1e-12, atol=1e-15)
        ldw = 2.0 * np.log(np.diagonal(Lw, axis1=1, axis2=2)).sum(axis=1)
        np.testing.assert_allclose(logdet[start : start + len(ids)], ldw, rtol=1e-12)
        start += len(ids)
    pinv = system.split(system.inverse_flat(L))
    for Lg, Pi, M in zip(Ls, pinv, mats, strict=True):
        Li = _tri_inverse(Lg)
        np.testing.assert_allclose(Pi, np.swapaxes(Li, 1, 2) @ Li, rtol=1e-11, atol=1e-14)
        eye = np.broadcast_to(np.eye(M.shape[1]), M.shape)
        np.testing.assert_allclose(Pi @ M, eye, atol=1e-12)
    R = np.random.default_rng(2).normal(size=(system.data.q, 3))
    got = system.apply_flat(system.inverse_flat(L), R)
    want = np.zeros_like(R)
    for (_, _, cols), Pi in zip(system.groups, pinv, strict=True):
        want[cols] = Pi @ R[cols]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_block_that_does_not_factor_falls_back():
    """A block with a negative pivot: the solve goes back to :func:`spd_solve` (jittered
    factors) for every group, and the factor is :func:`checked_cholesky`'s, not ok."""
    system = _system()
    flat, mats = _precision(system)
    qs, ids, _ = system.groups[-1]
    M = mats[-1]
    M[0, 1, 1] = -1.0
    flat[system.offsets[len(system.groups) - 1] + qs + 1] = -1.0
    np.testing.assert_array_equal(flat, np.concatenate([Mg.ravel() for Mg in mats]))
    rhs = np.random.default_rng(1).normal(size=system.data.q)
    got = system.solve_flat(flat, rhs)
    want = np.zeros(system.data.q)
    for (_, _, cols), Mg in zip(system.groups, mats, strict=True):
        want[cols] = spd_solve(Mg, rhs[cols])
    np.testing.assert_array_equal(got, want)
    L, _, ok = system.cholesky_flat(flat)
    bad = np.flatnonzero(~ok)
    assert bad.size == 1 and system._blk_id[bad[0]] == ids[0]
    Lw, okw = checked_cholesky(M)
    assert not okw[0] and okw[1:].all()
    np.testing.assert_allclose(system.split(L)[-1], Lw, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("nu", [(0.7, 2.3), (5.0, 40.0)])
def test_conditional_mode_is_each_blocks_root(nu):
    """The modes solve each block's score equation and the log-determinants are each
    block's dense ones (numpy, block by block)."""
    system = _system()
    data = system.data
    beta = np.array([0.1, 0.4])
    nu = np.asarray(nu)
    mode = conditional_mode(system, beta, nu)
    assert mode.converged
    dinv = PriorPrecision(data, nu)
    eta = data.linear_fixed(beta) + data.Z @ mode.u
    _, r, h = data.loglik_terms(eta)
    grad = data.Z.T @ r - dinv.apply(mode.u)
    assert np.max(np.abs(grad)) < 1e-9
    Z = data.Z.toarray()
    for b in range(data.n_blocks):
        cols = np.arange(data.col_ptr[b], data.col_ptr[b + 1])
        rows = np.arange(data.obs_ptr[b], data.obs_ptr[b + 1])
        Zb = Z[np.ix_(rows, cols)]
        P = Zb.T @ (h[rows, None] * Zb) + np.diag(dinv.dinv[cols])
        np.testing.assert_allclose(mode.logdet_block[b], np.linalg.slogdet(P)[1],
                                   rtol=1e-12)
