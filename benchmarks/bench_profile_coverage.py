"""Coverage of profile-likelihood intervals on a correlated intercept-and-slope design.

Simulates data sets from a Bernoulli GLMM ``y ~ x + (1 + x | g)`` (``--groups`` groups of
``--per`` observations, ``x ~ N(0, 1)``), fits each by Monte Carlo likelihood approximation,
computes the 95% profile interval of every parameter (the two fixed effects, the two
variances, the covariance) and of the correlation
(:mod:`glmm_sm.inference.profile_cov`), and reports per parameter the share of intervals
that contain the true value, with its Monte Carlo error (the binomial standard error
``sqrt(c (1 - c) / n)``).  CPU time is process time.

Usage::

    python benchmarks/bench_profile_coverage.py --n 100 --out /tmp/coverage.jsonl

Each data set's intervals go to ``--out`` as one JSON line as soon as they are computed, so
a run stopped early still reports the data sets it finished (``--report`` prints the table
of an existing file).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import pandas as pd

TRUE = {"Intercept": -0.3, "x": 0.8, "g Var(Intercept)": 1.0, "g Cov(x, Intercept)": 0.3,
        "g Var(x)": 0.5}
TRUE["g Corr(x, Intercept)"] = 0.3 / np.sqrt(1.0 * 0.5)


def simulate(seed, groups, per):
    rng = np.random.default_rng([2024, seed])
    g = np.repeat(np.arange(groups), per)
    x = rng.normal(size=groups * per)
    S = np.array([[TRUE["g Var(Intercept)"], TRUE["g Cov(x, Intercept)"]],
                  [TRUE["g Cov(x, Intercept)"], TRUE["g Var(x)"]]])
    b = rng.multivariate_normal([0.0, 0.0], S, size=groups)
    eta = TRUE["Intercept"] + TRUE["x"] * x + b[g, 0] + b[g, 1] * x
    y = (rng.random(groups * per) < 1.0 / (1.0 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"y": y, "x": x, "g": g})


def one(seed, groups, per, time_budget=600.0, cols=None):
    import statsmodels.api as sm

    from glmm_sm import MonteCarloGLMM

    df = simulate(seed, groups, per)
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MonteCarloGLMM.from_formula("y ~ x + (1 + x | g)", data=df,
                                          family=sm.families.Binomial()).fit(
            random_state=seed, disp=False, n_jobs=1)
        t1 = time.process_time()
        rec = {"seed": seed, "fit_cpu": t1 - t0, "m": int(res.m), "singular": res.singular}
        try:
            ci = res.profile_conf_int(cols=cols, time_budget=time_budget)
        except ValueError as e:  # a singular estimate cannot be profiled
            rec.update(error=str(e), profile_cpu=time.process_time() - t1)
            return rec
    rec["profile_cpu"] = time.process_time() - t1
    rec["ci"] = {k: [float(r.lower), float(r.upper), float(r.lower_mcse),
                     float(r.upper_mcse), str(r.note)] for k, r in ci.iterrows()}
    rec["sampler"] = res.fit_log.sampler.get("used")
    return rec


def report(path, merge=None, also=()):
    recs = [json.loads(line) for line in open(path)]
    if merge:  # the parameters not profiled in ``path`` from ``merge`` (same seeds)
        old = {r["seed"]: r for r in map(json.loads, open(merge))}
        for r in recs:
            o = old[r["seed"]]
            if "ci" in r and "ci" in o:
                r["ci"] = {**o["ci"], **r["ci"]}
                r["profile_cpu"] += o["profile_cpu"]
    for extra in also:  # further seeds, every parameter profiled in the file itself
        recs += [json.loads(line) for line in open(extra)]
    seeds = [r["seed"] for r in recs]
    if len(set(seeds)) != len(seeds):
        raise ValueError("--out and --also hold the same seed twice; give each seed once")
    ok = [r for r in recs if "ci" in r]
    rows = []
    for name, truth in TRUE.items():
        hits = np.array([r["ci"][name][0] <= truth <= r["ci"][name][1] for r in ok])
        found = np.array([bool(np.all(np.isfinite(r["ci"][name][:2]))) for r in ok])
        n = len(hits)
        c = (hits & found).mean() if n else np.nan  # an infinite or NaN end is a miss
        nf = int(found.sum())
        cf = hits[found].mean() if nf else np.nan
        below = np.mean([truth < r["ci"][name][0] for r in ok]) if n else np.nan
        above = np.mean([truth > r["ci"][name][1] for r in ok]) if n else np.nan
        rows.append((name, truth, n, c, np.sqrt(c * (1 - c) / n) if n else np.nan,
                     nf, cf, np.sqrt(cf * (1 - cf) / nf) if nf else np.nan,
                     below, above, n - nf))
    fit = np.array([r["fit_cpu"] for r in recs])
    prof = np.array([r["profile_cpu"] for r in recs])
    tot = fit + prof
    out = [f"data sets: {len(recs)} ({len(recs) - len(ok)} not profiled: singular "
           "estimate); fit CPU s median "
           f"{np.median(fit):.2f}, profile CPU s median {np.median(prof):.1f} "
           f"(total {fit.sum() + prof.sum():.0f} s); CPU s per data set (fit and six "
           f"profiles) median {np.median(tot):.1f}, max {tot.max():.1f}", "",
           "| parameter | true | n | coverage (no end = miss) | MC error | found "
           "| coverage among found | MC error | truth below | truth above "
           "| no end (NaN) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    out += [f"| {n} | {t:.3f} | {k} | {c:.3f} | {se:.3f} | {nf} | {cf:.3f} | {sef:.3f} "
            f"| {b:.3f} | {a:.3f} | {m} |"
            for n, t, k, c, se, nf, cf, sef, b, a, m in rows]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="data sets")
    ap.add_argument("--first", type=int, default=0, help="first seed")
    ap.add_argument("--groups", type=int, default=30)
    ap.add_argument("--per", type=int, default=10)
    ap.add_argument("--out", default="profile_coverage.jsonl")
    ap.add_argument("--report", action="store_true", help="only print the table of --out")
    ap.add_argument("--time-budget", type=float, default=600.0,
                    help="each data set's profile budget in wall-clock seconds (0: none)")
    ap.add_argument("--seeds", type=int, nargs="+", help="these seeds instead of --first/--n")
    ap.add_argument("--params", nargs="+",
                    help="profile only these (e.g. 'g Cov(x, Intercept)'); --report then "
                         "takes the others from --merge")
    ap.add_argument("--merge", help="records whose intervals fill in those not in --out's")
    ap.add_argument("--also", nargs="+", default=(),
                    help="with --report: results files of further seeds (every parameter "
                         "profiled), added to --out's records after --merge")
    args = ap.parse_args()
    if not args.report:
        with open(args.out, "a") as f:
            seeds = args.seeds or range(args.first, args.first + args.n)
            for seed in seeds:
                rec = one(seed, args.groups, args.per, args.time_budget or None, args.params)
                rec.update(groups=args.groups, per=args.per)
                f.write(json.dumps(rec) + "\n")
                f.flush()
                print(seed, f"fit {rec['fit_cpu']:.1f}s profile {rec['profile_cpu']:.1f}s",
                      flush=True)
    print(report(args.out, args.merge, args.also))


if __name__ == "__main__":
    main()
