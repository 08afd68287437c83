"""Argument and array checks, each with a message naming the argument and what is wrong."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pandas as pd

__all__ = ["check_finite", "vector", "as_float", "column", "exposure_vector",
           "observation_weights", "checked_exog", "check_full_rank", "show_values",
           "nonnegative_up_to_rounding", "ROUNDING", "checked_start_params",
           "check_callable", "proportion_response", "Response"]

#: A response and observation weights as the family reads them (:func:`proportion_response`).
Response = namedtuple("Response", "endog weights")


def check_finite(values, name):
    """Raise ``ValueError`` naming the columns of ``values`` that hold NaN or inf."""
    if values is None:
        return
    frame = values if isinstance(values, (pd.DataFrame, pd.Series)) else None
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    bad = ~np.isfinite(arr)
    if not bad.any():
        return
    if arr.ndim == 2:
        cols = np.flatnonzero(bad.any(axis=0))
        names = (list(frame.columns) if isinstance(frame, pd.DataFrame)
                 else [f"column {j}" for j in range(arr.shape[1])])
        where = f" in column(s) {[names[j] for j in cols]}"
    else:
        where = f" ({getattr(frame, 'name', None) or name})" if frame is not None else ""
    raise ValueError(f"{name} contains {int(bad.sum())} NaN or infinite value(s){where}; "
                     "drop or impute them (from_formula drops rows with missing values by "
                     "default)")


def vector(value, n, name, default):
    if value is None:
        return np.full(n, default)
    arr = as_float(value, name)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must have length {n} (one per observation); got "
                         f"shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or infinite value(s)")
    return arr


def as_float(value, name):
    """``value`` as a float64 array, or ``ValueError`` naming ``name`` if it is not numeric."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None


def column(value, data, name):
    if isinstance(value, str):
        if value not in data.columns:
            raise ValueError(f"{name}: column {value!r} is not in data")
        return as_float(data[value], f"{name} (column {value!r})")
    if value is None:
        return None
    arr = as_float(value, name)
    if arr.shape != (len(data),):
        raise ValueError(f"{name} must have length {len(data)} (the rows of data); got "
                         f"shape {arr.shape}")
    return arr


def exposure_vector(exposure, n, fam):
    """Positive exposures for a Poisson or negative binomial model (``log(exposure)`` joins
    the offset)."""
    if fam.code not in (1, 2):
        raise ValueError("exposure is only defined for the Poisson and negative binomial "
                         "families (log link); for "
                         "binomial data give the number of trials as a second response "
                         "column (successes + failures)")
    arr = vector(exposure, n, "exposure", default=1.0)
    if np.any(arr <= 0):
        bad = arr[arr <= 0]
        raise ValueError(f"exposure must be positive; found {bad.size} value(s) <= 0: "
                         f"{show_values(bad)}")
    return arr


def check_full_rank(X, names):
    """Raise ``ValueError`` naming the columns of ``X`` that are linear combinations of others.

    Columns are scaled to unit length (rank does not depend on units) and taken in order; a
    column is aliased when its least-squares residual on the columns kept before it is below
    the tolerance ``numpy.linalg.matrix_rank`` uses.

    One QR decomposition of the scaled ``X`` (``O(n p^2)``) gives, while every column before
    ``j`` is kept, column ``j``'s residual as ``|R[j, j]|``; an aliased column is deleted
    from the decomposition by Givens rotations (``O(p^2)``) and the scan goes on from it.
    """
    import scipy.linalg

    n, p = X.shape
    if p == 0:
        return
    if p > n:
        raise ValueError(f"exog is rank deficient: {p} fixed-effect columns but only {n} "
                         "observations")
    norms = np.linalg.norm(X, axis=0)
    zero = norms == 0
    R = np.linalg.qr(X / np.where(zero, 1.0, norms), mode="r")  # same column relations as X
    tol = _spectral_norm(R) * max(n, p) * np.finfo(np.float64).eps
    kept, problems, Q = [], [], None
    pos = 0  # column j's position in the (shrinking) R
    for j in range(p):
        if abs(R[pos, pos]) > tol and not zero[j]:
            kept.append(j)
            pos += 1
            continue
        if zero[j]:
            problems.append(f"column {names[j]!r} is zero for every observation")
        elif len(problems) < 3:  # the message shows three
            coef = np.zeros(0)
            if kept:  # R[:pos, :pos] is the kept columns' triangular factor
                coef = scipy.linalg.solve_triangular(R[:pos, :pos], R[:pos, pos])
            coef = coef * norms[j] / norms[kept]  # back to the units of X
            big = np.abs(coef) > 1e-8 * np.abs(coef).max()
            terms = [f"{c:.4g} * {names[k]}" for c, k, b in zip(coef, kept, big, strict=True)
                     if b]
            others = ", ".join(repr(names[k]) for k, b in zip(kept, big, strict=True) if b)
            problems.append(f"column {names[j]!r} is a linear combination of {others} "
                            f"({names[j]} = {' + '.join(terms)})")
        else:
            problems.append(f"column {names[j]!r}")
        if j < p - 1:
            if Q is None:
                Q = np.eye(R.shape[0])
            Q, R = scipy.linalg.qr_delete(Q, R, pos, which="col", overwrite_qr=True,
                                          check_finite=False)
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ValueError("exog is rank deficient: " + "; ".join(problems[:3]) + more
                         + ". The fixed effects are not identifiable: drop or recode the "
                         "aliased column(s)")


def _spectral_norm(R):
    """The largest singular value of ``R``: exact for up to 500 columns, else by Lanczos
    iterations (from a fixed start, to a relative 1e-10)."""
    if R.shape[1] <= 500:
        return float(np.linalg.norm(R, 2))
    from scipy.sparse.linalg import LinearOperator, eigsh

    p = R.shape[1]
    op = LinearOperator((p, p), matvec=lambda v: R.T @ (R @ v), dtype=np.float64)
    top = eigsh(op, k=1, which="LA", v0=np.ones(p), tol=1e-10,
                return_eigenvectors=False)
    return float(np.sqrt(max(top[0], 0.0)))


def show_values(values, k=3):
    """A few distinct values for an error message: ``-1, -0.5`` (and ``...`` if more)."""
    vals = np.unique(values)
    return ", ".join(f"{v:g}" for v in vals[:k]) + (", ..." if vals.size > k else "")


def proportion_response(binomial, endog, weights):
    """R's ``glm`` convention for a binomial response given as proportions.

    A one-column binomial response in [0, 1] that is not all 0/1 is a proportion: with
    ``weights`` (the number of trials, as R's ``glm`` and lme4's ``glmer`` read them) it is
    fitted as ``endog * weights`` successes out of ``weights`` trials, the two-column response
    ``(successes, failures)`` with unit observation weights (the same likelihood up to the
    binomial constant); without weights it is refused, naming the forms to write.

    Parameters
    ----------
    binomial : bool
        The family is binomial (Bernoulli).
    endog : array_like
    weights : array_like or None

    Returns
    -------
    Response
        ``(endog, weights)``: unchanged unless the proportion convention applied.
    """
    y = np.asarray(endog, dtype=float) if binomial else None
    if y is None or y.ndim == 2 and y.shape[1] != 1:
        return Response(endog, weights)
    y = y.reshape(-1)
    if not np.all(np.isfinite(y)) or np.any((y < 0) | (y > 1)) or np.all((y == 0) | (y == 1)):
        return Response(endog, weights)
    frac = y[(y != 0) & (y != 1)]
    if weights is None:
        raise ValueError(
            f"endog: a binomial response is 0/1 or successes out of trials; found proportions "
            f"({show_values(frac)}). Give the numbers of trials as weights= (R's glm "
            "convention: endog * weights successes out of weights trials), or write the "
            "response as two columns 'successes + failures ~ ...' (lme4's "
            "cbind(successes, failures) ~ ...)")
    w = vector(weights, len(y), "weights", default=1.0)
    succ = y * w
    bad = (np.abs(succ - np.round(succ)) > 1e-8 * np.maximum(w, 1.0)) | (w < 0) | (
        np.abs(w - np.round(w)) > 1e-8 * np.maximum(w, 1.0))
    if bad.any():
        i = np.flatnonzero(bad)[:3]
        raise ValueError(
            "weights: with a proportion response the weights are the numbers of trials (R's "
            "glm convention) and must be non-negative integers with endog * weights an "
            "integer number of successes; found (endog, weights) = "
            + ", ".join(f"({y[k]:g}, {w[k]:g})" for k in i)
            + ". Write the response as two columns 'successes + failures' instead, or use "
            "weights for likelihood weights with a 0/1 response")
    succ = np.round(succ)
    return Response(np.column_stack([succ, np.round(w) - succ]), None)


def observation_weights(weights, n):
    """Non-negative weights of the ``n`` observations (1 when None)."""
    weights = vector(weights, n, "weights", default=1.0)
    if np.any(weights < 0):
        neg = weights[weights < 0]
        raise ValueError(f"weights must be non-negative; found {neg.size} negative "
                         f"value(s): {show_values(neg)}")
    if n and not weights.sum() > 0:
        raise ValueError(f"weights must have a positive sum; all {n} weights are 0, so no "
                         "observation counts and the likelihood is constant. Give each "
                         "observation a weight > 0 (1 by default: omit weights)")
    return weights


def checked_exog(exog, names, full_rank=True):
    """``exog`` as a finite, full-rank (unless ``full_rank`` is False: one partition of a
    design whose rank is checked as a whole), two-dimensional float64 array."""
    X = np.asarray(exog, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"exog must be two-dimensional; got shape {X.shape}")
    dup = sorted({str(n) for n in names if list(names).count(n) > 1})
    if dup:
        raise ValueError(f"exog: duplicate column name(s) {dup}: params, the summary and "
                         "start_params name each fixed effect by its column; rename the "
                         "columns (or pass fep_names)")
    if not np.all(np.isfinite(X)):
        bad = [names[j] for j in np.flatnonzero(~np.isfinite(X).all(axis=0))]
        raise ValueError(f"exog contains NaN or infinite values in column(s) {bad}")
    if full_rank:
        check_full_rank(X, names)
    return X


#: Relative size of the rounding error of a difference or sum of products of doubles, with
#: room for the thousands of terms of a weighted sum over draws or a row's quadratic form.
ROUNDING = 1e-10


def nonnegative_up_to_rounding(values, scale, what, rel=ROUNDING, stacklevel=3):
    """A quantity that is ``>= 0`` in exact arithmetic, with its rounding below 0 set to 0.

    Variances computed as ``E[u^2] - E[u]^2``, quadratic forms ``x' C x`` in covariance
    matrices and ``1 / ESS - 1 / m`` are non-negative in exact arithmetic; in floating point
    they can come out slightly below 0, by at most a small multiple of the size of the
    terms (``scale``).  Such values are set to 0.  A value below ``-rel * scale`` is not
    rounding: it gets NaN, and a ``RuntimeWarning`` names ``what`` and the entries, never a
    silent 0.

    Parameters
    ----------
    values : array_like
    scale : array_like or float
        The size of the terms whose difference or sum gave ``values`` (``E[u^2]``,
        ``|x|' |C| |x|``, ...), broadcastable to ``values``.
    what : str
        What the values are, for the warning.
    rel : float
        Relative rounding tolerance.

    Returns
    -------
    ndarray of float
    """
    import warnings

    values = np.array(values, dtype=np.float64)
    bad = values < -rel * np.abs(np.asarray(scale, dtype=np.float64))
    if np.any(bad):
        where = np.flatnonzero(np.ravel(bad))
        warnings.warn(f"{what}: {where.size} value(s) below 0 beyond rounding (entries "
                      f"{where[:10].tolist()}, smallest {float(np.min(values[bad])):.3g}); "
                      "they are reported as NaN", RuntimeWarning, stacklevel=stacklevel)
    out = np.where(values < 0, 0.0, values)
    out[bad] = np.nan
    return out


def checked_start_params(start_params, names, k_fe, cov):
    """``start_params`` as a float64 array in the model's order, or an error naming it.

    An array (list, ndarray) is taken in the order of ``names`` (beta, then the covariance
    parameters).  A dict or Series is accepted only when its keys are exactly ``names`` (a
    previous fit's ``params``, in any order): a partial one would need values for the
    parameters it leaves out, which would be chosen silently.  The values must be finite,
    each variance positive and each correlated term's covariance positive definite (the
    Laplace step starts at them).

    Parameters
    ----------
    start_params : array_like, dict or pandas.Series
    names : list of str
        The parameter names, beta then covariance parameters.
    k_fe : int
        Number of fixed effects.
    cov : CovStructure
        The covariance parameters' structure (its ``valid``).
    """
    k = len(names)
    if isinstance(start_params, (dict, pd.Series)):
        given = [str(key) for key in start_params.keys()]
        unknown = [key for key in given if key not in names]
        absent = [nm for nm in names if nm not in given]
        if unknown or absent or len(given) != k:
            parts = ([f"unknown name(s) {unknown}"] if unknown else []) + \
                ([f"missing {absent}"] if absent else [])
            raise ValueError(f"start_params: a dict or Series must give every parameter by "
                             f"name ({'; '.join(parts) or 'duplicate names'}); the names are "
                             f"{names}. Give all of them, or an array of length {k} in that "
                             "order")
        values = {str(key): v for key, v in start_params.items()}
        start_params = [values[nm] for nm in names]
    try:
        arr = np.asarray(start_params, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"start_params must be {k} numbers (beta then the covariance "
                         f"parameters, {names}) or a dict of them by name: {exc}") from None
    if arr.shape != (k,):
        raise ValueError(f"start_params must have length {k} (beta then the covariance "
                         f"parameters, {names}); got shape {arr.shape}")
    bad = [names[j] for j in np.flatnonzero(~np.isfinite(arr))]
    if bad:
        raise ValueError(f"start_params holds NaN or infinite values for {bad}; give finite "
                         "numbers (or omit start_params)")
    kc = k_fe + cov.k_vcp  # then the family's parameters (the negative binomial's alpha)
    if not cov.valid(arr[k_fe:kc]) or np.any(arr[kc:] <= 0):
        raise ValueError("start_params: every variance must be > 0 (and each correlated "
                         "term's covariance matrix positive definite; the negative "
                         "binomial's alpha > 0); got "
                         f"{dict(zip(names[k_fe:], arr[k_fe:].tolist(), strict=True))}")
    return arr


def check_callable(value, name):
    """Refuse a ``value`` that is neither ``None`` nor callable, naming ``name``."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a function (or None); got {type(value).__name__} "
                        f"{value!r}")
