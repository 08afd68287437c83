"""The pilot-rule check on tests/test_pilot_rule_movement.py's design (3,000 levels of 4 Bernoulli
rows, var(g) = 3): the Newton step to the full rule's maximum on the pilot's draws from every
pilot draw under the full rule (the check before session 15), against the rules' difference
from k pilot draws (k = 1 ... 256, two offsets) or from the proposal's centre draw, with the
pilot's Hessian alone or corrected by the same difference.  Differences printed in the
check's units (combined MCSEs).  Usage: PYTHONPATH=. OPENBLAS_NUM_THREADS=1 python
benchmarks/results/scale_s15_fewrows_check.py"""
import sys, warnings, numpy as np
sys.path.insert(0, "tests")
from test_pilot_rule_movement import _few_rows
import glmm_sm.fit.driver as driver
from glmm_sm.mcla.draws import DrawSet, _slice
from glmm_sm.mcla.rb.engine import RBEngine
check = driver._RoundState._pilot_rule_moved
def both(state, rnd, engine, theta, ref):
    got = check(state, rnd, engine, theta, ref)
    if got is None: return got
    prev, c = state.outcome.engine, state.centre
    N = len(engine.sampler.xs)
    ev = prev.with_nodes(N).evaluate(c); full = np.linalg.solve(-ev.hessian, ev.gradient)
    pe = state.outcome.evaluation
    print("m", prev.m, "full", full / ref, "moved", got["moved"], np.max(np.abs(theta - c - full) / ref))
    allc = prev.draws.all_draws()
    for k in (1, 4, 16, 64, 256):
        for off in (0, prev.m // 2):
            sub = DrawSet(prev.data, k, chunk=_slice(allc, off, off + k), sampler=prev.sampler)
            e = RBEngine(sub, None, 1)
            d = e.with_nodes(N).evaluate(c).gradient - e.evaluate(c).gradient
            st = np.linalg.solve(-pe.hessian, pe.gradient + d)
            print(k, off, np.round((st - full) / ref, 3))
    p = prev.centre_probe(); a, b = p.with_nodes(N).evaluate(c), p.evaluate(c); d = a.gradient - b.gradient
    st = np.linalg.solve(-pe.hessian, pe.gradient + d); print("centre", np.round((st - full) / ref, 3))
    st = np.linalg.solve(-(pe.hessian + a.hessian - b.hessian), pe.gradient + d); print("centre H corrected", np.round((st - full) / ref, 3))
    print("H rel diff", np.round((ev.hessian - pe.hessian) / np.abs(ev.hessian).max(), 4), np.round((ev.hessian - pe.hessian - a.hessian + b.hessian) / np.abs(ev.hessian).max(), 4))
    for k in (16, 64):
        sub = DrawSet(prev.data, k, chunk=_slice(allc, 0, k), sampler=prev.sampler)
        e = RBEngine(sub, None, 1); a, b = e.with_nodes(N).evaluate(c), e.evaluate(c)
        st = np.linalg.solve(-(pe.hessian + a.hessian - b.hessian), pe.gradient + a.gradient - b.gradient); print(k, "H corrected", np.round((st - full) / ref, 3))
    st = np.linalg.solve(-pe.hessian, pe.gradient); print("H6 vs H12 residual only", np.round((st) / ref, 3))
    return got
driver._RoundState._pilot_rule_moved = both
warnings.simplefilter("ignore")
_few_rows().fit(random_state=0, disp=False, n_jobs=1)
