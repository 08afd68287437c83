"""Peak RSS of one Rao-Blackwellized round (drawing, one evaluation with derivatives, the
Pareto k pass) on bench_scale.py's crossed design against its MemoryPlan.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_memory_plan.py N M N_JOBS [BUDGET]

Prints one JSON line: the plan (glmm_sm.mcla.memory.fit_plan) and the increase of the
process's peak RSS (VmHWM, reset through /proc/self/clear_refs after a warm-up round that
compiles the kernels) over its RSS before the round.  Linux only.
"""

import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import statsmodels.api as sm  # noqa: E402
from bench_scale import MODELS, simulate  # noqa: E402

from glmm_sm import MonteCarloGLMM  # noqa: E402
from glmm_sm.core.random import as_seed_sequence  # noqa: E402
from glmm_sm.fit.options import FitOptions  # noqa: E402
from glmm_sm.laplace.step import laplace_fit  # noqa: E402
from glmm_sm.mcla.memory import fit_plan  # noqa: E402
from glmm_sm.mcla.rb.round import rb_round, rb_structure  # noqa: E402
from glmm_sm.mcla.tails import block_pareto_k  # noqa: E402


def rss():
    """``(current RSS, peak RSS)`` of this process in bytes."""
    with open("/proc/self/status") as f:
        d = dict(line.split(":", 1) for line in f)
    return int(d["VmRSS"].split()[0]) * 1024, int(d["VmHWM"].split()[0]) * 1024


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main():
    n, m, jobs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    budget = int(float(sys.argv[4])) if len(sys.argv) > 4 else 2**30
    df = simulate("crossed", n)
    model = MonteCarloGLMM.from_formula(MODELS["crossed"]["formula"], data=df,
                                        family=sm.families.Binomial())
    opts = FitOptions(sampler="laplace", rao_blackwell=True, n_jobs=jobs, memory_budget=budget)
    fz = model.factorize
    st = rb_structure(model, opts, fz, None, notes=[])
    lap = laplace_fit(model.block_system(fz))
    centre = lap.params
    # warm-up (numba compilation) on a few draws
    d0, e0 = rb_round(model, st, centre, lap.mode, fz, 8, as_seed_sequence(0), opts, jobs)
    e0.evaluate(centre)
    block_pareto_k(e0, centre)
    del d0, e0
    gc.collect()
    data = model.layout_data(fz)
    plan = fit_plan(data, st, opts, m, jobs)
    reserve = fit_plan(data, st, opts, m, jobs, stored=True).reserve
    base, _ = rss()
    reset_peak()
    c0 = time.process_time()
    draws, eng = rb_round(model, st, centre, lap.mode, fz, m, as_seed_sequence(1), opts,
                          jobs, reserve=reserve)
    _, peak_draw = rss()
    ev = eng.evaluate(centre)
    _, peak_eval = rss()
    block_pareto_k(eng, centre)
    _, peak = rss()
    print(json.dumps({"n": n, "m": m, "n_jobs": jobs, "budget": budget,
                      "stored": draws.stored, "plan": plan.record(), "base_rss": base,
                      "peak_minus_base_after_draws": peak_draw - base,
                      "peak_minus_base_after_eval": peak_eval - base,
                      "peak_minus_base": peak - base, "cpu_s": time.process_time() - c0,
                      "value": ev.value}))


if __name__ == "__main__":
    main()
