"""The Rao-Blackwellized hot loop: sampled effects ``v``, integrated effects ``alpha``.

In a block whose effects split into the *integrated* levels ``a`` of one scalar component A
(each observation loads on at most one of them) and the *sampled* effects ``v`` (everything
else), the likelihood given ``v`` factorizes over the levels of A (``docs/theory.rst``,
"Rao-Blackwellized blocks"):

    f(y | v) = prod_a I_a(v),   I_a(v) = int phi(alpha; nu_A) prod_{i in a} f(y_i | eta_i) dalpha,
    eta_i = (X beta + offset)_i + (Z_B v)_i + z_iA alpha.

Each ``I_a`` is computed by Gauss-Hermite quadrature with ``K`` nodes placed at
``mu_a(v) = m0_a + c_a' v`` with scale ``s_a`` (the Laplace conditional mode and SD of
``alpha_a`` given ``v`` at the round's centre), fixed given the draw: the value is a smooth
function of ``theta`` and its derivatives are exact.  With node weights ``omega_aj``
proportional to the integrand, the draw's complete-data score is the node mean of the
node scores and its Hessian adds the node covariance (Louis' identity).

Per block the kernel returns the importance-sampling sums of
:mod:`glmm_sm.mcla.kernels.plain` over the
draws of ``v`` (with ``S`` replaced by ``S_eff``: the sampled effects' sums of squares plus
the node means of ``alpha_a^2``), the node covariances ``sC`` and, for the conditional
moments, the weighted node means of ``alpha_a`` and ``alpha_a^2`` and the weighted sums of
the draws.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from glmm_sm.core.constants import HALF_LOG2PI, POISSON_ETA_MAX
from glmm_sm.mcla.kernels.fastmath import fexp, flog1p_unit, frecip_unit
from glmm_sm.mcla.kernels.plain import FOLD

_FLAGS = dict(cache=True, nogil=True, error_model="numpy",
              fastmath={"nsz", "arcp", "contract", "afn"})
# The per-level and per-draw steps are inlined into the loops that call them: a call per
# level and draw would pay for passing (and reference-counting) every array it reads.
_INLINE = dict(_FLAGS, inline="always")
#: Draws processed together: each observation's work is one loop over (draw, node) pairs of
#: the tile, long enough to vectorise.
TILE = 16


@numba.njit(**_INLINE)
def _obs_terms(fam, eta, wyi, wni):
    """``(w (y eta - c(eta)), w (y - c'(eta)), w c''(eta))`` of one observation."""
    if fam == 0:
        tt = fexp(-abs(eta))
        inv = frecip_unit(1.0 + tt)
        cum = max(eta, 0.0) + flog1p_unit(tt)
        mu = inv if eta >= 0.0 else tt * inv
        return wyi * eta - wni * cum, wyi - wni * mu, wni * tt * inv * inv
    mu = fexp(min(eta, POISSON_ETA_MAX))
    return wyi * eta - wni * mu, wyi - wni * mu, wni * mu


@numba.njit(**_INLINE)
def _eta_b(i, kt, nt, xb, zptr, zidx, zval, is_a, U, e0):
    """``e0[t] = (X beta + offset)_i + (Z_B v_{kt+t})_i``: without ``alpha``."""
    for t in range(nt):
        e0[t] = xb[i]
    for nz in range(zptr[i], zptr[i + 1]):
        j = zidx[nz]
        if not is_a[j]:
            zv = zval[nz]
            for t in range(nt):
                e0[t] += zv * U[j, kt + t]


def make_state(T_tile, K, p, T, n_h, n_lev, max_lev):
    """Work arrays of :func:`_tile` (see there)."""
    d = p + T
    F = T_tile * K
    return (np.empty(T_tile), np.empty((T_tile, d)), np.empty((T_tile, d, d)),
            np.empty((T_tile, T)), np.empty((T_tile, n_h)), np.empty((T_tile, n_lev, 2)),
            np.empty(T_tile), np.empty(T_tile), np.empty(F), np.empty(F), np.empty(F),
            np.empty((p, F)), np.empty((max_lev, F)), np.empty(F), np.empty(F),
            np.empty((2, T_tile)), np.empty((2, K)), np.empty((6, T_tile)))


@numba.njit(**_INLINE)
def _start(b, kt, nt, ev, blocks, logf, S, state):
    """Each draw's prior part of the log weight and of the scores (moving draws: ``gp``)."""
    lw, G, Cw, SA = state[0], state[1], state[2], state[3]
    const_b = blocks[4]
    nu, gp = ev[8], ev[10]
    T = nu.shape[0]
    d = G.shape[1]
    p = d - T
    for t in range(nt):
        k = kt + t
        lw[t] = const_b[b] - logf[b, k]
        for j in range(d):
            G[t, j] = 0.0
            for l in range(d):
                Cw[t, j, l] = 0.0
        for c in range(T):
            SA[t, c] = 0.0
            lw[t] -= 0.5 * S[b, c, k] / nu[c]
        if gp.shape[2]:
            for c in range(p):
                G[t, c] += gp[b, c, k]


@numba.njit(**_INLINE)
def _free(fam, b, kt, nt, ev, blocks, U, state, n_int):
    """Observations of block ``b`` on no integrated level."""
    free_bptr, free_obs = blocks[1], blocks[2]
    xb, wy, wn, X, zptr, zidx, zval, is_a = ev[0], ev[1], ev[2], ev[3], ev[4], ev[5], ev[6], ev[7]
    lw, G, hloc, e0 = state[0], state[1], state[4], state[6]
    p = X.shape[1]
    for r in range(free_bptr[b], free_bptr[b + 1]):
        i = free_obs[r]
        _eta_b(i, kt, nt, xb, zptr, zidx, zval, is_a, U, e0)
        for t in range(nt):
            ll, rr, cc = _obs_terms(fam, e0[t], wy[i], wn[i])
            lw[t] += ll
            hloc[t, n_int + r] = cc
            for c in range(p):
                G[t, c] += rr * X[i, c]


@numba.njit(**_INLINE)
def _nodes(a, kt, nt, rb, ev, U, state):
    """Level ``a``'s nodes for every draw of the tile, with their prior log weights (and,
    for moving draws, the prior's beta score of each node)."""
    m0, s, cptr, cidx, cval, xs, logw, malpha = (rb[4], rb[5], rb[6], rb[7], rb[8], rb[9],
                                                 rb[10], rb[11])
    nu, lognu, gp = ev[8], ev[9], ev[10]
    mu, alpha, lq, gb = state[7], state[8], state[9], state[11]
    K = xs.shape[0]
    p = gb.shape[0]
    tc = rb[1][a]
    for t in range(nt):
        mu[t] = m0[a]
    for nz in range(cptr[a], cptr[a + 1]):
        cv = cval[nz]
        row = cidx[nz]
        for t in range(nt):
            mu[t] += cv * U[row, kt + t]
    sa = s[a]
    base = math.log(sa) - HALF_LOG2PI - 0.5 * lognu[tc]
    inv_nu = 1.0 / nu[tc]
    for j in range(K):
        for t in range(nt):
            al = mu[t] + sa * xs[j]
            alpha[j * nt + t] = al
            lq[j * nt + t] = logw[j] + base - 0.5 * al * al * inv_nu
    F = nt * K
    for c in range(p):
        mac = malpha[a, c] * inv_nu if gp.shape[2] else 0.0
        for f in range(F):
            gb[c, f] = -mac * alpha[f]


@numba.njit(**_INLINE)
def _level_obs(fam, a, kt, nt, rb, ev, U, state):
    """Add the observations of level ``a`` to its nodes' log weights and beta scores."""
    lev_ptr, ro, za, xs = rb[0], rb[2], rb[3], rb[9]
    K = xs.shape[0]
    wn = ev[2]
    F = nt * K
    o0, o1 = lev_ptr[a], lev_ptr[a + 1]
    unit = fam == 0
    for r in range(o0, o1):
        unit = unit and wn[ro[r]] == 1.0
    if unit:
        _level_obs_bernoulli(a, kt, nt, rb, ev, U, state)
        return
    xb, wy, X, zptr, zidx, zval, is_a = ev[0], ev[1], ev[3], ev[4], ev[5], ev[6], ev[7]
    e0, alpha, lq, rr, gb, cij, ze = state[6], state[8], state[9], state[10], state[11], \
        state[12], state[13]
    for r in range(o0, o1):
        i = ro[r]
        _eta_b(i, kt, nt, xb, zptr, zidx, zval, is_a, U, e0)
        z = za[r]
        wyi = wy[i]
        wni = wn[i]
        rl = r - o0
        for j in range(K):
            for t in range(nt):
                ze[j * nt + t] = e0[t]
        if fam == 0:
            for f in range(F):
                e = ze[f] + z * alpha[f]
                tt = fexp(-abs(e))
                inv = frecip_unit(1.0 + tt)
                lq[f] += wyi * e - wni * (max(e, 0.0) + flog1p_unit(tt))
                rr[f] = wyi - wni * (inv if e >= 0.0 else tt * inv)
                cij[rl, f] = wni * tt * inv * inv
        else:
            for f in range(F):
                e = ze[f] + z * alpha[f]
                mu_f = fexp(min(e, POISSON_ETA_MAX))
                lq[f] += wyi * e - wni * mu_f
                rr[f] = wyi - wni * mu_f
                cij[rl, f] = wni * mu_f
        _add_gb(i, F, X, rr, gb)


@numba.njit(**_INLINE)
def _add_gb(i, F, X, rr, gb):
    """``gb[:, f] += rr[f] X[i]``: the nodes' beta scores."""
    for c in range(X.shape[1]):
        xic = X[i, c]
        for f in range(F):
            gb[c, f] += rr[f] * xic


#: Beyond this ``|eta|`` the factorized ``exp`` is clamped (``exp(-|eta|)`` is then below
#: 1e-280 and adds nothing); node offsets larger than ``MAX_OFFSET`` use one ``exp`` per
#: node instead.
ETA_CLAMP, MAX_OFFSET = 650.0, 30.0


@numba.njit(**_INLINE)
def _node_offsets(zs, xs, ec):
    """``ec[0, j] = exp(c_j)``, ``ec[1, j] = exp(-c_j)`` for ``c_j = zs x_j``; returns
    ``max |c_j|``."""
    cmax = 0.0
    for j in range(xs.shape[0]):
        c = zs * xs[j]
        cmax = max(cmax, abs(c))
        ec[0, j] = fexp(c)
        ec[1, j] = fexp(-c)
    return cmax


@numba.njit(**_INLINE)
def _level_obs_bernoulli(a, kt, nt, rb, ev, U, state):
    """:func:`_level_obs` for a Bernoulli level with unit weights, with two savings that
    change no formula: ``sum_i log(1 + t_i)`` is the log of a product (one ``log`` per node
    and ``FOLD`` observations, not one per observation), and ``t = exp(-|eta|)`` at node
    ``j`` is ``exp(+-b) exp(+-c_j)`` with ``b = eta_0 + z mu_a(v)`` per draw and
    ``c_j = z s_a x_j`` per node (two ``exp`` per observation and draw, not one per node).
    """
    lev_ptr, ro, za, s, xs = rb[0], rb[2], rb[3], rb[5], rb[9]
    K = xs.shape[0]
    xb, wy, X, zptr, zidx, zval, is_a = ev[0], ev[1], ev[3], ev[4], ev[5], ev[6], ev[7]
    e0, mu, alpha, lq, rr, gb, cij = state[6], state[7], state[8], state[9], state[10], \
        state[11], state[12]
    pr, eb, ec = state[14], state[15], state[16]
    F = nt * K
    sa = s[a]
    o0, o1 = lev_ptr[a], lev_ptr[a + 1]
    for f in range(F):
        pr[f] = 1.0
    z_prev = math.nan
    for r in range(o0, o1):
        i = ro[r]
        _eta_b(i, kt, nt, xb, zptr, zidx, zval, is_a, U, e0)
        z = za[r]
        wyi = wy[i]
        rl = r - o0
        if z != z_prev:
            z_prev = z
            cmax = _node_offsets(z * sa, xs, ec)
        if cmax <= MAX_OFFSET:
            for t in range(nt):
                bt = min(max(e0[t] + z * mu[t], -ETA_CLAMP), ETA_CLAMP)
                eb[0, t] = fexp(bt)
                eb[1, t] = fexp(-bt)
            for j in range(K):
                cp, cm = ec[0, j], ec[1, j]
                for t in range(nt):
                    f = j * nt + t
                    e = e0[t] + z * alpha[f]
                    tt = eb[0, t] * cp if e < 0.0 else eb[1, t] * cm
                    opt = 1.0 + tt
                    inv = frecip_unit(opt)
                    pr[f] *= opt
                    lq[f] += wyi * e - max(e, 0.0)
                    rr[f] = wyi - (inv if e >= 0.0 else tt * inv)
                    cij[rl, f] = tt * inv * inv
        else:
            # The same body with one exp per node.  Written out: moving the shared body
            # into an inlined helper halved the kernel's speed (it stopped vectorising).
            for j in range(K):
                for t in range(nt):
                    f = j * nt + t
                    e = e0[t] + z * alpha[f]
                    tt = fexp(-abs(e))
                    opt = 1.0 + tt
                    inv = frecip_unit(opt)
                    pr[f] *= opt
                    lq[f] += wyi * e - max(e, 0.0)
                    rr[f] = wyi - (inv if e >= 0.0 else tt * inv)
                    cij[rl, f] = tt * inv * inv
        _add_gb(i, F, X, rr, gb)
        if (rl + 1) % FOLD == 0 or r == o1 - 1:
            for f in range(F):
                lq[f] -= math.log(pr[f])
                pr[f] = 1.0


@numba.njit(**_INLINE)
def _level_close(a, nt, rb, ev, state):
    """Level ``a`` for every draw of the tile: ``log I_a``, the node weights, and the node
    means and covariance of the scores, added to each draw's pieces (node-major layout
    ``f = j nt + t``: the inner loops run over the tile's draws)."""
    lev_ptr, K = rb[0], rb[9].shape[0]
    nu = ev[8]
    lw, G, Cw, SA, hloc, mAk = state[0], state[1], state[2], state[3], state[4], state[5]
    alpha, om, gb, cij, acc = state[8], state[9], state[11], state[12], state[17]
    p = gb.shape[0]
    tc = rb[1][a]
    inu = 1.0 / nu[tc]
    mx, tot, ea, ea2, gnb, sv = acc[0], acc[1], acc[2], acc[3], acc[4], acc[5]
    for t in range(nt):
        mx[t] = -np.inf
        tot[t] = 0.0
        ea[t] = 0.0
        ea2[t] = 0.0
    for j in range(K):
        for t in range(nt):
            mx[t] = max(mx[t], om[j * nt + t])
    for j in range(K):
        for t in range(nt):
            f = j * nt + t
            w = fexp(om[f] - mx[t])
            om[f] = w
            tot[t] += w
    for t in range(nt):
        lw[t] += mx[t] + math.log(tot[t])
        tot[t] = 1.0 / tot[t]
    for j in range(K):
        for t in range(nt):
            f = j * nt + t
            w = om[f] * tot[t]
            om[f] = w
            al = alpha[f]
            ea[t] += w * al
            ea2[t] += w * al * al
    for t in range(nt):
        gnb[t] = (ea2[t] * inu - 1.0) * 0.5 * inu  # node mean of the nu_tc score
        SA[t, tc] += ea2[t]
        mAk[t, a, 0] = ea[t]
        mAk[t, a, 1] = ea2[t]
    _score_means(nt, K, om, gb, G, sv)
    _node_cov(nt, K, p, tc, inu, alpha, om, gb, Cw, state[10], gnb, sv)
    o0 = lev_ptr[a]
    for r in range(o0, lev_ptr[a + 1]):
        rl = r - o0
        for t in range(nt):
            sv[t] = 0.0
        for j in range(K):
            for t in range(nt):
                sv[t] += om[j * nt + t] * cij[rl, j * nt + t]
        for t in range(nt):
            hloc[t, r] = sv[t]


@numba.njit(**_INLINE)
def _score_means(nt, K, om, gb, G, sv):
    """Add the node means of the beta scores to each draw's ``G`` and centre ``gb``."""
    for c in range(gb.shape[0]):
        for t in range(nt):
            sv[t] = 0.0
        for j in range(K):
            for t in range(nt):
                f = j * nt + t
                sv[t] += om[f] * gb[c, f]
        for t in range(nt):
            G[t, c] += sv[t]
        for j in range(K):
            for t in range(nt):
                gb[c, j * nt + t] -= sv[t]


@numba.njit(**_INLINE)
def _node_cov(nt, K, p, tc, inu, alpha, om, gb, Cw, gn, gnb, sv):
    """Add ``sum_j om_j d_j d_j'`` to ``Cw[t]`` for every draw ``t`` of the tile, ``d_j``
    the centred node scores ``(g_beta, g_nu_tc)`` (lower triangle, mirrored)."""
    dn = p + tc
    for j in range(K):
        for t in range(nt):
            f = j * nt + t
            al = alpha[f]
            gn[f] = (al * al * inu - 1.0) * 0.5 * inu - gnb[t]
    for c in range(p + 1):
        for c2 in range(c + 1):
            for t in range(nt):
                sv[t] = 0.0
            for j in range(K):
                for t in range(nt):
                    f = j * nt + t
                    g1 = gb[c, f] if c < p else gn[f]
                    g2 = gb[c2, f] if c2 < p else gn[f]
                    sv[t] += om[f] * g1 * g2
            k1 = c if c < p else dn
            k2 = c2 if c2 < p else dn
            for t in range(nt):
                Cw[t, k1, k2] += sv[t]
                if k2 != k1:
                    Cw[t, k2, k1] += sv[t]


@numba.njit(**_INLINE)
def _tile(fam, b, kt, nt, rb, ev, blocks, U, logf, S, state, n_int):
    """Log weights ``state[0][:nt]`` of draws ``kt:kt+nt`` of block ``b`` and their scores,
    node covariances, node moments and per-observation ``w c''`` node means."""
    _start(b, kt, nt, ev, blocks, logf, S, state)
    _free(fam, b, kt, nt, ev, blocks, U, state, n_int)
    lev_bptr = blocks[0]
    for a in range(lev_bptr[b], lev_bptr[b + 1]):
        _nodes(a, kt, nt, rb, ev, U, state)
        _level_obs(fam, a, kt, nt, rb, ev, U, state)
        _level_close(a, nt, rb, ev, state)


@numba.njit(**_INLINE)
def _rescale(b, sc, out, span):
    a, s0, s0sq, s1, s1sq, s2, s2sq, sS, hc, sC, mA, sU, sUU = out
    lev0, lev1, r0, r1, f0, f1, c0, c1, n_int = span
    sc2 = sc * sc
    d = s1.shape[1]
    for j in range(d):
        s1[b, j] *= sc
        s1sq[b, j] *= sc2
        for l in range(d):
            s2[b, j, l] *= sc
            s2sq[b, j, l] *= sc2
            sC[b, j, l] *= sc
    for t in range(sS.shape[1]):
        sS[b, t] *= sc
    for r in range(r0, r1):
        hc[r] *= sc
    for r in range(f0, f1):
        hc[n_int + r] *= sc
    for lv in range(lev0, lev1):
        mA[lv, 0] *= sc
        mA[lv, 1] *= sc
    for j in range(c0, c1):
        sU[j] *= sc
        sUU[j] *= sc


@numba.njit(**_INLINE)
def _add_draw(b, k, t, w, state, S, nu, qbt, U, out, span):
    """Add draw ``k`` (tile row ``t``) of block ``b`` with weight ``w`` to the sums."""
    _, _, _, s1, s1sq, s2, s2sq, sS, hc, sC, mA, sU, sUU = out
    G, Cw, SA, hloc, mAk = state[1], state[2], state[3], state[4], state[5]
    lev0, lev1, r0, r1, f0, f1, c0, c1, n_int = span
    T = nu.shape[0]
    d = G.shape[1]
    p = d - T
    for c in range(T):
        G[t, p + c] = ((S[b, c, k] + SA[t, c]) / nu[c] - qbt[b, c]) / (2.0 * nu[c])
        sS[b, c] += w * (S[b, c, k] + SA[t, c])
    for j in range(d):
        s1[b, j] += w * G[t, j]
        s1sq[b, j] += w * w * G[t, j]
        for l in range(d):
            s2[b, j, l] += w * G[t, j] * G[t, l]
            s2sq[b, j, l] += w * w * G[t, j] * G[t, l]
            sC[b, j, l] += w * Cw[t, j, l]
    for r in range(r0, r1):
        hc[r] += w * hloc[t, r]
    for r in range(f0, f1):
        hc[n_int + r] += w * hloc[t, n_int + r]
    for lv in range(lev0, lev1):
        mA[lv, 0] += w * mAk[t, lv, 0]
        mA[lv, 1] += w * mAk[t, lv, 1]
    for j in range(c0, c1):
        u = U[j, k]
        sU[j] += w * u
        sUU[j] += w * u * u


@numba.njit(**_FLAGS)
def rb_chunk_sums(fam, blocks, rb, ev, U, logf, S, k0, k1, qbt, out, state, out_lw):
    """Partial sums of every block over draws ``k0:k1`` (see the module docstring).

    Parameters
    ----------
    blocks : tuple
        ``(lev_bptr, free_bptr, free_obs, col_ptr, const_b)``: per block its range of
        levels and of free observations (loading on no integrated effect), its layout
        columns, and the sampled effects' normalizing constant at ``nu``.
    rb : tuple
        The integration rule: ``(lev_ptr, lev_comp, ro, za, m0, s, cptr, cidx, cval, xs,
        logw, malpha)``; ``malpha[a]`` is how level ``a``'s nodes move with beta.
    ev : tuple
        ``(xb, wy, wn, X, zptr, zidx, zval, is_a, nu, lognu, gp)``; with moving draws ``X``
        is the shifted design and ``gp[b, :, k]`` the sampled effects' prior beta score of
        draw ``k`` (``gp`` has no draws otherwise).
    out : tuple
        ``(a, s0, s0sq, s1, s1sq, s2, s2sq, sS, hc, sC, mA, sU, sUU)``, written for every
        block (``hc`` per integrated observation in ``ro`` order, then free observations).
    state : tuple
        Work arrays from :func:`make_state`.
    out_lw : ndarray
        ``(n_blocks, k1 - k0)``: each draw's log weight is stored there too (an array with
        no columns stores nothing).
    """
    lev_bptr, free_bptr, col_ptr = blocks[0], blocks[1], blocks[3]
    keep = out_lw.shape[1] > 0
    lev_ptr = rb[0]
    nu = ev[8]
    a_out, s0, s0sq = out[0], out[1], out[2]
    n_int = rb[2].shape[0]
    lw = state[0]
    for b in range(lev_bptr.shape[0] - 1):
        lev0, lev1 = lev_bptr[b], lev_bptr[b + 1]
        span = (lev0, lev1, lev_ptr[lev0], lev_ptr[lev1], free_bptr[b], free_bptr[b + 1],
                col_ptr[b], col_ptr[b + 1], n_int)
        _rescale(b, 0.0, out, span)
        amax = -np.inf
        acc0 = 0.0
        acc0sq = 0.0
        for kt in range(k0, k1, TILE):
            nt = min(TILE, k1 - kt)
            _tile(fam, b, kt, nt, rb, ev, blocks, U, logf, S, state, n_int)
            for t in range(nt):
                if keep:
                    out_lw[b, kt + t - k0] = lw[t]
                if not lw[t] > -np.inf:
                    continue
                if lw[t] > amax:
                    if amax > -np.inf:
                        sc = math.exp(amax - lw[t])
                        acc0 *= sc
                        acc0sq *= sc * sc
                        _rescale(b, sc, out, span)
                    amax = lw[t]
                w = math.exp(lw[t] - amax)
                acc0 += w
                acc0sq += w * w
                _add_draw(b, kt + t, t, w, state, S, nu, qbt, U, out, span)
        a_out[b] = amax
        s0[b] = acc0
        s0sq[b] = acc0sq


@numba.njit(**_FLAGS)
def rb_log_weights(fam, blocks, rb, ev, U, logf, S, k0, k1, out_lw, state):
    """Log weights ``out_lw[b, k - k0]`` of draws ``k0:k1`` (no sums)."""
    n_int = rb[2].shape[0]
    for b in range(out_lw.shape[0]):
        for kt in range(k0, k1, TILE):
            nt = min(TILE, k1 - kt)
            _tile(fam, b, kt, nt, rb, ev, blocks, U, logf, S, state, n_int)
            for t in range(nt):
                out_lw[b, kt + t - k0] = state[0][t]
