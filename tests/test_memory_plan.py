"""``memory_budget`` holds for a fit's whole evaluation, not only its stored draws.

:mod:`glmm_sm.mcla.memory` counts, by component, what an evaluation holds beyond the data
(draws, their generation, the chunk arrays, the kernels' work arrays per thread, the
partial sums, the diagnostics, the chunk bookkeeping); a fit whose plan cannot fit
``memory_budget`` even with its draws regenerated is refused before the Laplace fit, with
the bytes by component and what to ask instead.  The old check counted the stored draws
only: a crossed design whose Rao-Blackwellized kernel alone needs more than the budget ran
anyway (``test_crossed_fit_refused_below_kernel_working_set``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from glmm_sm import MonteCarloGLMM
from glmm_sm.core.random import as_seed_sequence
from glmm_sm.fit import driver
from glmm_sm.fit.options import FitOptions
from glmm_sm.laplace.step import laplace_fit
from glmm_sm.mcla.draws import DEFAULT_MEMORY_BUDGET, GEN_SIZE, DrawSet, bytes_needed, chunk_width
from glmm_sm.mcla.rb.round import rb_round, rb_structure

N, G_LEVELS, H_LEVELS = 50_000, 5_000, 20


def _crossed(n=N, g_levels=G_LEVELS, seed=5):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, g_levels, n)
    h = rng.integers(0, H_LEVELS, n)
    x1 = rng.normal(size=n)
    eta = (-0.2 + 0.6 * x1 + rng.normal(0, math.sqrt(0.8), g_levels)[g]
           + rng.normal(0, math.sqrt(0.3), H_LEVELS)[h])
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    d = pd.DataFrame({"y": y, "x1": x1, "g": g, "h": h})
    return MonteCarloGLMM.from_formula("y ~ x1 + (1 | g) + (1 | h)", data=d,
                                       family=sm.families.Binomial())


@pytest.fixture(scope="module")
def crossed():
    return _crossed()


@pytest.fixture(scope="module")
def intercept():
    rng = np.random.default_rng(21)
    n, groups = 20_000, 500
    g = rng.integers(0, groups, n)
    x1 = rng.normal(size=n)
    eta = -0.5 + 0.7 * x1 + rng.normal(size=groups)[g]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return MonteCarloGLMM.from_formula("y ~ x1 + (1 | g)",
                                       data=pd.DataFrame({"y": y, "x1": x1, "g": g}),
                                       family=sm.families.Binomial())


def _no_laplace(*args, **kwargs):
    raise AssertionError("the fit reached the Laplace step: the refusal must come first")


def test_crossed_fit_refused_below_kernel_working_set(crossed, monkeypatch):
    """A budget that holds the draws but not the Rao-Blackwellized kernel's working set is
    refused up front, naming memory_budget and the kernel.  The old code counted the
    draws only and ran the fit."""
    m = 64
    data = crossed.layout_data(crossed.factorize)
    budget = bytes_needed(data, m, squares=False) + 1  # the stored draws fit
    monkeypatch.setattr(driver, "laplace_fit", _no_laplace)
    with pytest.raises(ValueError, match=r"memory_budget=[\d,]+ bytes cannot hold") as e:
        crossed.fit(m=m, rao_blackwell=True, n_jobs=1, memory_budget=budget, disp=False,
                    random_state=1, max_rounds=1)
    msg = str(e.value)
    assert "kernel" in msg and "rb engine" in msg and "Give memory_budget >=" in msg

    from glmm_sm.mcla.memory import fit_plan

    opts = FitOptions(m=m, sampler="laplace", rao_blackwell=True, n_jobs=1,
                      memory_budget=budget)
    st = rb_structure(crossed, opts, crossed.factorize, None, notes=[])
    plan = fit_plan(data, st, opts, m, 1)
    assert plan.kernel > budget > plan.draws and not plan.stored
    assert f"{plan.total:,}" in msg


def test_state_bytes_count_the_allocated_work_arrays():
    """``state_bytes`` / ``work_bytes`` are the bytes ``make_state`` / ``make_work``
    allocate (the same shapes), for the deferred and the negative binomial layouts too."""
    from glmm_sm.mcla.kernels.rb import make_state, state_bytes
    from glmm_sm.mcla.kernels.rb_vector import make_work, work_bytes

    for args in [(64, 12, 2, 2, 1000, 30, 0, 500), (16, 6, 3, 1, 10, 5, 1, 10),
                 (27, 12, 2, 2, 99_997, 45, 0, 99_997)]:
        assert state_bytes(*args) == sum(a.nbytes for a in make_state(*args))
    for args in [(2, 3, 2, 49, 1000, 300, 50), (3, 3, 2, 16, 10, 4, 3)]:
        work = make_work(*args)
        assert work_bytes(*args) == sum(a.nbytes for a in work if isinstance(a, np.ndarray))


def test_rb_plan_components(crossed):
    """Each component of a Rao-Blackwellized round's plan against its formula; the kernel
    term is what the round's engine allocates per thread (its ``_state``) plus the
    evaluation's inputs."""
    from glmm_sm.mcla.kernels.rb import state_bytes, tile_width
    from glmm_sm.mcla.memory import RB_SAMPLER_COPIES, TAIL_COPIES, fit_plan
    from glmm_sm.mcla.partials import N_PARTITIONS
    from glmm_sm.mcla.rb.split import N_NODES
    from glmm_sm.mcla.tails import TAIL_SLICE, tail_size

    m, jobs = 400, 2
    opts = FitOptions(m=m, sampler="laplace", rao_blackwell=True, n_jobs=jobs)
    data = crossed.layout_data(crossed.factorize)
    st = rb_structure(crossed, opts, crossed.factorize, None, notes=[])
    plan = fit_plan(data, st, opts, m, jobs)
    q, B, S, p, n = data.q, data.n_blocks, data.n_s, data.k_fe, data.X.shape[0]
    d = p + S
    K = min(chunk_width(data, DEFAULT_MEMORY_BUDGET), m)
    n_chunks = -(-m // K)
    Jt = min(jobs, n_chunks)
    lens = np.diff(st.lev_ptr)
    one = state_bytes(min(tile_width(st.n_levels), m), N_NODES, p, S, st.n_levels,
                      int(lens.max()), 0, int(np.diff(st.lev_bptr).max()))
    inputs = 8 * (n * (2 * p + 1) + 2 * q * p)
    # the rows in the kernel's order: the arrays ObsOrder keeps, its inverse permutation
    # (while it is built), X beta + offset gathered per evaluation, the shifted design's copy
    from glmm_sm.mcla.rb.engine import ObsOrder

    order = ObsOrder(data, st)
    kept = sum(getattr(order, a).nbytes for a in ("perm", "ro", "free_obs", "X", "wy", "wn",
                                                  "zptr", "zidx", "zval"))
    inputs += kept + 8 * n + 8 * n + 8 * n * p
    assert plan.engine == "rb" and plan.stored and plan.chunk == K
    assert plan.draws == bytes_needed(data, m, squares=False) == 8 * m * (q + B)
    assert plan.generation == RB_SAMPLER_COPIES * 8 * m * (q + B * (1 + S))
    assert plan.chunks == Jt * 8 * K * (q + B * (2 * S + 3 + p))
    assert plan.kernel == Jt * one + inputs
    rbsums = 8 * (B * (3 + 2 * d + 3 * d * d + S + p * (p + 1) // 2) + 2 * st.n_levels
                  + 2 * q)
    assert plan.partial_sums == (min(N_PARTITIONS, n_chunks) + 2 * Jt + 2) * rbsums
    keep = tail_size(m) + 1
    assert plan.diagnostics == 8 * B * (4 + m + keep) + TAIL_COPIES * 8 * min(
        TAIL_SLICE, B * (keep + K))
    assert plan.bookkeeping == 128 * n_chunks
    assert plan.total == plan.draws + plan.bookkeeping + max(
        plan.generation, plan.chunks + plan.kernel + plan.partial_sums + plan.diagnostics)
    assert plan.reserve == plan.total - plan.draws

    # the engine's own work arrays, per thread
    lap = laplace_fit(crossed.block_system(crossed.factorize))
    draws, eng = rb_round(crossed, st, lap.params, lap.mode, crossed.factorize, m,
                          as_seed_sequence(3), opts, jobs, reserve=plan.reserve)
    assert draws.stored and eng.ranges == [(k, min(k + K, m)) for k in range(0, m, K)]
    assert sum(a.nbytes for a in eng._state()) == one


def test_plain_plan_and_the_default_budget(intercept):
    """The plain engine's plan: the stored draws as before (the default budget stores
    what it stored), its total within the default budget, the components' formulas."""
    from glmm_sm.mcla.memory import ROW_COPIES, SAMPLER_COPIES, memory_plan
    from glmm_sm.mcla.partials import N_PARTITIONS

    data = intercept.layout_data(intercept.factorize)
    q, B, S, p, n = data.q, data.n_blocks, data.n_s, data.k_fe, data.X.shape[0]
    m, jobs = 4000, 2
    plan = memory_plan(data, m, jobs)
    assert plan.engine == "plain" and plan.stored
    assert bytes_needed(data, m, squares=False) <= DEFAULT_MEMORY_BUDGET
    assert plan.total <= DEFAULT_MEMORY_BUDGET
    K = min(chunk_width(data, DEFAULT_MEMORY_BUDGET), m)
    n_chunks = -(-m // K)
    Jt = min(jobs, n_chunks)
    d = p + S
    assert plan.chunk == K
    assert plan.generation == min(jobs, -(-m // GEN_SIZE)) * SAMPLER_COPIES * bytes_needed(
        data, GEN_SIZE)
    assert plan.kernel == Jt * 8 * (2 * n + 2 * q) + 8 * (n * (2 * p + 1) + 2 * q * p)
    row = 8 * B * (3 + 2 * d + 2 * d * d + S + p * p + p * S)
    assert plan.partial_sums == (4 * Jt + 3 * min(N_PARTITIONS, n_chunks)) * row
    assert plan.diagnostics >= ROW_COPIES * 8 * n * min(512, 2**22 // n)
    # regenerated: chunks of GEN_SIZE, no stored draws, the generation per thread
    regen = memory_plan(data, m, jobs, stored=False)
    assert regen.draws == 0 and regen.chunk == GEN_SIZE and not regen.stored
    assert regen.total == regen.bookkeeping + regen.evaluation


def test_draws_stored_only_with_their_reserve(intercept):
    """``DrawSet.from_sampler(reserve=...)`` stores the draws only when they and the rest
    of the evaluation fit the budget; the draws are the same numbers either way."""
    smp = intercept.make_sampler(None, "laplace", None)
    m = GEN_SIZE
    need = bytes_needed(smp.data, m, squares=False)
    kept = DrawSet.from_sampler(smp, m, as_seed_sequence(4), need + 100, reserve=100)
    regen = DrawSet.from_sampler(smp, m, as_seed_sequence(4), need + 100, reserve=101)
    assert kept.resident and kept.stored and not regen.resident and not regen.stored
    a, b = kept.all_draws(), regen.all_draws()
    assert np.array_equal(a.U, b.U) and np.array_equal(a.logf, b.logf)


def test_m_10_12_refused_with_the_bytes_it_needs(crossed, monkeypatch):
    """``m=10**12`` is refused before anything is built: with the default budget by the
    chunk bookkeeping check, and with a budget that passes that check by the plan, which
    names the bookkeeping bytes it would need."""
    monkeypatch.setattr(driver, "laplace_fit", _no_laplace)
    with pytest.raises(ValueError, match="memory_budget=1,073,741,824: at most m="):
        crossed.fit(m=10**12, disp=False)
    budget = 2**36  # passes the 64 bytes per chunk check (62.5 GB)
    with pytest.raises(ValueError, match=r"memory_budget=68,719,476,736 bytes") as e:
        crossed.fit(m=10**12, time_budget=None, memory_budget=budget, disp=False)

    from glmm_sm.mcla.memory import MemoryBudgetError, memory_plan

    assert isinstance(e.value, MemoryBudgetError)
    data = crossed.layout_data(crossed.factorize)
    plan = memory_plan(data, 10**12, 1, budget)
    assert not plan.stored and plan.bookkeeping == 128 * -(-10**12 // GEN_SIZE)
    assert plan.total > budget
    assert "bookkeeping 125,000.0 MB" in str(e.value)


def test_message_names_threads_and_m_that_fit(crossed):
    """The refusal says which budget, thread count or m would fit."""
    from glmm_sm.mcla.memory import MemoryBudgetError, check_fit_memory, fit_plan

    data = crossed.layout_data(crossed.factorize)
    m = 3 * GEN_SIZE  # regenerated: three chunks, evaluated on two threads at once
    opts = FitOptions(m=m, sampler="laplace", rao_blackwell=True, n_jobs=2)
    st = rb_structure(crossed, opts, crossed.factorize, None, notes=[])
    two = fit_plan(data, st, opts, m, 2, stored=False)
    one = fit_plan(data, st, opts, m, 1, stored=False)
    assert one.total < two.total
    small = FitOptions(m=m, sampler="laplace", rao_blackwell=True, n_jobs=2,
                       memory_budget=one.total)
    with pytest.raises(MemoryBudgetError, match=r"or n_jobs=1 \(needs [\d,]+ bytes\)"):
        check_fit_memory(data, st, small, m, 2)
    m_small = fit_plan(data, st, opts, 100, 1, stored=False).total
    tiny = FitOptions(m=400, sampler="laplace", rao_blackwell=True, n_jobs=1,
                      memory_budget=m_small)
    with pytest.raises(MemoryBudgetError, match=r"or m <= [\d,]+") as e:
        check_fit_memory(data, st, tiny, 400, 1)
    m_fit = int(str(e.value).split("m <= ")[1].split(" ")[0].replace(",", ""))
    assert 100 <= m_fit < 400
    assert fit_plan(data, st, tiny, m_fit, 1).total <= m_small
    assert fit_plan(data, st, tiny, m_fit + 1, 1).total > m_small


def test_m_growth_stops_at_the_budget(crossed):
    """Between rounds m grows no further than the budget holds (``m_memory`` in the
    round's log), where the Monte Carlo error asks for more."""
    from glmm_sm.mcla.memory import fit_max_m, fit_plan

    data = crossed.layout_data(crossed.factorize)
    m0 = 64
    opts = FitOptions(m_start=m0, sampler="laplace", rao_blackwell=True, n_jobs=1)
    st = rb_structure(crossed, opts, crossed.factorize, None, notes=[])
    budget = fit_plan(data, st, opts, m0 + 16, 1).total
    assert fit_plan(data, st, opts, m0, 1).total <= budget
    with pytest.warns(ConvergenceWarning, match="memory_budget=.* allows at most") as rec:
        res = crossed.fit(m_start=m0, rao_blackwell=True, n_jobs=1, memory_budget=budget,
                          target_ratio=0.01, max_rounds=2, disp=False, random_state=2)
    first, second = res.fit_log.rounds[:2]
    assert first["m"] == m0 and m0 + 16 <= first["m_memory"] < first["m_asked"]
    # the warning says what the Monte Carlo error asked for and the budget it would take
    (text,) = [str(w.message) for w in rec if "allows at most" in str(w.message)]
    assert f"m = {first['m_memory']} draws" in text and f"m = {first['m_asked']}" in text
    fitted = FitOptions(m_start=m0, sampler="laplace", rao_blackwell=True, n_jobs=1,
                        memory_budget=budget)
    need = fit_plan(data, st, fitted, first["m_asked"], 1).total
    assert f"memory_budget={int(need) + 1}" in text
    assert second["m"] == first["m_next"] == first["m_memory"]
    small = FitOptions(m_start=m0, sampler="laplace", rao_blackwell=True, n_jobs=1,
                       memory_budget=budget)
    assert fit_plan(data, st, small, second["m"], 1).total <= budget
    assert fit_plan(data, st, small, second["m"] + 1, 1).total > budget
    assert fit_max_m(data, st, small, second["m"] + 1, 1, least=m0) == second["m"]


def test_deep_plan_is_the_engines_largest_chunk():
    """A nested tree's plan holds DEEP_COPIES arrays of the largest chunk of top-level
    units the nested engine evaluates together (not a fixed DEEP_CHUNK for any tree)."""
    from glmm_sm.mcla.memory import DEEP_COPIES, fit_plan
    from glmm_sm.mcla.rb.deep import DEEP_CHUNK, top_unit_numbers

    rng = np.random.default_rng(0)
    n = 3000
    s = rng.integers(0, 10, n)
    c = s * 10 + rng.integers(0, 5, n)
    d = pd.DataFrame({"x1": rng.normal(size=n), "s": s, "c": c,
                      "p": c * 5 + rng.integers(0, 4, n),
                      "y": (rng.random(n) < 0.4).astype(float)})
    model = MonteCarloGLMM.from_formula("y ~ x1 + (1 | s) + (1 | s:c) + (1 | s:c:p)", data=d,
                                        family=sm.families.Binomial())
    opts = FitOptions(sampler="quadrature")
    st = rb_structure(model, opts, model.factorize, None, notes=[])
    assert getattr(st, "deep", False)
    lap = laplace_fit(model.block_system(model.factorize))
    _, eng = rb_round(model, st, lap.params, lap.mode, model.factorize, 1,
                      as_seed_sequence(0), opts, 1)
    cost = top_unit_numbers(st, eng.sampler.K, eng.k_params)
    largest = max(int(cost[c0:c1].sum()) for c0, c1 in eng._chunks)
    plan = fit_plan(model.layout_data(model.factorize), st, opts, 1, 1)
    assert plan.engine == "deep" and plan.kernel == DEEP_COPIES * 8 * largest
    assert largest < DEEP_CHUNK
