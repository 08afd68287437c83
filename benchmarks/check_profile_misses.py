"""Check the coverage study's misses against the exact profile deviance (issue 24).

For each data set (``bench_profile_coverage.simulate``, 50 groups of 12 unless
``--groups``/``--per``) and each parameter named by ``--params`` (``Intercept``, ``x``,
``g Var(Intercept)``, ``g Var(x)``), the interval recorded by ``bench_profile_coverage.py``
in ``--records`` is set beside the exact profile deviance of the independent 2-D adaptive
Gauss-Hermite likelihood (``tests/aghq2d.py``, 20 nodes per dimension; its maximum over all
parameters from ``tests/aghq2d_cov_profile.py``'s multi-start search, raised to any
constrained maximum found above it):

- ``D(truth)``: the exact deviance at the true value.  The exact 95% LR interval contains
  the truth when it is at most the chi2(1) quantile 3.84, so a recorded interval that misses
  the truth where ``D(truth) > 3.84`` is a miss of the likelihood-ratio interval itself, not
  of its computation;
- ``D(ends)``: the exact deviance at the recorded ends (3.84 where the ends are right).

The constrained maxima hold one coordinate of ``(b0, b1, Var_a, Cov, Var_b)`` and maximize
over the rest in unconstrained coordinates (the other fixed effect, log SDs, atanh of the
correlation inside the package's box ``|rho| <= 1 - 1e-4``) by L-BFGS-B with analytic
gradients from several starts (the overall maximum, and it with the correlation at 0 and
+-0.9); the highest is kept.  One JSON line per data set and parameter goes to ``--out``.

Usage::

    python benchmarks/check_profile_misses.py \
        --records benchmarks/results/profile_coverage_quadrature_s13.jsonl \
        --params Intercept --misses --out x.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from scipy import optimize, stats

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

from bench_profile_coverage import TRUE  # noqa: E402
from check_cov_profile_ends import RHO_EDGE, exact_reference  # noqa: E402

#: The held coordinate of ``theta = (b0, b1, Var_a, Cov, Var_b)`` for each parameter.
HELD = {"Intercept": 0, "x": 1, "g Var(Intercept)": 2, "g Var(x)": 4}


def _theta(f, j, c):
    """``theta`` from the free coordinates ``f`` with coordinate ``j`` held at ``c``:
    ``f`` is (free fixed effects, log SD_a, log SD_b, atanh rho) less the held one (a held
    variance replaces its log SD)."""
    f = list(f)
    beta = [c if j == k else f.pop(0) for k in (0, 1)]
    la = 0.5 * np.log(c) if j == 2 else f.pop(0)
    lb = 0.5 * np.log(c) if j == 4 else f.pop(0)
    r = np.tanh(f.pop(0))
    sa, sb = np.exp(la), np.exp(lb)
    return np.array([beta[0], beta[1], sa * sa, r * sa * sb, sb * sb])


def _free(theta, j):
    """The free coordinates of ``theta`` (inverse of :func:`_theta`)."""
    sa, sb = np.sqrt(theta[2]), np.sqrt(theta[4])
    r = float(np.clip(theta[3] / (sa * sb), -RHO_EDGE, RHO_EDGE))
    f = [theta[k] for k in (0, 1) if k != j]
    if j != 2:
        f.append(np.log(sa))
    if j != 4:
        f.append(np.log(sb))
    return np.array(f + [np.arctanh(r)])


def _grad(theta, g, j):
    """The gradient in the free coordinates from the score ``g`` in ``theta``."""
    va, cov, vb = theta[2], theta[3], theta[4]
    sa, sb = np.sqrt(va), np.sqrt(vb)
    r = cov / (sa * sb)
    out = [g[k] for k in (0, 1) if k != j]
    if j != 2:  # d/d log sa: Var_a -> 2 Var_a, Cov -> Cov
        out.append(2.0 * va * g[2] + cov * g[3])
    if j != 4:
        out.append(2.0 * vb * g[4] + cov * g[3])
    out.append((1.0 - r * r) * sa * sb * g[3])
    return np.array(out)


def constrained_max(ref, top, j, c):
    """The exact profile log-likelihood at ``theta[j] = c``: the best of several L-BFGS-B
    climbs; returns ``(value, argmax)``."""
    z = float(np.arctanh(RHO_EDGE))

    def fun(f):
        th = _theta(f, j, c)
        try:
            ll, g = ref.loglike(th), ref.score(th)
        except (ValueError, RuntimeError, np.linalg.LinAlgError, FloatingPointError):
            return 1e10, np.zeros(len(f))
        if not np.isfinite(ll):
            return 1e10, np.zeros(len(f))
        return -ll, -_grad(th, g, j)

    base = np.array(top, dtype=float)
    if j in (2, 4):
        base[j] = c
        base[3] = np.clip(base[3], -RHO_EDGE * np.sqrt(base[2] * base[4]),
                          RHO_EDGE * np.sqrt(base[2] * base[4]))
    else:
        base[j] = c
    f0 = _free(base, j)
    best, arg = -np.inf, None
    for r0 in (None, 0.0, 0.9, -0.9):
        s = f0.copy()
        if r0 is not None:
            s[-1] = np.arctanh(r0)
        bounds = [(None, None)] * (len(s) - 1) + [(-z, z)]
        for k in range(len(s) - 1):
            if (j in (0, 1) and k >= 1) or (j in (2, 4) and k >= 2):
                bounds[k] = (-8.0, 5.0)  # log SDs
        res = optimize.minimize(fun, s, jac=True, method="L-BFGS-B", bounds=bounds,
                                options={"ftol": 1e-14, "gtol": 1e-8, "maxiter": 500})
        th = _theta(res.x, j, c)
        try:
            v = float(ref.loglike(th))
        except (ValueError, RuntimeError, np.linalg.LinAlgError, FloatingPointError):
            continue
        if v > best:
            best, arg = v, th
    return best, arg


def check(seed, rec, params, groups, per, alpha=0.05):
    cut = float(stats.chi2.ppf(1.0 - alpha, 1))
    t0 = time.process_time()
    _, ref, P = exact_reference(seed, groups, per)
    top, l_top = P.theta_top, P.l_top
    out = []
    for name in params:
        j = HELD[name]
        lo, up = rec["ci"][name][:2]
        truth = TRUE[name]
        vals = {}
        for key, c in (("truth", truth), ("lower", lo), ("upper", up)):
            if np.isfinite(c) and (j not in (2, 4) or c > 0):
                vals[key], arg = constrained_max(ref, top, j, c)
                if vals[key] > l_top:  # a better overall maximum than the search found
                    l_top = vals[key]
        D = {k: 2.0 * (l_top - v) for k, v in vals.items()}
        out.append({"seed": seed, "param": name, "ours": [lo, up], "truth": truth,
                    "ours_cover": bool(lo <= truth <= up), "D_truth": D.get("truth"),
                    "exact_covers": bool(D.get("truth", np.inf) <= cut),
                    "D_ends": [D.get("lower"), D.get("upper")], "l_top": l_top,
                    "cpu": time.process_time() - t0})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", required=True)
    ap.add_argument("--params", nargs="+", default=["Intercept"], choices=sorted(HELD))
    ap.add_argument("--seeds", type=int, nargs="*", default=None,
                    help="data sets to check (default: with --misses, every miss)")
    ap.add_argument("--misses", action="store_true",
                    help="check the data sets whose interval misses the truth")
    ap.add_argument("--groups", type=int, default=50)
    ap.add_argument("--per", type=int, default=12)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    recs = {r["seed"]: r for r in map(json.loads, open(args.records)) if "ci" in r}
    with open(args.out, "a") as f:
        for name in args.params:
            seeds = args.seeds
            if seeds is None:
                seeds = sorted(s for s, r in recs.items()
                               if not (r["ci"][name][0] <= TRUE[name] <= r["ci"][name][1]))
            for seed in seeds:
                for o in check(seed, recs[seed], [name], args.groups, args.per):
                    f.write(json.dumps(o) + "\n")
                    f.flush()
                    print(seed, name, "ours", np.round(o["ours"], 4).tolist(),
                          "D_exact(ends)", np.round(np.array(o["D_ends"], float), 3).tolist(),
                          "D_exact(truth)", round(o["D_truth"], 3), "exact covers",
                          o["exact_covers"], f"{o['cpu']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
