"""lme4 random-effect terms in the formula, ``y ~ x + (1 | g)``, as variance components.

The scalar terms are read here and become variance components of the ``vc_formulas`` form:

=========================  ==========================================================
term                       components (name: design)
=========================  ==========================================================
``(1 | g)``                ``g: 0 + C(g)`` (exactly ``{"g": "0 + C(g)"}``)
``(0 + x | g)``            ``g:x: 0 + C(g):x`` (a random slope, one per level)
``(1 + x || g)``           ``g`` and ``g:x``, independent
``(1 | g1/g2)``            ``g1`` and ``g1:g2`` (``g2`` nested in ``g1``)
``(1 | g1:g2)``            ``g1:g2: 0 + C(g1):C(g2)``
=========================  ==========================================================

A term with ``|`` and more than one column, ``(x | g)`` or ``(1 + x | g)``, has correlated
effects: each level of ``g`` has a vector of effects ``N(0, Sigma)`` with an unstructured
``Sigma`` (:mod:`glmm_sm.spec.covstruct`).  Its columns are the formula engine's model matrix of
``x`` (``1 + x`` for ``x``, as in lme4), each multiplied by the indicators of ``g``'s levels
(:func:`vector_term_design`); its parameters are named ``g Var(Intercept)``,
``g Cov(x, Intercept)``, ``g Var(x)``.  Correlated terms come after the scalar components.

The terms are the parenthesized groups holding a bar at their own level (their expression
may hold calls, ``(1 + log(x) | g)``); everything else stays in the fixed-effects formula,
which the formula engine reads as before.  A grouping factor is a column name, or an
interaction ``g1:g2`` or nesting ``g1/g2`` of column names; ``C(g)`` and R's ``factor(g)``
are read as ``g``.  Anything else (``a + b``, ``g*h``, an empty group, a call) is refused,
as lme4 refuses it ("Invalid grouping factor specification"), with the form to write.
"""

from __future__ import annotations

import re

import numpy as np

from glmm_sm.spec.compat import FORMULA_ERRORS

__all__ = ["lme4_terms", "remove_terms", "split_random_terms", "vector_terms",
           "vector_term_design"]

#: A grouping variable, possibly wrapped in ``C()`` / ``factor()`` / ``as.factor()``.
_GROUP_ATOM = re.compile(r"(?:(?:C|factor|as\.factor)\(\s*([A-Za-z_]\w*)\s*\)|([A-Za-z_]\w*))")


def _term_spans(formula):
    """``(start, end, expr, bar, group)`` of each lme4 term of ``formula``: a parenthesized
    group with a bar at its own depth; ``start`` includes a ``+`` before it."""
    text = str(formula)
    out, stack = [], []
    for i, ch in enumerate(text):
        if ch == "(":
            stack.append(i)
        elif ch == ")" and stack:
            lo = stack.pop()
            inner, depth, cut = text[lo + 1 : i], 0, None
            for j, c in enumerate(inner):
                depth += (c == "(") - (c == ")")
                if c == "|" and depth == 0:
                    cut = j
                    break
            if cut is None or stack:  # no bar, or inside another group (reported later)
                continue
            bar = "||" if inner[cut + 1 : cut + 2] == "|" else "|"
            expr, group = inner[:cut], inner[cut + len(bar):]
            start = lo
            before = text[:lo].rstrip()
            if before.endswith("+"):
                start = len(before) - 1
            elif before.endswith("-"):
                raise ValueError(f"formula {text!r}: the random-effect term "
                                 f"({expr.strip()} {bar} {group.strip()}) is subtracted; "
                                 "random-effect terms are added: write "
                                 f"'+ ({expr.strip()} {bar} {group.strip()})'")
            out.append((start, i + 1, expr.strip(), bar, group.strip()))
    return out


def lme4_terms(formula):
    """The lme4 ``(expr | group)`` terms of ``formula`` as ``(expr, bar, group)`` triples,
    the group in its canonical form (``C(g)`` and ``factor(g)`` read as ``g``)."""
    return [(e, bar, _grouping(e, bar, g, formula)) for _, _, e, bar, g in
            _term_spans(formula)]


def _grouping(expr, bar, group, formula):
    """The canonical form of a term's grouping factor (``g``, ``g1:g2``, ``g1/g2``), or a
    ``ValueError`` naming the term and what to write."""
    term = f"({expr} {bar} {group})"
    head = f"formula {str(formula)!r}: the random-effect term {term}"
    g = group.strip()
    if not g:
        raise ValueError(f"{head} has no grouping factor after the bar; write e.g. "
                         f"({expr or '1'} {bar} g) with g a column of data")
    if not expr.strip():
        raise ValueError(f"{head} has nothing before the bar; write (1 {bar} {g}) for a "
                         f"random intercept per level of {g}, or (1 + x {bar} {g}) to add a "
                         "random slope of x")
    parts = re.split(r"\s*([:/])\s*", g)
    names = []
    for k, part in enumerate(parts):
        if k % 2:
            names.append(part)
            continue
        m = _GROUP_ATOM.fullmatch(part.strip())
        if m is None:
            break
        names.append(m.group(1) or m.group(2))
    else:
        return "".join(names)
    if "+" in g and "(" not in g:
        a, b = (s.strip() for s in g.split("+", 1))
        raise ValueError(f"{head}: a grouping factor is one variable or an interaction of "
                         f"variables, not a sum ('{g}' would group rows by the value of "
                         f"{a} + {b}; lme4 refuses it: Invalid grouping factor "
                         f"specification); write ({expr} {bar} {a}:{b}) for one effect per "
                         f"combination of {a} and {b}, or ({expr} {bar} {a}) + "
                         f"({expr} {bar} {b}) for two crossed components")
    if "*" in g and "(" not in g:
        a, b = (s.strip() for s in g.split("*", 1))
        raise ValueError(f"{head}: '*' is not allowed in a grouping factor (lme4: Invalid "
                         f"grouping factor specification); write ({expr} {bar} {a}) + "
                         f"({expr} {bar} {b}) + ({expr} {bar} {a}:{b}) for both factors and "
                         f"their interaction, or ({expr} {bar} {a}:{b}) for the "
                         "interaction alone")
    raise ValueError(f"{head}: the grouping factor must be a column name of data (C(g) and "
                     f"factor(g) are read as g), or an interaction g1:g2 or nesting g1/g2 of "
                     f"column names; got '{g}'. To group by an expression, make it a column "
                     "first: data['grp'] = ...")


def remove_terms(formula):
    """``formula`` without its lme4 terms (and the ``+`` before each)."""
    text = str(formula)
    for start, end, *_ in reversed(_term_spans(text)):
        text = text[:start] + " " + text[end:]
    return text


def split_random_terms(formula, vc_formulas=None, data=None):
    """The fixed-effects formula and the variance components of its lme4 terms.

    Parameters
    ----------
    formula : str
        E.g. ``"Mate ~ 0 + Cross + (1 | Female) + (1 | Male)"``.
    vc_formulas : dict, optional
        Further components; their names must differ from the terms'.
    data : pandas.DataFrame, optional
        With it, a ``|`` term whose one expression gives several columns (a factor,
        ``(0 + f | g)``) is correlated, as in lme4.

    Returns
    -------
    fixed : str
        The formula without its random-effect terms (``"y ~ 1"`` if nothing is left).
    vc_formulas : dict or list or None
        ``vc_formulas`` with the terms' components added (unchanged when there are none).
    """
    terms = lme4_terms(formula)
    if not terms:
        return formula, vc_formulas
    comps = {}
    for expr, bar, group in terms:
        if _is_vector(expr, bar, data):
            continue
        for name, design in _components(expr, bar, group, formula):
            if name in comps:
                raise ValueError(f"formula {formula!r}: the random-effect terms give the "
                                 f"component {name!r} twice")
            comps[name] = design
    if vc_formulas is not None and not isinstance(vc_formulas, dict):
        raise ValueError(f"formula {formula!r}: lme4 random-effect terms can be combined only "
                         "with vc_formulas given as a dict")
    clash = sorted(set(comps) & set(vc_formulas or {}))
    if clash:
        raise ValueError(f"formula {formula!r}: the random-effect terms' component(s) {clash} "
                         "are also in vc_formulas; give each component once")
    lhs, rhs = remove_terms(formula).split("~", 1)
    rhs = rhs.strip().lstrip("+").strip()
    fixed = f"{lhs.strip()} ~ {rhs or '1'}"
    if not comps:
        return fixed, vc_formulas
    return fixed, {**(vc_formulas or {}), **comps}


def _columns(expr):
    parts = [t.strip() for t in expr.replace("-", "+ -").split("+") if t.strip()]
    no_intercept = any(t in ("0", "-1", "- 1") for t in parts)
    slopes = [t for t in parts if t not in ("0", "1", "-1", "- 1")]
    return ([] if no_intercept else [None]) + slopes


def _is_vector(expr, bar, data=None):
    """A ``|`` term with more than one column: by its terms, or (given ``data``) by the
    formula engine's model matrix (a factor gives one column per level)."""
    if bar != "|":
        return False
    if len(_columns(expr)) > 1:
        return True
    if data is None:
        return False
    from statsmodels.formula._manager import FormulaManager

    try:
        mat = FormulaManager().get_matrices(expr, data, eval_env=0, pandas=True,
                                            na_action="drop")
    except FORMULA_ERRORS:  # evaluated again, with its own message, where it is built
        return False
    return mat.shape[1] > 1


def vector_terms(formula, data=None):
    """The correlated terms of ``formula`` as ``(group, expr)`` pairs, e.g.
    ``("district", "1 + urban")``; nested groups ``g1/g2`` are refused."""
    out = []
    for expr, bar, group in lme4_terms(formula):
        if not _is_vector(expr, bar, data):
            continue
        g = re.sub(r"\s+", "", group)
        if "/" in g:
            raise ValueError(f"formula {formula!r}: write the nested correlated term "
                             f"({expr} | {group}) as one term per level of nesting, e.g. "
                             f"({expr} | {g.split('/')[0]}) + ({expr} | {g.replace('/', ':')})")
        out.append((g, expr))
    return out


def vector_term_design(group, expr, data, eval_env=0):
    """Columns of the correlated term ``(expr | group)``.

    Returns
    -------
    Z : scipy.sparse.csr_matrix (n, k L)
        ``k`` blocks of ``L`` columns: block ``c`` is the model-matrix column ``c`` of
        ``expr`` times the indicators of ``group``'s ``L`` levels.
    names : list of str
        Effect names: the level's name for the intercept, ``level:column`` for the others.
    labels : list of str
        The ``k`` model-matrix columns (``Intercept``, ``urban[T.Y]``, ...).
    """
    import pandas as pd
    import scipy.sparse as sp
    from statsmodels.formula._manager import FormulaManager

    from glmm_sm.spec.design import _frame_columns
    from glmm_sm.spec.sparse_formula import capture_env, sparse_columns

    mgr = FormulaManager()
    factor = _factor(group)
    label = f"({expr} | {group})"
    # The group's indicators sparse (only the occurring combinations of a g1:g2 group).
    built = sparse_columns(f"0 + {factor}", data, capture_env(eval_env))
    try:
        if built is None:
            G = pd.DataFrame(mgr.get_matrices(f"0 + {factor}", data, eval_env=eval_env,
                                              pandas=True, na_action="raise"))
            built = _frame_columns(G)
        built = (built.matrix.tocsr(), built.names)
        M = pd.DataFrame(mgr.get_matrices(expr, data, eval_env=eval_env, pandas=True,
                                          na_action="raise"))
    except FORMULA_ERRORS as exc:  # the formula engines raise many types
        raise ValueError(f"random-effect term {label}: could not evaluate it: {exc}") from exc
    labels = [str(c) for c in M.columns]
    if len(labels) < 2:
        raise ValueError(f"random-effect term {label} gives {len(labels)} column(s); a "
                         "correlated term needs at least two")
    Gm, lev = built
    Mv = M.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(Mv)):
        raise ValueError(f"random-effect term {label}: NaN or infinite values")
    Z = sp.hstack([Gm.multiply(Mv[:, [c]]) for c in range(Mv.shape[1])], format="csr")
    names = [lv if lab == "Intercept" else f"{lv}:{lab}" for lab in labels for lv in lev]
    return Z, names, labels


def _factor(group):
    """``C(g1):C(g2)`` for the grouping ``g1:g2``; a Python keyword (a column named ``class``)
    cannot be read as a name by the formula engine and is refused with the fix."""
    import keyword

    names = group.split(":")
    for v in names:
        if keyword.iskeyword(v.strip()):
            raise ValueError(f"grouping factor {v.strip()!r} in ({group}): a column named like "
                             "a Python keyword cannot be read by the formula engine; rename "
                             f"it, e.g. data.rename(columns={{{v.strip()!r}: "
                             f"{v.strip() + '_'!r}}})")
    return ":".join(f"C({v})" for v in names)


def _components(expr, bar, group, formula):
    """``(name, design)`` pairs of one term ``(expr bar group)``."""
    columns = _columns(expr)
    if not columns:
        raise ValueError(f"formula {formula!r}: the term ({expr} {bar} {group}) has no "
                         "random effect")
    out = []
    for g in _groups(group):
        factor = _factor(g)
        for col in columns:
            if col is None:
                out.append((g, f"0 + {factor}"))
            else:
                out.append((f"{g}:{col}", f"0 + {factor}:{col}"))
    return out


def _groups(group):
    """``g1/g2/g3`` -> ``g1``, ``g1:g2``, ``g1:g2:g3``; anything else as it is."""
    levels = [re.sub(r"\s+", "", g) for g in group.split("/")]
    return [":".join(levels[: i + 1]) for i in range(len(levels))]
