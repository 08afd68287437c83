"""Per-block draw counts: each independent block gets the draws its own Monte Carlo error
needs, not the worst block's.

The blocks are independent given ``theta``, so ``l_m = sum_b l_b`` with each
``l_b = log((1/m_b) sum_{k < m_b} e^{b_k})`` over the block's own ``m_b`` draws (a prefix of
the draw set's draws, :meth:`~glmm_sm.mcla.draws.DrawSet.set_block_m`), and the MCSE middle
is the sum of the blocks' terms ``V_b = sum_k v_k^2 (G_k - g_b)(G_k - g_b)'``
(``block_score_var`` of an :class:`~glmm_sm.mcla.engine.Evaluation`).  ``V_b`` shrinks
like ``1 / m_b``.

The rule (:func:`allocate_block_m`).  With ``A = (-H)^{-1}`` and ``se_j^2 = A_jj``, block
``b``'s share of the squared MCSE/SE ratio of parameter ``j`` is ``(A V_b A)_jj / se_j^2``;
its *per-draw* contribution is ``w_b = m_b max_j (A V_b A)_jj / se_j^2`` (the largest over
the parameters, so that a bound on ``sum_b w_b / m_b`` bounds every parameter's ratio).  With
``c_b`` the kernel work of one draw of block ``b`` (its rows), the counts minimise the work
``sum_b c_b m_b`` subject to ``sum_b w_b / m_b <= tau^2``; the Lagrange solution is

    m_b = lambda sqrt(w_b / c_b),

with ``lambda`` set so that the constraint holds.  ``tau = target_ratio / sqrt(MARGIN)``
(the margin of the uniform rule, which grows m by ``1.2 (ratio / target)^2``).  Each
``m_b`` is bounded below by ``m_min`` and by the ESS target (``ESS_MARGIN * min_ess``
effective draws, at the block's measured ESS per draw) and above by ``m_max`` and a growth
cap (which wins where the two conflict); with bounds active, ``lambda`` is found by
bisection on the clipped counts (water-filling).  Counts are then rounded up to whole
generation chunks (``GEN_SIZE`` draws, :mod:`glmm_sm.mcla.draws`: a chunk's mixture
components are stratified, so only whole chunks sample the mixture in its proportions);
the draw set holds ``m = max_b m_b`` draws.  Nothing is random: the same round's estimates
give the same counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from glmm_sm.mcla.draws import GEN_SIZE

__all__ = ["BlockAllocation", "block_contributions", "allocate_block_m", "MARGIN",
           "ESS_MARGIN"]

#: The allocation aims at ``target_ratio / sqrt(MARGIN)`` (the uniform rule grows m by
#: ``1.2 (ratio / target)^2``).
MARGIN = 1.2
#: ... and at ``ESS_MARGIN * min_ess`` effective draws per block (the uniform rule grows m
#: by ``1.5 min_ess / ESS``).
ESS_MARGIN = 1.5


@dataclass(frozen=True)
class BlockAllocation:
    """Per-block draw counts and what they are predicted to give.

    Attributes
    ----------
    block_m : ndarray (n_blocks,) of int64
        Draws per block (whole generation chunks, or ``m``).
    m : int
        ``max(block_m)``: the draws the draw set holds.
    work : float
        ``sum_b c_b m_b`` (draws x rows).
    predicted_ratio : float
        ``sqrt(sum_b w_b / m_b)``: the largest MCSE/SE ratio the counts are predicted to give.
    """

    block_m: np.ndarray
    m: int
    work: float
    predicted_ratio: float

    def record(self):
        """The counts' summary for a round's log: total draws, min / median / max ``m_b``,
        the work (draws x rows) and the predicted ratio."""
        bm = self.block_m
        return {"draws_total": int(bm.sum()), "m_block_min": int(bm.min()),
                "m_block_median": float(np.median(bm)), "m_block_max": int(bm.max()),
                "draw_rows": float(self.work), "predicted_ratio": float(self.predicted_ratio)}


def block_contributions(block_score_var, cov, block_m):
    """Each block's per-draw contribution ``w_b`` to the squared largest MCSE/SE ratio.

    Parameters
    ----------
    block_score_var : ndarray (n_blocks, d, d)
        The blocks' MCSE-middle terms ``V_b`` (model coordinates).
    cov : ndarray (d, d)
        ``(-H)^{-1}`` at the estimate (NaN rows where it is not positive definite: those
        parameters are left out, as the driver's ratio leaves them out).
    block_m : int or ndarray (n_blocks,)
        The draws each ``V_b`` was computed from.

    Returns
    -------
    ndarray (n_blocks,)
        ``m_b max_j (A V_b A)_jj / se_j^2``; ``inf`` where ``V_b`` is not finite (a block
        without weight: it keeps the most draws).
    """
    V = np.asarray(block_score_var, dtype=float)
    cov = np.asarray(cov, dtype=float)
    se2 = np.diag(cov)
    ok = np.isfinite(se2) & (se2 > 0) & np.all(np.isfinite(cov), axis=1)
    B = V.shape[0]
    if not ok.any():
        return np.full(B, np.inf)
    A = cov[ok]  # rows of the parameters with an SE
    finite = np.all(np.isfinite(V.reshape(B, -1)), axis=1)
    Vf = np.where(finite[:, None, None], V, 0.0)
    c = np.einsum("jk,bkl,jl->bj", A, Vf, A) / se2[ok]
    w = np.maximum(c, 0.0).max(axis=1) * np.broadcast_to(np.asarray(block_m, float), (B,))
    return np.where(finite, w, np.inf)


def allocate_block_m(w, cost, target_ratio, *, m_min=GEN_SIZE, m_max=10**6, lower=None,
                     upper=None):
    """Draws per block minimising ``sum_b cost_b m_b`` subject to
    ``sum_b w_b / m_b <= (target_ratio^2 / MARGIN)`` (see the module docstring).

    Parameters
    ----------
    w : ndarray (n_blocks,)
        Per-draw contributions (:func:`block_contributions`); ``inf`` gets ``upper``.
    cost : ndarray (n_blocks,)
        Work of one draw of each block (its rows), > 0.
    target_ratio : float
        The largest MCSE/SE ratio to reach.
    m_min, m_max : int
        Bounds on every count (``m_max`` the fit's ``max_m``).
    lower, upper : ndarray (n_blocks,), optional
        Per-block bounds (the ESS target, a growth cap), within ``[m_min, m_max]``; where
        they conflict the upper bound wins (no block grows faster than the cap in one
        round, as with one m).

    Returns
    -------
    BlockAllocation
    """
    w = np.asarray(w, dtype=float)
    cost = np.asarray(cost, dtype=float)
    B = w.shape[0]
    m_max = int(m_max)
    m_min = min(int(m_min), m_max)
    lo = np.full(B, float(m_min)) if lower is None else np.clip(
        np.asarray(lower, float), m_min, m_max)
    hi = np.full(B, float(m_max)) if upper is None else np.clip(
        np.asarray(upper, float), m_min, m_max)
    lo = np.minimum(lo, hi)  # a growth cap wins over the ESS target (as for one m)
    tau2 = float(target_ratio) ** 2 / MARGIN
    inf = ~np.isfinite(w)
    wf = np.where(inf, 0.0, np.maximum(w, 0.0))
    base = np.sqrt(wf / cost)  # m_b = lambda * base_b before the bounds

    def counts(lam):
        m = np.clip(lam * base, lo, hi)
        m[inf] = hi[inf]
        return m

    def excess(lam):
        return float(np.sum(wf / counts(lam))) - tau2

    pos = base > 0
    if excess(0.0) <= 0 or not pos.any():
        lam = 0.0
    else:
        # bracket lambda (excess decreases in lambda), then bisect on log lambda
        lam_hi = float(np.max(hi[pos] / base[pos]))
        if excess(lam_hi) > 0:
            lam = lam_hi
        else:
            lam_lo = float(np.min(lo[pos] / base[pos]))
            a, b = math.log(lam_lo), math.log(lam_hi)
            for _ in range(100):
                mid = 0.5 * (a + b)
                if excess(math.exp(mid)) > 0:
                    a = mid
                else:
                    b = mid
            lam = math.exp(b)
    m = counts(lam)
    # whole generation chunks (up to m_max)
    bm = np.minimum(np.ceil(m / GEN_SIZE) * GEN_SIZE, m_max).astype(np.int64)
    M = int(bm.max())
    # a count that is not whole chunks must be the draw set's m
    bm = np.where((bm % GEN_SIZE != 0) & (bm < M), np.minimum(
        (bm // GEN_SIZE + 1) * GEN_SIZE, M), bm).astype(np.int64)
    with np.errstate(divide="ignore"):
        ratio = math.sqrt(float(np.sum(np.where(inf, 0.0, wf / bm))))
    return BlockAllocation(bm, M, float(np.sum(cost * bm)), ratio)
