"""Side-by-side comparison of a Monte Carlo GLMM fit with other fits of the same model."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["compare"]


def compare(res, other, labels=None):
    """One table, parameter by parameter: estimates and standard errors of two fits.

    Parameters
    ----------
    res : MonteCarloGLMMResults
    other : MonteCarloGLMMResults or BayesMixedGLMResults
        Another Monte Carlo fit, or statsmodels' ``BinomialBayesMixedGLM`` /
        ``PoissonBayesMixedGLM`` results from ``fit_vb`` or ``fit_map``.
    labels : pair of str, optional
        Column labels of the two fits.

    Returns
    -------
    DataFrame
        Rows: fixed effects, then variance components on the variance scale.  Columns: a
        two-level index (fit, quantity) with ``estimate`` and ``se`` for each fit (for a
        Bayesian fit: the posterior mean and SD of the fixed effects; for a variance
        ``exp(2 m)`` and its delta-method SD ``2 exp(2 m) s`` from the posterior mean ``m``
        and SD ``s`` of the log standard deviation, statsmodels' ``vcp`` scale), and the
        difference of the estimates in units of the first fit's standard error.

    Notes
    -----
    A variational (``fit_vb``) posterior is mean-field: its SDs ignore posterior
    correlations, and it approximates a posterior under statsmodels' priors (normal with SD 2
    on fixed effects, SD 1 on log SDs), not the likelihood.

    A Bayesian fit must be of the same family: ``BinomialBayesMixedGLM`` for a Bernoulli or
    binomial model, ``PoissonBayesMixedGLM`` for a Poisson model.  statsmodels has no
    negative binomial mixed GLM, and a Poisson posterior is the posterior of another model
    (``alpha = 0``, the overdispersion left to the random effects), whose fixed effects and
    variances are not estimates of the negative binomial's: a negative binomial fit is
    compared with another :class:`~glmm_sm.MonteCarloGLMM` fit (a Poisson fit of the
    same model by the likelihood ratio test ``compare_lr_test``), and a Bayesian fit of
    another family is refused with a ``ValueError``.
    """
    first = _estimates(res)
    _check_family(res, other)
    _check_link(res, other)
    second = _estimates(other)
    labels = labels or ("MCLA", _label(other))
    if labels[0] == labels[1]:
        labels = (labels[0] + " 1", labels[1] + " 2")
    names = list(first.index) + [n for n in second.index if n not in first.index]
    table = pd.concat({labels[0]: first.reindex(names), labels[1]: second.reindex(names)},
                      axis=1)
    diff = (table[(labels[1], "estimate")] - table[(labels[0], "estimate")])
    table[("difference", "in SE")] = diff / table[(labels[0], "se")]
    return table


#: statsmodels' Bayesian mixed GLMs and the family code (``Family.code``) each fits.
BAYES_FAMILIES = {"BinomialBayesMixedGLM": 0, "PoissonBayesMixedGLM": 1}


def _check_family(res, other):
    """A Bayesian fit of another family than ``res``'s estimates other parameters: refused,
    the negative binomial (which statsmodels has no Bayesian mixed GLM for) with its own
    message."""
    if hasattr(getattr(other, "_results", other), "mcse_cov"):
        return
    fam = getattr(getattr(getattr(res, "_results", res), "model", None), "family_kind", None)
    kind = type(getattr(other, "model", other)).__name__
    if fam is None or kind not in BAYES_FAMILIES or BAYES_FAMILIES[kind] == fam.code:
        return
    if fam.code == 2:
        raise ValueError(
            f"other: statsmodels has no negative binomial mixed GLM, and {kind} fits the "
            "Poisson model (alpha = 0), a different model whose estimates are not those of "
            "this negative binomial fit; compare the two models by the likelihood ratio "
            "test (fit the Poisson model with MonteCarloGLMM and use "
            "res.compare_lr_test(poisson_res)), or compare with another MonteCarloGLMM fit "
            "of this negative binomial model")
    want = [k for k, v in BAYES_FAMILIES.items() if v == fam.code]
    raise ValueError(f"other: a {kind} fit is of another family than this {fam.name} model; "
                     f"compare with a {' or '.join(want)} fit of the same model")


def _check_link(res, other):
    """statsmodels' Bayesian mixed GLMs have the canonical links only: a fit with another
    link estimates different parameters, and is refused."""
    if hasattr(getattr(other, "_results", other), "mcse_cov"):
        return
    fam = getattr(getattr(getattr(res, "_results", res), "model", None), "family_kind", None)
    if fam is not None and not fam.canonical:
        raise ValueError(
            f"other: this model has the {fam.link_name} link, and statsmodels' "
            f"{type(getattr(other, 'model', other)).__name__} fits the logit link only (it "
            "has no probit or cloglog mixed GLM), so their estimates are not on the same "
            "scale; compare with a MonteCarloGLMM fit (e.g. the same model with the logit "
            "link)")


def _label(obj):
    if getattr(getattr(obj, "_results", obj), "method", None) == "laplace":
        return "Laplace"
    if hasattr(obj, "mcse_cov") or hasattr(getattr(obj, "_results", None), "mcse_cov"):
        return "MCLA"
    name = type(obj.model).__name__
    how = "VB" if getattr(obj, "optim_retvals", None) is not None and _is_vb(obj) else "Bayes"
    return f"{name} ({how})"


def _is_vb(obj):
    cov = obj.cov_params()
    return np.ndim(cov) == 1


def _estimates(obj):
    inner = getattr(obj, "_results", obj)
    if hasattr(inner, "mcse_cov"):
        names = list(inner.model.data.param_names)
        return pd.DataFrame({"estimate": np.asarray(inner.params),
                             "se": np.asarray(inner.bse)}, index=names)
    model = getattr(obj, "model", None)
    if model is None or not hasattr(obj, "fe_mean"):
        raise TypeError("other must be a MonteCarloGLMM result or a BinomialBayesMixedGLM / "
                        f"PoissonBayesMixedGLM result; got {type(obj).__name__}")
    fe = pd.DataFrame({"estimate": obj.fe_mean, "se": obj.fe_sd},
                      index=list(model.fep_names))
    m, s = np.asarray(obj.vcp_mean), np.asarray(obj.vcp_sd)
    var = np.exp(2 * m)
    vc = pd.DataFrame({"estimate": var, "se": 2 * var * s}, index=list(model.vcp_names))
    return pd.concat([fe, vc])


def plot_compare(res, other, labels=None, alpha=0.05, figsize=None):
    """Plot :func:`compare`'s table: each fit's estimates with ``± z_{1-alpha/2}`` SE
    intervals, fixed effects and variance components in separate panels.

    Parameters
    ----------
    res : MonteCarloGLMMResults
    other : MonteCarloGLMMResults or BayesMixedGLMResults
    labels : pair of str, optional
        Labels of the two fits (as in :func:`compare`).
    alpha : float
        ``1 - alpha`` is the nominal coverage of the intervals.
    figsize : tuple of float, optional

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    A Bayesian fit's variance interval is its posterior mean on the variance scale
    ``± z`` times the delta-method SD, as in :func:`compare`; it may reach below 0.
    """
    from glmm_sm.inference.plots import plot_compare_table

    table = compare(res, other, labels=labels)
    vc_names = list(_inner_model(res).vcp_names) + list(_inner_model(other).vcp_names)
    return plot_compare_table(table, vc_names, alpha=alpha, figsize=figsize)


def _inner_model(obj):
    return getattr(obj, "_results", obj).model


__all__ += ["plot_compare"]
