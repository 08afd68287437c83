"""Validated model arrays, and the same arrays re-ordered into a block layout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from glmm_sm.spec.covstruct import CovStructure
from glmm_sm.spec.design import BlockLayout
from glmm_sm.spec.families import Family

__all__ = ["ModelArrays", "LayoutData"]


@dataclass(frozen=True)
class ModelArrays:
    """Everything the likelihood needs, in the model's row and column order.

    Attributes
    ----------
    family : Family
    y : ndarray (n,)
        Successes or counts.
    ntrials : ndarray (n,)
        Binomial trials (ones for Bernoulli and Poisson).
    weights : ndarray (n,)
        Observation weights.
    offset : ndarray (n,)
    X : ndarray (n, p)
        Fixed-effects design, C-contiguous float64.
    Z : scipy.sparse.csr_matrix (n, q)
        Random-effects design.
    ident : ndarray (q,)
        Variance component of each column of ``Z``.
    k_vc : int
        Number of variance components ``T`` (sub-components with correlated terms).
    cov : CovStructure, optional
        The covariance structure (scalar components only when None).
    """

    family: Family
    y: np.ndarray
    ntrials: np.ndarray
    weights: np.ndarray
    offset: np.ndarray
    X: np.ndarray
    Z: sp.csr_matrix
    ident: np.ndarray
    k_vc: int
    cov: object = None

    @property
    def covstruct(self):
        """The :class:`~glmm_sm.spec.covstruct.CovStructure` (scalar components by default)."""
        return self.cov if self.cov is not None else CovStructure(self.k_vc)

    @property
    def nobs(self) -> int:
        return self.X.shape[0]

    @property
    def k_fe(self) -> int:
        return self.X.shape[1]


class LayoutData:
    """Model arrays permuted into a :class:`~glmm_sm.spec.design.BlockLayout`.

    Rows of ``X`` and the response follow ``layout.obs_perm``; the columns of ``Z`` follow
    ``layout.col_perm`` (columns outside every block are dropped).  ``zptr``, ``zidx``,
    ``zval`` are the CSR arrays of that ``Z`` (int64/float64), as the kernels take them.
    """

    def __init__(self, arrays: ModelArrays, layout: BlockLayout):
        self.arrays = arrays
        self.layout = layout
        op, cp = layout.obs_perm, layout.col_perm
        self.family = arrays.family
        self.X = np.ascontiguousarray(arrays.X[op], dtype=np.float64)
        self.y = arrays.y[op]
        w = arrays.weights[op]
        self.wy = np.ascontiguousarray(w * self.y)
        self.wn = np.ascontiguousarray(w * arrays.ntrials[op])
        self.offset = np.ascontiguousarray(arrays.offset[op])
        Zp = arrays.Z[op][:, cp].tocsr()
        Zp.sort_indices()
        self.Z = Zp
        self.zptr = Zp.indptr.astype(np.int64)
        self.zidx = Zp.indices.astype(np.int64)
        self.zval = Zp.data.astype(np.float64)
        self.obs_ptr = layout.obs_ptr.astype(np.int64)
        self.col_ptr = layout.col_ptr.astype(np.int64)
        self.block_of_obs = layout.block_of_obs
        self.block_of_col = layout.block_of_col
        self.ident = layout.ident
        self.qbt = np.ascontiguousarray(layout.qbt)
        self.k_vc = arrays.k_vc
        self.cov = arrays.covstruct
        self.pairs = layout.pairs
        #: Rows of ``S`` per draw and block: sums of squares, then cross sums.
        self.n_s = self.k_vc + self.cov.n_cross
        self._cross = None
        if self.cov.n_cross:
            ia, ib, row = [], [], []
            for c, (ui, i, j) in enumerate(self.cov.cross):
                pr = self.pairs[self.cov.vector_index(ui)]
                ia.append(pr[:, i])
                ib.append(pr[:, j])
                row.append(self.block_of_col[pr[:, i]] * self.cov.n_cross + c)
            ia, ib, row = (np.concatenate(v) for v in (ia, ib, row))
            ind = sp.csr_matrix((np.ones(len(ia)), (row, np.arange(len(ia)))),
                                shape=(self.n_blocks * self.cov.n_cross, len(ia)))
            self._cross = (ia, ib, ind)

    @property
    def k_vcp(self) -> int:
        """Number of covariance parameters."""
        return self.cov.k_vcp

    @property
    def k_fam(self) -> int:
        """Number of the family's own parameters, after the covariance parameters in
        ``params`` (1, ``alpha``, for the negative binomial)."""
        return self.family.k_fam

    def cross_sums(self, U):
        """Cross sums ``s_ab`` (B, C, K) of draws ``U`` (q, K) in layout order."""
        K = U.shape[1]
        if self._cross is None:
            return np.zeros((self.n_blocks, 0, K))
        ia, ib, ind = self._cross
        return (ind @ (U[ia] * U[ib])).reshape(self.n_blocks, self.cov.n_cross, K)

    @property
    def n_blocks(self) -> int:
        return self.layout.n_blocks

    @property
    def q(self) -> int:
        return self.layout.q

    @property
    def k_fe(self) -> int:
        return self.X.shape[1]

    def linear_fixed(self, beta):
        """``X beta + offset`` in layout order.

        Each row's product is summed over its own columns only (``einsum``, not BLAS, whose
        ``gemv`` groups rows so that one row's bits depend on the rows around it): the rows
        of a data partition give the same bits as the same rows of the whole data
        (:mod:`glmm_sm.mcla.partitioned`)."""
        return np.einsum("ij,j->i", self.X, np.asarray(beta, dtype=np.float64)) + self.offset

    def loglik_terms(self, eta):
        """Per-observation ``w (y eta - c(eta))``, ``w (y - c'(eta))`` and ``w c''(eta)``
        (for a non-canonical link the log-density, its derivative in ``eta`` and minus its
        second derivative: :meth:`glmm_sm.spec.families.Family.obs_terms`)."""
        return self.family.obs_terms(eta, self.wy, self.wn)
