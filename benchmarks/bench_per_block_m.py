"""Per-block draw counts (issue 21 item 3) against one m for every block.

A Bernoulli random intercept with heterogeneous group sizes (a tenth of the groups large,
the rest small), fitted with ``sampler="laplace"`` (importance sampling, no quadrature) and
``m="auto"``, once with one m for every block and once with ``per_block_m=True``.  Printed
per fit: process CPU seconds, the kernel work of the rounds (sum over rounds of draws x
rows, ``sum_b m_b rows_b``), the final round's counts, the largest MCSE/SE and the
estimates.  One fit per configuration; numba is compiled by a warm-up fit first.

    python benchmarks/bench_per_block_m.py [--groups 2000] [--big 200] [--small 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp

from glmm_sm import MonteCarloGLMM


def hetero(n_groups, big, small, every=10, seed=1):
    rng = np.random.default_rng(seed)
    sizes = np.where(np.arange(n_groups) % every == 0, big, small)
    g = np.repeat(np.arange(n_groups), sizes)
    n = len(g)
    x = rng.standard_normal(n)
    eta = -0.3 + 0.5 * x + rng.normal(0.0, 1.0, n_groups)[g]
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    X = np.column_stack([np.ones(n), x])
    Z = sp.csr_matrix((np.ones(n), (np.arange(n), g)), shape=(n, n_groups))
    return MonteCarloGLMM(y, X, Z, np.zeros(n_groups, dtype=int), family="bernoulli")


def work(res, rows):
    """Sum over the rounds of draws x rows."""
    total = 0.0
    for r in res.fit_log.rounds:
        total += r.get("draw_rows", r["m"] * rows.sum())
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=2000)
    ap.add_argument("--big", type=int, default=200)
    ap.add_argument("--small", type=int, default=5)
    ap.add_argument("--targets", type=float, nargs="+", default=[0.1, 0.05])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    model = hetero(a.groups, a.big, a.small)
    rows = np.diff(model.layout_data(True).obs_ptr).astype(float)
    print(f"{len(rows)} groups ({np.sum(rows == a.big)} of {a.big} rows, the rest {a.small}); "
          f"{int(rows.sum())} rows")
    hetero(50, 20, 3).fit(random_state=0, sampler="laplace", disp=False)  # compile
    hetero(50, 20, 3).fit(random_state=0, sampler="laplace", disp=False, per_block_m=True)
    print("| target | counts | CPU s | rounds | draws x rows (all rounds) | final m_b "
          "(min-median-max) | max MCSE/SE | params |")
    print("|---|---|---|---|---|---|---|---|")
    for target in a.targets:
        for per_block in (False, True):
            t0 = time.process_time()
            res = model.fit(random_state=a.seed, sampler="laplace", disp=False,
                            target_ratio=target, per_block_m=per_block)
            cpu = time.process_time() - t0
            bm = res.block_m if res.block_m is not None else np.full(len(rows), res.m)
            ratio = float(np.max(res.mcse() / res.bse))
            print(f"| {target:g} | {'per block' if per_block else 'one m'} | {cpu:.1f} | "
                  f"{len(res.fit_log.rounds)} | {work(res, rows):.3g} | "
                  f"{bm.min()}-{np.median(bm):.0f}-{bm.max()} | {ratio:.3f} | "
                  f"{np.round(res.params, 4).tolist()} |")


if __name__ == "__main__":
    main()
