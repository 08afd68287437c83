"""A Dask fit whose data stay partitioned on 2 worker processes with a memory limit.

Run from the repository root (needs ``pip install ".[distributed]"`` and pyarrow for
``dask.dataframe``)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_dask_partitioned.py
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_dask_partitioned.py --groups 20000 --limit 900

The data (Bernoulli, ``y ~ x1 + x2 + (1 | g)``, ``--per`` rows per group, ``--parts``
partitions of ``--groups`` groups each, and ``--wide`` further columns the model does not
use, as a wide table has) are a ``dask.dataframe`` made by ``dd.from_map``: each partition
is generated on the worker that computes it, the model's columns are selected there, and
the client never builds the frame (except for the single-machine reference fit at the end,
which ``--no-local`` leaves out).  A ``LocalCluster`` of 2 single-threaded worker processes, each
with ``memory_limit=--limit`` MiB, fits it (``sampler="laplace"``, ``m`` fixed,
``max_rounds=2``).  The script prints

* the data's total size (the partitions' ``memory_usage(deep=True)``) and the size of the
  designs the workers build from them (every array of each piece), against the limit;
* each worker's partitions, its resident memory after the fit and its peak;
* the bytes of per-block sums one evaluation brings to the client, and the client's peak
  memory during the Dask fit;
* the Dask fit's time, and then a single-machine ``fit()`` of the concatenated data in this
  process with the same seed: whether the estimates, SEs, MCSEs and ``l_m`` are the same,
  bit for bit.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

MIB = 2**20


def make_partition(i, groups=5000, per=5, wide=0):
    """Partition ``i``: ``groups`` levels of ``g`` of its own, ``per`` rows each, and
    ``wide`` further columns the model does not use (a wide table)."""
    r = np.random.default_rng(7000 + i)
    n = groups * per
    gi = np.repeat(np.arange(groups), per)
    x1, x2 = r.standard_normal(n), r.standard_normal(n)
    eta = -0.4 + 0.8 * x1 - 0.5 * x2 + r.normal(0, 1.0, groups)[gi]
    y = (r.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    out = pd.DataFrame({"y": y, "x1": x1, "x2": x2,
                        "g": pd.Series([f"p{i}g{k}" for k in gi], dtype=object)})
    if wide:
        extra = np.random.default_rng(9000 + i).standard_normal((n, wide))
        out = pd.concat([out, pd.DataFrame(extra, columns=[f"z{j}" for j in range(wide)])],
                        axis=1)
    return out


def _piece_bytes(piece):
    """Bytes of every array a piece holds (its layout data, model arrays and system)."""
    seen, total = set(), 0

    def walk(obj, depth=0):
        nonlocal total
        if depth > 3 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            total += obj.nbytes
        elif hasattr(obj, "indptr") and hasattr(obj, "data"):  # scipy.sparse
            total += obj.data.nbytes + obj.indices.nbytes + obj.indptr.nbytes
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, depth + 1)
        elif hasattr(obj, "__dict__"):
            for v in vars(obj).values():
                walk(v, depth + 1)

    walk(piece)
    return total


def _worker_memory():
    import psutil

    return (psutil.Process().memory_info().rss,
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--groups", type=int, default=12500, help="groups per partition")
    ap.add_argument("--per", type=int, default=5, help="rows per group")
    ap.add_argument("--m", type=int, default=500)
    ap.add_argument("--limit", type=int, default=600, help="worker memory limit, MiB")
    ap.add_argument("--wide", type=int, default=0, help="unused columns of the table")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--budget", type=int, default=1024,
                    help="memory_budget of the draws, MiB (beyond it they are regenerated)")
    ap.add_argument("--no-local", action="store_true",
                    help="skip the single-machine fit (it holds the whole data here)")
    args = ap.parse_args()

    import dask.dataframe as dd
    import distributed

    import glmm_sm
    from glmm_sm.mcla.partitioned import PartitionedEngine
    from glmm_sm.model import MonteCarloGLMM

    formula = "y ~ x1 + x2 + (1 | g)"
    fit_args = dict(sampler="laplace", m=args.m, random_state=1, max_rounds=args.rounds,
                    memory_budget=args.budget * MIB)
    make = [(i, args.groups, args.per, args.wide) for i in range(args.parts)]
    table = dd.from_map(lambda a: make_partition(*a), make)
    ddf = table[["y", "x1", "x2", "g"]]  # the model's columns, selected on the workers
    n = args.parts * args.groups * args.per
    print(f"glmm_sm {glmm_sm.__file__}")
    print(f"data: {args.parts} partitions x {args.groups} groups x {args.per} rows = {n} rows "
          f"({4 + args.wide} columns), m = {args.m}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           memory_limit=f"{args.limit}MiB",
                                           dashboard_address=None, silence_logs=50)
    client = distributed.Client(cluster)
    try:
        base = client.run(_worker_memory)
        print(f"worker memory limit {args.limit} MiB each; worker RSS before: "
              + ", ".join(f"{v[0] / MIB:.0f} MiB" for v in base.values()))
        bytes_seen = []
        original = PartitionedEngine.partial_sums

        def partial_sums(self, params, derivs=True):
            out = original(self, params, derivs)
            bytes_seen.append(self.last_bytes)
            return out

        PartitionedEngine.partial_sums = partial_sums
        pm = MonteCarloGLMM.from_formula(formula, data=ddf, family="binomial")
        t0, c0 = time.perf_counter(), time.process_time()
        res = pm.fit(client=client, **fit_args)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        PartitionedEngine.partial_sums = original
        client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        homes = client.who_has(pm.pieces.items)
        sizes = pm.pieces.gather(_piece_bytes)
        after = client.run(_worker_memory)
        per_worker = {}
        for fut, size in zip(pm.pieces.items, sizes, strict=True):
            for w in homes[fut.key]:
                per_worker.setdefault(w, []).append(size)
        # measured after the fit: generating the whole table again on the workers for
        # the count leaves their memory high, which the limit would count against the fit
        data_bytes = int(table.memory_usage_per_partition(deep=True).compute().sum())
        print(f"the data in memory (pandas, deep, all columns): {data_bytes / MIB:.1f} MiB "
              f"(limit per worker {args.limit} MiB)")
        print(f"designs built on the workers (all pieces): {sum(sizes) / MIB:.1f} MiB")
        for w, got in sorted(per_worker.items()):
            rss, peak = after[w]
            print(f"  worker {w}: {len(got)} partitions, {sum(got) / MIB:.1f} MiB of designs; "
                  f"RSS after the fit {rss / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB "
                  f"(limit {args.limit} MiB)")
        print(f"per-block sums received per evaluation: {max(bytes_seen) / MIB:.2f} MiB "
              f"({len(bytes_seen)} evaluations)")
        print(f"Dask fit: {wall:.1f} s wall, client CPU {cpu:.1f} s, client peak RSS "
              f"{client_peak / MIB:.0f} MiB so far; converged {res.converged}")
        print(res.summary())
    finally:
        client.close()
        cluster.close()

    if args.no_local:
        return
    full = pd.concat([make_partition(*a)[["y", "x1", "x2", "g"]] for a in make],
                     ignore_index=True)
    mod = MonteCarloGLMM.from_formula(formula, data=full, family="binomial")
    c0 = time.process_time()
    ref = mod.fit(disp=False, **fit_args)
    print(f"single-machine fit of the concatenated data: CPU {time.process_time() - c0:.1f} s")
    same = (np.array_equal(res.params.values, ref.params.values)
            and np.array_equal(res.bse.values, ref.bse.values)
            and np.array_equal(res.mcse.values, ref.mcse()) and res.llf_mc == ref.llf_mc)
    print(f"same estimates, SEs, MCSEs and l_m, bit for bit: {same}")


if __name__ == "__main__":
    main()
