"""The Rao-Blackwellized kernel for integrated *vector* levels (correlated terms).

The layout of :mod:`glmm_sm.mcla.kernels.rb`, for blocks whose integrated component is a
correlated term ``(1 + x | g)`` (or a scalar component in a model with correlated terms):
each level ``a`` of the integrated unit has ``r`` effects ``alpha_a ~ N(0, Sigma)`` and
every observation loads on at most one level.  Given the sampled effects ``v``,

    I_a(v) = int N(alpha; 0, Sigma) prod_{i in a} f(y_i | eta_i) d alpha,
    eta_i = (X beta + offset)_i + (Z_B v)_i + z_ia' alpha,

is computed by a tensor-product adaptive Gauss-Hermite rule in ``r`` dimensions: the nodes
``alpha_aj = mu_a(v) + R_a z_j`` with ``mu_a(v) = m0_a + C_a v`` and ``R_a R_a'`` the
Laplace conditional mean and covariance of ``alpha_a`` given ``v`` at the round's centre,
fixed given the draw (so the value is a smooth function of ``theta`` with exact derivatives).

Scores are in the *kernel coordinates* of :meth:`~glmm_sm.spec.covstruct.CovStructure.score_map`:
``beta``, per sub-component ``g_a = (s_aa / nud_a - L_a) / (2 nud_a)``, per cross entry
``s_ab``; all are linear in the sums of squares and cross sums ``S``, so a draw's node-mean
score is the score at ``S_eff`` (the sampled effects' ``S`` plus the node means of
``alpha alpha'``), and the node covariance of the scores (Louis' identity within a draw)
is returned as ``sC`` in the same coordinates.  This is a straightforward per-draw loop
(not tiled as the scalar kernel is).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from glmm_sm.mcla.kernels.fastmath import fexp, flog1p_unit, frecip_unit
from glmm_sm.mcla.kernels.rb import _FLAGS, _obs_terms
from glmm_sm.mcla.kernels.records import RBVWork

__all__ = ["make_work", "rbv_chunk_sums"]

_INLINE = dict(_FLAGS, inline="always")
#: The most unit-weight logit observations whose node factors ``1 / (1 + exp(-|eta|))``
#: (each in [1/2, 1]) are multiplied before the product's log is taken: 2**-512 is far
#: from underflow.
PROD_RUN = 512


def make_work(p, n_s, r, K, n_h, n_lev, max_lev, derivs=True):
    """Work arrays of :func:`rbv_chunk_sums` (:class:`~glmm_sm.mcla.kernels.records.RBVWork`);
    ``derivs=False``: the log weights and ``a``, ``s0``, ``s0sq`` only (a value-only pass,
    bit for bit the full pass's log weights)."""
    sh = work_shapes(p, n_s, r, K, n_h, n_lev, max_lev)
    arrays = [np.empty(shape, np.int64 if i == 9 else np.float64) for i, shape in enumerate(sh)]
    return RBVWork(*arrays[:13], bool(derivs), arrays[13])


def work_shapes(p, n_s, r, K, n_h, n_lev, max_lev):
    """The shapes of :func:`make_work`'s arrays (8 bytes a number; the tenth int64, the
    others float64), in :class:`~glmm_sm.mcla.kernels.records.RBVWork`'s order without its
    flag: one thread's working set, countable before it is allocated."""
    d = p + n_s
    nc = p + r * (r + 1) // 2
    return [(d,), (n_s,), (d, d), (n_h,), (n_lev, r + r * r), (r,), (r, K), (K,), (nc, K),
            (nc,), (max(max_lev, 1), K), (K,), (K,), (K,)]


def work_bytes(p, n_s, r, K, n_h, n_lev, max_lev):
    """Bytes of one :func:`make_work`, without allocating it."""
    return 8 * sum(math.prod(shape) for shape in work_shapes(p, n_s, r, K, n_h, n_lev, max_lev))


@numba.njit(**_INLINE)
def _wsum(w, x):
    """``sum_j w_j x_j`` in four interleaved partial sums (independent chains of adds that
    pipeline and vectorise, where one running sum waits on each add in turn), added as
    ``(s0 + s1) + (s2 + s3)``."""
    K = w.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    j = 0
    while j + 4 <= K:
        s0 += w[j] * x[j]
        s1 += w[j + 1] * x[j + 1]
        s2 += w[j + 2] * x[j + 2]
        s3 += w[j + 3] * x[j + 3]
        j += 4
    while j < K:
        s0 += w[j] * x[j]
        j += 1
    return (s0 + s1) + (s2 + s3)


@numba.njit(**_INLINE)
def _wsum3(w, x, y):
    """``sum_j w_j x_j y_j`` as :func:`_wsum` sums."""
    K = w.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    j = 0
    while j + 4 <= K:
        s0 += w[j] * x[j] * y[j]
        s1 += w[j + 1] * x[j + 1] * y[j + 1]
        s2 += w[j + 2] * x[j + 2] * y[j + 2]
        s3 += w[j + 3] * x[j + 3] * y[j + 3]
        j += 4
    while j < K:
        s0 += w[j] * x[j] * y[j]
        j += 1
    return (s0 + s1) + (s2 + s3)


@numba.njit(**_INLINE)
def _eta_v(i, k, ev, U):
    """``(X beta + offset)_i + (Z_B v_k)_i``: without the integrated effects."""
    e = ev.xb[i]
    for nz in range(ev.zptr[i], ev.zptr[i + 1]):
        j = ev.zidx[nz]
        if not ev.is_a[j]:
            e += ev.zval[nz] * U[j, k]
    return e


@numba.njit(**_INLINE)
def _level(fam, a, k, rule, ev, prior, U, work):
    """Level ``a`` of draw ``k``: returns ``log I_a``; adds the node means of the beta
    scores to ``work.G``, of ``alpha alpha'`` to ``work.Seff``, the node covariance of the
    scores to ``work.Cw``, the node means of ``w c''`` to ``work.hloc`` and the level's
    moments to ``work.mAk``."""
    zs, logw = rule.zs, rule.logw
    K, r = zs.shape
    p = ev.X.shape[1]
    mu, alpha, lq, hd, slot, cij = work.mu, work.alpha, work.lq, work.hd, work.slot, work.cij
    ze, rrv = work.ze, work.rr
    G, Seff, Cw, hloc, mAk = work.G, work.Seff, work.Cw, work.hloc, work.mAk
    nud = ev.nu
    derivs = work.derivs
    moving = ev.gp.shape[2] > 0 and derivs
    P = prior.P[a]
    # node centre and nodes
    for i in range(r):
        row = a * r + i
        m = rule.m0[a, i]
        for nz in range(rule.cptr[row], rule.cptr[row + 1]):
            m += rule.cval[nz] * U[rule.cidx[nz], k]
        mu[i] = m
    base = rule.logdet[a] + prior.lnorm[a]
    for j in range(K):
        for i in range(r):
            s = mu[i]
            for l in range(i + 1):
                s += rule.R[a, i, l] * zs[j, l]
            alpha[i, j] = s
        q = 0.0
        for i in range(r):
            for l in range(r):
                q += alpha[i, j] * P[i, l] * alpha[l, j]
        lq[j] = logw[j] + base - 0.5 * q
        if derivs:
            for c in range(p):
                hd[c, j] = 0.0
        if moving:  # the prior's beta score of the moving node: -M_a' P alpha
            for c in range(p):
                s = 0.0
                for i in range(r):
                    for l in range(r):
                        s += rule.malpha[a, i, c] * P[i, l] * alpha[l, j]
                hd[c, j] = -s
    o0, o1 = rule.lev_ptr[a], rule.lev_ptr[a + 1]
    X, wy, wn = ev.X, ev.wy, ev.wn
    # the logit families' unit-weight observations: sum_i log1p(exp(-|eta_ij|)) at node j is
    # -log prod_i 1 / (1 + exp(-|eta_ij|)), a product of factors in [1/2, 1] taken in runs
    # of at most PROD_RUN observations (no underflow) and its log once per run and node
    pr = work.pr
    n_pr = 0
    for j in range(K):
        pr[j] = 1.0
    for ro_i in range(o0, o1):
        i = rule.ro[ro_i]
        e0 = _eta_v(i, k, ev, U)
        rl = ro_i - o0
        wyi, wni = wy[i], wn[i]
        # per observation, each short node loop costs its set-up: 2-vectors (the maximal
        # model's) in one loop, and below, with two fixed effects, the residuals' beta
        # scores in the loop that forms them (the same numbers either way)
        if r == 2:
            z0, z1 = rule.za[ro_i, 0], rule.za[ro_i, 1]
            for j in range(K):
                ze[j] = (e0 + z0 * alpha[0, j]) + z1 * alpha[1, j]
        else:
            for j in range(K):
                ze[j] = e0
            for l in range(r):
                z = rule.za[ro_i, l]
                for j in range(K):
                    ze[j] += z * alpha[l, j]
        if fam == 0 and wni == 1.0:
            if n_pr == PROD_RUN:
                for j in range(K):
                    lq[j] += math.log(pr[j])
                    pr[j] = 1.0
                n_pr = 0
            n_pr += 1
            if not derivs:
                for j in range(K):
                    e = ze[j]
                    lq[j] += wyi * e - max(e, 0.0)
                    pr[j] *= frecip_unit(1.0 + fexp(-abs(e)))
                continue
            # two node loops (exp first, through rrv): one loop with every array in it
            # vectorised worse (the same numbers either way)
            for j in range(K):
                e = ze[j]
                lq[j] += wyi * e - max(e, 0.0)
                rrv[j] = fexp(-abs(e))
            if p == 2:
                x0, x1 = X[i, 0], X[i, 1]
                for j in range(K):
                    tt = rrv[j]
                    inv = frecip_unit(1.0 + tt)
                    pr[j] *= inv
                    res = wyi - (inv if ze[j] >= 0.0 else tt * inv)
                    cij[rl, j] = tt * inv * inv
                    hd[0, j] += res * x0
                    hd[1, j] += res * x1
                continue
            for j in range(K):
                tt = rrv[j]
                inv = frecip_unit(1.0 + tt)
                pr[j] *= inv
                rrv[j] = wyi - (inv if ze[j] >= 0.0 else tt * inv)
                cij[rl, j] = tt * inv * inv
        elif not derivs:  # the value alone: the node log weights
            if fam == 0:
                for j in range(K):
                    e = ze[j]
                    lq[j] += wyi * e - wni * (max(e, 0.0) + flog1p_unit(fexp(-abs(e))))
            else:
                for j in range(K):
                    lq[j] += _obs_terms(fam, ze[j], wyi, wni)[0]
            continue
        elif fam == 0:  # the logit families, written out so that the node loop vectorises
            for j in range(K):
                e = ze[j]
                tt = fexp(-abs(e))
                inv = frecip_unit(1.0 + tt)
                lq[j] += wyi * e - wni * (max(e, 0.0) + flog1p_unit(tt))
                rrv[j] = wyi - wni * (inv if e >= 0.0 else tt * inv)
                cij[rl, j] = wni * tt * inv * inv
        else:
            for j in range(K):
                ll, rr, cc = _obs_terms(fam, ze[j], wyi, wni)
                lq[j] += ll
                rrv[j] = rr
                cij[rl, j] = cc
        for c in range(p):
            xic = X[i, c]
            for j in range(K):
                hd[c, j] += rrv[j] * xic
    if n_pr > 0:
        for j in range(K):
            lq[j] += math.log(pr[j])
    # node weights
    mx = -np.inf
    for j in range(K):
        mx = max(mx, lq[j])
    for j in range(K):  # apart from the sum below, so that the exponentials vectorise
        lq[j] = fexp(lq[j] - mx)
    tot = 0.0
    for j in range(K):
        tot += lq[j]
    if not derivs:
        return mx + math.log(tot)
    for j in range(K):
        lq[j] /= tot
    # covariance slots of the nodes' scores: sub-components alpha_i^2 / (2 nud^2), cross
    # entries alpha_i alpha_l (their constant parts cancel in the centred covariance)
    for c in range(p):
        slot[c] = c
    n = p
    for i in range(r):
        for l in range(i + 1):
            srow = rule.lev_srow[a, i, l]
            slot[n] = p + srow
            for j in range(K):
                if i == l:
                    hd[n, j] = alpha[i, j] * alpha[i, j] / (2.0 * nud[srow] * nud[srow])
                else:
                    hd[n, j] = alpha[i, j] * alpha[l, j]
            n += 1
    nc = n
    # node means: E alpha, E alpha alpha' (to Seff and the moments), beta scores to G
    for i in range(r):
        mAk[a, i] = _wsum(lq, alpha[i])
        for l in range(r):
            mAk[a, r + i * r + l] = _wsum3(lq, alpha[i], alpha[l])
    for i in range(r):
        for l in range(i + 1):
            Seff[rule.lev_srow[a, i, l]] += mAk[a, r + i * r + l]
    for c in range(nc):
        s = _wsum(lq, hd[c])
        if c < p:
            G[c] += s
        for j in range(K):
            hd[c, j] -= s
    for c in range(nc):
        for c2 in range(c + 1):
            s = _wsum3(lq, hd[c], hd[c2])
            Cw[slot[c], slot[c2]] += s
            if c2 != c:
                Cw[slot[c2], slot[c]] += s
    for ro_i in range(o0, o1):
        hloc[ro_i] = _wsum(lq, cij[ro_i - o0])
    return mx + math.log(tot)


@numba.njit(**_INLINE)
def _draw(fam, b, k, blocks, rule, ev, prior, draws, work):
    """Log weight of draw ``k`` in block ``b``; its score in ``work.G`` (kernel
    coordinates), node covariance in ``work.Cw``, ``S_eff`` in ``work.Seff``."""
    U, logf, S = draws.U, draws.logf, draws.S
    G, Seff, Cw, hloc = work.G, work.Seff, work.Cw, work.hloc
    nud, pc = ev.nu, prior.pc
    T = nud.shape[0]
    n_s = S.shape[1]
    p = ev.X.shape[1]
    d = p + n_s
    derivs = work.derivs
    lw = blocks.const_b[b] - logf[b, k]
    if derivs:
        for j in range(d):
            G[j] = 0.0
            for l in range(d):
                Cw[j, l] = 0.0
    for c in range(n_s):
        Seff[c] = S[b, c, k]
        if c < T:
            lw -= 0.5 * S[b, c, k] / nud[c]
        else:
            lw -= pc[c - T] * S[b, c, k]
    if ev.gp.shape[2] and derivs:
        for c in range(p):
            G[c] += ev.gp[b, c, k]
    n_int = rule.ro.shape[0]
    fb = blocks.free_bptr
    for rf in range(fb[b], fb[b + 1]):
        i = blocks.free_obs[rf]
        e = _eta_v(i, k, ev, U)
        ll, rr, cc = _obs_terms(fam, e, ev.wy[i], ev.wn[i])
        lw += ll
        if not derivs:
            continue
        hloc[n_int + rf] = cc
        for c in range(p):
            G[c] += rr * ev.X[i, c]
    for a in range(blocks.lev_bptr[b], blocks.lev_bptr[b + 1]):
        lw += _level(fam, a, k, rule, ev, prior, U, work)
    if not derivs:
        return lw
    qbt = blocks.qbt
    for c in range(n_s):
        if c < T:
            G[p + c] = (Seff[c] / nud[c] - qbt[b, c]) / (2.0 * nud[c])
        else:
            G[p + c] = Seff[c]
    return lw


@numba.njit(**_INLINE)
def _scale_block(sc, b, blocks, rule, out):
    """Multiply block ``b``'s running sums by ``sc`` (``sc**2`` for the squared ones)."""
    sc2 = sc * sc
    d = out.s1.shape[1]
    for j in range(d):
        out.s1[b, j] *= sc
        out.s1sq[b, j] *= sc2
        for l in range(d):
            out.s2[b, j, l] *= sc
            out.s2sq[b, j, l] *= sc2
            out.sC[b, j, l] *= sc
    for c in range(out.sS.shape[1]):
        out.sS[b, c] *= sc
    lev0, lev1 = blocks.lev_bptr[b], blocks.lev_bptr[b + 1]
    for r in range(rule.lev_ptr[lev0], rule.lev_ptr[lev1]):
        out.hc[r] *= sc
    n_int = rule.ro.shape[0]
    for r in range(blocks.free_bptr[b], blocks.free_bptr[b + 1]):
        out.hc[n_int + r] *= sc
    for lv in range(lev0, lev1):
        for c in range(out.mA.shape[1]):
            out.mA[lv, c] *= sc
    for j in range(blocks.col_ptr[b], blocks.col_ptr[b + 1]):
        out.sU[j] *= sc
        out.sUU[j] *= sc


@numba.njit(**_INLINE)
def _add(k, w, b, blocks, rule, U, out, work):
    """Add draw ``k`` of block ``b`` with weight ``w`` to the sums."""
    G, Cw, Seff, hloc, mAk = work.G, work.Cw, work.Seff, work.hloc, work.mAk
    d = G.shape[0]
    for j in range(d):
        out.s1[b, j] += w * G[j]
        out.s1sq[b, j] += w * w * G[j]
        for l in range(d):
            out.s2[b, j, l] += w * G[j] * G[l]
            out.s2sq[b, j, l] += w * w * G[j] * G[l]
            out.sC[b, j, l] += w * Cw[j, l]
    for c in range(Seff.shape[0]):
        out.sS[b, c] += w * Seff[c]
    lev0, lev1 = blocks.lev_bptr[b], blocks.lev_bptr[b + 1]
    for r in range(rule.lev_ptr[lev0], rule.lev_ptr[lev1]):
        out.hc[r] += w * hloc[r]
    n_int = rule.ro.shape[0]
    for r in range(blocks.free_bptr[b], blocks.free_bptr[b + 1]):
        out.hc[n_int + r] += w * hloc[n_int + r]
    for lv in range(lev0, lev1):
        for c in range(mAk.shape[1]):
            out.mA[lv, c] += w * mAk[lv, c]
    for j in range(blocks.col_ptr[b], blocks.col_ptr[b + 1]):
        u = U[j, k]
        out.sU[j] += w * u
        out.sUU[j] += w * u * u


@numba.njit(**_FLAGS)
def rbv_chunk_sums(fam, blocks, rule, ev, prior, draws, krange, out, work, out_lw):
    """Partial sums of every block over draws ``krange = (k0, k1)``.

    Parameters
    ----------
    fam : int
        Family code (as :func:`glmm_sm.mcla.kernels.rb.rb_chunk_sums`).
    blocks : RBBlocks
    rule : RBVRule
    ev : RBInputs
        ``nu``/``lognu`` are the kernel's per sub-component "variances"
        (:meth:`~glmm_sm.spec.covstruct.CovStructure.kernel_inputs`).
    prior : RBVPrior
    draws : Draws
    out : RBSums
        Zero-initialised; ``mA`` is (L, r + r r): node means of ``alpha`` and of
        ``alpha alpha'`` (row major), weighted over the draws.
    work : RBVWork
        From :func:`make_work`; with ``work.derivs`` False only the log weights and
        ``out.a``, ``out.s0``, ``out.s0sq`` are formed (the rest of ``out`` stays 0).
    out_lw : ndarray
        ``(n_blocks, k1 - k0)`` log weights (a 0-column array stores nothing).
    """
    k0, k1 = krange
    keep = out_lw.shape[1] > 0
    U = draws.U
    for b in range(blocks.lev_bptr.shape[0] - 1):
        amax = -np.inf
        acc0 = 0.0
        acc0sq = 0.0
        for k in range(k0, k1):
            lw = _draw(fam, b, k, blocks, rule, ev, prior, draws, work)
            if keep:
                out_lw[b, k - k0] = lw
            if not lw > -np.inf:
                continue
            if lw > amax:
                if amax > -np.inf:
                    sc = math.exp(amax - lw)
                    acc0 *= sc
                    acc0sq *= sc * sc
                    if work.derivs:
                        _scale_block(sc, b, blocks, rule, out)
                amax = lw
            w = math.exp(lw - amax)
            acc0 += w
            acc0sq += w * w
            if work.derivs:
                _add(k, w, b, blocks, rule, U, out, work)
        out.a[b] = amax
        out.s0[b] = acc0
        out.s0sq[b] = acc0sq
