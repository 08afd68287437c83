"""Predictions with delta-method intervals, fitted values and residuals of a GLMM fit.

The linear predictor of a row with fixed-effects design ``x`` and random-effects design ``z``
is ``eta = x' beta + offset + z' u``.

* **Marginal** (``conditional=False``): ``eta = x' beta_hat + offset``, the prediction for a
  typical cluster (random effects at their mean, 0); ``Var(eta) = x' Cov(beta_hat) x``.
* **Conditional** (``conditional=True``): ``eta = x' beta_hat + offset + z' E[u | y]``, the
  prediction for the clusters seen in the fit, and

      Var(eta) = x' Cov(beta_hat) x + z' Var(u | y) z,

  with ``Var(u | y)`` the conditional covariance of the random effects given the data at the
  estimate (:func:`conditional_re_cov`: self-normalised importance-sampling moments of the
  final round's draws, block by block, so effects of one block keep their correlations).
  Random effects of levels not seen in the fit have conditional mean 0 and variance ``nu``.
  The two terms are added as if ``beta_hat`` and ``u | y`` were independent, and the
  uncertainty of ``nu_hat`` is left out.  ``E[u | y]`` moves with ``beta`` (an intercept
  shared with cluster effects is largely traded between them), so the cross term is usually
  negative and the interval conservative; glmmTMB's joint ``(beta, u)`` precision keeps it.

Either interval is a normal interval for ``eta`` mapped through the inverse link (the
endpoint method of statsmodels' GLM); ``mean_se`` is the delta-method standard error
``|d mu / d eta| sd(eta)``.  For a binomial response with trials the mean is a proportion,
as in statsmodels' GLM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from statsmodels.base._prediction_inference import PredictionResultsMean, _get_exog_predict
from statsmodels.regression._prediction import PredictionResults

from glmm_sm.mcla.rb.moments import rb_effect_cov
from glmm_sm.spec.formula_checks import check_new_data
from glmm_sm.spec.validation import nonnegative_up_to_rounding

__all__ = ["get_prediction", "conditional_re_cov", "block_cov_matrix", "conditional_mean",
           "resid_response", "resid_pearson", "resid_deviance", "random_effects_design",
           "NewRandomDesign", "prediction_offset"]


# ----------------------------------------------------------------------- Var(u | y)
def block_cov_matrix(layout, col_map, q, groups, mats, prior_var):
    """Assemble per-block covariance matrices into one sparse ``(q, q)`` matrix.

    Parameters
    ----------
    layout : BlockLayout
        The layout the blocks refer to.
    col_map : ndarray of int
        Model column of each column of the layout's design (``arange(q)`` unless the layout
        belongs to a model with fewer columns, as after dropping components at 0).
    q : int
        Number of random effects of the model.
    groups : list of (ids, cols)
        Block ids and their layout columns, ``cols`` of shape ``(n_g, qs)``.
    mats : list of ndarray
        Per group, the stacked ``(n_g, qs, qs)`` covariance matrices.
    prior_var : ndarray (q,)
        Variance of each model column, used for columns outside every block (no
        observation loads on them: their conditional distribution is the prior).

    Returns
    -------
    scipy.sparse.csr_matrix
        Block diagonal in the model's column order; columns absent from ``col_map`` (their
        component is at 0) have variance 0.
    """
    rows, cols, vals = [], [], []
    for (_, lc), M in zip(groups, mats, strict=True):
        mc = col_map[layout.col_perm[lc]]  # (n_g, qs) model columns
        qs = mc.shape[1]
        rows.append(np.repeat(mc, qs, axis=1).ravel())
        cols.append(np.tile(mc, (1, qs)).ravel())
        vals.append(np.asarray(M).ravel())
    outside = np.setdiff1d(col_map, col_map[layout.col_perm])
    rows.append(outside)
    cols.append(outside)
    vals.append(prior_var[outside])
    out = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(q, q))
    return out.tocsr()


def size_groups(layout):
    """Blocks grouped by their number of random effects: ``[(ids, cols (n_g, qs)), ...]``."""
    qb = np.diff(layout.col_ptr)
    out = []
    for qs in np.unique(qb[qb > 0]):
        ids = np.flatnonzero(qb == qs)
        out.append((ids, layout.col_ptr[ids][:, None] + np.arange(qs)[None, :]))
    return out


def _engine_view(res):
    """The final engine, the parameters it takes and the model column of each of its columns.

    After components went to 0 the engine belongs to the model without them.
    """
    mod = res.model
    view = res._boundary_view()
    if not mod.design.cov.has_vector and view.engine.data.k_vc != len(view.keep):
        raise RuntimeError("the final engine does not match the fitted components")
    return view.engine, view.theta, view.col_map


def conditional_re_cov(res, chunk_size=512):
    """Conditional covariance ``Var(u | y)`` of the random effects at the estimate.

    Self-normalised importance-sampling estimate from the final round's draws and weights,
    ``sum_k v_k (u_k - u_bar)(u_k - u_bar)'`` per block (effects of different blocks are
    independent given the data); after a Rao-Blackwellized fit the integrated effects
    enter through their node moments (:func:`~glmm_sm.mcla.rb.moments.rb_effect_cov`).  Its
    diagonal is ``res.random_effects()["SD"] ** 2``.

    Parameters
    ----------
    res : MonteCarloGLMMResults
    chunk_size : int
        Draws per pass over the data (memory only; the result does not depend on it).

    Returns
    -------
    scipy.sparse.csr_matrix (q, q)
        Block diagonal, in the model's column order (``model.vc_names``).  Components
        estimated at 0 have zero rows.
    """
    mod = res.model
    q = len(mod.vc_names)
    if getattr(res, "_data_removed", False):
        res._check_data("conditional_re_cov")
    if res.engine is None:  # every component at 0: the effects are exactly 0
        return sp.csr_matrix((q, q))
    engine, theta, col_map = _engine_view(res)
    data = engine.data
    groups = size_groups(data.layout)
    nu = np.asarray(res.params, dtype=float)[mod.k_fe:]
    var = mod.design.cov.variances(nu) if mod.design.cov.has_vector else nu
    if not getattr(engine, "joint_draws", True):  # Rao-Blackwellized: draws of v only
        cov = rb_effect_cov(engine, theta)
        mats = [np.stack([cov[b] for b in ids]) for ids, _ in groups]
        return block_cov_matrix(data.layout, col_map, q, groups, mats, var[mod.ident])
    boc = data.block_of_col
    s0 = np.zeros(data.n_blocks)
    s1 = np.zeros(data.q)
    s2 = [np.zeros((len(ids), c.shape[1], c.shape[1])) for ids, c in groups]
    for U, _, w, sc in engine.weighted_draws(theta, chunk_size):
        s0 = s0 * sc + w.sum(axis=1)
        s1 = s1 * sc[boc] + np.einsum("jk,jk->j", w[boc], U)
        for g, (ids, cols) in enumerate(groups):
            Ug = U[cols]  # (n_g, qs, K)
            s2[g] = (s2[g] * sc[ids][:, None, None]
                     + np.einsum("gik,gk,gjk->gij", Ug, w[ids], Ug))
    mean = s1 / s0[boc]
    mats = []
    for g, (ids, cols) in enumerate(groups):
        mg = mean[cols]
        C = s2[g] / s0[ids][:, None, None] - mg[:, :, None] * mg[:, None, :]
        mats.append(0.5 * (C + np.swapaxes(C, 1, 2)))
    return block_cov_matrix(data.layout, col_map, q, groups, mats, var[mod.ident])


def quadratic_rows(Z, C):
    """``diag(Z C Z')``: the variance of each row's ``z' u`` when ``Cov(u) = C``."""
    Z = sp.csr_matrix(Z)
    return np.asarray((Z @ C).multiply(Z).sum(axis=1)).ravel()


# ----------------------------------------------------------------------- designs
def _fixed_design(res, exog, offset, transform, exposure=None):
    """``(X, offset, row_labels)`` for a prediction; ``exog=None`` is the data fitted; the
    offset includes ``log(exposure)`` (:func:`prediction_offset`)."""
    mod = res.model
    check_new_data(mod, exog, transform)
    X, row_labels = _get_exog_predict(res, exog=exog, transform=transform)
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[1] != mod.k_fe:
        raise ValueError(f"exog must have {mod.k_fe} columns (the fixed effects "
                         f"{list(mod.exog_names)}); got shape {X.shape}")
    return X, prediction_offset(res, exog is not None, X.shape[0], offset, exposure), row_labels


def _per_row(value, n, name):
    """``value`` as ``n`` finite numbers (a scalar is repeated)."""
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be {n} finite numbers (one per row of exog) or one "
                         f"number; got shape {arr.shape}")
    return arr


def prediction_offset(res, new, n, offset=None, exposure=None):
    """The offset of the rows to predict, ``log(exposure)`` included (statsmodels GLM's rules).

    Parameters
    ----------
    res : MonteCarloGLMMResults
    new : bool
        The rows are new data (``exog`` given), not the data fitted.
    n : int
        Number of rows.
    offset : array_like or float, optional
        Default: the model's offset for the data fitted, 0 for new data.
    exposure : array_like or float, optional
        Positive; ``log(exposure)`` is added to the offset, only for a log-link (Poisson)
        model.  Default: the model's exposure for the data fitted.  A model fitted with
        exposure needs it for new data: leaving it out is refused, since the prediction would
        silently be the one for exposure 1 (write ``exposure=1`` to get that).

    Returns
    -------
    ndarray (n,)
    """
    mod = res.model
    fitted_exposure = getattr(mod, "exposure", None)
    log_exposure = 0.0
    if exposure is not None:
        if mod.family_kind.code != 1:
            raise ValueError(f"exposure: only a log-link (Poisson) model takes an exposure; "
                             f"this is a {mod.family_kind.name} model with the "
                             f"{mod.family_kind.link_name} link "
                             "(give binomial trials as the response's second column, or an "
                             "offset)")
        exposure = _per_row(exposure, n, "exposure")
        if np.any(exposure <= 0):
            raise ValueError("exposure must be positive; found "
                             f"{int(np.sum(exposure <= 0))} value(s) <= 0")
        log_exposure = np.log(exposure)
    elif new and fitted_exposure is not None:
        raise ValueError("exposure: the model was fitted with an exposure (log(exposure) is "
                         "in its offset), and the new rows come without one; pass "
                         "exposure=... for them (exposure=1 for the rate per unit of "
                         "exposure)")
    if offset is None:
        if new:
            base = np.zeros(n)
        else:
            base = np.asarray(mod.offset, dtype=float)
            if exposure is not None and fitted_exposure is not None:
                base = base - np.log(fitted_exposure)  # replaced by the exposure given
    else:
        base = _per_row(offset, n, "offset")
        if not new and exposure is None and fitted_exposure is not None:
            base = base + np.log(fitted_exposure)  # the model's exposure stays
    return base + log_exposure


@dataclass(frozen=True)
class NewRandomDesign:
    """The random-effects design of rows to predict, in the model's columns.

    Attributes
    ----------
    Z : scipy.sparse.csr_matrix (n, q)
        Loadings on the random effects seen in the fit (``model.vc_names``).
    extra_var : ndarray (n,)
        ``z' Sigma z`` of each row's effects of levels not seen in the fit (their
        conditional distribution is the prior, mean 0); 0 where there are none.
    new_levels : dict
        ``{component or term: [effect names]}`` of the levels not seen in the fit.
    """

    Z: sp.csr_matrix
    extra_var: np.ndarray
    new_levels: dict


def random_effects_design(res, exog, n, exog_vc=None, allow_new_levels=False):
    """The random-effects design of ``n`` rows for a conditional prediction.

    One builder for :meth:`~glmm_sm.MonteCarloGLMMResults.predict` and
    :func:`get_prediction`.  Scalar components are rebuilt from ``model.vc_formulas``;
    correlated terms ``(expr | group)`` from the grouping factor's indicators times the
    columns of ``expr`` evaluated with the coding of the fitted data (so that a factor in
    ``expr`` keeps its columns whatever levels the new rows hold).  Effects are matched to
    the fit by name: a level seen in the fit gets its conditional effect.

    Parameters
    ----------
    res : MonteCarloGLMMResults
    exog : DataFrame or None
        The rows; None: the data fitted.
    n : int
        Number of rows (of the fixed-effects design).
    exog_vc : array_like or sparse (n, q), optional
        The design given directly, in the model's columns.
    allow_new_levels : bool
        Levels not seen in the fit: ``False`` (default) refuses them with a ``ValueError``
        naming the component and the levels; ``True`` gives them effect 0 (their mean) and
        the prior variance, as lme4's ``allow.new.levels = TRUE``.

    Returns
    -------
    NewRandomDesign
    """
    mod = res.model
    q = len(mod.vc_names)
    if not isinstance(allow_new_levels, (bool, np.bool_)):
        raise TypeError(f"allow_new_levels must be True or False; got {allow_new_levels!r}")
    if exog_vc is not None:
        Z = sp.csr_matrix(exog_vc, dtype=float)
        if Z.shape != (n, q):
            raise ValueError(f"exog_vc must have shape ({n}, {q}) (rows of exog, the model's "
                             f"random effects); got {Z.shape}")
        return NewRandomDesign(Z, np.zeros(n), {})
    if exog is None:
        res._check_data("conditional predictions for the data fitted")
        return NewRandomDesign(sp.csr_matrix(mod.exog_vc), np.zeros(n), {})
    if not isinstance(exog, pd.DataFrame) or getattr(mod, "vc_formulas", "missing") == "missing":
        raise ValueError("conditional=True with new exog needs a DataFrame and a model built "
                         "with from_formula, or the random-effects design as exog_vc")
    nu = np.asarray(res.params, dtype=float)[mod.k_fe:]
    cov = mod.design.cov
    pos = {name: j for j, name in enumerate(mod.vc_names)}
    rows, cols, vals = [], [], []
    extra = np.zeros(n)
    new_levels = {}
    if mod.vc_formulas is not None:
        var_t = cov.variances(nu)
        for _, t, label, Zf, names in _scalar_component_rows(mod, exog, n):
            target = np.array([pos.get(c, pos.get(f"{label}:{c}", -1)) for c in names])
            for k in np.flatnonzero((target < 0) & (np.diff(Zf.indptr) > 0)):
                new_levels.setdefault(label, []).append(names[k])
                col = Zf[:, [k]].toarray().ravel()
                extra += col * col * var_t[t]
            seen = np.flatnonzero(target >= 0)
            coo = Zf[:, seen].tocoo()
            rows.append(coo.row)
            cols.append(target[seen][coo.col])
            vals.append(coo.data)
    vterms = list(getattr(mod, "vector_terms", None) or [])
    if len(vterms) != len(mod.design.cov_terms):
        raise ValueError("conditional=True with new exog: the model's correlated terms were "
                         "not given by a formula; pass the random-effects design of the new "
                         "rows as exog_vc (columns as model.vc_names)")
    for (group, expr), (_, comps, labels) in zip(vterms, mod.design.cov_terms, strict=True):
        G, M, levels = _vector_term_rows(mod, group, expr, labels, exog, n)
        ui = next(i for i, u in enumerate(cov.units) if tuple(u) == tuple(comps))
        S = cov.sigma(nu, ui)
        for li, lv in enumerate(levels):
            r = np.flatnonzero(G[:, li])
            if not r.size:
                continue
            names_l = [lv if lab == "Intercept" else f"{lv}:{lab}" for lab in labels]
            js = [pos.get(nm, -1) for nm in names_l]
            if min(js) < 0:
                new_levels.setdefault(f"({expr} | {group})", []).append(lv)
                Mr = M[r] * G[r, li][:, None]
                extra[r] += np.einsum("ia,ab,ib->i", Mr, S, Mr)
                continue
            for c, j in enumerate(js):
                rows.append(r)
                cols.append(np.full(r.size, j))
                vals.append(G[r, li] * M[r, c])
    if new_levels and not allow_new_levels:
        what = "; ".join(f"{k}: {v}" for k, v in new_levels.items())
        raise ValueError(f"exog: level(s) not seen in the fit ({what}); the fit has no "
                         "conditional effect for them. Pass allow_new_levels=True to give "
                         "them effect 0 (the prediction for a new cluster, with the prior "
                         "variance in get_prediction), or leave those rows out")
    Z = sp.csr_matrix((np.concatenate(vals) if vals else np.zeros(0),
                       (np.concatenate(rows) if rows else np.zeros(0, int),
                        np.concatenate(cols) if cols else np.zeros(0, int))), shape=(n, q))
    return NewRandomDesign(Z, extra, new_levels)


def _check_rows(got, n, what):
    if got != n:
        raise ValueError(f"exog: {what} give {got} rows, the fixed-effects formula {n} "
                         "(missing values?)")


def _scalar_component_rows(mod, exog, n):
    """Each variance-component formula on the rows ``exog``: ``(formula, component,
    component name, Z (csc, n x k), column names)``, the columns named as the formula
    engine names them (matched to ``model.vc_names`` by name: a level's indicator has
    the same name whatever other levels the rows hold).  Unlike the fit, a single column
    (rows of one level) is allowed."""
    from statsmodels.formula._manager import FormulaManager

    from glmm_sm.spec.compat import FORMULA_ERRORS
    from glmm_sm.spec.design import _normalize_vc_spec

    formulas, comp_names, comp = _normalize_vc_spec(mod.vc_formulas,
                                                    mod.vc_spec.get("vcp_names"),
                                                    mod.vc_spec.get("equal"))
    out = []
    for f, t in zip(formulas, comp, strict=True):
        label = comp_names[t]
        try:
            mat = pd.DataFrame(FormulaManager().get_matrices(f, exog, eval_env={},
                                                             pandas=True, na_action="raise"))
        except FORMULA_ERRORS as exc:
            raise ValueError(f"exog: vc_formulas[{label!r}]: could not evaluate {f!r} on the "
                             f"new rows: {exc}") from exc
        _check_rows(mat.shape[0], n, f"vc_formulas[{label!r}]")
        values = mat.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"exog: vc_formulas[{label!r}]: {f!r} gives NaN or infinite "
                             "values on the new rows")
        out.append((f, int(t), label, sp.csc_matrix(values), [str(c) for c in mat.columns]))
    return out


def _vector_term_rows(mod, group, expr, labels, exog, n):
    """``(G, M, levels)`` of a correlated term ``(expr | group)`` for the rows ``exog``:
    indicators of the group's levels (n, L), ``expr``'s columns with the fitted data's
    coding (n, k) and the level names, as :func:`~glmm_sm.spec.lme4_terms.vector_term_design`
    names them."""
    from statsmodels.formula._manager import FormulaManager

    from glmm_sm.spec.compat import FORMULA_ERRORS

    label = f"({expr} | {group})"
    factor = ":".join(f"C({v})" for v in group.split(":"))
    frame = getattr(mod.data, "frame", None)
    if frame is None:
        raise ValueError(f"conditional predictions for new data: the correlated term {label} "
                         "needs the fitted data's coding of its columns, and the model's "
                         "data frame is gone")
    try:
        fit_mgr = FormulaManager()
        fit_mgr.get_matrices(expr, frame, eval_env={}, pandas=True, na_action="drop")
        mgr = FormulaManager()
        M = pd.DataFrame(mgr.get_matrices(fit_mgr.spec, exog, eval_env={}, pandas=True,
                                          prediction=True))
        G = pd.DataFrame(FormulaManager().get_matrices(f"0 + {factor}", exog, eval_env={},
                                                       pandas=True, na_action="raise"))
    except FORMULA_ERRORS as exc:
        raise ValueError(f"exog: random-effect term {label}: could not evaluate it on the "
                         f"new rows: {exc}") from exc
    _check_rows(M.shape[0], n, f"the columns of {label}")
    _check_rows(G.shape[0], n, f"the grouping factor of {label}")
    if [str(c) for c in M.columns] != list(labels):
        raise ValueError(f"exog: random-effect term {label}: its columns on the new rows are "
                         f"{[str(c) for c in M.columns]}, in the fit {list(labels)}")
    return (G.to_numpy(dtype=np.float64), M.to_numpy(dtype=np.float64),
            [str(c) for c in G.columns])


# ----------------------------------------------------------------------- prediction
def get_prediction(res, exog=None, offset=None, conditional=False, transform=True,
                   exog_vc=None, allow_new_levels=False, exposure=None):
    """Predicted means with delta-method standard errors and intervals.

    See the module docstring for the marginal and conditional variances.

    Parameters
    ----------
    res : MonteCarloGLMMResults
    exog : DataFrame or array_like, optional
        New data (a DataFrame goes through the model's formula); default: the data fitted.
    offset : array_like, optional
        Offset of the rows; default: the model's for the data fitted, else 0.
    conditional : bool
        Include the predicted random effects and their conditional uncertainty.
    transform : bool
        Pass ``exog`` through the model's formula.
    exog_vc : array_like or sparse (n, q), optional
        Random-effects design of the rows in the model's columns (``model.vc_names``), for
        conditional predictions from arrays; by default built from the DataFrame ``exog``.
    allow_new_levels : bool
        With ``conditional=True`` and new data: levels not seen in the fit are an error
        (default), or get effect 0 and the prior variance (``True``, lme4's
        ``allow.new.levels``); see :func:`random_effects_design`.
    exposure : array_like or float, optional
        Log-link models: ``log(exposure)`` joins the offset (:func:`prediction_offset`);
        required for new data when the model was fitted with an exposure.

    Returns
    -------
    statsmodels.base._prediction_inference.PredictionResultsMean
        ``predicted_mean``, ``se_mean``, ``conf_int(alpha=0.05)`` and ``summary_frame()``
        (columns ``mean``, ``mean_se``, ``mean_ci_lower``, ``mean_ci_upper``); ``linpred``
        holds the same for the linear predictor.
    """
    mod = res.model
    if not isinstance(conditional, (bool, np.bool_)):
        raise TypeError(f"conditional must be True or False; got {conditional!r}")
    X, off, row_labels = _fixed_design(res, exog, offset, transform, exposure)
    k = mod.k_fe
    beta = np.asarray(res.params, dtype=float)[:k]
    cov_beta = np.asarray(res.cov_params(), dtype=float)[:k, :k]
    eta = X @ beta + off
    var = np.einsum("ij,jk,ik->i", X, cov_beta, X)
    scale = np.einsum("ij,jk,ik->i", np.abs(X), np.abs(cov_beta), np.abs(X))
    if conditional:
        rd = random_effects_design(res, exog, X.shape[0], exog_vc, allow_new_levels)
        eta = eta + rd.Z @ np.asarray(res._re_mean, dtype=float)
        C = res.random_effects_cov
        var = var + quadratic_rows(rd.Z, C) + rd.extra_var
        scale = scale + quadratic_rows(abs(rd.Z), abs(C)) + np.abs(rd.extra_var)
    # x' C x >= 0 for a positive semi-definite C: below 0 only by rounding, else (a
    # covariance that is not PSD) NaN with a warning.
    var = nonnegative_up_to_rounding(var, scale, "the variance of the linear predictor "
                                     "(rows of exog)")
    link = mod.family.link
    linpred = PredictionResults(eta, var, var_resid=np.nan, dist="norm",
                                row_labels=row_labels)
    mean = link.inverse(eta)
    var_mean = link.inverse_deriv(eta) ** 2 * var
    return PredictionResultsMean(mean, var_mean, var_resid=np.nan, df=res.df_resid,
                                 dist="norm", row_labels=row_labels, linpred=linpred,
                                 link=link)


# ----------------------------------------------------------------------- residuals
def conditional_mean(res):
    """Conditional mean per observation, ``mu_i = g^{-1}(x_i' beta + offset_i + z_i' E[u|y])``.

    The inverse link at the predicted random effects (what lme4's ``fitted()`` gives), a
    proportion for binomial responses.
    """
    return np.asarray(res.predict(conditional=True), dtype=float)


def resid_response(res):
    """``y_i - N_i mu_i`` with ``mu_i`` the conditional mean (statsmodels GLM's convention:
    for a binomial response with trials, successes minus expected successes)."""
    a = res.model.arrays
    return a.y - a.ntrials * conditional_mean(res)


def _fitted_alpha(res):
    """The negative binomial's estimated ``alpha`` (after beta and the variances)."""
    mod = res.model
    return float(np.asarray(res.params)[mod.k_fe + mod.k_vcp])


def resid_pearson(res):
    """``sqrt(w_i) (y_i - N_i mu_i) / sqrt(N_i V(mu_i))``, conditional on the predicted random
    effects (statsmodels GLM's Pearson residuals with ``var_weights = w``)."""
    a = res.model.arrays
    mu = conditional_mean(res)
    if a.family.code == 2:  # NB2 at the fitted alpha (the model's family holds its start)
        var = mu + _fitted_alpha(res) * mu * mu
    else:
        var = a.ntrials * res.model.family.variance(mu)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(a.weights) * (a.y - a.ntrials * mu) / np.sqrt(var)


def resid_deviance(res):
    """Deviance residuals at the conditional mean, ``sign(y_i - N_i mu_i) sqrt(d_i)`` with
    ``d_i`` observation ``i``'s share of the GLM deviance (times its weight), as statsmodels
    GLM's ``resid_deviance`` with the weights as ``var_weights``:

    * binomial, ``p = y / N``: ``d = 2 w N [p log(p / mu) + (1 - p) log((1 - p) / (1 - mu))]``;
    * Poisson: ``d = 2 w [y log(y / mu) - (y - mu)]``;
    * negative binomial (NB2, fitted ``alpha``):
      ``d = 2 w [y log(y / mu) - (y + 1/alpha) log((1 + alpha y) / (1 + alpha mu))]``;

    ``0 log 0 = 0``.  ``mu`` as in :func:`resid_response`.
    """
    from scipy.special import xlogy

    a = res.model.arrays
    mu = conditional_mean(res)
    y, N, w = a.y, a.ntrials, a.weights
    with np.errstate(divide="ignore", invalid="ignore"):
        if a.family.code == 1:
            d = 2.0 * w * (xlogy(y, y) - xlogy(y, mu) - (y - mu))
            scale = 2.0 * w * (np.abs(xlogy(y, y)) + np.abs(xlogy(y, mu)) + y + mu)
        elif a.family.code == 2:
            alpha = _fitted_alpha(res)
            tail = (y + 1.0 / alpha) * (np.log1p(alpha * y) - np.log1p(alpha * mu))
            d = 2.0 * w * (xlogy(y, y) - xlogy(y, mu) - tail)
            scale = 2.0 * w * (np.abs(xlogy(y, y)) + np.abs(xlogy(y, mu)) + np.abs(tail))
        else:
            p = y / N
            q = 1.0 - p
            terms = (xlogy(p, p), xlogy(p, mu), xlogy(q, q), xlogy(q, 1.0 - mu))
            d = 2.0 * w * N * (terms[0] - terms[1] + terms[2] - terms[3])
            scale = 2.0 * w * N * sum(np.abs(t) for t in terms)
    # Each d_i >= 0 (Gibbs' inequality): below 0 only by rounding.
    d = nonnegative_up_to_rounding(d, scale, "deviance residuals: unit deviances")
    return np.sign(y - N * mu) * np.sqrt(d)
