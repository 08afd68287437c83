"""Where the numba kernel's time goes: stripped-down copies of its inner loop, timed.

Run from the repository root::

    OPENBLAS_NUM_THREADS=1 python benchmarks/profile_kernel.py [--quick]

Each variant below repeats the structure of ``glmm_sm._kernels.chunk_sums`` for a Bernoulli
model (tiles of 64 draws, ``eta`` gathered from two random-effect columns per observation, the
same compiler flags and the package's own ``fexp`` / ``flog1p_unit``) but keeps only part of
the work, so that the differences between rows show what each part costs:

    gather      eta = xb + U[c1] + U[c2];  lfy += y * eta
    +exp        ... + fexp(-|eta|) summed
    +bernoulli  the full per-(i, k) Bernoulli body of the kernel (cumulant, mean, c'' stored)
    +G          ... + the fixed-effects score accumulation G[j, k] += r_k X[i, j] (p = 4)
    +hc         ... + the per-observation reduction sum_k e_k c''_ik after each tile

and then the real kernel on the same sizes (derivs False / True) through the engine.
Figures are ns per (observation x draw), best of several calls.  Nothing in ``glmm_sm`` is
modified; this file only imports from it.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

from glmm_sm._fastmath import fexp, flog1p_unit  # noqa: E402
from glmm_sm._kernels import _FLAGS, TILE  # noqa: E402

FLAGS = dict(_FLAGS)
FLAGS["cache"] = False  # keep the benchmark's variants out of the package's cache


@numba.njit(**FLAGS)
def variant(level, xb, wy, X, c1, c2, U, out_lfy, out_hc):
    n, p = X.shape
    m = U.shape[1]
    eta = np.empty(TILE)
    lfy = np.empty(TILE)
    rr = np.empty(TILE)
    ew = np.empty(TILE)
    G = np.empty((p, TILE))
    cpp = np.empty((n, TILE))
    for kk in range(TILE):
        ew[kk] = 1.0
    for kt in range(0, m, TILE):
        nt = min(TILE, m - kt)
        for kk in range(nt):
            lfy[kk] = 0.0
            for j in range(p):
                G[j, kk] = 0.0
        for i in range(n):
            x0 = xb[i]
            a = c1[i]
            b = c2[i]
            for kk in range(nt):
                eta[kk] = x0 + U[a, kt + kk] + U[b, kt + kk]
            wyi = wy[i]
            if level == 0:
                for kk in range(nt):
                    lfy[kk] += wyi * eta[kk]
            elif level == 1:
                for kk in range(nt):
                    lfy[kk] += wyi * eta[kk] - fexp(-abs(eta[kk]))
            else:
                for kk in range(nt):
                    e = eta[kk]
                    tt = fexp(-abs(e))
                    inv = 1.0 / (1.0 + tt)
                    cum = max(e, 0.0) + flog1p_unit(tt)
                    mu = inv if e >= 0.0 else tt * inv
                    lfy[kk] += wyi * e - cum
                    rr[kk] = wyi - mu
                    cpp[i, kk] = tt * inv * inv
                if level >= 3:
                    for j in range(p):
                        xij = X[i, j]
                        for kk in range(nt):
                            G[j, kk] += rr[kk] * xij
        for kk in range(nt):
            out_lfy[kt + kk] = lfy[kk] + G[0, kk]
        if level >= 4:
            for i in range(n):
                acc = 0.0
                for kk in range(nt):
                    acc += ew[kk] * cpp[i, kk]
                out_hc[i] += acc


LEVELS = ["gather", "+exp", "+bernoulli", "+G (p=4)", "+hc"]


def best_of(fn, repeats):
    fn()
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="m = 10^4 / 2000 instead of 10^5 / 10^4")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)

    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_engine import build_model

    rng = np.random.default_rng(0)
    print(f"numba {numba.__version__}, host CPU {numba.config.CPU_NAME or 'native'}, "
          f"TILE = {TILE}; ns per (obs x draw), best of {args.repeats}")
    hdr = f"{'problem':<16} {'n':>5} {'m':>7} " + " ".join(f"{s:>11}" for s in LEVELS) + \
        f" {'kernel val':>11} {'kernel vgh':>11}"
    print(hdr)
    print("-" * len(hdr))
    for problem, (m_full, m_quick) in (("salamander", (100_000, 10_000)),
                                       ("salamander-1blk", (100_000, 10_000)),
                                       ("verbagg-sim", (10_000, 2_000))):
        m = m_quick if args.quick else m_full
        model = build_model(problem)
        params, _, _ = model.fit_laplace()
        model.sample_draws(m, random_state=1, params=params, kernel="numba")
        data = model.engine.data
        n, q = data.X.shape[0], data.q
        # Synthetic stand-ins of the same sizes for the stripped-down variants.
        xb = rng.normal(size=n)
        wy = rng.integers(0, 2, n).astype(float)
        X = np.ascontiguousarray(data.X)
        cols = data.zidx.reshape(n, 2)
        c1, c2 = np.ascontiguousarray(cols[:, 0]), np.ascontiguousarray(cols[:, 1])
        U = rng.normal(scale=0.8, size=(q, m))
        out_lfy, out_hc = np.zeros(m), np.zeros(n)
        row = []
        for level in range(len(LEVELS)):
            t = best_of(partial(variant, level, xb, wy, X, c1, c2, U, out_lfy, out_hc),
                        args.repeats)
            row.append(t / (n * m) * 1e9)
        for derivs in (False, True):
            t = best_of(partial(model.engine.evaluate, params, derivs=derivs), args.repeats)
            row.append(t / (n * m) * 1e9)
        print(f"{problem:<16} {n:>5} {m:>7} " + " ".join(f"{v:>11.2f}" for v in row))
    print()
    print("Columns are cumulative: each variant adds its work to the one on its left.  "
          "'kernel val/vgh'\nis engine.evaluate(derivs=False/True) on the real draws "
          "(includes per-block, per-draw work\nthe variants leave out: log f(u), weights, "
          "and for vgh the d x d outer products).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
