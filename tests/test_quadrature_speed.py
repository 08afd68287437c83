"""The work a deterministic nested fit does (issue 20: guPrenat "faster than glmmTMB").

* The RB kernel takes a level's node covariance of the scores through its observations'
  residuals where that costs fewer operations (:func:`glmm_sm.mcla.kernels.rb._low_rank`:
  few observations per level, many fixed effects): the beta score of a node is
  ``sum_r X_r rr_r + m alpha``, so the node covariance is ``A' Sigma A`` with ``Sigma`` the
  small covariance of the residuals, and with several draws per tile it is weighted once
  per tile (``A' (sum_t w_t Sigma_t) A``, :func:`~glmm_sm.mcla.kernels.rb._deferred_cov`).
  On a design that takes that path (7 covariates, 1 to 3 births per mother) the gradient
  and Hessian are still the exact derivatives of the value (central differences), by
  either route (weighted per tile or per draw), and the two routes agree to rounding.
* The outer modes (:meth:`~glmm_sm.mcla.rb.split.QuadratureSampler._outer_mode`) integrate
  again only the blocks whose Newton step is not done: fewer level integrations than
  kernel calls times levels (the modes themselves are checked against the independent
  ``tests/aghq_nested.py`` by ``tests/test_nested_recentre.py``).
* A deterministic fit's rounds stop once the estimate moves by less than 0.1 SE and no
  less than half the round before's movement (the rule's resolution; the error check
  that follows measures it), and only then: not while the movement still shrinks, not
  above 0.1 SE, never for a Monte Carlo fit (``_RoundState._record``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from glmm_sm import MonteCarloGLMM
from glmm_sm.core.random import as_seed_sequence
from glmm_sm.laplace.step import conditional_mode
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.kernels import rb as rb_kernel
from glmm_sm.mcla.rb.engine import RBEngine
from glmm_sm.mcla.rb.split import QuadratureSampler, RBStructure

P = 7  # covariates besides the intercept


def _data(seed=3, C=12, J=4):
    rng = np.random.default_rng(seed)
    births = rng.integers(1, 4, C * J)  # 1 to 3 births per mother
    mom = np.repeat(np.arange(C * J), births)
    comm = mom // J
    X = rng.normal(size=(mom.size, P))
    eta = (0.2 + X @ np.linspace(-0.5, 0.5, P) + rng.normal(0, 1.0, C)[comm]
           + rng.normal(0, 1.5, C * J)[mom])
    d = pd.DataFrame(X, columns=[f"x{j}" for j in range(P)])
    d["y"] = (rng.random(mom.size) < 1 / (1 + np.exp(-eta))).astype(float)
    d["comm"], d["mom"] = comm, mom
    return d


def _model(d):
    rhs = " + ".join(f"x{j}" for j in range(P))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MonteCarloGLMM.from_formula(f"y ~ {rhs} + (1 | comm) + (1 | mom)", data=d,
                                           family="bernoulli")


def _sampler(mod, theta, n_nodes=8, outer_nodes=10):
    system = mod.block_system(mod.factorize)
    st = RBStructure(mod.layout_data(mod.factorize))
    p = mod.k_fe
    mode = conditional_mode(system, theta[:p], theta[p:])
    return QuadratureSampler(system, theta, mode, st, n_nodes=n_nodes,
                             outer_nodes=outer_nodes)


def _theta(mod):
    return np.r_[0.2, np.linspace(-0.5, 0.5, P), 1.0, 2.25]


@pytest.fixture(scope="module")
def engine():
    mod = _model(_data())
    smp = _sampler(mod, _theta(mod))
    return RBEngine(DrawSet.from_sampler(smp, smp.outer, as_seed_sequence(0)))


def _per_draw(eng):
    """The engine with the per-draw route (no per-tile residual covariances kept)."""
    data, st = eng.data, eng.structure
    lens = np.diff(st.lev_ptr)

    def state():
        return rb_kernel.make_state(rb_kernel.TILE, len(eng.sampler.xs), data.k_fe,
                                    data.k_vc, st.n_levels, int(lens.max()), data.k_fam)

    eng._state = state
    return eng


def test_the_design_takes_the_residual_route(engine):
    st, p = engine.structure, engine.data.k_fe
    K = len(engine.sampler.xs)
    lens = np.diff(st.lev_ptr)
    assert p == P + 1 and lens.min() == 1 and lens.max() == 3
    assert all(rb_kernel._low_rank(0, int(n), K, p) for n in lens)
    assert engine._state().sgl.shape[0] > 0  # weighted once per tile


@pytest.mark.parametrize("route", ["per tile", "per draw"])
def test_residual_route_has_exact_derivatives(engine, route):
    mod_theta = _theta(None)
    eng = engine if route == "per tile" else _per_draw(RBEngine(engine.draws))
    theta = mod_theta * np.r_[1.1, np.full(P, 0.9), 1.2, 0.85]  # away from the centre
    ev = eng.evaluate(theta)
    k = len(theta)
    g_fd, H_fd = np.zeros(k), np.zeros((k, k))
    for j in range(k):
        h = 1e-5 * max(1.0, abs(theta[j]))
        e = np.zeros(k)
        e[j] = h
        up, dn = eng.evaluate(theta + e), eng.evaluate(theta - e)
        g_fd[j] = (up.value - dn.value) / (2 * h)
        H_fd[:, j] = (up.gradient - dn.gradient) / (2 * h)
    np.testing.assert_allclose(ev.gradient, g_fd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ev.hessian, 0.5 * (H_fd + H_fd.T), rtol=1e-4, atol=1e-5)


def test_the_two_routes_agree_to_rounding(engine):
    theta = _theta(None) * 1.05
    a = engine.evaluate(theta)
    b = _per_draw(RBEngine(engine.draws)).evaluate(theta)
    assert a.value == pytest.approx(b.value, rel=1e-13)
    np.testing.assert_allclose(a.gradient, b.gradient, rtol=1e-10, atol=1e-10)
    scale = np.abs(a.hessian).max()
    np.testing.assert_allclose(a.hessian, b.hessian, rtol=0, atol=1e-11 * scale)


def test_outer_modes_integrate_only_the_blocks_still_moving(monkeypatch):
    import glmm_sm.mcla.rb.split as split

    sizes = []
    real = split.recentre_levels

    def counted(fam, lv, e0, xs, logw, centre, scale, out):
        sizes.append(centre.shape[0])
        return real(fam, lv, e0, xs, logw, centre, scale, out)

    mod = _model(_data(seed=5, C=30, J=4))
    monkeypatch.setattr(split, "recentre_levels", counted)
    smp = _sampler(mod, _theta(mod), n_nodes=12, outer_nodes=20)
    monkeypatch.undo()
    L = smp.structure.n_levels
    assert len(smp.adapted) == mod.layout_data(mod.factorize).n_blocks
    assert smp.outer_evaluations > 3
    # every call is counted (the iterations' and the final one at the modes) ...
    assert len(sizes) == smp.outer_evaluations + 1
    assert sum(sizes) == smp.outer_level_integrations
    # ... and the calls after the first Newton steps integrate fewer than all levels
    # (blocks whose step is done drop out)
    assert sizes[0] == sizes[-1] == L
    assert min(sizes) < L
    again = _sampler(mod, _theta(mod), n_nodes=12, outer_nodes=20)
    np.testing.assert_array_equal(again.u_hat, smp.u_hat)  # deterministic


def _record(sampler, moved_before, step_se):
    """``_RoundState._record`` of a round whose estimate moved ``step_se`` SEs from its
    centre (SE 1: Hessian ``-I``, no Monte Carlo error) after a round that moved
    ``moved_before`` (in the driver's units, MOVE_FLOOR_SE of an SE)."""
    from scipy.optimize import OptimizeResult

    from glmm_sm.fit.driver import _RoundState
    from glmm_sm.fit.options import FitLog, FitOptions
    from glmm_sm.mcla.engine import Evaluation

    k = 3
    st = object.__new__(_RoundState)
    st.opts = FitOptions(sampler=sampler)
    st.centre = np.zeros(k)
    st.prev_mcse = np.zeros(k)
    st.m = 20
    st.outcome = None  # no round before this one (as __init__ sets it)
    st.log = FitLog()
    st.log.rounds.append({"moved": moved_before})
    ev = Evaluation(value=0.0, gradient=np.zeros(k), hessian=-np.eye(k),
                    score_var=np.zeros((k, k)), ess=np.array([np.inf]),
                    block_values=np.zeros(1))
    res = OptimizeResult(success=True, nit=1, status=0, message="", n_nonfinite=0)
    theta = np.r_[step_se, 0.0, 0.0]
    info, _, _ = st._record(1, theta, res, ev, 0.0)
    return info


def test_deterministic_rounds_stop_at_the_rules_resolution():
    # moved 0.05 SE after 0.06 SE: no longer shrinking, below QUADRATURE_TOL_SE: stop
    info = _record("quadrature", 6.0, 0.05)
    assert info["stalled"] and info["converged"]
    # still shrinking (0.05 after 0.5 SE), or above 0.1 SE: go on
    assert not _record("quadrature", 50.0, 0.05)["converged"]
    assert not _record("quadrature", 12.0, 0.11)["converged"]
    # a Monte Carlo fit's rounds are not judged so
    assert not _record("laplace", 6.0, 0.05)["converged"]
    # below 3 (combined MCSE or 1% of an SE): converged as before, not "stalled"
    info = _record("quadrature", 6.0, 0.02)
    assert info["converged"] and not info["stalled"]
