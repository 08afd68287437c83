"""Nested adaptive Gauss-Hermite rules: each integrated level re-centred at every value of
its block's sampled effect.

In a block of a deterministic fit (:class:`~glmm_sm.mcla.rb.split.QuadratureSampler`) the
one sampled effect ``v`` (a community) is put at outer nodes, and each integrated level
``alpha_a`` (a mother of that community) is integrated given ``v``:

    I_a(v) = int phi(alpha; nu_a) prod_{i in a} f(y_i | e0_i + zv_i v + za_i alpha) dalpha.

The linear rule of :mod:`glmm_sm.mcla.kernels.rb` centres ``alpha_a``'s nodes at the joint
Laplace linearization ``m0_a + c_a v``, exact only while ``alpha_a``'s conditional density
stays close to normal as ``v`` moves.  With a large inner variance and few observations per
level (Bernoulli births per mother) the conditional mode moves non-linearly with ``v`` and
the curvature with it, and the linear rule's nodes miss the mass at the outer nodes far from
the centre.  :func:`recentre_levels` puts each level's rule, for each value of ``v``, at
its conditional mode (safeguarded Newton steps on the log integrand, one dimension) and
scales it by the conditional curvature there: the nested adaptive rule.  It also returns
each level's quadrature value and its first two derivatives in ``v`` (the node mean and
variance of the score, Louis' identity), from which the caller finds the outer integral's
mode and curvature.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from glmm_sm.core.constants import HALF_LOG2PI
from glmm_sm.mcla.kernels.rb import _obs_terms

__all__ = ["recentre_levels", "NEWTON_TOL", "NEWTON_MAXITER"]

_FLAGS = dict(cache=True, nogil=True, error_model="numpy")
#: Newton's method on a level's log integrand stops once the step is below this fraction of
#: the level's conditional SD (the rule is valid at any centre: this is accuracy, not
#: correctness).
NEWTON_TOL = 1e-9
NEWTON_MAXITER = 60


@numba.njit(**_FLAGS)
def _log_integrand(fam, lv, a, k, e0, x):
    """``(h, h', -h'')`` at ``alpha = x``: ``h`` the log integrand of level ``a`` given
    column ``k`` of ``e0`` (without its constants)."""
    inu = 1.0 / lv.nu[a]
    h = -0.5 * x * x * inu
    g = -x * inu
    c = inu
    for r in range(lv.lev_ptr[a], lv.lev_ptr[a + 1]):
        z = lv.za[r]
        ll, rr, cc = _obs_terms(fam, e0[r, k] + z * x, lv.wy[r], lv.wn[r])
        h += ll
        g += z * rr
        c += z * z * cc
    return h, g, c


@numba.njit(**_FLAGS)
def _mode(fam, lv, a, k, e0, x):
    """The mode of level ``a``'s log integrand (column ``k``) from ``x`` by Newton steps,
    halved while the log integrand falls, and the curvature there; ``(x, c, ok)``."""
    h, g, c = _log_integrand(fam, lv, a, k, e0, x)
    for _ in range(NEWTON_MAXITER):
        if not (c > 0.0 and math.isfinite(h)):
            return x, c, False
        step = g / c
        if abs(step) <= NEWTON_TOL / math.sqrt(c):
            return x + step, _log_integrand(fam, lv, a, k, e0, x + step)[2], True
        t = 1.0
        for _ in range(60):
            hn, gn, cn = _log_integrand(fam, lv, a, k, e0, x + t * step)
            if hn >= h - 1e-13 * (1.0 + abs(h)):
                break
            t *= 0.5
        else:
            return x, c, True  # no ascent along the Newton direction: at the mode
        x, h, g, c = x + t * step, hn, gn, cn
    return x, c, c > 0.0


@numba.njit(**_FLAGS)
def recentre_levels(fam, lv, e0, xs, logw, centre, scale, out):
    """Re-centre and re-scale every level's rule at every column of ``e0``, and integrate.

    Parameters
    ----------
    fam : int
        The family's kernel code.
    lv : RBLevels
        The integrated levels (:class:`~glmm_sm.mcla.kernels.records.RBLevels`).
    e0 : ndarray (n, K)
        Per integrated observation (``lv.ro`` order) and column ``k`` (a value of the
        sampled effects), the linear predictor without ``alpha``.
    xs, logw : ndarray (J,)
        The standard nodes (``sqrt(2)`` times Gauss-Hermite's) and their log weights
        (``log w + x^2 + log(sqrt 2)``).
    centre, scale : ndarray (L, K)
        In: where Newton's method starts (and the rule kept where it fails).  Out: each
        level's conditional mode and SD (inverse root curvature) given column ``k``.
    out : ndarray (3, L, K)
        Out: ``log I_a``, its derivative in the sampled effect (coefficients ``lv.zv``) and
        its second derivative, by the re-centred rule.

    Returns
    -------
    int
        The number of (level, column) pairs where Newton's method failed (a log integrand
        not concave there); their rule stays as given.
    """
    L, K = centre.shape
    J = xs.shape[0]
    lq = np.empty(J)
    sv = np.empty(J)
    sh = np.empty(J)
    failed = 0
    for a in range(L):
        o0, o1 = lv.lev_ptr[a], lv.lev_ptr[a + 1]
        nu = lv.nu[a]
        base0 = -HALF_LOG2PI - 0.5 * math.log(nu)
        for k in range(K):
            x, c, ok = _mode(fam, lv, a, k, e0, centre[a, k])
            if ok and c > 0.0 and math.isfinite(x):
                centre[a, k] = x
                scale[a, k] = 1.0 / math.sqrt(c)
            else:
                failed += 1
            m, s = centre[a, k], scale[a, k]
            base = base0 + math.log(s)
            mx = -np.inf
            for j in range(J):
                al = m + s * xs[j]
                q = logw[j] + base - 0.5 * al * al / nu
                g1 = 0.0
                g2 = 0.0
                for r in range(o0, o1):
                    ll, rr, cc = _obs_terms(fam, e0[r, k] + lv.za[r] * al, lv.wy[r], lv.wn[r])
                    q += ll
                    zv = lv.zv[r]
                    g1 += zv * rr
                    g2 += zv * zv * cc
                lq[j] = q
                sv[j] = g1
                sh[j] = g2
                mx = max(mx, q)
            tot = 0.0
            for j in range(J):
                lq[j] = math.exp(lq[j] - mx)
                tot += lq[j]
            d1 = 0.0
            d2 = 0.0
            for j in range(J):
                w = lq[j] / tot
                d1 += w * sv[j]
                d2 += w * (sv[j] * sv[j] - sh[j])
            out[0, a, k] = mx + math.log(tot)
            out[1, a, k] = d1
            out[2, a, k] = d2 - d1 * d1
    return failed
