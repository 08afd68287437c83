"""Sums over observations in a fixed order: within each block, then over the blocks.

Every sum over the whole data that a fit takes (the Gram matrix of the fixed-effects design,
the GLM start's score and information, the Laplace log-likelihood and its gradient) is
formed in two steps: each block's rows are added in layout order (:func:`block_sums`,
:func:`block_grams`), then the blocks' sums are added one after the other in block order
within chunks of :data:`FOLD_CHUNK` blocks, and the chunks' sums one after the other
(:func:`fold`).  The result does not depend on how the blocks are split among partitions
or workers: a cluster that holds the data in pieces (:mod:`glmm_sm.mcla.partitioned`)
computes each piece's block sums where the piece is and folds them in block order, and gets
the single machine's bits (BLAS products group rows in ways that depend on the matrix's
size, so a piece's ``X' r`` would not add up to the same bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["block_sums", "block_grams", "fold", "FOLD_CHUNK", "PartialFold", "partial_fold",
           "merge_folds"]

_FLAGS = dict(cache=True, nogil=True, error_model="numpy")


def _block_sums_py(ptr, M, out):
    for b in range(ptr.shape[0] - 1):
        for i in range(ptr[b], ptr[b + 1]):
            for j in range(M.shape[1]):
                out[b, j] += M[i, j]


def _block_grams_py(ptr, X, w, out):
    p = X.shape[1]
    for b in range(ptr.shape[0] - 1):
        for i in range(ptr[b], ptr[b + 1]):
            wi = w[i]
            for j in range(p):
                v = wi * X[i, j]
                for k in range(p):
                    out[b, j, k] += v * X[i, k]


def _fold_py(c, out):
    for b in range(c.shape[0]):
        for j in range(c.shape[1]):
            out[j] += c[b, j]


_JIT = {}


def _jit(f):
    """``f`` compiled by numba on first use (numba is imported then, not with the
    package: ``import glmm_sm`` stays light)."""
    g = _JIT.get(f.__name__)
    if g is None:
        import numba

        g = _JIT[f.__name__] = numba.njit(**_FLAGS)(f)
    return g


def _f64(a):
    return np.ascontiguousarray(a, dtype=np.float64)


def block_sums(ptr, M):
    """Per block the sum of its rows of ``M`` (n, k) or (n,), added in row order:
    ``(n_blocks, k)`` (or ``(n_blocks,)``); block ``b`` holds rows ``ptr[b]:ptr[b+1]``."""
    M = _f64(M)
    flat = M.ndim == 1
    M2 = M.reshape(len(M), -1)
    out = np.zeros((len(ptr) - 1, M2.shape[1]))
    _jit(_block_sums_py)(np.asarray(ptr, dtype=np.int64), M2, out)
    return out[:, 0] if flat else out


def block_grams(ptr, X, w=None):
    """Per block ``X_b' diag(w_b) X_b`` (n_blocks, p, p), its rows added in row order
    (``w``: ones by default)."""
    X = _f64(X)
    w = np.ones(X.shape[0]) if w is None else _f64(w)
    out = np.zeros((len(ptr) - 1, X.shape[1], X.shape[1]))
    _jit(_block_grams_py)(np.asarray(ptr, dtype=np.int64), X, w, out)
    return out


#: Blocks per chunk of :func:`fold`: a piece of the data sends the sums of the chunks it
#: starts, and its blocks' own terms only in a chunk another piece started (at most
#: ``FOLD_CHUNK - 1`` blocks).
FOLD_CHUNK = 128


def _chunk_sums(c2, B, C):
    """Sums of the chunks of ``C`` rows of the ``B``-row array ``c2``."""
    out = np.zeros((-(-B // C), c2.shape[1]))
    for k in range(out.shape[0]):
        _jit(_fold_py)(c2[k * C : min((k + 1) * C, B)], out[k])
    return out


def fold(c):
    """The sum of the blocks' sums ``c`` (n_blocks, ...) over the blocks: within chunks of
    :data:`FOLD_CHUNK` blocks one after the other in block order, then the chunks' sums in
    order (shape ``c.shape[1:]``; a float for ``(n_blocks,)``)."""
    c = _f64(c)
    shape = c.shape[1:]
    B = c.shape[0]
    chunks = _chunk_sums(c.reshape(B, -1), B, FOLD_CHUNK)
    out = np.zeros(chunks.shape[1])
    _jit(_fold_py)(chunks, out)
    return float(out[0]) if not shape else out.reshape(shape)


@dataclass(frozen=True)
class PartialFold:
    """A piece's share of :func:`fold` over the whole layout's blocks.

    Attributes
    ----------
    chunks : dict
        Chunk index -> the sum of the piece's blocks in it, for the chunks the piece starts
        (the first blocks of a chunk's sum, in order: the whole sum where the chunk lies in
        the piece).
    edges : dict
        Chunk index -> the piece's blocks' own terms (rows in block order), for the chunk
        another piece started (the sum goes on from that piece's part).
    shape : tuple
    chunk : int
        Blocks per chunk (:data:`FOLD_CHUNK` where the piece was).
    """

    chunks: dict
    edges: dict
    shape: tuple
    chunk: int


def partial_fold(c, b0, n_blocks):
    """:class:`PartialFold` of the block sums ``c`` of a piece whose first block is block
    ``b0`` of a layout of ``n_blocks`` blocks."""
    c = _f64(c)
    shape = c.shape[1:]
    B = c.shape[0]
    c2 = c.reshape(B, -1)
    b1 = b0 + B
    C = FOLD_CHUNK
    chunks, edges = {}, {}
    for k in range(b0 // C, -(-b1 // C)):
        lo, hi = k * C, min((k + 1) * C, n_blocks)
        a, b = max(lo, b0) - b0, min(hi, b1) - b0
        if lo >= b0:  # the piece starts chunk k: its part's sum starts the chunk's
            out = np.zeros(c2.shape[1])
            _jit(_fold_py)(c2[a:b], out)
            chunks[k] = out
        else:
            edges[k] = c2[a:b].copy()
    return PartialFold(chunks, edges, shape, C)


def merge_folds(parts, n_blocks):
    """:func:`fold` of the whole layout from the pieces' :class:`PartialFold`, in piece
    order: the same bits."""
    C = parts[0].chunk
    if any(p.chunk != C for p in parts) or C != FOLD_CHUNK:
        raise ValueError(f"the pieces folded in chunks of {sorted({p.chunk for p in parts})} "
                         f"blocks, here {FOLD_CHUNK}: every process must use the same "
                         "FOLD_CHUNK")
    n_chunks = -(-n_blocks // C)
    shape = parts[0].shape
    K = int(np.prod(shape, dtype=np.int64))
    sums = np.zeros((n_chunks, K))
    for k in range(n_chunks):
        sums[k] = next(p.chunks[k] for p in parts if k in p.chunks)
        for p in parts:
            if k in p.edges:
                _jit(_fold_py)(p.edges[k], sums[k])
    out = np.zeros(K)
    _jit(_fold_py)(sums, out)
    return float(out[0]) if not shape else out.reshape(shape)
