"""The crossed fit with the pilot's rule at K nodes (glmm_sm.mcla.rb.round.PILOT_NODES
patched), one fit per n in this process: per-phase CPU and the rounds' movement."""
import json, sys, time
sys.path.insert(0, "benchmarks")
import numpy as np, statsmodels.api as sm
from bench_scale import simulate, MODELS
from glmm_sm import MonteCarloGLMM
import glmm_sm.mcla.rb.round as rr
K = int(sys.argv[1])
rr.PILOT_NODES = K
df = simulate("crossed", 2000)
MonteCarloGLMM.from_formula(MODELS["crossed"]["formula"], data=df, family=sm.families.Binomial()).fit(random_state=0, disp=False)
for n in map(int, map(float, sys.argv[2:])):
    df = simulate("crossed", n)
    c0 = time.process_time()
    model = MonteCarloGLMM.from_formula(MODELS["crossed"]["formula"], data=df, family=sm.families.Binomial())
    res = model.fit(random_state=0, disp=False, time_budget=3600)
    print(json.dumps({"K": K, "n": n, "cpu": time.process_time() - c0, "laplace": res.fit_log.laplace.get("cpu_seconds"),
        "rounds": [{k: x.get(k) for k in ("round", "cpu_seconds", "moved", "evaluations", "pilot_rule", "converged")} for x in res.fit_log.rounds],
        "params": np.asarray(res.params).tolist(), "bse": np.asarray(res.bse).tolist(),
        "mcse": np.sqrt(np.diag(np.asarray(res.mcse_cov))).tolist(), "converged": bool(res.converged)}), flush=True)
