"""The three-level fit's warm cost (issue 20, session 16): what changed, checked.

* The pilot round of a deep tree's fit (the first, centred at the Laplace fit; its estimate
  only centres the next round's rule) integrates every level with
  :data:`~glmm_sm.mcla.rb.round.PILOT_NODES` nodes, the top level's included (before: the
  top level kept :data:`~glmm_sm.mcla.rb.deep.DEEP_OUTER_NODES`; the first test fails on that
  code).  The fit takes the same rounds and its estimate moves by far less than the rounds'
  convergence criterion (0.03 SE) from the fit whose pilot keeps the top level's nodes
  (``sampler_options={"outer_nodes": DEEP_OUTER_NODES}``, the old pilot exactly: the other
  rounds' and the measurement's rules are the defaults).
* The levels above the leaves are integrated in one numba pass per level
  (:func:`~glmm_sm.mcla.kernels.rb_deep.parent_level`, which also sums the level below
  over each unit's children); here against the numpy sums they replaced (``np.add.reduceat``
  over the children, log-sum-exp over the level's nodes, Louis' identity), with the level
  below's scores and Hessians given in part of the coordinates (as the leaves' are).
"""

from __future__ import annotations

import math

import numpy as np
from test_nested_deep import FORMULA, _data3, _quiet

from glmm_sm import MonteCarloGLMM
from glmm_sm.fit.options import FitOptions
from glmm_sm.mcla.kernels.rb_deep import LevelRule, LevelSums, packed_pairs, parent_level
from glmm_sm.mcla.rb.deep import DEEP_NODES, DEEP_OUTER_NODES
from glmm_sm.mcla.rb.round import PILOT_NODES, rb_round, rb_structure


def _rule(mod, pilot, **rule):
    opts = FitOptions(sampler="quadrature", sampler_options=rule)
    st = rb_structure(mod, opts, mod.factorize, None)
    theta = np.r_[mod.fit_laplace().params]
    return rb_round(mod, st, theta, None, mod.factorize, 1, np.random.SeedSequence(0), opts,
                    1, pilot=pilot)[1].sampler


def test_the_pilot_round_of_a_deep_tree_takes_pilot_nodes_at_every_level():
    mod = MonteCarloGLMM.from_formula(FORMULA, data=_data3(), family="bernoulli")
    assert _rule(mod, True).K == [PILOT_NODES] * 3
    assert _rule(mod, False).K == [DEEP_OUTER_NODES, DEEP_NODES, DEEP_NODES]
    # nodes the user gave are kept in the pilot
    assert _rule(mod, True, outer_nodes=10, n_nodes=7).K == [10, 7, 7]


def test_the_fit_with_the_coarser_pilot_takes_the_same_rounds():
    d = _data3()
    fits = [_quiet(MonteCarloGLMM.from_formula(FORMULA, data=d, family="bernoulli").fit,
                   random_state=0, disp=False, sampler_options=so)
            for so in ({}, {"outer_nodes": DEEP_OUTER_NODES})]
    new, old = fits
    assert new.converged and old.converged
    assert [r["iterations"] for r in new.fit_log.rounds] == \
        [r["iterations"] for r in old.fit_log.rounds]
    se = np.asarray(old.bse)
    assert np.max(np.abs(np.asarray(new.params) - np.asarray(old.params)) / se) < 1e-3
    assert new.fit_log.quadrature["max_step_in_se"] < 0.1


def _numpy_level(rule, sums, K, d):
    """``parent_level``'s sums in numpy (the form the engine had before)."""
    n, P = rule.a.shape
    Q = P // K
    start = sums.ptr[:-1]
    sums = sums._replace(val=np.add.reduceat(sums.val, start, axis=0),
                         g=np.add.reduceat(sums.g, start, axis=0),
                         H=np.add.reduceat(sums.H, start, axis=0))
    F = (sums.val - 0.5 * math.log(2 * math.pi * rule.nu) - 0.5 * rule.a**2 / rule.nu
         + np.tile(rule.lw, (1, Q)))
    F3 = F.reshape(n, Q, K)
    mx = F3.max(axis=2, keepdims=True)
    w = np.exp(F3 - mx)
    tot = w.sum(axis=2, keepdims=True)
    val = (mx + np.log(tot))[:, :, 0]
    w = w / tot
    G = np.zeros((n, P, d))
    G[:, :, sums.gi] = sums.g.transpose(0, 2, 1)
    G[:, :, rule.pt] += -0.5 / rule.nu + 0.5 * rule.a**2 / rule.nu**2
    H = np.zeros((n, P, d, d))
    for o, (i, j) in enumerate(zip(sums.hi, sums.hj, strict=True)):
        H[:, :, i, j] = H[:, :, j, i] = sums.H[:, o]
    H[:, :, rule.pt, rule.pt] += 0.5 / rule.nu**2 - rule.a**2 / rule.nu**3
    G4, H5 = G.reshape(n, Q, K, d), H.reshape(n, Q, K, d, d)
    g = np.einsum("nqk,nqki->nqi", w, G4)
    Hn = (np.einsum("nqk,nqkij->nqij", w, H5) + np.einsum("nqk,nqki,nqkj->nqij", w, G4, G4)
          - g[..., :, None] * g[..., None, :])
    return val, g, Hn, w.reshape(n, P)


def test_parent_level_against_numpy():
    rng = np.random.default_rng(3)
    n, Q, K, p, T, t_leaf, t = 5, 4, 6, 2, 3, 2, 1
    d, P = p + T, Q * K
    coords = np.r_[np.arange(p), p + t_leaf]
    ij = np.array(packed_pairs(p + 1)).T
    rule = LevelRule(rng.normal(0, 0.8, (n, P)), rng.normal(size=(n, K)), 0.7, p + t)
    ptr = np.array([0, 1, 4, 6, 7, 10], dtype=np.int64)  # 1 to 3 children per unit
    nc = int(ptr[-1])
    sums = LevelSums(rng.normal(-2, 1, (nc, P)), rng.normal(size=(nc, p + 1, P)), coords,
                     rng.normal(size=(nc, ij.shape[1], P)), coords[ij[0]], coords[ij[1]], ptr)
    val, g = np.empty((n, Q)), np.empty((n, d, Q))
    H, cw = np.empty((n, d * (d + 1) // 2, Q)), np.empty((n, P))
    parent_level(rule, sums, val, g, H, cw)
    ref = _numpy_level(rule, sums, K, d)
    np.testing.assert_allclose(val, ref[0], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(cw, ref[3], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g.transpose(0, 2, 1), ref[1], rtol=1e-12, atol=1e-13)
    for o, (i, j) in enumerate(packed_pairs(d)):
        np.testing.assert_allclose(H[:, o], ref[2][:, :, i, j], rtol=1e-11, atol=1e-12)
    # without the Hessian (and the weights): the same value and score, to the bit
    val2, g2 = np.empty((n, Q)), np.empty((n, d, Q))
    parent_level(rule, sums._replace(H=np.empty((0, 0, 0))), val2, g2, np.empty((0, 0, 0)),
                 np.empty((0, 0)))
    assert np.array_equal(val2, val) and np.array_equal(g2, g)


def test_a_leaf_with_more_rows_than_one_product_takes():
    """The leaf kernel takes a Bernoulli row's ``log(1 + exp(-|eta|))`` as the log of a
    product over the leaf's rows, at most ``PRODUCT_ROWS`` factors (each up to 2) per log:
    a leaf of 2,500 answers (three logs; one product of them all would overflow) against
    the numpy sums of the family's own terms."""
    from test_nested_speed import _leaf_reference, leaf_rule, run_leaf

    from glmm_sm.mcla.kernels.rb_deep import PRODUCT_ROWS, LeafRows
    from glmm_sm.spec.families import BINOMIAL

    rng = np.random.default_rng(5)
    n_leaf, P, K, p, T, t = 2, 3, 4, 2, 3, 2
    sizes = np.array([5, 2500])
    assert sizes.max() > 2 * PRODUCT_ROWS and sizes.max() > 1030  # 2^1030 overflows
    ptr = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    n = int(ptr[-1])
    rule = leaf_rule(rng, n_leaf, P, K, 0.8, t)
    X = rng.normal(size=(n, p))
    e0 = 0.3 * rng.normal(size=(n, P)) + X[:, :1]
    wy = rng.binomial(1, 0.4, n).astype(float)
    rows = LeafRows(ptr, e0, np.ones(n), wy, np.ones(n), X)
    ref = _leaf_reference(BINOMIAL, rows, rule, P, K, p + T)
    out = run_leaf(BINOMIAL, rows, rule, (n_leaf, P, K, p + T), True)
    assert np.all(np.isfinite(out.val))
    np.testing.assert_allclose(out.val, ref[0], rtol=1e-12)
    np.testing.assert_allclose(out.cw, ref[3], rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(out.g, ref[1], rtol=1e-9, atol=1e-12 * np.abs(ref[1]).max())
    np.testing.assert_allclose(out.H, ref[2], rtol=1e-9, atol=1e-12 * np.abs(ref[2]).max())
