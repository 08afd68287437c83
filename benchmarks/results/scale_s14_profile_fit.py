import cProfile, pstats, sys, time, io, json
sys.path.insert(0, "benchmarks")
import numpy as np
import statsmodels.api as sm
from bench_scale import simulate, MODELS
from glmm_sm import MonteCarloGLMM
n = int(float(sys.argv[1]))
# warm
df = simulate("crossed", 2000)
MonteCarloGLMM.from_formula(MODELS["crossed"]["formula"], data=df, family=sm.families.Binomial()).fit(random_state=0, disp=False)
df = simulate("crossed", n)
c0 = time.process_time()
model = MonteCarloGLMM.from_formula(MODELS["crossed"]["formula"], data=df, family=sm.families.Binomial())
pr = cProfile.Profile(timer=time.process_time)
pr.enable(); res = model.fit(random_state=0, disp=False, time_budget=3600); pr.disable()
print("cpu", time.process_time() - c0, "params", res.params.tolist(), flush=True)
for x in res.fit_log.rounds: print(x["round"], x.get("cpu_seconds"), x.get("pilot_rule"))
print("laplace", res.fit_log.laplace.get("cpu_seconds"))
s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(80); print(s.getvalue())
s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(40); print(s.getvalue())
