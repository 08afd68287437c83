"""One RB evaluation with derivatives at n rows (crossed, n/10 x 20 levels, m=400)."""
import json
import resource
import sys
import time

import numpy as np

sys.path.insert(0, __import__("os").environ.get("TESTS_DIR", "tests"))
from numpy.random import SeedSequence
from test_crossed_scale_memory import BETA, NU, _crossed, _sampler

from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.rb.engine import RBEngine


def one(n, reps):
    t0 = time.process_time()
    model = _crossed(n, n // 10, 20)
    smp = _sampler(model)
    draws = DrawSet.from_sampler(smp, 400, SeedSequence(4))
    eng = RBEngine(draws, n_jobs=1)
    setup = time.process_time() - t0
    th = np.r_[BETA, NU] * 1.01
    times = []
    for _ in range(reps):
        eng.__dict__.pop("_last", None)
        t0 = time.process_time()
        ev = eng.evaluate(th.copy(), 2)
        times.append(time.process_time() - t0)
    st = eng._state()
    nums = sum(a.size for a in st)
    return dict(n=n, setup=setup, eval=times, tile=st.lw.shape[0], state_numbers=int(nums),
                value=repr(float(ev.value)), grad=[repr(float(g)) for g in ev.gradient],
                hess=[repr(float(h)) for h in ev.hessian.ravel()],
                maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

one(2000, 1)  # compile
for n in map(int, map(float, sys.argv[2:])):
    r = one(n, 2 if n <= 100_000 else 1)
    print(json.dumps(r), flush=True)
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps(r) + "\n")
