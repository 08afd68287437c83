"""The pilot-rule check (glmm_sm.fit.driver._RoundState._pilot_rule_moved) run after every
pilot of bench_scale.py's crossed fit (it runs only where the movement exceeds 3), beside
the check before session 15 (every pilot draw evaluated under the rounds' rule, the
pilot-rule Hessian from them).  Prints, per n: the two Newton steps in combined MCSEs
(the check's units), their difference, the movements, and each one's process CPU.
Usage: PYTHONPATH=. OPENBLAS_NUM_THREADS=1 python benchmarks/results/scale_s15_check_variants.py 1e4 1e5"""
import json, sys, time
sys.path.insert(0, "benchmarks")
import numpy as np, statsmodels.api as sm
from bench_scale import simulate, MODELS
from glmm_sm import MonteCarloGLMM
import glmm_sm.fit.driver as drv

OUT = {}
orig_record = drv._RoundState._record


def record(self, rnd, theta, res, ev, seconds, engine=None):
    out = orig_record(self, rnd, theta, res, ev, seconds, engine)
    if rnd == 1:
        info, err, mcse = out
        se = np.sqrt(np.diag(err.cov))
        ref = np.fmax(np.sqrt(mcse**2 + self.prev_mcse**2), drv.MOVE_FLOOR_SE * se)
        c = time.process_time()
        new = self._pilot_rule_moved(rnd, engine, theta, ref)
        OUT["cpu_new"] = time.process_time() - c
        prev, centre = self.outcome.engine, self.centre
        c = time.process_time()
        ev0 = prev.with_nodes(len(engine.sampler.xs)).evaluate(centre)
        full = np.linalg.solve(-ev0.hessian, ev0.gradient)
        OUT["cpu_full"] = time.process_time() - c
        pe = self.outcome.evaluation
        probe = prev.centre_probe()
        a, b = probe.with_nodes(len(engine.sampler.xs)).evaluate(centre), probe.evaluate(centre)
        step = np.linalg.solve(-(pe.hessian + a.hessian - b.hessian), pe.gradient + a.gradient - b.gradient)
        across = (info.get("pilot_rule") or {}).get("moved_across_rules", info["moved"])
        OUT.update(moved_across_rules=across, moved_new=new["moved"], probe=new["probe"],
                   moved_full=float(np.max(np.abs(theta - centre - full) / ref)),
                   step_full=(full / ref).tolist(), step_new=(step / ref).tolist(),
                   diff=((step - full) / ref).tolist(), ref_se=(ref / se).tolist())
    return out


drv._RoundState._record = record
df = simulate("crossed", 2000)
MonteCarloGLMM.from_formula(MODELS["crossed"]["formula"], data=df, family=sm.families.Binomial()).fit(random_state=0, disp=False)
for n in map(int, map(float, sys.argv[1:])):
    OUT.clear()
    df = simulate("crossed", n)
    model = MonteCarloGLMM.from_formula(MODELS["crossed"]["formula"], data=df, family=sm.families.Binomial())
    res = model.fit(random_state=0, disp=False, time_budget=3600)
    print(json.dumps({"n": n, **OUT}), flush=True)
