"""How heavy the tail of the importance weights is: the Pareto k of PSIS.

An importance-sampling estimate and its Monte Carlo standard error are trustworthy only if the
weights have a finite variance.  Vehtari, Simpson, Gelman, Yao and Gabry (2024, "Pareto
smoothed importance sampling", JMLR) estimate the tail from the ``M`` largest weights: the
exceedances over the ``(M + 1)``-th largest are fitted by a generalized Pareto distribution
(GPD) with density ``(1 / sigma) (1 + k x / sigma)^(-1/k - 1)``, and its shape ``k`` says how
many moments the weights have (``1 / k``).  Their guidance, used here:

* ``k < 0.5``: finite variance; the central limit theorem and the MCSE hold;
* ``0.5 <= k < 0.7`` (more precisely below ``min(1 - 1 / log10(S), 0.7)`` for ``S`` draws):
  the variance is infinite but the estimate converges fast enough to be usable, and the
  MCSE is optimistic;
* above: the estimate may be far off and its MCSE means nothing.

The shape is estimated as Zhang and Stephens (2009) propose: with ``b = -k / sigma`` the
likelihood maximized over ``k`` for fixed ``b`` gives ``k(b) = mean(log(1 - b x))`` and the
profile log-likelihood ``n (log(-b / k(b)) - k(b) - 1)``; ``b`` is averaged over a grid of
``30 + sqrt(n)`` values under those likelihood weights, and ``k`` then shrunk toward 0.5 by a
weak prior worth 10 observations, as in PSIS.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.special import logsumexp

__all__ = ["pareto_k", "pareto_k_threshold", "tail_size", "block_pareto_k", "EVEN_WEIGHTS",
           "checked_pareto_k"]

#: Numbers a temporary of :func:`block_pareto_k` holds at most (8 MB): the weights of a
#: draw chunk are taken a few blocks at a time.
TAIL_SLICE = 2**20

#: Blocks whose largest importance weight is at most this multiple of the mean weight are
#: not given a Pareto k (see :func:`block_pareto_k`).
EVEN_WEIGHTS = 2.0


def tail_size(S):
    """Number of largest weights PSIS fits: ``ceil(min(S / 5, 3 sqrt(S)))``."""
    return int(math.ceil(min(S / 5.0, 3.0 * math.sqrt(S))))


def pareto_k_threshold(S):
    """Largest ``k`` for which ``S`` draws give a usable estimate: ``min(1 - 1/log10 S, 0.7)``."""
    if S <= 10:
        return 0.0
    return min(1.0 - 1.0 / math.log10(S), 0.7)


def pareto_k(log_weights):
    """Pareto ``k`` of the upper tail of ``exp(log_weights)``.

    Parameters
    ----------
    log_weights : array_like (S,)
        Log importance weights, up to an additive constant (``-inf`` for zero weights).

    Returns
    -------
    float
        The estimated shape; ``nan`` when there are fewer than 5 tail weights above the
        threshold (too few draws, or weights with ties at the top).
    """
    lw = np.asarray(log_weights, dtype=np.float64).ravel()
    lw = lw[np.isfinite(lw)]
    S = lw.size
    M = tail_size(S) if S else 0
    if M < 5 or S <= M:
        return math.nan
    return _top_k(np.partition(lw, S - M - 1)[S - M - 1:])


def _top_k(top):
    """Pareto ``k`` from the ``M + 1`` largest log weights (the smallest is the threshold)."""
    cut = top.min()
    tail = np.sort(top[top > cut])
    if tail.size < 5:
        return math.nan
    x = np.expm1(tail - cut)  # exceedances, in units of the threshold weight
    return _gpd_shape(x)


def _gpd_shape(x):
    """Zhang-Stephens estimate of the GPD shape of the sorted positive exceedances ``x``."""
    n = x.size
    grid = 30 + int(math.sqrt(n))
    j = np.arange(1, grid + 1, dtype=np.float64)
    quartile = x[max(int(n / 4.0 + 0.5) - 1, 0)]
    b = 1.0 / x[-1] + (1.0 - np.sqrt(grid / (j - 0.5))) / (3.0 * quartile)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.log1p(-b[:, None] * x[None, :]).mean(axis=1)
        prof = n * (np.log(-b / k) - k - 1.0)
    ok = np.isfinite(prof)
    if not ok.any():
        return math.nan
    b, prof = b[ok], prof[ok]
    w = np.exp(prof - prof.max())
    w /= w.sum()
    b_mean = float(w @ b)
    k_hat = float(np.log1p(-b_mean * x).mean())
    return (n * k_hat + 10 * 0.5) / (n + 10)


def block_pareto_k(engine, params, even=EVEN_WEIGHTS):
    """Pareto ``k`` of each block's importance weights at ``params`` on ``engine``'s draws.

    One pass over the draws keeps, per block, the ``tail_size(m) + 1`` largest log weights
    (all that the fit needs) and the log of the weights' sum, so memory does not grow with
    ``m``.  A block whose largest weight is at most ``even`` times the mean weight gets
    ``nan``: no draw carries more than ``even / m`` of its estimate, and the shape of so short
    a tail says nothing about the estimate (a near-exact Laplace proposal gives such weights,
    bounded by the defensive t component, whose top 5% can still look "heavy" in shape).

    Parameters
    ----------
    engine : MCLAEngine
    params : ndarray
        ``(beta, nu)``.

    Returns
    -------
    ndarray (n_blocks,)
    """
    params = np.asarray(params, dtype=np.float64)
    B, m = engine.data.n_blocks, engine.m
    keep = min(tail_size(m) + 1, m)
    top = np.full((B, keep), -np.inf)  # the largest log weights so far (-inf: none yet)
    total = np.full(B, -np.inf)
    for b in engine.iter_log_weights(params):
        # a few blocks at a time: the temporaries stay at TAIL_SLICE numbers, not
        # blocks x draws (each block's numbers are its own, so the slicing changes no bit)
        step = max(1, TAIL_SLICE // (keep + b.shape[1]))
        for r0 in range(0, B, step):
            r1 = min(r0 + step, B)
            total[r0:r1] = np.logaddexp(total[r0:r1], logsumexp(b[r0:r1], axis=1))
            both = np.concatenate([top[r0:r1], b[r0:r1]], axis=1)
            top[r0:r1] = -np.partition(-both, keep - 1, axis=1)[:, :keep]
    if tail_size(m) < 5 or m <= tail_size(m):
        return np.full(B, np.nan)
    bm = getattr(engine, "block_m", None)  # per-block draw counts: each block's own mean
    ratio = np.exp(top.max(axis=1) - (total - (math.log(m) if bm is None else np.log(bm))))
    return np.array([_top_k(top[blk]) if ratio[blk] > even else np.nan for blk in range(B)])


def checked_pareto_k(engine, theta):
    """Per-block Pareto k at the estimate ``theta`` (in the engine's parametrization; empty
    without draws), with a ConvergenceWarning when a block's weights are too heavy-tailed
    for its MCSE to mean anything."""
    if engine is None or getattr(getattr(engine, "sampler", None), "deterministic", False):
        return np.zeros(0)  # no draws (quadrature nodes have no tail)
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    k = block_pareto_k(engine, np.asarray(theta, dtype=float))
    cut = pareto_k_threshold(engine.m)
    bad = np.flatnonzero(k > cut)
    if bad.size:
        warnings.warn(
            f"the importance weights of {bad.size} of {k.size} block(s) are heavy-tailed "
            f"(largest Pareto k {np.nanmax(k):.2f} > {cut:.2f}, PSIS): their Monte Carlo "
            "standard errors are unreliable and probably too small. Refit with a larger m "
            "(or m_start), or check the model (a variance component near 0, a huge block)",
            ConvergenceWarning, stacklevel=5)
    return k
