"""The conditional covariance ``Var(u | y)`` of every random effect after a
Rao-Blackwellized fit (:mod:`glmm_sm.mcla.rb.split`).

The draws hold the sampled effects ``v`` only; each integrated level's effect ``a`` is summed
by quadrature given ``v``.  By the law of total covariance, with ``w_k`` the normalized
weights of the draws ``v_k`` and ``mu_a(v)``, ``s2_a(v)`` the node mean and variance of
``a`` given ``v`` (its nodes weighted by their posterior):

* ``Cov(v, v) = sum_k w_k v_k v_k' - v_bar v_bar'``;
* ``Cov(a, v) = sum_k w_k mu_a(v_k) v_k' - a_bar v_bar'``;
* ``Cov(a, b) = sum_k w_k mu_a(v_k) mu_b(v_k) - a_bar b_bar`` for two levels (independent
  given ``v``), plus ``sum_k w_k s2_a(v_k)`` on the diagonal.

The node means are recomputed here chunk by chunk (``n x nodes x draws`` numbers at a time,
bounded by ``max_elems``): this runs on request only, not during a fit.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from glmm_sm.mcla.rb.proposal import LevelQuadrature
from glmm_sm.spec.validation import nonnegative_up_to_rounding

__all__ = ["rb_effect_cov"]


def rb_effect_cov(engine, params, max_elems=4_000_000):
    """Per block ``b``, the conditional covariance of its effects (layout columns
    ``col_ptr[b]:col_ptr[b+1]``, in that order) at ``params``, from the
    :class:`~glmm_sm.mcla.rb.engine.RBEngine` ``engine``: ``{b: (qb, qb) array}``."""
    data, st = engine.data, engine.structure
    if getattr(st, "deep", False):  # a nesting tree of depth >= 3: its own node weights
        return engine.effect_cov(params)
    if getattr(st, "vector", False):
        raise NotImplementedError(
            "the conditional covariance of the random effects is not yet available after "
            "a Rao-Blackwellized fit with correlated terms (its integrated effects are "
            "vectors); random_effects() gives their conditional means and SDs, or refit "
            "with rao_blackwell=False")
    params = np.asarray(params, dtype=np.float64)
    _, rule, ev, dv = engine._inputs(params)
    lw = np.concatenate(list(engine.iter_log_weights(params)), axis=1)
    w = np.exp(lw - lw.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    nodes = _Nodes(data, st, rule, ev, params)
    q, B = data.q, data.n_blocks
    boc = data.block_of_col
    s1, d2 = np.zeros(q), np.zeros(q)
    s2 = [np.zeros((n, n)) for n in np.diff(data.col_ptr)]
    k_done = 0
    for k0, k1 in engine.ranges:
        U = engine._chunk(ev, dv, k0, k1)[0].U
        step = max(1, max_elems // max(1, nodes.size))
        for a0 in range(0, U.shape[1], step):
            Uc = U[:, a0:a0 + step]
            wc = w[:, k_done + a0:k_done + a0 + Uc.shape[1]]
            mu, var = nodes.moments(Uc)
            Xc = Uc.copy()
            Xc[st.lev_col] = mu
            wcol = wc[boc]
            s1 += np.einsum("jk,jk->j", wcol, Xc)
            d2[st.lev_col] += np.einsum("ak,ak->a", wcol[st.lev_col], var)
            for b in range(B):
                c0, c1 = data.col_ptr[b], data.col_ptr[b + 1]
                Xb = Xc[c0:c1]
                s2[b] += (Xb * wc[b]) @ Xb.T
        k_done += U.shape[1]
    out = {}
    for b in range(B):
        c0, c1 = data.col_ptr[b], data.col_ptr[b + 1]
        cov = s2[b] - np.outer(s1[c0:c1], s1[c0:c1]) + np.diag(d2[c0:c1])
        out[b] = 0.5 * (cov + cov.T)
    return out


class _Nodes:
    """Each integrated level's node mean and variance given draws of the sampled effects
    (the quadrature of :class:`~glmm_sm.mcla.rb.proposal.LevelQuadrature`, at the moved rule)."""

    def __init__(self, data, st, rule, ev, params):
        self.v_idx = np.flatnonzero(~st.is_a)
        C = sp.csr_matrix((rule.cval, rule.cidx, rule.cptr), shape=(st.n_levels, data.q))
        # ev.xb is in the kernel's row order (RBEngine's ObsOrder); the quadrature reads
        # layout rows
        xb = data.linear_fixed(params[:data.k_fe])
        self.quad = LevelQuadrature(data, st, xb, rule.m0, rule.s,
                                    C[:, self.v_idx].tocsr(), rule.xs, rule.logw,
                                    params[data.k_fe:], np.arange(st.n_levels))
        self.Zv = data.Z.tocsc()[:, self.v_idx].tocsr()[self.quad.rows]
        self.size = self.quad.size

    def moments(self, U):
        """``(mu, s2)`` (levels x draws): node mean and variance of each level's effect
        given each draw of ``U`` (the sampled effects, moved)."""
        u = U[self.v_idx]
        A, _, _, pi = self.quad.posterior(u, self.Zv @ u)
        mu = np.einsum("ljk,ljk->lk", pi, A)
        m2 = np.einsum("ljk,ljk->lk", pi, A * A)
        # A node variance E[a^2] - E[a]^2 >= 0: below 0 only by rounding.
        return mu, nonnegative_up_to_rounding(m2 - mu * mu, m2,
                                              "node variances of the integrated effects")
