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

from glmm_sm.spec.compat import FORMULA_ERRORS

__all__ = ["check_vc_formula", "check_vc_columns", "check_formula_text", "check_fixed_formula",
           "no_random_effects", "check_new_data", "cbind_response"]

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


def check_formula_text(formula):
    """Refuse a model formula that is not a string with ``~`` and balanced parentheses,
    naming the unclosed (or unopened) parenthesis."""
    if not isinstance(formula, str):
        raise TypeError(f"formula must be a string such as 'y ~ x + (1 | g)'; got "
                        f"{type(formula).__name__}")
    if "~" not in formula:
        raise ValueError(f"formula {formula!r} has no '~': write the response on its left, "
                         "e.g. 'y ~ x + (1 | g)'")
    opened = []
    for i, ch in enumerate(formula):
        if ch == "(":
            opened.append(i)
        elif ch == ")":
            if not opened:
                raise ValueError(f"formula {formula!r}: the ')' at position {i} closes no "
                                 "'('; a random-effect term is written (1 | g)")
            opened.pop()
    if opened:
        i = opened[-1]
        raise ValueError(f"formula {formula!r}: the '(' at position {i} "
                         f"({formula[i:i + 20]!r}) is never closed; a random-effect term is "
                         "written (1 | g), with both parentheses")


_CBIND = re.compile(r"\s*cbind\s*\((.*)\)\s*", re.DOTALL)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def cbind_response(formula):
    """``formula`` with lme4's binomial response ``cbind(successes, failures) ~ ...``
    rewritten as the two-column response ``successes + failures ~ ...`` that the formula
    engine reads (an argument that is not a plain column name, e.g. ``size - incidence``,
    becomes ``I(size - incidence)``); other formulas are returned unchanged.

    Raises ``ValueError`` naming the term when ``cbind`` does not have exactly two
    arguments.
    """
    lhs, sep, rhs = formula.partition("~")
    m = _CBIND.fullmatch(lhs)
    if m is None:
        return formula
    args, depth, cur = [], 0, ""
    for ch in m.group(1):
        if ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    args.append(cur.strip())
    if len(args) != 2 or not all(args):
        raise ValueError(f"formula {formula!r}: the response {lhs.strip()} must have two "
                         "arguments, cbind(successes, failures), e.g. cbind(incidence, "
                         "size - incidence)")
    cols = [a if _NAME.fullmatch(a) else f"I({a})" for a in args]
    return f"{cols[0]} + {cols[1]} {sep}{rhs}"


def check_fixed_formula(formula, fixed):
    """Refuse what is left in the fixed-effects part ``fixed`` of ``formula`` (its lme4
    terms removed) that the formula engine would misread: a bar outside parentheses and
    R's ``offset()`` term."""
    rhs = fixed.split("~", 1)[1]
    if "|" in rhs:
        group = rhs.rsplit("|", 1)[1].strip() or "g"
        raise ValueError(f"formula {formula!r}: a random-effect term needs its own "
                         f"parentheses, e.g. '(1 | {group})'; outside parentheses '|' is a "
                         "logical 'or' to the formula engine")
    _check_factor_syntax(formula, fixed)
    m = re.search(r"(?<![\w.])offset\s*\(", rhs)
    if m:
        depth, end = 0, len(rhs)
        for j in range(m.end() - 1, len(rhs)):
            depth += (rhs[j] == "(") - (rhs[j] == ")")
            if depth == 0:
                end = j + 1
                break
        term = rhs[m.start():end]
        inner = term[term.index("(") + 1 : -1].strip()
        hint = (f"offset={inner!r} (a column of data)" if inner.isidentifier() else
                "offset=<array>, e.g. offset=np.log(data['n']) for offset(log(n))")
        raise ValueError(f"formula {formula!r}: {term} in the formula is not supported; "
                         f"remove it and pass {hint} to from_formula")


def no_random_effects(formula, fixed):
    """The ``ValueError`` for a formula without random effects and no ``vc_formulas``: the
    formula engine's parse error if the formula does not parse, else how to add them."""
    try:
        from patsy import ModelDesc, PatsyError
    except ImportError:  # pragma: no cover - another formula engine
        ModelDesc = None
    if ModelDesc is not None:
        try:
            ModelDesc.from_formula(fixed)
        except PatsyError as exc:
            return ValueError(f"formula {formula!r} could not be read: {exc}. A random-effect "
                              "term is written '(1 | g)' (g a grouping column of data)")
    return ValueError(f"formula {formula!r} has no random-effect term and vc_formulas is not "
                      "given: add one such as '+ (1 | g)' to the formula (g a grouping column "
                      "of data), or pass vc_formulas={'g': '0 + C(g)'}; for a model without "
                      "random effects use statsmodels' GLM")


def _check_factor_syntax(formula, fixed):
    """Refuse a term of ``fixed`` that is not a Python expression (the formula engine
    would raise a bare ``SyntaxError`` while building), e.g. ``(1 g)`` for ``(1 | g)``."""
    import ast

    try:
        from patsy import ModelDesc
        desc = ModelDesc.from_formula(fixed)
    except FORMULA_ERRORS:  # a parse error is reported by the build, in context
        return
    for term in [*desc.lhs_termlist, *desc.rhs_termlist]:
        for factor in term.factors:
            code = factor.name()
            try:
                ast.parse(code, mode="eval")
            except SyntaxError as exc:
                m = re.fullmatch(r"(.*[\w)])\s+([A-Za-z_][\w.]*)", code.strip())
                if m:
                    raise ValueError(f"formula {formula!r}: the term ({code}) is not an "
                                     "expression; if it is a random-effect term, it lacks its "
                                     f"bar: write ({m.group(1)} | {m.group(2)})") from None
                raise ValueError(f"formula {formula!r}: the term {code!r} is not a valid "
                                 f"expression ({exc.msg})") from None


def check_new_data(model, exog, transform=True):
    """Refuse new data for a prediction that lacks columns the fixed-effects formula reads,
    naming them (the formula engine would report only a failed name lookup)."""
    import pandas as pd

    spec = getattr(getattr(model, "data", None), "model_spec", None)
    infos = getattr(spec, "factor_infos", None)
    if not transform or not isinstance(exog, pd.DataFrame) or not infos:
        return
    try:
        from patsy.eval import ast_names
    except ImportError:  # pragma: no cover - another formula engine
        return
    needed = []
    for factor, info in infos.items():
        code = getattr(factor, "code", None)
        state = getattr(info, "state", None) or {}
        env = state.get("eval_env") if isinstance(state, dict) else None
        known = set()
        for ns in getattr(env, "_namespaces", ()):
            known.update(ns)
        if code is None:
            continue
        try:
            names = list(ast_names(code))
        except SyntaxError:
            continue
        needed += [nm for nm in names if nm not in known]
    absent = [nm for nm in dict.fromkeys(needed) if nm not in exog.columns]
    if absent:
        raise ValueError(f"exog: the new data lack column(s) {absent}, which the formula "
                         f"{getattr(model, 'formula', '')!r} reads; add them to the data frame "
                         "(the response is not needed)")
