"""Benchmark of parallel evaluation: 1 and 2 threads, and a Dask LocalCluster of 2 workers.

Run from the repository root (needs ``pip install ".[distributed]"``)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_parallel.py           # full sizes
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_parallel.py --quick   # m / 10

Problems (see ``bench_engine.py``): salamander at m = 10^6 and the VerbAgg-sized simulated
problem at m = 10^5, both at their Laplace estimates.  For each backend (``threads=1``,
``threads=2``, ``dask-2``: a ``LocalCluster`` of 2 single-threaded worker processes) it
prints

* the best of 3 evaluations of value + gradient + Hessian (after one warm-up evaluation,
  which for Dask includes the workers generating their draws), with ns per (obs x draw);
* one full fit with ``m`` fixed, seed 1 (``max_rounds=2``);
* the speed-up over ``threads=1``;
* for Dask, the pickled bytes sent and received per evaluation, also at m / 10, to show that
  they do not grow with m;
* whether every backend gives the same value, gradient, Hessian and estimates, bit for bit.

The draws are stored (``memory_budget`` 4 GiB) so that evaluations time the kernel, not the
draw generation.  Run it on an otherwise idle machine: the speed-up needs two free cores.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import build_model  # noqa: E402

PROBLEMS = {"salamander": 1_000_000, "verbagg-sim": 100_000}
BUDGET = 4 * 2**30


def _engine(model, params, m, n_jobs=1, client=None):
    from glmm_sm.core.random import as_seed_sequence
    from glmm_sm.mcla.draws import DrawSet
    from glmm_sm.mcla.engine import MCLAEngine

    smp = model.make_sampler(params)
    draws = DrawSet.from_sampler(smp, m, as_seed_sequence(1), BUDGET,
                                 materialize=client is None, n_jobs=2)
    return MCLAEngine(draws, n_jobs=n_jobs, client=client)


def _best(fn, repeats=3):
    out = fn()  # warm-up
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench(problem, m, client):
    model = build_model(problem)
    params, _, _ = model._laplace_estimate()
    n = int(model.nobs)
    rows = []
    evs, fits = {}, {}
    for name, n_jobs, cl in (("threads=1", 1, None), ("threads=2", 2, None),
                             ("dask-2", 1, client)):
        eng = _engine(model, params, m, n_jobs, cl)
        t_eval, ev = _best(lambda eng=eng: eng.evaluate(params))
        evs[name] = ev
        nbytes = eng.backend.last_bytes if cl is not None else None
        small = None
        if cl is not None:
            e2 = _engine(model, params, m // 10, n_jobs, cl)
            e2.evaluate(params)
            small = e2.backend.last_bytes
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = model.fit(m=m, random_state=1, disp=False, n_jobs=n_jobs, client=cl,
                            max_rounds=2, memory_budget=BUDGET)
        t_fit = time.perf_counter() - t0
        fits[name] = res
        rows.append((name, t_eval, t_eval / (n * m) * 1e9, t_fit, nbytes, small,
                     len(res.fit_log.evaluations)))
    base_eval, base_fit = rows[0][1], rows[0][3]
    print(f"\n{problem}: n = {n}, m = {m:,}, partitions = {len(eng.parts)}")
    print(f"{'backend':<10} {'eval s':>8} {'ns/obs/draw':>12} {'speed-up':>9} {'fit s':>8} "
          f"{'speed-up':>9} {'evals':>6}  bytes per evaluation (sent / received)")
    for name, te, ns, tf, nb, sm, ne in rows:
        wire = ""
        if nb is not None:
            wire = (f"{nb['sent']:,} / {nb['received']:,} at m; "
                    f"{sm['sent']:,} / {sm['received']:,} at m/10")
        print(f"{name:<10} {te:8.3f} {ns:12.2f} {base_eval / te:8.2f}x {tf:8.2f} "
              f"{base_fit / tf:8.2f}x {ne:6d}  {wire}")
    ref, ref_fit = evs["threads=1"], fits["threads=1"]
    for name in ("threads=2", "dask-2"):
        ev, res = evs[name], fits[name]
        same = (ev.value == ref.value and np.array_equal(ev.gradient, ref.gradient)
                and np.array_equal(ev.hessian, ref.hessian))
        rel = np.max(np.abs(res.params - ref_fit.params) / np.abs(ref_fit.params))
        print(f"  {name}: evaluation bit-identical to threads=1: {same}; fit estimates "
              f"max relative difference {rel:.1e}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="m / 10")
    ap.add_argument("--problem", choices=sorted(PROBLEMS), action="append")
    args = ap.parse_args(argv)
    from distributed import Client, LocalCluster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=50)
    client = Client(cluster)
    print(f"cores: {len(os.sched_getaffinity(0))}; OPENBLAS_NUM_THREADS="
          f"{os.environ['OPENBLAS_NUM_THREADS']}; Dask workers: {len(client.nthreads())}")
    try:
        for problem in args.problem or list(PROBLEMS):
            m = PROBLEMS[problem] // (10 if args.quick else 1)
            bench(problem, m, client)
    finally:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
