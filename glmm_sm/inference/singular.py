"""Singular covariance matrices of correlated terms, resolved as a statistician would.

A correlated term ``(1 + x | g)`` whose estimated covariance ``Sigma`` is singular (lme4's
"boundary (singular) fit": a variance at 0 or a correlation at +-1; the rule is
``glmm_sm.spec.covstruct.singular_terms``) has a *degenerate direction*: the unit
eigenvector ``v`` of ``Sigma`` with the (near) zero eigenvalue.  The effects ``b_l`` of every
level then satisfy ``v' b_l = 0``: the combination ``v' (effects)`` does not vary between
levels.  When ``v`` is (nearly) a coordinate axis, one column's variance is 0 (drop that
column); otherwise the columns' effects are perfectly correlated (``|rho| = 1``).

Two reduced models are the usual next step (Bates et al., "Parsimonious mixed models",
2015): the term with uncorrelated columns (lme4's ``||``; it drops the covariances only,
interior parameters, so its likelihood-ratio statistic is ``chi2`` with one degree of freedom
per covariance), and the term without a column (it sets a variance and its covariances to
0: for a 2 x 2 term the null distribution of the statistic is the 50:50 mixture of
``chi2(1)`` and ``chi2(2)``, Self and Liang 1987 as in :mod:`glmm_sm.inference.lrtest`).
Nothing is refitted unless the user calls :func:`reduced_fits`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from glmm_sm.core.random import as_seed_sequence, child_seed
from glmm_sm.inference.lrtest import lrtest
from glmm_sm.inference.profile_cov import model_without
from glmm_sm.spec.covstruct import SINGULAR_TOL, singular_terms

__all__ = ["DegenerateDirection", "ReducedFits", "degenerate_directions", "reduced_fits",
           "term_formula"]

#: An eigenvector with a component at least this large (in absolute value) is the axis of
#: that column: its variance is 0, rather than a correlation at +-1.
AXIS_COS = 0.99
#: Spawn key of the reduced fits' seeds under the fit's seed.
REDUCED_KEY = 7003


@dataclass(frozen=True)
class DegenerateDirection:
    """The degenerate direction of one singular correlated term.

    Attributes
    ----------
    term : str
        The grouping term's name (``g``).
    columns : tuple of str
        Its columns' labels (``Intercept``, ``x``).
    eigenvalues : ndarray
        Of the estimated ``Sigma``, ascending.
    vector : pandas.Series
        Unit eigenvector of the smallest eigenvalue, indexed by the columns (sign: its
        largest component positive).
    kind : str
        ``"variance"`` (``vector`` is a column's axis: that column's variance is 0) or
        ``"correlation"`` (correlations at +-1).
    column : str or None
        The column whose variance is 0 (``kind == "variance"``).
    suggested : str
        The suggested reduced term, in lme4's notation (``(1 | g)`` or ``(1 + x || g)``).
    """

    term: str
    columns: tuple
    eigenvalues: np.ndarray
    vector: pd.Series
    kind: str
    column: str | None
    suggested: str

    def describe(self):
        """One sentence naming the term, the direction and the suggested model."""
        comb = " ".join(f"{'+' if c >= 0 else '-'} {abs(c):.3g} {_label(n)}"
                        for n, c in self.vector.items()).lstrip("+ ")
        what = (f"the variance of {_label(self.column)} is 0" if self.kind == "variance"
                else "its effects are perfectly correlated")
        return (f"{self.term}: the covariance is singular along {comb} (eigenvalue "
                f"{self.eigenvalues[0]:.2g}; {what}); suggested reduced model "
                f"{self.suggested}")


def _label(name):
    return "(Intercept)" if name in ("Intercept", "(Intercept)") else str(name)


def term_formula(term, columns, uncorrelated=False):
    """lme4's notation of a term: ``(1 + x | g)``, ``(1 + x || g)``, ``(0 + x | g)``."""
    parts = ["1" if c in ("Intercept", "(Intercept)") else str(c) for c in columns]
    if "1" not in parts:
        parts = ["0"] + parts
    bar = "||" if uncorrelated else "|"
    return f"({' + '.join(parts)} {bar} {term})"


def _terms(model):
    """``[(unit, name, labels)]`` of the correlated terms."""
    cov = model.design.cov
    out = []
    for name, comps, labels in model.design.cov_terms:
        ui = next(ui for ui, u in enumerate(cov.units) if tuple(u) == tuple(comps))
        out.append((ui, str(name), [str(x) for x in labels]))
    return out


def degenerate_directions(results, tol=None):
    """The degenerate direction of every correlated term singular at the estimate.

    Parameters
    ----------
    results : MonteCarloGLMMResults
    tol : float, optional
        Default: the terms ``glmm_sm.spec.covstruct.singular_terms`` flags (lme4's
        rule, as ``results.singular``).  A number: also every term whose smallest
        eigenvalue is at most ``tol`` times its largest (a nearly singular estimate, where
        a Monte Carlo fit stops at a small positive variance).

    Returns
    -------
    list of DegenerateDirection
    """
    res = getattr(results, "_results", results)
    model = res.model
    p, cov = model.k_fe, model.design.cov
    theta = np.asarray(res.params, dtype=float)[p:]
    flagged = set(singular_terms(cov, theta, list(model.vcp_names)))
    out = []
    for ui, name, labels in _terms(model):
        S = cov.sigma(theta, ui)
        lam, V = np.linalg.eigh(S)
        near = tol is not None and lam[0] <= float(tol) * lam[-1]
        if name not in flagged and not near:
            continue
        v = V[:, 0]
        v = v * np.sign(v[np.argmax(np.abs(v))])
        sd = np.sqrt(np.clip(np.diag(S), 0.0, None))
        a = int(np.argmax(np.abs(v)))
        zero_var = abs(v[a]) >= AXIS_COS or sd[a] <= SINGULAR_TOL * max(sd.max(), 1e-300)
        if zero_var:
            kept = [c for i, c in enumerate(labels) if i != a]
            suggested = term_formula(name, kept)
            kind, column = "variance", labels[a]
        else:
            suggested = term_formula(name, labels, uncorrelated=True)
            kind, column = "correlation", None
        out.append(DegenerateDirection(name, tuple(labels), lam, pd.Series(v, index=labels),
                                       kind, column, suggested))
    return out


@dataclass(frozen=True)
class ReducedFits:
    """Reduced fits of one correlated term and their likelihood-ratio tests.

    Attributes
    ----------
    term : str
    direction : DegenerateDirection or None
        The term's degenerate direction (None when its covariance is not singular).
    fits : dict
        Reduced term in lme4's notation -> its fit (MonteCarloGLMMResults).
    tests : pandas.DataFrame
        Index: the reduced terms; columns ``llf``, ``llf_mcse``, ``statistic``,
        ``statistic_mcse``, ``df``, ``null`` (the null distribution), ``pvalue``,
        ``pvalue_mcse``.
    lrtests : dict
        Reduced term -> :class:`~glmm_sm.inference.lrtest.LRTestResult`.
    """

    term: str
    direction: DegenerateDirection | None
    fits: dict
    tests: pd.DataFrame
    lrtests: dict

    def summary(self):
        lines = [f"Reduced fits of {self.term} (likelihood-ratio tests against the full "
                 "fit)"]
        if self.direction is not None:
            lines.append(self.direction.describe())
        lines.append(self.tests.to_string())
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def reduced_fits(results, term=None, random_state=None, tol=None, **fit_kwargs):
    """Refit a correlated term's reduced models and test them against the fit.

    The reduced models: the term with uncorrelated columns (``||``) and, for each column
    after the first, the term without it (for ``(1 + x | g)``: ``(1 + x || g)`` and
    ``(1 | g)``).  Each is fitted by Monte Carlo likelihood approximation (the user's call:
    the fit itself is never replaced) and tested by :func:`~glmm_sm.inference.lrtest.lrtest`
    with its boundary mixture.

    Parameters
    ----------
    results : MonteCarloGLMMResults
    term : str, optional
        The grouping term (default: the first singular one, else the first correlated one).
    random_state : optional
        Seeds the reduced fits (default: a child of the fit's seed).
    tol : float, optional
        As for :func:`degenerate_directions` (which term's direction is reported).
    **fit_kwargs
        Passed to each reduced model's ``fit`` (``disp`` defaults to False, ``n_jobs`` to
        the fit's).

    Returns
    -------
    ReducedFits
    """
    res = getattr(results, "_results", results)
    model = res.model
    terms = _terms(model)
    if not terms:
        raise ValueError("reduced_fits() is for models with correlated terms (1 + x | g); "
                         "this model has none")
    dirs = {d.term: d for d in degenerate_directions(res, tol)}
    names = [t[1] for t in terms]
    if term is None:
        term = next((n for n in names if n in dirs), names[0])
    if term not in names:
        raise ValueError(f"term: unknown correlated term {term!r}; use one of {names}")
    ui, _, labels = terms[names.index(term)]
    u = model.design.cov.units[ui]
    candidates = [(term_formula(term, labels, uncorrelated=True), [], [ui])]
    for i in range(1, len(u)):
        kept = [c for k, c in enumerate(labels) if k != i]
        candidates.append((term_formula(term, kept), [u[i]], []))
    fit_kwargs.setdefault("disp", False)
    opts = getattr(res, "fit_options", None)
    if opts is not None:
        fit_kwargs.setdefault("n_jobs", opts.n_jobs)
    fits, tests, rows = {}, {}, {}
    for n, (label, drop, uncorr) in enumerate(candidates):
        red, _ = model_without(model, drop, uncorr)
        seed = (child_seed(res.seed, REDUCED_KEY, n) if random_state is None
                else child_seed(as_seed_sequence(random_state), n))
        fit = red.fit(random_state=seed, **fit_kwargs)
        lr = lrtest(res, fit)
        fits[label], tests[label] = fit, lr
        rows[label] = {"llf": lr.llf_reduced, "llf_mcse": lr.llf_reduced_mcse,
                       "statistic": lr.statistic, "statistic_mcse": lr.statistic_mcse,
                       "df": lr.df, "null": lr.mixture_name, "pvalue": lr.pvalue,
                       "pvalue_mcse": lr.pvalue_mcse}
    table = pd.DataFrame.from_dict(rows, orient="index")
    return ReducedFits(term, dirs.get(term), fits, table, tests)
