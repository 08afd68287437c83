"""Deterministic fits of nesting trees of any depth (pupils in classes in schools): every
random effect integrated by a nested adaptive Gauss-Hermite rule (``docs/theory.rst``,
"Rao-Blackwellized blocks").

The two-level tree (:class:`~glmm_sm.mcla.rb.split.QuadratureSampler`) puts the outer
effect of a block at ``K`` nodes and integrates the inner levels given each node in its
kernel.  With three or more levels a block keeps more than one effect once the leaves are
integrated, so the rule here is nested level by level:

* :func:`deep_tree_layout` recognizes the layout: scalar components, every observation
  loading on exactly one effect of each, each component's levels nested in the levels of
  the component with the next fewer levels, at least three components (the depth), one
  top-level effect per block.
* :class:`DeepTree` holds the tree: per level its units (layout columns), their parent,
  the observations of each leaf.
* :class:`DeepQuadratureSampler` fixes the rule at the round's centre from the joint
  Laplace approximation ``N(u_hat, P^{-1})`` (``P = Z' W Z + D^{-1}``): eliminating the
  levels from the leaves up (a Schur complement per level; each level's block of the
  reduced precision is diagonal, its effects being conditionally independent given their
  ancestors) gives each effect's conditional mean given its ancestors, linear in them, and
  its conditional SD ``s``.  An effect's ``K_l`` nodes at a path of its ancestors' nodes are
  ``m(ancestors) + s z_k``; the top level's are ``u_hat + s z_k``.  The rule is fixed
  (independent of ``theta``), so the value is a smooth function of ``theta`` with exact
  derivatives.
* :class:`DeepQuadratureEngine` evaluates the log-likelihood, its exact gradient and
  Hessian (Louis' identity, level by level: at each level the weighted mean of the
  children's Hessians plus the weighted covariance of their scores) and the conditional
  moments of every effect.

Cost per evaluation: ``n x K_1 x ... x K_D`` linear predictors (``n`` observations, ``K_l``
nodes of level ``l``), against ``n x K x Q`` for the two-level rule.  Sampling the top level
instead and integrating the subtree given each draw would cost ``n x m x K_2 x ... x K_D``
with ``m`` draws, which for an MCSE below a tenth of an SE is far more than ``K_1`` nodes of
an adaptive rule (the top level is one-dimensional per block): the rule is nested all the
way (``benchmarks/README.md``, "Three-level trees integrated").
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from glmm_sm.mcla.engine import EngineBase, Evaluation
from glmm_sm.mcla.kernels.rb_deep import (
    LeafOut,
    LeafRows,
    LeafRule,
    LevelRule,
    LevelSums,
    leaf_level,
    packed_pairs,
    parent_level,
)
from glmm_sm.mcla.sampler import DrawChunk
from glmm_sm.spec.validation import nonnegative_up_to_rounding

__all__ = ["deep_tree_layout", "DeepTree", "DeepQuadratureSampler", "DeepQuadratureEngine",
           "DEEP_NODES", "DEEP_OUTER_NODES", "DEEP_CHUNK"]

#: Gauss-Hermite nodes of every level below the top (``n_nodes``).  Fewer than the
#: two-level rule's inner ``N_NODES`` (12): a fit costs their
#: product, and on ``benchmarks/bench_nested.py``'s sim-3level 8 x 8 below 12 at the top
#: move the estimate by 0.002 SE from the 12 x 12 x 20 rule's (1.3 s against 3.7 s of CPU);
#: the measured quadrature error refines a rule too coarse for the data.
DEEP_NODES = 8
#: Gauss-Hermite nodes of the top level (``outer_nodes``).
DEEP_OUTER_NODES = 12
#: Most numbers (observations x paths x parameters^2) one chunk of top-level units takes.
DEEP_CHUNK = 4_000_000
# the kernels' outputs not asked for
_EMPTY2 = np.empty((0, 0))
_EMPTY3 = np.empty((0, 0, 0))


def _tree_levels(data):
    """The components of a nesting tree from the top, or ``(None, reason)``."""
    if data.cov.has_vector:
        return None, "correlated random-effect terms"
    if data.k_fam:
        return None, "the negative binomial family (its alpha is not in the nested rule)"
    T = data.k_vc
    if T < 3:
        return None, "fewer than three components"
    Z = data.Z.tocsr()
    n = Z.shape[0]
    rows = np.repeat(np.arange(n), np.diff(Z.indptr))
    comp = data.ident[Z.indices]
    counts = np.bincount(rows * T + comp, minlength=n * T).reshape(n, T)
    if not np.all(counts == 1):
        return None, ("not every observation loads on exactly one effect of every "
                      "component")
    col = np.zeros((T, n), dtype=np.int64)
    col[comp, rows] = Z.indices
    n_lev = np.array([np.unique(col[t]).size for t in range(T)])
    order = np.argsort(n_lev, kind="stable")
    q = data.q
    for a, b in zip(order[:-1], order[1:], strict=True):
        parent = np.full(q, -1)
        parent[col[b]] = col[a]
        if np.any(parent[col[b]] != col[a]):
            return None, "the components are not nested (an effect with two parents)"
    top = col[order[0]]
    if np.unique(data.block_of_col[top]).size != np.unique(top).size:
        return None, "a block holds more than one top-level effect"
    return (order, col), ""


def deep_tree_layout(data, names=None):
    """Whether :class:`DeepQuadratureSampler` integrates the layout (a nesting tree of depth
    at least three), and why (not).

    Parameters
    ----------
    data : LayoutData
    names : list of str, optional
        The components' names, for the reason.

    Returns
    -------
    ok : bool
    reason : str
    """
    got, why = _tree_levels(data)
    if got is None:
        return False, f"not a nesting tree of depth 3 or more ({why})"
    order = got[0]
    path = " > ".join(repr(names[t]) if names is not None else f"component {t}"
                      for t in order)
    return True, (f"a nesting tree of depth {len(order)} ({path}): every level integrated "
                  "by nested adaptive Gauss-Hermite quadrature, no Monte Carlo error")


class DeepTree:
    """The nesting tree of a layout (:func:`deep_tree_layout`).

    Attributes
    ----------
    comp : ndarray (D,)
        The component of each level, from the top.
    cols : list of ndarray
        Per level, its units' layout columns; units sorted by their ancestors, so that the
        children of a unit are contiguous.
    child_ptr : list of ndarray
        ``child_ptr[l][u]:child_ptr[l][u+1]``: the units of level ``l`` whose parent is unit
        ``u`` of level ``l - 1`` (``child_ptr[0]`` is None).
    anc : list of ndarray
        ``anc[l]`` (n_l, l): each unit's ancestor at every level above.
    rows : ndarray
        The layout rows sorted by their leaf; ``row_ptr`` the leaves' ranges of it.
    row_unit, row_z : ndarray (D, n)
        The unit (index within its level) and coefficient of each sorted row at each level.
    block_of_top : ndarray
        The layout block of each top-level unit.
    """

    deep = True
    vector = False

    def __init__(self, data):
        got, why = _tree_levels(data)
        if got is None:
            raise ValueError(f"sampler='quadrature' on this layout: {why}")
        order, col = got
        self.data = data
        self.comp = np.asarray(order, dtype=np.int64)
        D = len(order)
        n = data.Z.shape[0]
        Zc = data.Z.tocsr()
        zval = np.zeros((D, n))
        rows = np.repeat(np.arange(n), np.diff(Zc.indptr))
        lev_of_comp = np.empty(data.k_vc, dtype=np.int64)
        lev_of_comp[order] = np.arange(D)
        zval[lev_of_comp[data.ident[Zc.indices]], rows] = Zc.data
        path = col[order]  # (D, n): each row's column per level, from the top
        # units of each level sorted by (ancestors, own column)
        self.cols, self.anc, self.child_ptr = [], [], [None]
        idx_of_col = np.full(data.q, -1, dtype=np.int64)
        row_unit = np.zeros((D, n), dtype=np.int64)
        for lev in range(D):
            keys = np.unique(path[: lev + 1].T, axis=0)  # lexicographic by ancestors
            cols = keys[:, lev].astype(np.int64)
            self.cols.append(cols)
            idx_of_col[cols] = np.arange(cols.size)
            row_unit[lev] = idx_of_col[path[lev]]
            self.anc.append(idx_of_col[keys[:, :lev]].reshape(cols.size, lev))
            if lev:
                parent = self.anc[lev][:, lev - 1]
                self.child_ptr.append(np.searchsorted(parent, np.arange(
                    self.cols[lev - 1].size + 1)).astype(np.int64))
        leaf = row_unit[D - 1]
        self.rows = np.argsort(leaf, kind="stable")
        self.row_ptr = np.searchsorted(leaf[self.rows],
                                       np.arange(self.cols[-1].size + 1)).astype(np.int64)
        self.row_unit = row_unit[:, self.rows]
        self.row_z = zval[:, self.rows]
        self.block_of_top = data.block_of_col[self.cols[0]]
        # what the fit log and the split bookkeeping read
        self.split = np.full(data.n_blocks, -1)
        self.n_levels = int(sum(c.size for c in self.cols[1:]))
        # the engines' reads per chunk of top-level units (chunk_rows)
        self._chunk_rows = {}

    @property
    def depth(self) -> int:
        return len(self.comp)

    def chunk_rows(self, c0, c1, data):
        """What an evaluation of top-level units ``c0:c1`` reads of the tree and the
        layout data ``data`` (a ``_ChunkRows`` record), formed once per range and kept:
        every round's engine reads the same."""
        got = self._chunk_rows.get((c0, c1))
        if got is not None and got.data is data:
            return got
        D = self.depth
        # the units of every level under c0:c1 (contiguous: sorted by their ancestors)
        lo, hi = [c0], [c1]
        for lev in range(1, D):
            lo.append(int(self.child_ptr[lev][lo[-1]]))
            hi.append(int(self.child_ptr[lev][hi[-1]]))
        r0, r1 = int(self.row_ptr[lo[-1]]), int(self.row_ptr[hi[-1]])
        rows = self.rows[r0:r1]
        got = _ChunkRows(
            lo, hi, r0, r1, rows, self.row_ptr[lo[-1] : hi[-1] + 1] - r0,
            np.ascontiguousarray(self.row_z[D - 1, r0:r1]),
            np.ascontiguousarray(data.wy[rows], dtype=np.float64),
            np.ascontiguousarray(data.wn[rows], dtype=np.float64),
            np.ascontiguousarray(data.X[rows]),
            [self.row_unit[lev, r0:r1] for lev in range(D - 1)],
            [self.row_z[lev, r0:r1] for lev in range(D - 1)],
            [self.child_ptr[lev + 1][lo[lev] : hi[lev] + 1] - lo[lev + 1]
             for lev in range(D - 1)], data)
        self._chunk_rows[(c0, c1)] = got
        return got


class DeepQuadratureSampler:
    """The nested adaptive rule of a :class:`DeepTree` at ``params`` (see the module
    docstring); one empty "draw" for the engine's draw set.

    Parameters
    ----------
    system : BlockSystem
    params : ndarray
        ``(beta, nu)`` at the centre.
    mode : ModeResult
        Joint conditional modes at ``params`` (layout order).
    structure : DeepTree
    n_nodes : int
        Nodes of every level below the top.
    outer_nodes : int
        Nodes of the top level.

    Attributes
    ----------
    nodes : list of ndarray
        Per level ``l`` above the leaves, the effects' values at every path of nodes,
        ``(n_l, K_0 ... K_l)`` flattened to ``(n_l, P_l)`` (the last level's node varying
        fastest); every level's, the leaves' included, from ``level_nodes``.
    log_node : list of ndarray
        Per level, ``(n_l, K_l)``: ``log(w_k) + x_k^2 + log(sqrt(2) s)``, each node's weight
        in ``int f = sum_k exp(log_node_k + log f(node_k))``.
    centres, scales, std_nodes : list of ndarray
        Per level, the nodes' form ``nodes = centre + scale z``: ``(n_l, P_{l-1})`` centres
        (each effect's conditional mean at every path of its ancestors' nodes), ``(n_l,)``
        conditional SDs and the ``K_l`` standard nodes ``z = sqrt(2) x``.
    """

    name = "quadrature"
    deterministic = True
    shift = False
    recentre_failures = 0

    def __init__(self, system, params, mode, structure, n_nodes=DEEP_NODES,
                 outer_nodes=DEEP_OUTER_NODES):
        self.system, self.structure = system, structure
        self.params = np.asarray(params, dtype=float).copy()
        data = system.data
        D = structure.depth
        self.K = [int(outer_nodes)] + [int(n_nodes)] * (D - 1)
        self.outer = 1
        p = data.k_fe
        nu = self.params[p : p + data.k_vc]
        u = np.asarray(mode.u, dtype=float)
        eta = data.linear_fixed(self.params[:p]) + data.Z @ u
        h = data.family.obs_terms(eta, data.wy, data.wn)[2]
        mean, coef, sd = self._conditionals(h, nu, u)
        self.nodes, self.log_node = [], []
        self.centres, self.scales, self.std_nodes = [], [], []
        for lev in range(D):
            x, w = _gauss_hermite(self.K[lev])
            z = np.sqrt(2.0) * x
            n_l = structure.cols[lev].size
            centre = np.repeat(mean[lev][:, None], 1, axis=1)  # (n_l, 1)
            P_prev = int(np.prod(self.K[:lev]))
            centre = np.broadcast_to(centre, (n_l, P_prev)).copy()
            for j in range(lev):
                rep = int(np.prod(self.K[j + 1 : lev]))
                a = np.repeat(self.nodes[j][structure.anc[lev][:, j]], rep, axis=1)
                centre += coef[lev][:, j : j + 1] * (a - mean[j][structure.anc[lev][:, j]]
                                                     [:, None])
            self.centres.append(centre)
            self.scales.append(np.ascontiguousarray(sd[lev], dtype=float))
            self.std_nodes.append(z)
            if lev < D - 1:  # the leaves' (the largest array) only where asked for
                self.nodes.append(self._form_nodes(lev))
            self.log_node.append(np.log(w)[None, :] + (x * x)[None, :]
                                 + np.log(np.sqrt(2.0) * sd[lev])[:, None])

    @property
    def data(self):
        return self.system.data

    def _form_nodes(self, lev):
        """Level ``lev``'s nodes, ``centre + scale z`` at every path, ``(n_l, P_l)``."""
        centre, sd, z = self.centres[lev], self.scales[lev], self.std_nodes[lev]
        vals = centre[:, :, None] + sd[:, None, None] * z[None, None, :]
        return np.ascontiguousarray(vals.reshape(centre.shape[0], -1))

    def level_nodes(self, lev):
        """Level ``lev``'s nodes at every path, ``(n_l, P_l)`` (as ``nodes[lev]``), the
        leaves' included: formed on the first call and kept (the leaf kernel forms them
        itself, :class:`~glmm_sm.mcla.kernels.rb_deep.LeafRule`)."""
        while len(self.nodes) <= lev:
            self.nodes.append(self._form_nodes(len(self.nodes)))
        return self.nodes[lev]

    def _conditionals(self, h, nu, u):
        """Per level: the effects' modes, their conditional means' coefficients on their
        ancestors (``(n_l, l)``) and conditional SDs, from the joint Laplace precision
        ``P = Z' diag(h) Z + D^{-1}`` (``h`` per layout row, ``nu`` the variances) by
        eliminating the levels from the leaves up.

        In a tree, ``P`` links an effect only to itself and its ancestors, and each Schur
        complement keeps that form (eliminating an effect links its ancestors pairwise, all
        ancestors of one another), so ``P`` is held per level as ``A[l]`` (n_l, l + 1): each
        effect's entries with its ancestor at every level above (and itself, last), summed
        from the rows of each effect; the elimination updates them by sums over each
        effect's children."""
        st = self.structure
        data = self.data
        D = st.depth
        mean = [u[c] for c in st.cols]
        coef, sd = [None] * D, [None] * D
        hs = np.asarray(h, dtype=float)[st.rows]
        A = []
        for lev in range(D):
            n_l = st.cols[lev].size
            hz = hs * st.row_z[lev]
            a = np.empty((n_l, lev + 1))
            for j in range(lev + 1):
                a[:, j] = np.bincount(st.row_unit[lev], weights=hz * st.row_z[j],
                                      minlength=n_l)
            a[:, lev] += 1.0 / nu[data.ident[st.cols[lev]]]
            A.append(a)
        for lev in range(D - 1, -1, -1):
            d = A[lev][:, lev]
            if not np.all(d > 0):
                raise ValueError("the nested rule needs the Laplace precision of each level "
                                 "positive given its ancestors; it is not")
            sd[lev] = 1.0 / np.sqrt(d)
            if not lev:
                break
            off = A[lev][:, :lev]
            coef[lev] = -off / d[:, None]
            anc = st.anc[lev]
            for k in range(lev):
                n_k = st.cols[k].size
                wk = off[:, k] / d
                for j in range(k + 1):
                    A[k][:, j] -= np.bincount(anc[:, k], weights=wk * off[:, j],
                                              minlength=n_k)
        return mean, coef, sd

    def generate(self, seed, size):
        """One empty draw (nothing is sampled; ``seed`` is not used)."""
        if size != 1:
            raise ValueError(f"a nested quadrature draw set has m = 1; got {size}")
        data = self.data
        return DrawChunk(np.zeros((data.q, 1)), np.zeros((data.n_blocks, 1)),
                         np.zeros((data.n_blocks, data.n_s, 1)))


def top_unit_numbers(structure, K, d):
    """Numbers each top-level unit's evaluation holds (:class:`DeepQuadratureEngine`
    evaluates units together up to :data:`DEEP_CHUNK` of them): the leaves' scores and
    Hessians and the rows' linear predictors at every path of the leaves' ancestors'
    nodes; ``K`` the nodes per level, ``d`` the parameters."""
    st = structure
    Pa = int(np.prod(K[:-1]))
    n0 = st.cols[0].size
    rows = np.bincount(st.row_unit[0], minlength=n0)
    leaves = np.bincount(st.anc[-1][:, 0], minlength=n0)
    return (leaves * (d * d + d + 1) + rows) * Pa


class _ChunkRows(NamedTuple):
    """What an evaluation of top-level units ``c0:c1`` reads of the tree and the data, the
    same at every evaluation (:meth:`DeepTree.chunk_rows`): per level the
    first unit and the end (``lo``, ``hi``), the rows ``r0:r1`` of the sorted layout
    (``rows``), the leaf kernel's rows (:class:`~glmm_sm.mcla.kernels.rb_deep.LeafRows`
    without ``e0``: ``ptr``, ``z``, ``wy``, ``wn``, ``X``), the ancestors' units and
    coefficients of the rows (``unit``, ``z_anc``: per level above the leaves), per level
    above the leaves the ranges of each unit's children (``child``), and the layout data
    they were read from (``data``: a record is used only with the same)."""

    lo: list
    hi: list
    r0: int
    r1: int
    rows: np.ndarray
    ptr: np.ndarray
    z: np.ndarray
    wy: np.ndarray
    wn: np.ndarray
    X: np.ndarray
    unit: list
    z_anc: list
    child: list
    data: object


@functools.cache
def _gauss_hermite(k):
    """``np.polynomial.hermite.hermgauss(k)``, computed once per ``k`` (every round's
    rule, and the quadrature error measurement's, takes the same few); shared arrays, not
    to be written."""
    return np.polynomial.hermite.hermgauss(int(k))


@functools.cache
def _pair_index(e):
    """The rows and columns of :func:`~glmm_sm.mcla.kernels.rb_deep.packed_pairs` (``e``),
    as two int64 arrays (shared: not to be written; writeable, so that the kernels see one
    array type)."""
    ij = np.array(packed_pairs(e), dtype=np.int64).reshape(-1, 2).T.copy()
    return ij[0], ij[1]


class DeepQuadratureEngine(EngineBase):
    """The log-likelihood of a :class:`DeepTree` under the nested rule of a
    :class:`DeepQuadratureSampler`, with its exact gradient and Hessian.

    Parameters
    ----------
    draws : DrawSet
        The sampler's one empty draw (``draws.sampler`` the sampler).
    chunk_size, n_jobs
        As the other engines (the evaluation runs on one thread, by chunks of top-level
        units of at most :data:`DEEP_CHUNK` numbers).
    """

    kernel = "numpy-nested"
    joint_draws = False

    def __init__(self, draws, chunk_size=None, n_jobs=None):
        self._setup(draws, chunk_size, n_jobs)
        self.sampler = draws.sampler
        self.structure = self.sampler.structure
        self._chunks = self._top_chunks()

    def _top_chunks(self):
        """Ranges of top-level units evaluated together."""
        cost = top_unit_numbers(self.structure, self.sampler.K, self.k_params)
        n0 = cost.size
        out, t0, acc = [], 0, 0
        for t in range(n0):
            if acc and acc + cost[t] > DEEP_CHUNK:
                out.append((t0, t))
                t0, acc = t, 0
            acc += cost[t]
        out.append((t0, n0))
        return out

    def evaluate_score(self, params):
        """:meth:`~glmm_sm.mcla.engine.EngineBase.evaluate` without the Hessian
        (``hessian`` None): the value and the exact gradient, the same bits as a full
        evaluation's, at a little over half its cost (the quadrature error measurement,
        ``glmm_sm.fit.driver``, needs only the finer rule's gradient).  Not kept as the
        engine's last evaluation."""
        params = np.asarray(params, dtype=np.float64)
        p, T = self.data.k_fe, self.data.k_vc
        if (params.shape != (self.k_params,) or not np.all(np.isfinite(params))
                or np.any(params[p : p + T] <= 0)):
            return self.evaluate(params)  # its checks and answers
        return self._evaluate(params, True, hessian=False)

    def _evaluate(self, params, derivs, hessian=True):
        data = self.data
        p, T = data.k_fe, data.k_vc
        d = p + T
        beta, nu = params[:p], params[p : p + T]
        B = data.n_blocks
        block_values = np.zeros(B)
        grad, H = np.zeros(d), np.zeros((d, d))
        xb = data.linear_fixed(beta)
        hessian = bool(derivs and hessian)
        for c0, c1 in self._chunks:
            v, g, h = self._chunk(c0, c1, xb, nu, derivs, hessian=hessian)[:3]
            block_values[self.structure.block_of_top[c0:c1]] = v
            if derivs:
                grad += g.sum(axis=0)
            if hessian:
                H += h.sum(axis=0)
        value = float(block_values.sum())
        ess = np.full(B, np.inf)
        if not derivs or not np.isfinite(value):
            return Evaluation(value, None, None, None, ess, block_values)
        if not hessian:
            return Evaluation(value, grad, None, None, ess, block_values)
        H = 0.5 * (H + H.T)
        return Evaluation(value, grad, H, np.zeros((d, d)), ess, block_values)

    def _chunk(self, c0, c1, xb, nu, derivs, weights=False, hessian=True):
        """``(value, score, Hessian)`` per top-level unit ``c0:c1`` (and, with
        ``weights``, each level's node weights given the path above it); the Hessian None
        without ``hessian``."""
        st, smp, data = self.structure, self.sampler, self.data
        D, p = st.depth, data.k_fe
        d = p + data.k_vc
        cr = st.chunk_rows(c0, c1, data)
        lo, hi_u = cr.lo, cr.hi
        # the leaf level in the kernel: the rows' linear predictors without the leaf at
        # every path of the ancestors' nodes
        # (each level's nodes broadcast over the nodes of the levels below it, not repeated)
        Pa = int(np.prod(smp.K[:-1]))
        n_r = cr.r1 - cr.r0
        e0 = np.empty((n_r,) + tuple(smp.K[:-1]))
        e0[...] = xb[cr.rows].reshape((n_r,) + (1,) * (D - 1))
        for lev in range(D - 1):
            a = smp.nodes[lev][cr.unit[lev]]
            e0 += (cr.z_anc[lev].reshape((n_r,) + (1,) * (D - 1))
                   * a.reshape((n_r,) + tuple(smp.K[: lev + 1]) + (1,) * (D - 2 - lev)))
        e0 = e0.reshape(n_r, Pa)
        leaf = D - 1
        n_leaf = hi_u[leaf] - lo[leaf]
        t = int(st.comp[leaf])
        hessian = bool(derivs and hessian)
        # the leaves' scores and Hessians in the coordinates their terms involve: beta and
        # the leaves' variance
        e = p + 1
        coords = np.r_[np.arange(p), p + t]
        out = LeafOut(np.empty((n_leaf, Pa)),
                      np.empty((n_leaf, e, Pa) if derivs else (0, 0, 0)),
                      np.empty((n_leaf, e * (e + 1) // 2, Pa) if hessian else (0, 0, 0)),
                      np.empty((n_leaf, Pa * smp.K[leaf]) if weights else (0, 0)))
        leaf_level(data.family.kernel, LeafRows(cr.ptr, e0, cr.z, cr.wy, cr.wn, cr.X),
                   LeafRule(np.ascontiguousarray(smp.log_node[leaf][lo[leaf] : hi_u[leaf]]),
                            float(nu[t]), t, smp.centres[leaf][lo[leaf] : hi_u[leaf]],
                            smp.scales[leaf][lo[leaf] : hi_u[leaf]], smp.std_nodes[leaf]),
                   out, bool(derivs), hessian)
        cw = [out.cw] if weights else []
        val, g, Hn = out.val, out.g, out.H
        # the entries of the level below's scores and Hessians: the leaves' coordinates,
        # then (from the level above the leaves on) every coordinate
        gi = coords
        hi, hj = (coords[i] for i in _pair_index(e))
        for lev in range(D - 2, -1, -1):
            # the level below (parent_level sums it over each unit's children)
            cp = cr.child[lev]
            sums = LevelSums(val, g if derivs else _EMPTY3, gi, Hn if hessian else _EMPTY3,
                             hi, hj, cp)
            t = int(st.comp[lev])
            a = smp.nodes[lev][lo[lev] : hi_u[lev]]  # (n_l, P_l)
            n_l, Pl = a.shape
            Ql = Pl // smp.K[lev]
            val = np.empty((n_l, Ql))
            g = np.empty((n_l, d, Ql)) if derivs else _EMPTY3
            Hn = np.empty((n_l, d * (d + 1) // 2, Ql)) if hessian else _EMPTY3
            w = np.empty((n_l, Pl)) if weights else _EMPTY2
            parent_level(LevelRule(a, np.ascontiguousarray(smp.log_node[lev][lo[lev] :
                                                                             hi_u[lev]]),
                                   float(nu[t]), p + t), sums, val, g, Hn, w)
            if weights:
                cw.append(w)
            gi = np.arange(d, dtype=np.int64)
            hi, hj = _pair_index(d)
        v = val[:, 0]
        if not derivs:
            return v, None, None, cw[::-1]
        if not hessian:
            return v, g[:, :, 0], None, cw[::-1]
        Hu = np.empty((v.size, d, d))
        Hu[:, hi, hj] = Hn[:, :, 0]
        Hu[:, hj, hi] = Hn[:, :, 0]
        return v, g[:, :, 0], Hu, cw[::-1]

    def random_effect_moments(self, params):
        """Conditional means and SDs of every random effect (model column order), from the
        nested rule's posterior weights of each effect's nodes."""
        data, st, smp = self.data, self.structure, self.sampler
        params = np.asarray(params, dtype=np.float64)
        p, T = data.k_fe, data.k_vc
        nu = params[p : p + T]
        xb = data.linear_fixed(params[:p])
        mean_l, m2_l = np.zeros(data.q), np.zeros(data.q)
        D = st.depth
        for c0, c1 in self._chunks:
            cw = self._chunk(c0, c1, xb, nu, False, weights=True)[3]
            lo = [c0]
            for lev in range(1, D):
                lo.append(int(st.child_ptr[lev][lo[-1]]))
            # per level: each unit's nodes at a path of its ancestors' are ``c + s z_k``, so
            # its moments given the path are ``c + s E[z]`` and ``c^2 + 2 c s E[z] + s^2
            # E[z^2]`` under the nodes' weights (the nodes themselves not formed), summed
            # over the paths by their posterior weights
            post = None
            for lev in range(D):
                u0, n_l = lo[lev], cw[lev].shape[0]
                cw3 = cw[lev].reshape(n_l, -1, smp.K[lev])
                if post is None:
                    pp = np.ones((n_l, 1))
                else:
                    pp = post[st.anc[lev][u0 : u0 + n_l, lev - 1] - lo[lev - 1]]
                z = smp.std_nodes[lev]
                c = smp.centres[lev][u0 : u0 + n_l]
                sd = smp.scales[lev][u0 : u0 + n_l, None]
                ez, ez2 = cw3 @ z, cw3 @ (z * z)
                cols = st.cols[lev][u0 : u0 + n_l]
                mean_l[cols] = (pp * (c + sd * ez)).sum(axis=1)
                m2_l[cols] = (pp * (c * c + 2.0 * c * sd * ez + sd * sd * ez2)).sum(axis=1)
                if lev < D - 1:
                    post = (pp[:, :, None] * cw3).reshape(n_l, -1)
        q_model = data.arrays.Z.shape[1]
        mean = np.zeros(q_model)
        sd = np.sqrt(nu[data.arrays.ident])
        cp = data.layout.col_perm
        mean[cp] = mean_l
        sd[cp] = np.sqrt(nonnegative_up_to_rounding(
            m2_l - mean_l**2, m2_l, "conditional variances of the random effects"))
        return mean, sd

    def _posterior(self, c0, c1, xb, nu):
        """For top units ``c0:c1``: ``(lo, cw, post)`` with per level the first unit
        ``lo[l]``, the nodes' weights given the path above (``cw[l]``, (n_l, P_l)) and the
        posterior weight of every path (``post[l]``, the same shape)."""
        st, smp = self.structure, self.sampler
        cw = self._chunk(c0, c1, xb, nu, False, weights=True)[3]
        lo = [c0]
        for lev in range(1, st.depth):
            lo.append(int(st.child_ptr[lev][lo[-1]]))
        post = [cw[0]]
        for lev in range(1, st.depth):
            par = st.anc[lev][lo[lev] : lo[lev] + cw[lev].shape[0], lev - 1] - lo[lev - 1]
            post.append(np.repeat(post[-1][par], smp.K[lev], axis=1) * cw[lev])
        return lo, cw, post

    def effect_cov(self, params):
        """Per block, the conditional covariance of its effects (layout columns
        ``col_ptr[b]:col_ptr[b+1]``, in that order) at ``params``: ``{b: (qb, qb)}``.

        Effects ``u`` and ``v`` with deepest common ancestor (or self) ``c`` are
        independent given the path of nodes down to ``c``: ``E[a_u a_v] = sum_pi
        post_c(pi) E[a_u | pi] E[a_v | pi]``, the conditional means given a path found by
        summing each level's node weights from the effect up."""
        data, st, smp = self.data, self.structure, self.sampler
        params = np.asarray(params, dtype=np.float64)
        p, T, D = data.k_fe, data.k_vc, st.depth
        nu = params[p : p + T]
        xb = data.linear_fixed(params[:p])
        out = {}
        for c0, c1 in self._chunks:
            lo, cw, post = self._posterior(c0, c1, xb, nu)
            n = [c.shape[0] for c in cw]
            # M[lev][l]: E[a_v | path at level l] of each unit v of level lev, l <= lev
            M = []
            for lev in range(D):
                Ml = {lev: smp.level_nodes(lev)[lo[lev] : lo[lev] + n[lev]]}
                for l_ in range(lev, 0, -1):
                    a_l = st.anc[lev][lo[lev] : lo[lev] + n[lev], l_] - lo[l_] if l_ < lev \
                        else np.arange(n[lev])
                    w = cw[l_][a_l].reshape(n[lev], -1, smp.K[l_])
                    Ml[l_ - 1] = (w * Ml[l_].reshape(w.shape)).sum(axis=2)
                M.append(Ml)
            means = [(post[lev] * M[lev][lev]).sum(axis=1) for lev in range(D)]
            second = [(post[lev] * M[lev][lev] ** 2).sum(axis=1) for lev in range(D)]
            for top in range(c0, c1):
                b = int(st.block_of_top[top])
                cb0 = int(data.col_ptr[b])
                qb = int(data.col_ptr[b + 1]) - cb0
                # the block's effects: (level, local index, ancestors-or-self by level)
                units = [(0, top - lo[0])]
                for lev in range(1, D):
                    idx = np.flatnonzero(st.anc[lev][lo[lev] : lo[lev] + n[lev], 0] == top)
                    units.extend((lev, int(i)) for i in idx)
                # each effect's ancestors-or-self by level (indices local to the chunk)
                paths = [[int(a) - lo[l_] for l_, a in enumerate(st.anc[lev][lo[lev] + i])]
                         + [i] for lev, i in units]
                C = np.zeros((qb, qb))
                pos = [int(st.cols[lev][lo[lev] + i]) - cb0 for lev, i in units]
                for x, (lu, iu) in enumerate(units):
                    C[pos[x], pos[x]] = second[lu][iu] - means[lu][iu] ** 2
                    for y in range(x):
                        lv, iv = units[y]
                        lc = 0
                        while (lc + 1 <= min(lu, lv)
                               and paths[x][lc + 1] == paths[y][lc + 1]):
                            lc += 1
                        c = paths[x][lc]
                        e = (post[lc][c] * M[lu][lc][iu] * M[lv][lc][iv]).sum()
                        C[pos[x], pos[y]] = C[pos[y], pos[x]] = (
                            e - means[lu][iu] * means[lv][iv])
                out[b] = C
        return out

    def iter_log_weights(self, params):
        """The one "draw"'s log weight per block: its value (there is nothing sampled)."""
        ev = self.evaluate(np.asarray(params, dtype=np.float64), derivs=False)
        yield ev.block_values[:, None].copy()

    def weighted_draws(self, params, chunk_size=512):
        raise NotImplementedError(
            "this quantity needs joint draws of every random effect, which a deterministic "
            "nested fit does not have (every effect is summed by quadrature); refit with "
            "sampler='laplace', rao_blackwell=False for it")

