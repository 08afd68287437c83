"""Frozen sets of importance-sampling draws: stored in memory or regenerated per chunk.

Draws are defined chunk by chunk: generation chunk ``j`` holds draws
``j * GEN_SIZE : (j + 1) * GEN_SIZE`` and comes from the ``SeedSequence`` child ``j`` of the
draw set's seed.  The draws therefore do not depend on how evaluations are chunked or how many
threads or workers evaluate them.  When storing every draw would exceed ``memory_budget``,
each evaluation regenerates each chunk from its seed instead: the same numbers, recomputed.
A draw set may also be *lazy*: defined by its sampler and seed but not generated here, as when
Dask workers generate and keep their own share of the draws.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from glmm_sm.core.random import child_seed
from glmm_sm.mcla.sampler import DrawChunk
from glmm_sm.spec.arrays import LayoutData

__all__ = ["DrawSet", "GEN_SIZE", "DEFAULT_MEMORY_BUDGET", "CHUNK_SHARE", "chunk_width"]

GEN_SIZE = 1024
DEFAULT_MEMORY_BUDGET = 2**30  # bytes
#: One evaluation chunk's arrays take at most ``memory_budget / CHUNK_SHARE`` (see
#: :func:`chunk_width`).
CHUNK_SHARE = 8


class DrawSet:
    """``m`` frozen draws for one block layout.

    Use :meth:`from_sampler` or :meth:`from_arrays` to build one.

    Attributes
    ----------
    data : LayoutData
    m : int
    stored : bool
        Whether the draws are held in memory here.
    resident : bool
        Whether the draws fit the memory budget.  Evaluations of resident draws are cut into
        ``chunk_size`` ranges, of non-resident ones into generation chunks (regenerated at
        every evaluation).
    """

    def __init__(self, data: LayoutData, m, chunk=None, sampler=None, seed=None,
                 resident=True):
        self.data = data
        self.m = int(m)
        self._chunk = chunk
        self.sampler = sampler
        self.seed = seed
        self.resident = bool(resident)
        self.memory_budget = DEFAULT_MEMORY_BUDGET
        #: Per-block draw counts (int64, n_blocks) or None: block ``b`` uses draws
        #: ``0:block_m[b]`` only (:meth:`set_block_m`).
        self.block_m = None

    @property
    def stored(self) -> bool:
        return self._chunk is not None

    @classmethod
    def from_sampler(cls, sampler, m, seed, memory_budget=DEFAULT_MEMORY_BUDGET,
                     materialize=True, n_jobs=1, reserve=0):
        """Draw ``m`` draws from ``sampler``; generation chunk ``j`` uses ``child_seed(seed, j)``.

        Parameters
        ----------
        sampler : LaplaceSampler or GlmmSampler
        m : int
            Number of draws, at least 1.
        seed : numpy.random.SeedSequence
        memory_budget : int
            Bytes the stored draws may take; beyond it they are regenerated per evaluation.
        materialize : bool
            Generate resident draws now (default).  ``False`` leaves them to whoever
            evaluates them (Dask workers generate their own partitions).
        n_jobs : int
            Threads generating the draws (the draws do not depend on it).
        reserve : int
            Bytes the rest of the fit's evaluation needs beside the stored draws
            (:attr:`MemoryPlan.reserve <glmm_sm.mcla.memory.MemoryPlan.reserve>`): the draws
            are stored only when they and ``reserve`` fit ``memory_budget`` together.
        """
        m = _check_m(m)
        data = sampler.data
        # draws that move with beta get their sums of squares recomputed at every
        # evaluation (partials.DrawShift): those are not stored
        squares = not getattr(sampler, "shift", False)
        resident = bytes_needed(data, m, squares) + int(reserve) <= memory_budget
        out = cls(data, m, sampler=sampler, seed=seed, resident=resident)
        out.memory_budget = int(memory_budget)
        if resident and materialize:
            out._chunk = out.generate_range(0, m, n_jobs, squares)
        return out

    @classmethod
    def from_arrays(cls, data: LayoutData, U, logf, S):
        """Wrap given draws (layout order): ``U`` (q, m), ``logf`` (B, m), ``S`` (B, T, m)."""
        U = np.ascontiguousarray(U, dtype=np.float64)
        return cls(data, U.shape[1], chunk=DrawChunk(U, np.ascontiguousarray(logf),
                                                     np.ascontiguousarray(S)))

    def release(self):
        """Stop holding the draws: later evaluations regenerate each chunk from its seed
        (the same numbers; the chunk ranges an engine took stay as they were).  Draws
        given as arrays (no sampler) are kept."""
        if self.sampler is not None and self.seed is not None:
            self._chunk = None

    def set_block_m(self, block_m):
        """Let block ``b`` use only the first ``block_m[b]`` draws (None: every block uses
        all ``m``).

        Each count must be ``m`` or a multiple of ``GEN_SIZE``, at least 1: a
        generation chunk's mixture components are stratified (fixed counts, heavy-tailed
        draws last), so only whole chunks are a sample in the mixture's proportions.  The
        draws stay those of the draw set's seed; a block's draws are a prefix of them, so
        the same seed and counts give the same numbers whatever else changes.
        """
        if block_m is None:
            self.block_m = None
            return
        bm = np.asarray(block_m)
        if bm.shape != (self.data.n_blocks,) or not np.issubdtype(bm.dtype, np.integer):
            raise ValueError(f"block_m must be {self.data.n_blocks} integers (one per block); "
                             f"got shape {bm.shape}, dtype {bm.dtype}")
        bad = (bm < 1) | (bm > self.m) | ((bm != self.m) & (bm % GEN_SIZE != 0))
        if bad.any():
            b = int(np.flatnonzero(bad)[0])
            raise ValueError(f"block_m[{b}] = {int(bm[b])}: each block's draws must number "
                             f"m = {self.m} or a multiple of {GEN_SIZE} (whole generation "
                             f"chunks) between 1 and m")
        self.block_m = bm.astype(np.int64)

    @property
    def n_gen_chunks(self) -> int:
        return -(-self.m // GEN_SIZE)

    def generate(self, j):
        """Generate generation chunk ``j`` from its own seed."""
        size = min(GEN_SIZE, self.m - j * GEN_SIZE)
        return self.sampler.generate(child_seed(self.seed, j), size)

    def generate_range(self, k0, k1, n_jobs=1, squares=True):
        """Draws ``k0:k1`` as one :class:`~glmm_sm.mcla.sampler.DrawChunk`, from their seeds.

        ``k0`` must start a generation chunk.  ``squares=False`` leaves out the sums of
        squares (``S`` of width 0), for draws that move with beta and have them recomputed.
        """
        if k0 % GEN_SIZE:
            raise ValueError(f"draw ranges start at multiples of {GEN_SIZE}; got {k0}")
        js = range(k0 // GEN_SIZE, -(-k1 // GEN_SIZE))
        if len(js) == 1 and squares:
            out = self.generate(js[0])
            return out if out.U.shape[1] == k1 - k0 else _slice(out, 0, k1 - k0)
        if n_jobs > 1 and len(js) > 1:
            with ThreadPoolExecutor(n_jobs) as pool:
                return _gather(pool.map(self.generate, js), k1 - k0, squares)
        return _gather(map(self.generate, js), k1 - k0, squares)

    def chunk_ranges(self, chunk_size=None):
        """The ``(k0, k1)`` ranges an evaluation iterates over.

        Resident draws are cut every ``chunk_size`` draws (default :func:`chunk_width`:
        ``4 * GEN_SIZE``, fewer where the arrays of so many draws would take more than
        ``memory_budget / CHUNK_SHARE``), regenerated draws at generation chunks.
        """
        if not self.resident:
            return [(j * GEN_SIZE, min((j + 1) * GEN_SIZE, self.m))
                    for j in range(self.n_gen_chunks)]
        size = chunk_width(self.data, self.memory_budget) if chunk_size is None \
            else int(chunk_size)
        if size < 1:
            raise ValueError(f"chunk_size must be at least 1; got {chunk_size}")
        return [(k, min(k + size, self.m)) for k in range(0, self.m, size)]

    def chunk_arrays(self, k0, k1):
        """``(U, logf, S, j0, j1)``: arrays holding draws ``k0:k1`` at columns ``j0:j1``."""
        if self.stored:
            c = self._chunk
            return c.U, c.logf, c.S, k0, k1
        g0 = k0 - k0 % GEN_SIZE
        c = self.generate_range(g0, k1)
        return c.U, c.logf, c.S, k0 - g0, k1 - g0

    def all_draws(self):
        """All draws as one :class:`~glmm_sm.mcla.sampler.DrawChunk` (generated if not stored)."""
        if self.stored:
            return self._chunk
        return self.generate_range(0, self.m)


def _gather(parts, width, squares=True):
    """The first ``width`` draws of the chunks ``parts`` (an iterator, in order), copied
    into one :class:`~glmm_sm.mcla.sampler.DrawChunk` as they come (no second copy of
    all of them, as a concatenation would make); without ``squares``, ``S`` of width 0."""
    out, k = None, 0
    for c in parts:
        if out is None:
            out = DrawChunk(np.empty((c.U.shape[0], width)), np.empty((c.logf.shape[0], width)),
                            np.empty(c.S.shape[:2] + (width if squares else 0,)))
        w = min(c.U.shape[1], width - k)
        out.U[:, k:k + w] = c.U[:, :w]
        out.logf[:, k:k + w] = c.logf[:, :w]
        if squares:
            out.S[:, :, k:k + w] = c.S[:, :, :w]
        k += w
    return out


def _slice(c, j0, j1):
    return DrawChunk(np.ascontiguousarray(c.U[:, j0:j1]), np.ascontiguousarray(c.logf[:, j0:j1]),
                     np.ascontiguousarray(c.S[:, :, j0:j1]))


def chunk_width(data: LayoutData, memory_budget=DEFAULT_MEMORY_BUDGET):
    """Draws per evaluation chunk of resident draws: ``4 * GEN_SIZE``, or fewer so that
    the arrays one chunk of ``K`` draws needs at a time, about ``8 K (2 q + B (2 T + 3))``
    bytes (the draws moved with beta and their sums of squares, the log densities and the
    log weights of ``B`` blocks with ``T`` squared-sum terms over ``q`` effects), stay
    within ``memory_budget / CHUNK_SHARE``; at least 1."""
    per_draw = 8 * (2 * data.q + data.n_blocks * (2 * data.n_s + 3))
    return int(min(4 * GEN_SIZE, max(1, int(memory_budget) // CHUNK_SHARE // per_draw)))


def bytes_needed(data: LayoutData, m, squares=True):
    """Bytes to store ``m`` draws with their log densities and (``squares``) their sums of
    squares."""
    return 8 * m * (data.q + data.n_blocks * (1 + (data.n_s if squares else 0)))


def _check_m(m):
    if isinstance(m, (bool, np.bool_)) or not isinstance(m, (int, np.integer)):
        if isinstance(m, float) and m.is_integer():
            m = int(m)
        else:
            raise ValueError(f"m must be a positive integer; got {m!r}")
    if m < 1:
        raise ValueError(f"m must be at least 1; got {m}")
    return int(m)
