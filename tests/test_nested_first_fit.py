"""Issue 20, "faster than glmmTMB where the design is a tree": what the faster routes of a
nested fit change, checked.

* The leaf kernel of a deep tree's nested rule
  (:func:`glmm_sm.mcla.kernels.rb_deep.leaf_level`) takes the logit and log links' ``exp``
  once per observation and path of the ancestors' nodes (``exp(c)``, ``c`` the linear
  predictor at the centre of the leaf's nodes) times one per observation and node
  (``exp(z s z_k)``), where ``|c| + |z s z_k|`` stays below
  :data:`~glmm_sm.mcla.kernels.rb_deep.SPLIT_MAX` (so that neither factor nor their product
  leaves the normal range), and one per term as before elsewhere.  Both routes in one call,
  against a plain numpy evaluation of the same sums with the family's own terms
  (:meth:`~glmm_sm.spec.families.Family.obs_terms`), at linear predictors up to 700 in
  size, where a product of exponentials taken without the check overflows.
* A fit with ``disp=False`` does not import ``tqdm`` (its bar is off: ``_NoBar``): the
  import and the ``multiprocessing`` lock of tqdm's first bar were part of a process's
  first fit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_nested_speed import _leaf_reference, leaf_rule, run_leaf

from glmm_sm.mcla.kernels.rb_deep import SPLIT_MAX, LeafRows
from glmm_sm.spec.families import BINOMIAL, POISSON

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("code", [0, 1], ids=["logit", "poisson"])
def test_leaf_split_route_against_numpy_at_large_predictors(code):
    family = BINOMIAL if code == 0 else POISSON
    rng = np.random.default_rng(11)
    n_leaf, P, K, p, T, t = 8, 5, 6, 2, 3, 2
    d = p + T
    sizes = rng.integers(1, 4, n_leaf)
    ptr = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    n = int(ptr[-1])
    rule = leaf_rule(rng, n_leaf, P, K, 0.6, t)
    # rows' predictors at the centres near +-SPLIT_MAX: some rows' |c| + |z s z_k| above it
    # (the term-by-term route), some below (the split route); the log link upwards only to
    # 150 (at a mean of exp(600) the Hessian's squared scores overflow in any evaluation)
    leaf_of_row = np.repeat(np.arange(n_leaf), sizes)
    zrow = rng.choice([1.0, -0.7, 0.4], n)
    up = [300.0, SPLIT_MAX + 10.0, SPLIT_MAX - 4.0] if code == 0 else [150.0]
    level = rng.choice([-SPLIT_MAX - 5.0, -SPLIT_MAX + 4.0, -300.0, 0.0] + up, n)
    centre = rule.centre[leaf_of_row]
    e0 = level[:, None] + 0.5 * rng.normal(size=(n, P)) - zrow[:, None] * centre
    wn = rng.integers(1, 4, n).astype(float) if code == 0 else np.ones(n)
    wy = rng.binomial(wn.astype(int), 0.5).astype(float) if code == 0 else \
        rng.poisson(3.0, n).astype(float)
    rows = LeafRows(ptr, e0, zrow, wy, wn, rng.normal(size=(n, p)))
    cmax = np.abs(e0 + zrow[:, None] * centre).max(axis=1)
    reach = cmax + np.abs(zrow * rule.scale[leaf_of_row]) * np.abs(rule.z).max()
    assert np.any(reach > SPLIT_MAX) and np.any(reach <= SPLIT_MAX)
    ref = _leaf_reference(family, rows, rule, P, K, d)
    for derivs in (True, False):
        out = run_leaf(family, rows, rule, (n_leaf, P, K, d), derivs)
        assert np.all(np.isfinite(out.val))
        np.testing.assert_allclose(out.val, ref[0], rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(out.cw, ref[3], rtol=1e-9, atol=1e-13)
        if derivs:
            scale_g = np.abs(ref[1]).max()
            np.testing.assert_allclose(out.g, ref[1], rtol=1e-9, atol=1e-12 * scale_g)
            scale_h = np.abs(ref[2]).max()
            np.testing.assert_allclose(out.H, ref[2], rtol=1e-9, atol=1e-12 * scale_h)


def test_fit_without_a_bar_does_not_import_tqdm():
    code = textwrap.dedent("""
        import sys
        import numpy as np, pandas as pd
        from glmm_sm import MonteCarloGLMM
        rng = np.random.default_rng(0)
        g = np.repeat(np.arange(10), 4)
        d = pd.DataFrame({"y": rng.binomial(5, 0.3, g.size).astype(float), "g": g,
                          "obs": np.arange(g.size)})
        d["n"] = 5.0 - d["y"]
        # cbpp-obs's form: the rounds of the driver (whose bar is off)
        MonteCarloGLMM.from_formula("y + n ~ 1 + (1 | g) + (1 | obs)", data=d,
                                    family="binomial").fit(random_state=0, disp=False)
        print("tqdm" in sys.modules)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "False"
