"""An independent, plain-numpy MCLA reference (MCLA_SPEC.md sections 1.3, 1.5, 3, 5.5).

Written from the specification only, for one block of draws, with dense arrays and no
chunking; the tests compare the package's kernels against it.  Nothing here imports the
package's internals.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, gammaln

LOG2PI = np.log(2.0 * np.pi)


def glmm_mixture_logdensity(u, dstar, ustar, prec, p=(1 / 3, 1 / 3, 1 / 3), zeta=5.0):
    """glmm's log f~(u): ``p1 t_zeta(0, D*) + p2 N(u*, D*) + p3 N(u*, prec^-1)`` (spec 2.4).

    ``u`` is (m, q); ``dstar`` the diagonal of D*; ``prec`` the precision Sigma~^{-1}.
    """
    u = np.asarray(u, dtype=float)
    q = u.shape[1]
    L = np.linalg.cholesky(prec)
    logdet_d = np.log(dstar).sum()
    q1 = (u**2 / dstar).sum(axis=1)
    q2 = ((u - ustar) ** 2 / dstar).sum(axis=1)
    q3 = (((u - ustar) @ L) ** 2).sum(axis=1)
    lg1 = (gammaln((zeta + q) / 2) - gammaln(zeta / 2) - q / 2 * np.log(zeta * np.pi)
           - 0.5 * logdet_d - (zeta + q) / 2 * np.log1p(q1 / zeta))
    lg2 = -q / 2 * LOG2PI - 0.5 * logdet_d - q2 / 2
    lg3 = -q / 2 * LOG2PI + np.log(np.diag(L)).sum() - q3 / 2
    terms = np.stack([lg1, lg2, lg3]) + np.log(np.asarray(p))[:, None]
    return np.logaddexp.reduce(terms, axis=0)


def block_reference(family, y, ntrials, X, Z, ident, T, U, logf, theta, offset=None, M=None,
                    beta0=None):
    """Value, gradient, Hessian, MCSE middle and ESS of one block, straight from the spec.

    Parameters
    ----------
    family : {"bernoulli", "binomial", "poisson"}
    y, ntrials : (n,) successes/counts and trials of the block's observations
    X : (n, p) fixed-effects rows;  Z : (n, q) dense random-effects design of the block
    ident : (q,) 0-based variance component of each column;  T : number of components
    U : (m, q) draws;  logf : (m,) log importance density of each draw
    theta : (p + T,) = (beta, nu)
    M, beta0 : (q, p) and (p,), optional
        Moving draws: at ``theta`` the draws are ``U + M (beta - beta0)`` (``logf``
        unchanged).  Each draw's log weight ``b_k(theta)`` then depends on beta through the
        draw too: its beta score gains ``M' Z' (y - mu) - M' D^{-1} u_k``, its beta Hessian
        ``-M' Z' W Z M - 2 sym(M' Z' W X) - M' D^{-1} M`` and its beta-nu_t derivative
        ``sum_{j in t} M_j u_kj / nu_t^2``.

    Returns
    -------
    dict with value (log((1/m) sum e^{b_k})), gradient, hessian, score_var
    (sum v_k^2 (G_k - g)(G_k - g)'), ess (1 / sum v_k^2), v (normalized weights), b (log
    weights), G (m x d complete-data scores).
    """
    X = np.asarray(X, dtype=float)
    p = X.shape[1]
    beta, nu = np.asarray(theta[:p], float), np.asarray(theta[p:], float)
    m, q = U.shape
    if M is not None:
        U = U + (M @ (beta - beta0))[None, :]
    eta = X @ beta + (0.0 if offset is None else offset)
    eta = eta[None, :] + U @ Z.T  # (m, n)
    if family == "poisson":
        cum = np.exp(eta)
        mean = var = cum
    else:
        cum = ntrials * np.logaddexp(0.0, eta)
        mean = ntrials * expit(eta)
        var = ntrials * expit(eta) * expit(-eta)
    lfy = (y * eta - cum).sum(axis=1)
    qt = np.bincount(ident, minlength=T).astype(float)
    S = np.zeros((m, T))
    for t in range(T):
        S[:, t] = (U[:, ident == t] ** 2).sum(axis=1)
    lfu = -q / 2 * LOG2PI - 0.5 * qt @ np.log(nu) - 0.5 * (S / nu).sum(axis=1)
    b = lfy + lfu - logf
    a = b.max()
    e = np.exp(b - a)
    value = a + np.log(e.sum()) - np.log(m)
    v = e / e.sum()
    G = np.empty((m, p + T))
    G[:, :p] = (y - mean) @ X
    G[:, p:] = -qt / (2 * nu) + S / (2 * nu**2)
    Xd = X
    if M is not None:
        Dinv = 1.0 / nu[ident]
        G[:, :p] += (y - mean) @ Z @ M - (U * Dinv) @ M
        Xd = X + Z @ M
    # The magnitudes of the terms each G_k sums (its roundoff scale).
    Gabs = np.empty((m, p + T))
    Gabs[:, :p] = np.abs(y - mean) @ np.abs(X)
    Gabs[:, p:] = qt / (2 * nu) + S / (2 * nu**2)
    if M is not None:
        Gabs[:, :p] += np.abs(y - mean) @ np.abs(Z @ M) + np.abs(U * Dinv) @ np.abs(M)
    g = v @ G
    H = np.zeros((p + T, p + T))
    H[:p, :p] = -(Xd.T * (v @ var)) @ Xd
    H[p:, p:] = np.diag(v @ (qt / (2 * nu**2) - S / nu**3))
    if M is not None:
        H[:p, :p] -= (M.T * Dinv) @ M
        ubar = v @ U
        for t in range(T):
            c = M[ident == t].T @ ubar[ident == t] / nu[t] ** 2
            H[:p, p + t] += c
            H[p + t, :p] += c
    Gc = G - g
    H += (Gc * v[:, None]).T @ Gc
    V = (Gc * (v**2)[:, None]).T @ Gc
    return {"value": value, "gradient": g, "hessian": H, "score_var": V,
            "ess": 1.0 / np.sum(v**2), "v": v, "b": b, "G": G, "Gabs": Gabs}


def model_reference(model, theta, draws):
    """Apply :func:`block_reference` to every block of a model, using its public pieces.

    ``draws`` is a DrawSet from ``model.sample_draws`` (``all_draws().U`` is q x m in layout
    order, i.e. the blocks' columns one block after the other; ``logf`` is blocks x m).
    Returns the summed value/gradient/Hessian/score_var, the per-block values and ESS, and
    two scales for roundoff comparisons: ``abs_score`` = sum_b sum_k v_k |G|_k (per
    parameter, with ``|G|_k`` the sum of the magnitudes of the terms that make up the
    complete-data score ``G_k``: the size of what the gradient adds up) and ``score_cov`` =
    sum_b sum_k v_k (G_k - g_b)(G_k - g_b)' (the Louis term that cancels against
    sum_k v_k H_k in the Hessian); and ``abs_score_var`` = sum_b sum_k v_k^2 |G|_k |G|_k',
    the size of the uncentred sums from which the kernels form ``score_var``.
    """
    chunk = draws.all_draws()
    blocks = model.blocks if chunk.logf.shape[0] == len(model.blocks) else None
    if blocks is None:  # one joint block (factorize=False)
        n, q = model.exog_vc.shape
        spans = [(np.arange(n), np.arange(q))]
    else:
        spans = [(blk.obs, blk.columns) for blk in blocks]
    fam = model.family_kind.name
    endog = np.asarray(model.endog, dtype=float)
    if endog.ndim == 2:
        y, ntrials = endog[:, 0], endog.sum(axis=1)
    else:
        y, ntrials = endog, np.ones_like(endog)
    X = np.asarray(model.exog, dtype=float)
    Z = model.exog_vc.toarray()
    T = len(model.vcp_names)
    out = {"value": 0.0, "gradient": 0.0, "hessian": 0.0, "score_var": 0.0,
           "abs_score": 0.0, "score_cov": 0.0, "abs_score_var": 0.0, "block_values": [],
           "ess": []}
    start = 0
    smp = draws.sampler
    moving = smp is not None and getattr(smp, "shift", False)
    for b, (obs, cols) in enumerate(spans):
        Ub = chunk.U[start : start + len(cols)].T
        Mb = smp.du_dbeta[start : start + len(cols)] if moving else None
        start += len(cols)
        r = block_reference(fam, y[obs], ntrials[obs], X[obs], Z[np.ix_(obs, cols)],
                            np.asarray(model.ident)[cols], T, Ub, chunk.logf[b], theta,
                            offset=np.asarray(model.offset)[obs], M=Mb,
                            beta0=smp.beta0 if moving else None)
        for key in ("value", "gradient", "hessian", "score_var"):
            out[key] = out[key] + r[key]
        Gc = r["G"] - r["gradient"]
        out["abs_score"] = out["abs_score"] + r["v"] @ r["Gabs"]
        out["score_cov"] = out["score_cov"] + (Gc * r["v"][:, None]).T @ Gc
        out["abs_score_var"] = out["abs_score_var"] + (r["Gabs"] * (r["v"] ** 2)[:, None]).T \
            @ r["Gabs"]
        out["block_values"].append(r["value"])
        out["ess"].append(r["ess"])
    out["block_values"] = np.array(out["block_values"])
    out["ess"] = np.array(out["ess"])
    return out
