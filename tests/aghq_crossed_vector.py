"""Exact likelihood of the "maximal" crossed binomial GLMM by nested adaptive Gauss-Hermite
quadrature, for designs whose second factor has few levels.  Plain numpy/scipy, written
independently of ``glmm_sm`` (none of its kernels, samplers or node rules).

Model: cells ``c`` of subject ``s`` (the *inner* factor, many levels) and item ``i(c)`` (the
*outer* factor, few levels), ``y_c ~ Binomial(n_c, expit(eta_c))`` with

    eta_c = x_c' beta + z_c' b_s + w_c' v_{i(c)},   b_s ~ N(0, Sigma_u),  v_i ~ N(0, Sigma_v),

``b_s`` and ``v_i`` two-dimensional (intercept and slope), all independent.  Given the items
``V = (v_1, ..., v_I)`` the subjects are independent, so

    L(theta) = int phi(V; Sigma_v) prod_s I_s(V) dV,
    I_s(V) = int phi(b; Sigma_u) prod_{c in s} f(y_c | eta_c) db.

* **Inner rule** (each subject, each outer node): the mode ``b*`` of ``log phi + log f``
  given ``V`` (Newton), the Cholesky factor ``R`` of the inverse negative Hessian there, and
  the ``K_in x K_in`` product Gauss-Hermite rule ``b = b* + sqrt(2) R x_k`` (Liu and Pierce
  1994): ``I_s ~= 2 |R| sum_k w_k exp(|x_k|^2 + g_s(b_k))``.
* **Outer rule** (the ``2 I`` item effects jointly): the mode ``V*`` of
  ``G(V) = log phi(V; Sigma_v) + sum_s log I_s(V)`` with the inner rule's ``log I_s``
  (Newton on its exact derivatives, the inner posterior moments), the Cholesky factor ``L``
  of ``(-d^2 G)^{-1}`` there, and the ``K_out^(2 I)`` product rule
  ``V = V* + sqrt(2) L x_q``: ``L ~= 2^I |L| sum_q w_q exp(|x_q|^2 + G(V_q))``.

The rules are placed afresh at every ``theta`` (the fully adaptive rule).  The score is the
posterior mean of the complete-data score under the nested rule (Louis' identity; it differs
from the derivative of the quadrature value by the quadrature error only); for ``k = 2``,
``theta = (beta, vech Sigma_u, vech Sigma_v)`` with ``vech`` = ``(Var(first), Cov(second,
first), Var(second))`` and, with ``D_j = dSigma/dtheta_j`` and ``M = E[sum b b']`` over the
``J`` effect vectors,

    d l / d Sigma_j = tr(Sigma^{-1} D_j Sigma^{-1} M) / 2 - J tr(Sigma^{-1} D_j) / 2.

The MLE is found by Newton's method with the Hessian from central differences of the score
(:func:`newton_mle`); the standard errors are the square roots of the diagonal of the
inverse of its negative.  The cost of one evaluation is about
``K_out^(2I) x S x K_in^2 x (cells per subject)`` logistic terms: four items with
``K_out = 4`` (65,536 outer nodes) is the practical limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln, logsumexp

__all__ = ["CrossedCells", "CrossedVectorAGHQ", "NewtonMLE", "newton_mle", "product_rule"]

#: vech patterns of a 2 x 2 symmetric matrix: (0, 0), (1, 0), (1, 1).
_D = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]],
               [[0.0, 0.0], [0.0, 1.0]]])
LOG_2PI = np.log(2.0 * np.pi)


def product_rule(n_nodes, dim):
    """Tensor Gauss-Hermite rule for ``int e^{-|x|^2} f(x) dx`` in ``dim`` dimensions:
    nodes ``(n_nodes^dim, dim)`` and log weights."""
    t, w = np.polynomial.hermite.hermgauss(n_nodes)
    grids = np.meshgrid(*([t] * dim), indexing="ij")
    x = np.stack([g.ravel() for g in grids], axis=1)
    lw = np.zeros(1)
    for _ in range(dim):
        lw = (lw[:, None] + np.log(w)[None, :]).ravel()
    return x, lw


def _vech_to_cov(v):
    return np.array([[v[0], v[1]], [v[1], v[2]]])


@dataclass
class CrossedCells:
    """Binomial cells grouped by subject, padded to ``C`` cells per subject (``n = 0``).

    ``y, n``: (S, C); ``X``: (S, C, p); ``Z`` (subject effect design), ``W`` (item effect
    design): (S, C, 2); ``item``: (S, C) codes ``0..I-1``.
    """

    y: np.ndarray
    n: np.ndarray
    X: np.ndarray
    Z: np.ndarray
    W: np.ndarray
    item: np.ndarray
    n_item: int

    @classmethod
    def from_rows(cls, y, X, Z, W, subject, item, trials=None):
        """Aggregate rows with identical ``(subject, item, X, Z, W)`` into binomial cells."""
        y = np.asarray(y, dtype=float)
        n = np.ones_like(y) if trials is None else np.asarray(trials, dtype=float)
        X, Z, W = (np.asarray(a, dtype=float) for a in (X, Z, W))
        s_code = np.unique(np.asarray(subject), return_inverse=True)[1]
        i_code = np.unique(np.asarray(item), return_inverse=True)[1]
        key = np.column_stack([s_code, i_code, X, Z, W])
        uniq, inv = np.unique(key, axis=0, return_inverse=True)
        inv = inv.ravel()
        ys = np.bincount(inv, weights=y, minlength=len(uniq))
        ns = np.bincount(inv, weights=n, minlength=len(uniq))
        S, p = int(s_code.max()) + 1, X.shape[1]
        per = np.bincount(uniq[:, 0].astype(int), minlength=S)
        C = int(per.max())
        out = dict(y=np.zeros((S, C)), n=np.zeros((S, C)), X=np.zeros((S, C, p)),
                   Z=np.zeros((S, C, 2)), W=np.zeros((S, C, 2)),
                   item=np.zeros((S, C), dtype=int))
        slot = np.zeros(S, dtype=int)
        for r, row in enumerate(uniq):
            s = int(row[0])
            c = slot[s]
            slot[s] += 1
            out["y"][s, c], out["n"][s, c] = ys[r], ns[r]
            out["item"][s, c] = int(row[1])
            out["X"][s, c] = row[2 : 2 + p]
            out["Z"][s, c] = row[2 + p : 4 + p]
            out["W"][s, c] = row[4 + p : 6 + p]
        return cls(n_item=int(i_code.max()) + 1, **out)


@dataclass
class Evaluation:
    """Value, score, and the rules' placement at one ``theta``."""

    value: float
    score: np.ndarray
    outer_mode: np.ndarray
    n_outer: int


class CrossedVectorAGHQ:
    """Nested adaptive Gauss-Hermite log-likelihood of the maximal crossed binomial GLMM.

    Parameters
    ----------
    cells : CrossedCells
    outer_nodes, inner_nodes : int
        Gauss-Hermite nodes per dimension of the outer (items, ``2 I`` dimensions) and inner
        (each subject, 2 dimensions) rules.
    chunk : int
        Outer nodes evaluated together (memory: ``chunk x S x inner_nodes^2 x C`` floats).
    """

    def __init__(self, cells, outer_nodes=3, inner_nodes=7, chunk=None):
        self.d = cells
        S, C = cells.y.shape
        self.S, self.C, self.I = S, C, cells.n_item
        self.p = cells.X.shape[2]
        self.dim = 2 * self.I
        self.x_in, lw = product_rule(inner_nodes, 2)
        self.lw_in = lw + (self.x_in**2).sum(axis=1)
        self.x_out, lw = product_rule(outer_nodes, self.dim)
        self.lw_out = lw + (self.x_out**2).sum(axis=1)
        self.chunk = chunk or max(1, int(3e6 // (S * len(self.x_in) * C)))
        # the item-effect loading of each cell, as a 2I-vector
        A = np.zeros((S, C, self.dim))
        for j in range(2):
            np.put_along_axis(A, (2 * cells.item + j)[..., None], cells.W[..., j : j + 1],
                              axis=2)
        self.A = A
        self.const = float(np.sum(gammaln(cells.n + 1) - gammaln(cells.y + 1)
                                  - gammaln(cells.n - cells.y + 1)))

    # ------------------------------------------------------------------ inner rule
    def _inner(self, a, Pu, b0, stats=False):
        """Inner rule for offsets ``a`` (Q, S, C): ``log I_s`` (Q, S) and, with ``stats``,
        the inner posterior weights, nodes, and mu (for the score)."""
        d = self.d
        y, n, Z = d.y, d.n, d.Z
        b = np.broadcast_to(b0, a.shape[:2] + (2,)).copy()
        for _ in range(100):
            eta = a + np.einsum("scj,qsj->qsc", Z, b)
            mu = 1.0 / (1.0 + np.exp(-eta))
            grad = np.einsum("qsc,scj->qsj", y - n * mu, Z) - b @ Pu
            H = np.einsum("qsc,scj,sck->qsjk", n * mu * (1 - mu), Z, Z) + Pu
            step = np.linalg.solve(H, grad[..., None])[..., 0]
            b = b + step
            if np.max(np.abs(step)) < 1e-11:
                break
        else:
            raise RuntimeError("inner Newton did not converge")
        eta = a + np.einsum("scj,qsj->qsc", Z, b)
        mu = 1.0 / (1.0 + np.exp(-eta))
        H = np.einsum("qsc,scj,sck->qsjk", n * mu * (1 - mu), Z, Z) + Pu
        R = np.linalg.cholesky(np.linalg.inv(H))  # (Q, S, 2, 2)
        nodes = b[:, :, None, :] + np.sqrt(2.0) * np.einsum("qsjk,tk->qstj", R, self.x_in)
        eta = (a[:, :, None, :] + nodes[..., 0:1] * Z[None, :, None, :, 0]
               + nodes[..., 1:2] * Z[None, :, None, :, 1])  # (Q, S, T, C)
        log1pe = np.logaddexp(0.0, eta)
        ll = (eta * y[:, None, :]).sum(axis=3) - (log1pe * n[:, None, :]).sum(axis=3)
        prior = -0.5 * np.einsum("qstj,jk,qstk->qst", nodes, Pu, nodes, optimize=True)
        logit = self.lw_in + ll + prior  # (Q, S, T)
        logdetR = np.log(R[..., 0, 0]) + np.log(R[..., 1, 1])
        logI = np.log(2.0) + logdetR + logsumexp(logit, axis=2)
        if not stats:
            return logI, b
        rho = np.exp(logit - logsumexp(logit, axis=2, keepdims=True))
        mu = np.exp(eta - log1pe)
        return logI, b, rho, nodes, mu

    def _logI(self, a, Su, b0, stats=False):
        Pu = np.linalg.inv(Su)
        out = self._inner(a, Pu, b0, stats)
        const = -LOG_2PI - 0.5 * np.linalg.slogdet(Su)[1]
        return (out[0] + const,) + out[1:]

    def _offsets(self, beta, V):
        """``x' beta + w' v_i`` of every cell at outer points ``V`` (Q, 2I)."""
        return (self.d.X @ beta)[None] + np.einsum("scd,qd->qsc", self.A, V)

    # ------------------------------------------------------------------ outer rule
    def outer_mode(self, theta, v0=None, b0=None):
        """Mode of ``G(V)`` and its negative Hessian (the inner rule's exact derivatives)."""
        beta, Su, Sv = self.split(theta)
        Pv = np.kron(np.eye(self.I), np.linalg.inv(Sv))
        v = np.zeros(self.dim) if v0 is None else np.asarray(v0, dtype=float).copy()
        b0 = np.zeros((self.S, 2)) if b0 is None else b0

        def parts(v):
            logI, b, rho, nodes, mu = self._logI(self._offsets(beta, v[None]), Su, b0, True)
            G = float(logI.sum() - 0.5 * v @ Pv @ v)
            r = self.d.y[None, :, None, :] - self.d.n[None, :, None, :] * mu  # (1,S,T,C)
            sc = np.einsum("qstc,scd->qstd", r, self.A)[0]  # (S, T, dim)
            m1 = np.einsum("st,std->sd", rho[0], sc)
            w = self.d.n[None, :, None, :] * mu * (1 - mu)
            info = np.einsum("st,stc,scd,sce->de", rho[0], w[0], self.A, self.A)
            cov = np.einsum("st,std,ste->de", rho[0], sc, sc) - m1.T @ m1
            grad = m1.sum(axis=0) - Pv @ v
            negH = info - cov + Pv
            return G, grad, negH, b[0]

        G, grad, negH, b = parts(v)
        for _ in range(100):
            step = np.linalg.solve(negH, grad)
            t = 1.0
            while True:
                G1, grad1, negH1, b1 = parts(v + t * step)
                if G1 >= G - 1e-12 or t < 1e-6:
                    break
                t /= 2
            v, G, grad, negH, b = v + t * step, G1, grad1, negH1, b1
            if np.max(np.abs(t * step)) < 1e-10:
                break
        else:
            raise RuntimeError("outer Newton did not converge")
        return v, negH, b

    def split(self, theta):
        theta = np.asarray(theta, dtype=float)
        p = self.p
        return (theta[:p], _vech_to_cov(theta[p : p + 3]), _vech_to_cov(theta[p + 3 : p + 6]))

    def evaluate(self, theta, start=None):
        """Log-likelihood and score at ``theta`` (rules placed at ``theta``)."""
        beta, Su, Sv = self.split(theta)
        if np.linalg.eigvalsh(Su)[0] <= 0 or np.linalg.eigvalsh(Sv)[0] <= 0:
            raise ValueError("covariance not positive definite")
        v_star, negH, b_star = self.outer_mode(theta, *(start or (None, None)))
        L = np.linalg.cholesky(np.linalg.inv(negH))
        Pv = np.linalg.inv(Sv)
        V_all = v_star + np.sqrt(2.0) * self.x_out @ L.T
        logW = (self.lw_out + 0.5 * self.dim * np.log(2.0) + np.sum(np.log(np.diag(L))))
        N = len(V_all)
        logG = np.empty(N)
        s_beta = np.empty((N, self.p))
        Mu = np.empty((N, 3))
        Mv = np.empty((N, 3))
        const_v = -0.5 * self.I * (LOG_2PI * 2 + np.linalg.slogdet(Sv)[1])
        for lo in range(0, N, self.chunk):
            V = V_all[lo : lo + self.chunk]
            logI, _, rho, nodes, mu = self._logI(self._offsets(beta, V), Su, b_star, True)
            Vi = V.reshape(len(V), self.I, 2)
            prior_v = const_v - 0.5 * np.einsum("qij,jk,qik->q", Vi, Pv, Vi)
            logG[lo : lo + len(V)] = logW[lo : lo + len(V)] + prior_v + logI.sum(axis=1)
            # E[y - n mu] per cell under the inner rule, then the fixed-effect score
            r = self.d.y[None] - self.d.n[None] * np.einsum("qst,qstc->qsc", rho, mu)
            s_beta[lo : lo + len(V)] = np.einsum("qsc,scp->qp", r, self.d.X, optimize=True)
            bb = np.einsum("qst,qstj,qstk->qjk", rho, nodes, nodes, optimize=True)
            Mu[lo : lo + len(V)] = bb[:, [0, 1, 1], [0, 0, 1]]
            vv = np.einsum("qij,qik->qjk", Vi, Vi)
            Mv[lo : lo + len(V)] = vv[:, [0, 1, 1], [0, 0, 1]]
        value = float(logsumexp(logG)) + self.const
        pi = np.exp(logG - logsumexp(logG))
        score_beta = pi @ s_beta
        score = [score_beta]
        for M, S, J in ((pi @ Mu, Su, self.S), (pi @ Mv, Sv, self.I)):
            P = np.linalg.inv(S)
            Mm = _vech_to_cov(M)
            score.append(np.array([0.5 * np.trace(P @ D @ P @ Mm) - 0.5 * J * np.trace(P @ D)
                                   for D in _D]))
        return Evaluation(value, np.concatenate(score), v_star, N)

    def hessian(self, theta, h=1e-4):
        """Central differences of the score (relative step ``h``, at least ``h``)."""
        theta = np.asarray(theta, dtype=float)
        k = len(theta)
        H = np.empty((k, k))
        for j in range(k):
            e = np.zeros(k)
            e[j] = h * max(1.0, abs(theta[j]))
            H[:, j] = (self.evaluate(theta + e).score
                       - self.evaluate(theta - e).score) / (2 * e[j])
        return 0.5 * (H + H.T)


@dataclass
class NewtonMLE:
    """Result of :func:`newton_mle`: the estimate, its standard errors, the Hessian used,
    the last Newton step in standard errors, and the value there."""

    params: np.ndarray
    bse: np.ndarray
    hessian: np.ndarray
    last_step_se: float
    value: float
    iterations: int


def newton_mle(model, start, hessian=None, tol=1e-5, max_iter=20):
    """Newton's method on ``model``'s score from ``start``: steps ``-H^{-1} g`` (``H`` from
    :meth:`CrossedVectorAGHQ.hessian` at ``start`` unless given, recomputed never: it sets
    the rate, not the fixed point), until the step is below ``tol`` standard errors."""
    theta = np.asarray(start, dtype=float).copy()
    H = model.hessian(theta) if hessian is None else hessian
    se = np.sqrt(np.diag(np.linalg.inv(-H)))
    iterations = 0
    for _ in range(max_iter):
        iterations += 1
        ev = model.evaluate(theta)
        step = -np.linalg.solve(H, ev.score)
        theta = theta + step
        last = float(np.max(np.abs(step) / se))
        if last < tol:
            break
    return NewtonMLE(theta, se, H, last, ev.value, iterations)
