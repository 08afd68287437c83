"""The Laplace start's path on bench_scale.py's crossed data: each evaluation's parameters
and value (glmm_sm.laplace.step.LocalLaplace.evaluate, wrapped), L-BFGS-B's stop, and from
which evaluation on every later iterate stays within 0.1 / 0.01 / 0.001 of the fit's SEs
(those of the session-15 fit at that n, given below) of the final estimate.
Usage: PYTHONPATH=. OPENBLAS_NUM_THREADS=1 python benchmarks/results/scale_s15_laplace_path.py 1e5 1e6"""
import json, sys, time
sys.path.insert(0, "benchmarks")
import numpy as np, statsmodels.api as sm
from bench_scale import simulate, MODELS
from glmm_sm import MonteCarloGLMM
from glmm_sm.laplace import step as lstep

SE = {100000: [0.11565, 0.0080042, 0.022525, 0.084129],
      1000000: [0.10970, 0.0025, 0.0069, 0.0761]}
path = []
evaluate = lstep.LocalLaplace.evaluate
def traced(self, theta, u0, gradient=True):
    out = evaluate(self, theta, u0, gradient)
    path.append((np.array(theta, dtype=float), float(out[0])))
    return out
lstep.LocalLaplace.evaluate = traced
for n in map(int, map(float, sys.argv[1:])):
    model = MonteCarloGLMM.from_formula(MODELS["crossed"]["formula"], data=simulate("crossed", n),
                                        family=sm.families.Binomial())
    path.clear()
    c = time.process_time()
    fit = lstep.laplace_fit(model.block_system())
    cpu = time.process_time() - c
    final = fit.params
    se = np.asarray(SE[n])
    dist = [float(np.max(np.abs(p - final) / se)) for p, _ in path[:-1]]
    first = {}
    for tol in (0.1, 0.01, 0.001):
        k = len(dist)
        while k > 0 and dist[k - 1] <= tol:
            k -= 1
        first[str(tol)] = k + 1  # evaluations needed (1-based) before every later one is within tol
    print(json.dumps({"n": n, "evaluations": len(path) - 1, "cpu": cpu, "nit": int(fit.info.nit),
                      "message": str(fit.info.message), "within_se_from_evaluation": first,
                      "dist_se": [round(d, 6) for d in dist],
                      "value_gain": [p[1] - path[0][1] for p in path[:-1]][-6:]}), flush=True)
