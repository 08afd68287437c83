"""Results of a Laplace fit, ``model.fit(method="laplace")``: lme4's ``glmer`` estimate.

``MonteCarloGLMM.fit_laplace()`` returns the same.  Its standard errors come from the
observed information of the Laplace log-likelihood, ``-H`` with ``H`` the central finite
difference of the analytic Laplace gradient (:func:`glmm_sm.laplace.step.laplace_score`) in
``(beta, nu)``, on the variance scale like the MCLA fit's, so that
``glmm_sm.compare(res_mcla, res_laplace)`` lines the two up.

The Laplace log-likelihood is deterministic: there is no Monte Carlo error (``mcse()`` is
zero, ``m`` is 0), but it is an approximation whose bias is not measured; MCLA's is not.
The conditional distribution of the random effects is the Laplace one, normal at the
conditional mode with covariance ``P^{-1}``, ``P = Z' W Z + D^{-1}`` (lme4's ``condVar``).
"""

from __future__ import annotations

import functools
import inspect
import time
import warnings

import numpy as np
from statsmodels.base import wrapper as wrap
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from glmm_sm.fit.boundary import BOUNDARY_NU, at_boundary
from glmm_sm.fit.options import FitLog, FitOutcome
from glmm_sm.inference.prediction import block_cov_matrix
from glmm_sm.laplace.step import (
    conditional_mode,
    family_system,
    laplace_fit,
    laplace_score,
    split_params,
)
from glmm_sm.mcla.engine import Evaluation
from glmm_sm.mcla.partials import kernel_prior
from glmm_sm.results.mcla import (
    MonteCarloGLMMResults,
    MonteCarloGLMMResultsWrapper,
    summary_arguments,
)
from glmm_sm.spec.validation import nonnegative_up_to_rounding

__all__ = ["LaplaceGLMMResults", "LaplaceGLMMResultsWrapper", "fit_laplace_results",
           "laplace_hessian"]

#: Central-difference step for the Hessian, relative to ``max(|beta_j|, 1)`` and to ``nu_t``.
REL_STEP = 1e-4

#: The fit counts as converged when the Newton step would add less than this to the
#: log-likelihood (free parameters only).
NEWTON_DECREMENT_TOL = 1e-6


def laplace_hessian(system, params, mode, rel_step=REL_STEP):
    """Hessian of the Laplace log-likelihood in ``(beta, nu)`` by central differences of
    its analytic gradient.

    Parameters
    ----------
    system : BlockSystem
    params : ndarray (p + T,)
        ``(beta, nu)``, every ``nu > 0``.
    mode : ModeResult
        Conditional modes at ``params`` (start of the mode solves at the shifted points).
    rel_step : float
        Step ``rel_step * max(|beta_j|, 1)`` for a fixed effect, ``rel_step * nu_t`` for a
        variance (which keeps it positive).

    Returns
    -------
    ndarray (p + T, p + T)
        Symmetrized.
    """
    p = system.data.k_fe
    params = np.asarray(params, dtype=float)
    k = params.size
    cov_part = params[p:]
    if system.data.cov.has_vector:  # covariances may be 0 or negative
        cov_part = np.maximum(np.abs(cov_part), 1e-3 * np.max(np.abs(cov_part)))
    steps = rel_step * np.concatenate([np.maximum(np.abs(params[:p]), 1.0), cov_part])

    def score(theta):
        beta, nu, alpha = split_params(system.data, theta)
        sysa = family_system(system, alpha)  # the negative binomial at its alpha
        return laplace_score(sysa, beta, nu, conditional_mode(sysa, beta, nu, u0=mode.u))

    H = np.empty((k, k))
    for j in range(k):
        e = np.zeros(k)
        e[j] = steps[j]
        H[:, j] = (score(params + e) - score(params - e)) / (2.0 * steps[j])
    return 0.5 * (H + H.T)


def _covariance(H, free):
    """``(-H)^{-1}`` on the free parameters, zero rows and columns elsewhere."""
    k = H.shape[0]
    cov = np.zeros((k, k))
    info = -H[np.ix_(free, free)]
    try:
        np.linalg.cholesky(info)
        inv = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        inv = np.full_like(info, np.nan)
    cov[np.ix_(free, free)] = 0.5 * (inv + inv.T)
    return cov


def _precision_inverse(chol):
    """Stacked ``P^{-1} = L^{-T} L^{-1}`` from stacked lower Cholesky factors ``L``."""
    Li = np.linalg.inv(chol)
    return np.swapaxes(Li, 1, 2) @ Li


def laplace_re_cov(model, system, nu, mode):
    """Laplace conditional covariance of the random effects, sparse ``(q, q)``, model order.

    A block factored through its Schur complement (:class:`~glmm_sm.laplace.step.SchurFactor`)
    enters as its whole ``P^{-1}``: dense, ``q_b^2`` numbers (asked for only through
    ``random_effects_cov``; the SDs come from :func:`laplace_re_var`).
    """
    q = len(model.vc_names)
    groups = [(ids, cols) for _, ids, cols in system.groups]
    mats = [_precision_inverse(L) for L in mode.chol]
    for sb, fac in zip(system.schur, mode.schur, strict=True):
        groups.append((np.array([sb.block]), sb.cols[None, :]))
        inv = fac.solve(np.eye(sb.cols.size))
        mats.append((0.5 * (inv + inv.T))[None])
    var = model.design.cov.variances(nu) if model.design.cov.has_vector else np.asarray(nu)
    return block_cov_matrix(system.data.layout, np.arange(q), q, groups, mats,
                            var[model.ident])


def laplace_re_var(model, system, nu, mode):
    """The diagonal of :func:`laplace_re_cov` (model order) without the off-diagonal
    blocks: O(q_b) per Schur-factored block
    (:meth:`~glmm_sm.laplace.step.SchurFactor.inv_diag`)."""
    layout = system.data.layout
    var = model.design.cov.variances(nu) if model.design.cov.has_vector else np.asarray(nu)
    out = np.asarray(var[model.ident], dtype=float).copy()  # columns outside every block
    for (_, _, cols), L in zip(system.groups, mode.chol, strict=True):
        out[layout.col_perm[cols]] = np.diagonal(_precision_inverse(L), axis1=1, axis2=2)
    for sb, fac in zip(system.schur, mode.schur, strict=True):
        out[layout.col_perm[sb.cols]] = fac.inv_diag()
    return out


def _outcome(model, system, params, value, mode, seconds):
    """The Laplace fit as a :class:`~glmm_sm.fit.driver.FitOutcome` (no draws, no MCSE)."""
    data = system.data
    p = model.k_fe
    beta, nu, alpha = split_params(data, params)
    system = family_system(system, alpha)
    grad = laplace_score(system, beta, nu, mode)
    H = laplace_hessian(system, params, mode)
    vector = data.cov.has_vector
    boundary = [] if vector else at_boundary(nu, BOUNDARY_NU)
    free = np.setdiff1d(np.arange(params.size), p + np.array(boundary, dtype=int))
    cov = _covariance(H, free)
    g = grad[free]
    decrement = float(g @ cov[np.ix_(free, free)] @ g) if np.all(np.isfinite(cov)) else np.inf
    converged = bool(mode.converged and 0.5 * decrement < NEWTON_DECREMENT_TOL)
    lognu = kernel_prior(data, nu)[1]
    block_values = (mode.h_block - 0.5 * mode.logdet_block - 0.5 * data.qbt @ lognu)
    ev = Evaluation(float(value), grad, H, None, np.zeros(0), block_values)
    log = FitLog(laplace={"params": params, "value": float(value), "seconds": seconds})
    log.message = ("Laplace MLE" + ("" if converged else
                   f": not at a maximum (Newton decrement {0.5 * decrement:.3g})"))
    if not np.all(np.isfinite(cov[np.ix_(free, free)])):
        names = list(model.data.param_names)
        converged = False
        text = ("the Hessian of the Laplace log-likelihood is not negative definite at the "
                f"estimate (parameters {[names[j] for j in free]}), whose standard errors "
                "are reported as NaN. Causes: parameters that are not identified (aliased "
                "random effects, a variance component with too few levels), a fit stopped "
                "short, or a maximum on the boundary")
        log.warnings.append(text)
        log.message = text + "; " + log.message
        warnings.warn(text, ConvergenceWarning, stacklevel=4)
    if system.schur:  # the whole P^{-1} of a Schur-factored block on request only
        re_cov = functools.partial(laplace_re_cov, model, system, nu, mode)
        diag = laplace_re_var(model, system, nu, mode)
    else:
        re_cov = laplace_re_cov(model, system, nu, mode)
        diag = re_cov.diagonal()  # sums of squares (L^-T L^-1) and prior variances: >= 0
    mean = np.zeros(len(model.vc_names))
    mean[data.layout.col_perm] = mode.u
    sd = np.sqrt(nonnegative_up_to_rounding(diag, np.abs(diag), "Laplace conditional "
                                            "variances of the random effects"))
    outcome = FitOutcome(params, ev, None, log, converged, None, boundary=boundary, cov=cov,
                         mcse_cov=np.zeros_like(cov), m=0, re_moments=(mean, sd))
    return outcome, re_cov


class LaplaceGLMMResults(MonteCarloGLMMResults):
    """Results of ``model.fit(method="laplace")``: the Laplace MLE with its standard errors.

    Everything of :class:`~glmm_sm.MonteCarloGLMMResults` (``t_test``,
    ``conf_int``, ``predict``, ``get_prediction``, ``random_effects``, ``simulate``, ...)
    with the Laplace approximation in place of the Monte Carlo one:

    * ``llf`` is the Laplace log-likelihood with the family's constants (``llf_mc`` without);
    * ``cov_params()`` is the inverse of minus the Hessian of the Laplace log-likelihood;
    * ``mcse()`` and ``llf_mcse`` are zero and ``m`` is 0 (no Monte Carlo error; the
      approximation's bias is not an MCSE and is not reported);
    * ``random_effects()`` are the conditional modes with SDs from ``P^{-1}``.

    Variance components at the lower bound of the Laplace optimizer (below ``BOUNDARY_NU``)
    are listed in ``boundary``, with NaN standard errors as in the MCLA fit.

    Attributes
    ----------
    laplace_mode : ModeResult
        The conditional modes at the estimate (the centre of an importance sampler:
        ``model.make_sampler(res.params, mode=res.laplace_mode)``).
    """

    method = "laplace"

    def __init__(self, model, outcome, re_cov, n_blocks):
        super().__init__(model, outcome)
        self.n_blocks = n_blocks
        self.mle_settings = {"optimizer": "L-BFGS-B on (beta, log nu), Laplace"}
        self._laplace_re_cov = re_cov

    @property
    def random_effects_cov(self):
        """Laplace conditional covariance of the random effects (sparse, model order; a
        block factored through its Schur complement is computed on first access)."""
        if callable(self._laplace_re_cov):
            self._laplace_re_cov = self._laplace_re_cov()
        return self._laplace_re_cov

    def summary(self, yname=None, xname=None, title=None, alpha=0.05):
        """Header, fixed effects and variance components (no Monte Carlo columns); the
        arguments as :meth:`glmm_sm.MonteCarloGLMMResults.summary`'s (statsmodels' order)."""
        yname, xname, title, alpha = summary_arguments(yname, xname, title, alpha)
        return laplace_summary(self, alpha=alpha, title=title, yname=yname, xname=xname)


class LaplaceGLMMResultsWrapper(MonteCarloGLMMResultsWrapper):
    def __iter__(self):
        """``params, value, mode = model.fit_laplace()``, the former tuple: deprecated."""
        res = self._results
        if not getattr(res, "_unpack_as_tuple", False):
            raise TypeError(f"'{type(self).__name__}' object is not iterable")
        warnings.warn("fit_laplace() now returns a LaplaceGLMMResults; unpacking it as "
                      "(params, value, mode) is deprecated: use res.params, res.llf_mc and "
                      "res.laplace_mode", FutureWarning, stacklevel=2)
        return iter((np.asarray(res.params), res.llf_mc, res.laplace_mode))


wrap.populate_wrapper(LaplaceGLMMResultsWrapper, LaplaceGLMMResults)


def fit_laplace_results(model, start_params=None, factorize=None, **mcla_args):
    """``model.fit(method="laplace")``: fit, Hessian, results.

    Parameters
    ----------
    model : MonteCarloGLMM
    start_params : array_like, optional
        ``(beta, nu)`` to start the optimizer from.
    factorize : bool, optional
        Block layout (default: the model's); the estimate does not depend on it.
    **mcla_args
        ``fit``'s Monte Carlo arguments; a ``TypeError`` names any that is not at its
        default (it would have no effect on a Laplace fit).

    Returns
    -------
    LaplaceGLMMResultsWrapper
    """
    defaults = inspect.signature(type(model).fit).parameters
    given = sorted(k for k, v in mcla_args.items()
                   if k not in defaults or v is not defaults[k].default
                   and not _same(v, defaults[k].default))
    if given:
        raise TypeError(f"fit(method='laplace') does not take the Monte Carlo argument(s) "
                        f"{given}: the Laplace fit uses no draws")
    if start_params is not None:
        start_params = model._check_params(start_params)
    if factorize is not None and not isinstance(factorize, (bool, np.bool_)):
        raise TypeError(f"factorize must be True, False or None; got {factorize!r}")
    t0 = time.perf_counter()
    system = model.block_system(factorize)
    lapfit = laplace_fit(system, start_params)
    params, value, mode = lapfit.params, lapfit.value, lapfit.mode
    outcome, re_cov = _outcome(model, system, np.asarray(params, dtype=float), value, mode,
                               time.perf_counter() - t0)
    for text in lapfit.notes:  # whitening not done, precisions not positive definite
        outcome.log.warnings.append(text)
        warnings.warn(text, ConvergenceWarning, stacklevel=3)
    res = LaplaceGLMMResults(model, outcome, re_cov, system.data.n_blocks)
    res.laplace_mode = mode
    return LaplaceGLMMResultsWrapper(res)


def _same(a, b):
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def laplace_summary(res, alpha=0.05, title=None, yname=None, xname=None):
    """The summary of a Laplace fit: :func:`glmm_sm.results.summary.build_summary`'s layout,
    without
    the Monte Carlo columns."""
    from glmm_sm.results.summary import build_summary

    return build_summary(res, alpha=alpha, title=title, yname=yname, xname=xname)
