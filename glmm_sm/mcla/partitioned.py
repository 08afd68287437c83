"""Monte Carlo sums over data partitions that stay where they are (Dask workers).

A *piece* is one data partition's rows in block layout (:class:`Piece`): its own
``LayoutData`` and ``BlockSystem``.
Every block (a grouping level and everything tied to it through crossed or nested factors)
lies in one partition, and the whole data's block layout is the pieces' layouts one after
the other, in partition order (blocks are numbered by first appearance in observation
order, so the concatenated data number them so).  A piece therefore computes, for its
blocks, exactly what the whole layout computes for the same blocks:

* the conditional modes, the Laplace precisions and ``du/dbeta`` (block by block);
* the importance draws: the whole layout draws one stream per generation chunk, group of
  equal-size blocks after group, block after block (:mod:`glmm_sm.mcla.sampler`).  A piece
  knows where its blocks sit in each group (:class:`DrawPlan`) and draws the stream up to
  them, keeps its own and draws past the rest (the stream is drawn and discarded, never
  held: the price of drawing the same numbers as one machine is that each worker runs the
  whole stream's generator; the memory is the piece's own draws);
* the kernel's per-block partial sums over the same draw partitions, combined in the same
  order (:func:`piece_sums`).

Each piece turns its blocks' sums into the terms :func:`~glmm_sm.mcla.engine.finish` adds
over the blocks and folds them (:mod:`glmm_sm.spec.folds`); the client receives each block's
ESS and ``l_b`` and the pieces' shares of the fold (never rows, nothing in proportion to
``m``), merges them in block order and forms the value and derivatives with the same
:func:`~glmm_sm.mcla.engine.finish_sums` as a single machine: the evaluation is the single
machine's, bit for bit.  Per-row products use row-local sums (``LayoutData.linear_fixed``)
for the same reason.

:class:`Pieces` runs a function on every piece, in this process or on a Dask cluster where
each piece is a future that lives on a worker; a piece lost with its worker is rebuilt by
Dask from its lineage (the partition and the build), with the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glmm_sm.core.random import child_seed, generator
from glmm_sm.laplace.step import (
    conditional_mode,
    glm_block_terms,
    score_blocks,
    split_params,
    value_blocks,
)
from glmm_sm.mcla.draws import GEN_SIZE, DrawSet, bytes_needed
from glmm_sm.mcla.engine import EngineBase, finish_blocks, finish_sums
from glmm_sm.mcla.partials import KERNELS, PartialSums, draw_shift, partition_sums
from glmm_sm.mcla.sampler import DrawChunk, LaplaceSampler
from glmm_sm.spec.folds import block_grams, merge_folds, partial_fold

__all__ = ["Piece", "PieceMeta", "DrawPlan", "DrawSpec", "PieceDraws", "PieceSums",
           "LaplaceTerms", "BlocksMeta", "Pieces", "PartitionedEngine",
           "piece_meta", "piece_laplace", "piece_glm", "piece_sampler", "piece_draws",
           "piece_sums", "draw_plans"]

#: Most numbers drawn at a time while a piece draws past the other pieces' blocks.
SKIP_BATCH = 2**20


@dataclass
class Piece:
    """One partition's rows in block layout, held where the partition is.

    Attributes
    ----------
    data : LayoutData
    system : BlockSystem
    col_names : list of str
        Names of the piece's random effects (the levels it holds).
    exog_names, param_names : list of str
    """

    data: object
    system: object
    col_names: list
    exog_names: list
    param_names: list

    @classmethod
    def from_model(cls, model):
        """The piece of a model built from one partition (its data in block layout)."""
        data = model.layout_data()
        system = model.block_system()
        names = np.asarray(model.vc_names, dtype=object)[data.layout.col_perm]
        return cls(data, system, [str(v) for v in names], list(model.exog_names),
                   list(model.data.param_names))


@dataclass(frozen=True)
class PieceMeta:
    """What a piece tells the client: sizes and names, no rows.

    Attributes
    ----------
    nobs, n_blocks, q : int
    qbt : ndarray (n_blocks, T)
        Random effects per block and variance component.
    group_counts : dict
        Blocks per number of random effects.
    col_names : tuple of str
        The piece's random effects (each level lies in one piece).
    exog_names, param_names : tuple of str
    cov : CovStructure
    family : Family
    """

    nobs: int
    n_blocks: int
    q: int
    qbt: np.ndarray
    group_counts: dict
    col_names: tuple
    exog_names: tuple
    param_names: tuple
    cov: object
    family: object


def piece_meta(piece):
    """:class:`PieceMeta` of ``piece`` (run where the piece is)."""
    d = piece.data
    qb = np.diff(d.col_ptr)
    sizes, counts = np.unique(qb[qb > 0], return_counts=True)
    X = d.X
    return PieceMeta(int(X.shape[0]), int(d.n_blocks), int(d.q), np.array(d.qbt),
                     {int(s): int(c) for s, c in zip(sizes, counts, strict=True)},
                     tuple(piece.col_names), tuple(piece.exog_names),
                     tuple(piece.param_names), d.cov, d.family)


def piece_gram(piece, b0, n_blocks):
    """The piece's share (:class:`~glmm_sm.spec.folds.PartialFold`) of the fold of the
    blocks' ``X_b' X_b`` (its first block is block ``b0`` of ``n_blocks``)."""
    d = piece.data
    return partial_fold(block_grams(d.obs_ptr, d.X), b0, n_blocks)


@dataclass(frozen=True)
class LaplaceTerms:
    """A piece's share of the Laplace log-likelihood and its gradient, per block.

    Attributes
    ----------
    values : PartialFold
        Of :func:`~glmm_sm.laplace.step.value_blocks`.
    scores : PartialFold or None
        Of :func:`~glmm_sm.laplace.step.score_blocks` (None when not asked for, or where a
        value is not finite).
    u : ndarray (q,)
        The conditional modes.
    converged : bool
    not_pd : ndarray of int
        The piece's blocks whose precision did not factor.
    """

    values: object
    scores: object
    u: np.ndarray
    converged: bool
    not_pd: np.ndarray


def piece_laplace(piece, u0, b0, params, n_blocks, gradient=True):
    """The piece's :class:`LaplaceTerms` at ``params``, conditional modes from ``u0``
    (zeros when None); its first block is block ``b0`` of ``n_blocks``."""
    beta, nu, _ = split_params(piece.data, params)
    mode = conditional_mode(piece.system, beta, nu, u0=u0)
    values = value_blocks(mode)
    scores = None
    if gradient and np.all(np.isfinite(values)):
        scores = partial_fold(score_blocks(piece.system, beta, nu, mode), b0, n_blocks)
    return LaplaceTerms(partial_fold(values, b0, n_blocks), scores, mode.u,
                        bool(mode.converged), mode.not_pd)


def piece_glm(piece, b0, beta, n_blocks):
    """The piece's shares of the folds of the fixed-effects-only GLM terms at ``beta``
    (:func:`~glmm_sm.laplace.step.glm_block_terms`)."""
    return tuple(partial_fold(c, b0, n_blocks) for c in glm_block_terms(piece.data, beta))


def piece_sampler(piece, u0, params, options):
    """The piece's :class:`~glmm_sm.mcla.sampler.LaplaceSampler` at ``params``: its
    blocks' conditional modes (from ``u0``, zeros when None) and Laplace covariances."""
    beta, nu, _ = split_params(piece.data, params)
    mode = conditional_mode(piece.system, beta, nu, u0=u0)
    return LaplaceSampler(piece.system, params, mode, **options)


@dataclass(frozen=True)
class DrawPlan:
    """Where a piece's blocks sit in the whole layout's draw stream.

    ``groups``: per group of equal-size blocks of the whole layout, in its order (sizes
    ascending), ``(qs, before, count, total)``: the group's blocks of ``qs`` effects, of
    which ``before`` come before this piece's ``count`` ones, out of ``total``.
    """

    groups: tuple


def draw_plans(metas):
    """One :class:`DrawPlan` per piece from the pieces' :class:`PieceMeta`, in order."""
    sizes = sorted({s for m in metas for s in m.group_counts})
    totals = {s: sum(m.group_counts.get(s, 0) for m in metas) for s in sizes}
    seen = dict.fromkeys(sizes, 0)
    plans = []
    for m in metas:
        groups = []
        for s in sizes:
            c = m.group_counts.get(s, 0)
            groups.append((s, seen[s], c, totals[s]))
            seen[s] += c
        plans.append(DrawPlan(tuple(groups)))
    return plans


def _skip(draw, n):
    """Draw ``n`` numbers with ``draw(k)`` and discard them, ``SKIP_BATCH`` at a time."""
    while n > 0:
        k = min(n, SKIP_BATCH)
        draw(k)
        n -= k


def piece_chunk(sampler, plan, seed, size):
    """The piece's share of the whole layout's draw chunk ``size`` from ``seed``: the
    numbers the whole layout's :class:`~glmm_sm.mcla.sampler.LaplaceSampler` draws for
    these blocks on one machine."""
    data = sampler.data
    rng = generator(seed)
    U = np.empty((data.q, size))
    logf = np.zeros((data.n_blocks, size))
    T = data.k_vc
    S = np.zeros((data.n_blocks, data.n_s, size))
    n_t = sampler.n_heavy(size)
    local = {qs: g for g, (qs, _, _) in enumerate(sampler.system.groups)}
    for qs, before, count, total in plan.groups:
        after = total - before - count
        _skip(rng.standard_normal, before * qs * size)
        z = rng.standard_normal((count, qs, size))
        _skip(rng.standard_normal, after * qs * size)
        chi = None
        if n_t:
            _skip(lambda k: rng.chisquare(sampler.df, k), before * n_t)
            chi = rng.chisquare(sampler.df, (count, n_t))
            _skip(lambda k: rng.chisquare(sampler.df, k), after * n_t)
        if count:
            g = local[qs]
            _, ids, cols = sampler.system.groups[g]
            u, lf = sampler.group_from_normals(g, z, chi)
            U[cols] = u
            logf[ids] = lf
            S[ids, :T] = sampler.indicator[g] @ (u * u)
    if data.n_s > T:
        S[:, T:] = data.cross_sums(U)
    return DrawChunk(U, logf, S)


class PieceDraws:
    """A piece's share of a round's draws: stored (the whole draw set fits its memory
    budget) or regenerated per chunk, as :class:`~glmm_sm.mcla.draws.DrawSet` does."""

    def __init__(self, sampler, plan, seed, m, resident):
        self.sampler, self.plan, self.seed, self.m = sampler, plan, seed, int(m)
        self._chunk = None
        if resident:
            c = self.generate_range(0, self.m)
            if getattr(sampler, "shift", False):  # moved draws: squares recomputed, not kept
                c = DrawChunk(c.U, c.logf, np.zeros(c.S.shape[:2] + (0,)))
            self._chunk = c

    def generate_range(self, k0, k1):
        js = range(k0 // GEN_SIZE, -(-k1 // GEN_SIZE))
        parts = [piece_chunk(self.sampler, self.plan, child_seed(self.seed, j),
                             min(GEN_SIZE, self.m - j * GEN_SIZE)) for j in js]
        if len(parts) == 1:
            c = parts[0]
        else:
            c = DrawChunk(*(np.concatenate([getattr(p, f) for p in parts], axis=-1)
                            for f in ("U", "logf", "S")))
        w = k1 - js[0] * GEN_SIZE
        if c.U.shape[1] != w:
            c = DrawChunk(c.U[:, :w], c.logf[:, :w], c.S[..., :w])
        return c

    def chunk_arrays(self, k0, k1):
        if self._chunk is not None:
            c = self._chunk
            return c.U, c.logf, c.S, k0, k1
        g0 = k0 - k0 % GEN_SIZE
        c = self.generate_range(g0, k1)
        return c.U, c.logf, c.S, k0 - g0, k1 - g0


@dataclass(frozen=True)
class DrawSpec:
    """A round's draw set as the whole layout cuts it: ``m``, seed, whether stored, the
    evaluation ranges and their partitions, the kernel."""

    m: int
    seed: np.random.SeedSequence
    resident: bool
    ranges: tuple
    parts: tuple
    kernel: str


def piece_draws(piece, sampler, plan, spec):
    """The piece's :class:`PieceDraws` for the round ``spec`` (a :class:`DrawSpec`; run
    where ``piece`` and its ``sampler`` are)."""
    return PieceDraws(sampler, plan, spec.seed, spec.m, spec.resident)


def piece_block_sums(piece, sampler, draws, spec, params, derivs):
    """The piece's partial sums at ``params``: per draw partition of ``spec`` the kernel's
    sums (``partition_sums``), combined in partition order: one
    row over the piece's blocks, the whole layout's sums for these blocks."""
    from threadpoolctl import threadpool_limits

    shift = draw_shift(sampler)
    with threadpool_limits(1, user_api="blas"):
        rows = [partition_sums(spec.kernel, piece.data, draws, spec.ranges[c0:c1], params,
                               derivs, shift) for c0, c1 in spec.parts]
    return PartialSums.stack(rows).combine()


@dataclass(frozen=True)
class PieceSums:
    """What a piece sends for one evaluation: its blocks' ESS and ``l_b`` and its share of
    the fold of the blocks' terms (:func:`~glmm_sm.mcla.engine.finish_blocks`)."""

    ess: np.ndarray
    block_values: np.ndarray
    terms: object


def piece_sums(piece, sampler, draws, b0, spec, params, derivs, n_blocks):
    """The piece's :class:`PieceSums` at ``params`` (its first block is block ``b0`` of
    ``n_blocks``)."""
    tot = piece_block_sums(piece, sampler, draws, spec, params, derivs)
    ess, block_values, terms = finish_blocks(tot, spec.m, derivs)
    return PieceSums(ess, block_values, partial_fold(terms, b0, n_blocks))


class BlocksMeta:
    """The whole layout's sizes for the client: what :func:`~glmm_sm.mcla.engine.finish`
    and the draw-set arithmetic read (no rows).

    Parameters
    ----------
    qbt : ndarray (n_blocks, T)
        Every block's random effects per component, in block order.
    q : int
    k_fe : int
    cov : CovStructure
    family : Family
    """

    def __init__(self, qbt, q, k_fe, cov, family):
        self.qbt = np.ascontiguousarray(qbt, dtype=np.float64)
        self.q, self.k_fe, self.cov, self.family = int(q), int(k_fe), cov, family
        self.k_vc = self.qbt.shape[1]
        self.n_s = self.k_vc + cov.n_cross

    @property
    def n_blocks(self):
        return self.qbt.shape[0]

    @property
    def k_vcp(self):
        return self.cov.k_vcp

    @property
    def k_fam(self):
        return self.family.k_fam


class Pieces:
    """Run functions on every piece, in partition order: in this process (``client`` None)
    or on a Dask cluster, each piece a future kept on the worker that built it.

    Parameters
    ----------
    items : list
        The pieces (in this process) or futures resolving to them.
    client : dask.distributed.Client or None
    """

    def __init__(self, items, client=None):
        self.items, self.client = list(items), client

    def __len__(self):
        return len(self.items)

    def keep(self, fn, *per_piece, **common):
        """``fn(piece_i, *per_piece[..][i], **common)`` for every piece, kept where the
        piece is (futures on a cluster); a new :class:`Pieces`-like list."""
        if self.client is None:
            return [fn(p, *(a[i] for a in per_piece), **common)
                    for i, p in enumerate(self.items)]
        return [self.client.submit(fn, p, *(a[i] for a in per_piece), **common, pure=False)
                for i, p in enumerate(self.items)]

    def gather(self, fn, *per_piece, **common):
        """The results of ``fn`` on every piece, brought here, in partition order."""
        out = self.keep(fn, *per_piece, **common)
        if self.client is None:
            return out
        from glmm_sm.mcla.distributed import _check_open

        _check_open(self.client, during=True)
        return self.client.gather(out)


class PartitionedEngine(EngineBase):
    """:class:`~glmm_sm.mcla.engine.MCLAEngine`'s evaluations with the data in pieces.

    Each piece draws its share of the round's draws once (kept where it is when the whole
    draw set fits ``memory_budget``) and answers each evaluation with its blocks' partial
    sums; the client forms ``l_m`` and its derivatives from all blocks' sums in block order
    (:func:`~glmm_sm.mcla.engine.finish`), the single machine's computation.

    Parameters
    ----------
    pieces : Pieces
    samplers : list
        Per piece its :class:`~glmm_sm.mcla.sampler.LaplaceSampler` (or a future of it).
    plans : list of DrawPlan
    meta : BlocksMeta
    m : int
    seed : numpy.random.SeedSequence
    kernel : {"numba", "numpy"}
    chunk_size : int, optional
    memory_budget : int
    shift : bool
        Whether the samplers' draws move with the fixed effects (their squares are then not
        stored, as on one machine).
    block_offsets : sequence of int
        Each piece's first block in the whole layout.

    Attributes
    ----------
    last_bytes : int
        Bytes of the arrays the last evaluation brought from the pieces: each block's ESS
        and ``l_b`` (16 bytes a block), and per piece the sums of its whole chunks of
        :data:`~glmm_sm.spec.folds.FOLD_CHUNK` blocks and its own blocks' terms in the (at
        most two) chunks it shares, about ``8 (2 d^2 + p^2 + 3 d)`` bytes each; whatever
        the rows and ``m``.
    """

    def __init__(self, pieces, samplers, plans, meta, m, seed, kernel="numba",
                 chunk_size=None, memory_budget=None, shift=True, block_offsets=None):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {sorted(KERNELS)}; got {kernel!r}")
        resident = bytes_needed(meta, m, not shift) <= memory_budget
        ds = DrawSet(meta, m, seed=seed, resident=resident)
        ds.memory_budget = int(memory_budget)
        self._setup(ds, chunk_size, 1)
        self.kernel = kernel
        self.pieces = pieces
        self.spec = DrawSpec(int(m), seed, resident, tuple(self.ranges), tuple(self.parts),
                             kernel)
        self.samplers = samplers
        self.draws_by_piece = pieces.keep(piece_draws, samplers, plans, spec=self.spec)
        self.block_offsets = [int(g) for g in block_offsets]
        self.last_bytes = 0

    def partial_sums(self, params, derivs=True):
        """The pieces' :class:`PieceSums` at ``params``, in piece order."""
        rows = self.pieces.gather(piece_sums, self.samplers, self.draws_by_piece,
                                  self.block_offsets, spec=self.spec,
                                  params=np.asarray(params, dtype=np.float64),
                                  derivs=bool(derivs), n_blocks=self.data.n_blocks)
        self.last_bytes = sum(_nbytes(r) for r in rows)
        return rows

    def _evaluate(self, params, derivs):
        rows = self.partial_sums(params, derivs)
        s = merge_folds([r.terms for r in rows], self.data.n_blocks)
        return finish_sums(np.atleast_1d(s), np.concatenate([r.ess for r in rows]),
                           np.concatenate([r.block_values for r in rows]), params, self.data,
                           derivs)


def _nbytes(obj):
    """Bytes of the arrays in ``obj`` (a :class:`PieceSums` or what it holds)."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if hasattr(obj, "__dataclass_fields__"):
        return sum(_nbytes(getattr(obj, f)) for f in obj.__dataclass_fields__)
    return 0

