"""Issue 21: the correlated-term Rao-Blackwell structure is built without per-level passes
over the whole data.

``VectorRBStructure`` took each level's block of ``Z`` by slicing the CSR rows by columns
(which costs the number of columns of ``Z`` per level) and each block's column pairs by a
filter over every pair: both quadratic over all levels (5.7 s of CPU at 10^5 rows of
``benchmarks/bench_scale.py``'s slope model, 10,000 levels).  It now reads the level's CSC
columns alone and bisects the pairs sorted once; these tests check that the arrays are the
same numbers in the same order (the CPU was measured, ``benchmarks/README.md``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from glmm_sm import MonteCarloGLMM
from glmm_sm.mcla.rb.vector import VectorRBStructure, vector_quadrature_layout


def _slope_data(n_g, per=4, seed=0):
    rng = np.random.default_rng(seed)
    n = n_g * per
    g = np.repeat(np.arange(n_g), per)
    x = rng.normal(size=n)
    b = rng.multivariate_normal([0, 0], [[1.0, 0.3], [0.3, 0.5]], size=n_g)
    eta = -0.3 + 0.8 * x + b[g, 0] + b[g, 1] * x
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 + x | g)",
                                      data=pd.DataFrame({"y": y, "x": x, "g": g}),
                                      family="bernoulli")
    data = mod.layout_data(mod.factorize)
    assert vector_quadrature_layout(data, list(mod.design.vcp_names))[0]
    return data


def test_level_blocks_are_the_rows_of_z():
    """Every level's ``za`` is ``Z[rows][:, cols]`` (the former construction), exactly."""
    data = _slope_data(300)
    st = VectorRBStructure(data)
    Z = sp.csr_matrix(data.Z)
    assert st.lev_cols.shape == (300, 2)
    for a in range(len(st.lev_cols)):
        rows = st.ro[st.lev_ptr[a]:st.lev_ptr[a + 1]]
        want = np.asarray(Z[rows][:, st.lev_cols[a]].todense())
        assert np.array_equal(st.za[st.lev_ptr[a]:st.lev_ptr[a + 1]], want)
    assert np.array_equal(np.sort(st.ro), np.arange(Z.shape[0]))  # every row, once


def test_block_pairs_are_the_filtered_pairs_in_their_order():
    """``_block_pairs`` (bisection in the pairs sorted by first column) gives each block's
    pairs as the former filter over every pair did, in the same order."""
    from glmm_sm.mcla.rb.vector import _block_pairs

    data = _slope_data(300)
    vi = data.cov.vector_index(0)
    pr = np.asarray(data.pairs[vi])
    rng = np.random.default_rng(1)
    shuffled = type("D", (), {"pairs": {vi: pr[rng.permutation(len(pr))]}})()
    for d in (data, shuffled):
        full, cache = np.asarray(d.pairs[vi]), {}
        for b in range(data.n_blocks):
            c0, c1 = data.col_ptr[b], data.col_ptr[b + 1]
            want = full[(full[:, 0] >= c0) & (full[:, 0] < c1)]
            assert np.array_equal(_block_pairs(d, vi, c0, c1, cache), want)
