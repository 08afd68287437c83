"""The missing-data policy: which rows hold missing values, and dropping or refusing them.

``from_formula`` drops rows with a NaN in any variable it uses (``missing="drop"``, the
default, counted in a warning) or names the columns holding NaN (``missing="raise"``); the
array constructor drops rows with a NaN in any input with ``missing="drop"``.  Only NaN is
missing: an infinite value is an error, reported by the checks of :mod:`._validation`.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["complete_rows", "raise_on_missing", "drop_missing_rows",
           "apply_missing_policy", "formula_rows", "check_rows_left"]


def complete_rows(formulas, data, eval_env, arrays):
    """Mask of the rows of ``data`` where every formula and array is free of missing values."""
    from statsmodels.formula._manager import FormulaManager

    from glmm_sm.spec.compat import FORMULA_ERRORS
    from glmm_sm.spec.sparse_formula import capture_env, formula_missing_rows

    mgr = FormulaManager()
    env = capture_env(eval_env)  # the environment get_matrices would use from here
    pos = data.reset_index(drop=True)
    keep = np.ones(len(data), dtype=bool)
    for f in formulas:
        # The factors' missing values, without building the model matrix (dense, rows x
        # levels); the formula engine where they cannot be read directly.
        missing = formula_missing_rows(f, pos, env)
        if missing is not None:
            keep &= ~missing
            continue
        try:
            out = mgr.get_matrices(f, pos, eval_env=eval_env, pandas=True, na_action="drop")
        except FORMULA_ERRORS:  # the real build afterwards reports the error
            continue
        rows = out[1].index if isinstance(out, tuple) else out.index
        keep &= np.isin(np.arange(len(pos)), np.asarray(rows))
    for arr in arrays:
        if arr is not None:  # only NaN is missing; inf is an error reported by the build
            keep &= ~np.isnan(np.asarray(arr, dtype=float))
    return keep


def raise_on_missing(labelled_formulas, data):
    """``missing="raise"``: name the columns of ``data`` used in a formula that hold NaN.

    A column counts as used when its name appears in the formula as a whole word; anything
    this misses is still refused by the formula engine, in its own words.
    """
    for label, f in labelled_formulas:
        bad = {}
        for col in data.columns:
            if (isinstance(col, str)
                    and re.search(rf"(?<![\w.]){re.escape(col)}(?!\w)", f)):
                k = int(data[col].isna().sum())
                if k:
                    bad[col] = k
        if bad:
            where = ", ".join(f"{c!r} ({k} row{'s' * (k > 1)})" for c, k in bad.items())
            raise ValueError(f"{label}: missing values (NaN) in column(s) {where}; use "
                             "missing='drop' to drop those rows")


def _used_columns(formulas, data):
    """Columns of ``data`` whose name appears as a whole word in one of ``formulas``."""
    return [col for col in data.columns if isinstance(col, str) and any(
        re.search(rf"(?<![\w.]){re.escape(col)}(?!\w)", f) for f in formulas)]


def check_rows_left(keep, data, formulas, arrays):
    """Refuse a model without rows: ``data`` empty, or every row dropped for missing values
    (naming the columns, and the arrays, that hold them).

    Parameters
    ----------
    keep : ndarray of bool
        The rows kept.
    data : pandas.DataFrame
    formulas : list of str
        Every formula used.
    arrays : dict
        ``{name: array or None}``: weights, offset, exposure.
    """
    if len(data) == 0:
        raise ValueError("data has no rows (after subset, if given): a model needs "
                         "observations")
    if np.any(keep):
        return
    where = []
    for col in _used_columns(formulas, data):
        k = int(data[col].isna().sum())
        if k:
            where.append(f"{col!r} ({k})")
    for name, arr in arrays.items():
        if arr is not None:
            k = int(np.isnan(np.asarray(arr, dtype=float)).sum())
            if k:
                where.append(f"{name} ({k})")
    raise ValueError(f"no rows left after dropping all {len(data)} rows with missing values "
                     f"(NaN) in {', '.join(where) or 'the variables used'}; check those "
                     "columns (a column read as all missing, or a misspelt missing-value "
                     "code), or leave unused variables out of the formula")


def drop_missing_rows(endog, exog, exog_vc, weights, offset):
    """``missing="drop"`` for the array constructor: drop rows with NaN in any input.

    Returns the five inputs without those rows (pandas objects keep their index) and the
    number of rows dropped.  Inputs whose length is not that of ``endog`` are returned
    unchanged, for the constructor's checks to report.
    """
    parts = (endog, exog, exog_vc, weights, offset)
    n = np.shape(endog)[0] if np.ndim(endog) else 0
    keep = np.ones(n, dtype=bool)
    for value in parts:
        keep &= ~_nan_rows(value, n)
    if keep.all():
        return (*parts, 0)
    rows = np.flatnonzero(keep)
    return (*(_take_rows(value, rows, n) for value in parts), n - rows.size)


def _nan_rows(value, n):
    """Rows of ``value`` (n rows) holding a NaN; all False if it is not an n-row array."""
    out = np.zeros(n, dtype=bool)
    if value is None:
        return out
    if sp.issparse(value):
        if value.shape[0] == n:
            csr = sp.csr_matrix(value)
            rows = np.repeat(np.arange(n), np.diff(csr.indptr))
            out[rows[np.isnan(csr.data)]] = True
        return out
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return out  # non-numeric: reported by the constructor's checks
    if arr.ndim == 0 or arr.shape[0] != n:
        return out
    return np.isnan(arr.reshape(n, -1)).any(axis=1)


def _take_rows(value, rows, n):
    if value is None or (not sp.issparse(value) and np.ndim(value) == 0):
        return value
    if np.shape(value)[0] != n:
        return value
    if isinstance(value, (pd.Series, pd.DataFrame)):
        return value.iloc[rows]
    if sp.issparse(value):
        return sp.csr_matrix(value)[rows]
    return np.asarray(value)[rows]


def apply_missing_policy(kwargs, endog, exog, exog_vc, weights, offset):
    """The array constructor's ``missing`` argument (in ``kwargs``, default ``"raise"``).

    With ``"drop"``, rows holding a NaN in any input are dropped (counted in a warning) and
    ``kwargs["missing"]`` becomes ``"none"`` for statsmodels.  Returns the five inputs and
    the number of rows dropped.
    """
    kwargs.setdefault("missing", "raise")
    if kwargs["missing"] not in ("none", "drop", "raise"):
        raise ValueError("missing must be 'none', 'drop' or 'raise'; got "
                         f"{kwargs['missing']!r}")
    n_dropped = 0
    if kwargs["missing"] == "drop":
        endog, exog, exog_vc, weights, offset, n_dropped = drop_missing_rows(
            endog, exog, exog_vc, weights, offset)
        if n_dropped:
            warnings.warn(f"{n_dropped} of {n_dropped + np.shape(endog)[0]} rows have missing "
                          "values and were dropped", UserWarning, stacklevel=3)
        kwargs["missing"] = "none"
    return endog, exog, exog_vc, weights, offset, n_dropped


def formula_rows(missing, formula, components, data, eval_env, arrays):
    """``from_formula``'s missing-data policy: a mask of the rows of ``data`` to keep.

    Parameters
    ----------
    missing : {"drop", "raise"}
        ``"drop"``: rows with a missing value in any formula or array are left out (counted
        in a warning pointing at ``from_formula``'s caller); ``"raise"``: a ``ValueError``
        names the columns holding NaN, and every row is kept.
    formula : str
        The fixed-effects formula.
    components : list of (str, str, int)
        Each variance-component formula with its label and component.
    data : pandas.DataFrame
    eval_env
        The formula engine's evaluation environment.
    arrays : tuple
        Weights, offset, exposure (None where not given).
    """
    keep = np.ones(len(data), dtype=bool)
    if missing == "raise":
        raise_on_missing([(f"formula {formula!r}", formula)]
                         + [(f"vc_formulas[{label!r}]: {f!r}", f)
                            for f, label, _ in components], data)
    if missing == "drop":
        keep = complete_rows([formula, *(f for f, _, _ in components)], data, eval_env,
                             arrays)
        n_drop = int((~keep).sum())
        if n_drop:
            warnings.warn(f"{n_drop} of {len(data)} rows have missing values and were "
                          "dropped", UserWarning, stacklevel=3)
    return keep
