"""Random-effects design columns built sparse, straight from the factors' level codes.

The formula engine (patsy) builds a model matrix densely, rows x columns, and fills it one
column at a time: for a grouping factor with ``L`` levels that is ``O(n L)`` time and memory,
and ``C(g1):C(g2)`` has a column for every combination of levels, occurring or not (patsy also
allocates an ``L x L`` identity to code each factor).  A variance-component formula is almost
always one term of grouping factors, possibly times covariates (``0 + C(g)``,
``0 + C(g1):C(g2)``, ``0 + C(g):x``); for those this module reads the formula with patsy's
parser, evaluates each factor with patsy's factor protocol, codes the levels with pandas and
builds the ``n x k`` matrix with one stored value per row, in ``O(n log n)``:

* the columns are patsy's, in patsy's order (the left-most factor varying fastest) and with
  its names (``C(g1)[a]:C(g2)[1]:x``), the values patsy's products (``1 * x1 * x2``);
* a term of one grouping factor keeps every level patsy would give (the categories of a
  pandas Categorical included, used or not), as before;
* a term of two or more grouping factors has a column only for each combination of levels
  that occurs in the data (patsy's others are all zero: their effects have no observation).

Anything else (several terms, an intercept, contrasts, stateful transforms, level types
whose sorting or missing-value rules are not plainly those of numbers and strings, missing
values in the model build) returns ``None``, and the caller uses the formula engine as before,
so that every result and error message outside these cases is unchanged.
:func:`formula_missing_rows` gives the rows with missing values the same way, without a
model matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from glmm_sm.spec.compat import FORMULA_ERRORS

__all__ = ["SparseColumns", "capture_env", "sparse_columns", "formula_missing_rows"]


@dataclass(frozen=True)
class SparseColumns:
    """A formula's design columns.

    Attributes
    ----------
    matrix : scipy.sparse.csc_matrix (n, k)
        The columns, without stored zeros.
    names : list of str
        Their names, as the formula engine gives them.
    """

    matrix: sp.csc_matrix
    names: list


@dataclass(frozen=True)
class _Factor:
    """One evaluated factor: ``levels`` and ``codes`` (-1: missing) for a categorical one,
    ``values`` (n,) for a numerical one."""

    name: str
    levels: tuple | None = None
    codes: np.ndarray | None = None
    values: np.ndarray | None = None

    @property
    def categorical(self) -> bool:
        return self.levels is not None


def capture_env(eval_env, reference=0):
    """The patsy environment that ``FormulaManager().get_matrices(..., eval_env=eval_env)``
    would use if called ``reference`` frames above this function's caller (``None`` when the
    formula engine is not patsy)."""
    from statsmodels.formula._manager import FormulaManager

    if not getattr(FormulaManager(), "_using_patsy", False):
        return None
    from collections.abc import Mapping

    from patsy.eval import EvalEnvironment

    if isinstance(eval_env, EvalEnvironment):
        return eval_env
    if isinstance(eval_env, Mapping):
        return EvalEnvironment([{key: val} for key, val in eval_env.items()])
    if isinstance(eval_env, (int, np.integer)):
        return EvalEnvironment.capture(int(eval_env), reference=reference + 1)
    return None


def sparse_columns(formula, data, env):
    """The design columns of a one-term formula without intercept, or ``None``.

    Parameters
    ----------
    formula : str
        E.g. ``"0 + C(g1):C(g2)"`` or ``"0 + C(g):x"``.
    data : pandas.DataFrame
    env : patsy.EvalEnvironment or None
        From :func:`capture_env`; ``None`` gives ``None``.

    Returns
    -------
    SparseColumns or None
        ``None`` where the formula engine must build the columns (see the module notes).
    """
    if env is None or not isinstance(data, pd.DataFrame):
        return None
    try:
        terms = _rhs_terms(formula)
        if terms is None or len(terms) != 1 or not terms[0].factors:
            return None
        factors = _evaluate(terms[0].factors, _converted(data), env)
    except FORMULA_ERRORS:  # the formula engine evaluates it again and reports in its words
        return None
    if factors is None:
        return None
    cat = [f for f in factors if f.categorical]
    if not cat or any(np.any(f.codes < 0) for f in cat):
        return None  # missing values: the formula engine raises its own error
    if any(not np.all(np.isfinite(f.values)) for f in factors if not f.categorical):
        return None
    n = len(data)
    sizes = [len(f.levels) for f in cat]
    if float(np.prod([float(s) for s in sizes])) >= 2.0**62:
        return None
    # Column of each row in patsy's order: the left-most categorical factor varies fastest.
    key = np.zeros(n, dtype=np.int64)
    stride = 1
    for f, size in zip(cat, sizes, strict=True):
        key += f.codes.astype(np.int64) * stride
        stride *= size
    if len(cat) == 1:
        cols, col = key, np.arange(sizes[0], dtype=np.int64)
    else:
        col, cols = np.unique(key, return_inverse=True)
    values = np.ones(n)
    for f in factors:  # the product in patsy's order: 1 * x1 * x2 ...
        if not f.categorical:
            values = values * f.values
    k = col.size
    Z = sp.csc_matrix((values, (np.arange(n), cols.ravel())), shape=(n, k))
    Z.eliminate_zeros()
    return SparseColumns(Z, _names(factors, cat, sizes, col))


def formula_missing_rows(formula, data, env):
    """Rows of ``data`` with a missing value (patsy's rules: NaN, or None in a categorical)
    in any factor of ``formula`` (both sides), or ``None`` where the formula engine must
    tell."""
    if env is None or not isinstance(data, pd.DataFrame):
        return None
    try:
        from patsy import ModelDesc

        desc = ModelDesc.from_formula(formula)
        seen, factors = set(), []
        for term in [*desc.lhs_termlist, *desc.rhs_termlist]:
            for factor in term.factors:
                if factor not in seen:
                    seen.add(factor)
                    factors.append(factor)
        evaluated = _evaluate(factors, _converted(data), env)
    except FORMULA_ERRORS:  # the build evaluates them again and reports in its words
        return None
    if evaluated is None:
        return None
    out = np.zeros(len(data), dtype=bool)
    for f in evaluated:
        out |= f.codes < 0 if f.categorical else np.isnan(f.values)
    return out


def _rhs_terms(formula):
    """The right-hand terms of a formula without outcome and intercept, else ``None``."""
    from patsy import INTERCEPT, ModelDesc

    desc = ModelDesc.from_formula(formula)
    if desc.lhs_termlist or INTERCEPT in desc.rhs_termlist:
        return None
    return list(desc.rhs_termlist)


def _converted(data):
    """The data as statsmodels' formula manager hands it to patsy (string columns as
    object)."""
    try:
        from statsmodels.formula._manager import _maybe_convert_data
    except ImportError:  # pragma: no cover - older statsmodels convert nothing
        return data
    return _maybe_convert_data(data)


def _evaluate(factors, data, env):
    """Each factor evaluated and coded, or ``None`` if one is outside the plain cases."""
    from patsy.categorical import _CategoricalBox, guess_categorical

    n = len(data)
    out = []
    for factor in factors:
        state = {}
        if factor.memorize_passes_needed(state, env) != 0:
            return None  # a stateful transform (center(x), ...)
        value = factor.eval(state, data)
        if isinstance(value, (pd.Series, pd.DataFrame)) and not value.index.equals(data.index):
            return None
        name = factor.name()
        if guess_categorical(value):
            if isinstance(value, _CategoricalBox):
                if value.contrast is not None or value.levels is not None:
                    return None
                value = value.data
            coded = _level_codes(value, n)
            if coded is None:
                return None
            out.append(_Factor(name, levels=coded[0], codes=coded[1]))
        else:
            dtype = getattr(value, "dtype", None)
            if not isinstance(dtype, np.dtype) or dtype.kind not in "iuf":
                return None
            arr = np.asarray(value, dtype=np.float64)
            if arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr[:, 0]
            if arr.shape != (n,):
                return None
            out.append(_Factor(name, values=arr))
    return out


def _level_codes(value, n):
    """``(levels, codes)`` of a categorical factor's values as patsy codes them (levels
    sorted, missing values coded -1), or ``None`` outside numbers, strings, booleans and
    pandas Categoricals."""
    from patsy.util import (
        pandas_Categorical_categories,
        pandas_Categorical_codes,
        safe_is_pandas_categorical,
    )

    if safe_is_pandas_categorical(value):
        codes = np.asarray(pandas_Categorical_codes(value), dtype=np.int64)
        if codes.shape != (n,):
            return None
        return tuple(pandas_Categorical_categories(value)), codes
    dtype = getattr(value, "dtype", None)
    if not isinstance(dtype, np.dtype):
        return None
    arr = np.asarray(value)
    if arr.shape != (n,):
        return None
    if dtype.kind == "b":
        return (False, True), arr.astype(np.int64)
    if dtype.kind in "iuf":
        missing = np.isnan(arr) if dtype.kind == "f" else np.zeros(n, dtype=bool)
        if dtype.kind == "f" and np.any((arr == 0) & np.signbit(arr)):
            return None  # -0.0 and 0.0 are one level; patsy names it by the first seen
        levels = np.unique(arr[~missing])
        codes = np.searchsorted(levels, arr).astype(np.int64)
        codes[missing] = -1
        return tuple(levels.tolist()), codes
    if dtype.kind not in "OU":
        return None
    missing = np.asarray(pd.isna(arr), dtype=bool)
    if not all(v is None or (isinstance(v, (float, np.floating)) and v != v)
               for v in arr[missing]):
        return None  # pd.NA, NaT, ...: not missing for patsy
    present = arr[~missing]
    if present.size and pd.api.types.infer_dtype(present, skipna=False) != "string":
        return None  # mixed types sort by patsy's own rules
    levels = sorted(pd.unique(present.astype(object)))
    codes = pd.Index(levels, dtype=object).get_indexer(arr.astype(object)).astype(np.int64)
    if np.any(codes[~missing] < 0):
        return None
    return tuple(levels), codes


def _names(factors, cat, sizes, col):
    """Names of the columns ``col`` (indices in patsy's full product of levels)."""
    pieces = []
    rest = col.copy()
    digits = {}
    for f, size in zip(cat, sizes, strict=True):
        digits[f.name] = rest % size
        rest = rest // size
    for f in factors:
        if f.categorical:
            labels = np.array([f"{f.name}[{lv!s}]" for lv in f.levels], dtype=object)
            pieces.append(labels[digits[f.name]])
        else:
            pieces.append(np.full(col.size, f.name, dtype=object))
    if len(pieces) == 1:
        return list(pieces[0])
    return [":".join(p) for p in zip(*pieces, strict=True)]
