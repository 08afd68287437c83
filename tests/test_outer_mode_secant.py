"""The outer modes of the deterministic nested rule are roots of the rule's own score
(issue 20: guPrenat's first rules spun in Newton's method).

:meth:`~glmm_sm.mcla.rb.split.QuadratureSampler._outer_mode` finds each community's mode
by Newton's method on the score of its integrated density, the mothers integrated by rules
re-centred at every value of the community effect.  The score (the node mean of the
mothers' scores) and the curvature (Louis' node variance) are each other's derivative only
as far as the inner rule is exact: with a large mother variance (306, guPrenat's Laplace
start) and 1 to 4 concordant births per mother, the measured slope of the score was a few
percent of the curvature, Newton's steps shrank by a constant factor, and 50 iterations
left blocks 0.2-0.75 SD from the root (guPrenat's first rule: 175 kernel calls, 5 blocks
still moving).  Where the slope over the last step is off the curvature by more than
``SECANT_SWITCH`` the step is now the secant's: every block reaches the root, so a second
call started there does not move it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from glmm_sm import MonteCarloGLMM
from glmm_sm.laplace.step import conditional_mode
from glmm_sm.mcla.rb.split import QuadratureSampler, RBStructure


def mothers_model(seed=1, C=40, J=8):
    """Mothers of 1 to 4 births in communities, mother SD 6 (most mothers concordant)."""
    rng = np.random.default_rng(seed)
    births = rng.integers(1, 5, C * J)
    mom = np.repeat(np.arange(C * J), births)
    comm = mom // J
    x = rng.normal(size=mom.size)
    eta = -0.5 + 0.3 * x + rng.normal(0, 2.0, C)[comm] + rng.normal(0, 6.0, C * J)[mom]
    y = (rng.random(mom.size) < 1 / (1 + np.exp(-eta))).astype(float)
    d = pd.DataFrame({"y": y, "x": x, "comm": comm, "mom": mom})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MonteCarloGLMM.from_formula("y ~ x + (1 | comm) + (1 | mom)", data=d,
                                           family="bernoulli")


def quadrature_sampler(mod, theta, **kw):
    """The 12 x 20 node ``QuadratureSampler`` of ``mod`` at ``theta`` (from the joint
    conditional modes)."""
    system = mod.block_system(mod.factorize)
    st = RBStructure(mod.layout_data(mod.factorize))
    mode = conditional_mode(system, theta[:2], theta[2:])
    return QuadratureSampler(system, theta, mode, st, n_nodes=12, outer_nodes=20, **kw)


@pytest.fixture(scope="module", params=[1, 2])
def sampler(request):
    theta = np.r_[-0.5, 0.3, 13.7, 306.0]  # guPrenat's Laplace variances
    return quadrature_sampler(mothers_model(seed=request.param), theta)


def test_every_block_is_adapted(sampler):
    assert len(sampler.adapted) == sampler.data.n_blocks
    assert sampler.recentre_failures == 0


def test_the_outer_modes_are_roots_of_the_score(sampler):
    vcol = np.array([c[0] for c in sampler.v_cols])
    sd = np.array([r[0, 0] for r in sampler.v_root])
    u0 = sampler.u_hat[vcol].copy()
    lv, zv = sampler._levels()
    xb = sampler.data.linear_fixed(sampler.params[:sampler.data.k_fe])
    # Newton's method started at the modes found: every step is below its tolerance
    # (1e-7 SD) at once, nothing moves
    sampler._outer_mode(lv, zv, xb)
    moved = np.abs(sampler.u_hat[vcol] - u0) / sd
    assert moved.max() < 1e-6
    assert sampler.outer_evaluations == 1


def test_blocks_placed_at_once_are_the_per_block_formulas(sampler):
    """``RBSampler._per_block`` places the blocks of one size with one sampled effect at
    once (``_blocks_one_sampled``): the same numbers as each block's dense formulas,
    ``s_a = P_aa^{-1/2}``, ``c_a = -P_av / P_aa``, ``m0_a = u_a - c_a u_v`` and the sampled
    effect's marginal root ``((P^{-1})_vv)^{1/2}``."""
    system = sampler.system
    data, st = system.data, sampler.structure
    p = data.k_fe
    mode = conditional_mode(system, sampler.params[:p], sampler.params[p:])
    sampler._per_block(system, mode, data)
    lev_of_col = np.full(data.q, -1)
    lev_of_col[st.lev_col] = np.arange(st.n_levels)
    m0, s = np.full(st.n_levels, np.nan), np.full(st.n_levels, np.nan)
    C = np.zeros((st.n_levels, data.q))
    for (_, ids, cols), Lc in zip(system.groups, mode.chol, strict=True):
        for g, b in enumerate(ids):
            cb = cols[g]
            Pb = Lc[g] @ Lc[g].T
            (v,) = np.flatnonzero(~st.is_a[cb])
            for i in np.flatnonzero(st.is_a[cb]):
                lv = lev_of_col[cb[i]]
                s[lv] = 1.0 / np.sqrt(Pb[i, i])
                c = -Pb[i, v] / Pb[i, i]
                m0[lv] = sampler.u_hat[cb[i]] - c * sampler.u_hat[cb[v]]
                C[lv, cb[v]] = c
            root = np.sqrt(np.linalg.inv(Pb)[v, v])
            assert sampler.v_cols[b].tolist() == [cb[v]]
            assert sampler.v_root[b].shape == (1, 1)
            assert sampler.v_root[b][0, 0] == root
            assert sampler.v_half_logdet[b] == -np.log(root)
    np.testing.assert_array_equal(sampler.s, s)
    np.testing.assert_array_equal(sampler.m0, m0)
    got = np.zeros_like(C)
    for lv in range(st.n_levels):
        k = slice(sampler.cptr[lv], sampler.cptr[lv + 1])
        got[lv, sampler.cidx[k]] = sampler.cval[k]
    np.testing.assert_array_equal(got, C)
