"""numpy reference implementation of :func:`glmm_sm.mcla.kernels.plain.chunk_sums`.

Same records in and out (:mod:`glmm_sm.mcla.kernels.records`); written for clarity,
vectorised over (observation, draw) per block.  Used to check the numba kernel and as a
fallback.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from threadpoolctl import threadpool_limits

from glmm_sm.core.constants import HALF_LOG2PI, POISSON_ETA_MAX
from glmm_sm.spec.families import link_terms, nb_draw_terms


def chunk_sums(fam, derivs, design, draws, k0, k1, prior, shifted, Gp, out):
    """Partial sums of every block over draws ``k0:k1`` (see the numba kernel)."""
    with threadpool_limits(1):
        _chunk_sums(fam, derivs, design, draws, k0, k1, prior, shifted, Gp, out)


def _extras(b, c0, c1, bk, a, Uc, out):
    """The optional outputs: the draws' log weights (``-inf`` beyond the block's own
    draws), and the weighted sums of the block's effects and their squares (conditional
    moments)."""
    out_sU, out_sUU, out_lw = out.sU, out.sUU, out.lw
    if out_lw.shape[1]:
        out_lw[b, : bk.size] = bk
        out_lw[b, bk.size :] = -np.inf
    if out_sUU.shape[0]:
        e = np.exp(bk - a) if a > -np.inf else np.zeros_like(bk)
        out_sU[c0:c1] = Uc[c0:c1] @ e
        out_sUU[c0:c1] = (Uc[c0:c1] ** 2) @ e


def _nb_sums(b, o0, o1, nbt, live, e, Gk, out):
    """Negative binomial: the alpha score (last column of ``Gk``) and the weighted sums of
    ``d2 log f / d eta d alpha`` per observation and ``d2 log f / d alpha2`` per block."""
    Gk[:, -1] = nbt.la[:, live].sum(axis=0)
    out.hca[o0:o1] = nbt.lea[:, live] @ e
    out.saa[b] = nbt.laa[:, live].sum(axis=0) @ e


def _gather_eta(o0, o1, design, Uc):
    """``eta`` (n_b, m_c) of observations ``o0:o1``: ``xb`` plus, by gather over each row's
    non-zeros, ``sum z * U[col]``."""
    xb, zptr, zidx, zval = design.xb, design.zptr, design.zidx, design.zval
    nnz = zptr[o0 + 1 : o1 + 1] - zptr[o0:o1]
    eta = np.repeat(xb[o0:o1, None], Uc.shape[1], axis=1)
    pos = zptr[o0:o1]
    for r in range(int(nnz.max(initial=0))):
        has = nnz > r
        idx = pos[has] + r
        eta[has] += zval[idx, None] * Uc[zidx[idx]]
    return eta


def _chunk_sums(fam, derivs, design, draws, k0, k1, prior, shifted, Gp, out):
    obs_ptr, col_ptr, wy, wn, X = design.obs_ptr, design.col_ptr, design.wy, design.wn, design.X
    U, logf, S = draws.U, draws.logf, draws.S
    lognu, nu, pc, qbt = prior.lognu, prior.nu, prior.pc, prior.qbt
    out_a, out_s0, out_s0sq, out_s1, out_s1sq = out.a, out.s0, out.s0sq, out.s1, out.s1sq
    out_s2, out_s2sq, out_sS, out_hc, out_sU = out.s2, out.s2sq, out.sS, out.hc, out.sU
    n_blocks = len(obs_ptr) - 1
    p = X.shape[1]
    kend = getattr(draws, "kend", np.zeros(0, dtype=np.int64))
    for b in range(n_blocks):
        # per-block draw counts: block b uses draws k0:kb only (draws.kend)
        kb = k1 if not len(kend) else min(k1, max(k0, int(kend[b])))
        Uc = U[:, k0:kb]
        o0, o1 = obs_ptr[b], obs_ptr[b + 1]
        c0, c1 = col_ptr[b], col_ptr[b + 1]
        qb = col_ptr[b + 1] - col_ptr[b]
        rows = np.arange(o0, o1)
        eta = _gather_eta(o0, o1, design, Uc)
        wyb, wnb = wy[rows, None], wn[rows, None]
        nbt = None
        if fam >= 10:
            # A non-canonical link: its log-density, derivative and information
            # (:func:`glmm_sm.spec.families.link_terms`).
            ll_b, r_b, h_b = link_terms(fam, eta, wyb, wnb)
        elif fam == 0:
            cum = np.logaddexp(0.0, eta)
            mu = expit(eta)
            t = np.exp(-np.abs(eta))
            var = t / (1.0 + t) ** 2
            ll_b, r_b, h_b = wyb * eta - wnb * cum, wyb - wnb * mu, wnb * var
        elif fam == 2:
            nbt = nb_draw_terms(wyb, wnb, eta, design.fpar[0])
            ll_b, r_b, h_b = nbt.ll, nbt.r, nbt.h
        else:
            mu = np.exp(np.minimum(eta, POISSON_ETA_MAX))
            ll_b, r_b, h_b = wyb * eta - wnb * mu, wyb - wnb * mu, wnb * mu
        T = len(nu)
        Sb = S[b, :, k0:kb]
        lfu = (-HALF_LOG2PI * qb - 0.5 * qbt[b] @ lognu) - 0.5 * (Sb[:T] / nu[:, None]).sum(axis=0)
        if len(pc):
            lfu = lfu - pc @ Sb[T:]
        bk = ll_b.sum(axis=0) + lfu - logf[b, k0:kb]
        a = bk.max() if bk.size else -np.inf
        _extras(b, c0, c1, bk, a, Uc, out)
        if not a > -np.inf:
            out_a[b], out_s0[b], out_s0sq[b] = -np.inf, 0.0, 0.0
            out_s1[b] = out_s1sq[b] = out_sS[b] = 0.0
            out_s2[b] = out_s2sq[b] = 0.0
            out_hc[o0:o1] = 0.0
            out_sU[c0:c1] = 0.0
            if out.saa.shape[0]:
                out.saa[b], out.hca[o0:o1] = 0.0, 0.0
            continue
        e = np.exp(bk - a)
        out_a[b], out_s0[b], out_s0sq[b] = a, e.sum(), (e * e).sum()
        if not derivs:
            continue
        live = e > 0
        e, e2 = e[live], e[live] ** 2
        R = r_b[:, live]
        Gk = np.empty((live.sum(), out_s1.shape[1]))
        Gk[:, :p] = R.T @ X[o0:o1]
        if shifted:
            Gk[:, :p] += Gp[b][:, : kb - k0][:, live].T
        Gk[:, p : p + T] = ((Sb[:T, live] / nu[:, None] - qbt[b][:, None])
                            / (2.0 * nu[:, None])).T
        Gk[:, p + T : p + T + len(pc)] = Sb[T:, live].T
        if nbt is not None:
            _nb_sums(b, o0, o1, nbt, live, e, Gk, out)
        out_s1[b] = e @ Gk
        out_s1sq[b] = e2 @ Gk
        out_s2[b] = (Gk * e[:, None]).T @ Gk
        out_s2sq[b] = (Gk * e2[:, None]).T @ Gk
        out_sS[b] = Sb[:, live] @ e
        out_hc[o0:o1] = h_b[:, live] @ e
        if shifted:
            out_sU[c0:c1] = Uc[c0:c1][:, live] @ e
