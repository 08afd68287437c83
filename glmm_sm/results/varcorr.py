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

import re

import numpy as np
import pandas as pd

__all__ = ["varcorr_frame", "varcorr_table", "effect_levels", "group_and_name"]

#: A factor's column as the formula engine names it, ``C(herd)[1]`` or ``C(herd)[T.1]``;
#: group 1 is the level.
_LEVEL = re.compile(r"C\((?:[^()]|\([^()]*\))*\)\[(?:T\.)?([^\]]*)\]")
#: A factor in a variance-component formula, ``C(herd)``; group 1 is the variable.
_FACTOR = re.compile(r"^C\(\s*([^(),]+?)\s*\)$")


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


def effect_levels(model):
    """The level each random effect (column of ``exog_vc``) belongs to, as lme4's ``ranef``
    names its rows: ``C(herd)[1]`` is ``1``, ``C(a)[1]:C(b)[2]`` is ``1:2``, a random
    slope ``C(g)[1]:x`` is ``1``; the columns of a correlated term take the level of
    their row.  A name without a factor's level stays as it is."""
    out = []
    for name in model.vc_names:
        found = _LEVEL.findall(str(name))
        out.append(":".join(found) if found else str(name))
    for _, comps, _ in model.design.cov_terms:
        first = np.flatnonzero(model.ident == comps[0])
        for c in comps[1:]:
            for a, b in zip(first, np.flatnonzero(model.ident == c), strict=True):
                out[b] = out[a]
    return out


def group_and_name(model, t):
    """lme4's ``Groups`` and ``Name`` of the scalar variance component ``t``.

    From the component's formula when the model has one: ``0 + C(g)`` is ``("g",
    "(Intercept)")``, ``0 + C(g):x`` is ``("g", "x")``, ``0 + C(a):C(b)`` is ``("a:b",
    "(Intercept)")``.  Otherwise the component's name, with ``(Intercept)`` when its
    columns are indicators (every loading 1) and the component's name when they are not.
    """
    name = str(model.design.vcp_names[t])
    formulas = getattr(model, "vc_formulas", None)
    formula = formulas.get(name) if isinstance(formulas, dict) else None
    if isinstance(formula, str):
        body = re.sub(r"^\s*0\s*\+\s*", "", formula.strip())
        if "+" not in body:
            parts = [p.strip() for p in body.split(":")]
            groups = [m.group(1) for m in map(_FACTOR.match, parts) if m]
            others = [p for p in parts if not _FACTOR.match(p)]
            if groups:
                return ":".join(groups), ":".join(others) if others else "(Intercept)"
    Z = getattr(model.design, "Z", None)
    if Z is not None:
        import scipy.sparse as sp

        cols = sp.csc_matrix(Z)[:, np.flatnonzero(model.ident == t)]
        if cols.nnz and np.all(cols.data == 1.0):
            return name, "(Intercept)"
        return name, name
    return name, "(Intercept)"


def varcorr_table(res):
    """lme4's ``VarCorr`` printout as a DataFrame, with delta-method SEs and MCSEs.

    Parameters
    ----------
    res : MonteCarloGLMMResults

    Returns
    -------
    pandas.DataFrame
        One row per random effect of a grouping factor: ``Groups``, ``Name``, ``Variance``,
        ``Std.Dev.``, ``Corr`` (with the group's first effect; ``Corr.2`` with its second,
        ..., when a term has three or more columns; NaN where there is none), then
        ``SE(Std.Dev.)``, ``MCSE(Std.Dev.)`` and ``SE(Corr)``, ``MCSE(Corr)``, ... (the
        errors of :func:`varcorr_frame`).  A Laplace fit's MCSEs are 0.
    """
    model = res.model
    long = varcorr_frame(res)
    cov = model.design.cov
    rows = []
    n_corr = max((len(u) for u in cov.units), default=1) - 1
    corr_cols = ["Corr"] + [f"Corr.{j + 1}" for j in range(1, n_corr)]
    pos = 0
    for u in cov.units:
        k = len(u)
        sds = long.iloc[pos:pos + k]
        corrs = long.iloc[pos + k:pos + k + k * (k - 1) // 2]
        pos += k + k * (k - 1) // 2
        if k == 1:
            groups, names = group_and_name(model, u[0])
            names = [names]
        else:
            groups = sds["group"].iloc[0]
            names = ["(Intercept)" if n == "Intercept" else n for n in sds["name"]]
        for i in range(k):
            sd = sds.iloc[i]
            row = {"Groups": groups, "Name": names[i], "Variance": sd["estimate"] ** 2,
                   "Std.Dev.": sd["estimate"]}
            for c in corr_cols:
                row[c] = np.nan
            row["SE(Std.Dev.)"], row["MCSE(Std.Dev.)"] = sd["se"], sd["mcse"]
            for c in corr_cols:
                row[f"SE({c})"] = row[f"MCSE({c})"] = np.nan
            for r in corrs.itertuples():
                if r.name == sds["name"].iloc[i]:
                    j = list(sds["name"]).index(r.name2)
                    c = corr_cols[j]
                    row[c], row[f"SE({c})"], row[f"MCSE({c})"] = r.estimate, r.se, r.mcse
            rows.append(row)
    columns = (["Groups", "Name", "Variance", "Std.Dev."] + corr_cols
               + ["SE(Std.Dev.)", "MCSE(Std.Dev.)"]
               + [f"{e}({c})" for c in corr_cols for e in ("SE", "MCSE")])
    return pd.DataFrame(rows, columns=columns)
