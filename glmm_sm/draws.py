"""Frozen sets of importance-sampling draws: stored in memory or regenerated per chunk.

Draws are defined chunk by chunk: generation chunk ``j`` holds draws
``j * GEN_SIZE : (j + 1) * GEN_SIZE`` and comes from the ``SeedSequence`` child ``j`` of the
draw set's seed.  The draws therefore do not depend on how evaluations are chunked or how many
threads or workers evaluate them.  When storing every draw would exceed ``memory_budget``,
each evaluation regenerates each chunk from its seed instead: the same numbers, recomputed.
"""

from __future__ import annotations

import numpy as np

from ._data import LayoutData
from ._random import child_seed
from .sampler import DrawChunk

__all__ = ["DrawSet", "GEN_SIZE", "DEFAULT_MEMORY_BUDGET"]

GEN_SIZE = 1024
DEFAULT_MEMORY_BUDGET = 2**30  # bytes


class DrawSet:
    """``m`` frozen draws for one block layout.

    Use :meth:`from_sampler` or :meth:`from_arrays` to build one.

    Attributes
    ----------
    data : LayoutData
    m : int
    stored : bool
        Whether the draws are held in memory (else regenerated at each evaluation).
    """

    def __init__(self, data: LayoutData, m, chunk=None, sampler=None, seed=None):
        self.data = data
        self.m = int(m)
        self._chunk = chunk
        self.sampler = sampler
        self.seed = seed

    @property
    def stored(self) -> bool:
        return self._chunk is not None

    @classmethod
    def from_sampler(cls, sampler, m, seed, memory_budget=DEFAULT_MEMORY_BUDGET):
        """Draw ``m`` draws from ``sampler``; generation chunk ``j`` uses ``child_seed(seed, j)``.

        Parameters
        ----------
        sampler : LaplaceSampler or GlmmSampler
        m : int
            Number of draws, at least 1.
        seed : numpy.random.SeedSequence
        memory_budget : int
            Bytes the stored draws may take; beyond it they are regenerated per evaluation.
        """
        m = _check_m(m)
        data = sampler.data
        out = cls(data, m, sampler=sampler, seed=seed)
        if bytes_needed(data, m) <= memory_budget:
            out._chunk = out.all_draws()
        return out

    @classmethod
    def from_arrays(cls, data: LayoutData, U, logf, S):
        """Wrap given draws (layout order): ``U`` (q, m), ``logf`` (B, m), ``S`` (B, T, m)."""
        U = np.ascontiguousarray(U, dtype=np.float64)
        return cls(data, U.shape[1], chunk=DrawChunk(U, np.ascontiguousarray(logf),
                                                     np.ascontiguousarray(S)))

    @property
    def n_gen_chunks(self) -> int:
        return -(-self.m // GEN_SIZE)

    def generate(self, j):
        """Generate generation chunk ``j`` from its own seed."""
        size = min(GEN_SIZE, self.m - j * GEN_SIZE)
        return self.sampler.generate(child_seed(self.seed, j), size)

    def chunk_ranges(self, chunk_size=None):
        """The ``(k0, k1)`` ranges an evaluation iterates over.

        Stored draws may be cut anywhere; regenerated draws are cut at generation chunks.
        """
        if not self.stored:
            return [(j * GEN_SIZE, min((j + 1) * GEN_SIZE, self.m))
                    for j in range(self.n_gen_chunks)]
        size = 4 * GEN_SIZE if chunk_size is None else int(chunk_size)
        if size < 1:
            raise ValueError(f"chunk_size must be at least 1; got {chunk_size}")
        return [(k, min(k + size, self.m)) for k in range(0, self.m, size)]

    def chunk_arrays(self, k0, k1):
        """``(U, logf, S, j0, j1)``: arrays holding draws ``k0:k1`` at columns ``j0:j1``."""
        if self.stored:
            c = self._chunk
            return c.U, c.logf, c.S, k0, k1
        c = self.generate(k0 // GEN_SIZE)
        return c.U, c.logf, c.S, 0, k1 - k0

    def all_draws(self):
        """All draws as one :class:`~glmm_sm.sampler.DrawChunk` (generated if not stored)."""
        if self.stored:
            return self._chunk
        parts = [self.generate(j) for j in range(self.n_gen_chunks)]
        return DrawChunk(np.concatenate([c.U for c in parts], axis=1),
                         np.concatenate([c.logf for c in parts], axis=1),
                         np.concatenate([c.S for c in parts], axis=2))


def bytes_needed(data: LayoutData, m):
    """Bytes to store ``m`` draws with their log densities and sums of squares."""
    return 8 * m * (data.q + data.n_blocks * (1 + data.k_vc))


def _check_m(m):
    if isinstance(m, (bool, np.bool_)) or not isinstance(m, (int, np.integer)):
        if isinstance(m, float) and m.is_integer():
            m = int(m)
        else:
            raise ValueError(f"m must be a positive integer; got {m!r}")
    if m < 1:
        raise ValueError(f"m must be at least 1; got {m}")
    return int(m)
