"""Default fits of the published-data corpus, timed, with their accuracy against exact AGHQ.

Run: ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_corpus.py [NAME ...]``.  For each data
set of ``tests/corpus.py`` (all by default) it fits the model with default options
(``random_state`` fixed per data set, ``n_jobs=1``, ``disp=False``) after an untimed
warm-up fit (numba compilation), and prints n, the number of blocks, the largest block
(random effects), the fit time, the final m, the rounds, the largest MCSE/SE, whether the
Hessian is negative definite, and the convergence flag and message.  For the data sets with
one random intercept it also fits the exact MLE by adaptive Gauss-Hermite quadrature
(``tests/aghq.py``, 60 nodes) and prints the largest ``|mcla - aghq| / MCSE`` and the range of
the SE ratios MCLA/AGHQ.  A fit that raises is reported with the head of its traceback.
"""

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import patsy  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from aghq import RandomInterceptGLMM  # noqa: E402
from corpus import NAMES, load  # noqa: E402

import glmm_sm  # noqa: E402

HEADER = (f"{'data':13s} {'n':>5s} {'blocks':>6s} {'max q':>5s} {'seconds':>8s} {'m':>7s} "
          f"{'rounds':>6s} {'MCSE/SE':>8s} {'H<0':>4s} {'conv':>5s} {'|z| AGHQ':>8s} "
          f"{'SE ratio':>11s}  message")


def warm_up():
    """One small fit so that numba's compilation is not charged to the first data set."""
    bh = glmm_sm.datasets.load("BoothHobert")
    mod = glmm_sm.MonteCarloGLMM.from_formula("y ~ 0 + x1", {"z1": "0 + C(z1)"}, bh)
    mod.fit(random_state=0, disp=False, n_jobs=1)


def aghq(case):
    """The AGHQ MLE of a single-intercept case (None for nested designs)."""
    if case.cluster is None:
        return None
    y, X = patsy.dmatrices(case.formula, case.data, return_type="dataframe")
    mod = RandomInterceptGLMM(y.iloc[:, 0].to_numpy(), X.to_numpy(),
                              case.data.loc[y.index, case.cluster].to_numpy(),
                              case.family_name)
    return mod.fit()


def accuracy(res, exact):
    """``(max |z|, SE ratio range)`` text against the AGHQ fit, or blanks."""
    if exact is None:
        return f"{'-':>8s} {'-':>11s}"
    # A within-cluster contrast (epil's V4) can have an MCSE of exactly 0: measured against
    # the rounding floor of 1e-10 SE instead, as in tests/test_corpus.py.
    scale = np.maximum(np.asarray(res.mcse()), 1e-10 * np.asarray(res.bse))
    z = (np.asarray(res.params) - exact.params) / scale
    ratio = np.asarray(res.bse) / exact.bse
    return f"{np.max(np.abs(z)):8.2f} {ratio.min():5.3f}-{ratio.max():5.3f}"


def run(name):
    """Fit one data set and print its row."""
    case = load(name)
    mod = case.model()
    max_q = max(b.q for b in mod.blocks)
    head = f"{name:13s} {int(mod.nobs):5d} {len(mod.blocks):6d} {max_q:5d}"
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = mod.fit(random_state=case.seed, disp=False, n_jobs=1)
    except Exception as exc:
        sec = time.perf_counter() - t0
        tb = traceback.format_exception(exc)
        print(f"{head} {sec:8.2f} raised {type(exc).__name__}: {exc}")
        print("    " + "    ".join(tb[-3:]))
        return
    sec = time.perf_counter() - t0
    ratio = np.max(np.asarray(res.mcse()) / np.asarray(res.bse))
    negdef = bool(np.all(np.linalg.eigvalsh(res.hessian) < 0))
    print(f"{head} {sec:8.2f} {res.m:7d} {len(res.fit_log.rounds):6d} {ratio:8.3f} "
          f"{'yes' if negdef else 'NO':>4s} {str(bool(res.converged)):>5s} "
          f"{accuracy(res, aghq(case))}  {res.fit_log.message}", flush=True)


def main(names):
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise SystemExit(f"unknown data set(s) {unknown}; choose from {list(NAMES)}")
    warm_up()
    print(HEADER)
    for name in names:
        run(name)


if __name__ == "__main__":
    main(sys.argv[1:] or list(NAMES))
