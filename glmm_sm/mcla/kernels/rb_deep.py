"""The leaf level of a nesting tree's nested rule (:mod:`glmm_sm.mcla.rb.deep`).

For each leaf ``u`` (a pupil) and each path ``pi`` of nodes of its ancestors (a school's
node, then its class's node given it, ...), the leaf's ``K`` nodes ``a_k`` are summed:

    I_u(pi) = sum_k exp(lw_uk + log phi(a_k; nu) + sum_{r in u} l_r(e0_r(pi) + z_r a_k)),

``e0_r(pi)`` the observation's linear predictor without the leaf.  With derivatives, the
score and (unless only the score is asked for) the Hessian in ``theta = (beta, nu)`` of
``log I_u(pi)`` at the fixed nodes (Louis' identity over the leaf's nodes: ``g = sum_k v_k
G_k``, ``H = sum_k v_k (H_k + (G_k - g) (G_k - g)')``, ``v_k`` the nodes' posterior
weights; the scores' covariance about their mean, which ``sum_k v_k G_k G_k' - g g'``
loses in cancellation where the scores are large).  This is the one pass over every
observation at every full path of nodes (``n x K_1 x ... x K_D`` terms); the levels above
work on sums per unit (:func:`parent_level`, one pass per level over its units and paths).

The kernels are compiled with the ``fastmath`` flags of the Rao-Blackwellized kernel
(:mod:`glmm_sm.mcla.kernels.rb`: contraction into fused multiply-adds among them), which
change the last bits of the sums, not their accuracy.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from glmm_sm.core.constants import HALF_LOG2PI, POISSON_ETA_MAX
from glmm_sm.mcla.kernels.fastmath import fexp, flog1p_unit, flog_ge1, frecip_unit
from glmm_sm.mcla.kernels.rb import _obs_terms

__all__ = ["LeafRows", "LeafRule", "LeafOut", "leaf_level", "LevelRule", "LevelSums",
           "parent_level", "packed_pairs",
           "SPLIT_MAX"]

_FLAGS = dict(cache=True, nogil=True, error_model="numpy",
              fastmath={"nsz", "arcp", "contract", "afn"})
# the per-observation step is inlined into the leaf loop (a call per observation would pass
# every array it reads)
_INLINE = dict(_FLAGS, inline="always")


class LeafRows(NamedTuple):
    """The observations of a chunk of leaves, sorted by leaf.

    ``ptr`` (n_leaf + 1): each leaf's rows; ``e0`` (rows, P): linear predictors without the
    leaf at each path of the ancestors' nodes; ``z`` (rows,): the coefficient on the leaf;
    ``wy``, ``wn``, ``X`` as the layout's."""

    ptr: np.ndarray
    e0: np.ndarray
    z: np.ndarray
    wy: np.ndarray
    wn: np.ndarray
    X: np.ndarray


class LeafRule(NamedTuple):
    """``lw`` (n_leaf, K): log node weights; ``nu``, ``t``: the leaves' variance and its
    index among the variances; ``centre`` (n_leaf, P), ``scale`` (n_leaf,) and ``z`` (K,):
    the nodes, ``a_k(pi) = centre[u, pi] + scale[u] z[k]`` for leaf ``u`` at path ``pi``
    (formed in the kernel, the same operations as the sampler's ``nodes``: the same
    numbers), a form the logit and log links' terms also use to take one ``exp`` per
    observation and path (``_split_terms``)."""

    lw: np.ndarray
    nu: float
    t: int
    centre: np.ndarray
    scale: np.ndarray
    z: np.ndarray


class LeafOut(NamedTuple):
    """``val`` (n_leaf, P); the score and Hessian in the coordinates a leaf's terms involve,
    ``beta`` and the leaves' variance (``e = p + 1`` of them, the variance last), paths
    fastest: ``g`` (n_leaf, e, P) and ``H`` (n_leaf, e (e + 1) / 2, P), the lower triangle
    packed by rows (entry ``(i, j)``, ``j <= i``, at ``i (i + 1) / 2 + j``:
    :func:`packed_pairs`), or empty without derivatives (``H`` also without the Hessian);
    ``cw`` (n_leaf, P * K): the nodes' posterior weights given the path, or empty."""

    val: np.ndarray
    g: np.ndarray
    H: np.ndarray
    cw: np.ndarray


@numba.njit(**_INLINE)
def _logit_terms(eta, tt, wyi, wni):
    """The logit link's ``(l, residual, -d2 l / d eta2)`` of one observation at ``eta``
    from ``tt = exp(-|eta|)`` (however the caller formed it)."""
    inv = frecip_unit(1.0 + tt)
    cum = max(eta, 0.0) + flog1p_unit(tt)
    mu = inv if eta >= 0.0 else tt * inv
    return wyi * eta - wni * cum, wyi - wni * mu, wni * tt * inv * inv


@numba.njit(**_INLINE)
def _path_terms(fam, e0r, zr, wyi, wni, a, Fk, Rk, Ck):
    """One observation at one node of its leaf at every path: ``eta = e0r[pi] + zr a[pi]``,
    ``Fk[pi] += l(eta)`` and ``Rk[pi], Ck[pi]`` its residual and ``-d2 l / d eta2``
    (:func:`_obs_terms`'s formulas, written out per family so that the loop over the paths
    vectorises)."""
    P = a.shape[0]
    if fam == 0:
        for pi in range(P):
            eta = e0r[pi] + zr * a[pi]
            ll, rr, cc = _logit_terms(eta, fexp(-abs(eta)), wyi, wni)
            Fk[pi] += ll
            Rk[pi] = rr
            Ck[pi] = cc
    elif fam == 1:
        for pi in range(P):
            eta = e0r[pi] + zr * a[pi]
            mu = fexp(min(eta, POISSON_ETA_MAX))
            Fk[pi] += wyi * eta - wni * mu
            Rk[pi] = wyi - wni * mu
            Ck[pi] = wni * mu
    else:
        for pi in range(P):
            ll, rr, cc = _obs_terms(fam, e0r[pi] + zr * a[pi], wyi, wni)
            Fk[pi] += ll
            Rk[pi] = rr
            Ck[pi] = cc


#: Largest ``|c| + |b|`` for which :func:`_split_terms` takes ``exp(c + b)`` as
#: ``exp(c) exp(b)``: both factors and the product stay in the normal range of a float64
#: (``exp(-690)`` is 1.7e-300), and below ``POISSON_ETA_MAX``, so that the log link's
#: cap never applies on that route.
SPLIT_MAX = POISSON_ETA_MAX


@numba.njit(**_INLINE)
def _split_logit_product(cr, bk, ex, wyi, Fk, Qk, Rk, Ck):
    """:func:`_split_terms`' logit branch for a row of weight 1 (``wn = 1``, a Bernoulli
    answer): ``l = y eta - max(eta, 0) - log(1 + exp(-|eta|))`` with the first terms added
    to ``Fk[pi]`` and ``1 + exp(-|eta|)`` (the factor :func:`frecip_unit` inverts for the
    residual) multiplied into ``Qk[pi]``, whose log the caller takes once for all the
    leaf's rows (each factor in [1, 2]; :data:`PRODUCT_ROWS` rows at most per log)
    instead of one log per row, path and node."""
    P = cr.shape[0]
    bp = math.exp(bk)
    bm = math.exp(-bk)
    ep, em = ex[0], ex[1]
    for pi in range(P):
        eta = cr[pi] + bk
        tt = em[pi] * bm if eta >= 0.0 else ep[pi] * bp
        onep = 1.0 + tt
        inv = frecip_unit(onep)
        Fk[pi] += wyi * eta - max(eta, 0.0)
        Qk[pi] *= onep
        Rk[pi] = wyi - (inv if eta >= 0.0 else tt * inv)
        Ck[pi] = tt * inv * inv


#: Most rows whose factors ``1 + exp(-|eta|)`` (each at most 2) one product takes before
#: its log is added (:func:`leaf_level`, the logit link's rows of weight 1): the product
#: stays below ``2**1000``.
PRODUCT_ROWS = 1000


@numba.njit(**_INLINE)
def _split_terms(fam, cr, bk, ex, wyi, wni, Fk, Rk, Ck):
    """:func:`_path_terms` for the logit (``fam`` 0) and log (1) links with the linear
    predictor split as ``eta = cr[pi] + bk`` (``cr``: the row's predictor at the centre of
    the leaf's nodes at each path; ``bk``: the node's offset from it, the same at every
    path), the exponentials taken as ``exp(+-cr[pi])`` (``ex[0]``, ``ex[1]``, once per row
    and path) times ``exp(+-bk)`` (once per row and node) instead of one ``exp`` per row,
    path and node.  The caller checks ``|cr| + |bk| <=`` :data:`SPLIT_MAX`."""
    P = cr.shape[0]
    bp = math.exp(bk)
    bm = math.exp(-bk)
    ep, em = ex[0], ex[1]
    if fam == 0:
        for pi in range(P):
            eta = cr[pi] + bk
            # exp(-|eta|) from the factors
            ll, rr, cc = _logit_terms(eta, em[pi] * bm if eta >= 0.0 else ep[pi] * bp,
                                      wyi, wni)
            Fk[pi] += ll
            Rk[pi] = rr
            Ck[pi] = cc
    else:
        for pi in range(P):
            eta = cr[pi] + bk
            mu = ep[pi] * bp
            Fk[pi] += wyi * eta - wni * mu
            Rk[pi] = wyi - wni * mu
            Ck[pi] = wni * mu


@numba.njit(**_INLINE)
def _add_log_product(Fk, Qk):
    """``Fk -= log(Qk)``, the rows' factors of :func:`_split_logit_product`."""
    K, P = Fk.shape
    for k in range(K):
        for pi in range(P):
            Fk[k, pi] -= flog_ge1(Qk[k, pi])


@numba.njit(**_FLAGS)
def leaf_level(fam, rows, rule, out, derivs, hessian=True):
    """Fill ``out`` (:class:`LeafOut`) for every leaf and path; see the module docstring.
    ``fam``: the family's kernel code; ``derivs``: the score as well, and with ``hessian``
    the Hessian (without it, ``out.H`` is not touched and the score takes the same
    operations, in the same order: the same bits).

    A node's complete-data score involves ``beta`` and the leaves' variance only: the sums
    run over those ``p + 1`` coordinates (index ``p`` stands for the variance).  For each
    leaf the work arrays hold every node at every path, the paths fastest (``Fk[k, pi]``,
    ``Gk[i, k, pi]``, ``Hk[i, j, k, pi]``), and every loop runs over the ``P`` paths: a leaf
    has few observations and ``K`` is small, so a loop over the nodes (8 of them) is too
    short to vectorise, where one over the paths (``P = K_1 x ... x K_{D-1}``, 96 at the
    default rule) is not.  Each node's sums take the observations in the same order, with
    the same operations, as one loop per node and path would, except that the logit link's
    rows of weight 1 add ``log(1 + exp(-|eta|))`` as one log of their factors' product per
    leaf, node and path (:data:`PRODUCT_ROWS` rows at most per log)."""
    n_leaf, P = out.val.shape
    K = rule.lw.shape[1]
    p = rows.X.shape[1]
    nu = rule.nu
    inu = 1.0 / nu
    e = p + 1 if derivs else 0
    eh = e if hessian else 0
    Fk = np.empty((K, P))
    Qk = np.empty((K, P))
    A = np.empty((K, P))
    Rk = np.empty(P)
    Ck = np.empty(P)
    Gk = np.zeros((e, K, P))
    Hk = np.zeros((eh, eh, K, P))
    g = np.zeros((e, P))
    mx = np.empty(P)
    tot = np.empty(P)
    cr = np.empty(P)
    ex = np.empty((2, P))
    zmax = 0.0
    for k in range(K):
        zmax = max(zmax, abs(rule.z[k]))
    const = -HALF_LOG2PI - 0.5 * math.log(nu)
    want_w = out.cw.shape[0] > 0
    for u in range(n_leaf):
        r0, r1 = rows.ptr[u], rows.ptr[u + 1]
        su = rule.scale[u]
        cu = rule.centre[u]
        for k in range(K):
            # the leaf's node k at every path
            a = A[k]
            szk = su * rule.z[k]
            for pi in range(P):
                a[pi] = cu[pi] + szk
            lwk = rule.lw[u, k] + const
            F = Fk[k]
            for pi in range(P):
                F[pi] = lwk - 0.5 * a[pi] * a[pi] * inu
            if derivs:
                for i in range(p):
                    Gk[i, k, :] = 0.0
                    for j in range(i + 1 if eh else 0):
                        Hk[i, j, k, :] = 0.0
                Gp = Gk[p, k]
                for pi in range(P):
                    ak = a[pi]
                    Gp[pi] = -0.5 * inu + 0.5 * ak * ak * inu * inu
                if eh:
                    Hp = Hk[p, p, k]
                    for pi in range(P):
                        ak = a[pi]
                        Hp[pi] = 0.5 * inu * inu - ak * ak * inu * inu * inu
        n_prod = 0  # rows whose factors are in Qk
        for r in range(r0, r1):
            e0r = rows.e0[r]
            zr, wyi, wni = rows.z[r], rows.wy[r], rows.wn[r]
            split = fam == 0 or fam == 1
            if split:
                cmax = 0.0
                for pi in range(P):
                    c = e0r[pi] + zr * cu[pi]
                    cr[pi] = c
                    cmax = max(cmax, abs(c))
                split = cmax + abs(zr * su) * zmax <= SPLIT_MAX
            if split:
                for pi in range(P):
                    ex[0, pi] = fexp(cr[pi])
                    ex[1, pi] = fexp(-cr[pi])
            product = split and fam == 0 and wni == 1.0
            if product and n_prod == PRODUCT_ROWS:
                _add_log_product(Fk, Qk)
                n_prod = 0
            if product and n_prod == 0:
                Qk[:] = 1.0
            n_prod += product
            for k in range(K):
                if product:
                    _split_logit_product(cr, zr * su * rule.z[k], ex, wyi, Fk[k], Qk[k],
                                         Rk, Ck)
                elif split:
                    _split_terms(fam, cr, zr * su * rule.z[k], ex, wyi, wni, Fk[k], Rk, Ck)
                else:
                    _path_terms(fam, e0r, zr, wyi, wni, A[k], Fk[k], Rk, Ck)
                if derivs:
                    for i in range(p):
                        xi = rows.X[r, i]
                        Gi = Gk[i, k]
                        for pi in range(P):
                            Gi[pi] += Rk[pi] * xi
                        for j in range(i + 1 if eh else 0):
                            xj = rows.X[r, j]
                            Hij = Hk[i, j, k]
                            for pi in range(P):
                                Hij[pi] -= Ck[pi] * xi * xj
        if n_prod:
            _add_log_product(Fk, Qk)
        # the nodes' log-sum per path; Fk becomes the posterior weights
        for pi in range(P):
            mx[pi] = Fk[0, pi]
        for k in range(1, K):
            for pi in range(P):
                mx[pi] = max(mx[pi], Fk[k, pi])
        tot[:] = 0.0
        for k in range(K):
            for pi in range(P):
                Fk[k, pi] = fexp(Fk[k, pi] - mx[pi])
                tot[pi] += Fk[k, pi]
        for pi in range(P):
            out.val[u, pi] = mx[pi] + math.log(tot[pi])
        for k in range(K):
            for pi in range(P):
                Fk[k, pi] /= tot[pi]
        if want_w:
            for pi in range(P):
                for k in range(K):
                    out.cw[u, pi * K + k] = Fk[k, pi]
        if not derivs:
            continue
        for i in range(e):
            gi = g[i]
            gi[:] = 0.0
            for k in range(K):
                for pi in range(P):
                    gi[pi] += Fk[k, pi] * Gk[i, k, pi]
            og = out.g[u, i]
            for pi in range(P):
                og[pi] = gi[pi]
        for i in range(eh):
            for j in range(i + 1):
                # Hk: beta's lower triangle and the variance's diagonal (zero between); the
                # scores' covariance about their mean g (sum_k v_k G_k G_k' - g g' without
                # its cancellation: where one node takes all the weight, exactly 0)
                has_h = i < p or j == p
                tot[:] = 0.0
                for k in range(K):
                    for pi in range(P):
                        h = Hk[i, j, k, pi] if has_h else 0.0
                        tot[pi] += Fk[k, pi] * (h + (Gk[i, k, pi] - g[i, pi])
                                                * (Gk[j, k, pi] - g[j, pi]))
                oh = out.H[u, i * (i + 1) // 2 + j]
                for pi in range(P):
                    oh[pi] = tot[pi]


def packed_pairs(e):
    """The pairs ``(i, j)``, ``j <= i < e``, in the order of :class:`LeafOut`'s packed
    Hessian (by rows)."""
    return [(i, j) for i in range(e) for j in range(i + 1)]



class LevelRule(NamedTuple):
    """A level above the leaves, for :func:`parent_level`: ``a`` (n, P) its effects' nodes
    at every path (the level's node fastest, ``K`` of them per path above it); ``lw`` (n,
    K) the nodes' log weights (``log_node``); ``nu`` its variance and ``pt`` the index of
    that variance in ``theta = (beta, nu)``."""

    a: np.ndarray
    lw: np.ndarray
    nu: float
    pt: int


class LevelSums(NamedTuple):
    """What a level's units get from the level below: per child (a unit of the level
    below; ``ptr[u]:ptr[u + 1]`` the children of unit ``u``, none empty), paths fastest,
    ``val`` (n_c, P); ``g`` (n_c, m_g, P), the scores' entries at coordinates ``gi`` (m_g,)
    of ``theta``; ``H`` (n_c, m_h, P), the Hessians' entries at ``(hi, hj)`` (m_h,) with
    ``hj <= hi`` (each also standing for its mirror).  ``g`` and ``H`` may be empty (no
    derivatives; no Hessian).  :func:`parent_level` sums them over each unit's children,
    the children in order."""

    val: np.ndarray
    g: np.ndarray
    gi: np.ndarray
    H: np.ndarray
    hi: np.ndarray
    hj: np.ndarray
    ptr: np.ndarray


@numba.njit(**_FLAGS)
def parent_level(rule, sums, val, g, H, cw):
    """Integrate a level's effects by its nodes, given the level below's sums
    (:class:`LevelSums`, summed here over each unit's children: ``val``, ``G`` and ``H``
    below) and the level's rule (:class:`LevelRule`): for unit ``u`` and path ``q`` of the
    levels above, with ``f_k = val[u, q K + k] + log phi(a_k; nu) + lw[u, k]``
    at the ``K`` nodes ``a_k``, ``val[u, q] = log sum_k exp(f_k)`` and, with the nodes'
    posterior weights ``v_k`` and complete-data scores and Hessians ``G_k``, ``H_k`` (the
    sums' entries plus the normal prior's terms in ``nu``), Louis' identity: ``g[u, :, q] =
    sum_k v_k G_k`` and ``H[u, :, q] = sum_k v_k (H_k + (G_k - g) (G_k - g)')`` (``sum_k v_k
    (H_k + G_k G_k') - g g'`` without its cancellation), ``H`` packed by rows as
    :class:`LeafOut`'s (over all ``d`` coordinates).

    Outputs: ``val`` (n, Q); ``g`` (n, d, Q) or empty (no derivatives); ``H`` (n, d (d +
    1) / 2, Q) or empty (no Hessian); ``cw`` (n, P): the weights ``v_k``, or empty.  The
    score takes the same operations with or without the Hessian."""
    n, Q = val.shape
    K = rule.lw.shape[1]
    P = Q * K
    nu = rule.nu
    inu = 1.0 / nu
    pt = rule.pt
    derivs = g.shape[0] > 0
    hessian = H.shape[0] > 0
    want_w = cw.shape[0] > 0
    d = g.shape[1] if derivs else 0
    dh = d if hessian else 0
    mg = sums.gi.shape[0] if derivs else 0
    mh = sums.hi.shape[0] if hessian else 0
    const = -HALF_LOG2PI - 0.5 * math.log(nu)
    f = np.empty(K)
    Gk = np.zeros((K, d))
    Hk = np.zeros((K, dh, dh))
    gq = np.empty(d)
    # the unit's sums over its children
    Fu = np.empty(P)
    Gu = np.empty((mg, P))
    Hu = np.empty((mh, P))
    for u in range(n):
        c0, c1 = sums.ptr[u], sums.ptr[u + 1]
        Fu[:] = sums.val[c0]
        for m in range(mg):
            Gu[m] = sums.g[c0, m]
        for m in range(mh):
            Hu[m] = sums.H[c0, m]
        for c in range(c0 + 1, c1):
            vc = sums.val[c]
            for pk in range(P):
                Fu[pk] += vc[pk]
            for m in range(mg):
                gc, gu = sums.g[c, m], Gu[m]
                for pk in range(P):
                    gu[pk] += gc[pk]
            for m in range(mh):
                hc, hu = sums.H[c, m], Hu[m]
                for pk in range(P):
                    hu[pk] += hc[pk]
        for q in range(Q):
            mx = -np.inf
            for k in range(K):
                pk = q * K + k
                ak = rule.a[u, pk]
                f[k] = Fu[pk] + const - 0.5 * ak * ak * inu + rule.lw[u, k]
                mx = max(mx, f[k])
            tot = 0.0
            for k in range(K):
                f[k] = math.exp(f[k] - mx)
                tot += f[k]
            val[u, q] = mx + math.log(tot)
            for k in range(K):
                f[k] /= tot
            if want_w:
                for k in range(K):
                    cw[u, q * K + k] = f[k]
            if not derivs:
                continue
            for k in range(K):
                pk = q * K + k
                ak = rule.a[u, pk]
                for i in range(d):
                    Gk[k, i] = 0.0
                for m in range(mg):
                    Gk[k, sums.gi[m]] = Gu[m, pk]
                Gk[k, pt] += -0.5 * inu + 0.5 * ak * ak * inu * inu
                if hessian:
                    for i in range(d):
                        for j in range(i + 1):
                            Hk[k, i, j] = 0.0
                    for m in range(mh):
                        Hk[k, sums.hi[m], sums.hj[m]] = Hu[m, pk]
                    Hk[k, pt, pt] += 0.5 * inu * inu - ak * ak * inu * inu * inu
            for i in range(d):
                s = 0.0
                for k in range(K):
                    s += f[k] * Gk[k, i]
                gq[i] = s
                g[u, i, q] = s
            if not hessian:
                continue
            for i in range(d):
                for j in range(i + 1):
                    s = 0.0
                    for k in range(K):
                        s += f[k] * (Hk[k, i, j] + (Gk[k, i] - gq[i]) * (Gk[k, j] - gq[j]))
                    H[u, i * (i + 1) // 2 + j, q] = s
