"""Rao-Blackwellized MCLA for large crossed blocks (``docs/theory.rst``, "Rao-Blackwellized
blocks").

A block whose effects include the levels of a scalar component A such that every
observation loads on at most one of them (subjects in a subjects x items design) is split:
the other effects ``v`` (items) are importance-sampled, and each level of A is integrated out
exactly given ``v``, by adaptive Gauss-Hermite quadrature (:mod:`glmm_sm.mcla.kernels.rb`).  The
Monte Carlo error is then ``v``'s alone: 24 dimensions instead of 340 on VerbAgg.

* :func:`choose_split` picks A per block: among the scalar components loading at most once
  per observation, the one with the most levels (a fully nested block has none: plain MCLA).
* :class:`RBStructure` holds the layout's fixed bookkeeping (levels, their observations,
  free observations, the sampled columns).
* :class:`RBSampler` draws ``v`` from the Laplace approximation of its integrated density
  at the round's centre (a normal with a defensive t; :mod:`glmm_sm.mcla.rb.proposal`), and
  fixes each level's quadrature rule:
  nodes at ``mu_a(v) = u_a + c_a' (v - v_hat)`` with scale ``s_a``, the conditional mean and
  SD of ``alpha_a`` given ``v`` under the same approximation.
* :class:`.RBEngine` evaluates ``l_m`` and its exact derivatives on such draws.
"""

from __future__ import annotations

import copy

import numpy as np
import scipy.sparse as sp

from glmm_sm.core.constants import HALF_LOG2PI
from glmm_sm.laplace.step import mode_derivatives
from glmm_sm.mcla.kernels.rb_nested import recentre_levels
from glmm_sm.mcla.kernels.records import RBLevels, RBRule
from glmm_sm.mcla.rb.proposal import integrated_laplace
from glmm_sm.mcla.sampler import DrawChunk, _log_t_norm, stratified_counts

__all__ = ["choose_split", "RBStructure", "RBSampler", "QuadratureSampler", "rb_eligible",
           "quadrature_layout", "N_NODES", "OUTER_NODES"]

#: Gauss-Hermite nodes per integrated level.
N_NODES = 12
#: Gauss-Hermite nodes of the outer integral of :class:`QuadratureSampler` (the one effect
#: left per block once a component is integrated).
OUTER_NODES = 20
#: "auto" integrates a block's component only in blocks with at least this many effects,
#: where the sampled dimension falls to at most a quarter.
AUTO_MIN_Q, AUTO_MAX_SHARE = 100, 0.25


def choose_split(data):
    """Per block, the component A integrated by quadrature (or -1).

    A must be a scalar component of which every observation of the block loads on at most
    one column; among such components, the one with the most columns in the block.
    """
    Z = data.Z.tocsr()
    comp_of_col = data.ident
    out = np.full(data.n_blocks, -1)
    if data.cov.has_vector:
        return out
    counts = np.zeros((Z.shape[0], data.k_vc), dtype=np.int64)
    rows = np.repeat(np.arange(Z.shape[0]), np.diff(Z.indptr))
    np.add.at(counts, (rows, comp_of_col[Z.indices]), 1)
    # the layout's blocks are contiguous runs of rows: one pass over the rows (was a scan of
    # every row per block)
    starts = np.asarray(data.obs_ptr[:-1])
    nonempty = np.diff(data.obs_ptr) > 0
    most = np.zeros((data.n_blocks, data.k_vc), dtype=np.int64)
    if nonempty.any():
        most[nonempty] = np.maximum.reduceat(counts, starts[nonempty], axis=0)
    ok = (most <= 1) & (data.qbt > 0)
    for b in np.flatnonzero(ok.any(axis=1)):
        best = np.flatnonzero(ok[b])
        out[b] = int(best[np.argmax(data.qbt[b, best])])
    return out


def rb_eligible(data, split=None):
    """Whether ``rao_blackwell="auto"`` integrates: some block of at least
    :data:`AUTO_MIN_Q` effects keeps at most :data:`AUTO_MAX_SHARE` of them sampled."""
    split = choose_split(data) if split is None else split
    qb = np.diff(data.col_ptr)
    for b in np.flatnonzero(split >= 0):
        sampled = qb[b] - data.qbt[b, split[b]]
        if qb[b] >= AUTO_MIN_Q and sampled <= AUTO_MAX_SHARE * qb[b]:
            return True
    return False


def quadrature_layout(data, names=None):
    """Whether :class:`QuadratureSampler` can integrate the layout, and why (not).

    It can when the random effects are scalar components and every block has at most one
    effect left once its component :func:`choose_split` picks is integrated: a single
    grouping factor (nothing left), two nested factors (the outer level's one effect), an
    observation-level effect within clusters.  Deeper nesting (pupils in classes in schools
    leaves a school and its classes) and crossed factors leave more: a nesting tree of
    depth 3 or more is then integrated by :mod:`glmm_sm.mcla.rb.deep`
    (:func:`~glmm_sm.mcla.rb.deep.deep_tree_layout`), anything else importance-sampled
    (:func:`~glmm_sm.mcla.rb.round.resolve_sampler` says which, and why).

    Parameters
    ----------
    data : LayoutData
    names : list of str, optional
        The components' names, for the reason.

    Returns
    -------
    ok : bool
    reason : str
        One sentence for the fit log.
    """
    if data.cov.has_vector:
        return False, ("correlated random-effect terms: the quadrature integrates scalar "
                       "components only")
    split = choose_split(data)
    qb = np.diff(data.col_ptr)
    left = qb - np.array([data.qbt[b, t] if t >= 0 else 0.0 for b, t in enumerate(split)])
    if left.size == 0 or left.max() <= 1:
        return True, ("every block has at most one effect left once a component is "
                      "integrated: nested adaptive Gauss-Hermite quadrature, no Monte Carlo "
                      "error")
    b = int(np.argmax(left))
    what = "no component" if split[b] < 0 else (
        f"{names[split[b]]!r}" if names is not None else f"component {split[b]}")
    return False, (f"block {b} keeps {int(left[b])} effects once {what} is integrated "
                   "(crossed factors, or a nesting tree of depth 3 or more, which the "
                   "nested rule of every level takes where its layout allows: "
                   "glmm_sm.mcla.rb.deep)")


class RBStructure:
    """Fixed bookkeeping of a Rao-Blackwellized layout.

    Attributes
    ----------
    split : ndarray (B,)
        Integrated component per block (-1: none).
    lev_col : ndarray (L,)
        Layout column of each integrated level, block by block.
    lev_bptr, lev_ptr : ndarray
        Levels of block ``b``: ``lev_bptr[b]:lev_bptr[b+1]``; observations (in ``ro``) of
        level ``a``: ``lev_ptr[a]:lev_ptr[a+1]``.
    ro, za : ndarray
        Layout row of each integrated observation and its coefficient on its level.
    free_bptr, free_obs : ndarray
        Observations loading on no integrated level, per block.
    is_a : ndarray of bool (q,)
        Integrated columns.
    """

    def __init__(self, data, split=None):
        self.data = data
        self.split = choose_split(data) if split is None else np.asarray(split)
        Z = sp.csc_matrix(data.Z)
        ident = data.ident
        self.is_a = np.zeros(data.q, dtype=np.bool_)
        for b in np.flatnonzero(self.split >= 0):
            c0, c1 = data.col_ptr[b], data.col_ptr[b + 1]
            cols = np.arange(c0, c1)
            self.is_a[cols[ident[cols] == self.split[b]]] = True
        lev_col, lev_bptr, lev_ptr, ro, za = [], [0], [0], [], []
        free_bptr, free_obs = [0], []
        covered = np.zeros(data.Z.shape[0], dtype=bool)
        for b in range(data.n_blocks):
            for j in np.flatnonzero(self.is_a[data.col_ptr[b]:data.col_ptr[b + 1]]):
                col = data.col_ptr[b] + j
                rows = Z.indices[Z.indptr[col]:Z.indptr[col + 1]]
                lev_col.append(col)
                ro.extend(rows.tolist())
                za.extend(Z.data[Z.indptr[col]:Z.indptr[col + 1]].tolist())
                covered[rows] = True
                lev_ptr.append(len(ro))
            lev_bptr.append(len(lev_col))
            obs = np.arange(data.obs_ptr[b], data.obs_ptr[b + 1])
            free_obs.extend(obs[~covered[obs]].tolist())
            free_bptr.append(len(free_obs))
        as_int = np.asarray
        self.lev_col = as_int(lev_col, dtype=np.int64)
        self.lev_bptr, self.lev_ptr = as_int(lev_bptr, np.int64), as_int(lev_ptr, np.int64)
        self.ro, self.za = as_int(ro, np.int64), as_int(za, np.float64)
        self.free_bptr, self.free_obs = as_int(free_bptr, np.int64), as_int(free_obs, np.int64)
        self.lev_comp = ident[self.lev_col] if self.lev_col.size else np.zeros(0, np.int64)
        self.qbt_sampled = data.qbt.copy()
        for b in np.flatnonzero(self.split >= 0):
            self.qbt_sampled[b, self.split[b]] = 0.0
        self.lev_block = np.repeat(np.arange(data.n_blocks), np.diff(self.lev_bptr))

    @property
    def n_levels(self) -> int:
        return len(self.lev_col)

    def h_layout(self, hc):
        """Per-observation sums ``hc`` (integrated in ``ro`` order, then free) in layout
        order."""
        h = np.zeros(self.data.Z.shape[0])
        n_int = len(self.ro)
        h[self.ro] = hc[:n_int]
        h[self.free_obs] = hc[n_int:]
        return h


def _inner_rule(n_nodes):
    """The integrated levels' Gauss-Hermite rule for a standard normal: nodes
    ``sqrt(2) x`` and log weights ``log w + x^2 + log(2) / 2`` (with the normal density's
    ``exp(-z^2 / 2) / sqrt(2 pi)`` written out by the kernel)."""
    x, w = np.polynomial.hermite.hermgauss(int(n_nodes))
    return np.sqrt(2.0) * x, np.log(w) + x * x + 0.5 * np.log(2.0)


class RBSampler:
    """Draws of the sampled effects, and the quadrature rule of the integrated ones.

    Parameters
    ----------
    system : BlockSystem
    params : ndarray
        ``(beta, nu)`` at the centre.
    mode : ModeResult
        Joint conditional modes and Laplace precisions at ``params``.
    structure : RBStructure
    t_weight, df : float
        Defensive t component, as :class:`~glmm_sm.mcla.sampler.LaplaceSampler`.
    n_nodes : int
        Gauss-Hermite nodes per level.
    shift : bool
        Draws and nodes move with the fixed effects.
    integrated : bool
        Centre and scale the sampled effects at the mode and curvature of their integrated
        density (default); ``False`` keeps the joint Laplace marginal (for comparisons).
    """

    name = "rao-blackwell"

    def __init__(self, system, params, mode, structure, t_weight=0.1, df=5.0,
                 n_nodes=N_NODES, shift=True, integrated=True):
        self.system, self.structure = system, structure
        self.params = np.asarray(params, dtype=float).copy()
        self.t_weight, self.df = float(t_weight), float(df)
        data = system.data
        self.u_hat = mode.u.copy()
        # Moving draws, as LaplaceSampler's: every effect (sampled draws and the integrated
        # levels' nodes) translates by du_hat/dbeta (beta - beta0).
        self.shift = bool(shift)
        p = data.k_fe
        self.beta0 = self.params[:p].copy()
        self.du_dbeta = mode_derivatives(system, self.beta0,
                                         self.params[p : p + data.k_vcp], mode,
                                         nu_derivs=False)[0]
        self.malpha = np.ascontiguousarray(self.du_dbeta[structure.lev_col]) if self.shift \
            else np.zeros((structure.n_levels, p))
        self.xs, self.logw = _inner_rule(n_nodes)
        self._per_block(system, mode, data)
        self.adapted = self._adapt(integrated_laplace(self, self.params) if integrated else {})

    @property
    def data(self):
        return self.system.data

    def _per_block(self, system, mode, data):
        st = self.structure
        L = st.n_levels
        self.m0, self.s = np.zeros(L), np.ones(L)
        crow, ccol, cval = [], [], []
        self.v_cols, self.v_root, self.v_half_logdet = [], [], []
        lev_of_col = np.full(data.q, -1)
        lev_of_col[st.lev_col] = np.arange(L)
        for (_, ids, cols), Lc in zip(system.groups, mode.chol, strict=True):
            P = Lc @ np.swapaxes(Lc, 1, 2)
            isa = st.is_a[cols]
            one = (~isa).sum(axis=1) <= 1
            if one.any():
                # every block of the group with one sampled effect or none (a nested
                # block) at once, the same numbers as the loop below
                self._blocks_one_sampled(P[one], cols[one], isa[one], ids[one], lev_of_col,
                                         (crow, ccol, cval))
            for g in np.flatnonzero(~one):
                b, cb = ids[g], cols[g]
                a_loc = np.flatnonzero(st.is_a[cb])
                v_loc = np.flatnonzero(~st.is_a[cb])
                Pb = P[g]
                for i in a_loc:
                    lv = lev_of_col[cb[i]]
                    paa = Pb[i, i]
                    c = -Pb[i, v_loc] / paa
                    self.s[lv] = 1.0 / np.sqrt(paa)
                    self.m0[lv] = self.u_hat[cb[i]] - c @ self.u_hat[cb[v_loc]]
                    nz = np.flatnonzero(c)
                    crow.extend([lv] * nz.size)
                    ccol.extend(cb[v_loc][nz].tolist())
                    cval.extend(c[nz].tolist())
                self._v_marginal(b, cb[v_loc], Pb, v_loc)
        for sb, fac in zip(system.schur, mode.schur, strict=True):
            self._schur_block(sb, fac, lev_of_col, (crow, ccol, cval))
        C = sp.csr_matrix((cval, (crow, ccol)), shape=(L, data.q))
        C.sort_indices()
        self.cptr, self.cidx = C.indptr.astype(np.int64), C.indices.astype(np.int64)
        self.cval = C.data.astype(np.float64)

    def _blocks_one_sampled(self, P, cols, isa, ids, lev_of_col, coo):
        """:meth:`_per_block` for the blocks ``ids`` of one size with at most one sampled
        effect each (``P`` their stacked precisions, ``cols`` their layout columns,
        ``isa`` which are integrated), all at once: the linear rule of every integrated
        level (``s_a = P_aa^{-1/2}``, ``c_a = -P_av / P_aa``, ``m0_a = u_a - c_a u_v``)
        and each block's marginal root of its sampled effect (``(P^{-1})_vv^{1/2}``), with
        the operations of the per-block formulas (the same numbers)."""
        crow, ccol, cval = coo
        n, qs = isa.shape
        has_v = ~isa.all(axis=1)
        vpos = np.argmax(~isa, axis=1)  # the sampled effect's place (where there is one)
        gi, li = np.nonzero(isa)  # block by block, each block's levels in order
        lv = lev_of_col[cols[gi, li]]
        paa = P[gi, li, li]
        self.s[lv] = 1.0 / np.sqrt(paa)
        hv = has_v[gi]
        vcol = cols[gi, vpos[gi]]
        c = np.where(hv, -P[gi, li, vpos[gi]] / paa, 0.0)
        self.m0[lv] = np.where(hv, self.u_hat[cols[gi, li]] - c * self.u_hat[vcol],
                               self.u_hat[cols[gi, li]] - 0.0)
        nz = hv & (c != 0)
        crow.extend(lv[nz].tolist())
        ccol.extend(vcol[nz].tolist())
        cval.extend(c[nz].tolist())
        if has_v.any():
            k = np.flatnonzero(has_v)
            cov = np.linalg.inv(P[k])[np.arange(k.size), vpos[k], vpos[k]][:, None, None]
            root = np.linalg.cholesky(0.5 * (cov + cov))
            for j, g in enumerate(k):
                self._set_v(int(ids[g]), [cols[g, vpos[g]]], root[j])
        for g in np.flatnonzero(~has_v):
            self._set_v(int(ids[g]), [], np.zeros((0, 0)))

    def _set_v(self, b, vcols, root):
        """Block ``b``'s sampled columns ``vcols`` and the root of their marginal
        covariance (the per-block lists grown to ``b``, the blocks between them empty)."""
        while len(self.v_cols) <= b:
            self.v_cols.append(np.zeros(0, np.int64))
            self.v_root.append(np.zeros((0, 0)))
            self.v_half_logdet.append(0.0)
        self.v_cols[b], self.v_root[b] = np.asarray(vcols, np.int64), root
        self.v_half_logdet[b] = -float(np.log(np.diag(root)).sum()) if root.size else 0.0

    def _v_marginal(self, b, vcols, Pb, v_loc):
        """The sampled effects' marginal covariance root (Laplace) in block ``b``."""
        cov = np.linalg.inv(Pb)[np.ix_(v_loc, v_loc)]
        root = np.linalg.cholesky(0.5 * (cov + cov.T)) if v_loc.size else np.zeros((0, 0))
        self._set_v(b, vcols, root)

    def _schur_block(self, sb, fac, lev_of_col, coo):
        """:meth:`_per_block` for a block factored through its Schur complement
        (:class:`~glmm_sm.laplace.step.SchurFactor`), whose diagonal part is the integrated
        component: level ``a``'s rule has ``s_a = d_a^{-1/2}`` and ``c_a = -B_a / d_a``, and
        the sampled effects' marginal covariance is ``S^{-1}``, all without the dense
        precision."""
        st = self.structure
        crow, ccol, cval = coo
        if not (np.all(st.is_a[sb.a_cols]) and not np.any(st.is_a[sb.v_cols])):
            # A split given explicitly that integrates another component: the dense rules
            # from the block's whole precision, as _per_block's (q_b^2 numbers).
            cb, Pb = sb.cols, fac.dense()
            v_loc = np.flatnonzero(~st.is_a[cb])
            for i in np.flatnonzero(st.is_a[cb]):
                lv, paa = lev_of_col[cb[i]], Pb[i, i]
                c = -Pb[i, v_loc] / paa
                self.s[lv] = 1.0 / np.sqrt(paa)
                self.m0[lv] = self.u_hat[cb[i]] - c @ self.u_hat[cb[v_loc]]
                nz = np.flatnonzero(c)
                crow.extend([lv] * nz.size)
                ccol.extend(cb[v_loc][nz].tolist())
                cval.extend(c[nz].tolist())
            self._v_marginal(sb.block, cb[v_loc], Pb, v_loc)
            return
        lv = lev_of_col[sb.a_cols]
        self.s[lv] = 1.0 / np.sqrt(fac.d)
        Bc = fac.B.tocoo()
        c = -Bc.data / fac.d[Bc.row]
        self.m0[lv] = self.u_hat[sb.a_cols] - np.bincount(
            Bc.row, weights=c * self.u_hat[sb.v_cols][Bc.col], minlength=sb.n_a)
        nz = c != 0
        crow.extend(lv[Bc.row[nz]].tolist())
        ccol.extend(sb.v_cols[Bc.col[nz]].tolist())
        cval.extend(c[nz].tolist())
        root = np.linalg.cholesky(fac.inv_vv()) if sb.v_cols.size else np.zeros((0, 0))
        self._set_v(sb.block, sb.v_cols, root)

    def _adapt(self, moments):
        """Centre and spread the sampled effects' proposal at the mode and curvature of
        their integrated density (:func:`~glmm_sm.mcla.rb.proposal.integrated_laplace`), block
        by block where given; the quadrature rule keeps the joint Laplace linearization.
        Returns the adapted blocks."""
        done = []
        for b, (mean, cov) in moments.items():
            cols = self.v_cols[b]
            root = np.linalg.cholesky(cov)
            self.u_hat[cols] = mean
            self.v_root[b] = root
            self.v_half_logdet[b] = -float(np.log(np.diag(root)).sum())
            done.append(int(b))
        return done

    def with_nodes(self, n_nodes):
        """This sampler with an ``n_nodes``-point Gauss-Hermite rule for the integrated
        levels in place of its own: the same proposal, centres and scales (a shallow copy;
        draws of either generate the same sampled effects).  The fitting driver evaluates
        a pilot round's draws with the full rule through it
        (:meth:`~glmm_sm.mcla.rb.engine.RBEngine.with_nodes`)."""
        twin = copy.copy(self)
        twin.xs, twin.logw = _inner_rule(n_nodes)
        return twin

    def rule(self):
        """The kernel's quadrature rule (:class:`~glmm_sm.mcla.kernels.records.RBRule`)."""
        st = self.structure
        return RBRule(st.lev_ptr, st.lev_comp.astype(np.int64), st.ro, st.za, self.m0, self.s,
                      self.cptr, self.cidx, self.cval, self.xs, self.logw, self.malpha)

    def moved_rule(self, beta):
        """The rule at ``beta`` with moving draws: each level's nodes translated by its row
        of ``du_hat/dbeta (beta - beta0)``, less what ``c_a' v`` already adds through the
        moved sampled effects."""
        du = self.du_dbeta @ (np.asarray(beta, dtype=float) - self.beta0)
        dv = np.where(self.structure.is_a, 0.0, du)
        C = sp.csr_matrix((self.cval, self.cidx, self.cptr),
                          shape=(self.structure.n_levels, len(du)))
        return self.rule()._replace(m0=self.m0 + du[self.structure.lev_col] - C @ dv), dv

    def generate(self, seed, size):
        """One chunk of ``size`` draws of the sampled effects (integrated rows are 0)."""
        from glmm_sm.core.random import generator

        data = self.data
        rng = generator(seed)
        U = np.zeros((data.q, size))
        logf = np.zeros((data.n_blocks, size))
        n_t = stratified_counts([1.0 - self.t_weight, self.t_weight], size)[1]
        for b, cols in enumerate(self.v_cols):
            qs = cols.size
            if not qs:
                continue
            z = rng.standard_normal((qs, size))
            if n_t:
                chi = rng.chisquare(self.df, n_t)
                z[:, size - n_t:] /= np.sqrt(chi / self.df)[None, :]
            d2 = np.einsum("jk,jk->k", z, z)
            U[cols] = self.u_hat[cols][:, None] + self.v_root[b] @ z
            logf[b] = self._log_density(b, qs, d2)
        return DrawChunk(U, logf, _square_sums(data, U, self.v_cols))

    def _log_density(self, b, qs, d2):
        """Block ``b``'s proposal log density at draws whose whitened squared distances
        from the mode are ``d2`` (``qs`` sampled effects): the normal, or its mixture with
        the multivariate t of weight ``t_weight``."""
        hl = self.v_half_logdet[b]
        log_n = -HALF_LOG2PI * qs + hl - 0.5 * d2
        if self.t_weight == 0.0:
            return log_n
        log_t = _log_t_norm(self.df, qs) + hl - 0.5 * (self.df + qs) * np.log1p(d2 / self.df)
        return np.logaddexp(np.log1p(-self.t_weight) + log_n, np.log(self.t_weight) + log_t)

    def centre_draw(self):
        """One draw at the proposal's centre: every sampled effect at its mode ``u_hat``
        (integrated rows 0), with the proposal's log density there, as a
        :class:`~glmm_sm.mcla.sampler.DrawChunk` of width 1 (no random numbers are used).
        A deterministic probe of the rule's error: the fitting driver's check of a
        pilot round's movement evaluates it under the pilot's rule and the rounds' (see
        :meth:`RBEngine.centre_probe <glmm_sm.mcla.rb.engine.RBEngine.centre_probe>`)."""
        data = self.data
        U = np.zeros((data.q, 1))
        logf = np.zeros((data.n_blocks, 1))
        for b, cols in enumerate(self.v_cols):
            qs = cols.size
            if not qs:
                continue
            U[cols, 0] = self.u_hat[cols]
            logf[b] = self._log_density(b, qs, np.zeros(1))
        return DrawChunk(U, logf, _square_sums(data, U, self.v_cols))


def _square_sums(data, U, v_cols):
    """Each block's sums of squared draws per component, ``(n_blocks, n_s, size)``, from
    the sampled rows of ``U`` only (the integrated rows are zeros: squaring all ``q`` rows
    took a ``q x size`` temporary, 320 MB at 10^6 rows).  The sampled columns are added in
    column order, as over all rows, so the sums have the same bits."""
    S = np.zeros((data.n_blocks, data.n_s, U.shape[1]))
    cols = [c for c in v_cols if c.size]
    if cols:
        c = np.sort(np.concatenate(cols))
        Uc = U[c]
        np.add.at(S, (data.block_of_col[c], data.ident[c]), Uc * Uc)
    return S


#: :meth:`QuadratureSampler._outer_mode` steps by the secant of a block's score where its
#: slope over the last step is off the rule's curvature by more than this fraction: 0, every
#: step after the first (Newton's steps with the rule's curvature converge only linearly, at
#: the rate of the mismatch: 0.25 left rules started near their modes 10-13 kernel calls
#: on guPrenat, against 6-10 for the secant's).
SECANT_SWITCH = 0.0


class QuadratureSampler(RBSampler):
    """Adaptive Gauss-Hermite nodes in place of random draws: a deterministic fit.

    For layouts in which every block has at most one effect left once a component is
    integrated (a single grouping factor; two nested factors, the outer one per block; an
    observation-level effect within clusters), that effect ``v`` is put at the ``K``
    Gauss-Hermite nodes ``v_k = v_hat + s z_k`` (``z_k = sqrt(2) x_k``; ``v_hat`` and ``s``
    the mode and curvature of its integrated density, as :class:`RBSampler` centres its
    draws) and given the log "density" ``logf_k = -log(K) - log(w_k) - x_k^2 - log(sqrt(2) s)``,
    so that the engine's importance-sampling mean ``(1/K) sum_k f(y, v_k) / exp(logf_k)`` is
    exactly the adaptive Gauss-Hermite sum ``sqrt(2) s sum_k w_k exp(x_k^2) f(y, v_k)``.
    Blocks with nothing left to sample need one "draw" (``logf = 0``).  The likelihood is
    then a nested quadrature with no Monte Carlo error; the engine reports MCSE 0.

    The outer rule (``recentre="outer"``, the default, or ``True``): ``v_hat`` and ``s`` are
    the mode and curvature of ``v``'s integrated density, each level integrated by a rule
    re-centred at its conditional mode given the trial ``v`` and scaled by its conditional
    curvature (:mod:`glmm_sm.mcla.kernels.rb_nested`; one-dimensional Newton steps on the
    score per block, ``_outer_mode``).  The inner rule: with ``recentre=True`` every
    integrated level's nodes are re-centred in the same way at each outer node
    (``rule().dmu``, ``rule().sk``); by default they sit at the joint Laplace linearization
    ``m0 + c' v`` of :class:`RBSampler`.  Either way the rule is fixed at the sampler's
    ``params``, so the value stays a smooth function of ``theta`` with exact derivatives.
    Re-centring the inner rules is not the default: where a level's integrand is far from
    normal (guPrenat's mothers: 1 to 4 concordant Bernoulli births, a variance near 45, half
    a normal cut by the logistic) the curvature at the conditional mode understates the
    spread and the linearized rule is the more accurate at the same nodes
    (``benchmarks/README.md``).  ``recentre=False`` places the outer rule as
    :class:`RBSampler` centres its draws
    (:func:`~glmm_sm.mcla.rb.proposal.integrated_laplace`, with the linearized inner rules).

    Parameters
    ----------
    system, params, mode, structure, shift, n_nodes
        As :class:`RBSampler` (``n_nodes``: the inner rule's nodes).
    outer_nodes : int
        ``K``; ``m`` must be ``K`` (or 1 when no block has an effect left).
    recentre : {"outer", True, False}
        Where the rules are re-centred (above).
    outer_start : ndarray or None
        ``(n_blocks,)``: where each block's outer mode's Newton iterations start (a
        deterministic fit passes its last rule's modes, ``outer_modes``, close to the
        next rule's); NaN, or None for all, starts at the joint conditional mode, as do the
        blocks whose start gives a non-finite value or a Hessian not negative.  The mode
        is the same to the iterations' tolerance (``1e-7`` of the block's SD) either way.

    Attributes
    ----------
    recentre_failures : int
        (Level, node) pairs and blocks whose Newton's method failed (a log integrand not
        concave there): they keep the linear rule, or the joint Laplace marginal for a
        block's outer rule.
    outer_evaluations, outer_level_integrations : int
        The outer modes' Newton iterations' kernel calls, and the levels they integrated
        (a call integrates only the blocks still moving).
    adapted : list of int
        The blocks whose outer rule sits at their integrated mode.
    outer_modes : ndarray
        ``(n_blocks,)``: the outer mode of each adapted block, NaN elsewhere (a next
        rule's ``outer_start``).
    """

    name = "quadrature"
    deterministic = True

    def __init__(self, system, params, mode, structure, n_nodes=N_NODES,
                 outer_nodes=OUTER_NODES, shift=True, recentre="outer", outer_start=None):
        self.recentre = recentre if recentre == "outer" else bool(recentre)
        self.outer_start = outer_start
        self.outer_modes = np.full(system.data.n_blocks, np.nan)
        super().__init__(system, params, mode, structure, t_weight=0.0, n_nodes=n_nodes,
                         shift=shift, integrated=not self.recentre)
        sizes = np.array([c.size for c in self.v_cols])
        if sizes.size and sizes.max() > 1:
            b = int(np.argmax(sizes))
            raise ValueError(f"sampler='quadrature' needs at most one effect left to sample "
                             f"per block once a component is integrated; block {b} has "
                             f"{sizes[b]} (a crossed design): use sampler='laplace'")
        self.outer = int(outer_nodes) if sizes.size and sizes.max() == 1 else 1
        x, w = np.polynomial.hermite.hermgauss(self.outer) if self.outer > 1 else \
            (np.zeros(1), np.full(1, np.sqrt(np.pi)))
        self.z = np.sqrt(2.0) * x
        self.log_node = np.log(w) + x * x + 0.5 * np.log(2.0)  # log of w_k e^{x_k^2} sqrt 2
        self.dmu, self.sk = np.zeros((0, 0)), np.zeros((0, 0))
        self.recentre_failures = 0
        if self.recentre:
            self._nested()

    def _levels(self):
        """``(RBLevels, zv)``: the integrated levels at the sampler's ``nu`` and every
        observation's coefficient on its block's sampled effect."""
        data, st = self.data, self.structure
        nu = self.params[data.k_fe:]
        zv = np.asarray(data.Z @ (~st.is_a).astype(np.float64)).ravel()
        ro = st.ro
        return RBLevels(st.lev_ptr, st.za, np.ascontiguousarray(zv[ro]),
                        np.ascontiguousarray(data.wy[ro], dtype=np.float64),
                        np.ascontiguousarray(data.wn[ro], dtype=np.float64),
                        np.ascontiguousarray(nu[st.lev_comp], dtype=np.float64)), zv

    def _nested(self):
        """The nested adaptive rule: the outer nodes at the mode and curvature of each
        block's integrated density (:meth:`_outer_mode`), then each level's centre and scale
        at every outer node (``dmu``, ``sk``)."""
        data, st = self.data, self.structure
        lv, zv = self._levels()
        xb = data.linear_fixed(self.params[:data.k_fe])
        self._outer_mode(lv, zv, xb)
        if self.recentre == "outer":
            return
        U = self.generate(None, self.outer).U
        C = sp.csr_matrix((self.cval, self.cidx, self.cptr), shape=(st.n_levels, data.q))
        lin = self.m0[:, None] + C @ U
        e0 = xb[st.ro][:, None] + (data.Z[st.ro] @ np.where(st.is_a[:, None], 0.0, U))
        centre = np.array(lin, dtype=np.float64, order="C")  # a copy: lin is kept
        scale = np.ascontiguousarray(np.repeat(self.s[:, None], self.outer, axis=1))
        out = np.empty((3,) + centre.shape)
        self.recentre_failures += int(recentre_levels(
            data.family.kernel, lv, np.ascontiguousarray(e0), self.xs, self.logw, centre, scale,
            out))
        self.dmu, self.sk = centre - lin, scale

    def _outer_mode(self, lv, zv, xb, tol=1e-7, maxiter=50):
        """Centre and scale each block's sampled effect at the mode and curvature of its
        integrated density, the levels integrated by the re-centred rule: Newton steps per
        block on its score (the secant's where the score's slope over the last step is
        off the rule's curvature, :data:`SECANT_SWITCH`), halved until the score shrinks.
        Blocks where it fails (a
        Hessian not negative) keep the joint Laplace marginal and count in
        ``recentre_failures``; ``outer_evaluations`` counts the kernel calls."""
        data, st = self.data, self.structure
        B = data.n_blocks
        vcol = np.array([c[0] if c.size else -1 for c in self.v_cols], dtype=np.int64)
        has = vcol >= 0
        if not has.any():
            return
        nu_v = np.ones(B)
        nu_v[has] = self.params[data.k_fe:][data.ident[vcol[has]]]
        bro = data.block_of_obs[st.ro]
        free = st.free_obs
        bfree = data.block_of_obs[free]
        fam = data.family
        centre = np.ascontiguousarray(self.m0[:, None] + np.zeros((1, 1)))
        scale = np.ascontiguousarray(self.s[:, None].copy())
        out = np.empty((3, st.n_levels, 1))
        # each level's coefficient on its block's one sampled effect: its linear rule's
        # centre is m0 + c v (Newton's start)
        lin_c = np.bincount(np.repeat(np.arange(st.n_levels), np.diff(self.cptr)), self.cval,
                            st.n_levels)

        lens = np.diff(st.lev_ptr)
        lev_obs = np.repeat(st.lev_block, lens)  # the block of each integrated observation

        def terms(v, which=None):
            """``(f, g, H, fail)`` per block at ``v``; with ``which`` (blocks) only those
            blocks' levels are integrated (a block's terms depend on its own ``v`` alone),
            the others' entries are 0."""
            centre[:, 0] = self.m0 + lin_c * v[st.lev_block]
            e0 = (xb[st.ro] + lv.zv * v[bro])[:, None]
            if which is None:
                sub, lsub, osub = lv, slice(None), slice(None)
            else:
                lsub, osub = which[st.lev_block], which[lev_obs]
                sub = lv._replace(lev_ptr=np.concatenate(([0], np.cumsum(lens[lsub]))),
                                  za=lv.za[osub], zv=lv.zv[osub], wy=lv.wy[osub],
                                  wn=lv.wn[osub], nu=lv.nu[lsub])
            c_, s_ = np.ascontiguousarray(centre[lsub]), np.ascontiguousarray(scale[lsub])
            o_ = np.empty((3, c_.shape[0], 1))
            fail = recentre_levels(fam.kernel, sub, np.ascontiguousarray(e0[osub]), self.xs,
                                   self.logw, c_, s_, o_)
            self.outer_level_integrations += c_.shape[0]
            scale[lsub] = s_
            out[:, lsub] = o_
            blk = st.lev_block[lsub]
            f = np.bincount(blk, o_[0, :, 0], B)
            g = np.bincount(blk, o_[1, :, 0], B)
            H = np.bincount(blk, o_[2, :, 0], B)
            if free.size:
                ll, r, h = fam.obs_terms(xb[free] + zv[free] * v[bfree], data.wy[free],
                                         data.wn[free])
                f += np.bincount(bfree, ll, B)
                g += np.bincount(bfree, zv[free] * r, B)
                H -= np.bincount(bfree, zv[free] ** 2 * h, B)
            return f - 0.5 * v * v / nu_v, g - v / nu_v, H - 1.0 / nu_v, fail

        v0 = np.where(has, self.u_hat[np.maximum(vcol, 0)], 0.0)
        start = self.outer_start
        warm = np.zeros(B, dtype=bool) if start is None else has & np.isfinite(start)
        v = v0 if start is None else np.where(warm, start, v0)
        self.outer_level_integrations = 0
        f, g, H, _ = terms(v)
        self.outer_evaluations = 1
        # a warm start where the rule's terms there are not usable: the joint mode's start
        cold = warm & ~(np.isfinite(f) & np.isfinite(g) & (H < 0))
        if cold.any():
            v = np.where(cold, v0, v)
            fc, gc, Hc, _ = terms(v, cold)
            f, g, H = np.where(cold, fc, f), np.where(cold, gc, g), np.where(cold, Hc, H)
            self.outer_evaluations += 1
        ok = has.copy()
        active = has.copy()
        # the last accepted step of each block and the change of its score along it (0:
        # none yet): the score's measured slope
        dv, dg = np.zeros(B), np.zeros(B)
        for _ in range(maxiter):
            ok &= np.isfinite(f) & np.isfinite(g) & (H < 0)
            active &= ok
            # the rule's curvature H is the score's slope only as far as the rule is exact:
            # where an inner rule is poor (few nodes, a large inner variance far from the
            # estimate) the two differ by half or more and Newton's steps shrink by a
            # constant factor (hundreds of kernel calls on guPrenat's first rules).  Where
            # the slope measured over the last step is off H by more than SECANT_SWITCH
            # (relative; by default any) the step is the secant's (the same root, found
            # superlinearly); elsewhere Newton's with H.
            with np.errstate(divide="ignore", invalid="ignore"):
                sec = np.where(dv != 0.0, dg / np.where(dv != 0.0, dv, 1.0), 0.0)
            use = (dv != 0.0) & (sec < 0.0) & (np.abs(sec - H) > SECANT_SWITCH * np.abs(H))
            slope = np.where(use, sec, H)
            step = np.where(active, -g / np.where(slope < 0, slope, -1.0), 0.0)
            # a block is done once its step is below tol of its SD
            active &= np.abs(step) > tol / np.sqrt(np.abs(H))
            if not active.any():
                break
            step[~active] = 0.0
            # Newton's method on the score, each step halved until the score shrinks: the
            # value (its inner nodes move with v) and the score (Louis' identity at fixed
            # nodes) differ by the rule's error, so the value cannot judge steps near the
            # mode; the score's root is the mode the rule's own derivatives give.  Only the
            # blocks still moving are integrated again (each block's terms are its own).
            t = np.ones(B)
            fn, gn, Hn = f.copy(), g.copy(), H.copy()
            trial = active.copy()
            for _ in range(20):
                ft, gt, Ht, _ = terms(v + t * step, trial)
                fn[trial], gn[trial], Hn[trial] = ft[trial], gt[trial], Ht[trial]
                self.outer_evaluations += 1
                worse = ~(np.abs(gn) < np.abs(g)) & trial
                if not worse.any():
                    break
                t[worse] *= 0.5
                trial = worse
            t[worse] = 0.0
            active &= ~worse
            dv, dg = t * step, np.where(worse, 0.0, gn - g)
            v, f, g, H = v + t * step, np.where(worse, f, fn), np.where(worse, g, gn), \
                np.where(worse, H, Hn)
        f, g, H, fail = terms(v)
        ok &= np.isfinite(f) & (H < 0)
        self.recentre_failures += int(fail) + int(np.sum(has & ~ok))
        for b in np.flatnonzero(ok):
            sd = 1.0 / np.sqrt(-H[b])
            self.u_hat[vcol[b]] = v[b]
            self.v_root[b] = np.array([[sd]])
            self.v_half_logdet[b] = -float(np.log(sd))
            self.outer_modes[b] = v[b]
        self.adapted = [int(b) for b in np.flatnonzero(ok)]

    def rule(self):
        """The kernel's rule, with the re-centred centres and scales per outer node."""
        return super().rule()._replace(dmu=self.dmu, sk=self.sk)

    def generate(self, seed, size):
        """The ``K`` nodes of every block's effect (``seed`` is not used)."""
        if size != self.outer:
            raise ValueError(f"a quadrature draw set has m = {self.outer} (its nodes); "
                             f"got {size}")
        data = self.data
        U = np.zeros((data.q, size))
        logf = np.zeros((data.n_blocks, size))
        for b, cols in enumerate(self.v_cols):
            if not cols.size:
                continue
            U[cols] = self.u_hat[cols][:, None] + self.v_root[b][0, 0] * self.z[None, :]
            logf[b] = -np.log(size) - self.log_node + self.v_half_logdet[b]
        return DrawChunk(U, logf, _square_sums(data, U, self.v_cols))

