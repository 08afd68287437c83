"""The work of deterministic nested fits (issue 20: "faster than glmmTMB where the design is
a tree"), and that the faster routes compute the same numbers.

* A deterministic fit whose measured quadrature error asks for a finer rule refits from
  its estimate with that rule; the measurement placed exactly that rule at exactly that
  estimate, so the refit's first round takes the measurement's engine (and its evaluation
  there) instead of placing it again (``glmm_sm.fit.driver._refine_quadrature``): one
  rule placement per round plus one for the final measurement, and the same bits as a
  refit that places its first rule itself.
* :meth:`~glmm_sm.mcla.rb.split.RBSampler._per_block` places the linear rule of a nested
  block's levels (one sampled effect or none) all at once: the same ``m0``, ``s`` and
  coefficients as the level-by-level formula, written out here.
* The leaf level of a deep tree's nested rule
  (:func:`glmm_sm.mcla.kernels.rb_deep.leaf_level`) runs the paths of its ancestors'
  nodes in the inner loop (so that they vectorise; the nodes are read node-major):
  checked against a plain numpy evaluation of the same sums with the family's own
  per-observation terms (:meth:`~glmm_sm.spec.families.Family.obs_terms`)
  for the logit, log and probit links, with and without derivatives.
* A deterministic fit's rounds after the first find the joint conditional modes of their
  rule from the last rule's (fewer Newton iterations, the same modes to the solver's
  tolerance): the same fit to rounding.
* ``sampler="auto"`` says what falls back to importance sampling and why (neither the
  two-level rule nor the nested rule of a tree takes the design).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

import glmm_sm.fit.driver as driver
import glmm_sm.mcla.rb.round as rb_round_module
from glmm_sm import MonteCarloGLMM
from glmm_sm.fit.options import FitOptions
from glmm_sm.laplace.step import conditional_mode
from glmm_sm.mcla.kernels.rb_deep import (
    LeafOut,
    LeafRows,
    LeafRule,
    leaf_level,
    packed_pairs,
)
from glmm_sm.mcla.rb.round import rb_structure
from glmm_sm.mcla.rb.split import QuadratureSampler
from glmm_sm.spec.families import BINOMIAL, POISSON, Family

#: A rule too coarse for the design below: its measured error (0.39 SE) asks for one
#: finer rule (6 x 6 nodes), whose error (0.03 SE) is then acceptable.
COARSE = {"n_nodes": 3, "outer_nodes": 4}


def _data(seed=3, C=20, J=5, P=7):
    """Mothers (1 to 3 Bernoulli births) in communities, ``P`` covariates (the design of
    ``tests/test_quadrature_speed.py``, larger)."""
    rng = np.random.default_rng(seed)
    births = rng.integers(1, 4, C * J)
    mom = np.repeat(np.arange(C * J), births)
    comm = mom // J
    X = rng.normal(size=(mom.size, P))
    eta = (0.2 + X @ np.linspace(-0.5, 0.5, P) + rng.normal(0, 1.0, C)[comm]
           + rng.normal(0, 1.5, C * J)[mom])
    d = pd.DataFrame(X, columns=[f"x{j}" for j in range(P)])
    d["y"] = (rng.random(mom.size) < 1 / (1 + np.exp(-eta))).astype(float)
    d["comm"], d["mom"] = comm, mom
    return d


def _model(d=None):
    d = _data() if d is None else d
    rhs = " + ".join(c for c in d.columns if c.startswith("x"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MonteCarloGLMM.from_formula(f"y ~ {rhs} + (1 | comm) + (1 | mom)", data=d,
                                           family="bernoulli")


def _counted_fit(monkeypatch, model, reuse=True):
    """The default (deterministic) fit with :data:`COARSE` nodes, and the number of rules
    it placed (calls of ``rb_round``: each round's and each error measurement's)."""
    calls = []
    rb_round = driver.rb_round

    def counting(*args, **kwargs):
        calls.append(1)
        return rb_round(*args, **kwargs)

    monkeypatch.setattr(driver, "rb_round", counting)
    if not reuse:
        measure = driver._quadrature_error

        def no_engine(*args, **kwargs):
            got = measure(*args, **kwargs)
            return got if got is None else got._replace(engine=None, mode_u=None)

        monkeypatch.setattr(driver, "_quadrature_error", no_engine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit(random_state=0, disp=False, sampler_options=COARSE)
    monkeypatch.undo()
    return res, len(calls)


def test_refit_takes_the_error_measurements_engine(monkeypatch):
    model = _model()
    res, placed = _counted_fit(monkeypatch, model)
    q = res.fit_log.quadrature
    assert res.fit_log.sampler["used"] == "quadrature"
    assert len(q["refinements"]) == 1  # the design needs the finer rule once
    assert q["refinements"][0]["max_step_in_se"] > driver.QUADRATURE_TOL_SE
    assert q["max_step_in_se"] <= driver.QUADRATURE_TOL_SE and res.converged
    # one rule per round and one for the final measurement: the refit's first round did
    # not place again the rule the first measurement had placed at the same estimate
    assert placed == len(res.fit_log.rounds) + 1
    # ... and its numbers are those of a refit that places it itself
    res0, placed0 = _counted_fit(monkeypatch, model, reuse=False)
    assert placed0 == placed + 1
    assert len(res0.fit_log.rounds) == len(res.fit_log.rounds)
    np.testing.assert_array_equal(np.asarray(res.params), np.asarray(res0.params))
    np.testing.assert_array_equal(np.asarray(res.bse), np.asarray(res0.bse))
    assert res.llf == res0.llf
    assert res.fit_log.quadrature["step_in_se"] == res0.fit_log.quadrature["step_in_se"]


def test_refit_engine_is_the_finer_rule_at_the_estimate(monkeypatch):
    """The refit's first round starts at the estimate the measurement was taken at, with
    the measurement's (finer) nodes."""
    model = _model()
    seen = []
    make = driver._mcmle

    def spy(*args, **kwargs):
        if kwargs.get("first_rule") is not None:
            eng = kwargs["first_rule"].engine
            seen.append((np.asarray(kwargs["centre"]).copy(), eng.sampler.params.copy(),
                         len(eng.sampler.xs), eng.sampler.outer, dict(args[1].sampler_options)))
        return make(*args, **kwargs)

    monkeypatch.setattr(driver, "_mcmle", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit(random_state=0, disp=False, sampler_options=COARSE)
    monkeypatch.undo()
    assert len(seen) == len(res.fit_log.quadrature["refinements"]) == 1
    centre, placed_at, inner, outer, so = seen[0]
    np.testing.assert_array_equal(centre, placed_at)
    assert (inner, outer) == (so["n_nodes"], so["outer_nodes"]) == (6, 6)


def test_nested_levels_placed_at_once_match_the_formula():
    model = _model()
    opts = FitOptions(sampler="quadrature")
    system = model.block_system(model.factorize)
    structure = rb_structure(model, opts, model.factorize, None)
    theta = np.r_[np.zeros(model.k_fe), 1.0, 2.0]
    p = model.k_fe
    mode = conditional_mode(system, theta[:p], theta[p:])
    smp = QuadratureSampler(system, theta, mode, structure)
    assert len(system.groups), "the design's blocks go through the dense groups"
    L = structure.n_levels
    lev_of_col = np.full(system.data.q, -1)
    lev_of_col[structure.lev_col] = np.arange(L)
    m0, s = np.full(L, np.nan), np.full(L, np.nan)
    coef = {}
    for (_, ids, cols), Lc in zip(system.groups, mode.chol, strict=True):
        for g in range(len(ids)):
            cb = cols[g]
            Pb = Lc[g] @ Lc[g].T
            a_loc = np.flatnonzero(structure.is_a[cb])
            v_loc = np.flatnonzero(~structure.is_a[cb])
            assert v_loc.size <= 1
            for i in a_loc:
                lv = lev_of_col[cb[i]]
                s[lv] = 1.0 / math.sqrt(Pb[i, i])
                c = -Pb[i, v_loc] / Pb[i, i]
                m0[lv] = mode.u[cb[i]] - (c[0] * mode.u[cb[v_loc[0]]] if v_loc.size else 0.0)
                if v_loc.size and c[0] != 0.0:
                    coef[(lv, int(cb[v_loc[0]]))] = c[0]
    assert not np.isnan(m0).any()
    np.testing.assert_array_equal(smp.m0, m0)
    np.testing.assert_array_equal(smp.s, s)
    got = {}
    for lv in range(L):
        for k in range(smp.cptr[lv], smp.cptr[lv + 1]):
            got[(lv, int(smp.cidx[k]))] = smp.cval[k]
    assert got == coef


def _leaf_reference(family, rows, rule, P, K, d):
    """``leaf_level``'s sums in numpy: per leaf and path, the nodes' log weights, the
    log-sum, the posterior weights, and Louis' identity over the nodes."""
    n_leaf = rows.ptr.size - 1
    p = rows.X.shape[1]
    nu, jt = rule.nu, p + rule.t
    val = np.empty((n_leaf, P))
    g = np.zeros((n_leaf, P, d))
    H = np.zeros((n_leaf, P, d, d))
    cw = np.empty((n_leaf, P * K))
    for u in range(n_leaf):
        r = slice(rows.ptr[u], rows.ptr[u + 1])
        X = rows.X[r]
        for pi in range(P):
            a = rule.centre[u, pi] + rule.scale[u] * rule.z  # the leaf's K nodes
            eta = rows.e0[r, pi][None, :] + rows.z[r][None, :] * a[:, None]  # (K, rows)
            ll, rr, cc = family.obs_terms(eta, rows.wy[r][None, :], rows.wn[r][None, :])
            F = (rule.lw[u] - 0.5 * math.log(2 * math.pi * nu) - 0.5 * a * a / nu
                 + ll.sum(axis=1))
            val[u, pi] = np.logaddexp.reduce(F)
            w = np.exp(F - val[u, pi])
            cw[u, pi * K : (pi + 1) * K] = w
            G = np.zeros((K, d))
            G[:, :p] = rr @ X
            G[:, jt] = -0.5 / nu + 0.5 * a * a / nu**2
            Hk = np.zeros((K, d, d))
            Hk[:, :p, :p] = -np.einsum("kr,ri,rj->kij", cc, X, X)
            Hk[:, jt, jt] = 0.5 / nu**2 - a * a / nu**3
            gm = w @ G
            g[u, pi] = gm
            # the scores' covariance about their mean (sum_k w_k G_k G_k' - g g' in exact
            # arithmetic; in floating point that difference loses H_k wherever one node
            # takes all the weight and the scores are large, as at a log-link mean of e^150)
            Gc = G - gm
            H[u, pi] = np.einsum("k,kij->ij", w, Hk + Gc[:, :, None] * Gc[:, None, :])
    return val, g, H, cw


def leaf_rule(rng, n_leaf, P, K, nu, t, spread=1.0):
    """A :class:`LeafRule` of the sampler's form: each leaf's nodes at path ``pi`` are
    ``centre[u, pi] + scale[u] z_k`` (``z`` the standard Gauss-Hermite nodes), node-major;
    ``spread``: the centres' scale."""
    z = math.sqrt(2.0) * np.polynomial.hermite.hermgauss(K)[0]
    centre = spread * rng.normal(size=(n_leaf, P))
    scale = rng.uniform(0.3, 1.5, n_leaf)
    return LeafRule(rng.normal(size=(n_leaf, K)), nu, t, centre, scale, z)


def run_leaf(family, rows, rule, shape, derivs, hessian=True):
    """:func:`leaf_level`'s output for ``rows`` under ``rule``; ``shape`` is ``(n_leaf, P,
    K, d)``.  The score and Hessian in all ``d`` coordinates, ``(n_leaf, P, d)`` and
    ``(n_leaf, P, d, d)`` (the kernel's are in ``beta`` and the leaves' variance only, paths
    fastest, the Hessian's lower triangle packed: ``packed_pairs``); no Hessian without
    ``hessian``."""
    n_leaf, P, K, d = shape
    p = rows.X.shape[1]
    e = p + 1
    hessian = bool(derivs and hessian)
    out = LeafOut(np.empty((n_leaf, P)),
                  np.empty((n_leaf, e, P) if derivs else (0, 0, 0)),
                  np.empty((n_leaf, e * (e + 1) // 2, P) if hessian else (0, 0, 0)),
                  np.empty((n_leaf, P * K)))
    leaf_level(family.kernel, rows, rule, out, bool(derivs), hessian)
    if not derivs:
        return out
    coords = np.r_[np.arange(p), p + rule.t]
    g = np.zeros((n_leaf, P, d))
    g[:, :, coords] = out.g.transpose(0, 2, 1)
    H = np.zeros((n_leaf, P, d, d)) if hessian else None
    if hessian:
        for o, (i, j) in enumerate(packed_pairs(e)):
            H[:, :, coords[i], coords[j]] = H[:, :, coords[j], coords[i]] = out.H[:, o]
    return out._replace(g=g, H=H)


@pytest.mark.parametrize("family", [BINOMIAL, POISSON, Family("binomial", 0, "probit")],
                         ids=["logit", "poisson", "probit"])
def test_leaf_level_against_numpy(family):
    rng = np.random.default_rng(7)
    n_leaf, P, K, p, T, t = 9, 4, 6, 3, 3, 1
    d = p + T
    sizes = rng.integers(1, 5, n_leaf)
    ptr = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    n = int(ptr[-1])
    wn = rng.integers(1, 4, n).astype(float) if family.code == 0 else np.ones(n)
    wy = rng.binomial(wn.astype(int), 0.4).astype(float) if family.code == 0 else \
        rng.poisson(2.0, n).astype(float)
    rows = LeafRows(ptr, 0.5 * rng.normal(size=(n, P)), rng.choice([1.0, 0.5, -0.8], n), wy,
                    wn, rng.normal(size=(n, p)))
    rule = leaf_rule(rng, n_leaf, P, K, 0.7, t)
    ref = _leaf_reference(family, rows, rule, P, K, d)
    full = run_leaf(family, rows, rule, (n_leaf, P, K, d), True)
    for derivs, hessian in ((True, True), (True, False), (False, False)):
        out = run_leaf(family, rows, rule, (n_leaf, P, K, d), derivs, hessian)
        np.testing.assert_allclose(out.val, ref[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out.cw, ref[3], rtol=1e-11, atol=1e-14)
        if derivs:
            np.testing.assert_allclose(out.g, ref[1], rtol=1e-10, atol=1e-11)
            # the score without the Hessian: the same operations, the same bits
            np.testing.assert_array_equal(out.g, full.g)
            np.testing.assert_array_equal(out.val, full.val)
        if hessian:
            np.testing.assert_allclose(out.H, ref[2], rtol=1e-10, atol=1e-11)


def test_fallback_reason_says_what_falls_back():
    """``sampler="auto"`` importance-samples a design neither rule takes, and says why for
    both (nesting of any depth is integrated; the reason no longer says "deeper than two
    levels")."""
    from glmm_sm.mcla.rb.round import resolve_sampler

    rng = np.random.default_rng(1)
    # crossed: every a with every b (two components, not nested)
    a, b = np.repeat(np.arange(12), 10), np.tile(np.arange(10), 12)
    d = pd.DataFrame({"y": rng.integers(0, 2, a.size).astype(float), "a": a, "b": b})
    # three components, the third crossed with the second within the first
    d["s"] = d["a"] // 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crossed = MonteCarloGLMM.from_formula("y ~ 1 + (1 | a) + (1 | b)", data=d,
                                              family="bernoulli")
        three = MonteCarloGLMM.from_formula("y ~ 1 + (1 | s) + (1 | a) + (1 | b)", data=d,
                                            family="bernoulli")
    for model, why in ((crossed, "fewer than three components"),
                       (three, "not nested")):
        used, reason = resolve_sampler(model, FitOptions())
        assert used == "laplace"
        assert "deeper than two levels" not in reason
        assert "not a nesting tree of depth 3 or more" in reason and why in reason
        assert reason.endswith("importance sampling")


def test_rounds_start_their_modes_from_the_last_rule(monkeypatch):
    """Each round after the first places its rule with joint conditional modes found by
    Newton's method from the last rule's (``_RoundState._warm_mode``): the same modes to
    the solver's tolerance, so the same fit to rounding, from fewer Newton iterations."""
    model = _model()
    starts = []
    solve = rb_round_module.conditional_mode  # called by centre_mode for every rule placed

    def spy(*args, **kwargs):
        starts.append(kwargs.get("u0") is not None)
        return solve(*args, **kwargs)

    monkeypatch.setattr(rb_round_module, "conditional_mode", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit(random_state=0, disp=False)
    monkeypatch.undo()
    rounds = len(res.fit_log.rounds)
    assert res.fit_log.sampler["used"] == "quadrature" and rounds >= 2
    assert "refinements" not in res.fit_log.quadrature
    # round 0 has the Laplace fit's modes; rounds 1.. start from the round before's;
    # the error measurement places its rule from 0 (as a fresh set-up does)
    assert starts == [True] * (rounds - 1) + [False]
    monkeypatch.setattr(driver._RoundState, "_warm_mode", lambda self, centre: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cold = model.fit(random_state=0, disp=False)
    monkeypatch.undo()
    se = np.asarray(cold.bse)
    assert len(cold.fit_log.rounds) == rounds
    assert np.max(np.abs(np.asarray(res.params) - np.asarray(cold.params)) / se) < 1e-9
    np.testing.assert_allclose(np.asarray(res.bse), se, rtol=1e-9)

