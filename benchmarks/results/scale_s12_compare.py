"""Kernel outputs (value, gradient, Hessian, MCSE middle, ESS, random-effect moments) on
small RB designs, saved to an npz for comparing two checkouts (benchmarks/README.md, issue 21,
"the tile no longer depends on the rows"); set PYTHONPATH and TESTS_DIR to the checkout."""
import os
import sys
import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm

sys.path.insert(0, os.environ["TESTS_DIR"])
from numpy.random import SeedSequence
from test_crossed_scale_memory import BETA, NU, _crossed, _sampler
from test_rb_kernel import _model

from glmm_sm import MonteCarloGLMM
from glmm_sm.core.random import as_seed_sequence
from glmm_sm.laplace.step import conditional_mode
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.rb.engine import RBEngine
from glmm_sm.mcla.rb.split import RBSampler, RBStructure

res = {}
def put(name, eng, th):
    ev = eng.evaluate(np.asarray(th, float), 2)
    res[name + ":value"] = np.array([ev.value])
    for k in ("gradient", "hessian", "score_var", "ess"):
        res[name + ":" + k] = np.asarray(getattr(ev, k))
    mean, sd = eng.random_effect_moments(np.asarray(th, float))
    res[name + ":re_mean"] = mean
    res[name + ":re_sd"] = sd

for shift in (True, False):
    model = _crossed(3_000, 200, 8, free_share=0.1)
    smp = _sampler(model, shift=shift)
    eng = RBEngine(DrawSet.from_sampler(smp, 150, SeedSequence(4)), n_jobs=1)
    put(f"crossed_shift{shift}", eng, np.r_[BETA, NU] * 1.01)
for kind in ("binomial", "poisson"):
    mod = _model(kind, 60, 8)
    system = mod.block_system()
    params = np.r_[-0.4, 0.6, 1.2, 0.3]
    mode = conditional_mode(system, params[:2], params[2:])
    smp = RBSampler(system, params, mode, RBStructure(system.data))
    eng = RBEngine(DrawSet.from_sampler(smp, 200, as_seed_sequence(3)), n_jobs=1)
    put(kind, eng, params * 1.02)
# negative binomial with free observations, moving draws
rng = np.random.default_rng(8)
A, B = 12, 30
d = pd.DataFrame({"a": np.repeat(np.arange(A), B), "b": np.tile(np.arange(B), A)})
d["z"] = (rng.random(len(d)) < 0.7).astype(float)
d["x"] = rng.normal(size=len(d))
eta = (0.5 + 0.4 * d["x"] + rng.normal(0, 0.6, A)[d["a"]] + d["z"] * rng.normal(0, 0.6, B)[d["b"]])
d["y"] = rng.negative_binomial(1 / 0.5, 1 / (1 + 0.5 * np.exp(eta)))
mod = MonteCarloGLMM.from_formula("y ~ x", {"a": "0 + C(a)", "b": "0 + C(b):z"}, d,
                                  family=sm.families.NegativeBinomial(alpha=1.0))
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fit = mod.fit(random_state=1, disp=False, rao_blackwell=True, m=200, max_rounds=1)
assert type(fit.engine).__name__ == "RBEngine"
put("negbin", fit.engine, np.r_[0.5, 0.4, 0.36, 0.36, 0.5])
np.savez(sys.argv[1], **res)
print("saved", len(res))
