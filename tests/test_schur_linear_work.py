"""The Schur-factored Laplace pieces of a crossed block at a cost linear in its rows (issue 21).

:class:`glmm_sm.laplace.step.SchurFactor` factors a crossed block (many levels ``a`` of one
component, a few other effects ``v``) through its Schur complement.  Two of its steps ran
once per Laplace evaluation (or per Newton step of the conditional modes) with a cost that
grew faster than the rows on the crossed benchmark of ``benchmarks/bench_scale.py``:

* ``build`` formed ``B = Z_a' diag(h) Z_v`` and ``Z_v' diag(h) Z_v`` by sparse products,
  which gather over the ``a`` levels at random (cache misses once the levels outgrow the
  caches); now one weighted count over the nonzeros of ``Z_v`` on a pattern found once
  (:class:`~glmm_sm.laplace.step.SchurProducts`).
* ``leverage`` (``z_i' P^{-1} z_i`` per row) made one triangular solve with ``L`` per row
  (``n_v^2`` flops each); now ``L^{-1} B' diag(1/d)`` (``n_v x n_a``, the same array
  :meth:`~glmm_sm.laplace.step.SchurFactor.inv_diag` uses) is solved once and each row
  gathers its level's column: ``O(n_v^2 n_a + n_v nonzeros)``.

Checked here: the products and both leverage paths against dense algebra on a design whose
rows load on two ``v`` columns and some on no ``a`` level; that the leverages no longer make
a triangular solve per row (the number of right-hand sides is at most ``n_a + n_v``: on the
former code it was the number of rows); and that the Laplace fit's estimate is the one of
the dense factor.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import statsmodels.api as sm

import glmm_sm.laplace.step as step
from glmm_sm import MonteCarloGLMM
from glmm_sm.laplace.step import BlockSystem, conditional_mode, laplace_fit


def crossed_two_v(n, n_g, n_h, seed=3, free_share=0.1):
    """``(1 | g) + (1 | h) + (0 + x2 | h)`` as independent scalar components, loadings on
    ``g`` of ``0.5 + U(0, 1)``, a share ``free_share`` of the rows on no ``g`` level."""
    rng = np.random.default_rng(seed)
    g, h = rng.integers(0, n_g, n), rng.integers(0, n_h, n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    has_g = rng.random(n) >= free_share
    za = 0.5 + rng.random(n)
    rows = np.concatenate([np.flatnonzero(has_g), np.arange(n), np.arange(n)])
    cols = np.concatenate([g[has_g], n_g + h, n_g + n_h + h])
    vals = np.concatenate([za[has_g], np.ones(n), x2])
    Z = sp.csr_matrix((vals, (rows, cols)), shape=(n, n_g + 2 * n_h))
    u = np.concatenate([rng.normal(0, 0.9, n_g), rng.normal(0, 0.5, n_h),
                        rng.normal(0, 0.3, n_h)])
    eta = -0.3 + 0.5 * x1 + Z @ u
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    X = np.column_stack([np.ones(n), x1])
    ident = np.r_[np.zeros(n_g, int), np.ones(n_h, int), np.full(n_h, 2)]
    return MonteCarloGLMM(y, X, Z, ident, family=sm.families.Binomial(),
                          vcp_names=["g", "h", "h:x2"])


BETA, NU = np.array([-0.2, 0.4]), np.array([0.7, 0.3, 0.2])


@pytest.fixture(scope="module")
def crossed():
    data = crossed_two_v(900, 90, 6).layout_data()
    system = BlockSystem(data, schur_min_q=1)
    assert len(system.schur) == 1 and system.schur[0].v_cols.size == 12
    mode = conditional_mode(system, BETA, NU)
    assert mode.converged
    return data, system, mode


def _close(a, b, rtol):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = max(float(np.max(np.abs(b))), 1e-300)
    assert np.max(np.abs(a - b)) <= rtol * scale, (np.max(np.abs(a - b)), scale)


def test_products_match_the_sparse_products(crossed):
    data, system, mode = crossed
    sb = system.schur[0]
    eta = data.linear_fixed(BETA) + data.Z @ mode.u
    hb = data.loglik_terms(eta)[2][sb.row0 : sb.row1]
    Hv = sb.Zv.multiply(hb[:, None])
    n_v = sb.v_cols.size
    B = sb.products.b_matrix(hb, n_v)
    assert B.has_sorted_indices
    _close(B.toarray(), (sb.Za.T @ Hv).toarray(), 1e-14)
    _close(sb.products.vv_matrix(hb, n_v), (sb.Zv.T @ Hv).toarray(), 1e-14)
    # two v columns per row: the pairs include the off-diagonal ones
    assert np.count_nonzero(sb.products.vv_matrix(hb, n_v) - np.diag(np.diag(
        sb.products.vv_matrix(hb, n_v)))) > 0


@pytest.mark.parametrize("dense_av", [True, False])
def test_leverage_against_the_dense_inverse(crossed, monkeypatch, dense_av):
    """Both paths (the solved ``B' diag(1/d)`` gathered per row; the row-chunked solves
    where that array would be too large) give ``z_i' P^{-1} z_i`` of the dense ``P``."""
    data, system, mode = crossed
    if not dense_av:
        monkeypatch.setattr(step, "SCHUR_DENSE_AV", 0)
    monkeypatch.setattr(step, "SCHUR_CHUNK_ROWS", 128)  # several chunks
    sb, fac = system.schur[0], mode.schur[0]
    Pinv = np.linalg.inv(fac.dense())
    Zb = data.Z[sb.row0 : sb.row1][:, sb.cols].toarray()
    _close(fac.leverage(sb), np.einsum("ij,jk,ik->i", Zb, Pinv, Zb), 1e-11)
    _close(fac.inv_diag(), np.diag(Pinv), 1e-11)


def test_leverage_makes_no_solve_per_row(crossed, monkeypatch):
    """The leverages' triangular solves have at most ``n_a + n_v`` right-hand sides in
    all (the former code: one per row, 900 here, against 90 + 12)."""
    _, system, mode = crossed
    sb = system.schur[0]
    fac = step.SchurFactor.build(sb, *_weights(crossed))
    seen = []
    real = step._tri_solve

    def counted(L, B, trans=False):
        seen.append(B.shape[-1])
        return real(L, B, trans)

    monkeypatch.setattr(step, "_tri_solve", counted)
    lev = fac.leverage(sb)
    n_v = sb.v_cols.size
    assert sum(seen) <= sb.n_a + n_v < sb.row1 - sb.row0
    monkeypatch.setattr(step, "_tri_solve", real)
    _close(lev, mode.schur[0].leverage(sb), 1e-12)


def _weights(crossed):
    """``(h, dinv)`` at the fixture's conditional modes."""
    from glmm_sm.laplace.prior import PriorPrecision

    data, _, mode = crossed
    eta = data.linear_fixed(BETA) + data.Z @ mode.u
    return data.loglik_terms(eta)[2], PriorPrecision(data, NU).dinv


def test_laplace_fit_matches_the_dense_factor():
    """The Laplace estimate through the Schur path is the dense factor's."""
    data = crossed_two_v(900, 90, 6).layout_data()
    fs = laplace_fit(BlockSystem(data, schur_min_q=1))
    fd = laplace_fit(BlockSystem(data, schur_min_q=None))
    assert fs.ok and fd.ok
    _close(fs.params, fd.params, 1e-6)
    assert abs(fs.value - fd.value) <= 1e-9 * abs(fd.value)
