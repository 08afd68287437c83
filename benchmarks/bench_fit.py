"""Time and accuracy of whole fits, and of the ``python -m glmm_sm`` demo.

Run: ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_fit.py``.  Prints, per data set, the
fit time with default settings, the final m, the smallest block ESS, the largest MCSE/SE,
and the largest distance to the exact MLE (quadrature; MCLA_SPEC section 8) in units of the
reported MCSE.  Then times the demo in a fresh process with an empty numba cache
(compilation included).
"""

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import glmm_sm  # noqa: E402
from glmm_sm import MonteCarloGLMM  # noqa: E402

# Exact MLEs by Gauss-Hermite quadrature (MCLA_SPEC section 8.1, 8.3, 8.4); salamander has no
# exact MLE: its reference is tests/results/salamander_reference.py (m = 200000).
EXACT = {
    "BoothHobert": [6.132163, 1.766462],
    "bacteria": [3.579049, -1.368949, -0.789092, -1.626867, 1.701240],
    "cbpp": [-1.399230, -0.991404, -1.127820, -1.579471, 0.419280],
    "salamander": [1.018402, 0.323024, -1.941693, 0.997013, 1.383052, 1.237212],
}


def models():
    bh = glmm_sm.datasets.load("BoothHobert")
    yield "BoothHobert", MonteCarloGLMM.from_formula("y ~ 0 + x1", {"z1": "0 + C(z1)"}, bh)
    bac = glmm_sm.datasets.load("bacteria")
    yield "bacteria", MonteCarloGLMM.from_formula("y2 ~ trt + I(week > 2)", {"ID": "0 + C(ID)"},
                                                  bac)
    cb = glmm_sm.datasets.load("cbpp2")
    agg = cb.groupby(["herd", "period"], observed=True)["Y"].agg(["sum", "count"])
    agg = agg.reset_index().rename(columns={"sum": "incidence"})
    agg["healthy"] = agg["count"] - agg["incidence"]
    yield "cbpp", MonteCarloGLMM.from_formula("incidence + healthy ~ period",
                                              {"herd": "0 + C(herd)"}, agg, family="binomial")
    sal = glmm_sm.datasets.load("salamander")
    yield "salamander", MonteCarloGLMM.from_formula(
        "Mate ~ 0 + Cross", {"F": "0 + C(Female)", "M": "0 + C(Male)"}, sal)


def main():
    print(f"{'data':12s} {'seed':>4s} {'seconds':>8s} {'m':>7s} {'min ESS':>8s} "
          f"{'MCSE/SE':>8s} {'max |est-ref|/MCSE':>19s}")
    for name, model in models():
        for seed in (1, 2, 3):
            t0 = time.perf_counter()
            res = model.fit(random_state=seed, disp=False, n_jobs=1)
            sec = time.perf_counter() - t0
            dev = np.max(np.abs(np.asarray(res.params) - EXACT[name]) / res.mcse().values)
            ratio = np.max(res.mcse().values / res.bse.values)
            print(f"{name:12s} {seed:4d} {sec:8.2f} {res.m:7d} {np.min(res.ess):8.0f} "
                  f"{ratio:8.3f} {dev:19.2f}")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "glmm_sm"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        print(f"\npython -m glmm_sm with an empty numba cache: {time.perf_counter() - t0:.1f} s "
              "(target: under 90 s)")


if __name__ == "__main__":
    main()
