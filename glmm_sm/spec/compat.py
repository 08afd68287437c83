"""statsmodels shims: model data that unpickles safely, and the statsmodels family.

statsmodels rebuilds a formula's model spec on unpickling by looking up the caller's frames
(``ModelData.__setstate__``), which fails when ``pickle.loads`` runs at module level; the
model's data object is switched to a subclass here that falls back to an empty environment.
Pickles refer to these classes by their home in :mod:`glmm_sm.model` as well (re-exported
there).
"""

from __future__ import annotations

from statsmodels.base.data import ModelData, PandasData

__all__ = ["SAFE_DATA", "sm_family", "FORMULA_ERRORS", "ENGINE_ERRORS"]


def _engine_errors():
    """The formula engines' own exception classes (patsy's, formulaic's), where installed."""
    out = []
    try:
        from patsy import PatsyError
        out.append(PatsyError)
    except ImportError:  # pragma: no cover - patsy is optional from statsmodels 0.15
        pass
    try:
        from formulaic.errors import FormulaicError
        out.append(FormulaicError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(out)


#: The formula engines' own exception classes.
ENGINE_ERRORS = _engine_errors()

#: What evaluating a formula on a data frame may raise: the engines' errors and the Python
#: errors of evaluating a column expression (a name not found, a bad call, a failed
#: conversion, a call stack too shallow for the environment).
FORMULA_ERRORS = ENGINE_ERRORS + (NameError, KeyError, ValueError, TypeError, SyntaxError,
                                  AttributeError, IndexError)


class _SafeUnpickle:
    """Model data whose unpickling survives a shallow call stack (statsmodels' own
    ``__setstate__`` fails there).

    statsmodels rebuilds the formula's model spec on unpickling by looking up the caller's
    frames, which fails at module level; this falls back to an empty environment.
    """

    def __setstate__(self, d):
        try:
            super().__setstate__(dict(d))
        except FORMULA_ERRORS:
            d = dict(d)
            if d.pop("restore_model_spec", None) is not None or "formula" in d:
                from statsmodels.formula._manager import FormulaManager

                mgr = FormulaManager()
                frame = d.get("frame")
                mgr.get_matrices(d["formula"], frame, eval_env={}, pandas=True)
                self.model_spec = mgr.spec
            self.__dict__.update(d)


class _SafePandasData(_SafeUnpickle, PandasData):
    pass


class _SafeModelData(_SafeUnpickle, ModelData):
    pass


SAFE_DATA = {PandasData: _SafePandasData, ModelData: _SafeModelData}


def sm_family(fam):
    """The statsmodels family object of a family kind (Binomial, with its link, or Poisson)."""
    from statsmodels.genmod import families as smf

    if fam.code == 2:
        return smf.NegativeBinomial(alpha=fam.alpha)
    if fam.code == 1:
        return smf.Poisson()
    links = {"probit": smf.links.Probit, "cloglog": smf.links.CLogLog}
    return smf.Binomial(link=links[fam.link_name]()) if fam.link_name in links else \
        smf.Binomial()
