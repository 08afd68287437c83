"""Standard deviations and correlations of the random effects, as lme4's ``VarCorr`` prints
them, with delta-method standard errors and Monte Carlo standard errors.

From the covariance parameters ``(Var_a, Cov_ab, Var_b)`` of a term (natural scale, with the
estimate's covariance ``V`` and Monte Carlo covariance ``W``):

* ``SD_a = sqrt(Var_a)``, gradient ``1 / (2 SD_a)`` in ``Var_a``;
* ``Corr_ab = Cov_ab / (SD_a SD_b)``, gradient ``-Corr / (2 Var_a)``, ``1 / (SD_a SD_b)``,
  ``-Corr / (2 Var_b)`` in ``Var_a``, ``Cov_ab``, ``Var_b``;

and ``SE = sqrt(g' V g)``, ``MCSE = sqrt(g' W g)``.  Near a variance of 0 or a correlation
of +-1 these first-order errors say little (profile or LR intervals do better).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["varcorr_frame"]


def _rows(cov, theta, names, p):
    """``(group, name, name2, estimate, gradient)`` for every SD and correlation; the
    gradients are over all parameters (``p`` fixed effects first)."""
    out = []
    d = p + len(theta)
    for ui, u in enumerate(cov.units):
        sl = cov.unit_params(ui)
        idx = np.arange(sl.start, sl.stop)
        if len(u) == 1:
            var = theta[idx[0]]
            g = np.zeros(d)
            g[p + idx[0]] = 0.5 / np.sqrt(var) if var > 0 else np.nan
            out.append((names[idx[0]], "", "", np.sqrt(max(var, 0.0)), g))
            continue
        k = len(u)
        S = cov.sigma(theta, ui)
        sd = np.sqrt(np.clip(np.diag(S), 0.0, None))
        r, c = np.tril_indices(k)
        pos = {(i, j): p + idx[n] for n, (i, j) in enumerate(zip(r, c, strict=True))}
        group, labels = _term_labels(names, idx, k)
        for i in range(k):
            g = np.zeros(d)
            g[pos[(i, i)]] = 0.5 / sd[i] if sd[i] > 0 else np.nan
            out.append((group, labels[i], "", sd[i], g))
        for i in range(k):
            for j in range(i):
                ok = sd[i] * sd[j] > 0
                rho = S[i, j] / (sd[i] * sd[j]) if ok else np.nan
                g = np.full(d, np.nan) if not ok else np.zeros(d)
                if ok:
                    g[pos[(i, i)]] = -rho / (2 * S[i, i])
                    g[pos[(j, j)]] = -rho / (2 * S[j, j])
                    g[pos[(i, j)]] = 1.0 / (sd[i] * sd[j])
                out.append((group, labels[i], labels[j], rho, g))
    return out


def _term_labels(names, idx, k):
    """The term's name and its column labels, read off ``g Var(a)`` names."""
    r, c = np.tril_indices(k)
    labels = []
    group = names[idx[0]].split(" Var(")[0]
    for n, (i, j) in enumerate(zip(r, c, strict=True)):
        if i == j:
            labels.append(names[idx[n]].split(" Var(", 1)[1][:-1])
    return group, labels


def varcorr_frame(res):
    """lme4's ``VarCorr`` as a DataFrame: one row per SD (``name2`` empty) and per
    correlation, with its estimate, delta-method SE and MCSE.

    Parameters
    ----------
    res : MonteCarloGLMMResults

    Returns
    -------
    pandas.DataFrame
        Columns ``group``, ``name``, ``name2``, ``estimate``, ``se``, ``mcse``.
    """
    model = res.model
    p = model.k_fe
    params = np.asarray(res.params, dtype=float)
    theta = params[p:]
    V = np.asarray(res.cov_params(), dtype=float)
    W = res.mcse_cov if getattr(res, "mcse_cov", None) is not None else None
    W = np.zeros_like(V) if W is None else np.asarray(W, dtype=float)
    rows = []
    names = list(model.vcp_names)
    cov = model.design.cov
    for group, name, name2, est, gf in _rows(cov, theta, names, p):
        with np.errstate(invalid="ignore"):
            se = float(np.sqrt(gf @ V @ gf))
            mc = float(np.sqrt(max(gf @ W @ gf, 0.0)))
        rows.append({"group": group, "name": name, "name2": name2, "estimate": float(est),
                     "se": se, "mcse": mc})
    return pd.DataFrame(rows, columns=["group", "name", "name2", "estimate", "se", "mcse"])
