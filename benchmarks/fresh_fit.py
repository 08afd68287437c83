"""One design's fits in a fresh process, for ``benchmarks/bench_nested.py --fresh``.

The parent writes the design's data frame to a pickle; this child loads it (numpy and
pandas imported before the clock starts, as a user's script has them to read the data),
then times in process CPU seconds: ``from glmm_sm import MonteCarloGLMM`` (statsmodels,
scipy and numba: the package's load, as ``library(glmmTMB)`` is R's), ``from_formula`` and
the first ``fit`` (which pays numba's one-time set-up in the process and loads the cached
kernels), then ``repeats - 1`` more fits, each on a fresh model from the formula.  Prints one
JSON object, with the number of Python's full (generation 2) garbage collections during the
first fit: one costs about 0.05 s in such a process, whatever triggered it.

    python benchmarks/fresh_fit.py DATA.pkl FORMULA FAMILY REPEATS
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pandas as pd  # noqa: E402

#: The fit's options: bench_nested's default fit (which imports them from here).
FIT = {"random_state": 0, "disp": False, "time_budget": 300.0}


def main(argv=None):
    path, formula, family, repeats = (argv or sys.argv[1:])[:4]
    d = pd.read_pickle(path)
    t0 = time.process_time()
    from glmm_sm import MonteCarloGLMM

    t1 = time.process_time()
    model = MonteCarloGLMM.from_formula(formula, data=d, family=family)
    full = gc.get_stats()[2]["collections"]
    t2 = time.process_time()
    first = model.fit(**FIT)
    t3 = time.process_time()
    full = gc.get_stats()[2]["collections"] - full
    again, same = [], True
    for _ in range(int(repeats) - 1):
        t = time.process_time()
        res = MonteCarloGLMM.from_formula(formula, data=d, family=family).fit(**FIT)
        again.append(time.process_time() - t)
        same = same and res.llf == first.llf
    print(json.dumps({"import_s": t1 - t0, "formula_s": t2 - t1, "first_fit_s": t3 - t2,
                      "first_fit_full_gcs": full, "again_s": again, "same_llf": bool(same),
                      "llf": first.llf}))


if __name__ == "__main__":
    main()
