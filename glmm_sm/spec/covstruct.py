"""Covariance parameters of the random effects: scalar components and correlated terms.

The random-effect columns carry a *sub-component* label (``ident``, ``0 .. T-1``).  A scalar
variance component is one sub-component with its own variance ``nu``.  A correlated term
(lme4's ``(1 + x | g)``) is ``k`` sub-components with the same number ``L`` of columns,
paired in order: column ``l`` of each belongs to level ``l``, and the level's ``k``-vector of
effects is ``N(0, Sigma)``.  Its parameters are the lower triangle of ``Sigma`` on the natural
scale, row by row: ``Var(1), Cov(2, 1), Var(2), Cov(3, 1), ...``.

Per draw the prior depends on the effects only through ``S``: for every sub-component ``a``
the sum of squares ``s_aa`` (as for scalar components) and, for every pair ``a > b`` of one
term, the cross sum ``s_ab = sum_l u_la u_lb``.  With ``P = Sigma^{-1}`` and ``L`` levels in a
block (``docs/theory.rst``,
"Correlated random effects"),

    log phi = -1/2 tr(P S) - L/2 log|Sigma| - (L k / 2) log 2 pi,
    d log phi / d theta_j = 1/2 tr(P D_j P S) - L/2 tr(P D_j),
    d2 log phi / d theta_i d theta_j = -tr(P D_i P D_j P S) + L/2 tr(P D_i P D_j),

``D_j = d Sigma / d theta_j``.  The kernels see a correlated term as ``k`` scalar-like
sub-components with the "variances" ``1 / P_aa`` (so that ``-1/2 s_aa / (1 / P_aa)`` is the
diagonal part of ``-1/2 tr(P S)``) plus cross entries with coefficients ``P_ab``; their
per-draw scores are affine in the model's scores, and :meth:`CovStructure.score_map` gives
the map.  A model with scalar components only goes through none of this (the identity).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["CovStructure", "log_cholesky_map", "singular_terms", "SINGULAR_TOL"]

#: lme4's ``isSingular`` tolerance: a Cholesky diagonal entry below this, relative to the
#: SD of its effect, makes the covariance matrix singular.
SINGULAR_TOL = 1e-4


class CovStructure:
    """Scalar components and correlated terms over ``T`` sub-components.

    Parameters
    ----------
    n_sub : int
        Number of sub-components ``T``.
    terms : sequence of sequence of int, optional
        The sub-components of each correlated term, in column order (at least two each);
        every other sub-component is a scalar component.
    """

    def __init__(self, n_sub, terms=()):
        self.n_sub = int(n_sub)
        terms = [tuple(int(a) for a in t) for t in (terms or ())]
        seen = set()
        for t in terms:
            if len(t) < 2 or len(set(t)) != len(t) or seen & set(t):
                raise ValueError(f"correlated terms must list at least two distinct "
                                 f"components, each in one term only; got {terms}")
            if min(t) < 0 or max(t) >= self.n_sub:
                raise ValueError(f"correlated term {t} refers to a component outside "
                                 f"0..{self.n_sub - 1}")
            seen |= set(t)
        in_term = {a: i for i, t in enumerate(terms) for a in t}
        # Units in order of their first sub-component: scalar (a,) or a term's tuple.
        units, done = [], set()
        for a in range(self.n_sub):
            if a in done:
                continue
            u = terms[in_term[a]] if a in in_term else (a,)
            units.append(u)
            done |= set(u)
        self.units = units
        self.has_vector = any(len(u) > 1 for u in units)
        self.param_ptr = np.cumsum([0] + [len(u) * (len(u) + 1) // 2 for u in units])
        self.k_vcp = int(self.param_ptr[-1])
        # Cross entries: per term, pairs (a, b) with a > b (positions in the term), row by row.
        self.cross = [(ui, i, j) for ui, u in enumerate(units) if len(u) > 1
                      for i in range(len(u)) for j in range(i)]
        self.n_cross = len(self.cross)

    # ------------------------------------------------------------------ parameters
    def is_vector(self, unit) -> bool:
        return len(self.units[unit]) > 1

    def unit_params(self, unit):
        """Slice of the covariance parameters of ``unit``."""
        return slice(int(self.param_ptr[unit]), int(self.param_ptr[unit + 1]))

    def sigma(self, theta, unit):
        """``Sigma`` (k x k) of ``unit`` from the covariance parameters ``theta``."""
        k = len(self.units[unit])
        vals = np.asarray(theta, dtype=np.float64)[self.unit_params(unit)]
        S = np.zeros((k, k))
        S[np.tril_indices(k)] = vals
        return S + np.tril(S, -1).T

    def valid(self, theta) -> bool:
        """Every variance positive and every term's ``Sigma`` positive definite."""
        theta = np.asarray(theta, dtype=np.float64)
        if not np.all(np.isfinite(theta)):
            return False
        for ui, u in enumerate(self.units):
            if len(u) == 1:
                if not theta[self.param_ptr[ui]] > 0:
                    return False
            else:
                try:
                    L = np.linalg.cholesky(self.sigma(theta, ui))
                except np.linalg.LinAlgError:
                    return False
                if not np.all(np.diag(L) > 0):
                    return False
        return True

    def start(self):
        """Default start: every variance 1, every covariance 0."""
        out = np.zeros(self.k_vcp)
        for ui, u in enumerate(self.units):
            r, c = np.tril_indices(len(u))
            out[self.unit_params(ui)] = (r == c).astype(float)
        return out

    def clipped(self, theta, lo, hi, max_corr=0.99):
        """``theta`` with variances clipped to ``[lo, hi]`` and correlations to
        ``[-max_corr, max_corr]`` (a valid start)."""
        theta = np.array(theta, dtype=np.float64)
        for ui, u in enumerate(self.units):
            sl = self.unit_params(ui)
            if len(u) == 1:
                theta[sl] = np.clip(theta[sl], lo, hi)
                continue
            Sg = self.sigma(theta, ui)
            sd = np.sqrt(np.clip(np.diag(Sg), lo, hi))
            R = Sg / np.outer(np.sqrt(np.maximum(np.diag(Sg), lo)),
                              np.sqrt(np.maximum(np.diag(Sg), lo)))
            R = np.clip(np.nan_to_num(R), -max_corr, max_corr)
            np.fill_diagonal(R, 1.0)
            lam, V = np.linalg.eigh(R)
            if lam.min() < 1e-3:
                R = (V * np.maximum(lam, 1e-3)) @ V.T
                d = np.sqrt(np.diag(R))
                R = R / np.outer(d, d)
            theta[sl] = (R * np.outer(sd, sd))[np.tril_indices(len(u))]
        return theta

    def variances(self, theta):
        """The variance of each sub-component's effects (``T``): ``nu`` or ``Sigma_aa``."""
        theta = np.asarray(theta, dtype=np.float64)
        out = np.empty(self.n_sub)
        for ui, u in enumerate(self.units):
            if len(u) == 1:
                out[u[0]] = theta[self.param_ptr[ui]]
            else:
                out[list(u)] = np.diag(self.sigma(theta, ui))
        return out

    def param_names(self, sub_names, labels):
        """Parameter names: scalar components by ``sub_names``; a term ``g`` with column
        labels ``c1, c2`` as ``g Var(c1)``, ``g Cov(c2, c1)``, ``g Var(c2)``.

        ``labels[ui]`` is ``(term name, [column labels])`` for a term, unused for scalars.
        """
        out = []
        for ui, u in enumerate(self.units):
            if len(u) == 1:
                out.append(sub_names[u[0]])
                continue
            name, cols = labels[ui]
            for i in range(len(u)):
                for j in range(i + 1):
                    out.append(f"{name} Var({cols[i]})" if i == j
                               else f"{name} Cov({cols[i]}, {cols[j]})")
        return out

    # ------------------------------------------------------------------ kernel inputs
    def kernel_inputs(self, theta):
        """``(nud, lognud, pc)``: per sub-component the kernel's "variance" and its log
        (``nu`` and ``log nu`` for scalars; ``1 / P_aa`` and ``log|Sigma| / k`` in a term),
        and per cross entry ``P_ab``."""
        theta = np.asarray(theta, dtype=np.float64)
        nud = np.empty(self.n_sub)
        lognud = np.empty(self.n_sub)
        pc = np.empty(self.n_cross)
        precs = {}
        for ui, u in enumerate(self.units):
            if len(u) == 1:
                nud[u[0]] = theta[self.param_ptr[ui]]
                lognud[u[0]] = np.log(nud[u[0]])
                continue
            Sg = self.sigma(theta, ui)
            P = np.linalg.inv(Sg)
            P = 0.5 * (P + P.T)
            precs[ui] = P
            nud[list(u)] = 1.0 / np.diag(P)
            lognud[list(u)] = np.linalg.slogdet(Sg)[1] / len(u)
        for c, (ui, i, j) in enumerate(self.cross):
            pc[c] = precs[ui][i, j]
        return nud, lognud, pc

    def _term_pieces(self, theta, ui):
        """``P``, ``D_j`` and ``M_j = P D_j P`` of term ``ui``."""
        k = len(self.units[ui])
        P = np.linalg.inv(self.sigma(theta, ui))
        P = 0.5 * (P + P.T)
        Ds = []
        for i in range(k):
            for j in range(i + 1):
                D = np.zeros((k, k))
                D[i, j] = D[j, i] = 1.0
                Ds.append(D)
        return P, Ds, [P @ D @ P for D in Ds]

    def score_map(self, theta, levels):
        """The affine map from the kernel's per-draw scores to the model's.

        The kernel's covariance part of a draw's score is ``h = (g_sub (T), s_cross (C))``
        with ``g_sub_a = (s_aa / nud_a - L_a) / (2 nud_a)``.  The model's is
        ``c_b + J h`` in block ``b``.

        Parameters
        ----------
        theta : ndarray (k_vcp,)
        levels : ndarray (B, T)
            Columns per block and sub-component (``qbt``).

        Returns
        -------
        J : ndarray (k_vcp, T + C)
        c : ndarray (B, k_vcp)
        """
        theta = np.asarray(theta, dtype=np.float64)
        T, C = self.n_sub, self.n_cross
        nud = self.kernel_inputs(theta)[0]
        J = np.zeros((self.k_vcp, T + C))
        c = np.zeros((levels.shape[0], self.k_vcp))
        cross_of = {(ui, i, j): T + n for n, (ui, i, j) in enumerate(self.cross)}
        for ui, u in enumerate(self.units):
            p0 = int(self.param_ptr[ui])
            if len(u) == 1:
                J[p0, u[0]] = 1.0
                continue
            P, Ds, Ms = self._term_pieces(theta, ui)
            L = levels[:, u[0]]
            for jj, (D, M) in enumerate(zip(Ds, Ms, strict=True)):
                row = p0 + jj
                for i, a in enumerate(u):
                    J[row, a] = M[i, i] * nud[a] ** 2
                    for j in range(i):
                        J[row, cross_of[(ui, i, j)]] = M[i, j]
                const = 0.5 * sum(M[i, i] * nud[a] for i, a in enumerate(u))
                c[:, row] = L * (const - 0.5 * np.trace(P @ D))
        return J, c

    def prior_hessian(self, theta, levels, ES):
        """Expected Hessian of ``log phi`` in the covariance parameters, summed over blocks.

        Parameters
        ----------
        theta : ndarray (k_vcp,)
        levels : ndarray (B, T)
        ES : ndarray (B, T + C)
            Per block the weighted means of ``s_aa`` and of the cross entries ``s_ab``.
        """
        theta = np.asarray(theta, dtype=np.float64)
        T = self.n_sub
        H = np.zeros((self.k_vcp, self.k_vcp))
        cross_of = {(ui, i, j): T + n for n, (ui, i, j) in enumerate(self.cross)}
        for ui, u in enumerate(self.units):
            p0 = int(self.param_ptr[ui])
            if len(u) == 1:
                a, nu = u[0], theta[p0]
                H[p0, p0] = np.sum(levels[:, a] / (2.0 * nu**2) - ES[:, a] / nu**3)
                continue
            P, Ds, Ms = self._term_pieces(theta, ui)
            k = len(u)
            Lsum = levels[:, u[0]].sum()
            # Expected S summed over blocks, as a k x k matrix.
            Sm = np.zeros((k, k))
            for i, a in enumerate(u):
                Sm[i, i] = ES[:, a].sum()
                for j in range(i):
                    Sm[i, j] = Sm[j, i] = ES[:, cross_of[(ui, i, j)]].sum()
            for r, (Di, Mi) in enumerate(zip(Ds, Ms, strict=True)):
                for s, Dj in enumerate(Ds):
                    A = Mi @ Dj @ P
                    H[p0 + r, p0 + s] = (-np.trace(A @ Sm)
                                         + 0.5 * Lsum * np.trace(P @ Di @ P @ Dj))
        return 0.5 * (H + H.T)

    # ------------------------------------------------------------------ sparse forms
    def precision_matrix(self, theta, pairs, var_of_col):
        """The prior precision of the effects as a sparse matrix over the columns.

        Parameters
        ----------
        theta : ndarray (k_vcp,)
        pairs : list of ndarray (L_t, k_t)
            Per unit with ``k > 1`` (in :attr:`!units` order among the terms), the column
            index of each level's effects.
        var_of_col : ndarray (q,)
            Sub-component of each column.

        Returns
        -------
        scipy.sparse.csr_matrix (q, q)
        """
        nud, _, pcs = self.kernel_inputs(theta)
        q = len(var_of_col)
        rows, cols, vals = [np.arange(q)], [np.arange(q)], [1.0 / nud[var_of_col]]
        for (ui, i, j), pc in zip(self.cross, pcs, strict=True):
            idx = pairs[self.vector_index(ui)]
            a, b = idx[:, i], idx[:, j]
            rows += [a, b]
            cols += [b, a]
            vals += [np.full(len(a), pc)] * 2
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows),
                                                     np.concatenate(cols))), shape=(q, q))

    def precision_derivatives(self, theta, pairs, var_of_col):
        """``d P_full / d theta_j = -P D_j P`` per covariance parameter, sparse (q, q)."""
        theta = np.asarray(theta, dtype=np.float64)
        q = len(var_of_col)
        out = []
        for ui, u in enumerate(self.units):
            if len(u) == 1:
                nu = theta[self.param_ptr[ui]]
                d = np.where(var_of_col == u[0], -1.0 / nu**2, 0.0)
                out.append(sp.diags(d, format="csr"))
                continue
            _, _, Ms = self._term_pieces(theta, ui)
            idx = np.asarray(pairs[self.vector_index(ui)])
            L, k = idx.shape
            # Row idx[l, i] holds -M[i, j] at column idx[l, j] (j < k); the CSR arrays are
            # formed directly, each row's columns ascending (the canonical form scipy's
            # conversion from coordinates gives): order[l] sorts level l's columns, and
            # rank puts the (level, position) rows in column order.
            order = np.argsort(idx, axis=1, kind="stable")
            cols = np.take_along_axis(idx, order, axis=1)
            rank = np.argsort(idx.ravel(), kind="stable")
            itype = np.int32 if max(q, L * k * k) < 2**31 else np.int64
            indices = np.broadcast_to(cols[:, None, :], (L, k, k)).reshape(L * k, k)[rank]
            indices = indices.ravel().astype(itype)
            counts = np.zeros(q + 1, dtype=itype)
            counts[idx.ravel() + 1] = k
            indptr = np.cumsum(counts, dtype=itype)
            pos = (np.arange(k)[None, :, None] * k + order[:, None, :]).reshape(L * k, k)[rank]
            pos = pos.ravel()
            for M in Ms:
                data = (-M).ravel()[pos]
                out.append(sp.csr_matrix((data, indices, indptr), shape=(q, q)))
        return out

    def vector_index(self, unit):
        """Position of ``unit`` among the correlated terms."""
        return sum(1 for u in self.units[:unit] if len(u) > 1)

    def logdet_terms(self, theta, levels):
        """``sum_t L_t log|Sigma_t|`` (scalars: ``L_t log nu_t``) over all blocks."""
        _, lognud, _ = self.kernel_inputs(theta)
        return float(levels.sum(axis=0) @ lognud)


def log_cholesky_map(x, k):
    """``theta = vech(L L')`` from log-Cholesky coordinates, with its derivatives.

    ``x`` holds the lower triangle of ``L`` row by row, the diagonal entries as logs.

    Returns
    -------
    theta : ndarray (m,)
    jac : ndarray (m, m)
        ``d theta / d x``.
    hess : ndarray (m, m, m)
        ``d2 theta_r / d x_s d x_t``.
    """
    x = np.asarray(x, dtype=np.float64)
    rows, cols = np.tril_indices(k)
    m = len(rows)
    Lm = np.zeros((k, k))
    dL = np.zeros(m)  # dL_s / dx_s
    for s, (r, c) in enumerate(zip(rows, cols, strict=True)):
        Lm[r, c] = np.exp(x[s]) if r == c else x[s]
        dL[s] = Lm[r, c] if r == c else 1.0
    Sg = Lm @ Lm.T
    theta = Sg[rows, cols]
    jac = np.zeros((m, m))
    hess = np.zeros((m, m, m))
    for t, (i, j) in enumerate(zip(rows, cols, strict=True)):
        for s, (r, c) in enumerate(zip(rows, cols, strict=True)):
            # d Sigma_ij / d L_rc = delta_ir L_jc + delta_jr L_ic
            g = (Lm[j, c] if i == r else 0.0) + (Lm[i, c] if j == r else 0.0)
            jac[t, s] = g * dL[s]
            if r == c:  # second derivative of L_rc = exp(x) in x
                hess[t, s, s] += g * dL[s]
            for s2, (r2, c2) in enumerate(zip(rows, cols, strict=True)):
                if c2 != c:
                    continue
                # d2 Sigma_ij / d L_rc d L_r2c = delta_ir delta_jr2 + delta_jr delta_ir2
                h = float(i == r and j == r2) + float(j == r and i == r2)
                if h:
                    hess[t, s, s2] += h * dL[s] * dL[s2]
    return theta, jac, hess


def log_cholesky_inverse(theta, k):
    """Log-Cholesky coordinates of ``Sigma`` given by its lower triangle ``theta``."""
    rows, cols = np.tril_indices(k)
    Sg = np.zeros((k, k))
    Sg[rows, cols] = theta
    Sg = Sg + np.tril(Sg, -1).T
    Lm = np.linalg.cholesky(Sg)
    x = Lm[rows, cols].copy()
    diag = rows == cols
    x[diag] = np.log(x[diag])
    return x


def singular_terms(cov, theta, names, tol=SINGULAR_TOL):
    """Names (first parameter name) of the units whose covariance is singular at ``theta``:
    a scalar variance below ``tol**2`` or a term whose Cholesky factor has a diagonal entry
    below ``tol`` (default :data:`SINGULAR_TOL`) times its effect's SD."""
    out = []
    for ui, u in enumerate(cov.units):
        sl = cov.unit_params(ui)
        if len(u) == 1:
            if not theta[sl][0] > tol**2:
                out.append(names[sl.start])
            continue
        Sg = cov.sigma(theta, ui)
        sd = np.sqrt(np.clip(np.diag(Sg), 0.0, None))
        try:
            Lc = np.linalg.cholesky(Sg)
            rel = np.diag(Lc) / np.where(sd > 0, sd, 1.0)
            bad = (not np.all(rel > tol)) or not np.all(sd > tol)
        except np.linalg.LinAlgError:
            bad = True
        if bad:
            out.append(names[sl.start].split(" Var(")[0])
    return out
