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
is returned as ``sC`` in the same coordinates.

The draws are taken in tiles of :data:`TILE` (fewer where the observations and levels are
many, :func:`tile_size`): each level's nodes of the tile's draws form one array
(draw-major), so that an observation's set-up (its indices, response, covariates and each
node loop's start) is paid once per tile, not once per draw.  Every (draw, node)
entry sees the same arithmetic in the same order as a draw at a time, and every sum over a
draw's nodes or over the draws is taken in the same order, so the tile does not change the
numbers.
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
#: Draws per tile (the last tile of a chunk may be shorter; fewer where the observations
#: are many, :func:`tile_size`).
TILE = 16
#: The most per-draw numbers over the observations and levels (``hloc``, ``mAk``) that one
#: thread's tile keeps: 8 MB.
TILE_CAP = 2**20


def tile_size(n_per_draw):
    """Draws per tile where one draw keeps ``n_per_draw`` numbers over the observations and
    levels: :data:`TILE`, or fewer (at least 1) so that the tile keeps at most
    :data:`TILE_CAP` of them (a large design's working set stays about that of one
    draw)."""
    return int(max(1, min(TILE, TILE_CAP // max(int(n_per_draw), 1))))


def make_work(p, n_s, r, K, n_h, n_lev, max_lev, derivs=True):
    """Work arrays of :func:`rbv_chunk_sums` (:class:`~glmm_sm.mcla.kernels.records.RBVWork`);
    ``derivs=False``: the log weights and ``a``, ``s0``, ``s0sq`` only (a value-only pass,
    bit for bit the full pass's log weights)."""
    sh = work_shapes(p, n_s, r, K, n_h, n_lev, max_lev)
    arrays = [np.empty(shape, np.int64 if i == 9 else np.float64) for i, shape in enumerate(sh)]
    return RBVWork(*arrays[:13], bool(derivs), *arrays[13:])


def work_shapes(p, n_s, r, K, n_h, n_lev, max_lev):
    """The shapes of :func:`make_work`'s arrays (8 bytes a number; the tenth int64, the
    others float64), in :class:`~glmm_sm.mcla.kernels.records.RBVWork`'s order without its
    flag: one thread's working set, countable before it is allocated."""
    d = p + n_s
    nc = p + r * (r + 1) // 2
    T = tile_size(n_h + n_lev * (r + r * r))
    TK = T * K
    return [(T, d), (T, n_s), (T, d, d), (T, n_h), (T, n_lev, r + r * r), (T, r), (r, TK),
            (TK,), (nc, TK), (nc,), (max(max_lev, 1), TK), (TK,), (TK,), (TK,), (T,), (T,)]


def work_bytes(p, n_s, r, K, n_h, n_lev, max_lev):
    """Bytes of one :func:`make_work`, without allocating it."""
    return 8 * sum(math.prod(shape) for shape in work_shapes(p, n_s, r, K, n_h, n_lev, max_lev))


@numba.njit(**_INLINE)
def _ix(j):
    """``j`` (``>= 0``) as an unsigned index: numba then leaves out the negative-index
    wrap-around that an offset index (``o + j``) otherwise costs in every node loop."""
    return np.uint64(j)


@numba.njit(**_INLINE)
def _wsum(w, x, o, K):
    """``sum_j w_j x_j`` over ``j = o, ..., o + K - 1`` (one draw's nodes) in four
    interleaved partial sums (independent chains of adds that pipeline and vectorise, where
    one running sum waits on each add in turn), added as ``(s0 + s1) + (s2 + s3)``."""
    s0 = s1 = s2 = s3 = 0.0
    j = 0
    while j + 4 <= K:
        u0, u1, u2, u3 = _ix(o + j), _ix(o + j + 1), _ix(o + j + 2), _ix(o + j + 3)
        s0 += w[u0] * x[u0]
        s1 += w[u1] * x[u1]
        s2 += w[u2] * x[u2]
        s3 += w[u3] * x[u3]
        j += 4
    while j < K:
        u0 = _ix(o + j)
        s0 += w[u0] * x[u0]
        j += 1
    return (s0 + s1) + (s2 + s3)


@numba.njit(**_INLINE)
def _wsum3(w, x, y, o, K):
    """``sum_j w_j x_j y_j`` over ``j = o, ..., o + K - 1`` as :func:`_wsum` sums."""
    s0 = s1 = s2 = s3 = 0.0
    j = 0
    while j + 4 <= K:
        u0, u1, u2, u3 = _ix(o + j), _ix(o + j + 1), _ix(o + j + 2), _ix(o + j + 3)
        s0 += w[u0] * x[u0] * y[u0]
        s1 += w[u1] * x[u1] * y[u1]
        s2 += w[u2] * x[u2] * y[u2]
        s3 += w[u3] * x[u3] * y[u3]
        j += 4
    while j < K:
        u0 = _ix(o + j)
        s0 += w[u0] * x[u0] * y[u0]
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
def _level(fam, a, k0, nt, rule, ev, prior, U, work):
    """Level ``a`` of draws ``k0, ..., k0 + nt - 1`` (the tile's draw ``t`` is ``k0 + t``):
    adds ``log I_a`` to ``work.lw[t]``, the node means of the beta scores to ``work.G[t]``,
    of ``alpha alpha'`` to ``work.Seff[t]``, the node covariance of the scores to
    ``work.Cw[t]``; stores the node means of ``w c''`` in ``work.hloc[t]`` and the level's
    moments in ``work.mAk[t]``.  Draw ``t``'s nodes are the entries ``t K, ..., t K + K - 1``
    of the per-node arrays."""
    zs, logw = rule.zs, rule.logw
    K, r = zs.shape
    nk = nt * K
    p = ev.X.shape[1]
    mu, alpha, lq, hd, slot, cij = work.mu, work.alpha, work.lq, work.hd, work.slot, work.cij
    ze, rrv, e0, lwt = work.ze, work.rr, work.e0, work.lw
    G, Seff, Cw, hloc, mAk = work.G, work.Seff, work.Cw, work.hloc, work.mAk
    nud = ev.nu
    derivs = work.derivs
    moving = ev.gp.shape[2] > 0 and derivs
    P = prior.P[a]
    # node centres (per draw: the same sum in the same order as one draw at a time)
    for i in range(r):
        row = a * r + i
        for t in range(nt):
            mu[t, i] = rule.m0[a, i]
        for nz in range(rule.cptr[row], rule.cptr[row + 1]):
            cv, col = rule.cval[nz], rule.cidx[nz]
            for t in range(nt):
                mu[t, i] += cv * U[col, k0 + t]
    base = rule.logdet[a] + prior.lnorm[a]
    for t in range(nt):
        for j in range(K):
            n = t * K + j
            for i in range(r):
                s = mu[t, i]
                for l in range(i + 1):
                    s += rule.R[a, i, l] * zs[j, l]
                alpha[i, n] = s
            q = 0.0
            for i in range(r):
                for l in range(r):
                    q += alpha[i, n] * P[i, l] * alpha[l, n]
            lq[n] = logw[j] + base - 0.5 * q
            if derivs:
                for c in range(p):
                    hd[c, n] = 0.0
            if moving:  # the prior's beta score of the moving node: -M_a' P alpha
                for c in range(p):
                    s = 0.0
                    for i in range(r):
                        for l in range(r):
                            s += rule.malpha[a, i, c] * P[i, l] * alpha[l, n]
                    hd[c, n] = -s
    o0, o1 = rule.lev_ptr[a], rule.lev_ptr[a + 1]
    X, wy, wn = ev.X, ev.wy, ev.wn
    # the logit families' unit-weight observations: sum_i log1p(exp(-|eta_ij|)) at node j is
    # -log prod_i 1 / (1 + exp(-|eta_ij|)), a product of factors in [1/2, 1] taken in runs
    # of at most PROD_RUN observations (no underflow) and its log once per run and node
    pr = work.pr
    n_pr = 0
    for j in range(nk):
        pr[j] = 1.0
    for ro_i in range(o0, o1):
        i = rule.ro[ro_i]
        # the observation's linear predictor without the level's effects, per draw
        # (:func:`_eta_v`'s sum, with the design row read once for the tile)
        for t in range(nt):
            e0[t] = ev.xb[i]
        for nz in range(ev.zptr[i], ev.zptr[i + 1]):
            jc = ev.zidx[nz]
            if not ev.is_a[jc]:
                zv = ev.zval[nz]
                for t in range(nt):
                    e0[t] += zv * U[jc, k0 + t]
        rl = ro_i - o0
        wyi, wni = wy[i], wn[i]
        # per observation, each short node loop costs its set-up: 2-vectors (the maximal
        # model's) in one loop, and below, with two fixed effects, the residuals' beta
        # scores in the loop that forms them (the same numbers either way)
        if r == 2:
            z0, z1 = rule.za[ro_i, 0], rule.za[ro_i, 1]
            for t in range(nt):
                et = e0[t]
                for j in range(t * K, t * K + K):
                    u = _ix(j)
                    ze[u] = (et + z0 * alpha[0, u]) + z1 * alpha[1, u]
        else:
            for t in range(nt):
                et = e0[t]
                for j in range(t * K, t * K + K):
                    ze[_ix(j)] = et
            for l in range(r):
                z = rule.za[ro_i, l]
                for j in range(nk):
                    ze[j] += z * alpha[l, j]
        if fam == 0 and wni == 1.0:
            if n_pr == PROD_RUN:
                for j in range(nk):
                    lq[j] += math.log(pr[j])
                    pr[j] = 1.0
                n_pr = 0
            n_pr += 1
            if not derivs:
                for j in range(nk):
                    e = ze[j]
                    lq[j] += wyi * e - max(e, 0.0)
                    pr[j] *= frecip_unit(1.0 + fexp(-abs(e)))
                continue
            # two node loops (exp first, through rrv): one loop with every array in it
            # vectorised worse (the same numbers either way)
            for j in range(nk):
                e = ze[j]
                lq[j] += wyi * e - max(e, 0.0)
                rrv[j] = fexp(-abs(e))
            if p == 2:
                x0, x1 = X[i, 0], X[i, 1]
                for j in range(nk):
                    tt = rrv[j]
                    inv = frecip_unit(1.0 + tt)
                    pr[j] *= inv
                    res = wyi - (inv if ze[j] >= 0.0 else tt * inv)
                    cij[rl, j] = tt * inv * inv
                    hd[0, j] += res * x0
                    hd[1, j] += res * x1
                continue
            for j in range(nk):
                tt = rrv[j]
                inv = frecip_unit(1.0 + tt)
                pr[j] *= inv
                rrv[j] = wyi - (inv if ze[j] >= 0.0 else tt * inv)
                cij[rl, j] = tt * inv * inv
        elif not derivs:  # the value alone: the node log weights
            if fam == 0:
                for j in range(nk):
                    e = ze[j]
                    lq[j] += wyi * e - wni * (max(e, 0.0) + flog1p_unit(fexp(-abs(e))))
            else:
                for j in range(nk):
                    lq[j] += _obs_terms(fam, ze[j], wyi, wni)[0]
            continue
        elif fam == 0:  # the logit families, written out so that the node loop vectorises
            for j in range(nk):
                e = ze[j]
                tt = fexp(-abs(e))
                inv = frecip_unit(1.0 + tt)
                lq[j] += wyi * e - wni * (max(e, 0.0) + flog1p_unit(tt))
                rrv[j] = wyi - wni * (inv if e >= 0.0 else tt * inv)
                cij[rl, j] = wni * tt * inv * inv
        else:
            for j in range(nk):
                ll, rr, cc = _obs_terms(fam, ze[j], wyi, wni)
                lq[j] += ll
                rrv[j] = rr
                cij[rl, j] = cc
        for c in range(p):
            xic = X[i, c]
            for j in range(nk):
                hd[c, j] += rrv[j] * xic
    if n_pr > 0:
        for j in range(nk):
            lq[j] += math.log(pr[j])
    # node weights, per draw
    for t in range(nt):
        o = t * K
        mx = -np.inf
        for j in range(o, o + K):
            mx = max(mx, lq[_ix(j)])
        for j in range(o, o + K):  # apart from the sum below, so that the exponentials vectorise
            u = _ix(j)
            lq[u] = fexp(lq[u] - mx)
        tot = 0.0
        for j in range(o, o + K):
            tot += lq[_ix(j)]
        lwt[t] += mx + math.log(tot)
        if derivs:
            for j in range(o, o + K):
                lq[_ix(j)] /= tot
    if not derivs:
        return
    # covariance slots of the nodes' scores: sub-components alpha_i^2 / (2 nud^2), cross
    # entries alpha_i alpha_l (their constant parts cancel in the centred covariance)
    for c in range(p):
        slot[c] = c
    n = p
    for i in range(r):
        for l in range(i + 1):
            srow = rule.lev_srow[a, i, l]
            slot[n] = p + srow
            for j in range(nk):
                if i == l:
                    hd[n, j] = alpha[i, j] * alpha[i, j] / (2.0 * nud[srow] * nud[srow])
                else:
                    hd[n, j] = alpha[i, j] * alpha[l, j]
            n += 1
    nc = n
    for t in range(nt):
        o = t * K
        # node means: E alpha, E alpha alpha' (to Seff and the moments), beta scores to G
        for i in range(r):
            mAk[t, a, i] = _wsum(lq, alpha[i], o, K)
            for l in range(r):
                mAk[t, a, r + i * r + l] = _wsum3(lq, alpha[i], alpha[l], o, K)
        for i in range(r):
            for l in range(i + 1):
                Seff[t, rule.lev_srow[a, i, l]] += mAk[t, a, r + i * r + l]
        for c in range(nc):
            s = _wsum(lq, hd[c], o, K)
            if c < p:
                G[t, c] += s
            for j in range(o, o + K):
                hd[c, _ix(j)] -= s
        for c in range(nc):
            for c2 in range(c + 1):
                s = _wsum3(lq, hd[c], hd[c2], o, K)
                Cw[t, slot[c], slot[c2]] += s
                if c2 != c:
                    Cw[t, slot[c2], slot[c]] += s
        for ro_i in range(o0, o1):
            hloc[t, ro_i] = _wsum(lq, cij[ro_i - o0], o, K)


@numba.njit(**_INLINE)
def _draws(fam, b, k0, nt, blocks, rule, ev, prior, draws, work):
    """Draws ``k0, ..., k0 + nt - 1`` of block ``b``: draw ``k0 + t``'s log weight in
    ``work.lw[t]``, its score in ``work.G[t]`` (kernel coordinates), node covariance in
    ``work.Cw[t]``, ``S_eff`` in ``work.Seff[t]``."""
    U, logf, S = draws.U, draws.logf, draws.S
    G, Seff, Cw, hloc, lwt = work.G, work.Seff, work.Cw, work.hloc, work.lw
    nud, pc = ev.nu, prior.pc
    T = nud.shape[0]
    n_s = S.shape[1]
    p = ev.X.shape[1]
    d = p + n_s
    derivs = work.derivs
    n_int = rule.ro.shape[0]
    fb = blocks.free_bptr
    for t in range(nt):
        k = k0 + t
        lw = blocks.const_b[b] - logf[b, k]
        if derivs:
            for j in range(d):
                G[t, j] = 0.0
                for l in range(d):
                    Cw[t, j, l] = 0.0
        for c in range(n_s):
            Seff[t, c] = S[b, c, k]
            if c < T:
                lw -= 0.5 * S[b, c, k] / nud[c]
            else:
                lw -= pc[c - T] * S[b, c, k]
        if ev.gp.shape[2] and derivs:
            for c in range(p):
                G[t, c] += ev.gp[b, c, k]
        for rf in range(fb[b], fb[b + 1]):
            i = blocks.free_obs[rf]
            e = _eta_v(i, k, ev, U)
            ll, rr, cc = _obs_terms(fam, e, ev.wy[i], ev.wn[i])
            lw += ll
            if not derivs:
                continue
            hloc[t, n_int + rf] = cc
            for c in range(p):
                G[t, c] += rr * ev.X[i, c]
        lwt[t] = lw
    for a in range(blocks.lev_bptr[b], blocks.lev_bptr[b + 1]):
        _level(fam, a, k0, nt, rule, ev, prior, U, work)
    if not derivs:
        return
    qbt = blocks.qbt
    for t in range(nt):
        for c in range(n_s):
            if c < T:
                G[t, p + c] = (Seff[t, c] / nud[c] - qbt[b, c]) / (2.0 * nud[c])
            else:
                G[t, p + c] = Seff[t, c]


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
def _add(k, t, w, b, blocks, rule, U, out, work):
    """Add draw ``k`` of block ``b`` (the tile's draw ``t``) with weight ``w`` to the
    sums."""
    G, Cw, Seff, hloc, mAk = work.G[t], work.Cw[t], work.Seff[t], work.hloc[t], work.mAk[t]
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
        From :func:`make_work` (its tile: ``work.lw.shape[0]`` draws); with
        ``work.derivs`` False only the log weights and ``out.a``, ``out.s0``, ``out.s0sq``
        are formed (the rest of ``out`` stays 0).
    out_lw : ndarray
        ``(n_blocks, k1 - k0)`` log weights (a 0-column array stores nothing).
    """
    k0, k1 = krange
    keep = out_lw.shape[1] > 0
    tile = work.lw.shape[0]
    U = draws.U
    for b in range(blocks.lev_bptr.shape[0] - 1):
        amax = -np.inf
        acc0 = 0.0
        acc0sq = 0.0
        kt = k0
        while kt < k1:
            nt = min(tile, k1 - kt)
            _draws(fam, b, kt, nt, blocks, rule, ev, prior, draws, work)
            for t in range(nt):
                k = kt + t
                lw = work.lw[t]
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
                    _add(k, t, w, b, blocks, rule, U, out, work)
            kt += nt
        out.a[b] = amax
        out.s0[b] = acc0
        out.s0sq[b] = acc0sq
