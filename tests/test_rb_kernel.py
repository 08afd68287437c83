"""The Rao-Blackwellized kernel against a direct numpy evaluation of the same formula.

Each draw's log weight is written out from MCLA_SPEC section 12.2 with numpy (exact
``log1p``, ``exp``, divisions and ``logsumexp``): the sampled effects' prior and proposal,
the free observations, and per integrated level the log of its Gauss-Hermite sum.  The
kernel's shortcuts (products of ``1 + exp(-|eta|)`` instead of logs, factorized
exponentials, division-free reciprocals) must agree to rounding, on every path it takes:
Bernoulli levels (unit weights), binomial levels with trials (weighted), Poisson, and
levels long enough for the products to be folded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import logsumexp

from glmm_sm import MonteCarloGLMM
from glmm_sm.core.constants import HALF_LOG2PI
from glmm_sm.core.random import as_seed_sequence
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.kernels.rb import FOLD
from glmm_sm.mcla.rb.engine import RBEngine
from glmm_sm.mcla.rb.split import RBSampler, RBStructure


def _data(kind, n_subj, n_item, seed=7):
    rng = np.random.default_rng(seed)
    subj = np.repeat(np.arange(n_subj), n_item)
    item = np.tile(np.arange(n_item), n_subj)
    x = rng.normal(size=subj.size)
    eta = (-0.4 + 0.6 * x + rng.normal(0, 1.2, n_subj)[subj] + rng.normal(0, 0.5, n_item)[item])
    d = pd.DataFrame({"x": x, "subj": subj, "item": item})
    if kind == "poisson":
        d["y"] = rng.poisson(np.exp(0.3 * eta))
    elif kind == "binomial":
        n = rng.integers(1, 6, subj.size)
        d["y"] = rng.binomial(n, 1 / (1 + np.exp(-eta)))
        d["f"] = n - d["y"]
    else:
        d["y"] = (rng.random(subj.size) < 1 / (1 + np.exp(-eta))).astype(int)
    return d


def _model(kind, n_subj, n_item):
    d = _data(kind, n_subj, n_item)
    lhs = "y + f" if kind == "binomial" else "y"
    family = {"poisson": "poisson", "binomial": "binomial"}.get(kind, "bernoulli")
    return MonteCarloGLMM.from_formula(lhs + " ~ x + (1 | subj) + (1 | item)", data=d,
                                       family=family)


def _loglik(kind, eta, wy, wn):
    if kind == "poisson":
        return wy * eta - wn * np.exp(eta)
    return wy * eta - wn * np.logaddexp(0.0, eta)


def _reference_log_weights(kind, eng, params):
    """Every draw's log weight from the formula, with numpy (draws that do not move)."""
    data, st, smp = eng.data, eng.structure, eng.sampler
    p = data.k_fe
    beta, nu = params[:p], params[p:]
    lognu = np.log(nu)
    U, logf, S, j0, j1 = eng.draws.chunk_arrays(0, eng.m)
    U, logf, S = U[:, j0:j1], logf[:, j0:j1], S[:, :, j0:j1]
    import scipy.sparse as sp

    Z = sp.csr_matrix((data.zval, data.zidx, data.zptr), shape=(len(data.wy), data.q))
    xb = data.linear_fixed(beta)
    eta0 = xb[:, None] + Z[:, ~st.is_a] @ U[~st.is_a]  # n x m
    out = np.zeros((data.n_blocks, eng.m))
    for b in range(data.n_blocks):
        qbt = st.qbt_sampled[b]
        const = -HALF_LOG2PI * qbt.sum() - 0.5 * qbt @ lognu
        lw = const - logf[b] - 0.5 * (S[b] / nu[:, None]).sum(axis=0)
        free = st.free_obs[st.free_bptr[b]:st.free_bptr[b + 1]]
        lw = lw + _loglik(kind, eta0[free], data.wy[free, None], data.wn[free, None]).sum(0)
        for a in range(st.lev_bptr[b], st.lev_bptr[b + 1]):
            rows = st.ro[st.lev_ptr[a]:st.lev_ptr[a + 1]]
            z = st.za[st.lev_ptr[a]:st.lev_ptr[a + 1]]
            tc = st.lev_comp[a]
            c0, c1 = smp.cptr[a], smp.cptr[a + 1]
            mu = smp.m0[a] + smp.cval[c0:c1] @ U[smp.cidx[c0:c1]]  # per draw
            alpha = mu[None, :] + smp.s[a] * smp.xs[:, None]  # K x m
            lq = (smp.logw[:, None] + np.log(smp.s[a]) - HALF_LOG2PI - 0.5 * lognu[tc]
                  - 0.5 * alpha**2 / nu[tc])
            for i, zi in zip(rows, z, strict=True):
                lq = lq + _loglik(kind, eta0[i][None, :] + zi * alpha, data.wy[i], data.wn[i])
            lw = lw + logsumexp(lq, axis=0)
        out[b] = lw
    return out


@pytest.mark.parametrize("kind, n_subj, n_item", [
    ("bernoulli", 60, 8),       # unit weights: products and factorized exponentials
    ("binomial", 60, 8),        # trials: the weighted path
    ("poisson", 60, 8),
    ("bernoulli", 4, 2 * FOLD + 10),  # levels of 522 observations: the products are folded
])
def test_log_weights_and_value_match_a_numpy_evaluation(kind, n_subj, n_item):
    mod = _model(kind, n_subj, n_item)
    params, _, mode = mod._laplace_estimate()
    system = mod.block_system()
    subj = list(mod.vcp_names).index("subj")
    st = RBStructure(system.data, split=np.full(system.data.n_blocks, subj))
    assert st.n_levels == n_subj
    assert np.diff(st.lev_ptr).max() == n_item
    smp = RBSampler(system, params, mode, st, shift=False)
    eng = RBEngine(DrawSet.from_sampler(smp, 100, as_seed_sequence(3)), n_jobs=1)
    th = params * np.r_[np.ones(mod.k_fe) + 0.05, 1.3 * np.ones(len(params) - mod.k_fe)]
    ref = _reference_log_weights(kind, eng, th)
    fresh = np.concatenate(list(eng.iter_log_weights(th)), axis=1)  # rb_log_weights
    ev = eng.evaluate(th)
    kept = np.concatenate(list(eng.iter_log_weights(th)), axis=1)  # from rb_chunk_sums
    scale = np.abs(ref).max()
    assert np.max(np.abs(fresh - ref)) < 1e-12 * scale
    assert np.array_equal(kept, fresh)
    value = sum(logsumexp(r) - np.log(eng.m) for r in ref)
    assert abs(ev.value - value) < 1e-12 * scale


def test_kept_log_weights_equal_a_fresh_pass():
    """The log weights an evaluation keeps (used for the Pareto k) are bit for bit those of
    a separate kernel pass, moving draws included."""
    mod = _model("bernoulli", 60, 8)
    params, _, mode = mod._laplace_estimate()
    system = mod.block_system()
    smp = RBSampler(system, params, mode, RBStructure(system.data))
    eng = RBEngine(DrawSet.from_sampler(smp, 300, as_seed_sequence(4)), chunk_size=128,
                   n_jobs=2)
    th = params + 0.05
    eng.evaluate(th)
    kept = list(eng.iter_log_weights(th))
    eng._log_weights = None
    fresh = list(eng.iter_log_weights(th))
    assert len(kept) == len(fresh) == len(eng.ranges)
    assert all(np.array_equal(a, b) for a, b in zip(kept, fresh, strict=True))
