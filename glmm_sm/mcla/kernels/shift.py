"""Compiled helpers for draws that move with the fixed effects (:class:`.DrawShift`):
the moved draws, their sums of squares and the prior's beta scores, each one
pass over a chunk of draws.

They replace numpy and scipy.sparse expressions (``U + du[:, None]``, ``ind @ (U * U)``,
``A @ U``) that cost as much as the hot loop itself on small blocks (salamander: 2.5 of 5.7
ns per observation x draw), and they add in the same order with the same roundings, so the
results are the same bits (no ``fastmath``: nothing is contracted or reassociated).
"""

from __future__ import annotations

import numba

_FLAGS = dict(cache=True, nogil=True, error_model="numpy")


@numba.njit(**_FLAGS)
def add_offset(U, j0, j1, du, out):
    """``out = U[:, j0:j1] + du[:, None]``."""
    for j in range(U.shape[0]):
        d = du[j]
        urow = U[j, j0:j1]
        orow = out[j]
        for k in range(j1 - j0):
            orow[k] = urow[k] + d


@numba.njit(**_FLAGS)
def csr_times(ptr, idx, val, U, square, out):
    """``out = A @ U`` (``A @ (U * U)`` if ``square``) for the CSR matrix ``A``; each row
    sums its entries in stored order, as scipy.sparse does."""
    K = U.shape[1]
    for r in range(ptr.shape[0] - 1):
        orow = out[r]
        for k in range(K):
            orow[k] = 0.0
        for nz in range(ptr[r], ptr[r + 1]):
            v = val[nz]
            urow = U[idx[nz]]
            if square:
                for k in range(K):
                    orow[k] += v * (urow[k] * urow[k])
            else:
                for k in range(K):
                    orow[k] += v * urow[k]
