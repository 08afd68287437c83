"""The user's data frame, checked and converted before the formula engine reads it.

``from_formula`` passes its ``data`` through :func:`checked_frame`, which

* refuses duplicate column names (the formula engine would read a two-column frame, or
  name two parameters alike);
* turns pandas' nullable dtypes into the numpy ones the formula engine knows, with
  ``pd.NA`` as a missing value: ``Int64`` / ``Float64`` become float64 with NaN (``Int64``
  without missing values int64), ``boolean`` becomes bool (object ``True`` / ``False`` /
  ``None`` when it has missing values), ``string`` becomes object with ``None``; ``pd.NA``
  in an object column becomes ``None`` (patsy's missing value for a factor);
* reads a boolean response (``numpy`` bool or ``boolean``) as 0/1, and refuses a
  categorical or text one (the formula engine would make indicator columns of it);
* refuses a covariate stored as text or as objects whose values are mostly numbers (a CSV
  column with one ``"n/a"``), which the formula engine would silently make a factor with a
  level per distinct value; names the column and the values that are not numbers;
* refuses a grouping column holding two values that print alike (``0`` and ``"0"``: two
  levels with one name), and warns when one mixes numbers and strings (each string a level
  of its own: a missing-value code such as ``"n/a"`` would be a group).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

from glmm_sm.spec.compat import FORMULA_ERRORS

__all__ = ["checked_frame", "formula_variables"]


def checked_frame(data, formula, vc_formulas=None):
    """``data`` ready for the formula engine (a converted copy where needed).

    Parameters
    ----------
    data : pandas.DataFrame
    formula : str
        The model formula, lme4 terms included.
    vc_formulas : dict, list or None
        Variance-component formulas (their ``C(name)`` columns are grouping factors).

    Returns
    -------
    pandas.DataFrame
    """
    dup = data.columns[data.columns.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"data has duplicate column name(s) {dup}: a formula cannot tell "
                         "them apart; rename them, or keep the first of each with "
                         "data.loc[:, ~data.columns.duplicated()]")
    converted = {}
    for col in data.columns:
        out = _numpy_column(data[col])
        if out is not None:
            converted[col] = out
    lhs, covariates, groups = formula_variables(formula, vc_formulas)
    for col in lhs:
        if col in data.columns:
            values = converted.get(col, data[col])
            if values.dtype == bool or _object_bools(values):
                converted[col] = pd.Series(
                    np.array([np.nan if v is None else float(v) for v in values], dtype=float)
                    if values.dtype == object else values.to_numpy(dtype=float),
                    index=data.index, name=col)
    for col in lhs:
        if col in data.columns:
            _check_response(col, converted.get(col, data[col]))
    if converted:
        data = data.assign(**{str(k): v for k, v in converted.items()}) \
            if all(isinstance(k, str) for k in converted) else _replaced(data, converted)
    for col in covariates:
        if col in data.columns and col not in lhs:
            _check_covariate(col, data[col])
    for col in groups:
        if col in data.columns:
            _check_grouping(col, data[col])
    return data


def _replaced(data, converted):
    data = data.copy()
    for k, v in converted.items():
        data[k] = v
    return data


def _numpy_column(s):
    """The column with numpy dtype if it has a pandas nullable one (else ``None``)."""
    dtype = s.dtype
    if isinstance(dtype, pd.BooleanDtype):
        if not s.isna().any():
            return s.astype(bool)
        return pd.Series(np.array([None if v is pd.NA else bool(v) for v in s], dtype=object),
                         index=s.index, name=s.name)
    if isinstance(dtype, (pd.Int8Dtype, pd.Int16Dtype, pd.Int32Dtype, pd.Int64Dtype,
                          pd.UInt8Dtype, pd.UInt16Dtype, pd.UInt32Dtype, pd.UInt64Dtype)):
        if not s.isna().any():
            return s.astype(dtype.numpy_dtype)
        return pd.Series(s.to_numpy(dtype=float, na_value=np.nan), index=s.index, name=s.name)
    if isinstance(dtype, (pd.Float32Dtype, pd.Float64Dtype)):
        return pd.Series(s.to_numpy(dtype=float, na_value=np.nan), index=s.index, name=s.name)
    if isinstance(dtype, pd.StringDtype) and dtype.na_value is pd.NA:
        return pd.Series(np.array([None if v is pd.NA else v for v in s], dtype=object),
                         index=s.index, name=s.name)
    if dtype == np.dtype("O"):
        na = s.isna().to_numpy()
        if na.any() and any(v is pd.NA for v in s.to_numpy()[na]):
            return pd.Series(np.array([None if v is pd.NA else v for v in s], dtype=object),
                             index=s.index, name=s.name)
    return None


def _object_bools(values):
    """An object column of ``True`` / ``False`` / ``None`` only (a boolean with NA)."""
    if values.dtype != object:
        return False
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, (bool, np.bool_)) for v in present)


def formula_variables(formula, vc_formulas=None):
    """Column names in the roles the checks need: ``(response, covariates, groups)``.

    The response's bare names (left of ``~``); the bare names among the fixed-effect terms
    and the expressions of the lme4 terms (numeric covariates unless written ``C(x)``);
    the grouping factors of the lme4 terms and the ``C(name)`` of ``vc_formulas``.  A
    formula the engine cannot parse gives what could be read (its errors come later).
    """
    from glmm_sm.spec.lme4_terms import _term_spans, remove_terms

    lhs, covariates, groups = [], [], []
    try:
        spans = _term_spans(formula)
        fixed = remove_terms(formula)
    except ValueError:
        return lhs, covariates, groups
    for _, _, expr, _, group in spans:
        groups += [m.group(1) or m.group(2) for m in re.finditer(
            r"(?:C|factor|as\.factor)\(\s*([A-Za-z_]\w*)\s*\)|([A-Za-z_]\w*)", group)]
        covariates += _bare_names(expr)
    if "~" in fixed:
        left, right = fixed.split("~", 1)
        lhs = _bare_names(left)
        covariates = _bare_names(right) + covariates
    specs = []
    if isinstance(vc_formulas, dict):
        for v in vc_formulas.values():
            specs += [v] if isinstance(v, str) else list(v)
    elif isinstance(vc_formulas, str):
        specs = [vc_formulas]
    elif vc_formulas is not None:
        specs = list(vc_formulas)
    for f in specs:
        if isinstance(f, str):
            groups += re.findall(r"(?<![\w.])C\(\s*([A-Za-z_]\w*)\s*\)", f)
    return lhs, list(dict.fromkeys(covariates)), list(dict.fromkeys(groups))


def _bare_names(text):
    """The factors of a formula side that are a bare name (``x``, not ``C(x)``)."""
    try:
        from patsy import ModelDesc
    except ImportError:  # pragma: no cover - another formula engine
        return []
    try:
        desc = ModelDesc.from_formula(f"0 + {text}" if text.strip() else "0")
    except FORMULA_ERRORS:  # patsy's parse errors are reported by the build
        return []
    out = []
    for term in desc.rhs_termlist:
        for factor in term.factors:
            code = factor.name()
            if code.isidentifier():
                out.append(code)
    return out


def _is_number(v):
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, (int, float, np.integer, np.floating)):
        return True
    if isinstance(v, str):
        try:
            float(v)
        except ValueError:
            return False
        return v.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity")
    return False


def _text_dtype(s):
    return s.dtype == object or isinstance(s.dtype, pd.StringDtype)


def _check_covariate(col, s):
    """Refuse a text/object covariate whose values are mostly numbers."""
    if not _text_dtype(s):
        return
    counts = _distinct(s)
    if not counts:
        return
    numeric = {v: _is_number(v) for v in counts}
    total = sum(counts.values())
    k = sum(c for v, c in counts.items() if numeric[v])
    if k == 0 or 2 * k < total:
        return
    others = [v for v in counts if not numeric[v]]
    nlev = len(counts)
    bad = total - k
    what = (f"{k} of its {total} values are numbers and {bad} "
            f"{'is' if bad == 1 else 'are'} not "
            f"({', '.join(repr(v) for v in others[:5])}{', ...' if len(others) > 5 else ''})"
            if others else "all its values are numbers, stored as "
            + ("text" if all(isinstance(v, str) for v in counts) else "objects"))
    na = (f", or read the file with na_values={[str(v) for v in others[:5]]}" if others
          else "")
    raise ValueError(f"column {col!r} is used as a numeric covariate but has {s.dtype} "
                     f"dtype: {what}; the formula engine would make it a factor with "
                     f"{nlev} levels. Convert it first: data[{col!r}] = "
                     f"pd.to_numeric(data[{col!r}], errors='coerce') (values that are not "
                     f"numbers become missing){na}; or write C({col}) if it is a factor")


def _check_response(col, s):
    """Refuse a categorical or text response (the formula engine would make indicator
    columns of it)."""
    if not (isinstance(s.dtype, pd.CategoricalDtype) or _text_dtype(s)):
        return
    present = list(_distinct(s))
    if present and _text_dtype(s) and all(_is_number(v) for v in present):
        raise ValueError(f"endog: the response {col!r} holds numbers stored as {s.dtype}; "
                         f"convert it first: data[{col!r}] = pd.to_numeric(data[{col!r}], "
                         "errors='coerce')")
    levels = list(s.cat.categories) if isinstance(s.dtype, pd.CategoricalDtype) else \
        sorted({str(v) for v in present})
    raise ValueError(f"endog: the response {col!r} is categorical (levels {levels[:6]}"
                     f"{' ...' if len(levels) > 6 else ''}); give it as a 0/1 number (1 for a "
                     "success), as True/False, or as two columns 'successes + failures'")


def _distinct(s):
    """``{value: count}`` of the column's values that are not missing, in order of first
    appearance (values equal in Python, such as ``1`` and ``1.0``, counted as one)."""
    present = s[s.notna()]
    if not len(present):
        return {}
    codes, uniques = pd.factorize(present.to_numpy(dtype=object))
    return dict(zip(uniques.tolist(), np.bincount(codes).tolist(), strict=True))


def _missing(v):
    return v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and v != v)


def _check_grouping(col, s):
    """Refuse a grouping column with two values that print alike; warn when it mixes
    numbers and strings."""
    if s.dtype != object or pd.api.types.infer_dtype(s, skipna=True) in (
            "string", "integer", "floating", "mixed-integer-float", "boolean", "empty"):
        return  # one kind of value: distinct values print differently
    present = list(_distinct(s))
    seen = {}
    for v in present:
        key = str(v)
        if key in seen:
            a = seen[key]
            raise ValueError(f"grouping column {col!r} holds {a!r} ({type(a).__name__}) and "
                             f"{v!r} ({type(v).__name__}): two levels with the same name. "
                             f"Make the column one type, e.g. data[{col!r}] = "
                             f"data[{col!r}].astype(str)")
        seen[key] = v
    kinds = {"number" if _is_number(v) and not isinstance(v, str) else type(v).__name__
             for v in present}
    if "number" in kinds and "str" in kinds:
        strings = [v for v in present if isinstance(v, str)]
        warnings.warn(f"grouping column {col!r} mixes numbers and strings "
                      f"({', '.join(repr(v) for v in strings[:5])}): each string is a level "
                      "of its own. If they mark missing values, convert the column first: "
                      f"data[{col!r}] = pd.to_numeric(data[{col!r}], errors='coerce')",
                      UserWarning, stacklevel=4)
