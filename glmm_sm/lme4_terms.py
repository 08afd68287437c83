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
effects (an unstructured covariance per level), which are not fitted yet: it is refused with
the uncorrelated ``||`` form in the message.  The terms are recognised with a regular
expression (parentheses holding a bar); everything else stays in the fixed-effects formula,
which the formula engine reads as before.
"""

from __future__ import annotations

import re

__all__ = ["lme4_terms", "split_random_terms"]

#: ``(expr | group)`` or ``(expr || group)``, with the ``+`` before it (for removal).
_TERM = re.compile(r"\+?\s*\(([^()|]*)(\|\|?)([^()]*)\)")


def lme4_terms(formula):
    """The lme4 ``(expr | group)`` terms of ``formula`` as ``(expr, bar, group)`` triples."""
    return [(a.strip(), bar, g.strip()) for a, bar, g in _TERM.findall(str(formula))]


def split_random_terms(formula, vc_formulas=None):
    """The fixed-effects formula and the variance components of its lme4 terms.

    Parameters
    ----------
    formula : str
        E.g. ``"Mate ~ 0 + Cross + (1 | Female) + (1 | Male)"``.
    vc_formulas : dict, optional
        Further components; their names must differ from the terms'.

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
    lhs, rhs = str(formula).split("~", 1)
    rhs = _TERM.sub(" ", rhs).strip().lstrip("+").strip()
    fixed = f"{lhs.strip()} ~ {rhs or '1'}"
    return fixed, {**(vc_formulas or {}), **comps}


def _components(expr, bar, group, formula):
    """``(name, design)`` pairs of one term ``(expr bar group)``."""
    parts = [t.strip() for t in expr.replace("-", "+ -").split("+") if t.strip()]
    no_intercept = any(t in ("0", "-1", "- 1") for t in parts)
    slopes = [t for t in parts if t not in ("0", "1", "-1", "- 1")]
    columns = ([] if no_intercept else [None]) + slopes
    if not columns:
        raise ValueError(f"formula {formula!r}: the term ({expr} {bar} {group}) has no "
                         "random effect")
    if bar == "|" and len(columns) > 1:
        alt = " || ".join([expr, group])
        raise ValueError(f"formula {formula!r}: ({expr} | {group}) has correlated random "
                         "effects (an unstructured covariance per level), which are not "
                         f"fitted yet; write ({alt}) for independent ones")
    out = []
    for g in _groups(group):
        factor = ":".join(f"C({v})" for v in g.split(":"))
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
