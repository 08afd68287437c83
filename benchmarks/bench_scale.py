"""Time and peak memory of one fit against the number of rows, one fit per process.

Run from the repository root (R is not needed)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_scale.py                 # 10^4, 10^5
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_scale.py --n 1e4 1e5 1e6 --nice

Models (simulated, Bernoulli, ``numpy.random.default_rng(seed)``)
-----------------------------------------------------------------
intercept
    ``y ~ x1 + (1 | g)``, n/10 groups; truth ``beta = (-0.5, 0.7)``, ``var(g) = 1.0``.
slope
    ``y ~ x1 + x2 + x3 + (1 + x1 | g)``, n/10 groups; truth ``beta = (-0.3, 0.8, -0.5,
    0.3)``, ``var(Intercept) = 1.0``, ``var(x1) = 0.5``, ``cov = 0.3`` (correlation 0.42).
crossed
    ``y ~ x1 + (1 | g) + (1 | h)``, n/10 levels of ``g`` and 20 of ``h`` (every g meets
    several h: one block, the items sampled, the groups integrated); truth ``beta = (-0.2,
    0.6)``, ``var(g) = 0.8``, ``var(h) = 0.3``.

Each fit runs in its own child process (``python bench_scale.py --child ...``): the child
simulates the data, builds the model with ``from_formula`` and fits with the defaults
(``random_state=0``).  The parent reads the child's wall time, its CPU time (user + system)
and its peak resident memory (``ru_maxrss`` from ``os.wait4``), so the figures are of that
fit alone; the child reports the seconds of each stage, m, rounds, convergence and the
estimates with their standard errors against the truth.  The growth exponent is the slope
of log(time) and log(memory) against log(n) between consecutive sizes and over all of
them.  ``--nice`` runs the children under ``nice -n 19`` (the machine is shared);
``--time-budget`` sets the fits' ``time_budget`` (wall seconds).

``--r`` also fits each data set with glmer (Laplace, ``nAGQ = 1``) and glmmTMB, one R
process per fit (``benchmarks/r_scale.R``, on the same simulated data written to a CSV
file), measured the same way: the process's CPU time and peak resident memory (R, lme4 and
glmmTMB loaded, the CSV read: about 150-250 MB), and the fit's own CPU seconds
(``proc.time`` around the call).

Numba's on-disk cache is used as it is (run once before timing, or pass ``--warm`` to run
one small fit first).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

MODELS = {
    "intercept": {"formula": "y ~ x1 + (1 | g)", "per_group": 10,
                  "beta": [-0.5, 0.7], "vc": {"g": [[1.0]]}, "truth": {"g": 1.0}},
    "slope": {"formula": "y ~ x1 + x2 + x3 + (1 + x1 | g)", "per_group": 10,
              "beta": [-0.3, 0.8, -0.5, 0.3], "vc": {"g": [[1.0, 0.3], [0.3, 0.5]]},
              "truth": {"g Var(Intercept)": 1.0, "g Cov(x1, Intercept)": 0.3,
                        "g Var(x1)": 0.5}},
    "crossed": {"formula": "y ~ x1 + (1 | g) + (1 | h)", "per_group": 10, "h_levels": 20,
                "beta": [-0.2, 0.6], "vc": {"g": [[0.8]], "h": [[0.3]]},
                "truth": {"g": 0.8, "h": 0.3}},
}


def simulate(name, n, seed=2026):
    """The data of model ``name`` with ``n`` rows (a pandas DataFrame)."""
    import pandas as pd

    spec = MODELS[name]
    rng = np.random.default_rng(seed)
    n_g = max(n // spec["per_group"], 2)
    g = rng.integers(0, n_g, n)
    cols = {"g": g}
    k = len(spec["beta"]) - 1
    X = rng.normal(size=(n, k))
    for j in range(k):
        cols[f"x{j + 1}"] = X[:, j]
    eta = spec["beta"][0] + X @ np.asarray(spec["beta"][1:])
    G = np.asarray(spec["vc"]["g"])
    b = rng.multivariate_normal(np.zeros(len(G)), G, size=n_g)
    eta += b[g, 0]
    if len(G) == 2:
        eta += b[g, 1] * X[:, 0]
    if "h" in spec["vc"]:
        h = rng.integers(0, spec["h_levels"], n)
        eta += rng.normal(0, math.sqrt(spec["vc"]["h"][0][0]), spec["h_levels"])[h]
        cols["h"] = h
    cols["y"] = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame(cols)


def child(name, n, seed, sampler=None, method=None, time_budget=None, n_jobs=None):
    """One fit; prints one JSON line."""
    t0, c0 = time.perf_counter(), time.process_time()
    import statsmodels.api as sm

    import glmm_sm
    from glmm_sm import MonteCarloGLMM

    t_imp = time.perf_counter() - t0
    df = simulate(name, n)
    t1 = time.perf_counter()
    model = MonteCarloGLMM.from_formula(MODELS[name]["formula"], data=df,
                                        family=sm.families.Binomial())
    t_build = time.perf_counter() - t1
    t2 = time.perf_counter()
    kw = {"method": method} if method == "laplace" else {"random_state": seed, "disp": False}
    if sampler is not None:
        kw["sampler"] = sampler
    if time_budget is not None and method != "laplace":
        kw["time_budget"] = time_budget
    if n_jobs is not None:
        kw["n_jobs"] = n_jobs
    res = model.fit(**kw)
    t_fit = time.perf_counter() - t2
    names = list(model.exog_names) + list(model.vcp_names)
    params = np.asarray(res.params, dtype=float)
    bse = np.asarray(res.bse, dtype=float)
    rounds = res.fit_log.rounds
    print(json.dumps({
        "model": _label(name, sampler, method), "n": n,
        "groups": int(df["g"].nunique()),
        "import_s": t_imp, "build_s": t_build, "fit_s": t_fit,
        "laplace_s": res.fit_log.laplace.get("seconds"),
        "laplace_cpu_s": res.fit_log.laplace.get("cpu_seconds"),
        "m": int(res.m), "rounds": len(rounds), "converged": bool(res.converged),
        "message": res.fit_log.message,
        "min_ess": float(np.min(res.ess)) if np.size(res.ess) else None,
        "names": names, "params": params.tolist(), "bse": bse.tolist(),
        "mcse": np.sqrt(np.diag(np.asarray(res.mcse_cov))).tolist(),
        "truth": MODELS[name]["beta"] + [MODELS[name]["truth"].get(v) for v in
                                         model.vcp_names],
        "round_log": round_log(res.fit_log, names),
        "sampler": res.fit_log.sampler,
        "glmm_sm": glmm_sm.__file__, "cpu_child_s": time.process_time() - c0,
    }), flush=True)


#: The fields of each round's log entry (``FitLog.rounds``) the child reports.
ROUND_FIELDS = ("round", "m", "value", "min_ess", "max_ratio", "moved", "iterations",
                "optimizer_status", "optimizer_message", "at_maximum",
                "hessian_negative_definite", "outside_evaluations", "converged", "counted",
                "seconds", "cpu_seconds", "unmet", "m_asked", "m_next", "pilot_rule")


def round_log(log, names):
    """Each Monte Carlo round of a fit (JSON-ready): m, ESS, MCSE/SE, movement, the
    optimizer's stop, the convergence conditions missed (``unmet``: why another round
    was taken), the m the rule asked for and the next round's m, per-parameter SE, MCSE
    and MCSE/SE, and the number of objective evaluations."""
    out = []
    for info in log.rounds:
        rec = {k: _plain(info[k]) for k in ROUND_FIELDS if k in info}
        se, mcse = info.get("se"), info.get("mcse")
        if se is not None and mcse is not None:
            rec["params"] = dict(zip(names, np.asarray(info["params"], float).tolist(),
                                     strict=True))
            rec["se"] = dict(zip(names, se, strict=True))
            rec["mcse"] = dict(zip(names, mcse, strict=True))
            rec["ratio"] = {nm: (mc / s if s > 0 else None)
                            for nm, s, mc in zip(names, se, mcse, strict=True)}
        rec["evaluations"] = sum(1 for e in log.evaluations if e["round"] == info["round"])
        out.append(rec)
    return out


def _num(v, spec):
    """``v`` formatted by ``spec``, or as it is where :func:`_plain` made it a string."""
    return v if isinstance(v, str) else format(v, spec)


def _plain(v):
    """A JSON-ready value (numpy scalars as Python numbers, infinities as strings)."""
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _label(name, sampler, method):
    return name + ("" if sampler is None else f" ({sampler})") + (
        "" if method is None else f" (method={method})")


def run_child(name, n, seed, nice, sampler=None, method=None, time_budget=None,
              n_jobs=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, str(n), str(seed)]
    if n_jobs is not None:
        cmd += ["--n-jobs", str(n_jobs)]
    if sampler is not None:
        cmd += ["--sampler", sampler]
    if time_budget is not None:
        cmd += ["--time-budget", str(time_budget)]
    if method is not None:
        cmd += ["--method", method]
    if nice:
        cmd = ["nice", "-n", "19"] + cmd
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errf:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, text=True)
        out = p.stdout.read()  # read before waiting: a full pipe would block the child
        _, status, ru = os.wait4(p.pid, 0)
        errf.seek(0)
        err = errf.read()
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    rec = {"model": _label(name, sampler, method), "n": n,
           "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
           "peak_mb": ru.ru_maxrss / 1024.0, "rc": p.returncode}
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if p.returncode == 0 and lines:
        rec.update(json.loads(lines[-1]))
    else:
        rec["error"] = (err or out).strip().splitlines()[-5:]
    return rec


R_ENGINES = ("glmer", "glmmTMB")


def run_r(name, n, engine, nice):
    """One R fit (``benchmarks/r_scale.R``) of model ``name`` at ``n`` rows, measured as
    :func:`run_child` measures a glmm_sm fit."""
    import shutil

    rec = {"model": f"{name} [{engine}]", "n": n, "engine": engine}
    if shutil.which("Rscript") is None:
        return {**rec, "error": ["Rscript not found"], "wall_s": 0.0, "cpu_s": 0.0,
                "peak_mb": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "d.csv"), os.path.join(tmp, "r.json")
        simulate(name, n).to_csv(src, index=False)
        cmd = ["Rscript", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                       "r_scale.R"), src, MODELS[name]["formula"], engine, out]
        if nice:
            cmd = ["nice", "-n", "19"] + cmd
        t0 = time.perf_counter()
        with tempfile.TemporaryFile("w+") as errf:
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf)
            _, status, ru = os.wait4(p.pid, 0)
            errf.seek(0)
            err = errf.read()
        rc = os.waitstatus_to_exitcode(status)
        rec.update({"wall_s": time.perf_counter() - t0, "cpu_s": ru.ru_utime + ru.ru_stime,
                    "peak_mb": ru.ru_maxrss / 1024.0, "rc": rc})
        if rc == 0 and os.path.exists(out):
            with open(out) as fh:
                rec["r"] = json.load(fh)
        else:
            rec["error"] = err.strip().splitlines()[-5:]
    return rec


def report_r(recs):
    """The R fits' table and estimates."""
    if not recs:
        return
    print("\n| engine | model | n | wall s | CPU s (process) | CPU s (fit) | peak MB |")
    print("|---|---|---|---|---|---|---|")
    for r in recs:
        fit = "" if "r" not in r else f"{r['r']['cpu_s']:.1f}"
        err = "" if "error" not in r else f" failed: {' '.join(r['error'])[-200:]}"
        print(f"| {r['engine']} | {r['model'].split(' [')[0]} | {r['n']:,} | {r['wall_s']:.1f} "
              f"| {r['cpu_s']:.1f} | {fit} | {r['peak_mb']:.0f}{err} |")
    for r in recs:
        if "r" not in r:
            continue
        est = {**r["r"]["fixef"], **r["r"]["varcomp"]}
        print(f"- {r['model']} n={r['n']:,}: " + ", ".join(
            f"{k} {v:.3f}" + (f" ({r['r']['se'][k]:.3f})" if k in r["r"]["se"] else "")
            for k, v in est.items()) + f"; {r['r']['versions']['R']}, lme4 "
            f"{r['r']['versions']['lme4']}, glmmTMB {r['r']['versions']['glmmTMB']}")


def _slope(xs, ys):
    lx, ly = np.log(xs), np.log(ys)
    return float(np.polyfit(lx, ly, 1)[0]) if len(xs) > 1 else float("nan")


def report(recs):
    print("\n| model | n | groups | wall s | CPU s | fit s | peak MB | m | rounds | converged "
          "| min ESS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in recs:
        if "error" in r:
            print(f"| {r['model']} | {r['n']:,} | | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                  f"| {r['peak_mb']:.0f} | failed: {' '.join(r['error'])[-200:]} | | | |")
            continue
        ess = "" if r["min_ess"] is None else f"{r['min_ess']:.0f}"
        print(f"| {r['model']} | {r['n']:,} | {r['groups']:,} | {r['wall_s']:.1f} | "
              f"{r['cpu_s']:.1f} | {r['fit_s']:.1f} | {r['peak_mb']:.0f} | {r['m']:,} | "
              f"{r['rounds']} | {r['converged']} | {ess} |")
    print("\nEstimates: estimate (SE, MCSE; truth) z = (estimate - truth) / SE; variance "
          "components on the variance scale:")
    for r in recs:
        if "error" in r:
            continue
        print(f"- {r['model']} n={r['n']:,}: " + ", ".join(
            f"{nm} {p:.3f} ({s:.3f}, {mc:.1e}; {t:g}) z={(p - t) / s:+.1f}"
            for nm, p, s, mc, t in zip(r["names"], r["params"], r["bse"], r["mcse"],
                                       r["truth"], strict=True)))
    print("\nRounds (m, smallest ESS, largest MCSE/SE and its parameter, moved in combined "
          "MCSEs, optimizer status, evaluations, seconds; why another round; next m):")
    for r in recs:
        if "error" in r or not r.get("round_log"):
            continue
        print(f"- {r['model']} n={r['n']:,}:")
        for q in r["round_log"]:
            worst = ""
            if q.get("ratio"):
                nm = max((k for k, v in q["ratio"].items() if v is not None),
                         key=lambda k: q["ratio"][k], default=None)
                worst = "" if nm is None else f" ({nm})"
            why = "; ".join(q.get("unmet", [])) or "converged"
            nxt = "" if "m_next" not in q else (
                f"; next m {q['m_next']:,} (asked {q['m_asked']:,})")
            print(f"  - round {q['round']}: m {q['m']:,}, ESS {_num(q['min_ess'], '.0f')}, "
                  f"MCSE/SE {_num(q['max_ratio'], '.3f')}{worst}, moved "
                  f"{_num(q['moved'], '.2f')}, status "
                  f"{q['optimizer_status']}, {q['evaluations']} evaluations, "
                  f"{q['seconds']:.1f} s; {why}{nxt}")
    print("\nGrowth exponent (slope of log cost on log n; 1 = linear):")
    for name in dict.fromkeys(r["model"] for r in recs):
        rs = [r for r in recs if r["model"] == name and "error" not in r]
        if len(rs) < 2:
            continue
        ns = [r["n"] for r in rs]
        steps = ", ".join(
            f"{a['n']:.0e}->{b['n']:.0e}: "
            f"time {_slope([a['n'], b['n']], [a['cpu_s'], b['cpu_s']]):.2f} "
            f"mem {_slope([a['n'], b['n']], [a['peak_mb'], b['peak_mb']]):.2f}"
            for a, b in zip(rs, rs[1:], strict=False))
        print(f"- {name}: CPU time {_slope(ns, [r['cpu_s'] for r in rs]):.2f}, "
              f"peak memory {_slope(ns, [r['peak_mb'] for r in rs]):.2f} ({steps})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "N", "SEED"))
    ap.add_argument("--n", nargs="+", type=float, default=[1e4, 1e5])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nice", action="store_true", help="run the children under nice -n 19")
    ap.add_argument("--warm", action="store_true", help="one small fit first (numba cache)")
    ap.add_argument("--sampler", help="fit(sampler=...) (default: the fit's default)")
    ap.add_argument("--method", help="fit(method=...): 'laplace' times the Laplace fit alone")
    ap.add_argument("--json", help="append every record to this file (JSON lines)")
    ap.add_argument("--time-budget", type=float,
                    help="fit(time_budget=...) in seconds of wall time (default: the fit's "
                         "600 s; on a loaded machine a 10^6-row fit's wall time is several "
                         "times its CPU time)")
    ap.add_argument("--n-jobs", type=int, default=None,
                    help="fit(n_jobs=...) (default: the fit's default, every core; 1 "
                         "measures the work without the threads' contention)")
    ap.add_argument("--r", action="store_true",
                    help="also glmer and glmmTMB on the same data (benchmarks/r_scale.R)")
    a = ap.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]), int(a.child[2]), a.sampler, a.method,
              a.time_budget, a.n_jobs)
        return
    if a.warm:
        for name in a.models:
            run_child(name, 2000, a.seed, a.nice, a.sampler, a.method)
    recs, r_recs = [], []
    for name in a.models:
        for n in a.n:
            for engine in R_ENGINES if a.r else ():
                rec = run_r(name, int(n), engine, a.nice)
                print(json.dumps({k: rec.get(k) for k in ("model", "n", "wall_s", "cpu_s",
                                                           "peak_mb", "error")}), flush=True)
                r_recs.append(rec)
                if a.json:
                    with open(a.json, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
            rec = run_child(name, int(n), a.seed, a.nice, a.sampler, a.method,
                            a.time_budget, a.n_jobs)
            print(json.dumps({k: rec.get(k) for k in ("model", "n", "wall_s", "cpu_s",
                                                       "peak_mb", "m", "rounds",
                                                       "converged", "message", "error")}),
                  flush=True)
            recs.append(rec)
            if a.json:
                with open(a.json, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
    report(recs)
    report_r(r_recs)


if __name__ == "__main__":
    main()
