"""High-m reference for the many-seed honesty test of tests/test_rao_blackwell.py.

The model is ``tests/models.py``'s ``crossed()`` (100 subjects x 8 items, Bernoulli): one
block of 108 effects, which the default fit Rao-Blackwellizes (subjects integrated by
quadrature, items sampled).  The reference is a fit with ``m = 100000`` draws per round,
whose MCSE is about 6 times smaller than a default fit's.  Run from the repository root:

    OPENBLAS_NUM_THREADS=1 python tests/results/crossed_reference.py

It writes ``crossed_reference.json`` beside this file (about a minute on 2 cores).
"""

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402

import glmm_sm  # noqa: E402


def main():
    mod = models.crossed()
    t0 = time.perf_counter()
    res = mod.fit(m=100_000, random_state=20261201, disp=False, n_jobs=-1)
    out = {
        "names": list(res.params.index), "params": res.params.tolist(),
        "mcse": res.mcse().tolist(), "bse": res.bse.tolist(), "m": int(res.m),
        "converged": bool(res.converged), "rao_blackwell": res.fit_log.rao_blackwell,
        "seconds": round(time.perf_counter() - t0, 1),
        "provenance": {"glmm_sm": glmm_sm.__version__, "numpy": np.__version__,
                       "python": platform.python_version(),
                       "date": time.strftime("%Y-%m-%d")},
    }
    path = Path(__file__).with_name("crossed_reference.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
