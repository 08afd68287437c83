"""The scalar Rao-Blackwellized engine reads its observations level by level (issue 21).

The RB kernel (:mod:`glmm_sm.mcla.kernels.rb`) visits each integrated level's
observations in turn.  With a crossed design's rows in data order those rows lie anywhere
in the data, and at 10^6 rows every read was a random gather over about 100 MB.
:class:`glmm_sm.mcla.rb.engine.ObsOrder` renumbers the kernel's rows once, in the order it
visits them, so that:

* the kernel's rows are its visiting order: the rule's ``ro`` is ``0, 1, 2, ...`` and the
  free observations follow (the old code passed the layout's rows, in data order: this
  part fails there), and the permuted inputs are the data's rows;
* the users' row order changes nothing but the order of the additions within a level:
  value, gradient and Hessian on shuffled rows equal those on rows sorted by the
  integrated factor to 1e-12 relative, with frozen and with moving draws;
* the same draws give the same bits.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import statsmodels.api as sm
from numpy.random import SeedSequence

from glmm_sm import MonteCarloGLMM
from glmm_sm.laplace.step import conditional_mode
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.rb.engine import RBEngine
from glmm_sm.mcla.rb.split import RBSampler, RBStructure

BETA, NU = np.array([-0.2, 0.4]), np.array([0.7, 0.3])
N, N_G, N_H = 3000, 300, 12


def _data(seed=5):
    """Crossed Bernoulli rows: ``(1 | g)`` with loadings ``0.5 + U(0, 1)`` (a tenth of
    the rows on no ``g`` level), ``(0 + x2 | h)``."""
    rng = np.random.default_rng(seed)
    g, h = rng.integers(0, N_G, N), rng.integers(0, N_H, N)
    x1, x2 = rng.normal(size=N), rng.normal(size=N)
    has_g = rng.random(N) >= 0.1
    za = 0.5 + rng.random(N)
    eta = -0.3 + 0.5 * x1 + np.where(has_g, za * rng.normal(0, 0.9, N_G)[g], 0.0) \
        + x2 * rng.normal(0, 0.5, N_H)[h]
    y = (rng.random(N) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    return dict(g=np.where(has_g, g, N_G), h=h, x1=x1, x2=x2, za=za, y=y)


def _engine(d, rows, shift):
    """The engine on rows ``rows`` of ``d`` (64 draws, seed 3)."""
    d = {k: v[rows] for k, v in d.items()}
    has_g = d["g"] < N_G
    n = len(rows)
    Z = sp.csr_matrix((np.concatenate([d["za"][has_g], d["x2"]]),
                       (np.concatenate([np.flatnonzero(has_g), np.arange(n)]),
                        np.concatenate([d["g"][has_g], N_G + d["h"]]))),
                      shape=(n, N_G + N_H))
    X = np.column_stack([np.ones(n), d["x1"]])
    model = MonteCarloGLMM(d["y"], X, Z, np.r_[np.zeros(N_G, int), np.ones(N_H, int)],
                           family=sm.families.Binomial(), vcp_names=["g", "h"])
    system = model.block_system()
    mode = conditional_mode(system, BETA, NU)
    smp = RBSampler(system, np.r_[BETA, NU], mode, RBStructure(system.data), shift=shift)
    return RBEngine(DrawSet.from_sampler(smp, 64, SeedSequence(3)), n_jobs=1)


def _close(a, b, rel=1e-12):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.max(np.abs(a - b)) <= rel * max(np.max(np.abs(b)), 1.0)


def test_kernel_reads_rows_in_level_order():
    d = _data()
    rows = np.random.default_rng(1).permutation(N)
    eng = _engine(d, rows, shift=True)
    st, data = eng.structure, eng.data
    assert not np.all(np.diff(st.ro) > 0)  # the layout's rows: in data order
    blocks, rule, ev, _ = eng._inputs(np.r_[BETA, NU] * 1.01)
    n_int = len(st.ro)
    np.testing.assert_array_equal(rule.ro, np.arange(n_int))
    np.testing.assert_array_equal(blocks.free_obs, n_int + np.arange(len(st.free_obs)))
    # the kernel's row r is the layout's row the kernel visited r-th
    seq = np.concatenate([st.ro, st.free_obs])
    np.testing.assert_array_equal(ev.X[: len(seq)], eng._shift()[1][seq])
    np.testing.assert_array_equal(ev.wy[: len(seq)], data.wy[seq])
    np.testing.assert_array_equal(ev.xb[: len(seq)],
                                  data.linear_fixed(BETA * 1.01)[seq])
    Zk = sp.csr_matrix((ev.zval, ev.zidx, ev.zptr), shape=(N, data.q))
    Zl = sp.csr_matrix((data.zval, data.zidx, data.zptr), shape=(N, data.q))
    assert abs(Zk[: len(seq)] - Zl[seq]).max() == 0.0


@pytest.mark.parametrize("shift", [False, True])
def test_row_order_changes_only_rounding(shift):
    d = _data()
    by_g = np.argsort(d["g"], kind="stable")
    shuffled = np.random.default_rng(2).permutation(N)
    th = np.r_[BETA, NU] * 1.01
    a = _engine(d, by_g, shift).evaluate(th.copy(), 2)
    b = _engine(d, shuffled, shift).evaluate(th.copy(), 2)
    assert _close(b.value, a.value)
    assert _close(b.gradient, a.gradient)
    assert _close(b.hessian, a.hessian)


def test_same_draws_same_bits():
    d = _data()
    rows = np.random.default_rng(1).permutation(N)
    eng = _engine(d, rows, shift=True)
    th = np.r_[BETA, NU] * 1.01
    a = eng.evaluate(th.copy(), 2)
    twin = RBEngine(DrawSet.from_sampler(eng.sampler, 64, SeedSequence(3)), n_jobs=1)
    b = twin.evaluate(th.copy(), 2)
    assert a.value == b.value
    np.testing.assert_array_equal(a.gradient, b.gradient)
    np.testing.assert_array_equal(a.hessian, b.hessian)


def test_effect_cov_on_shuffled_rows():
    """:func:`~glmm_sm.mcla.rb.moments.rb_effect_cov` reads the engine's inputs: its
    quadrature takes layout rows, not the kernel's order (the same covariances on shuffled
    rows as on rows sorted by ``g``, to rounding)."""
    from glmm_sm.mcla.rb.moments import rb_effect_cov

    d = _data()
    th = np.r_[BETA, NU] * 1.01
    got = [rb_effect_cov(_engine(d, rows, True), th)[0]
           for rows in (np.argsort(d["g"], kind="stable"),
                        np.random.default_rng(2).permutation(N))]
    assert _close(got[1], got[0], 1e-10)
