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

For the negative binomial (family code 2) the dispersion ``alpha`` (``ev.fpar[0]``; not to
be confused with the integrated effects, called ``alpha`` in the code) is a parameter
after the variances: each node's score gets its ``d log f / d alpha`` (``state.ga``), the
node covariance its alpha row, each draw its node means of ``d2 log f / d alpha2`` (``saak``)
and of ``x_i d2 log f / d eta d alpha`` summed over the observations (``hxa``), summed over
the draws into ``out.saa`` and ``out.hxa`` (the expected complete-data Hessian's alpha
terms).

The fixed effects' block of the expected complete-data Hessian, ``X_b' diag(h) X_b`` with
``h_i`` the weighted node mean of ``w c''(eta_i)``, is summed per draw of a tile (``hx``,
``p (p + 1) / 2`` numbers per draw) and weighted into ``out.hxx`` as the other per-draw
sums: no work array holds a number per observation, so the tile (and the working set) does
not depend on the number of rows (:func:`make_state`, ``tile_width``).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from glmm_sm.core.constants import HALF_LOG2PI, POISSON_ETA_MAX
from glmm_sm.mcla.kernels.fastmath import fexp, flog1p_unit, frecip_unit
from glmm_sm.mcla.kernels.links import link_obs_terms
from glmm_sm.mcla.kernels.plain import FOLD, _nb_fg_series
from glmm_sm.mcla.kernels.records import RBSpan, RBState
from glmm_sm.spec.families import NB_SERIES_X

_FLAGS = dict(cache=True, nogil=True, error_model="numpy",
              fastmath={"nsz", "arcp", "contract", "afn"})
# The per-observation and per-draw steps are inlined into the loops that call them: a call
# per observation or draw would pay for passing (and reference-counting) every array it
# reads.  The per-tile and per-level steps (``_tile``, ``_start``, ``_free``, ``_nodes``,
# ``_level_obs``, ``_level_obs_bernoulli``, ``_level_close``, ``_rescale``) are compiled once
# as functions of their own: inlined at numba's IR level they were typed and lowered again
# at every call site, a third or more of a cold fit's compile time, for no measurable speed
# (docs/performance.rst, "Cold start"; the bits are the same).
_INLINE = dict(_FLAGS, inline="always")
#: Draws processed together: each observation's work is one loop over (draw, node) pairs of
#: the tile, long enough to vectorise.  The kernel takes its tile width from its work
#: arrays (:func:`make_state`); :func:`tile_width` picks it between ``TILE`` and
#: ``TILE_MAX``.
TILE = 16
#: The widest tile: each tile pays a fixed cost per integrated level (the calls of
#: ``_nodes``, ``_level_obs`` and ``_level_close``, whose records are passed by value), so
#: with few observations per level wider tiles are faster (1.4 times at 64 than at 16 on
#: 10 Bernoulli rows per level, benchmarks/README.md).
TILE_MAX = 64
#: The one tile-wide work array that grows with the data, the levels' node moments
#: (``mAk``: tile x integrated levels x 2), holds at most this many numbers (256 MB) when
#: the tile is wider than ``TILE``.  Nothing in the tile grows with the observations: each
#: draw's ``sum_i h_i x_i x_i'`` (``hx``) is kept instead of its ``h_i`` per observation.
TILE_NUMBERS = 2**25


def tile_width(n_lev):
    """The kernel's tile width for ``n_lev`` integrated levels: ``TILE_MAX`` while the
    levels' moments (tile x ``n_lev`` x 2) stay within :data:`TILE_NUMBERS` numbers, i.e.
    up to 262,144 integrated levels, narrower beyond, never below ``TILE``.  It does not
    depend on the number of observations (:func:`make_state`)."""
    per = max(2 * int(n_lev), 1)
    return int(min(TILE_MAX, max(TILE, TILE_NUMBERS // per)))


#: Levels with more observations than this always take their node covariance through the
#: nodes' beta scores (:func:`_low_rank`).
LOW_RANK_MAX_OBS = 40
#: The most numbers the per-draw residual covariances of a block's levels may take
#: (``make_state``; 32 MB).
DEFER_MAX = 4_000_000


@numba.njit(**_INLINE)
def _obs_terms(fam, eta, wyi, wni):
    """``(w (y eta - c(eta)), w (y - c'(eta)), w c''(eta))`` of one observation (for a
    non-canonical link, code ``>= 10``: the log-density, its derivative and minus its second
    derivative, :mod:`glmm_sm.mcla.kernels.links`)."""
    if fam >= 10:
        return link_obs_terms(fam, eta, wyi, wni)
    if fam == 0:
        tt = fexp(-abs(eta))
        inv = frecip_unit(1.0 + tt)
        cum = max(eta, 0.0) + flog1p_unit(tt)
        mu = inv if eta >= 0.0 else tt * inv
        return wyi * eta - wni * cum, wyi - wni * mu, wni * tt * inv * inv
    mu = fexp(min(eta, POISSON_ETA_MAX))
    return wyi * eta - wni * mu, wyi - wni * mu, wni * mu


@numba.njit(**_INLINE)
def _nb_terms(e, wyi, wni, disp, th, ld):
    """The negative binomial's terms of one observation at ``eta = e`` with dispersion
    ``disp`` (``th = 1 / disp``, ``ld = log(disp)``): ``(ll, r, h, la, lea, laa)`` of
    :func:`glmm_sm.spec.families.nb_draw_terms`, computed as the plain kernel's
    ``_nb_obs`` does (one exp, one log1p on [0, 1] and one division)."""
    z = e + ld
    t = fexp(-abs(z))
    inv = 1.0 / (1.0 + t)
    pp = inv if z >= 0.0 else t * inv  # x / (1 + x), x = disp mu
    q = 1.0 - pp if z >= 0.0 else inv  # 1 / (1 + x)
    lg = max(z, 0.0) + flog1p_unit(t)
    pa = pp * th  # mu / (1 + x)
    res = wyi * q - wni * pa
    fs, gs = _nb_fg_series(t)
    small = z < 0.0 and t < NB_SERIES_X
    f = fs if small else lg - pp
    g = gs if small else pp * pp - 2.0 * f
    return (wyi * e - (wyi + wni * th) * lg, res, (wni + disp * wyi) * pa * q,
            wni * f * th * th - wyi * pa, -res * pa, wni * g * th * th * th + wyi * pa * pa)


@numba.njit(**_INLINE)
def _eta_b(i, kt, nt, ev, U, e0):
    """``e0[t] = (X beta + offset)_i + (Z_B v_{kt+t})_i``: without ``alpha``."""
    xb, zptr, zidx, zval, is_a = ev.xb, ev.zptr, ev.zidx, ev.zval, ev.is_a
    for t in range(nt):
        e0[t] = xb[i]
    for nz in range(zptr[i], zptr[i + 1]):
        j = zidx[nz]
        if not is_a[j]:
            zv = zval[nz]
            for t in range(nt):
                e0[t] += zv * U[j, kt + t]


def make_state(T_tile, K, p, T, n_lev, max_lev, nf=0, block_lev=0):
    """Work arrays of ``_tile`` (see there); ``nf`` family parameters (1: the negative
    binomial's alpha, last in the scores); ``block_lev``: the most integrated levels in a
    block (their node covariances through the residuals are then kept per draw of a tile
    and weighted once per tile, ``_deferred_cov``, when that takes at most
    ``DEFER_MAX`` numbers).

    The working set, in numbers (8 bytes each), for ``d = p + T + nf`` scores and ``n_max =
    min(max_lev, LOW_RANK_MAX_OBS)``: per draw of the tile ``d^2 + d + T + 2 n_lev +
    p (p + 1) / 2 + (p + 1) nf + 15``, per (node, draw) pair ``p + max_lev (1 + nf) + n_max
    + 2 nf + 7``, plus ``D^2 + D + (n_max + 1) max(p, 1)`` (``D = n_max + 2``) and the
    deferred covariances (``block_lev x T_tile x D^2``, kept only within ``DEFER_MAX``).
    One set per thread.  Nothing in it grows with the number of observations; only the
    levels' moments ``mAk`` (``2 n_lev`` per draw) grow with the integrated levels, and
    ``tile_width`` keeps them within ``TILE_NUMBERS`` numbers (256 MB).  With the crossed
    design of ``benchmarks/bench_scale.py`` at 10^6 rows (p = 2, T = 2, K = 12, 99,997
    levels of at most about 30 rows, a 64-draw tile) that is about 103 MB per thread, all
    but 0.5 MB of it ``mAk``.
    """
    return RBState(*(np.empty(shape) for shape in state_shapes(T_tile, K, p, T, n_lev,
                                                                max_lev, nf, block_lev)))


def state_shapes(T_tile, K, p, T, n_lev, max_lev, nf=0, block_lev=0):
    """The shapes of :func:`make_state`'s arrays (float64, in
    :class:`~glmm_sm.mcla.kernels.records.RBState`'s order), so that the working set can be
    counted before it is allocated (:func:`state_bytes`)."""
    d = p + T + nf
    F = T_tile * K
    n_max = min(max_lev, LOW_RANK_MAX_OBS)
    D2 = (n_max + 2) ** 2
    defer = block_lev * T_tile * D2 <= DEFER_MAX and not nf
    return [(T_tile,), (T_tile, d), (T_tile, d, d), (T_tile, T), (p * (p + 1) // 2, T_tile),
            (n_lev, 2, T_tile), (T_tile,), (T_tile,), (F,), (F,), (F,), (p, F),
            (max_lev, F), (F,), (F,), (2, T_tile), (2, F), (10, T_tile), (F * nf,),
            (F * nf,), (max_lev if nf else 0, F), (p if nf else 0, T_tile), (T_tile * nf,),
            (min(max_lev, LOW_RANK_MAX_OBS), F), (_sig_size(n_max, p),),
            (block_lev, T_tile, D2) if defer else (0, 0, 0)]


def state_bytes(T_tile, K, p, T, n_lev, max_lev, nf=0, block_lev=0):
    """Bytes of one :func:`make_state` (one thread's working set), without allocating it."""
    return 8 * sum(math.prod(shape) for shape in state_shapes(T_tile, K, p, T, n_lev,
                                                              max_lev, nf, block_lev))


def _sig_size(n_max, p):
    """Length of ``state.sig``: a ``D x D`` covariance, ``D`` means and an ``(n + 1) x p``
    product for levels of up to ``n_max`` observations (``D = n_max + 2``)."""
    D = n_max + 2
    return D * D + D + (n_max + 1) * max(p, 1)


@numba.njit(**_INLINE)
def _low_rank(nf, n_a, K, p):
    """Whether a level of ``n_a`` observations takes its node covariance through its
    observations' residuals (:func:`_low_rank_close`) rather than its nodes' beta scores
    (:func:`_score_means`, :func:`_node_cov`): where that costs fewer operations, at most
    :data:`LOW_RANK_MAX_OBS` observations, and not for the negative binomial (its alpha
    scores take the nodes' path)."""
    if nf or n_a > LOW_RANK_MAX_OBS:
        return False
    D = n_a + 2
    by_nodes = K * ((p + 1) * (p + 2) // 2 + 2 * p + n_a * p)
    by_obs = K * (D * (D + 1) // 2 + 2 * n_a) + (n_a + 1) * p * (n_a + 1 + (p + 1) // 2)
    return by_obs < by_nodes


@numba.njit(**_FLAGS)
def _start(b, kt, nt, ev, blocks, draws, state):
    """Each draw's prior part of the log weight and of the scores (moving draws: ``gp``)."""
    lw, G, Cw, SA = state.lw, state.G, state.Cw, state.SA
    logf, S = draws.logf, draws.S
    const_b = blocks.const_b
    nu, gp = ev.nu, ev.gp
    T = nu.shape[0]
    nf = ev.fpar.shape[0]
    d = G.shape[1]
    p = d - T - nf
    for t in range(nt):
        k = kt + t
        lw[t] = const_b[b] - logf[b, k]
        if nf:
            state.saak[t] = 0.0
        for j in range(state.hxa.shape[0]):
            state.hxa[j, t] = 0.0
        for j in range(state.hx.shape[0]):
            state.hx[j, t] = 0.0
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


@numba.njit(**_FLAGS)
def _free(fam, b, kt, nt, ev, blocks, U, state, n_int):
    """Observations of block ``b`` on no integrated level."""
    free_bptr, free_obs = blocks.free_bptr, blocks.free_obs
    wy, wn, X = ev.wy, ev.wn, ev.X
    lw, G, e0, sv = state.lw, state.G, state.e0, state.acc[5]
    p = X.shape[1]
    for r in range(free_bptr[b], free_bptr[b + 1]):
        i = free_obs[r]
        _eta_b(i, kt, nt, ev, U, e0)
        if fam == 2:
            _free_nb(i, nt, ev, state)
        else:
            for t in range(nt):
                ll, rr, cc = _obs_terms(fam, e0[t], wy[i], wn[i])
                lw[t] += ll
                sv[t] = cc
                for c in range(p):
                    G[t, c] += rr * X[i, c]
        _add_hx(i, nt, X, sv, state.hx)


@numba.njit(**_INLINE)
def _add_hx(i, nt, X, sv, hx):
    """``hx[:, t] += sv[t] x_i x_i'`` (the lower triangle, row by row) for every draw of
    the tile: observation ``i``'s part of each draw's ``X' diag(h) X``."""
    idx = 0
    for c in range(X.shape[1]):
        for l in range(c + 1):
            xx = X[i, c] * X[i, l]
            for t in range(nt):
                hx[idx, t] += sv[t] * xx
            idx += 1


@numba.njit(**_INLINE)
def _free_nb(i, nt, ev, state):
    """A free negative binomial observation ``i`` for every draw of the tile
    (``state.e0`` its ``eta``): log weight, scores (alpha last), the alpha terms of the
    expected Hessian (``saak``, ``hxa``) and each draw's ``w c''`` in ``state.acc[5]``."""
    wyi, wni, X = ev.wy[i], ev.wn[i], ev.X
    disp = ev.fpar[0]
    th, ld = 1.0 / disp, math.log(disp)
    lw, G, e0, sv, hxa = state.lw, state.G, state.e0, state.acc[5], state.hxa
    dA = G.shape[1] - 1
    for t in range(nt):
        ll, rr, cc, la, lea, laa = _nb_terms(e0[t], wyi, wni, disp, th, ld)
        lw[t] += ll
        sv[t] = cc
        for c in range(X.shape[1]):
            G[t, c] += rr * X[i, c]
            hxa[c, t] += lea * X[i, c]
        G[t, dA] += la
        state.saak[t] += laa


@numba.njit(**_FLAGS)
def _nodes(a, kt, nt, rb, ev, U, state):
    """Level ``a``'s nodes for every draw of the tile, with their prior log weights (and,
    for moving draws, the prior's beta score of each node); each draw's scale in
    ``state.acc[6]`` (a re-centred rule's own per draw, ``rb.sk``)."""
    m0, s, cptr, cidx, cval, xs, logw, malpha = (rb.m0, rb.s, rb.cptr, rb.cidx, rb.cval, rb.xs,
                                                 rb.logw, rb.malpha)
    nu, lognu, gp = ev.nu, ev.lognu, ev.gp
    mu, alpha, lq, gb = state.mu, state.alpha, state.lq, state.gb
    sd, base = state.acc[6], state.acc[7]
    K = xs.shape[0]
    p = gb.shape[0]
    tc = rb.lev_comp[a]
    for t in range(nt):
        mu[t] = m0[a]
    for nz in range(cptr[a], cptr[a + 1]):
        cv = cval[nz]
        row = cidx[nz]
        for t in range(nt):
            mu[t] += cv * U[row, kt + t]
    b0 = -HALF_LOG2PI - 0.5 * lognu[tc]
    if rb.dmu.shape[1]:
        for t in range(nt):
            mu[t] += rb.dmu[a, kt + t]
            sd[t] = rb.sk[a, kt + t]
            base[t] = math.log(sd[t]) + b0
    else:
        for t in range(nt):
            sd[t] = s[a]
            base[t] = math.log(s[a]) + b0
    inv_nu = 1.0 / nu[tc]
    for j in range(K):
        for t in range(nt):
            al = mu[t] + sd[t] * xs[j]
            alpha[j * nt + t] = al
            lq[j * nt + t] = logw[j] + base[t] - 0.5 * al * al * inv_nu
    F = nt * K
    if not _low_rank(ev.fpar.shape[0], rb.lev_ptr[a + 1] - rb.lev_ptr[a], K, p):
        for c in range(p):
            mac = malpha[a, c] * inv_nu if gp.shape[2] else 0.0
            for f in range(F):
                gb[c, f] = -mac * alpha[f]
    if ev.fpar.shape[0]:
        for f in range(F):
            state.ga[f] = 0.0
            state.gaa[f] = 0.0


@numba.njit(**_FLAGS)
def _level_obs(fam, a, kt, nt, rb, ev, U, state):
    """Add the observations of level ``a`` to its nodes' log weights and beta scores."""
    lev_ptr, ro, za, xs = rb.lev_ptr, rb.ro, rb.za, rb.xs
    K = xs.shape[0]
    wn = ev.wn
    F = nt * K
    o0, o1 = lev_ptr[a], lev_ptr[a + 1]
    unit = fam == 0
    for r in range(o0, o1):
        unit = unit and wn[ro[r]] == 1.0
    if unit:
        _level_obs_bernoulli(a, kt, nt, rb, ev, U, state)
        return
    wy, X = ev.wy, ev.X
    e0, alpha, lq, rr, gb, cij, ze = state.e0, state.alpha, state.lq, state.rr, state.gb, \
        state.cij, state.ze
    low = _low_rank(ev.fpar.shape[0], o1 - o0, K, gb.shape[0])
    for r in range(o0, o1):
        i = ro[r]
        _eta_b(i, kt, nt, ev, U, e0)
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
        elif fam >= 10:
            for f in range(F):
                ll, rf, hf = link_obs_terms(fam, ze[f] + z * alpha[f], wyi, wni)
                lq[f] += ll
                rr[f] = rf
                cij[rl, f] = hf
        elif fam == 2:
            _level_obs_nb(rl, F, z, wyi, wni, ev, state)
        else:
            for f in range(F):
                e = ze[f] + z * alpha[f]
                mu_f = fexp(min(e, POISSON_ETA_MAX))
                lq[f] += wyi * e - wni * mu_f
                rr[f] = wyi - wni * mu_f
                cij[rl, f] = wni * mu_f
        if low:
            for f in range(F):
                state.rrs[rl, f] = rr[f]
        else:
            _add_gb(i, F, X, rr, gb)


@numba.njit(**_INLINE)
def _level_obs_nb(rl, F, z, wyi, wni, ev, state):
    """One negative binomial observation (row ``rl`` of its level) at every (node, draw)
    pair: its log-density, residual and ``-d2/d eta2`` as the other families', and its
    alpha score, ``d2/d alpha2`` and ``d2/d eta d alpha`` (``ga``, ``gaa``, ``cea``)."""
    disp = ev.fpar[0]
    th, ld = 1.0 / disp, math.log(disp)
    ze, alpha, lq, rr, cij = state.ze, state.alpha, state.lq, state.rr, state.cij
    ga, gaa, cea = state.ga, state.gaa, state.cea
    for f in range(F):
        ll, rf, hf, la, lea, laa = _nb_terms(ze[f] + z * alpha[f], wyi, wni, disp, th, ld)
        lq[f] += ll
        rr[f] = rf
        cij[rl, f] = hf
        ga[f] += la
        gaa[f] += laa
        cea[rl, f] = lea


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
def _node_offsets(z, sd, nt, per, xs, ec):
    """``ec[0, f] = exp(c_f)``, ``ec[1, f] = exp(-c_f)`` for ``c_f = z sd_t x_j`` (``f = j
    nt + t``; with one scale for the tile, ``per`` false, computed once per node and copied);
    returns ``max |c_f|``."""
    cmax = 0.0
    for j in range(xs.shape[0]):
        if per:
            for t in range(nt):
                c = z * sd[t] * xs[j]
                cmax = max(cmax, abs(c))
                ec[0, j * nt + t] = fexp(c)
                ec[1, j * nt + t] = fexp(-c)
        else:
            c = z * sd[0] * xs[j]
            cmax = max(cmax, abs(c))
            ep, em = fexp(c), fexp(-c)
            for t in range(nt):
                ec[0, j * nt + t] = ep
                ec[1, j * nt + t] = em
    return cmax


@numba.njit(**_FLAGS)
def _level_obs_bernoulli(a, kt, nt, rb, ev, U, state):
    """:func:`_level_obs` for a Bernoulli level with unit weights, with two savings that
    change no formula: ``sum_i log(1 + t_i)`` is the log of a product (one ``log`` per node
    and ``FOLD`` observations, not one per observation), and ``t = exp(-|eta|)`` at node
    ``j`` is ``exp(+-b) exp(+-c_j)`` with ``b = eta_0 + z mu_a(v)`` per draw and
    ``c_j = z s_a x_j`` per node (two ``exp`` per observation and draw, not one per node;
    a re-centred rule's ``c`` is per node and draw, computed once per level).
    """
    lev_ptr, ro, za, xs = rb.lev_ptr, rb.ro, rb.za, rb.xs
    K = xs.shape[0]
    wy, X = ev.wy, ev.X
    e0, mu, alpha, lq, rr, gb, cij = state.e0, state.mu, state.alpha, state.lq, state.rr, \
        state.gb, state.cij
    pr, eb, ec = state.pr, state.eb, state.ec
    sd = state.acc[6]
    per = rb.dmu.shape[1] > 0
    F = nt * K
    o0, o1 = lev_ptr[a], lev_ptr[a + 1]
    for f in range(F):
        pr[f] = 1.0
    low = _low_rank(ev.fpar.shape[0], o1 - o0, K, gb.shape[0])
    z_prev = math.nan
    for r in range(o0, o1):
        i = ro[r]
        _eta_b(i, kt, nt, ev, U, e0)
        z = za[r]
        wyi = wy[i]
        rl = r - o0
        if z != z_prev:
            z_prev = z
            cmax = _node_offsets(z, sd, nt, per, xs, ec)
        if cmax <= MAX_OFFSET:
            for t in range(nt):
                bt = min(max(e0[t] + z * mu[t], -ETA_CLAMP), ETA_CLAMP)
                eb[0, t] = fexp(bt)
                eb[1, t] = fexp(-bt)
            for j in range(K):
                for t in range(nt):
                    f = j * nt + t
                    e = e0[t] + z * alpha[f]
                    tt = eb[0, t] * ec[0, f] if e < 0.0 else eb[1, t] * ec[1, f]
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
        if low:
            for f in range(F):
                state.rrs[rl, f] = rr[f]
        else:
            _add_gb(i, F, X, rr, gb)
        if (rl + 1) % FOLD == 0 or r == o1 - 1:
            for f in range(F):
                lq[f] -= math.log(pr[f])
                pr[f] = 1.0


@numba.njit(**_FLAGS)
def _level_close(a, a_loc, nt, rb, ev, state):
    """Level ``a`` for every draw of the tile: ``log I_a``, the node weights, and the node
    means and covariance of the scores, added to each draw's pieces (node-major layout
    ``f = j nt + t``: the inner loops run over the tile's draws)."""
    lev_ptr, K = rb.lev_ptr, rb.xs.shape[0]
    nu = ev.nu
    lw, G, SA, mAk = state.lw, state.G, state.SA, state.mAk
    alpha, om, gb, cij, acc = state.alpha, state.lq, state.gb, state.cij, state.acc
    tc = rb.lev_comp[a]
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
        mAk[a, 0, t] = ea[t]
        mAk[a, 1, t] = ea2[t]
    if _low_rank(ev.fpar.shape[0], lev_ptr[a + 1] - lev_ptr[a], K, gb.shape[0]):
        _low_rank_close(a, a_loc, nt, tc, inu, rb, ev, state)
    else:
        _score_means(nt, K, om, gb, G, sv)
        if ev.fpar.shape[0]:
            _nb_close(a, nt, K, rb, ev, state, sv)
        _node_cov(nt, K, tc, inu, state, gnb, sv)
    o0 = lev_ptr[a]
    for r in range(o0, lev_ptr[a + 1]):
        rl = r - o0
        for t in range(nt):
            sv[t] = 0.0
        for j in range(K):
            for t in range(nt):
                sv[t] += om[j * nt + t] * cij[rl, j * nt + t]
        _add_hx(rb.ro[r], nt, ev.X, sv, state.hx)


@numba.njit(**_INLINE)
def _nb_close(a, nt, K, rb, ev, state, sv):
    """Negative binomial, level ``a``: add the node means of the alpha scores to each
    draw's ``G`` (last) and centre ``ga``; add the node means of ``d2 log f / d alpha2`` to
    ``saak`` and those of ``d2 log f / d eta d alpha`` times each observation's ``x_i`` to
    ``hxa``."""
    om, ga, gaa, cea, G = state.lq, state.ga, state.gaa, state.cea, state.G
    dA = G.shape[1] - 1
    for t in range(nt):
        sv[t] = 0.0
    for j in range(K):
        for t in range(nt):
            f = j * nt + t
            sv[t] += om[f] * ga[f]
    for t in range(nt):
        G[t, dA] += sv[t]
    for j in range(K):
        for t in range(nt):
            ga[j * nt + t] -= sv[t]
    for t in range(nt):
        sv[t] = 0.0
    for j in range(K):
        for t in range(nt):
            f = j * nt + t
            sv[t] += om[f] * gaa[f]
    for t in range(nt):
        state.saak[t] += sv[t]
    o0 = rb.lev_ptr[a]
    for r in range(o0, rb.lev_ptr[a + 1]):
        rl = r - o0
        for t in range(nt):
            sv[t] = 0.0
        for j in range(K):
            for t in range(nt):
                f = j * nt + t
                sv[t] += om[f] * cea[rl, f]
        i = rb.ro[r]
        for c in range(ev.X.shape[1]):
            xic = ev.X[i, c]
            for t in range(nt):
                state.hxa[c, t] += sv[t] * xic


@numba.njit(**_INLINE)
def _project_cov(a, dn, inu, shift, rule, X, sig, C):
    """Add ``A' Sigma A`` of level ``a`` to ``C`` (``d x d``): the node covariance of the
    scores through the level's residuals (:func:`_low_rank_close`, :func:`_deferred_cov`).

    ``Sigma`` is the lower triangle of the ``D x D`` matrix (``D = n_a + 2``) at the start
    of ``sig``, over ``R = (rr_1..rr_n, alpha, gn)``; ``A`` maps ``R`` to the scores: the
    rows of the level's observations' ``X`` and, with moving draws (``shift``), ``-malpha_a
    / nu`` for ``alpha`` to the beta scores; ``gn`` to the variance score (index ``dn``)
    alone.  ``sig`` past ``D^2 + D`` is work space (``M = Sigma A``)."""
    o0 = rule.lev_ptr[a]
    n_a = rule.lev_ptr[a + 1] - o0
    D = n_a + 2
    p = X.shape[1]
    ro = rule.ro
    moff = D * D + D
    # M[u, c] = sum_v Sigma[u, v] A[v, c] over the rows with beta coefficients
    for u in range(n_a + 1):
        for c in range(p):
            s_ = 0.0
            for v in range(n_a + 1):
                suv = sig[u * D + v] if v <= u else sig[v * D + u]
                av = X[ro[o0 + v], c] if v < n_a else (
                    -rule.malpha[a, c] * inu if shift else 0.0)
                s_ += suv * av
            sig[moff + u * p + c] = s_
    for c in range(p):
        for c2 in range(c + 1):
            s_ = 0.0
            for u in range(n_a + 1):
                au = X[ro[o0 + u], c] if u < n_a else (
                    -rule.malpha[a, c] * inu if shift else 0.0)
                s_ += au * sig[moff + u * p + c2]
            C[c, c2] += s_
            if c2 != c:
                C[c2, c] += s_
        s_ = 0.0
        for u in range(n_a + 1):
            au = X[ro[o0 + u], c] if u < n_a else (
                -rule.malpha[a, c] * inu if shift else 0.0)
            s_ += au * sig[(n_a + 1) * D + u]
        C[dn, c] += s_
        C[c, dn] += s_
    C[dn, dn] += sig[(n_a + 1) * D + n_a + 1]


@numba.njit(**_FLAGS)
def _low_rank_close(a, a_loc, nt, tc, inu, rb, ev, state):
    """:func:`_score_means` and :func:`_node_cov` of level ``a`` through its observations.

    A node's beta score is ``sum_r X_r rr_r + m alpha`` (``m = -malpha_a / nu`` with moving
    draws, else 0) and its ``nu_tc`` score ``gn`` a function of ``alpha``: linear maps
    ``A' R`` of the ``D = n_a + 2`` numbers ``R = (rr_1..rr_n, alpha, gn)``.  So the node
    mean of the scores is ``A'`` times the node mean of ``R``, and their node covariance
    ``A' Sigma A`` with ``Sigma`` the ``D x D`` node covariance of ``R``: ``K D^2 / 2 + D
    p^2 / 2`` operations per draw instead of ``K p^2 / 2`` (the same sums, regrouped).
    Reads ``state.rrs`` (each observation's residual at each pair) and the node weights
    and moments :func:`_level_close` has set.  With ``state.sgl`` (``a_loc``: the level's
    place in its block) ``Sigma`` is kept there for each draw of the tile and
    :func:`_deferred_cov` adds ``A' (sum_t w_t Sigma_t) A`` once the draws' weights are
    known (:func:`_low_rank_kept`, the draws innermost); else ``A' Sigma A`` is added to
    each draw's ``Cw``."""
    if state.sgl.shape[0]:
        _low_rank_kept(a, a_loc, nt, inu, rb, ev, state)
        return
    om, alpha, rrs, G, Cw, X, acc = (state.lq, state.alpha, state.rrs, state.G, state.Cw, ev.X,
                                     state.acc)
    ea, ea2, sig = acc[2], acc[3], state.sig
    K = rb.xs.shape[0]
    o0 = rb.lev_ptr[a]
    n_a = rb.lev_ptr[a + 1] - o0
    D = n_a + 2
    p = X.shape[1]
    dn = p + tc
    ro = rb.ro
    shift = ev.gp.shape[2] > 0
    mean = D * D  # offsets into sig: the covariance, the means, then M = Sigma A
    for t in range(nt):
        for u in range(n_a):
            s_ = 0.0
            for j in range(K):
                s_ += om[j * nt + t] * rrs[u, j * nt + t]
            sig[mean + u] = s_
        sig[mean + n_a] = ea[t]
        gbar = (ea2[t] * inu - 1.0) * 0.5 * inu
        sig[mean + n_a + 1] = gbar
        # the node means of the beta scores
        for c in range(p):
            g = -rb.malpha[a, c] * inu * ea[t] if shift else 0.0
            for u in range(n_a):
                g += X[ro[o0 + u], c] * sig[mean + u]
            G[t, c] += g
        # Sigma: node covariance of R (centred values)
        for u in range(D * D):
            sig[u] = 0.0
        for j in range(K):
            f = j * nt + t
            w = om[f]
            al = alpha[f]
            state.ze[0] = al - ea[t]
            state.ze[1] = (al * al * inu - 1.0) * 0.5 * inu - gbar
            for u in range(D):
                if u < n_a:
                    ru = rrs[u, f] - sig[mean + u]
                else:
                    ru = state.ze[u - n_a]
                wu = w * ru
                for v in range(u + 1):
                    rv = rrs[v, f] - sig[mean + v] if v < n_a else state.ze[v - n_a]
                    sig[u * D + v] += wu * rv
        _project_cov(a, dn, inu, shift, rb, X, sig, Cw[t])


@numba.njit(**_FLAGS)
def _low_rank_kept(a, a_loc, nt, inu, rb, ev, state):
    """:func:`_low_rank_close` where ``Sigma`` is kept per draw in ``state.sgl``: the
    same sums in the same order (each over the nodes ``j``, the draws' own), computed
    for all the tile's draws at once (the draws innermost, contiguous in the node-major
    layout ``f = j nt + t``) instead of draw after draw.  The node means of the
    residuals, each draw's ``G`` and the lower triangle of each draw's ``Sigma`` are the
    same numbers as :func:`_low_rank_close`'s draw-by-draw loop (the upper triangle of
    ``sgl`` is not written; :func:`_deferred_cov` reads the lower).  Work space: the
    rows of ``state.rrs`` are centred in place, ``state.ze`` and ``state.rr`` take the
    centred ``alpha`` and ``nu`` scores (``state.acc[4]``: the latter's node means, set by
    :func:`_level_close`), ``state.gb`` (not used by a level on this path)
    each draw's beta scores being summed, ``state.acc[0]`` the sum being formed."""
    om, alpha, rrs, G, X, acc = state.lq, state.alpha, state.rrs, state.G, ev.X, state.acc
    ea, gnb, sgl = acc[2], acc[4], state.sgl
    sm, gs, ca, cn = acc[0], state.gb, state.ze, state.rr
    K = rb.xs.shape[0]
    o0 = rb.lev_ptr[a]
    n_a = rb.lev_ptr[a + 1] - o0
    D = n_a + 2
    p = X.shape[1]
    ro = rb.ro
    shift = ev.gp.shape[2] > 0
    for c in range(p):
        mc = -rb.malpha[a, c] * inu if shift else 0.0
        for t in range(nt):
            gs[c, t] = mc * ea[t] if shift else 0.0
    for u in range(n_a):
        # the node mean of residual u, then the beta scores' terms, then centred
        for t in range(nt):
            sm[t] = 0.0
        for j in range(K):
            for t in range(nt):
                sm[t] += om[j * nt + t] * rrs[u, j * nt + t]
        for c in range(p):
            xc = X[ro[o0 + u], c]
            for t in range(nt):
                gs[c, t] += xc * sm[t]
        for j in range(K):
            for t in range(nt):
                rrs[u, j * nt + t] -= sm[t]
    for c in range(p):
        for t in range(nt):
            G[t, c] += gs[c, t]
    for j in range(K):
        for t in range(nt):
            f = j * nt + t
            al = alpha[f]
            ca[f] = al - ea[t]
            cn[f] = (al * al * inu - 1.0) * 0.5 * inu - gnb[t]
    for u in range(D):
        ru = rrs[u] if u < n_a else (ca if u == n_a else cn)
        for v in range(u + 1):
            rv = rrs[v] if v < n_a else (ca if v == n_a else cn)
            for t in range(nt):
                sm[t] = 0.0
            for j in range(K):
                for t in range(nt):
                    f = j * nt + t
                    sm[t] += om[f] * ru[f] * rv[f]
            for t in range(nt):
                sgl[a_loc, t, u * D + v] = sm[t]


@numba.njit(**_FLAGS)
def _deferred_cov(b, lev0, lev1, nt, amax, rule, ev, state, out):
    """Add ``A' (sum_t w_t Sigma_t) A`` of each level of block ``b`` whose node covariance
    goes through its residuals (:func:`_low_rank_close`) to ``out.sC[b]``: the draws
    ``t`` of the tile just integrated, ``w_t = exp(lw_t - amax)`` their weights at the
    block's running maximum (the scale of ``out``'s sums)."""
    X, sig, sgl, sC, lw = ev.X, state.sig, state.sgl, out.sC, state.lw
    K = rule.xs.shape[0]
    p = X.shape[1]
    shift = ev.gp.shape[2] > 0
    wt = state.acc[5]
    for t in range(nt):
        wt[t] = math.exp(lw[t] - amax) if lw[t] > -np.inf else 0.0
    for a in range(lev0, lev1):
        o0 = rule.lev_ptr[a]
        n_a = rule.lev_ptr[a + 1] - o0
        if not _low_rank(0, n_a, K, p):
            continue
        D = n_a + 2
        tc = rule.lev_comp[a]
        inu = 1.0 / ev.nu[tc]
        dn = p + tc
        for u in range(D):
            for v in range(u + 1):
                s_ = 0.0
                for t in range(nt):
                    s_ += wt[t] * sgl[a - lev0, t, u * D + v]
                sig[u * D + v] = s_
        _project_cov(a, dn, inu, shift, rule, X, sig, sC[b])


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
def _node_cov(nt, K, tc, inu, state, gnb, sv):
    """Add ``sum_j om_j d_j d_j'`` to ``Cw[t]`` for every draw ``t`` of the tile, ``d_j``
    the centred node scores ``(g_beta, g_nu_tc)`` (lower triangle, mirrored); ``om`` are
    the node weights (in ``state.lq``), ``gn`` the node scores in ``nu_tc`` (written to
    ``state.rr``)."""
    alpha, om, gb, Cw, gn = state.alpha, state.lq, state.gb, state.Cw, state.rr
    p = gb.shape[0]
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
    if state.ga.shape[0]:
        _node_cov_nb(nt, K, dn, state, sv)


@numba.njit(**_INLINE)
def _node_cov_nb(nt, K, dn, state, sv):
    """The negative binomial's row of :func:`_node_cov`: the node covariances of the
    centred alpha scores ``ga`` with the beta scores, the ``nu_tc`` score (at ``dn``) and
    themselves, in row and column ``-1`` of ``Cw``."""
    om, gb, Cw, gn, ga = state.lq, state.gb, state.Cw, state.rr, state.ga
    p = gb.shape[0]
    dA = Cw.shape[1] - 1
    for c2 in range(p + 2):
        for t in range(nt):
            sv[t] = 0.0
        for j in range(K):
            for t in range(nt):
                f = j * nt + t
                g2 = gb[c2, f] if c2 < p else (gn[f] if c2 == p else ga[f])
                sv[t] += om[f] * ga[f] * g2
        k2 = c2 if c2 < p else (dn if c2 == p else dA)
        for t in range(nt):
            Cw[t, dA, k2] += sv[t]
            if k2 != dA:
                Cw[t, k2, dA] += sv[t]


@numba.njit(**_FLAGS)
def _tile(fam, b, kt, nt, rb, ev, blocks, draws, state):
    """Log weights ``state.lw[:nt]`` of draws ``kt:kt+nt`` of block ``b`` and their scores,
    node covariances, node moments and per-observation ``w c''`` node means."""
    U = draws.U
    _start(b, kt, nt, ev, blocks, draws, state)
    _free(fam, b, kt, nt, ev, blocks, U, state, rb.ro.shape[0])
    lev_bptr = blocks.lev_bptr
    for a in range(lev_bptr[b], lev_bptr[b + 1]):
        _nodes(a, kt, nt, rb, ev, U, state)
        _level_obs(fam, a, kt, nt, rb, ev, U, state)
        _level_close(a, a - lev_bptr[b], nt, rb, ev, state)


@numba.njit(**_FLAGS)
def _rescale(sc, out, span, moments):
    """Multiply block ``span.b``'s running sums by ``sc`` (``sc**2`` for the squared
    ones); the levels' moments and the draws' sums only where ``moments`` is true (within
    a tile they are rescaled by :func:`_tile_moments`)."""
    s1, s1sq, s2, s2sq, sS, hxx = out.s1, out.s1sq, out.s2, out.s2sq, out.sS, out.hxx
    sC, mA, sU, sUU = out.sC, out.mA, out.sU, out.sUU
    b, lev0, lev1, c0, c1 = span.b, span.lev0, span.lev1, span.c0, span.c1
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
    for j in range(hxx.shape[1]):
        hxx[b, j] *= sc
    if moments:
        for lv in range(lev0, lev1):
            mA[lv, 0] *= sc
            mA[lv, 1] *= sc
        for j in range(c0, c1):
            sU[j] *= sc
            sUU[j] *= sc
    if out.saa.shape[0]:  # negative binomial
        out.saa[b] *= sc
        for j in range(out.hxa.shape[1]):
            out.hxa[b, j] *= sc


@numba.njit(**_INLINE)
def _add_draw(k, t, w, state, draws, ev, blocks, out, span):
    """Add draw ``k`` (tile row ``t``) of block ``span.b`` with weight ``w`` to the sums
    (the levels' moments and the draws' sums: :func:`_tile_moments`)."""
    s1, s1sq, s2, s2sq, sS, hxx = out.s1, out.s1sq, out.s2, out.s2sq, out.sS, out.hxx
    sC = out.sC
    S, nu, qbt = draws.S, ev.nu, blocks.qbt
    G, Cw, SA, hx = state.G, state.Cw, state.SA, state.hx
    b = span.b
    T = nu.shape[0]
    nf = ev.fpar.shape[0]
    d = G.shape[1]
    p = d - T - nf
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
    for j in range(hx.shape[0]):
        hxx[b, j] += w * hx[j, t]
    if nf:  # negative binomial
        out.saa[b] += w * state.saak[t]
        for j in range(out.hxa.shape[1]):
            out.hxa[b, j] += w * state.hxa[j, t]


@numba.njit(**_FLAGS)
def _tile_moments(kt, nt, state, draws, ev, out, span):
    """Add the tile's draws to the levels' moments ``mA`` and the sampled effects' sums
    ``sU``, ``sUU`` of block ``span.b``, level by level (column by column) with the draws
    innermost: each sum takes, draw after draw, the rescaling ``state.acc[8, t]`` (1: none)
    and the weight ``state.acc[9, t]`` (negative: a draw of weight zero, not added) that
    :func:`rb_chunk_sums` applied to the per-draw sums, i.e. the same operations in the
    same order as one draw at a time, reading the tile's moments and draws contiguously.
    The integrated columns (``ev.is_a``) are skipped: their draws are zeros, and their
    moments are ``mA``."""
    mA, sU, sUU, mAk, U, is_a = out.mA, out.sU, out.sUU, state.mAk, draws.U, ev.is_a
    scv, wv = state.acc[8], state.acc[9]
    for lv in range(span.lev0, span.lev1):
        m0, m1 = mA[lv, 0], mA[lv, 1]
        for t in range(nt):
            if scv[t] != 1.0:
                m0 *= scv[t]
                m1 *= scv[t]
            if wv[t] >= 0.0:
                m0 += wv[t] * mAk[lv, 0, t]
                m1 += wv[t] * mAk[lv, 1, t]
        mA[lv, 0], mA[lv, 1] = m0, m1
    for j in range(span.c0, span.c1):
        if is_a[j]:
            continue
        s1, s2 = sU[j], sUU[j]
        for t in range(nt):
            if scv[t] != 1.0:
                s1 *= scv[t]
                s2 *= scv[t]
            if wv[t] >= 0.0:
                u = U[j, kt + t]
                s1 += wv[t] * u
                s2 += wv[t] * u * u
        sU[j], sUU[j] = s1, s2


@numba.njit(**_FLAGS)
def rb_chunk_sums(fam, blocks, rule, ev, draws, k0, k1, out, state, out_lw):
    """Partial sums of every block over draws ``k0:k1`` (see the module docstring).

    Parameters
    ----------
    blocks : RBBlocks
        Per block its range of levels and of free observations (loading on no integrated
        effect), its layout columns, the sampled effects' normalizing constant at ``nu``
        and the columns per component (:mod:`glmm_sm.mcla.kernels.records`).
    rule : RBRule
        The integration rule; ``rule.malpha[a]`` is how level ``a``'s nodes move with beta.
    ev : RBInputs
        With moving draws ``ev.X`` is the shifted design and ``ev.gp[b, :, k]`` the sampled
        effects' prior beta score of draw ``k`` (``gp`` has no draws otherwise).
    draws : Draws
    out : RBSums
        Written for every block (``hxx``: the lower triangle, row by row, of the block's
        weighted ``X_b' diag(h) X_b``; ``hc`` and ``hca`` are not used).
    state : RBState
        Work arrays from :func:`make_state`.
    out_lw : ndarray
        ``(n_blocks, k1 - k0)``: each draw's log weight is stored there too (an array with
        no columns stores nothing).
    """
    lev_bptr, free_bptr, col_ptr = blocks.lev_bptr, blocks.free_bptr, blocks.col_ptr
    keep = out_lw.shape[1] > 0
    lev_ptr = rule.lev_ptr
    n_int = rule.ro.shape[0]
    lw = state.lw
    tile = lw.shape[0]
    for b in range(lev_bptr.shape[0] - 1):
        lev0, lev1 = lev_bptr[b], lev_bptr[b + 1]
        span = RBSpan(b, lev0, lev1, lev_ptr[lev0], lev_ptr[lev1], free_bptr[b],
                      free_bptr[b + 1], col_ptr[b], col_ptr[b + 1], n_int)
        _rescale(0.0, out, span, True)
        amax = -np.inf
        acc0 = 0.0
        acc0sq = 0.0
        for kt in range(k0, k1, tile):
            nt = min(tile, k1 - kt)
            _tile(fam, b, kt, nt, rule, ev, blocks, draws, state)
            scv, wv = state.acc[8], state.acc[9]
            for t in range(nt):
                scv[t] = 1.0
                wv[t] = -1.0
                if keep:
                    out_lw[b, kt + t - k0] = lw[t]
                if not lw[t] > -np.inf:
                    continue
                if lw[t] > amax:
                    if amax > -np.inf:
                        sc = math.exp(amax - lw[t])
                        acc0 *= sc
                        acc0sq *= sc * sc
                        _rescale(sc, out, span, False)
                        scv[t] = sc
                    amax = lw[t]
                w = math.exp(lw[t] - amax)
                acc0 += w
                acc0sq += w * w
                _add_draw(kt + t, t, w, state, draws, ev, blocks, out, span)
                wv[t] = w
            _tile_moments(kt, nt, state, draws, ev, out, span)
            if state.sgl.shape[0] and amax > -np.inf:
                _deferred_cov(b, lev0, lev1, nt, amax, rule, ev, state, out)
        out.a[b] = amax
        out.s0[b] = acc0
        out.s0sq[b] = acc0sq


@numba.njit(**_FLAGS)
def rb_log_weights(fam, blocks, rule, ev, draws, k0, k1, out_lw, state):
    """Log weights ``out_lw[b, k - k0]`` of draws ``k0:k1`` (no sums)."""
    tile = state.lw.shape[0]
    for b in range(out_lw.shape[0]):
        for kt in range(k0, k1, tile):
            nt = min(tile, k1 - kt)
            _tile(fam, b, kt, nt, rule, ev, blocks, draws, state)
            for t in range(nt):
                out_lw[b, kt + t - k0] = state.lw[t]
