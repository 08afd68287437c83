"""The sampled effects' proposal of a Rao-Blackwellized round: the Laplace approximation of
their integrated density (``glmm_sm.mcla.rb.proposal``).

* Its log density is the one the kernel's importance weights target: for every draw,
  ``log g(v_k) - (log w_k + log f~(v_k))`` is one constant (Bernoulli, binomial with trials,
  Poisson, and observations that load on no integrated level).
* Its gradient and Hessian are the exact derivatives of the quadrature sum (finite
  differences, with the nodes held in place).
* The proposal sits at the mode (gradient 0) and gives more effective draws than the joint
  Laplace marginal it replaces.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from glmm_sm import MonteCarloGLMM
from glmm_sm.core.random import as_seed_sequence
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.rb import proposal
from glmm_sm.mcla.rb.engine import RBEngine
from glmm_sm.mcla.rb.proposal import _Target, integrated_laplace
from glmm_sm.mcla.rb.split import RBSampler, RBStructure

KINDS = ["bernoulli", "binomial", "poisson", "free", "blocks"]


def _model(kind, n_subj=40, n_item=6, seed=3):
    rng = np.random.default_rng(seed)
    subj = np.repeat(np.arange(n_subj), n_item)
    item = np.tile(np.arange(n_item), n_subj)
    x = rng.normal(size=subj.size)
    eta = -0.3 + 0.5 * x + rng.normal(0, 1.0, n_subj)[subj] + rng.normal(0, 0.7, n_item)[item]
    if kind == "blocks":
        # Two experiments, each with its own subjects and items, and a third with fewer
        # items: three split blocks whose sampled parts differ in size (padding).
        item = item + n_item * (subj >= n_subj // 2) + n_item * (subj >= 3 * n_subj // 4)
        item[(subj >= 3 * n_subj // 4) & (item % n_item >= 4)] -= 2
    d = pd.DataFrame({"x": x, "subj": subj, "item": item})
    # "free": the subject effect loads on a random half of the observations only (z = 0
    # elsewhere), so the other half load on no integrated level.
    d["z"] = (rng.random(subj.size) < 0.5).astype(float) if kind == "free" else 1.0
    if kind == "poisson":
        d["y"] = rng.poisson(np.exp(0.5 * eta))
        family, lhs = "poisson", "y"
    elif kind == "binomial":
        n = rng.integers(1, 5, subj.size)
        d["y"] = rng.binomial(n, 1 / (1 + np.exp(-eta)))
        d["f"] = n - d["y"]
        family, lhs = "binomial", "y + f"
    else:
        d["y"] = (rng.random(subj.size) < 1 / (1 + np.exp(-eta))).astype(int)
        family, lhs = "bernoulli", "y"
    term = "(0 + z | subj)" if kind == "free" else "(1 | subj)"
    return MonteCarloGLMM.from_formula(f"{lhs} ~ x + {term} + (1 | item)", data=d,
                                       family=family)


def _sampler(kind, integrated=False):
    mod = _model(kind)
    params, _, mode = mod._laplace_estimate()
    system = mod.block_system()
    st = RBStructure(system.data)
    assert np.sum(st.split >= 0) == (3 if kind == "blocks" else 1)
    return RBSampler(system, params, mode, st, integrated=integrated), params


@pytest.mark.parametrize("kind", KINDS)
def test_integrated_density_is_what_the_kernel_weights_target(kind):
    smp, params = _sampler(kind)
    if kind == "free":
        assert smp.structure.free_obs.size > 0
    eng = RBEngine(DrawSet.from_sampler(smp, 200, as_seed_sequence(5)), n_jobs=1)
    lw = np.concatenate(list(eng.iter_log_weights(params)), axis=1)
    U, logf, _, j0, j1 = eng.draws.chunk_arrays(0, eng.m)
    target = _Target(smp, params)
    diffs = []
    for k in range(j0, j1, 10):
        V = np.zeros_like(target.start)
        V.flat[target.vpos] = U[target.vcols, k]
        f = target.derivatives(V)[0]
        b = target.blocks
        diffs.append(f - lw[b, k - j0] - logf[b, k])
    diffs = np.array(diffs)
    assert np.ptp(diffs, axis=0).max() < 1e-9 * np.abs(diffs).max()


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_and_hessian_are_the_derivatives_of_the_quadrature_sum(kind):
    smp, params = _sampler(kind)
    smp.cval[:] = 0.0  # nodes that do not move with v: the formulas are then exact
    target = _Target(smp, params)
    rng = np.random.default_rng(1)
    V = target.start + 0.3 * rng.standard_normal(target.start.shape) * target.mask
    f, g, H = target.derivatives(V)
    h = 1e-5
    for k, n in enumerate(target.n_v):
        g_fd, H_fd = np.zeros(n), np.zeros((n, n))
        for a in range(n):
            E = np.zeros_like(V)
            E[k, a] = h
            fp, gp, _ = target.derivatives(V + E)
            fm, gm, _ = target.derivatives(V - E)
            # A block's value and gradient do not depend on another block's effects.
            assert np.array_equal(np.delete(fp, k), np.delete(f, k))
            g_fd[a] = (fp[k] - fm[k]) / (2 * h)
            H_fd[:, a] = (gp[k, :n] - gm[k, :n]) / (2 * h)
        assert np.max(np.abs(g_fd - g[k, :n])) < 1e-6 * max(1.0, np.abs(g).max())
        assert np.max(np.abs(H_fd - H[k, :n, :n])) < 1e-6 * np.abs(H).max()


@pytest.mark.parametrize("kind", KINDS)
def test_proposal_sits_at_the_mode_of_the_integrated_density(kind):
    smp, params = _sampler(kind)
    out = integrated_laplace(smp, params)
    target = _Target(smp, params)
    assert set(out) == {int(b) for b in target.blocks}
    V = np.zeros_like(target.start)
    for k, b in enumerate(target.blocks):
        V[k, :target.n_v[k]] = out[int(b)][0]
    f, g, H = target.derivatives(V)
    for k, b in enumerate(target.blocks):
        n = target.n_v[k]
        cov = out[int(b)][1]
        assert np.allclose(cov @ -H[k, :n, :n], np.eye(n), atol=1e-8)
        # The remaining Newton step is far below the proposal's SD.
        assert np.all(np.abs(cov @ g[k, :n]) < 1e-6 * np.sqrt(np.diag(cov)))
    # Moving the centre off the mode lowers log g.
    assert np.all(target.derivatives(V + 0.05 * target.mask)[0] < f)


def test_integrated_proposal_gives_more_effective_draws_than_the_joint_laplace():
    mod = _model("bernoulli", n_subj=150, n_item=12)
    params, _, mode = mod._laplace_estimate()
    system = mod.block_system()
    st = RBStructure(system.data)
    ess = {}
    for integrated in (False, True):
        smp = RBSampler(system, params, mode, st, integrated=integrated)
        assert bool(smp.adapted) == integrated
        eng = RBEngine(DrawSet.from_sampler(smp, 2000, as_seed_sequence(2)), n_jobs=1)
        ess[integrated] = float(eng.evaluate(params).ess.max())
    assert ess[True] > 0.9 * 2000 > ess[False]


@pytest.mark.parametrize("kind", KINDS)
def test_newton_stops_once_the_predicted_error_is_below_tolerance(kind, monkeypatch):
    """Newton's method stops after a full step whose successor, predicted from the
    quadratic contraction of the last two steps (``size^3 / before^2`` SDs), is below
    ``NEWTON_TOL``: the step it did not take is measured there and is below the
    tolerance, the same bound the step-size rule alone ensured (it took that step too).
    The stop saves that step's derivatives and changes the proposal by less than it."""
    smp, params = _sampler(kind)
    calls = []
    derivatives = proposal._Target.derivatives

    def counted(self, V):
        calls.append(1)
        return derivatives(self, V)

    monkeypatch.setattr(proposal._Target, "derivatives", counted)
    out = integrated_laplace(smp, params)
    n_new = len(calls)
    target = _Target(smp, params)
    for k, b in enumerate(target.blocks):
        n = target.n_v[k]
        V = np.zeros_like(target.start)
        V[k, :n] = out[int(b)][0]
        _, g, H = target.derivatives(V)
        left = np.linalg.solve(-H[k, :n, :n], g[k, :n])
        assert np.all(np.abs(left) <= proposal.NEWTON_TOL * np.sqrt(np.diag(out[int(b)][1])))
    # the rule of steps alone (every block's step below NEWTON_TOL) takes one more
    monkeypatch.setattr(proposal, "_left_after", lambda size, before: np.full(size.shape,
                                                                              np.inf))
    calls.clear()
    ref = integrated_laplace(smp, params)
    assert n_new == len(calls) - 1
    for b in ref:
        sd = np.sqrt(np.diag(ref[b][1]))
        assert np.all(np.abs(out[b][0] - ref[b][0]) <= proposal.NEWTON_TOL * sd)
        np.testing.assert_allclose(out[b][1], ref[b][1], rtol=1e-5)


def test_left_after_is_the_quadratic_prediction():
    size, before = np.array([1e-2, 0.0, 3e-3]), np.array([1.0, 0.5, 0.0])
    np.testing.assert_array_equal(proposal._left_after(size, before),
                                  [1e-6, 0.0, np.inf])
