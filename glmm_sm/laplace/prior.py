"""The random effects' prior precision in a block layout, and the Laplace score in the
covariance parameters of models with correlated terms (:mod:`glmm_sm.spec.covstruct`)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["PriorPrecision", "vector_laplace_score"]


class PriorPrecision:
    """The random effects' prior precision in layout order at covariance parameters ``nu``.

    Scalar components give the diagonal ``dinv = 1 / nu[ident]``; correlated terms add the
    off-diagonal entries ``off`` (sparse, zero diagonal) linking a level's effects.
    """

    def __init__(self, data, nu):
        nu = np.asarray(nu, dtype=float)
        cov = data.cov
        self.off = None
        self._flat_for = self._flat = None
        if not cov.has_vector:
            self.dinv = 1.0 / nu[data.ident]
            return
        full = cov.precision_matrix(nu, data.pairs, data.ident).tocsr()
        self.dinv = full.diagonal()
        off = (full - sp.diags(self.dinv)).tocsr()
        off.eliminate_zeros()
        self.off = off

    def off_flat(self, system):
        """``off`` in the layout of ``system``'s concatenated per-group matrices (its
        ``flat_index``), summed by ``np.bincount``: formed once per system and reused (the
        conditional-mode iterations at one ``nu`` add it to every precision they form)."""
        if self._flat_for is not system:
            off = self.off.tocoo()
            self._flat = np.bincount(system.flat_index(off.row, off.col), weights=off.data,
                                     minlength=system.total)
            self._flat_for = system
        return self._flat

    def penalty(self, u):
        """Per column ``u_j (P u)_j`` (summing to ``u' P u`` over a block)."""
        pen = u * u * self.dinv
        if self.off is not None:
            pen = pen + u * (self.off @ u)
        return pen

    def apply(self, u):
        """``P u``."""
        out = u * self.dinv
        if self.off is not None:
            out = out + self.off @ u
        return out


def vector_laplace_score(system, theta, mode, flat_pinv, du, a, dP=None):
    """Laplace score in the covariance parameters with correlated terms:
    ``-1/2 u' dP_j u - 1/2 d(sum L log|Sigma|)/dtheta_j - 1/2 tr(P_lap^{-1} dP_j)
    - 1/2 (Z du_j)' a``, with ``dP_j`` the prior precision's derivative (``dP``, the list
    ``precision_derivatives`` returns, where the caller has formed it at ``theta``)."""
    data = system.data
    cov = data.cov
    if dP is None:
        dP = cov.precision_derivatives(theta, data.pairs, data.ident)
    out = np.empty(cov.k_vcp)
    zdu = np.asarray(data.Z @ du)
    for j, D in enumerate(dP):
        Dc = D.tocoo()
        tr = float(Dc.data @ flat_pinv[system.flat_index(Dc.row, Dc.col)])
        out[j] = -0.5 * mode.u @ (D @ mode.u) - 0.5 * tr - 0.5 * zdu[:, j] @ a
    # d/dtheta of -1/2 sum_t L_t log|Sigma_t|: -1/2 L tr(Sigma^{-1} D_j) = 1/2 tr(P^-1 dP_j)
    # over the prior alone, i.e. -L/2 tr(P D_j) per term; scalars: -L / (2 nu).
    levels = data.qbt.sum(axis=0)
    for ui, u in enumerate(cov.units):
        sl = cov.unit_params(ui)
        if len(u) == 1:
            out[sl] -= 0.5 * levels[u[0]] / theta[sl]
            continue
        P, Ds, _ = cov._term_pieces(theta, ui)
        out[sl] -= 0.5 * levels[u[0]] * np.array([np.trace(P @ D) for D in Ds])
    return out
