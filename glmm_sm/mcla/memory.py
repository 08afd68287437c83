"""What a fit's evaluation holds beyond the data, component by component: one named record.

:func:`memory_plan` counts, from the layout, the fit's settings (``m``, threads, chunk
width, the engine a Rao-Blackwellized structure implies) and ``memory_budget``, the bytes
of

* ``draws``: the stored draws (0 when they are regenerated per evaluation);
* ``generation``: generating one chunk of ``GEN_SIZE`` draws per thread, with the
  sampler's temporaries (four times the chunk's arrays for the joint samplers, twice for
  the Rao-Blackwellized ones, whose temporaries hold the sampled effects only);
* ``chunks``: the arrays of one evaluation chunk per thread (the draws moved with beta,
  their sums of squares, prior scores, log densities and log weights);
* ``kernel``: the evaluation's inputs (the linear predictor, the design shifted with the
  draws, the shift's ``q x p`` matrices) and the kernels' work arrays per thread (the
  Rao-Blackwellized kernel's :func:`~glmm_sm.mcla.kernels.rb.state_bytes`, the vector kernel's
  :func:`~glmm_sm.mcla.kernels.rb_vector.work_bytes`, the scalar Rao-Blackwellized
  engine's rows in its kernel's order (``glmm_sm.mcla.rb.engine.ObsOrder``), the
  plain kernel's per-observation running sums, the nested rule's chunks of
  :data:`~glmm_sm.mcla.rb.deep.DEEP_CHUNK` numbers);
* ``partial_sums``: the running sums of every thread and the partitions' sums, with the
  copies their combination takes (the ``d x d`` Hessian and MCSE pieces per block);
* ``diagnostics``: the kept log weights, the Pareto k pass (each block's largest weights
  and its slices' temporaries), the weighted-draw chunks of the boundary derivative and
  predictions, the per-block ESS and values;
* ``bookkeeping``: the evaluation's list of draw ranges.

Stored draws are generated before the first evaluation, so the total is the draws and the
bookkeeping plus the larger of the two phases: drawing (``generation``) and evaluating
(``chunks + kernel + partial_sums + diagnostics``, with ``generation`` when the draws are
regenerated per evaluation).  Within a phase the components are added as if all were held
at once, so the total bounds the phase's peak from above (the diagnostics run after an
evaluation's running sums are freed).  A fit asks for the plan
before it draws anything and refuses, naming ``memory_budget`` and the bytes by component,
a fit that cannot fit the budget even with its draws regenerated
(:func:`check_memory`); draws are stored only when the whole plan with them fits.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from glmm_sm.mcla.draws import DEFAULT_MEMORY_BUDGET, GEN_SIZE, bytes_needed, chunk_width
from glmm_sm.mcla.engine import ROW_DRAWS
from glmm_sm.mcla.kernels.rb import state_bytes, tile_width
from glmm_sm.mcla.kernels.rb_vector import work_bytes
from glmm_sm.mcla.partials import N_PARTITIONS
from glmm_sm.mcla.rb.deep import DEEP_CHUNK
from glmm_sm.mcla.rb.engine import KEEP_LOG_WEIGHTS
from glmm_sm.mcla.tails import TAIL_SLICE, tail_size

__all__ = ["MemoryPlan", "MemoryBudgetError", "memory_plan", "check_memory", "largest_m",
           "engine_kind", "fit_plan", "check_fit_memory", "fit_max_m", "BYTES_PER_RANGE",
           "SAMPLER_COPIES", "RB_SAMPLER_COPIES", "DEEP_COPIES"]

#: Bytes of one ``(k0, k1)`` draw range in an evaluation's list (a tuple of two ints and
#: its list slot).
BYTES_PER_RANGE = 128
#: A generation chunk's arrays times this: the chunk with the sampler's temporaries
#: (``tests/test_memory.py`` measures about 3.7 for the Laplace sampler).
SAMPLER_COPIES = 4
#: The same for the Rao-Blackwellized samplers: the chunk, and its sampled rows' squares
#: for the sums of squares counted as a second chunk (an upper bound: their other
#: temporaries hold the sampled effects only).
RB_SAMPLER_COPIES = 2
#: Arrays of :data:`~glmm_sm.mcla.rb.deep.DEEP_CHUNK` numbers the nested rule holds at once
#: (the leaves' scores and Hessians, their sums per unit, the weighted products).
DEEP_COPIES = 4
#: Temporaries of ``TAIL_SLICE`` numbers the Pareto k pass holds at
#: once (the slice's concatenation, its negation, the partition, ``logsumexp``'s).
TAIL_COPIES = 5
#: ``(observations, draws)`` arrays of :data:`~glmm_sm.mcla.engine.ROW_DRAWS` numbers a
#: weighted-draw chunk holds at once (the linear predictor, the log-likelihood terms and
#: their temporaries; ``tests/test_memory.py`` bounds them by 6).
ROW_COPIES = 6

_MB = 1e6


class MemoryBudgetError(ValueError):
    """A fit's evaluation cannot fit ``memory_budget`` (see :func:`check_memory`)."""


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes a fit's evaluation needs beyond the data, by component (see the module
    docstring for what each holds).

    Attributes
    ----------
    engine : str
        "plain", "rb" (scalar Rao-Blackwellized), "vector" or "deep".
    m, n_jobs, chunk : int
        Draws, threads, draws per evaluation chunk.
    stored : bool
        Whether the draws are stored (else regenerated from their seeds per evaluation).
    draws, generation, chunks, kernel, partial_sums, diagnostics, bookkeeping : int
        Bytes of each component (every thread's together).
    """

    engine: str
    m: int
    n_jobs: int
    chunk: int
    stored: bool
    draws: int
    generation: int
    chunks: int
    kernel: int
    partial_sums: int
    diagnostics: int
    bookkeeping: int

    COMPONENTS = ("draws", "generation", "chunks", "kernel", "partial_sums", "diagnostics",
                  "bookkeeping")

    @property
    def evaluation(self) -> int:
        """The evaluation phase beside the stored draws: chunks, kernel, partial sums,
        diagnostics, and the generation of regenerated draws."""
        return (self.chunks + self.kernel + self.partial_sums + self.diagnostics
                + (0 if self.stored else self.generation))

    @property
    def total(self) -> int:
        """``draws + bookkeeping + max(generation, evaluation)`` (the drawing of stored
        draws ends before the first evaluation starts)."""
        return int(self.draws + self.bookkeeping + max(self.generation, self.evaluation))

    @property
    def reserve(self) -> int:
        """Everything but the stored draws: what the budget must leave beside them."""
        return self.total - self.draws

    def components(self) -> dict:
        """``{component: bytes}``."""
        return {c: int(getattr(self, c)) for c in self.COMPONENTS}

    def describe(self) -> str:
        """The components, for messages and logs."""
        what = "stored" if self.stored else "regenerated per evaluation, none stored"
        ev = [f"{c.replace('_', ' ')} {_size(getattr(self, c))}"
              for c in ("chunks", "kernel", "partial_sums", "diagnostics")]
        if not self.stored:
            ev.append(f"generation {_size(self.generation)}")
        phases = f"evaluation {_size(self.evaluation)} (" + ", ".join(ev) + ")"
        if self.stored:
            phases = f"the larger of generation {_size(self.generation)} and " + phases
        return (f"{self.total:,} bytes: draws {_size(self.draws)} ({what}) + bookkeeping "
                f"{_size(self.bookkeeping)} + {phases}; {self.engine} engine, "
                f"m={self.m:,}, {self.n_jobs} thread(s), chunks of {self.chunk:,} draws")

    def record(self) -> dict:
        """A plain dict (for the fit log)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["total"] = self.total
        return out


def _size(b):
    """``b`` bytes for a message: in MB from 0.1 MB, else in bytes."""
    return f"{b / _MB:,.1f} MB" if b >= 0.1 * _MB else f"{int(b):,} bytes"


def engine_kind(structure) -> str:
    """The engine a Rao-Blackwellized ``structure`` (or None) evaluates with."""
    if structure is None:
        return "plain"
    if getattr(structure, "deep", False):
        return "deep"
    if getattr(structure, "vector", False):
        return "vector"
    return "rb"


def memory_plan(data, m, n_jobs=1, memory_budget=DEFAULT_MEMORY_BUDGET, chunk_size=None,
                structure=None, n_nodes=None, shift=True, deterministic=False,
                per_block=False, stored=None, outer_nodes=None):
    """The :class:`MemoryPlan` of an evaluation on ``m`` draws of layout ``data``.

    The draws are stored (as :meth:`~glmm_sm.mcla.draws.DrawSet.from_sampler` stores them,
    given the plan's ``reserve``) when the whole plan with them fits ``memory_budget``;
    otherwise the plan is that of regenerated draws (chunks of ``GEN_SIZE``).

    Parameters
    ----------
    data : LayoutData
    m : int
    n_jobs : int
        Threads.
    memory_budget : int
    chunk_size : int, optional
        Draws per chunk of stored draws (default :func:`~glmm_sm.mcla.draws.chunk_width`).
    structure : RBStructure, VectorRBStructure, DeepStructure or None
        The Rao-Blackwellized split (None: plain importance sampling).
    n_nodes : int, optional
        Quadrature nodes per integrated level (per dimension for vector levels); default
        the rounds' rule.
    shift : bool
        The draws move with beta (their sums of squares are not stored).
    deterministic : bool
        A quadrature fit (no tail diagnostics).
    per_block : bool
        Per-block draw counts (each block's MCSE term is kept).
    stored : bool, optional
        The plan with the draws stored (True) or regenerated (False) whether or not it
        fits; None (default): as the fit chooses.
    outer_nodes : int, optional
        A nested tree's nodes at its top level (default the rule's).
    """
    args = (data, m, n_jobs, memory_budget, chunk_size, structure, n_nodes, shift,
            deterministic, per_block, outer_nodes)
    if stored is not None:
        return _plan(*args, stored=bool(stored))
    plan = _plan(*args, stored=True)
    if plan.total <= memory_budget:
        return plan
    return _plan(*args, stored=False)


def fit_plan(data, structure, opts, m, n_jobs, per_block=False, stored=None):
    """The :class:`MemoryPlan` of a fit's round on ``m`` draws: ``opts`` (a
    :class:`~glmm_sm.FitOptions`, its sampler resolved) gives the budget, the
    chunk width and the sampler's options; a quadrature fit's draws are its outer nodes
    (one empty draw for vector levels and nested trees)."""
    quad = opts.sampler == "quadrature"
    so = opts.sampler_options
    n_nodes = so.get("n_nodes")
    kind = engine_kind(structure)
    if quad and kind == "rb":
        from glmm_sm.mcla.rb.split import OUTER_NODES

        m = int(so.get("outer_nodes", OUTER_NODES))
    elif quad:
        m = 1
        if kind == "vector" and n_nodes is None:
            from glmm_sm.mcla.rb.vector import N_NODES_VECTOR

            n_nodes = N_NODES_VECTOR
    return memory_plan(data, m, n_jobs, opts.memory_budget, opts.chunk_size, structure,
                       n_nodes, bool(so.get("shift", True)), quad, per_block, stored,
                       so.get("outer_nodes"))


def check_fit_memory(data, structure, opts, m, n_jobs, per_block=False):
    """:func:`fit_plan`, or :class:`MemoryBudgetError` (a ``ValueError`` naming
    ``memory_budget``, the bytes by component, and the budget, threads or ``m`` that
    would fit) when even regenerated draws leave it above ``opts.memory_budget``."""
    plan = fit_plan(data, structure, opts, m, n_jobs, per_block)
    if plan.total <= opts.memory_budget:
        return plan
    one = fit_plan(data, structure, opts, m, 1, per_block) if n_jobs > 1 else None
    m_fit = fit_max_m(data, structure, opts, plan.m, n_jobs, per_block, least=2)
    return check_memory(plan, opts.memory_budget, (one, max(m_fit, 0)))


def fit_max_m(data, structure, opts, m, n_jobs, per_block=False, least=1):
    """The largest number of draws up to ``m`` whose :func:`fit_plan` fits
    ``opts.memory_budget`` (``least - 1`` when not even ``least`` does)."""
    def fits(k):
        return fit_plan(data, structure, opts, k, n_jobs, per_block).total \
            <= opts.memory_budget

    return largest_m(fits, int(least), int(m))


def check_memory(plan: MemoryPlan, memory_budget, smaller=None):
    """Raise :class:`MemoryBudgetError` when ``plan`` exceeds ``memory_budget``; the
    message names the argument, the bytes by component and what to ask instead.

    ``smaller``: optional ``(n_jobs=1 plan, largest m that fits or 0)`` for the advice."""
    if plan.total <= memory_budget:
        return plan
    advice = [f"memory_budget >= {plan.total:,}"]
    if smaller is not None:
        one_thread, m_fit = smaller
        if plan.n_jobs > 1 and one_thread is not None and one_thread.total <= memory_budget:
            advice.append(f"n_jobs=1 (needs {one_thread.total:,} bytes)")
        if m_fit and m_fit < plan.m:
            advice.append(f"m <= {m_fit:,}")
    raise MemoryBudgetError(
        f"memory_budget={int(memory_budget):,} bytes cannot hold this fit's evaluation, "
        f"which needs {plan.describe()}. Give " + ", or ".join(advice) + " (the data "
        "themselves are not counted in memory_budget).")


def largest_m(fits, lo, hi):
    """The largest ``m`` in ``[lo, hi]`` with ``fits(m)`` (monotone: true up to a point),
    or ``lo - 1`` when ``fits(lo)`` is false."""
    if not fits(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _plan(data, m, n_jobs, budget, chunk_size, structure, n_nodes, shift, deterministic,
          per_block, outer_nodes, stored):
    m, J = int(m), int(n_jobs)
    kind = engine_kind(structure)
    q, B, S, p, nf = data.q, data.n_blocks, data.n_s, data.k_fe, data.k_fam
    n = data.X.shape[0]
    if stored:
        K = int(chunk_size) if chunk_size is not None else chunk_width(data, budget)
    else:
        K = GEN_SIZE
    K = max(1, min(K, m))
    n_chunks = -(-m // K)
    n_parts = min(N_PARTITIONS, n_chunks)
    Jt = max(1, min(J, n_parts))  # threads evaluating at once
    draws = bytes_needed(data, m, not shift) if stored else 0
    copies = SAMPLER_COPIES if kind == "plain" else RB_SAMPLER_COPIES
    gen = copies * bytes_needed(data, min(GEN_SIZE, m), True)
    generation = (min(J, -(-m // GEN_SIZE)) if stored else Jt) * gen
    # one chunk: the draws moved with beta (or copied), their sums of squares and the
    # prior's beta scores, the log densities and the log weights
    chunks = Jt * 8 * K * (q + B * (2 * S + 3 + p))
    keep_lw = kind in ("rb", "vector") and B * m <= KEEP_LOG_WEIGHTS
    diag = 8 * B * 4  # ESS, block values, the Pareto k's sums and ratios
    if keep_lw:
        diag += 8 * B * m
    if not deterministic and kind != "deep":
        keep = min(tail_size(m) + 1, m)
        diag += 8 * B * keep + TAIL_COPIES * 8 * min(TAIL_SLICE, B * (keep + K))
    if kind == "plain":
        kernel, partial_sums = _plain(data, Jt, n_parts, shift)
        # the weighted draws of the boundary derivative and predictions
        diag += ROW_COPIES * 8 * n * min(512, max(1, ROW_DRAWS // max(n, 1)), m)
        if per_block:
            d = p + S + nf
            diag += 3 * 8 * B * d * d
    elif kind == "rb":
        kernel, partial_sums = _rb(data, structure, m, Jt, n_parts, n_nodes)
        kernel += _obs_order(data, structure, shift)
    elif kind == "vector":
        kernel, partial_sums = _vector(data, structure, Jt, n_parts, n_chunks, n_nodes)
    else:
        kernel = _deep(data, structure, n_nodes, outer_nodes)
        partial_sums = 8 * 4 * (p + S) ** 2
    if kind != "deep":
        # the evaluation's inputs: the linear predictor, the design shifted with the draws
        # (n x p, and its product's temporary), the shift's q x p matrices
        kernel += 8 * (n * (2 * p + 1) + 2 * q * p)
    bookkeeping = BYTES_PER_RANGE * n_chunks
    return MemoryPlan(kind, m, J, K, bool(stored), int(draws), int(generation), int(chunks),
                      int(kernel), int(partial_sums), int(diag), int(bookkeeping))


def _deep(data, st, n_nodes, outer_nodes):
    """The nested rule's working set: :data:`DEEP_COPIES` arrays of its largest chunk of
    top-level units (at most :data:`~glmm_sm.mcla.rb.deep.DEEP_CHUNK` numbers unless one
    unit holds more), as :class:`~glmm_sm.mcla.rb.deep.DeepQuadratureEngine` cuts them."""
    from glmm_sm.mcla.rb.deep import DEEP_NODES, DEEP_OUTER_NODES, top_unit_numbers

    K = [int(outer_nodes or DEEP_OUTER_NODES)] + [int(n_nodes or DEEP_NODES)] * (st.depth - 1)
    cost = top_unit_numbers(st, K, data.k_fe + data.k_vcp + data.k_fam)
    most, acc = 0, 0
    for c in cost.tolist():  # the engine's cut: a chunk closes before it would pass DEEP_CHUNK
        if acc and acc + c > DEEP_CHUNK:
            most, acc = max(most, acc), 0
        acc += c
    return DEEP_COPIES * 8 * max(most, acc)


def _sums_row(data):
    """Bytes of one row of the plain engine's ``PartialSums``."""
    B, S, p, nf = data.n_blocks, data.n_s, data.k_fe, data.k_fam
    d = p + S + nf
    return 8 * B * (3 + 2 * d + 2 * d * d + S + p * p + p * data.k_vcp + (p + 1 if nf else 0))


def _plain(data, Jt, n_parts, shift):
    """``(kernel, partial sums)`` of the plain engine: per thread the per-observation
    running sums (two rows) and the moved draws' per-effect sums; two running rows of
    partial sums per thread and two more while they are folded; at the end the
    partitions' rows, their stack and the combination's temporaries."""
    n, q = data.X.shape[0], data.q
    kernel = Jt * 8 * (2 * n * (2 if data.k_fam else 1) + (2 * q if shift else 0))
    row = _sums_row(data)
    return kernel, (4 * Jt + 3 * n_parts) * row


def _rb_sums(data, n_lev, extra_obs=0, moments=2):
    """Bytes of one :class:`~glmm_sm.mcla.kernels.records.RBSums`."""
    B, S, p, nf = data.n_blocks, data.n_s, data.k_fe, data.k_fam
    d = p + S + nf
    per_block = (3 + 2 * d + 3 * d * d + S + p * (p + 1) // 2 + (1 + p if nf else 0))
    return 8 * (B * per_block + n_lev * moments + 2 * data.q + extra_obs)


def _rb(data, st, m, Jt, n_parts, n_nodes):
    """``(kernel, partial sums)`` of :class:`~glmm_sm.mcla.rb.engine.RBEngine`: one
    :func:`~glmm_sm.mcla.kernels.rb.make_state` per thread; per thread a chunk's sums and
    the running sums, and the partitions' sums with their combination's two."""
    from glmm_sm.mcla.rb.split import N_NODES

    lens = np.diff(st.lev_ptr)
    tile = max(min(tile_width(st.n_levels), m), 1)
    K = int(n_nodes) if n_nodes is not None else N_NODES
    block_lev = int(np.diff(st.lev_bptr).max()) if st.n_levels else 0
    one = state_bytes(tile, K, data.k_fe, data.k_vc, st.n_levels,
                      int(lens.max()) if lens.size else 1, data.k_fam, block_lev)
    row = _rb_sums(data, st.n_levels)
    return Jt * one, (n_parts + 2 * Jt + 2) * row


def _obs_order(data, st, shift):
    """Bytes of ``ObsOrder`` (:mod:`glmm_sm.mcla.rb.engine`): the permutation and its
    inverse, the renumbered visits, the data's ``X``, ``wy``, ``wn`` and ``Z`` (CSR) in the
    kernel's row order, ``X beta + offset`` gathered per evaluation, and with moving draws
    the shifted design's copy."""
    n, p = data.X.shape
    nnz = int(data.Z.nnz)
    visits = int(np.asarray(st.ro).size + np.asarray(st.free_obs).size)
    words = 2 * n + visits + n * p + 2 * n + (n + 1) + 2 * nnz + n
    if shift:
        words += n * p
    return 8 * words


def _vector(data, st, Jt, n_parts, n_chunks, n_nodes):
    """``(kernel, partial sums)`` of :class:`~glmm_sm.mcla.rb.vector.VectorRBEngine`: one
    :func:`~glmm_sm.mcla.kernels.rb_vector.make_work` per thread; every chunk's sums of a
    partition until it is combined, the partitions' sums and their combination's two."""
    from glmm_sm.mcla.rb.vector import round_nodes_vector

    r = int(st.r)
    nodes = int(n_nodes) if n_nodes is not None else round_nodes_vector(st)
    lens = np.diff(st.lev_ptr)
    n_h = len(st.ro) + len(st.free_obs)
    one = work_bytes(data.k_fe, data.n_s, r, nodes**r, n_h, st.n_levels,
                     int(lens.max()) if lens.size else 1)
    row = _rb_sums(data, st.n_levels, n_h, moments=r + r * r)
    return Jt * one, (n_chunks + n_parts + Jt + 2) * row
