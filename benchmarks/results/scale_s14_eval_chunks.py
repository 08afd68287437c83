import sys, time, json, resource
import numpy as np
sys.path.insert(0, "tests")
from numpy.random import SeedSequence
from test_crossed_scale_memory import BETA, NU, _crossed, _sampler
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.rb.engine import RBEngine

n = int(float(sys.argv[1])); sizes = [None if s == "d" else int(s) for s in sys.argv[2:]]
model = _crossed(2000, 200, 20); smp = _sampler(model)
RBEngine(DrawSet.from_sampler(smp, 400, SeedSequence(4)), n_jobs=1).evaluate(np.r_[BETA, NU]*1.01, 2)
model = _crossed(n, n // 10, 20); smp = _sampler(model)
draws = DrawSet.from_sampler(smp, 400, SeedSequence(4))
th = np.r_[BETA, NU] * 1.01
ref = None
for rep in range(2):
  for cs in sizes:
    eng = RBEngine(draws, chunk_size=cs, n_jobs=1)
    eng.evaluate(th * 1.001, 2)  # ObsOrder built, warm
    t0 = time.process_time(); ev = eng.evaluate(th.copy(), 2); t = time.process_time() - t0
    out = np.r_[ev.value, ev.gradient, ev.hessian.ravel()]
    if ref is None: ref = out
    rel = float(np.max(np.abs(out - ref) / np.maximum(np.abs(ref), 1e-300)))
    print(json.dumps(dict(n=n, chunk=cs, ranges=len(eng.ranges), cpu=round(t, 3), maxrel_vs_first=rel,
          rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)), flush=True)
