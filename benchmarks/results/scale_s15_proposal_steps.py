"""The integrated proposal's Newton iterations (glmm_sm.mcla.rb.proposal.integrated_laplace)
on bench_scale.py's crossed data at the Laplace estimate, with the pilot's 6-node and the
rounds' 12-node rules: passes of the derivatives and process CPU with the stopping rule of
session 15 (the predicted error left) and with the step-size rule alone (before), and the
distance between the two proposals' centres in proposal SDs.
Usage: PYTHONPATH=. OPENBLAS_NUM_THREADS=1 python benchmarks/results/scale_s15_proposal_steps.py 1e5 1e6"""
import json, sys, time
sys.path.insert(0, "benchmarks")
import numpy as np, statsmodels.api as sm
from bench_scale import simulate, MODELS
from glmm_sm import MonteCarloGLMM
from glmm_sm.mcla.rb import proposal
from glmm_sm.mcla.rb.split import RBSampler, RBStructure

calls = []
derivatives = proposal._Target.derivatives
def counted(self, V):
    calls.append(1)
    return derivatives(self, V)
proposal._Target.derivatives = counted
left_after = proposal._left_after
for n in map(int, map(float, sys.argv[1:])):
    model = MonteCarloGLMM.from_formula(MODELS["crossed"]["formula"], data=simulate("crossed", n),
                                        family=sm.families.Binomial())
    params, _, mode = model._laplace_estimate()
    system = model.block_system()
    smp = RBSampler(system, params, mode, RBStructure(system.data), integrated=False)
    for nodes in (6, 12):
        twin = smp.with_nodes(nodes)
        out = {}
        for rule, fn in (("now", left_after), ("before", lambda s, b: np.full(s.shape, np.inf))):
            proposal._left_after = fn
            calls.clear()
            c = time.process_time()
            out[rule] = (proposal.integrated_laplace(twin, params), len(calls), time.process_time() - c)
        d = max(float(np.max(np.abs(out["now"][0][b][0] - out["before"][0][b][0])
                             / np.sqrt(np.diag(out["before"][0][b][1])))) for b in out["before"][0])
        print(json.dumps({"n": n, "nodes": nodes, "passes_now": out["now"][1], "passes_before": out["before"][1],
                          "cpu_now": out["now"][2], "cpu_before": out["before"][2], "centre_moved_sd": d}), flush=True)
