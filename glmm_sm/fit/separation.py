"""Detect data for which the maximum likelihood estimate of the fixed effects does not exist.

The GLMM log-likelihood is an integral over the random effects of
``prod_i f(y_i | eta_i = x_i' beta + z_i' u)``.  If a direction ``d`` of the fixed effects
makes every factor non-decreasing, i.e. for every observation with positive weight

* Bernoulli / binomial: ``x_i' d >= 0`` when every trial succeeded (``y_i = n_i``),
  ``x_i' d <= 0`` when none did (``y_i = 0``), ``x_i' d = 0`` otherwise;
* Poisson: ``x_i' d <= 0`` when ``y_i = 0``, ``x_i' d = 0`` otherwise,

with at least one strict inequality, then the likelihood increases along ``beta + t d`` for
every ``u`` and so after integration: the estimate runs off to infinity (complete or
quasi-complete separation, of which an all-0 or all-1 response is the simplest case).  The
random effects cannot prevent this, as they are integrated out.

Such a ``d`` is found, or shown not to exist, by a linear program (Konis 2007): maximize
``sum_i s_i x_i' d`` over those constraints with ``|d_j| <= 1``, ``s_i = +1`` for
``y_i = n_i`` and ``-1`` for ``y_i = 0``.  The optimum is 0 exactly when the MLE is finite.

On large data both checks first solve their program with the constraints of a subset of
the rows (:data:`RELAX_ROWS`), a relaxation: its feasible set contains the full
program's, so a relaxed maximum within the threshold bounds the full one, and a relaxed
program without a solution proves the full one has none.  Either way the answer is the
full program's, found without it; otherwise the full program is solved as before.  (At
10^6 rows of ``benchmarks/bench_scale.py``'s crossed design the two checks took 12 s of
HiGHS, 18.6 times their time at 10^5 rows.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

__all__ = ["separation_direction", "within_group_separation", "WithinGroupSeparation",
           "WITHIN_LP_SECONDS", "RELAX_ROWS"]

#: The LP optimum, per observation used (columns of X scaled to unit largest magnitude), that
#: counts as positive: above what the solver's feasibility tolerance (1e-7 per constraint)
#: could produce from rows that only satisfy ``x' d = 0`` approximately.
LP_TOL = 1e-6
#: About this many rows (or fewer) enter the relaxed programs solved first on larger data
#: (see the module docstring).
RELAX_ROWS = 20_000


def separation_direction(X, y, ntrials, weights, family_code):
    """A direction of the fixed effects along which the likelihood never decreases.

    Parameters
    ----------
    X : ndarray (n, p)
    y, ntrials, weights : ndarray (n,)
        Responses (successes or counts), trials (1 for Bernoulli, ignored for Poisson) and
        observation weights.
    family_code : int
        0 for the binomial family (Bernoulli included), 1 for Poisson.

    Returns
    -------
    ndarray (p,) or None
        ``d`` in the units of ``X`` (largest entry 1 in magnitude), or None when the MLE of
        the fixed effects exists.
    """
    X = np.asarray(X, dtype=np.float64)
    n, p = X.shape
    if p == 0:
        return None
    use = np.asarray(weights) > 0
    if family_code == 0:
        use &= np.asarray(ntrials) > 0
        lower = use & (np.asarray(y) <= 0)
        upper = use & (np.asarray(y) >= np.asarray(ntrials))
    else:
        lower = use & (np.asarray(y) <= 0)
        upper = np.zeros(n, bool)
    inner = use & ~lower & ~upper
    norms = np.max(np.abs(X), axis=0)
    norms = np.where(norms > 0, norms, 1.0)
    Xs = X / norms
    sign = np.where(upper, 1.0, 0.0) - np.where(lower, 1.0, 0.0)
    c = -(sign @ Xs)
    n_use = int(use.sum())
    limit = LP_TOL * max(1, n_use)
    if n_use > 2 * RELAX_ROWS:
        # The same objective over the constraints of every k-th row: a larger feasible set,
        # so its maximum bounds the full one.  Within half the threshold (the other half
        # left to the two solvers' tolerances), the full program's answer is "none".
        sub = np.zeros(n, bool)
        sub[np.flatnonzero(use)[::-(-n_use // RELAX_ROWS)]] = True
        out = _konis_lp(c, Xs, lower & sub, upper & sub, inner & sub, p)
        if out.status == 0 and -out.fun <= 0.5 * limit:
            return None
    out = _konis_lp(c, Xs, lower, upper, inner, p)
    if out.status != 0 or -out.fun <= limit:
        return None
    d = np.where(np.abs(out.x) > 1e-9, out.x, 0.0) / norms
    return d / np.max(np.abs(d))


def _konis_lp(c, Xs, lower, upper, inner, p):
    """Maximize ``-c' d`` over ``|d_j| <= 1`` and the rows' sign constraints (scipy's
    result)."""
    # x'd <= 0 for the lower rows, -x'd <= 0 for the upper rows; x'd = 0 for the others.
    A_ub = np.vstack([Xs[lower], -Xs[upper]])
    kwargs = {}
    if A_ub.shape[0]:
        kwargs.update(A_ub=A_ub, b_ub=np.zeros(A_ub.shape[0]))
    if inner.any():
        kwargs.update(A_eq=Xs[inner], b_eq=np.zeros(int(inner.sum())))
    return linprog(c, bounds=[(-1.0, 1.0)] * p, method="highs", **kwargs)


#: Seconds the LP of :func:`within_group_separation` may take (HiGHS' time limit); beyond
#: it the check gives up (no diagnosis, the fit runs as usual).
WITHIN_LP_SECONDS = 10.0


@dataclass(frozen=True)
class WithinGroupSeparation:
    """A direction that separates the responses within groups (see the module docstring).

    Attributes
    ----------
    fixed : ndarray (p,)
        Fixed-effects part ``d`` (largest entry 1 in magnitude), in the units of ``X``.
    columns : ndarray of int
        Columns of ``Z`` the random-effects part uses.
    """

    fixed: np.ndarray
    columns: np.ndarray


def _margins_lp(A, sign, c, bounds, sub=None):
    """Minimize ``c' v`` subject to ``sign_i (A v)_i >= 1``; the solution or None.  With
    ``sub`` (rows), the program of those rows is solved first: without a solution there
    (HiGHS status 2, infeasible), the full program has none either (None)."""
    if sub is not None:
        A_s = -sp.diags(sign[sub]) @ A[sub]
        out = linprog(c, A_ub=A_s, b_ub=-np.ones(A_s.shape[0]), bounds=bounds,
                      method="highs", options={"time_limit": WITHIN_LP_SECONDS})
        if out.status == 2:
            return None
    A_ub = -sp.diags(sign) @ A
    out = linprog(c, A_ub=A_ub, b_ub=-np.ones(A.shape[0]), bounds=bounds, method="highs",
                  options={"time_limit": WITHIN_LP_SECONDS})
    return out.x if out.status == 0 else None


def _group_rows(Zs):
    """Rows for the relaxed programs of :func:`within_group_separation` (None on data of
    at most ``2 RELAX_ROWS`` rows): those on every ``k``-th column of ``Z``, ``k`` the
    rows over ``RELAX_ROWS``, i.e. whole groups, whose responses the random effects alone
    can rarely fit; None where they are more than half the rows."""
    n = Zs.shape[0]
    if n <= 2 * RELAX_ROWS:
        return None
    k = -(-n // RELAX_ROWS)
    on = np.zeros(Zs.shape[1], bool)
    on[::k] = True
    row_of = np.repeat(np.arange(n), np.diff(Zs.indptr))
    hit = on[Zs.indices] & (Zs.data != 0)
    rows = np.flatnonzero(np.bincount(row_of[hit], minlength=n))
    return rows if 0 < rows.size <= n // 2 else None


def within_group_separation(X, Z, y, ntrials, weights, family_code):
    """Complete separation of the responses by ``[X, Z]`` that needs the fixed effects.

    Parameters
    ----------
    X : ndarray (n, p)
    Z : sparse matrix (n, q)
        Random-effects design.
    y, ntrials, weights : ndarray (n,)
    family_code : int
        0 binomial (Bernoulli included); other families give None (a count between 0 and
        its bound, or any Poisson count above 0, cannot be fitted exactly).

    Returns
    -------
    WithinGroupSeparation or None
        None when no such direction exists, when ``Z`` alone separates, or when the LP
        takes longer than :data:`WITHIN_LP_SECONDS`.
    """
    X = np.asarray(X, dtype=np.float64)
    n, p = X.shape
    if family_code != 0 or p == 0:
        return None
    use = (np.asarray(weights) > 0) & (np.asarray(ntrials) > 0)
    y, nt = np.asarray(y, dtype=float), np.asarray(ntrials, dtype=float)
    lower, upper = use & (y <= 0), use & (y >= nt)
    if np.any(use & ~lower & ~upper) or not lower.any() or not upper.any():
        return None  # a row between 0 and its trials; or all one outcome (the LP above)
    sign = np.where(upper, 1.0, -1.0)[use]
    Xs = X[use]
    norms = np.max(np.abs(Xs), axis=0)
    norms = np.where(norms > 0, norms, 1.0)
    Zs = sp.csr_matrix(Z)[np.flatnonzero(use)]
    q = Zs.shape[1]
    free = [(None, None)] * q
    sub = _group_rows(Zs)
    if _margins_lp(Zs, sign, np.zeros(q), free, sub) is not None:
        return None  # the random effects alone fit every response
    # d = a - b with a, b >= 0 and the smallest sum |d_j|: the fewest covariates.
    Xn = Xs / norms
    A = sp.hstack([sp.csr_matrix(Xn), sp.csr_matrix(-Xn), Zs]).tocsr()
    c = np.concatenate([np.ones(2 * p), np.zeros(q)])
    v = _margins_lp(A, sign, c, [(0, None)] * (2 * p) + free, sub)
    if v is None:
        return None
    d = v[:p] - v[p:2 * p]
    d = np.where(np.abs(d) > 1e-9 * max(1.0, np.max(np.abs(d))), d, 0.0) / norms
    if not np.any(d):
        return None
    e = v[2 * p:]
    cols = np.flatnonzero(np.abs(e) > 1e-9 * max(1.0, np.max(np.abs(e))))
    return WithinGroupSeparation(d / np.max(np.abs(d)), cols)
