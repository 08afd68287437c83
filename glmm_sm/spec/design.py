"""The random-effects design: Z, the variance component of each column, and the blocks.

``Z`` is the n x q random-effects design (``exog_vc`` in statsmodels' BayesMixedGLM), each column
one random effect ``u_j ~ N(0, nu[ident[j]])``.  The likelihood factorizes over the connected
components of the bipartite graph that links each observation to the random-effect columns
it loads on: each component (a *block*) is an independent integral.  Salamander's crossed
Female/Male design splits into 6 blocks of 20 effects, bacteria into 50 blocks of one.

A :class:`BlockLayout` fixes an order of observations and columns in which every block is a
contiguous range of both; the sampler, Laplace step and kernels all work in that order.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from glmm_sm.spec.compat import FORMULA_ERRORS
from glmm_sm.spec.covstruct import CovStructure
from glmm_sm.spec.formula_checks import check_vc_columns, check_vc_formula

__all__ = ["Block", "BlockLayout", "RandomEffectsDesign", "vc_design_from_formulas"]


@dataclass(frozen=True)
class Block:
    """One independent integral.

    Attributes
    ----------
    obs : ndarray of int
        Observation (row) indices, in the model's order.
    columns : ndarray of int
        Random-effect column indices into ``exog_vc``.
    q_per_component : ndarray of int
        Number of this block's columns in each variance component.
    """

    obs: np.ndarray
    columns: np.ndarray
    q_per_component: np.ndarray

    @property
    def nobs(self) -> int:
        return len(self.obs)

    @property
    def q(self) -> int:
        return len(self.columns)

    def __repr__(self) -> str:
        return f"Block(nobs={self.nobs}, q={self.q})"


@dataclass(frozen=True)
class BlockLayout:
    """Observations and columns ordered so that each block is contiguous.

    Attributes
    ----------
    obs_perm, col_perm : ndarray of int
        Model indices of the observations / columns in layout order.
    obs_ptr, col_ptr : ndarray of int
        Block ``b`` holds layout observations ``obs_ptr[b]:obs_ptr[b+1]`` and columns
        ``col_ptr[b]:col_ptr[b+1]``.
    ident : ndarray of int
        Variance component of each layout column.
    qbt : ndarray, shape (n_blocks, T)
        Columns per block and component, float64.
    pairs : tuple of ndarray (L_t, k_t)
        Per correlated term, the layout columns of each level's effects (a level's ``k_t``
        columns always share a block).
    """

    obs_perm: np.ndarray
    col_perm: np.ndarray
    obs_ptr: np.ndarray
    col_ptr: np.ndarray
    ident: np.ndarray
    qbt: np.ndarray
    pairs: tuple = ()

    @property
    def n_blocks(self) -> int:
        return len(self.obs_ptr) - 1

    @property
    def q(self) -> int:
        return len(self.col_perm)

    @property
    def block_of_obs(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_blocks), np.diff(self.obs_ptr))

    @property
    def block_of_col(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_blocks), np.diff(self.col_ptr))

    def blocks(self):
        """The blocks as a list of :class:`Block`, in model indices."""
        out = []
        for b in range(self.n_blocks):
            out.append(
                Block(
                    obs=self.obs_perm[self.obs_ptr[b] : self.obs_ptr[b + 1]],
                    columns=self.col_perm[self.col_ptr[b] : self.col_ptr[b + 1]],
                    q_per_component=self.qbt[b].astype(np.int64),
                )
            )
        return out


class RandomEffectsDesign:
    """Random-effects design matrix with variance-component labels and blocks.

    Parameters
    ----------
    exog_vc : array_like or scipy.sparse matrix, shape (n, q)
        The random-effects design.
    ident : array_like of int, shape (q,)
        Variance component (0-based) of each column.
    vcp_names : sequence of str
        One name per variance component.
    col_names : sequence of str, optional
        Names of the random effects (columns).
    cov_terms : sequence of (str, sequence of int, sequence of str), optional
        Correlated terms: the term's name, its components (the same number of columns
        each, column ``l`` of every component belonging to level ``l``) and a label for
        each component's column (``"Intercept"``, ``"urban[T.Y]"``).  Their effects per
        level are ``N(0, Sigma)`` with an unstructured ``Sigma`` (:mod:`glmm_sm.spec.covstruct`).
    """

    def __init__(self, exog_vc, ident, vcp_names, col_names=None, cov_terms=None):
        Z = sp.csr_matrix(exog_vc, dtype=np.float64) if sp.issparse(exog_vc) else None
        if Z is None:
            arr = np.asarray(exog_vc, dtype=np.float64)
            if arr.ndim != 2:
                raise ValueError(f"exog_vc must be two-dimensional; got shape {arr.shape}")
            Z = sp.csr_matrix(arr)
        if not np.all(np.isfinite(Z.data)):
            raise ValueError("exog_vc contains NaN or infinite values")
        Z.eliminate_zeros()
        Z.sort_indices()
        n, q = Z.shape
        ident = np.asarray(ident)
        if ident.ndim != 1 or len(ident) != q:
            raise ValueError(f"ident must have one entry per column of exog_vc ({q}); "
                             f"got {ident.shape}")
        if q and (not np.issubdtype(ident.dtype, np.integer) or ident.min() < 0):
            raise ValueError("ident must hold non-negative integers (0-based components)")
        vcp_names = [str(v) for v in vcp_names]
        T = len(vcp_names)
        if len(set(vcp_names)) != T:
            raise ValueError(f"vcp_names: duplicate variance-component names in {vcp_names}")
        if q and ident.max() >= T:
            raise ValueError(f"ident refers to component {ident.max()} but only {T} names "
                             "were given in vcp_names")
        counts = np.bincount(ident.astype(np.int64), minlength=T)
        if np.any(counts == 0):
            empty = [vcp_names[t] for t in np.flatnonzero(counts == 0)]
            raise ValueError(f"variance component(s) {empty} have no random-effect columns")
        self.Z = Z
        self.ident = ident.astype(np.int64)
        #: Per component, its columns with an observation (a Categorical's unused
        #: categories give empty columns, which are not levels of the data).
        self.levels_occurring = np.bincount(
            self.ident, weights=np.diff(Z.tocsc().indptr) > 0, minlength=T).astype(np.int64)
        self.vcp_names = vcp_names
        self.col_names = list(col_names) if col_names is not None else [f"u{j}" for j in
                                                                       range(q)]
        self.cov_terms = _checked_terms(cov_terms, self.ident, vcp_names)
        self.cov = CovStructure(T, [c for _, c, _ in self.cov_terms])
        self.pairs = tuple(np.stack([np.flatnonzero(self.ident == a) for a in c], axis=1)
                           for _, c, _ in self.cov_terms)
        self._layout = None

    @property
    def param_names(self):
        """Names of the covariance parameters (``vcp_names`` without correlated terms)."""
        labels = {}
        for name, comps, cols in self.cov_terms:
            labels[next(i for i, u in enumerate(self.cov.units) if u[0] == comps[0])] = (
                name, cols)
        return self.cov.param_names(self.vcp_names, labels)

    @property
    def nobs(self) -> int:
        return self.Z.shape[0]

    @property
    def q(self) -> int:
        return self.Z.shape[1]

    @property
    def k_vc(self) -> int:
        return len(self.vcp_names)

    def layout(self, factorize=True) -> BlockLayout:
        """The block layout: connected components, or one block if ``factorize=False``."""
        if not factorize:
            return self._single_layout()
        if self._layout is None:
            self._layout = self._component_layout()
        return self._layout

    def _single_layout(self):
        n, q = self.Z.shape
        qbt = np.bincount(self.ident, minlength=self.k_vc).astype(np.float64)[None, :]
        return BlockLayout(np.arange(n), np.arange(q), np.array([0, n]), np.array([0, q]),
                           self.ident.copy(), qbt, self.pairs)

    def _component_layout(self):
        n, q = self.Z.shape
        Zb = self.Z.copy()
        Zb.data[:] = 1.0
        # A level's effects in a correlated term share a block (linked through the prior).
        links = None
        if self.pairs:
            a = np.concatenate([pr[:, 0].repeat(pr.shape[1] - 1) for pr in self.pairs])
            b = np.concatenate([pr[:, 1:].ravel() for pr in self.pairs])
            links = sp.csr_matrix((np.ones(len(a)), (a, b)), shape=(q, q))
        graph = sp.bmat([[None, Zb], [Zb.T, links]], format="csr")
        _, labels = connected_components(graph, directed=False)
        obs_lab, col_lab = labels[:n], labels[n:]
        # Columns without observations integrate to one: they belong to no block (in a
        # correlated term: unless another effect of the same level has observations).
        used = np.diff(self.Z.tocsc().indptr) > 0
        for pr in self.pairs:
            used[pr] = used[pr].any(axis=1)[:, None]
        # Number blocks by first appearance in observation order (deterministic).
        _, first = np.unique(obs_lab, return_index=True)
        order = np.argsort(first, kind="stable")
        relabel = np.full(labels.max() + 1, -1)
        relabel[np.unique(obs_lab)[order]] = np.arange(len(order))
        ob = relabel[obs_lab]
        cb = np.where(used, relabel[col_lab], -1)
        obs_perm = np.argsort(ob, kind="stable")
        keep = np.flatnonzero(cb >= 0)
        col_perm = keep[np.argsort(cb[keep], kind="stable")]
        nb = len(order)
        obs_ptr = np.concatenate([[0], np.cumsum(np.bincount(ob, minlength=nb))])
        col_ptr = np.concatenate([[0], np.cumsum(np.bincount(cb[keep], minlength=nb))])
        ident = self.ident[col_perm]
        qbt = np.zeros((nb, self.k_vc))
        np.add.at(qbt, (cb[col_perm], ident), 1.0)
        pos = np.full(q, -1)
        pos[col_perm] = np.arange(len(col_perm))
        pairs = tuple(pos[pr[used[pr[:, 0]]]] for pr in self.pairs)
        return BlockLayout(obs_perm, col_perm, obs_ptr, col_ptr, ident, qbt, pairs)

    def blocks(self, factorize=True):
        """List of :class:`Block`."""
        return self.layout(factorize).blocks()


def _checked_terms(cov_terms, ident, vcp_names):
    """``cov_terms`` as a list of ``(name, [components], [labels])``, checked."""
    out = []
    counts = np.bincount(ident, minlength=len(vcp_names))
    for term in cov_terms or ():
        try:
            name, comps, labels = term
        except (TypeError, ValueError):
            raise ValueError(f"cov_terms: each term must be (name, components, labels); "
                             f"got {term!r}") from None
        comps = [int(c) for c in comps]
        labels = [str(c) for c in labels]
        if len(labels) != len(comps) or len(comps) < 2:
            raise ValueError(f"cov_terms[{name!r}]: needs at least two components and one "
                             f"label per component; got {comps} and {labels}")
        if any(c < 0 or c >= len(vcp_names) for c in comps):
            raise ValueError(f"cov_terms[{name!r}]: components {comps} are not all in "
                             f"0..{len(vcp_names) - 1}")
        if len(set(counts[comps].tolist())) != 1:
            raise ValueError(f"cov_terms[{name!r}]: the components of a correlated term need "
                             f"the same number of columns (one per level); got "
                             f"{counts[comps].tolist()}")
        out.append((str(name), comps, labels))
    # In the order of their first component, as CovStructure orders its units.
    return sorted(out, key=lambda t: min(t[1]))


def vc_design_from_formulas(vc_formulas, data, eval_env=0, vcp_names=None, equal=None):
    """Build ``exog_vc``, ``ident`` and names from statsmodels-style variance-component formulas.

    Parameters
    ----------
    vc_formulas : dict or sequence
        ``{name: formula}`` as BayesMixedGLM takes it (``{"F": "0 + C(Female)"}``), or a list of
        formulas (glmm style) with ``vcp_names`` and ``equal`` giving the component of each.
    data : DataFrame
    eval_env : int or dict
        Passed to the formula engine.
    vcp_names : sequence of str, optional
        Component names for the list form.
    equal : sequence of int, optional
        glmm's ``varcomps.equal``: for each formula of the list form, the 1-based component it
        belongs to; formulas with the same number share one variance.

    Returns
    -------
    exog_vc : scipy.sparse.csr_matrix
    ident : ndarray of int
    vcp_names : list of str
    col_names : list of str
    """
    from statsmodels.formula._manager import FormulaManager

    from glmm_sm.spec.sparse_formula import capture_env, sparse_columns

    formulas, names, comp = _normalize_vc_spec(vc_formulas, vcp_names, equal)
    mgr = FormulaManager()
    env = capture_env(eval_env)  # the environment get_matrices would use from here
    mats, idents, cols = [], [], []
    per_comp = np.bincount(np.asarray(comp, dtype=int), minlength=len(names))
    for f, t in zip(formulas, comp, strict=True):
        label = names[t]
        check_vc_formula(label, f)
        # Grouping factors (and their products with covariates) directly as sparse
        # columns; anything else through the formula engine.
        built = sparse_columns(f, data, env)
        if built is None:
            try:
                mat = mgr.get_matrices(f, data, eval_env=eval_env, pandas=True,
                                       na_action="raise")
            except FORMULA_ERRORS as exc:  # the formula engines raise many types
                raise ValueError(f"vc_formulas[{label!r}]: could not evaluate {f!r}: "
                                 f"{exc}") from exc
            built = _frame_columns(pd.DataFrame(mat))
        M, colnames = built.matrix, built.names
        if M.shape[1] == 0:
            raise ValueError(f"vc_formulas[{label!r}]: formula {f!r} produces no columns")
        if not np.all(np.isfinite(M.data)):
            raise ValueError(f"vc_formulas[{label!r}]: formula {f!r} gives NaN or infinite values")
        if not np.any(M.data):
            raise ValueError(f"vc_formulas[{label!r}]: formula {f!r} gives an all-zero design")
        check_vc_columns(label, f, M, colnames, alone=per_comp[t] == 1)
        mats.append(M)
        idents.append(np.full(M.shape[1], t))
        cols.extend((label, c) for c in colnames)
    # Columns ordered by component, then formula order within a component (glmm's order).
    ident = np.concatenate(idents)
    order = np.argsort(ident, kind="stable")
    Z = sp.hstack(mats, format="csc")[:, order].tocsr()
    # Effect names as the formula engine gives them, prefixed by the component only when
    # two components would otherwise share a name.
    counts = Counter(c for _, c in cols)
    col_names = [f"{lab}:{c}" if counts[c] > 1 else c for lab, c in cols]
    return Z, ident[order], names, [col_names[j] for j in order]


def _frame_columns(frame):
    """A formula engine's model matrix (DataFrame) as sparse columns, one column at a
    time (no second dense copy)."""
    from glmm_sm.spec.sparse_formula import SparseColumns

    n = frame.shape[0]
    rows, vals, ptr = [], [], [0]
    for j in range(frame.shape[1]):
        col = np.asarray(frame.iloc[:, j], dtype=np.float64)
        nz = np.flatnonzero(col)  # NaN counts as non-zero, for the finiteness check
        rows.append(nz)
        vals.append(col[nz])
        ptr.append(ptr[-1] + nz.size)
    Z = sp.csc_matrix((np.concatenate(vals) if vals else np.zeros(0),
                       np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64),
                       np.asarray(ptr)), shape=(n, frame.shape[1]))
    return SparseColumns(Z, [str(c) for c in frame.columns])


def _normalize_vc_spec(vc_formulas, vcp_names, equal):
    if isinstance(vc_formulas, dict):
        if not vc_formulas:
            raise ValueError("vc_formulas is empty: give at least one variance component")
        if equal is not None or vcp_names is not None:
            raise ValueError("varcomps_equal / varcomps_names go with a list of formulas, "
                             "not with a dict of vc_formulas")
        names = [str(k) for k in vc_formulas]
        formulas, comp = [], []
        for t, (_, spec) in enumerate(vc_formulas.items()):
            specs = [spec] if isinstance(spec, str) else list(spec)
            for f in specs:
                formulas.append(_check_formula(f, names[t]))
                comp.append(t)
        return formulas, names, comp
    if isinstance(vc_formulas, str):
        vc_formulas = [vc_formulas]
    formulas = list(vc_formulas)
    if not formulas:
        raise ValueError("vc_formulas is empty: give at least one random-effect formula")
    L = len(formulas)
    if equal is None:
        equal = list(range(1, L + 1))
    equal = [int(e) for e in equal]
    if len(equal) != L:
        raise ValueError(f"varcomps_equal has {len(equal)} entries for {L} formulas")
    T = max(equal)
    if sorted(set(equal)) != list(range(1, T + 1)):
        raise ValueError("varcomps_equal must use the integers 1..T with none missing; "
                         f"got {equal}")
    if vcp_names is None:
        vcp_names = [f"vc{t + 1}" for t in range(T)]
    vcp_names = [str(v) for v in vcp_names]
    if len(vcp_names) != T:
        raise ValueError(f"varcomps_names has {len(vcp_names)} names for {T} components")
    comp = [e - 1 for e in equal]
    formulas = [_check_formula(f, vcp_names[t]) for f, t in zip(formulas, comp, strict=True)]
    return formulas, vcp_names, comp


def _check_formula(f, label):
    if not isinstance(f, str) or not f.strip():
        raise ValueError(f"vc_formulas[{label!r}]: expected a non-empty formula string, got {f!r}")
    f = f.strip()
    return f[1:].strip() if f.startswith("~") else f


def single_effect_components(Z, ident):
    """Components with one random effect that loads equally on every observation.

    That is what a factor with a single level gives; its variance has a single realization
    to learn from and cannot be estimated.
    """
    Zc = sp.csc_matrix(Z)
    n = Zc.shape[0]
    ident = np.asarray(ident)
    out = []
    for t in np.flatnonzero(np.bincount(ident) == 1) if ident.size else []:
        j = int(np.flatnonzero(ident == t)[0])
        col = Zc.data[Zc.indptr[j] : Zc.indptr[j + 1]]
        if n > 1 and col.size == n and np.all(col == col[0]):
            out.append(int(t))
    return out


def same_design_components(Z, ident):
    """The first pair ``(s, t)`` of components whose columns of ``Z`` are the same set."""
    Zc = sp.csc_matrix(Z)
    Zc.sort_indices()
    ident = np.asarray(ident)
    seen = {}
    for t in np.unique(ident):
        cols = frozenset(
            (Zc.indices[Zc.indptr[j] : Zc.indptr[j + 1]].tobytes(),
             Zc.data[Zc.indptr[j] : Zc.indptr[j + 1]].tobytes())
            for j in np.flatnonzero(ident == t))
        if cols in seen:
            return seen[cols], int(t)
        seen[cols] = int(t)
    return None


def check_single_effects(Z, ident, vcp_names, vc_formulas=None):
    """Refuse a component with a single random effect shared by every observation.

    Parameters
    ----------
    Z, ident, vcp_names
        The random-effects design, component of each column and component names.
    vc_formulas : list of (str, int), optional
        Each variance-component formula with its component: the message then names the
        formula(s) that gave the component.
    """
    single = single_effect_components(Z, ident)
    if not single:
        return
    t = single[0]
    if vc_formulas is None:
        raise ValueError(f"variance component {vcp_names[t]!r} has a single random effect, "
                         "the same for every observation (a factor with a single level?); "
                         "its variance cannot be estimated from the data")
    which = [f for f, c in vc_formulas if c == t]
    raise ValueError(f"vc_formulas[{vcp_names[t]!r}]: {' + '.join(map(repr, which))} gives a "
                     "single random effect shared by every observation (a factor with a "
                     "single level?); its variance cannot be estimated from the data, so drop "
                     "this component")


def check_effect_counts(Z, ident, vcp_names, cov_terms=(), term_labels=()):
    """Refuse a term with more random effects than observations (lme4's
    ``check.nobs.vs.nRE``, which glmer applies as ``number of random effects > nobs``):
    ``(x | g)`` with one level of ``g`` per row has two effects per observation, and its
    variances are not identifiable.

    Parameters
    ----------
    Z : scipy.sparse matrix (n, q)
    ident : ndarray of int (q,)
    vcp_names : list of str
        The components' names.
    cov_terms : list of (str, list of int, list of str)
        The correlated terms (their components together form one term).
    term_labels : list of str
        A label for each correlated term, e.g. ``"(x | g)"``.
    """
    Zc = sp.csc_matrix(Z)
    n = Zc.shape[0]
    used = np.diff(Zc.indptr) > 0
    ident = np.asarray(ident)
    in_term = set()
    for i, (name, comps, _) in enumerate(cov_terms or ()):
        in_term.update(comps)
        cols = np.stack([np.flatnonzero(ident == c) for c in comps], axis=1)
        levels = int(used[cols].any(axis=1).sum())
        q = levels * len(comps)
        if q > n:
            label = term_labels[i] if i < len(term_labels) else f"({name})"
            raise ValueError(
                f"random-effect term {label}: {q} random effects ({levels} levels x "
                f"{len(comps)}) for {n} observations; their variances are not identifiable "
                f"(lme4 refuses it: number of observations (={n}) < number of random "
                f"effects (={q}) for term {label}). Use a grouping factor with fewer levels "
                "than observations, or a scalar term such as (1 | g)")
    for t, name in enumerate(vcp_names):
        if t in in_term:
            continue
        q = int(used[ident == t].sum())
        if q > n:
            raise ValueError(f"variance component {name!r}: {q} random effects for {n} "
                             "observations; its variance is not identifiable (lme4: number "
                             "of observations < number of random effects)")


def checked_design(exog_vc, ident, vcp_names, vc_names, n, fe_names, cov_terms=None):
    """The :class:`RandomEffectsDesign` of the array constructor, with its identifiability
    checks: ``n`` rows, component names distinct from the fixed effects ``fe_names``, no
    component with a single shared effect; a warning (pointing at the constructor's caller)
    when two components have the same design."""
    ident = np.asarray(ident)
    if vcp_names is None:
        vcp_names = [f"vc{t + 1}" for t in range(int(ident.max()) + 1 if ident.size else 0)]
    Z = exog_vc if sp.issparse(exog_vc) else np.asarray(exog_vc, dtype=np.float64)
    if Z.shape[0] != n:
        raise ValueError(f"exog_vc has {Z.shape[0]} rows but endog has {n}")
    design = RandomEffectsDesign(Z, ident, vcp_names, vc_names, cov_terms)
    clash = sorted(set(design.vcp_names) & {str(c) for c in fe_names})
    if clash:
        raise ValueError(f"vcp_names: variance component name(s) {clash} are also names of "
                         "fixed-effect columns of exog; give the components other names")
    check_single_effects(design.Z, design.ident, design.vcp_names)
    same = same_design_components(design.Z, design.ident)
    if same:
        a, b = (design.vcp_names[t] for t in same)
        # A warning, not an error: glmm's murder example (0 + C(black), 0 + C(white)) is
        # such a design, fitted at the boundary.
        warnings.warn(f"variance components {a!r} and {b!r} have the same random-effects "
                      "design (e.g. a factor nested in another with one sub-level per "
                      "level, or the two levels of one factor coded twice), so only the "
                      "sum of their variances is identified; consider dropping one",
                      UserWarning, stacklevel=3)
    return design
