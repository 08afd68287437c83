"""One protocol for both engines (:class:`glmm_sm.mcla.engine.EngineBase`), and named records
for the kernels.

The plain and the Rao-Blackwellized engine validate ``params`` the same way (length, finite
values, the covariance check), share the one-point cache, honour ``derivs`` and run their
partitions on threads with the same result.  Before, ``RBEngine.evaluate`` ignored
``derivs`` and skipped the covariance check.  The kernels take named records; no function
of the kernels takes more than :data:`MAX_PARAMS` parameters (they had up to 34).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import glmm_sm
from glmm_sm import MonteCarloGLMM
from glmm_sm.core.random import as_seed_sequence
from glmm_sm.laplace.step import conditional_mode
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.engine import EngineBase, MCLAEngine
from glmm_sm.mcla.rb.engine import RBEngine
from glmm_sm.mcla.rb.split import RBSampler, RBStructure

MAX_PARAMS = 10


def _crossed(seed=5, n_subj=40, n_item=6):
    rng = np.random.default_rng(seed)
    subj = np.repeat(np.arange(n_subj), n_item)
    item = np.tile(np.arange(n_item), n_subj)
    x = rng.normal(size=subj.size)
    eta = -0.3 + 0.5 * x + rng.normal(0, 1.0, n_subj)[subj] + rng.normal(0, 0.5, n_item)[item]
    y = (rng.random(subj.size) < 1 / (1 + np.exp(-eta))).astype(int)
    d = pd.DataFrame({"y": y, "x": x, "subj": subj, "item": item})
    return MonteCarloGLMM.from_formula("y ~ x + (1 | subj) + (1 | item)", data=d,
                                       family="bernoulli")


@pytest.fixture(scope="module")
def engines():
    """Both engines on draws centred at the Laplace estimate (no fit needed)."""
    mod = _crossed()
    lap = mod.fit(method="laplace")
    params = np.asarray(lap.params, dtype=float)
    mod.sample_draws(300, random_state=1, params=params, n_jobs=1)
    plain = mod.engine
    system = mod.block_system()
    mode = conditional_mode(system, params[:mod.k_fe], params[mod.k_fe:])
    subj = list(mod.vcp_names).index("subj")
    st = RBStructure(system.data, split=np.full(system.data.n_blocks, subj))
    smp = RBSampler(system, params, mode, st)
    rb = RBEngine(DrawSet.from_sampler(smp, 300, as_seed_sequence(1)), n_jobs=1)
    return plain, rb, params


def test_both_engines_follow_the_protocol(engines):
    plain, rb, _ = engines
    assert isinstance(plain, MCLAEngine) and isinstance(rb, RBEngine)
    assert isinstance(plain, EngineBase) and isinstance(rb, EngineBase)


@pytest.mark.parametrize("which", [0, 1])
def test_derivs_false_gives_the_value_only_and_the_same_value(engines, which):
    eng, theta = engines[which], engines[2]
    eng._last = None
    light = eng.evaluate(theta, derivs=False)
    assert light.gradient is None and light.hessian is None
    full = eng.evaluate(theta, derivs=True)
    assert full.gradient is not None and full.hessian is not None
    assert full.value == light.value
    # a value-only call after a full one is answered by the cache
    assert eng.evaluate(theta, derivs=False) is full


@pytest.mark.parametrize("which", [0, 1])
def test_invalid_params_are_handled_alike(engines, which):
    eng, theta = engines[which], engines[2]
    bad = theta.copy()
    bad[-1] = -0.1
    ev = eng.evaluate(bad)
    assert ev.value == -np.inf and ev.gradient is None
    bad[-1] = np.nan
    assert eng.evaluate(bad).value == -np.inf
    with pytest.raises(ValueError, match="params must have length"):
        eng.evaluate(theta[:-1])


@pytest.mark.parametrize("which", [0, 1])
def test_threads_do_not_change_a_bit(engines, which):
    eng, theta = engines[which], engines[2]
    eng._last = None
    one = eng.evaluate(theta)
    n_jobs = eng.n_jobs
    try:
        eng.n_jobs = 2
        if hasattr(eng, "backend"):
            from glmm_sm.mcla.engine import ThreadBackend

            eng.backend = ThreadBackend(2)
        eng._last = None
        two = eng.evaluate(theta)
    finally:
        eng.n_jobs = n_jobs
    assert two.value == one.value
    assert np.array_equal(two.gradient, one.gradient)
    assert np.array_equal(two.hessian, one.hessian)


def _n_params(node):
    a = node.args
    n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
    n += bool(a.vararg) + bool(a.kwarg)
    return n - bool(a.args and a.args[0].arg in ("self", "cls"))


def test_no_kernel_function_takes_more_than_ten_parameters():
    root = Path(glmm_sm.__file__).parent / "mcla" / "kernels"
    long = {}
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and _n_params(node) > MAX_PARAMS:
                long[f"{path.stem}.{node.name}"] = _n_params(node)
    assert not long, long
    sample = ast.parse("def f(a, b, *c, d=1, **e): pass").body[0]
    assert _n_params(sample) == 5
