import sys, time
sys.path.insert(0, "benchmarks")
import numpy as np, statsmodels.api as sm
from bench_scale import simulate, MODELS
from glmm_sm import MonteCarloGLMM
from glmm_sm.fit import separation as S
for n in map(int, map(float, sys.argv[1:])):
    df = simulate("crossed", n)
    m = MonteCarloGLMM.from_formula(MODELS["crossed"]["formula"], data=df, family=sm.families.Binomial())
    a = m.arrays
    for relax in (S.RELAX_ROWS, 10**12):
        S.RELAX_ROWS = relax
        t0 = time.process_time(); d = S.separation_direction(a.X, a.y, a.ntrials, a.weights, a.family.code); t1 = time.process_time()
        w = S.within_group_separation(a.X, a.Z, a.y, a.ntrials, a.weights, a.family.code); t2 = time.process_time()
        print(n, "relax" if relax < 10**12 else "full", d, w, round(t1 - t0, 3), round(t2 - t1, 3), flush=True)
    S.RELAX_ROWS = 20000
