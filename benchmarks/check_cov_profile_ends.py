"""Check the covariance's profile ends of the coverage study against a brute-force profile.

For each data set (``bench_profile_coverage.simulate``, 50 groups of 12 unless
``--groups``/``--per``) the ends of ``g Cov(x, Intercept)`` recorded by
``bench_profile_coverage.py`` in ``--records`` are compared with the exact profile
(``tests/aghq2d_cov_profile.py``: the independent 2-D adaptive Gauss-Hermite likelihood, 20
nodes per dimension, each constrained maximum the best of several starts): the exact
deviance at each recorded end (it should be the chi2(1) quantile, 3.84) and at the truth
(the truth is in the exact LR confidence set ``{c : D(c) <= 3.84}`` when that is at most
3.84).  ``--ends`` also locates the exact ends (a scan outward from the maximum, then
bisection) and compares a 14-node rule at their maxima (node study).  One JSON line per
data set goes to ``--out``.  CPU time is process time.

Usage::

    python benchmarks/check_cov_profile_ends.py --records \
        benchmarks/results/profile_coverage_quadrature.jsonl --seeds 1 16 92 --out x.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from scipy import stats

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

from aghq import glm_beta  # noqa: E402
from aghq2d_cov_profile import CovProfileReference, reference_model  # noqa: E402
from bench_profile_coverage import TRUE, simulate  # noqa: E402

NAME = "g Cov(x, Intercept)"
#: The package's box on a free correlation (glmm_sm.inference.profile_cov.RHO_EDGE).
RHO_EDGE = 1.0 - 1e-4


def exact_reference(seed, groups, per):
    """Data set ``seed``, its exact 20-node reference model and that model's
    :class:`CovProfileReference` (its maximum over all parameters found from a GLM start):
    ``(d, ref, P)``."""
    d = simulate(seed, groups, per)
    ref = reference_model(d, 20)
    start = np.r_[glm_beta(ref.y, ref.X, "bernoulli", ref.trials), 1.0, 0.0, 1.0]
    return d, ref, CovProfileReference(ref, start, RHO_EDGE)


def check(seed, recs, groups, per, alpha=0.05, ends=False):
    """The exact deviance at the recorded ends of each of ``recs`` (records of one data set)
    and at the truth; with ``ends``, the exact ends too."""
    cut = float(stats.chi2.ppf(1.0 - alpha, 1))
    t0 = time.process_time()
    d, ref, P = exact_reference(seed, groups, per)
    truth = TRUE[NAME]
    ours = [r["ci"][NAME][:2] for r in recs]
    points = [truth] + [c for lo_up in ours for c in lo_up if np.isfinite(c) and c != 0.0]
    for c in points:
        P.profile(c)
    out = {"seed": seed, "ours": ours, "notes": [r["ci"][NAME][4] for r in recs]}
    if ends:
        th = P.theta_top
        step = max(0.25 * float(np.sqrt(th[2] * th[4])), 0.05)
        e = [P.end(-1, cut, float(th[3]), step), P.end(+1, cut, float(th[3]), step)]
        out["ref_ends"] = [e[0] if e[0] is not None else -np.inf,
                           e[1] if e[1] is not None else np.inf]
        coarse = reference_model(d, 14)
        out["node_study_14_vs_20"] = [
            abs(coarse.loglike(P.argmax[k]) - ref.loglike(P.argmax[k]))
            for k in (min(P.argmax, key=lambda k: abs(k - v)) for v in e if v is not None)]
    dev = {c: 2.0 * (P.l_top - P.values[c]) for c in P.values}  # with the final l_top
    out["D_ref_at_ours"] = [[dev.get(c, np.nan) for c in lo_up] for lo_up in ours]
    out["D_ref_at_truth"] = dev[truth]
    out["truth_in_exact_interval"] = bool(dev[truth] <= cut)
    out["ours_cover"] = [bool(lo <= truth <= up) for lo, up in ours]
    out.update(l_top=P.l_top, theta_top=P.theta_top.tolist(),
               argmax={str(c): P.argmax[c].tolist() for c in points},
               cpu=time.process_time() - t0)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", required=True, nargs="+",
                    help="one or more record files of bench_profile_coverage.py")
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--groups", type=int, default=50)
    ap.add_argument("--per", type=int, default=12)
    ap.add_argument("--ends", action="store_true", help="find the exact ends too")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    recs = [{r["seed"]: r for r in map(json.loads, open(path))} for path in args.records]
    with open(args.out, "a") as f:
        for seed in args.seeds:
            out = check(seed, [r[seed] for r in recs], args.groups, args.per, ends=args.ends)
            f.write(json.dumps(out) + "\n")
            f.flush()
            print(seed, "ours", np.round(out["ours"], 4).tolist(), "D_ref there",
                  np.round(out["D_ref_at_ours"], 3).tolist(), "D_ref(truth)",
                  round(out["D_ref_at_truth"], 3), "ours cover", out["ours_cover"],
                  "exact ends", out.get("ref_ends"), f"{out['cpu']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
