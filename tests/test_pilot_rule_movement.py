"""Issue 21: the round after a Rao-Blackwellized pilot measures its movement under one rule.

The pilot round (the first, centred at the Laplace fit) integrates with ``PILOT_NODES``
Gauss-Hermite nodes; the next round with ``N_NODES``.  The coarser rule shifts the pilot's
estimate by an amount that does not shrink with the data, while the Monte Carlo errors do:
at 10^6 rows of ``benchmarks/bench_scale.py``'s crossed design that shift alone exceeded
3 combined MCSEs and cost a third round.  The same mechanism shows on a small design whose
levels have few rows and a large variance (the coarse rule's error per level is larger):
3,000 levels of 4 Bernoulli rows, ``var(g) = 3``.  There the movement across the two rules
is about 13 combined MCSEs, and the movement between the pilot's draws and the next
round's, both under the full rule, about 0.2.

The check's Newton step to the full rule's maximum on the pilot's draws takes the rules'
difference from the proposal's centre draw alone (``RBEngine.centre_probe``); it is
compared here with the step from every pilot draw under the full rule (the check before,
one evaluation of all the draws).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, multivariate_t
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from test_rb_kernel import _model, _reference_log_weights

import glmm_sm.fit.driver as driver
from glmm_sm import MonteCarloGLMM
from glmm_sm.core.random import as_seed_sequence
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.rb.engine import RBEngine
from glmm_sm.mcla.rb.round import PILOT_NODES
from glmm_sm.mcla.rb.split import N_NODES, RBSampler, RBStructure


def _few_rows(n_g=3000, per=4, n_h=20, vg=3.0, vh=0.3, seed=1):
    rng = np.random.default_rng(seed)
    n = n_g * per
    g = np.repeat(np.arange(n_g), per)
    h = rng.integers(0, n_h, n)
    x = rng.normal(size=n)
    eta = (-0.2 + 0.6 * x + rng.normal(0, math.sqrt(vg), n_g)[g]
           + rng.normal(0, math.sqrt(vh), n_h)[h])
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return MonteCarloGLMM.from_formula("y ~ x1 + (1 | g) + (1 | h)",
                                       data=pd.DataFrame({"y": y, "x1": x, "g": g, "h": h}),
                                       family="bernoulli")


@pytest.fixture(scope="module")
def few_rows_fit():
    """The fit, and the check's step beside the one from every pilot draw under the full
    rule (``pilot_draws``: step and movement, in the check's units)."""
    mod = _few_rows()
    checked = {}
    check = driver._RoundState._pilot_rule_moved

    def both(state, rnd, engine, theta, ref):
        got = check(state, rnd, engine, theta, ref)
        if got is not None:
            prev, centre = state.outcome.engine, state.centre
            ev = prev.with_nodes(len(engine.sampler.xs)).evaluate(centre)
            step = np.linalg.solve(-ev.hessian, ev.gradient)
            pilot = state.outcome.evaluation
            dg, dH = _probe_difference(prev, centre, len(engine.sampler.xs))
            checked.update(
                ref=ref, step_full=step, moved_full=float(np.max(np.abs(
                    theta - centre - step) / ref)),
                step=np.linalg.solve(-(pilot.hessian + dH), pilot.gradient + dg))
        return got

    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as mp:
        warnings.simplefilter("ignore", ConvergenceWarning)
        mp.setattr(driver._RoundState, "_pilot_rule_moved", both)
        res = mod.fit(random_state=0, disp=False, n_jobs=1)
    return mod, res, checked


def _probe_difference(engine, params, nodes):
    """The gradient and Hessian of the centre draw under ``nodes`` less under the engine's
    rule."""
    probe = engine.centre_probe()
    fine, coarse = probe.with_nodes(nodes).evaluate(params), probe.evaluate(params)
    return fine.gradient - coarse.gradient, fine.hessian - coarse.hessian


def _engine(n_nodes, m=100, seed=3):
    mod = _model("bernoulli", 60, 8)
    params, _, mode = mod._laplace_estimate()
    system = mod.block_system()
    smp = RBSampler(system, params, mode, RBStructure(system.data), shift=False,
                    n_nodes=n_nodes)
    return params, RBEngine(DrawSet.from_sampler(smp, m, as_seed_sequence(seed)), n_jobs=1)


def test_with_own_nodes_is_the_same_engine():
    params, eng = _engine(N_NODES)
    th = params + 0.05
    a = eng.evaluate(th)
    b = eng.with_nodes(N_NODES).evaluate(th)
    assert a.value == b.value
    assert np.array_equal(a.gradient, b.gradient) and np.array_equal(a.hessian, b.hessian)


def test_with_nodes_sums_the_levels_by_the_other_rule():
    """The twin's rule is the ``PILOT_NODES``-point Gauss-Hermite rule of a standard
    normal (its weights integrate 1 and z^2 exactly), on the same draws, and its value is
    the formula's (numpy) with that rule; the original engine keeps its own."""
    params, eng = _engine(N_NODES)
    twin = eng.with_nodes(PILOT_NODES)
    xs, logw = twin.sampler.xs, twin.sampler.logw
    assert xs.size == PILOT_NODES and eng.sampler.xs.size == N_NODES
    w = np.exp(logw - 0.5 * xs**2) / math.sqrt(2 * math.pi)  # the normal density's rule
    np.testing.assert_allclose([w.sum(), w @ xs**2, w @ xs**4], [1.0, 1.0, 3.0], rtol=1e-12)
    assert twin.draws is eng.draws
    th = params * np.r_[1.05, 1.05, 1.3, 1.3]
    ref = _reference_log_weights("bernoulli", twin, th)
    value = sum(logsumexp(r) - np.log(twin.m) for r in ref)
    ev = twin.evaluate(th)
    assert abs(ev.value - value) < 1e-12 * np.abs(ref).max()
    own = _reference_log_weights("bernoulli", eng, th)
    assert abs(eng.evaluate(th).value - sum(logsumexp(r) - np.log(eng.m) for r in own)) \
        < 1e-12 * np.abs(own).max()
    assert abs(ev.value - eng.evaluate(th).value) > 1e-8  # the rules differ here


def test_the_pilot_rule_does_not_cost_a_round(few_rows_fit):
    """On the small design the movement across the two rules asks for another round, the
    movement under one rule does not, and the fit stops after 2 rounds (3 before)."""
    _, res, _ = few_rows_fit
    rounds = res.fit_log.rounds
    assert res.converged and len(rounds) == 2
    check = rounds[1]["pilot_rule"]
    assert check["nodes"] == PILOT_NODES and check["probe"] == "centre draw"
    assert check["moved_across_rules"] > 3.0  # the mechanism is present
    assert rounds[1]["moved"] == check["moved"] <= 3.0


def test_stopping_there_agrees_with_a_fit_without_a_coarse_pilot(few_rows_fit):
    """The estimate the fit stops at is the full rule's MCMLE: a fit whose first round
    already uses the full rule (``n_nodes`` given) agrees within 3.5 combined MCSEs."""
    mod, res, _ = few_rows_fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        full = mod.fit(random_state=1, disp=False, n_jobs=1,
                       sampler_options={"n_nodes": N_NODES})
    assert full.converged
    assert all("pilot_rule" not in q for q in full.fit_log.rounds)
    se = np.hypot(res.mcse(), full.mcse())
    assert np.all(np.abs(np.asarray(res.params) - np.asarray(full.params)) < 3.5 * se)


def test_the_centre_draw_step_agrees_with_every_pilot_draw(few_rows_fit):
    """The check's step (the pilot's Hessian and gradient with the rules' difference at
    the centre draw) lands within ``PILOT_STOP_STEP`` combined MCSEs of the step from every
    pilot draw under the full rule, per parameter, and so does the movement: the pilot's
    own estimate is located only to that tolerance (its optimizer stops there), so the
    check is not asked to be finer.  The shift itself is many times larger (about 13)."""
    _, res, checked = few_rows_fit
    ref, step, full = checked["ref"], checked["step"], checked["step_full"]
    assert np.max(np.abs(full) / ref) > 5.0  # the rules' shift, measured
    assert np.max(np.abs(step - full) / ref) <= driver.PILOT_STOP_STEP
    moved = res.fit_log.rounds[1]["pilot_rule"]["moved"]
    assert abs(moved - checked["moved_full"]) <= driver.PILOT_STOP_STEP


def test_centre_probe_is_one_draw_at_the_proposal_centre():
    """The probe's one draw is the proposal's centre (sampled effects at ``u_hat``,
    integrated rows 0) with its log density there, the engine's own rule and order; its
    value under its rule is the formula's (numpy) for that draw."""
    params, eng = _engine(N_NODES)
    probe = eng.centre_probe()
    assert probe.m == 1 and probe.sampler is eng.sampler
    assert probe._obs_order is eng._obs_order and eng.draws.m == 100
    U = probe.draws.all_draws().U[:, 0]
    smp = eng.sampler
    sampled = np.concatenate([c for c in smp.v_cols if c.size])
    np.testing.assert_array_equal(U[sampled], smp.u_hat[sampled])
    assert np.count_nonzero(np.delete(U, sampled)) == 0
    th = params * np.r_[1.05, 1.05, 1.3, 1.3]
    ref = _reference_log_weights("bernoulli", probe, th)
    assert abs(probe.evaluate(th).value - sum(r[0] for r in ref)) < 1e-12 * np.abs(ref).max()
    # the draw's log density is the proposal's at its centre: the normal and t mixture
    b = next(b for b, c in enumerate(smp.v_cols) if c.size)
    cols, root = smp.v_cols[b], smp.v_root[b]
    cov = root @ root.T
    mix = np.logaddexp(
        np.log1p(-smp.t_weight) + multivariate_normal(smp.u_hat[cols], cov).logpdf(
            smp.u_hat[cols]),
        np.log(smp.t_weight) + multivariate_t(smp.u_hat[cols], cov, df=smp.df).logpdf(
            smp.u_hat[cols]))
    assert abs(probe.draws.all_draws().logf[b, 0] - mix) < 1e-10 * abs(mix)


def test_without_a_centre_probe_the_pilot_draws_are_evaluated(monkeypatch):
    """Where the engine gives no centre probe, the check evaluates every pilot draw under
    the full rule (the step the probe's is compared with above), and the fit stops after
    2 rounds all the same."""
    monkeypatch.setattr(RBEngine, "centre_probe", lambda self: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = _few_rows().fit(random_state=0, disp=False, n_jobs=1)
    rounds = res.fit_log.rounds
    assert res.converged and len(rounds) == 2
    check = rounds[1]["pilot_rule"]
    assert check["probe"] == "pilot draws" and check["moved_across_rules"] > 3.0
    assert rounds[1]["moved"] == check["moved"] <= 3.0
