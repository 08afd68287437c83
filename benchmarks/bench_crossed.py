"""Default fits on issue 11's simulated crossed design against a high-m answer.

300 subjects x 24 items, every pair once (n = 7200, one block of 324 effects), Bernoulli,
true subject and item variances 1.8 and 0.25, a subject covariate ``x`` and an item
covariate ``w``.  Prints, per seed, time, m per round, ESS and the two variances with their
MCSE; then the mean's distance from the reference in standard errors (``z mean``), the seed
spread over the RMS reported MCSE, and the largest single-fit distance.

The reference is the mean of two default fits with ``m=32000`` (seeds 101 and 102);
``--reference`` recomputes it (about 3 minutes), otherwise the stored figures are used.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_crossed.py [--seeds N] [--reference]
"""

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from glmm_sm import MonteCarloGLMM  # noqa: E402

# Two m = 32000 fits (seeds 101, 102): subject 2.083365 and 2.083213, item 0.314347 and
# 0.314141, MCSE 0.00021 / 0.00022 each; SE = MCSE of their mean.
REFERENCE = {"subj": (2.08329, 0.00015), "item": (0.31424, 0.00015)}


def model():
    rng = np.random.default_rng(2027)
    ns, ni = 300, 24
    subj, item = np.repeat(np.arange(ns), ni), np.tile(np.arange(ni), ns)
    x = rng.normal(size=ns)[subj]
    w = np.tile([0.0, 1.0], ni // 2)[item]
    eta = (-0.2 + 0.4 * x - 0.8 * w + rng.normal(0, np.sqrt(1.8), ns)[subj]
           + rng.normal(0, 0.5, ni)[item])
    y = (rng.random(eta.size) < 1 / (1 + np.exp(-eta))).astype(int)
    d = pd.DataFrame({"y": y, "x": x, "w": w, "subj": subj, "item": item})
    return MonteCarloGLMM.from_formula("y ~ x + w + (1 | subj) + (1 | item)", data=d,
                                       family="bernoulli")


def reference(mod):
    out = {}
    fits = [mod.fit(m=32000, random_state=s, disp=False, n_jobs=1) for s in (101, 102)]
    for name in ("subj", "item"):
        est = [f.params[name] for f in fits]
        mc = [f.mcse()[name] for f in fits]
        print(f"reference {name}: {est[0]:.6f} ({mc[0]:.6f}), {est[1]:.6f} ({mc[1]:.6f})")
        out[name] = (float(np.mean(est)), float(np.hypot(*mc) / 2))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--reference", action="store_true")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    mod = model()
    print(f"n = {mod.nobs:.0f}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    ref = reference(mod) if args.reference else REFERENCE
    mod.fit(m=200, max_rounds=1, random_state=99, disp=False, n_jobs=1)  # kernel load
    lap = mod.fit(method="laplace").params
    print(f"Laplace: subject {lap['subj']:.4f}, item {lap['item']:.4f}")
    est, mcse, secs = [], [], []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        res = mod.fit(random_state=seed, disp=False, n_jobs=1)
        secs.append(time.perf_counter() - t0)
        est.append([res.params["subj"], res.params["item"]])
        mcse.append([res.mcse()["subj"], res.mcse()["item"]])
        m = "/".join(str(r["m"]) for r in res.fit_log.rounds)
        print(f"seed {seed:2d} {secs[-1]:5.2f} s  m {m:>9s}  ESS {np.min(res.ess):5.0f}  "
              f"subject {est[-1][0]:.5f} ({mcse[-1][0]:.5f})  item {est[-1][1]:.5f} "
              f"({mcse[-1][1]:.5f})  converged {res.converged}")
    est, mcse = np.array(est), np.array(mcse)
    print(f"\nover {args.seeds} seeds: mean time {np.mean(secs):.2f} s")
    for j, name in enumerate(("subj", "item")):
        rv, rse = ref[name]
        sd = est[:, j].std(ddof=1)
        z = (est[:, j].mean() - rv) / np.hypot(sd / np.sqrt(len(est)), rse)
        zmax = np.max(np.abs(est[:, j] - rv) / np.hypot(mcse[:, j], rse))
        print(f"{name:5s} mean {est[:, j].mean():.5f}  reference {rv:.5f}  z mean {z:5.2f}  "
              f"spread/MCSE {sd / np.sqrt(np.mean(mcse[:, j] ** 2)):.2f}  max |z| {zmax:.2f}")


if __name__ == "__main__":
    main()
