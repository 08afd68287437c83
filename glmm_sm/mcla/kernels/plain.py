"""The MCLA hot loop: per-block partial sums over one chunk of draws.

For block ``b`` and draw ``k`` the log importance weight is

    b_k = sum_i w_i (y_i eta_ik - c(eta_ik)) + log f(u_k | nu) - log f~(u_k),
    eta_ik = (X beta + offset)_i + (Z u_k)_i.

Per block and chunk the kernel returns, with ``a = max_k b_k`` and ``e_k = exp(b_k - a)``:
``a``, ``sum e``, ``sum e^2``, ``sum e G``, ``sum e^2 G``, ``sum e G G'``, ``sum e^2 G G'``,
``sum e S`` (sums of squares per component) and, per observation, ``sum e w c''(eta)``.
``G_k`` is the complete-data score ``(X_b' w (y - c'(eta_k)), -q_bt/(2 nu_t) + S_bt/(2 nu_t^2))``.
These partial sums combine exactly across chunks (:mod:`glmm_sm.mcla.engine`).  With draws that
move with the fixed effects (``engine.DrawShift``) the caller passes the moved draws, the
shifted design ``X + Z M`` as ``X`` and the prior's beta scores ``Gp``, and gets the weighted
sums of the draws in ``out_sU``.

``eta``, the cumulant and the reductions are fused over tiles of 64 draws; ``Z u`` is a gather
through the CSR arrays of ``Z``; the n x m matrix of linear predictors is never formed.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from glmm_sm.core.constants import HALF_LOG2PI, POISSON_ETA_MAX
from glmm_sm.mcla.kernels.fastmath import fexp, flog1p_unit
from glmm_sm.mcla.kernels.links import link_obs_terms
from glmm_sm.mcla.kernels.records import Span, Work
from glmm_sm.spec.families import NB_SERIES_X

TILE = 64
#: Bernoulli observations per fold of the running products of ``1 + exp(-|eta|)`` (each
#: factor is in [1, 2], so a product stays far below overflow).
FOLD = 256

_FLAGS = dict(cache=True, nogil=True, error_model="numpy",
              fastmath={"nsz", "arcp", "contract", "afn"})
# The accumulation step has no exp/log whose range reduction reassociation could break, and
# its per-observation sums only vectorise when reassociation is allowed.  The order is still
# fixed by the compiled code, so results stay bit-identical for any number of threads.
_ACC_FLAGS = dict(_FLAGS, fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})


@numba.njit(**_FLAGS)
def _tile_loglik(fam, derivs, sp, kt, nt, design, U, work):
    """For draws ``kt:kt+nt`` of block ``sp``: ``work.lfy`` (log f(y|u)), the beta scores
    ``work.G`` and the rows ``w c''`` (``work.cpp``).

    Bernoulli observations with unit weight add ``log(1 + exp(-|eta|))`` to ``-lfy`` as a
    factor of the running products ``pr`` (each factor in [1, 2]; folded into ``lfy``
    every ``FOLD`` such observations and at the end): one ``log`` per draw and ``FOLD``
    observations instead of one per observation and draw.
    """
    o0, o1 = sp.o0, sp.o1
    xb, wy, wn, X = design.xb, design.wy, design.wn, design.X
    zptr, zidx, zval = design.zptr, design.zidx, design.zval
    eta, lfy, rr, G, cpp, pr = work.eta, work.lfy, work.rr, work.G, work.cpp, work.pr
    p = X.shape[1]
    for kk in range(nt):
        lfy[kk] = 0.0
        pr[kk] = 1.0
        work.ga[kk] = 0.0
        work.gaa[kk] = 0.0
        for j in range(p):
            G[j, kk] = 0.0
    n_pr = 0
    for i in range(o0, o1):
        x0 = xb[i]
        for kk in range(nt):
            eta[kk] = x0
        for nz in range(zptr[i], zptr[i + 1]):
            # A row slice: indexing it with the loop counter vectorises, while
            # U[c, kt + kk] pays for numba's negative-index handling.
            urow = U[zidx[nz], kt : kt + nt]
            v = zval[nz]
            for kk in range(nt):
                eta[kk] += v * urow[kk]
        wyi = wy[i]
        wni = wn[i]
        crow = cpp[i - o0]
        if fam == 0 and wni == 1.0:
            for kk in range(nt):
                e = eta[kk]
                tt = fexp(-abs(e))
                opt = 1.0 + tt
                inv = 1.0 / opt
                pr[kk] *= opt
                lfy[kk] += wyi * e - max(e, 0.0)
                rr[kk] = wyi - (inv if e >= 0.0 else tt * inv)
                crow[kk] = tt * inv * inv
            n_pr += 1
            if n_pr == FOLD:
                _fold(nt, lfy, pr)
                n_pr = 0
        elif fam == 0:
            for kk in range(nt):
                e = eta[kk]
                tt = fexp(-abs(e))
                inv = 1.0 / (1.0 + tt)
                cum = max(e, 0.0) + flog1p_unit(tt)
                mu = inv if e >= 0.0 else tt * inv
                lfy[kk] += wyi * e - wni * cum
                rr[kk] = wyi - wni * mu
                crow[kk] = wni * tt * inv * inv
        elif fam == 2:
            _nb_obs(nt, wyi, wni, design.fpar[0], derivs, work, crow, i - o0)
        elif fam >= 10:
            _link_rows(fam, nt, eta, wyi, wni, lfy, rr, crow)
        else:
            for kk in range(nt):
                e = eta[kk]
                mu = fexp(min(e, POISSON_ETA_MAX))
                lfy[kk] += wyi * e - wni * mu
                rr[kk] = wyi - wni * mu
                crow[kk] = wni * mu
        if derivs:
            for j in range(p):
                xij = X[i, j]
                grow = G[j]
                for kk in range(nt):
                    grow[kk] += rr[kk] * xij
    if n_pr:
        _fold(nt, lfy, pr)


@numba.njit(**dict(_FLAGS, inline="always"))
def _link_rows(code, nt, eta, wyi, wni, lfy, rr, crow):
    """A non-canonical link's observation (:mod:`glmm_sm.mcla.kernels.links`): ``lfy`` gets
    its log-density, ``rr`` its derivative in ``eta`` and ``crow`` minus its second
    derivative (in place of ``w c''``), for each draw of the tile."""
    for kk in range(nt):
        ll, r, h = link_obs_terms(code, eta[kk], wyi, wni)
        lfy[kk] += ll
        rr[kk] = r
        crow[kk] = h


@numba.njit(**_FLAGS)
def _fold(nt, lfy, pr):
    """``lfy -= log(pr)``, and the products restart."""
    for kk in range(nt):
        lfy[kk] -= math.log(pr[kk])
        pr[kk] = 1.0


@numba.njit(inline="always", **_FLAGS)
def _nb_fg_series(x):
    """Below ``x = 0.01``: ``f = log(1 + x) - x / (1 + x)`` and
    ``g = x^2 / (1 + x)^2 - 2 f`` by their power series
    (:func:`glmm_sm.spec.families.nb_draw_terms`)."""
    f = 0.0
    for k in range(9, 1, -1):
        f = (f + (-1.0) ** k * (k - 1) / k) * x
    g = 0.0
    for k in range(11, 2, -1):
        g = (g + (-1.0) ** k * (k - 1) * (k - 2) / k) * x
    return f * x, g * x * x


@numba.njit(**_FLAGS)
def _nb_obs(nt, wyi, wni, alpha, derivs, work, crow, r):
    """One negative binomial observation (row ``r`` of the block) for the tile's draws:
    adds ``wy eta - (wy + wn / alpha) log(1 + alpha mu)`` to ``lfy`` and, with ``derivs``,
    sets its residual ``rr`` and observed ``-d2/d eta2`` (``crow``) and ``d2/d eta d alpha``
    (``work.cpa[r]``) and adds its ``d/d alpha`` and ``d2/d alpha2`` to ``work.ga`` and
    ``work.gaa`` (the formulas of :func:`glmm_sm.spec.families.nb_draw_terms`)."""
    eta, lfy, rr, ga, gaa = work.eta, work.lfy, work.rr, work.ga, work.gaa
    th = 1.0 / alpha
    la = math.log(alpha)
    # With z = eta + log(alpha) and t = exp(-|z|) (in (0, 1]): log(1 + alpha mu) is the
    # softplus max(z, 0) + log1p(t), p = x / (1 + x) = expit(z) and mu / (1 + x) = p / alpha,
    # so one exp, one log1p on [0, 1] and one division serve every term.
    if not derivs:
        for kk in range(nt):
            e = eta[kk]
            z = e + la
            t = fexp(-abs(z))
            lfy[kk] += wyi * e - (wyi + wni * th) * (max(z, 0.0) + flog1p_unit(t))
        return
    arow = work.cpa[r]
    for kk in range(nt):
        e = eta[kk]
        z = e + la
        t = fexp(-abs(z))
        inv = 1.0 / (1.0 + t)
        p = inv if z >= 0.0 else t * inv  # x / (1 + x), x = alpha mu
        q = 1.0 - p if z >= 0.0 else inv  # 1 / (1 + x)
        lg = max(z, 0.0) + flog1p_unit(t)
        pa = p * th  # mu / (1 + x)
        lfy[kk] += wyi * e - (wyi + wni * th) * lg
        res = wyi * q - wni * pa  # (wy - wn mu) / (1 + x)
        rr[kk] = res
        crow[kk] = (wni + alpha * wyi) * pa * q
        arow[kk] = -res * pa
        # f, g by their series where x = t < NB_SERIES_X (then z < 0), else closed forms
        fs, gs = _nb_fg_series(t)
        small = z < 0.0 and t < NB_SERIES_X
        f = fs if small else lg - p
        g = gs if small else p * p - 2.0 * f
        ga[kk] += wni * f * th * th - wyi * pa
        gaa[kk] += wni * g * th * th * th + wyi * pa * pa


@numba.njit(**_FLAGS)
def _rescale(sp, sc, out):
    """Multiply block ``sp``'s running sums by ``sc`` (``sc**2`` for the squared ones).

    ``sc = 0`` sets them to zero whatever they held.
    """
    b, o0, o1, c0, c1 = sp.b, sp.o0, sp.o1, sp.c0, sp.c1
    out_s1, out_s1sq, out_s2, out_s2sq = out.s1, out.s1sq, out.s2, out.s2sq
    out_sS, out_hc, out_sU, out_sUU = out.sS, out.hc, out.sU, out.sUU
    sc2 = sc * sc
    d = out_s1.shape[1]
    for j in range(d):
        out_s1[b, j] = out_s1[b, j] * sc if sc != 0.0 else 0.0
        out_s1sq[b, j] = out_s1sq[b, j] * sc2 if sc != 0.0 else 0.0
        for l in range(d):
            out_s2[b, j, l] = out_s2[b, j, l] * sc if sc != 0.0 else 0.0
            out_s2sq[b, j, l] = out_s2sq[b, j, l] * sc2 if sc != 0.0 else 0.0
    for t in range(out_sS.shape[1]):
        out_sS[b, t] = out_sS[b, t] * sc if sc != 0.0 else 0.0
    for i in range(o0, o1):
        out_hc[i] = out_hc[i] * sc if sc != 0.0 else 0.0
    for j in range(c0, c1):
        out_sU[j] = out_sU[j] * sc if sc != 0.0 else 0.0
    if out_sUU.shape[0]:
        for j in range(c0, c1):
            out_sUU[j] = out_sUU[j] * sc if sc != 0.0 else 0.0
    if out.saa.shape[0]:  # negative binomial
        out.saa[b] = out.saa[b] * sc if sc != 0.0 else 0.0
        for i in range(o0, o1):
            out.hca[i] = out.hca[i] * sc if sc != 0.0 else 0.0


@numba.njit(**_ACC_FLAGS)
def _accumulate(sp, kt, nt, k0, work, draws, prior, shifted, Gp, out):
    """Add the tile's weighted scores, outer products, ``S`` and ``c''`` sums to block ``sp``.

    With ``shifted`` draws, ``Gp[b, :, k - k0]`` (the prior's part of the beta score) is added
    to each draw's beta score, and ``out.sU`` gets the weighted sums of the block's effects.
    """
    b, o0, o1, c0, c1 = sp.b, sp.o0, sp.o1, sp.c0, sp.c1
    ew, G, cpp, gk = work.ew, work.G, work.cpp, work.gk
    S, U, nu, qbt = draws.S, draws.U, prior.nu, prior.qbt
    nc = prior.pc.shape[0]
    out_s1, out_s1sq, out_s2, out_s2sq = out.s1, out.s1sq, out.s2, out.s2sq
    out_sS, out_hc, out_sU = out.sS, out.hc, out.sU
    p = G.shape[0]
    T = nu.shape[0]
    d = out_s1.shape[1]  # p + T + nc, and alpha last for the negative binomial
    for kk in range(nt):
        w = ew[kk]
        if w == 0.0:
            continue
        k = kt + kk
        w2 = w * w
        for j in range(p):
            gk[j] = G[j, kk]
        if shifted:
            for j in range(p):
                gk[j] += Gp[b, j, k - k0]
        for t in range(T):
            sk = S[b, t, k]
            gk[p + t] = (sk / nu[t] - qbt[b, t]) / (2.0 * nu[t])
            out_sS[b, t] += w * sk
        for c in range(T, T + nc):  # cross sums of correlated terms, as they are
            sk = S[b, c, k]
            gk[p + c] = sk
            out_sS[b, c] += w * sk
        if d > p + T + nc:
            gk[p + T + nc] = work.ga[kk]
        for j in range(d):
            out_s1[b, j] += w * gk[j]
            out_s1sq[b, j] += w2 * gk[j]
            wj = w * gk[j]
            w2j = w2 * gk[j]
            for l in range(d):
                out_s2[b, j, l] += wj * gk[l]
                out_s2sq[b, j, l] += w2j * gk[l]
    for i in range(o0, o1):
        acc = 0.0
        crow = cpp[i - o0]
        for kk in range(nt):
            acc += ew[kk] * crow[kk]
        out_hc[i] += acc
    if shifted:
        for j in range(c0, c1):
            acc = 0.0
            urow = U[j, kt : kt + nt]
            for kk in range(nt):
                acc += ew[kk] * urow[kk]
            out_sU[j] += acc


@numba.njit(**_ACC_FLAGS)
def _accumulate_nb(sp, nt, work, out):
    """Negative binomial: add the tile's weighted ``d2 log f / d eta d alpha`` per
    observation (``out.hca``) and ``d2 log f / d alpha2`` (``out.saa``) to block ``sp``."""
    ew, cpa, gaa = work.ew, work.cpa, work.gaa
    acc = 0.0
    for kk in range(nt):
        acc += ew[kk] * gaa[kk]
    out.saa[sp.b] += acc
    for i in range(sp.o0, sp.o1):
        acc = 0.0
        arow = cpa[i - sp.o0]
        for kk in range(nt):
            acc += ew[kk] * arow[kk]
        out.hca[i] += acc


@numba.njit(**_FLAGS)
def _tile_log_weights(b, kt, nt, const, draws, prior, work):
    """Log weights ``work.base[kk]`` of draws ``kt + kk`` of block ``b`` (``work.lfy`` the
    data part, ``const`` the prior's normalizing part); returns their maximum."""
    S, logf, nu, pc = draws.S, draws.logf, prior.nu, prior.pc
    lfy, base = work.lfy, work.base
    T = nu.shape[0]
    tmax = -np.inf
    for kk in range(nt):
        k = kt + kk
        lfu = const
        for t in range(T):
            lfu -= 0.5 * S[b, t, k] / nu[t]
        for c in range(pc.shape[0]):
            lfu -= S[b, T + c, k] * pc[c]
        base[kk] = lfy[kk] + lfu - logf[b, k]
        tmax = max(tmax, base[kk])
    return tmax


@numba.njit(**_ACC_FLAGS)
def _moments(sp, kt, nt, ew, U, out):
    """Weighted sums of the block's effects and of their squares over the tile."""
    out_sU, out_sUU = out.sU, out.sUU
    for j in range(sp.c0, sp.c1):
        acc = 0.0
        acc2 = 0.0
        urow = U[j, kt : kt + nt]
        for kk in range(nt):
            acc += ew[kk] * urow[kk]
            acc2 += ew[kk] * urow[kk] * urow[kk]
        out_sU[j] += acc
        out_sUU[j] += acc2


@numba.njit(**_FLAGS)
def _work(obs_ptr, p, n_s, nf):
    """The kernel's per-tile work arrays (``nf``: the family's own parameters)."""
    max_nb = 0
    for b in range(obs_ptr.shape[0] - 1):
        max_nb = max(max_nb, obs_ptr[b + 1] - obs_ptr[b])
    return Work(np.empty(TILE), np.empty(TILE), np.empty(TILE), np.empty(TILE),
                np.empty(TILE), np.empty((p, TILE)), np.empty((max_nb, TILE)),
                np.empty(p + n_s + nf), np.empty(TILE), np.empty(TILE), np.empty(TILE),
                np.empty((max_nb if nf else 0, TILE)))


@numba.njit(**_FLAGS)
def chunk_sums(fam, derivs, design, draws, k0, k1, prior, shifted, Gp, out):
    """Partial sums of every block over draws ``k0:k1`` of ``U``, written into ``out``.

    Parameters
    ----------
    fam : int
        0 binomial (Bernoulli), 1 Poisson, 2 negative binomial (NB2; ``design.fpar`` is
        ``[alpha]``, the last score component is ``d/d alpha`` and ``out.hca``/``out.saa``
        get its second-derivative sums), or a non-canonical binomial link's code
        (:data:`glmm_sm.spec.families.LINK_CODES`: 10 probit, 11 cloglog).
    derivs : bool
        Also the score and Hessian sums (else only ``a``, ``s0``, ``s0sq``).
    design : Design
        Block pointers, ``X beta + offset``, weighted responses and trials, the
        fixed-effects design and ``Z`` as CSR (:mod:`glmm_sm.mcla.kernels.records`).
    draws : Draws
        The draws (effects x draws), their log importance densities and sums of squares
        (cross sums after the ``T`` components for correlated terms); with a non-empty
        ``kend``, block ``b`` sums draws ``k0:min(k1, kend[b])`` only (its log weights
        beyond, when kept, are ``-inf``).
    prior : Prior
        Each component's (kernel) variance and its log, the cross sums' coefficients
        (:mod:`glmm_sm.spec.covstruct`; empty without correlated terms), and the columns per
        block and component.
    shifted : bool
        The draws move with the fixed effects (see :mod:`glmm_sm.mcla.engine`); ``X`` is then the
        shifted design ``X + Z M``, ``Gp[b, :, k - k0]`` is added to draw ``k``'s beta score
        in block ``b``, and ``sU[j]`` sums the weighted draws of effect ``j``.  Otherwise
        ``Gp`` is not used.
    out : Sums
        Written for every block.  With a non-empty ``sUU`` the weighted sums of every effect
        and of its square go to ``sU`` and ``sUU`` (conditional moments); with a non-empty
        ``lw`` (n_blocks, k1 - k0) the draws' log weights are stored there.
    """
    obs_ptr, col_ptr = design.obs_ptr, design.col_ptr
    lognu, nu, qbt = prior.lognu, prior.nu, prior.qbt
    n_blocks = obs_ptr.shape[0] - 1
    work = _work(obs_ptr, design.X.shape[1], nu.shape[0] + prior.pc.shape[0],
                 design.fpar.shape[0])
    base, ew = work.base, work.ew
    moments = out.sUU.shape[0] > 0
    keep_lw = out.lw.shape[1] > 0
    kend = draws.kend
    per_block = kend.shape[0] > 0
    for b in range(n_blocks):
        sp = Span(b, obs_ptr[b], obs_ptr[b + 1], col_ptr[b], col_ptr[b + 1])
        kb = k1  # this block's draws end here (per-block draw counts: draws.kend)
        if per_block:
            kb = min(k1, max(k0, kend[b]))
            if keep_lw:
                for k in range(kb, k1):
                    out.lw[b, k - k0] = -np.inf
        const = -HALF_LOG2PI * (sp.c1 - sp.c0)
        for t in range(nu.shape[0]):
            const -= 0.5 * qbt[b, t] * lognu[t]
        a = -np.inf
        s0 = 0.0
        s0sq = 0.0
        _rescale(sp, 0.0, out)
        for kt in range(k0, kb, TILE):
            nt = min(TILE, kb - kt)
            _tile_loglik(fam, derivs, sp, kt, nt, design, draws.U, work)
            tmax = _tile_log_weights(b, kt, nt, const, draws, prior, work)
            if keep_lw:
                for kk in range(nt):
                    out.lw[b, kt + kk - k0] = base[kk]
            if not tmax > -np.inf:
                continue
            if tmax > a:
                if a > -np.inf:
                    sc = math.exp(a - tmax)
                    s0 *= sc
                    s0sq *= sc * sc
                    _rescale(sp, sc, out)
                a = tmax
            for kk in range(nt):
                w = math.exp(base[kk] - a)
                ew[kk] = w
                s0 += w
                s0sq += w * w
            if derivs:
                _accumulate(sp, kt, nt, k0, work, draws, prior, shifted, Gp, out)
                if fam == 2:
                    _accumulate_nb(sp, nt, work, out)
            if moments:
                _moments(sp, kt, nt, ew, draws.U, out)
        out.a[b] = a
        out.s0[b] = s0
        out.s0sq[b] = s0sq


@numba.njit(**_FLAGS)
def block_xhx(obs_ptr, X, h, out):
    """``out[b] += X_b' diag(h_b) X_b`` for the observations ``obs_ptr[b]:obs_ptr[b+1]``."""
    p = X.shape[1]
    for b in range(obs_ptr.shape[0] - 1):
        for i in range(obs_ptr[b], obs_ptr[b + 1]):
            hi = h[i]
            for j in range(p):
                xij = hi * X[i, j]
                for k in range(p):
                    out[b, j, k] += xij * X[i, k]
