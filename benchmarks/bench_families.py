"""Owls (glmmTMB's example): the negative binomial fit against the Poisson fit of the same
model, process CPU time (issue 22's goal: NB at most 1.5x Poisson).

``SiblingNegotiation ~ FoodTreatment * SexParent + offset(log(BroodSize)) + (1 | Nest)``,
599 counts in 27 nests, ``fit(random_state=1)`` with the default ``sampler="auto"`` (a
deterministic nested quadrature for this design) and with ``rao_blackwell=False``
(importance sampling).  One warm-up fit per configuration (numba's cache), then ``--reps``
rounds of the configurations alternating; prints the minimum and median CPU seconds.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_families.py [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm

from glmm_sm import MonteCarloGLMM

DATA = os.path.join(os.path.dirname(__file__), os.pardir, "tests", "data", "owls.csv")


def fit(d, family, **kw):
    mod = MonteCarloGLMM.from_formula("SiblingNegotiation ~ FoodTreatment * SexParent",
                                      {"Nest": "0 + C(Nest)"}, data=d, family=family,
                                      offset=np.log(d.BroodSize))
    t = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mod.fit(random_state=1, disp=False, **kw)
    return time.process_time() - t, res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    d = pd.read_csv(DATA)
    configs = {
        ("Poisson", "auto"): (sm.families.Poisson(), {}),
        ("negative binomial", "auto"): (sm.families.NegativeBinomial(alpha=1.0), {}),
        ("Poisson", "IS"): (sm.families.Poisson(), {"rao_blackwell": False}),
        ("negative binomial", "IS"): (sm.families.NegativeBinomial(alpha=1.0),
                                      {"rao_blackwell": False}),
    }
    times = {k: [] for k in configs}
    used = {}
    for k, (fam, kw) in configs.items():  # warm-up (numba cache)
        _, res = fit(d, fam, **kw)
        used[k] = res.fit_log.sampler.get("used")
    for _ in range(args.reps):
        for k, (fam, kw) in configs.items():
            times[k].append(fit(d, fam, **kw)[0])
    print("| family | sampler | CPU s, min (median) |")
    print("|---|---|---|")
    for k, ts in times.items():
        print(f"| {k[0]} | {used[k]} | {min(ts):.3f} ({np.median(ts):.3f}) |")
    for s in ("auto", "IS"):
        r = np.median(times[("negative binomial", s)]) / np.median(times[("Poisson", s)])
        print(f"NB / Poisson ({s}): {r:.2f}x (medians)")


if __name__ == "__main__":
    main()
