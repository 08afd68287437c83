"""Cheaper set-ups and evaluations of the deterministic nested fits with the same numbers
(issue 20, session 14; ``benchmarks/README.md``, "guPrenat's default fit").

* ``DrawShift``'s per-block ``sum M_j M_j'`` by a sparse product with the block-and-component
  indicator: the sums ``np.add.at`` forms (each target's terms in column order from 0), to
  the bit, on inputs with repeated targets and magnitudes from 1e-8 to 1e8.
* ``finish`` without the MCSE middle (``mc_var=False``, a deterministic rule's engine):
  value, gradient and Hessian identical to the bit, the middle zeros.
* The RB engine of the deterministic rule: its evaluation identical to the bit to the
  formulas before these changes (the full ``Ma Ma' / nu`` per level summed per block, the
  MCSE middle formed and then zeroed).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from glmm_sm import MonteCarloGLMM
from glmm_sm.mcla.engine import finish
from glmm_sm.mcla.partials import DrawShift


def _model(seed=5, C=12, J=6):
    rng = np.random.default_rng(seed)
    births = rng.integers(1, 5, C * J)
    mom = np.repeat(np.arange(C * J), births)
    comm = mom // J
    x = rng.normal(size=mom.size)
    z = rng.normal(size=mom.size)
    eta = -0.3 + 0.4 * x - 0.2 * z + rng.normal(0, 1.0, C)[comm] + rng.normal(0, 1.5, C * J)[mom]
    y = (rng.random(mom.size) < 1 / (1 + np.exp(-eta))).astype(float)
    d = pd.DataFrame({"y": y, "x": x, "z": z, "comm": comm, "mom": mom})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MonteCarloGLMM.from_formula("y ~ x + z + (1 | comm) + (1 | mom)", data=d,
                                           family="bernoulli")


def test_drawshift_block_products_are_add_at_sums():
    mod = _model()
    data = mod.layout_data(mod.factorize)
    rng = np.random.default_rng(0)
    q, p = data.q, data.k_fe
    for trial in range(5):
        M = rng.normal(size=(q, p)) * 10.0 ** rng.integers(-8, 9, (q, 1))
        shift = DrawShift(data, M, np.zeros(p))
        ref = np.zeros((data.n_blocks, data.k_vc, p, p))
        np.add.at(ref, (data.block_of_col, data.ident), np.einsum("ji,jl->jil", M, M))
        assert np.array_equal(shift._mm, ref), trial


def test_deterministic_evaluation_same_bits_as_the_full_formulas():
    mod = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mod.fit(random_state=0, disp=False)
    assert res.fit_log.sampler["used"] == "quadrature"
    eng = res.engine  # the final round's (no variance at 0: the model's own)
    theta = np.asarray(res.params, dtype=float)
    ev = eng.evaluate(theta)
    # the formulas before: the full products per level, the MCSE middle formed
    out = eng._sums(theta)
    tot = eng._partial_sums(out, theta)
    data, st = eng.data, eng.structure
    p, T = data.k_fe, data.k_vc
    nu = theta[p : p + T]
    Ma = eng.sampler.malpha
    ind, _ = eng._level_sums()
    shift = eng._shift()
    prior = shift[0].prior_hessian(nu)
    prior += (ind @ (np.einsum("ai,aj->aij", Ma, Ma) / nu[st.lev_comp][:, None, None]
                     ).reshape(len(Ma), -1)).reshape(prior.shape)
    s0 = out.s0
    hxx = np.zeros((data.n_blocks, p, p))
    low = np.tril_indices(p)
    hxx[:, low[0], low[1]] = out.hxx
    hxx[:, low[1], low[0]] = out.hxx
    assert np.array_equal(tot.hxx[0], hxx + s0[:, None, None] * prior)
    full = finish(tot, theta, data, eng.m, True, mc_var=True)
    cheap = finish(tot, theta, data, eng.m, True, mc_var=False)
    assert cheap.value == full.value
    assert np.array_equal(cheap.gradient, full.gradient)
    assert np.array_equal(cheap.hessian, full.hessian)
    assert not np.any(cheap.score_var)
    C = (out.sC / out.s0[:, None, None]).sum(axis=0)
    assert ev.value == full.value
    assert np.array_equal(ev.hessian, full.hessian + 0.5 * (C + C.T))
    assert not np.any(ev.score_var)
