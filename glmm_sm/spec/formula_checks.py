"""Checks that a formula says what the user meant, before any model is built.

Ways of writing a model that the formula engines accept but that fit a different model from
the intended one are refused here, each with the form to write instead (lme4 terms
``(1 | herd)`` in the fixed-effects formula, which patsy would read as a logical "or" and
turn into one fixed covariate, are read by :mod:`glmm_sm.spec.lme4_terms`):

* a variance-component formula with lme4's bar (``"1|g"``);
* a variance-component design with an intercept column (``"C(herd)"`` without ``0 +``), or
  with a single column (``"0 + herd"`` on integer codes: one numeric column whose single
  random effect is shared by every observation).

Continuous random-slope columns (``"0 + C(g):x"``: one column per level of ``g``, holding
``x`` in that level's rows) remain allowed.
"""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp

__all__ = ["check_vc_formula", "check_vc_columns"]

def check_vc_formula(label, formula):
    """Refuse lme4's bar inside a variance-component formula."""
    if "|" in str(formula):
        raise ValueError(f"vc_formulas[{label!r}]: {formula!r} is lme4 syntax; a "
                         "variance-component formula gives the random-effects design columns "
                         "themselves: write '0 + C(g)' for a random intercept per level of g "
                         "(and '0 + C(g):x' for a random slope on x)")


def check_vc_columns(label, formula, values, names, alone=True):
    """Refuse a variance-component design with an intercept column or a single column.

    Parameters
    ----------
    label : str
        The component's name.
    formula : str
    values : ndarray or scipy.sparse matrix (n, k)
        The formula's design columns.
    names : list of str
        Their names.
    alone : bool
        The formula is its component's only one (a single column is then refused).
    """
    Z = sp.csc_matrix(values, dtype=np.float64, copy=True)
    Z.eliminate_zeros()
    n, k = Z.shape
    # A non-zero constant column is an intercept (an all-zero one is an empty level): every
    # row stored, all one value.
    nnz = np.diff(Z.indptr)
    const = []
    if n > 1 and np.any(nnz == n):
        stored = np.flatnonzero(nnz > 0)  # their data are consecutive runs of Z.data
        lo = np.minimum.reduceat(Z.data, Z.indptr[stored])
        hi = np.maximum.reduceat(Z.data, Z.indptr[stored])
        const = stored[(nnz[stored] == n) & (lo == hi)].tolist()
    if k > 1 and const:
        body = re.sub(r"^\s*[01]\s*\+\s*", "", str(formula).strip())
        raise ValueError(
            f"vc_formulas[{label!r}]: {formula!r} adds an intercept column "
            f"({names[const[0]]!r}: one random effect shared by every observation) beside "
            f"the level columns, which changes the model; write '0 + {body}' (the form "
            "'0 + C(g)' gives one random effect per level of g; continuous random-slope "
            "columns such as '0 + C(g):x' are also allowed)")
    if k == 1 and alone and not const:
        col = Z.data[Z.indptr[0] : Z.indptr[1]]
        uniq = np.unique(np.concatenate([col, np.zeros(1)]) if col.size < n else col)
        codes = uniq.size > 2 and np.all(uniq == np.round(uniq))
        hint = (f"; '{names[0]}' holds {uniq.size} distinct integer codes: if it is a grouping "
                f"factor write '0 + C({names[0]})'" if codes else
                "; for a random slope on x per level of g write '0 + C(g):x'")
        raise ValueError(
            f"vc_formulas[{label!r}]: {formula!r} gives a single numeric column, i.e. one "
            "random effect shared by every observation (scaled by the column), whose variance "
            f"cannot be estimated from one realization{hint}")


def categorical_response(ynames):
    """``(name, levels)`` when the response columns are the indicators of one categorical.

    The formula engines code a string or boolean response as one indicator column per level,
    named ``name[level]`` (``name[T.level]``); fitted as (successes, failures) these would
    silently count the first level as the success.
    """
    names = [ynames] if isinstance(ynames, str) else list(ynames)
    parts = [re.fullmatch(r"(.+)\[(?:T\.)?(.*)\]", str(name)) for name in names]
    if not names or not all(parts) or len({m.group(1) for m in parts}) != 1:
        return None
    return parts[0].group(1), [m.group(2) for m in parts]
