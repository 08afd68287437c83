"""The compiled helpers of moving draws give the same bits as the numpy / scipy.sparse
expressions they replace (``U + du``, ``ind @ (U * U)``, ``A @ U``)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from glmm_sm.mcla.kernels.shift import add_offset, csr_times


def test_helpers_equal_numpy_and_scipy_bit_for_bit():
    rng = np.random.default_rng(0)
    q, K, R = 37, 301, 9
    U = rng.normal(size=(q, K + 20))
    du = rng.normal(size=q)
    moved = np.empty((q, K))
    add_offset(U, 7, 7 + K, du, moved)
    assert np.array_equal(moved, U[:, 7:7 + K] + du[:, None])
    A = sp.random(R, q, density=0.3, random_state=1, format="csr")
    A.data = rng.normal(size=A.nnz)
    for square, ref in ((False, A @ moved), (True, A @ (moved * moved))):
        out = np.empty((R, K))
        csr_times(A.indptr, A.indices, A.data, moved, square, out)
        assert np.array_equal(out, ref)
    # An empty row gives zeros, whatever the output array held.
    A0 = sp.csr_matrix((R, q))
    out = np.full((R, K), np.nan)
    csr_times(A0.indptr, A0.indices, A0.data, moved, False, out)
    assert np.array_equal(out, np.zeros((R, K)))
