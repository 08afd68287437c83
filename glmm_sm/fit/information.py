"""Standard errors and Monte Carlo standard errors from the Monte Carlo observed information.

At a maximum of ``l_m`` the Hessian ``H`` is negative definite, the covariance of the
estimate is ``-H^{-1}`` and its Monte Carlo covariance the sandwich ``H^{-1} V H^{-1}``
(Sung and Geyer 2007), with ``V`` the Monte Carlo variance of the gradient.

When ``-H`` is not positive definite the point is not a strict maximum (a saddle, a ridge of
non-identified parameters, or a fit stopped short), and ``-H^{-1}`` is not a covariance.  No
pseudo-inverse is taken: the directions of non-negative curvature are found from the
eigen-decomposition of ``-H`` (scaled to unit diagonal, so that the test does not depend on
the parameters' units), and every parameter that loads on one of them gets a NaN variance,
covariance and Monte Carlo covariance.  The other parameters keep the inverse on the
negative definite part, which is exact for them when the bad directions do not involve them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["InformationErrors", "information_errors"]

#: Eigenvalues of the unit-diagonal ``-H`` below this fraction of the largest count as
#: non-positive (a condition number of 1e12 is as far as float64 inverses are meaningful).
EIG_RTOL = 1e-12
#: A parameter whose squared loading on a bad eigenvector exceeds this is affected.
LOADING_TOL = 1e-10


@dataclass
class InformationErrors:
    """Covariances of the estimate from ``H`` and ``V``.

    Attributes
    ----------
    cov : ndarray (d, d)
        ``-H^{-1}``; NaN in the rows and columns of ``bad`` parameters.
    mcse_cov : ndarray (d, d)
        ``H^{-1} V H^{-1}``; NaN likewise.
    bad : ndarray of bool (d,)
        Parameters on a direction where ``-H`` is not positive definite.
    """

    cov: np.ndarray
    mcse_cov: np.ndarray
    bad: np.ndarray

    @property
    def positive_definite(self) -> bool:
        return not bool(self.bad.any())


def information_errors(H, V=None):
    """:class:`InformationErrors` from the Hessian ``H`` and gradient variance ``V``.

    Parameters
    ----------
    H : ndarray (d, d)
        Hessian of the log-likelihood at the estimate.
    V : ndarray (d, d), optional
        Monte Carlo variance of the gradient (zeros when omitted).
    """
    H = np.asarray(H, dtype=np.float64)
    d = H.shape[0]
    V = np.zeros((d, d)) if V is None else np.asarray(V, dtype=np.float64)
    if d == 0:
        return InformationErrors(np.zeros((0, 0)), np.zeros((0, 0)), np.zeros(0, bool))
    if not (np.all(np.isfinite(H)) and np.all(np.isfinite(V))):
        nan = np.full((d, d), np.nan)
        return InformationErrors(nan, nan.copy(), np.ones(d, bool))
    info = -0.5 * (H + H.T)
    scale = np.sqrt(np.abs(np.diag(info)))
    scale = np.where(scale > 0, scale, 1.0)
    lam, Q = np.linalg.eigh(info / np.outer(scale, scale))
    top = max(float(np.max(np.abs(lam))), 1e-300)
    good = lam > EIG_RTOL * top
    bad = np.zeros(d, bool)
    if not good.all():
        bad = (Q[:, ~good] ** 2).sum(axis=1) > LOADING_TOL
    # -H^{-1} on the positive definite part, back in the parameters' units.
    Qg = Q[:, good] / scale[:, None]
    Hinv = -(Qg / lam[good]) @ Qg.T
    cov = -Hinv
    mc = Hinv @ V @ Hinv
    cov, mc = 0.5 * (cov + cov.T), 0.5 * (mc + mc.T)
    cov[bad, :] = cov[:, bad] = np.nan
    mc[bad, :] = mc[:, bad] = np.nan
    return InformationErrors(cov, mc, bad)
