"""Sums over observations in a fixed order: within each block, then over the blocks.

Every sum over the whole data that a fit takes (the Gram matrix of the fixed-effects design,
the GLM start's score and information, the Laplace log-likelihood and its gradient) is
formed in two steps: each block's rows are added in layout order (:func:`block_sums`,
:func:`block_grams`), then the blocks' sums are added one after the other in block order
(:func:`fold`).  The result does not depend on how the blocks are split among partitions
or workers: a cluster that holds the data in pieces (:mod:`glmm_sm.mcla.partitioned`)
computes each piece's block sums where the piece is and folds them in block order, and gets
the single machine's bits (BLAS products group rows in ways that depend on the matrix's
size, so a piece's ``X' r`` would not add up to the same bits).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["block_sums", "block_grams", "fold"]

_FLAGS = dict(cache=True, nogil=True, error_model="numpy")


@numba.njit(**_FLAGS)
def _block_sums(ptr, M, out):
    for b in range(ptr.shape[0] - 1):
        for i in range(ptr[b], ptr[b + 1]):
            for j in range(M.shape[1]):
                out[b, j] += M[i, j]


@numba.njit(**_FLAGS)
def _block_grams(ptr, X, w, out):
    p = X.shape[1]
    for b in range(ptr.shape[0] - 1):
        for i in range(ptr[b], ptr[b + 1]):
            wi = w[i]
            for j in range(p):
                v = wi * X[i, j]
                for k in range(p):
                    out[b, j, k] += v * X[i, k]


@numba.njit(**_FLAGS)
def _fold(c, out):
    for b in range(c.shape[0]):
        for j in range(c.shape[1]):
            out[j] += c[b, j]


def _f64(a):
    return np.ascontiguousarray(a, dtype=np.float64)


def block_sums(ptr, M):
    """Per block the sum of its rows of ``M`` (n, k) or (n,), added in row order:
    ``(n_blocks, k)`` (or ``(n_blocks,)``); block ``b`` holds rows ``ptr[b]:ptr[b+1]``."""
    M = _f64(M)
    flat = M.ndim == 1
    M2 = M.reshape(len(M), -1)
    out = np.zeros((len(ptr) - 1, M2.shape[1]))
    _block_sums(np.asarray(ptr, dtype=np.int64), M2, out)
    return out[:, 0] if flat else out


def block_grams(ptr, X, w=None):
    """Per block ``X_b' diag(w_b) X_b`` (n_blocks, p, p), its rows added in row order
    (``w``: ones by default)."""
    X = _f64(X)
    w = np.ones(X.shape[0]) if w is None else _f64(w)
    out = np.zeros((len(ptr) - 1, X.shape[1], X.shape[1]))
    _block_grams(np.asarray(ptr, dtype=np.int64), X, w, out)
    return out


def fold(c):
    """The sum of the blocks' sums ``c`` (n_blocks, ...) over the blocks, added one after
    the other in block order (shape ``c.shape[1:]``; a float for ``(n_blocks,)``)."""
    c = _f64(c)
    shape = c.shape[1:]
    out = np.zeros(int(np.prod(shape, dtype=np.int64)))
    _fold(c.reshape(c.shape[0], -1), out)
    return float(out[0]) if not shape else out.reshape(shape)
