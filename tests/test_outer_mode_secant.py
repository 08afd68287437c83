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


def _model(seed=1, C=40, J=8):
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


@pytest.fixture(scope="module", params=[1, 2])
def sampler(request):
    mod = _model(seed=request.param)
    theta = np.r_[-0.5, 0.3, 13.7, 306.0]  # guPrenat's Laplace variances
    system = mod.block_system(mod.factorize)
    st = RBStructure(mod.layout_data(mod.factorize))
    mode = conditional_mode(system, theta[:2], theta[2:])
    return QuadratureSampler(system, theta, mode, st, n_nodes=12, outer_nodes=20)


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
