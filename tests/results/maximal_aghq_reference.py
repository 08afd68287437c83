"""Exact MLE of the maximal crossed model of ``tests/test_maximal_honesty.py`` by nested
adaptive Gauss-Hermite quadrature (``tests/aghq_crossed_vector.py``, plain numpy/scipy,
independent of glmm_sm), with a node study; writes ``maximal_aghq_reference.json``.

Design: :func:`test_maximal_honesty.design_frame` (30 subjects x 4 items x 2 conditions x 2
Bernoulli replicates), ``y ~ cond + (1 + cond | subject) + (1 + cond | item)``; the
replicates of a cell are one binomial cell with 2 trials for the quadrature.  Parameters in
glmm_sm's order ``(Intercept, cond, subject Var(Intercept), subject Cov(cond, Intercept),
subject Var(cond), item Var(Intercept), item Cov(cond, Intercept), item Var(cond))``.

Steps: (1) the start: glmm_sm's Laplace estimate (a start only: Newton's fixed point does not
depend on it); (2) the Hessian by central differences of the (3, 7) rule's score (``K_out =
3`` nodes per item dimension, 3^8 = 6,561 outer nodes; ``K_in = 7`` per subject dimension),
Newton to a step below 1e-7 SE (the inverse of minus that Hessian gives the SEs);
(3) the node study: each rule's score at that point, and the Newton step ``-H^{-1} g`` it
implies (the difference between that rule's MLE and the (3, 7) MLE to second order), in
SEs; (4) the reference: the (3, 7) MLE plus the Newton step of the finest rule, (4, 10)
(the step is of order 1e-3 SE, so its second-order remainder is negligible).

    OPENBLAS_NUM_THREADS=1 python tests/results/maximal_aghq_reference.py [--outer5]

``--outer5`` adds the (5, 7) rule (390,625 outer nodes, several CPU minutes) to the study.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from aghq_crossed_vector import CrossedCells, CrossedVectorAGHQ, newton_mle  # noqa: E402
from test_maximal_honesty import MAXIMAL, REFERENCE, design_frame  # noqa: E402

NAMES = ["Intercept", "cond", "subject Var(Intercept)", "subject Cov(cond, Intercept)",
         "subject Var(cond)", "item Var(Intercept)", "item Cov(cond, Intercept)",
         "item Var(cond)"]
BASE = (3, 7)
REFERENCE_RULE = (4, 10)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--outer5", action="store_true")
    args = ap.parse_args(argv)
    d = design_frame()
    X = np.c_[np.ones(len(d)), d["cond"].to_numpy()]
    cells = CrossedCells.from_rows(d["y"], X, X, X, d["subject"], d["item"])
    from glmm_sm import MonteCarloGLMM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = MonteCarloGLMM.from_formula(MAXIMAL, data=d, family="bernoulli")
        lap = mod.fit(method="laplace")
    assert list(lap.params.index) == NAMES, list(lap.params.index)
    start = lap.params.to_numpy()
    out = {"design": "tests/test_maximal_honesty.py::design_frame() (seed 6, 30 x 4 x 2 x 2)",
           "formula": MAXIMAL, "names": NAMES, "laplace_start": start.tolist(),
           "python": platform.python_version(), "numpy": np.__version__,
           "scipy": scipy.__version__, "date": datetime.datetime.utcnow().isoformat(),
           "command": "OPENBLAS_NUM_THREADS=1 python tests/results/maximal_aghq_reference.py"
                      + (" --outer5" if args.outer5 else "")}

    def save():
        REFERENCE.write_text(json.dumps(out, indent=1) + "\n")

    base = CrossedVectorAGHQ(cells, *BASE, chunk=32)
    t0 = time.process_time()
    H = base.hessian(start)
    fit = newton_mle(base, start, hessian=H, tol=1e-7)
    se = fit.bse
    out["base_rule"] = list(BASE)
    out["base_mle"] = fit.params.tolist()
    out["se"] = se.tolist()
    out["base_value"] = fit.value
    out["base_last_step_se"] = fit.last_step_se
    out["base_iterations"] = fit.iterations
    out["hessian_at"] = "laplace_start"
    out["base_cpu_s"] = time.process_time() - t0
    print("base", fit.params.round(5), se.round(4), fit.iterations, flush=True)
    save()
    rules = [(2, 7), (3, 7), (3, 10), (3, 14), (4, 7), REFERENCE_RULE]
    if args.outer5:
        rules.append((5, 7))
    study = []
    for K_out, K_in in rules:
        t0 = time.process_time()
        ev = CrossedVectorAGHQ(cells, K_out, K_in, chunk=32).evaluate(fit.params)
        shift = -np.linalg.solve(H, ev.score)
        study.append({"outer_nodes": K_out, "inner_nodes": K_in, "n_outer": ev.n_outer,
                      "value": ev.value, "score": ev.score.tolist(),
                      "newton_shift_se": (shift / se).tolist(),
                      "max_abs_shift_se": float(np.max(np.abs(shift / se))),
                      "cpu_s": time.process_time() - t0})
        print(K_out, K_in, ev.value, (shift / se).round(5), flush=True)
        out["node_study"] = study
        save()
    # the reference: one Newton step of the finest rule from the (3, 7) MLE; its
    # remainder is second order in a step of ~1e-3 SE
    fine = next(s for s in study if (s["outer_nodes"], s["inner_nodes"]) == REFERENCE_RULE)
    ref = fit.params + np.asarray(fine["newton_shift_se"]) * se
    out["reference_rule"] = list(REFERENCE_RULE)
    out["params"] = ref.tolist()
    out["bse"] = se.tolist()
    out["value"] = fine["value"]
    out["reference_step_se"] = fine["max_abs_shift_se"]
    save()
    print("reference", ref.round(5), flush=True)


if __name__ == "__main__":
    main()
