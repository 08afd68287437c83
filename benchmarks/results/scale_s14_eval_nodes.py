import sys, time, json
import numpy as np
sys.path.insert(0, "tests")
from numpy.random import SeedSequence
from test_crossed_scale_memory import BETA, NU, _crossed, _sampler
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.rb.engine import RBEngine
n = int(float(sys.argv[1]))
for nn in (2000, n):
    model = _crossed(nn, nn // 10, 20); smp = _sampler(model)
    draws = DrawSet.from_sampler(smp, 400, SeedSequence(4))
    base = RBEngine(draws, n_jobs=1)
    th = np.r_[BETA, NU] * 1.01
    for rep in range(2):
        for K in (6, 8, 10, 12):
            eng = base.with_nodes(K)
            eng.__dict__.pop("_last", None)
            t0 = time.process_time(); ev = eng.evaluate(th.copy(), 2); t = time.process_time() - t0
            if nn == n: print(json.dumps(dict(n=n, K=K, cpu=round(t, 3), g=ev.gradient.tolist())), flush=True)
