"""Likelihood-ratio tests between nested GLMMs, with variance components on the boundary.

For nested models with maximized log-likelihoods ``l_1`` (full) and ``l_0`` (reduced), the
statistic is ``LR = 2 (l_1 - l_0)``.  When the reduced model only drops fixed effects
(``d`` of them), ``LR`` is asymptotically ``chi2(d)``.  When it also sets ``k`` variance
components to 0, the null value lies on the boundary of the parameter space (``nu >= 0``)
and the usual theory fails: the estimate of a variance is 0 with probability about 1/2 under
the null, and then contributes nothing to ``LR``.  Self and Liang (1987, JASA 82:605) and
Stram and Lee (1994, Biometrics 50:1171) show that ``LR`` is then a *chi-bar-square*
mixture.  For ``k`` components whose estimators are asymptotically independent (a diagonal
information matrix for the tested variances), each is positive with probability 1/2 on its
own, so the number of positive ones is binomial(k, 1/2) and

    LR ~ sum_{j=0}^{k} C(k, j) 2^{-k} chi2(d + j),

``chi2(0)`` being a point mass at 0.  For one component and no fixed effect this is the
familiar ``0.5 chi2(0) + 0.5 chi2(1)``: the ``chi2(1)`` p-value halved.  The Poisson
model nested in the negative binomial (``alpha = 0``, also on the boundary ``alpha >= 0``)
is tested the same way: ``alpha`` counts as one more boundary parameter, so the negative
binomial against the Poisson model with the same fixed and random effects is
``0.5 chi2(0) + 0.5 chi2(1)``.  (Correlated
components change the weights, which then depend on the information matrix; the binomial
weights are the stated assumption.  ``mixture=False`` gives the naive ``chi2(d + k)``, which
is conservative.)

Both log-likelihoods include the family's constants (``log C(N, y)``, ``-log y!``), as
statsmodels' ``GLM.llf`` does, so a GLM (every variance component at 0) is a valid reduced
model.  With Monte Carlo log-likelihoods the statistic has Monte Carlo error; the two fits
use independent draws, so its MCSE is ``2 sqrt(mcse_1^2 + mcse_0^2)``, and that of the
p-value follows by the delta method (the mixture's density at ``LR`` times the statistic's
MCSE).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp
from scipy import stats
from scipy.special import comb

__all__ = ["LRTestResult", "lrtest", "null_loglike", "chibar_weights"]


@dataclass(frozen=True)
class LRTestResult:
    """A likelihood-ratio test of a reduced model against a full one.

    Attributes
    ----------
    statistic : float
        ``2 (llf_full - llf_reduced)``.
    df : int
        Parameters the reduced model drops (fixed effects plus variance components).
    pvalue : float
        From the mixture in ``mixture`` (a plain ``chi2(df)`` when no variance is dropped).
    statistic_mcse, pvalue_mcse : float
        Monte Carlo standard errors of the statistic and of the p-value.
    llf_full, llf_reduced, llf_full_mcse, llf_reduced_mcse : float
        The two log-likelihoods (with the family's constants) and their MCSEs.
    df_fixed : int
        Fixed effects dropped.
    dropped_vc : tuple of str
        Variance parameters the reduced model sets to 0, by their names in ``params``
        (``subject Var(visit)`` for the slope of ``(1 + visit | subject)``), then the
        covariances it drops.
    mixture : tuple of (float, int)
        ``(weight, df)`` pairs of the null distribution, ``chi2(0)`` a point mass at 0.
    mixture_name : str
        The null distribution in words, e.g. ``"0.5 chi2(0) + 0.5 chi2(1)"``.
    """

    statistic: float
    df: int
    pvalue: float
    statistic_mcse: float
    pvalue_mcse: float
    llf_full: float
    llf_reduced: float
    llf_full_mcse: float
    llf_reduced_mcse: float
    df_fixed: int
    dropped_vc: tuple
    mixture: tuple
    mixture_name: str

    def summary(self):
        """The test as a short text table (str)."""
        rows = [("reduced", self.llf_reduced, self.llf_reduced_mcse),
                ("full", self.llf_full, self.llf_full_mcse)]
        lines = ["Likelihood-ratio test (Monte Carlo log-likelihoods)",
                 f"{'model':<10}{'llf':>14}{'MCSE':>10}"]
        lines += [f"{name:<10}{llf:>14.4f}{se:>10.4f}" for name, llf, se in rows]
        dropped = [f"{self.df_fixed} fixed effect(s)"] if self.df_fixed else []
        if self.dropped_vc:
            dropped.append(f"variance component(s) {list(self.dropped_vc)} set to 0")
        lines += [f"dropped: {', '.join(dropped)}",
                  f"LR statistic {self.statistic:.4f} (MCSE {self.statistic_mcse:.4f}), "
                  f"df {self.df}",
                  f"null distribution: {self.mixture_name}",
                  f"p-value {self.pvalue:.4g} (MCSE {self.pvalue_mcse:.2g})"]
        if self.dropped_vc:
            lines.append("chi-bar-square mixture (Self and Liang 1987): binomial(k, 1/2) "
                         "weights assume independent variance components")
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def chibar_weights(k_vc, df_fixed=0, mixture=True):
    """``(weight, df)`` pairs of the null distribution of the LR statistic.

    Parameters
    ----------
    k_vc : int
        Variance components set to 0 by the reduced model.
    df_fixed : int
        Fixed effects dropped.
    mixture : bool
        Binomial(k, 1/2) chi-bar-square weights (default); ``False``: ``chi2(d + k)``.
    """
    if not mixture or k_vc == 0:
        return ((1.0, int(df_fixed + k_vc)),)
    return tuple((float(comb(k_vc, j) / 2.0**k_vc), int(df_fixed + j))
                 for j in range(k_vc + 1))


def _mixture_name(weights):
    if len(weights) == 1:
        return f"chi2({weights[0][1]})"
    return " + ".join(f"{w:g} chi2({d})" for w, d in weights)


def _mixture_sf_pdf(x, weights):
    """Survival function and density of the mixture at ``x`` (``chi2(0)`` an atom at 0)."""
    sf = pdf = 0.0
    for w, d in weights:
        if d == 0:
            sf += w * float(x <= 0)
        else:
            sf += w * float(stats.chi2.sf(x, d))
            pdf += w * float(stats.chi2.pdf(x, d)) if x > 0 else 0.0
    return min(sf, 1.0), pdf


def lrtest(full, reduced, mixture=True):
    """Likelihood-ratio test of ``reduced`` against the larger model ``full``.

    Parameters
    ----------
    full : MonteCarloGLMMResults
        Fit of the larger model.
    reduced : MonteCarloGLMMResults or statsmodels GLMResults
        Fit of a model nested in ``full``: the same response, observations, weights, offset
        and family; fixed effects spanning a subspace of ``full``'s; a subset of its variance
        components (a GLM has none: every component at 0).  Components the reduced fit
        itself put at 0 (``reduced.boundary``) do not change the hypothesis, only its
        log-likelihood, which is then that of the smaller model it fitted.
    mixture : bool
        Use the chi-bar-square mixture when variance components are set to 0 (default);
        ``False`` uses the conservative ``chi2(df)``.

    Returns
    -------
    LRTestResult

    Raises
    ------
    TypeError
        If ``full`` is not a MonteCarloGLMM fit or ``reduced`` is neither that nor a GLM fit.
    ValueError
        If the models are not nested (naming what differs) or have the same parameters.
    """
    if not isinstance(mixture, (bool, np.bool_)):
        raise TypeError(f"mixture must be True or False; got {mixture!r}")
    full_r, red_r = _unwrap(full), _unwrap(reduced)
    for name, r in (("full", full_r), ("reduced", red_r)):
        if _is_glmm(r) and r.model.arrays is None:
            raise ValueError(f"{name} had its data removed by remove_data(): the test "
                             "compares the two models' designs and responses; refit it, or "
                             "keep the data")
    if not _is_glmm(full_r):
        raise TypeError("full must be the results of MonteCarloGLMM.fit; got "
                        f"{type(full_r).__name__}")
    if _is_glmm(red_r):
        red = _glmm_side(red_r)
    elif _is_glm(red_r):
        red = _glm_side(red_r, full_r.model.arrays.family)
    else:
        raise TypeError("reduced must be the results of MonteCarloGLMM.fit or of a "
                        f"statsmodels GLM; got {type(red_r).__name__}")
    full_side = _glmm_side(full_r)
    df_fixed, dropped = _check_nested(full_side, red)
    # A covariance of full that reduced lacks is an interior parameter: it counts as a
    # chi2 degree of freedom, not as a boundary.
    red_covs = getattr(red, "covs", {})
    extra = [n for k, n in red_covs.items() if k not in full_side.covs]
    if extra:
        raise ValueError(f"the models are not nested: reduced has covariance(s) {extra} "
                         "that full does not have")
    cov_dropped = [n for k, n in full_side.covs.items() if k not in red_covs]
    if df_fixed == 0 and not dropped and not cov_dropped:
        raise ValueError("reduced has the same parameters as full: nothing to test")
    l1, s1 = _glmm_llf(full_r), float(full_r.llf_mcse)
    l0, s0 = _reduced_llf(red_r, red, full_r.model.arrays)
    stat = 2.0 * (l1 - l0)
    stat_mcse = 2.0 * float(np.hypot(s1, s0))
    if stat < -3.0 * max(stat_mcse, 1e-6 * max(1.0, abs(l1))):
        warnings.warn(f"the full model's log-likelihood ({l1:.4f}) is below the reduced "
                      f"model's ({l0:.4f}) by more than its Monte Carlo error: the full fit "
                      "did not reach its maximum (refit it, or increase m)", UserWarning,
                      stacklevel=2)
    weights = chibar_weights(len(dropped), df_fixed + len(cov_dropped), mixture)
    # The full fit put every dropped component at 0 and drops no fixed effect: its maximum
    # lies in the reduced model, so the statistic is 0 (up to Monte Carlo error or
    # rounding), where chi2(0)'s atom gives p = 1.
    zero = (df_fixed == 0 and not cov_dropped and set(dropped) <= set(full_r.boundary)) or (
        stat_mcse == 0.0 and abs(stat) <= 1e-8 * max(1.0, abs(l1)))
    pvalue, density = _mixture_sf_pdf(0.0 if zero else max(stat, 0.0), weights)
    # Reported by the parameter's name (``subject Var(visit)``, not the component's
    # ``subject:visit``), as in params, summary and profile.
    named = tuple(full_side.param_of.get(v, v) for v in dropped)
    return LRTestResult(float(stat), df_fixed + len(cov_dropped) + len(dropped), pvalue,
                        stat_mcse, min(density * stat_mcse, 1.0), l1, l0, s1, s0, df_fixed,
                        named + tuple(cov_dropped), weights, _mixture_name(weights))


# ------------------------------------------------------------------------ the two models
def _unwrap(res):
    return getattr(res, "_results", res)


def _is_glmm(res):
    """Results of a MonteCarloGLMM fit (Monte Carlo or Laplace), by what they carry; an
    import of ``results`` here would make a cycle (results imports this module)."""
    return hasattr(res, "llf_mc") and hasattr(getattr(res, "model", None), "vcp_names")


def _is_glm(res):
    from statsmodels.genmod.generalized_linear_model import GLMResults

    return isinstance(res, GLMResults)


def _glmm_side(res):
    """What nesting compares, for a MonteCarloGLMM fit."""
    mod = res.model
    a = mod.arrays
    design = mod.design
    comps = list(design.vcp_names)
    # Covariances of correlated terms, by the pair of components they link.
    covs = {}
    for ui, i, j in design.cov.cross:
        u = design.cov.units[ui]
        name = mod.vcp_names[_cov_param_index(design.cov, ui, i, j)]
        covs[frozenset((comps[u[i]], comps[u[j]]))] = name
    # The variance parameter's name of each component (the same for a scalar component).
    param_of = {}
    for ui, u in enumerate(design.cov.units):
        for i, t in enumerate(u):
            param_of[comps[t]] = (mod.vcp_names[_cov_param_index(design.cov, ui, i, i)]
                                  if len(u) > 1 else mod.vcp_names[design.cov.param_ptr[ui]])
    return SimpleNamespace(code=a.family.kernel, wy=a.weights * a.y, wn=a.weights * a.ntrials,
                           offset=a.offset, X=a.X, fe_names=list(mod.exog_names),
                           vcp_names=comps, Z=mod.exog_vc, ident=mod.ident,
                           nobs=a.nobs, covs=covs, param_of=param_of)


def _cov_param_index(cov, ui, i, j):
    """Index (among the covariance parameters) of ``Cov(i, j)`` of term ``ui``."""
    return int(cov.param_ptr[ui]) + i * (i + 1) // 2 + j


def _glm_family_code(glm_model):
    """0 for a binomial GLM with the logit link, 1 for Poisson with the log link, the kernel
    code of :data:`glmm_sm.spec.families.LINK_CODES` for a binomial GLM with the probit or
    complementary log-log link, else None (the link is checked by its values: any class
    computing the link passes)."""
    from statsmodels.genmod import families

    from glmm_sm.spec.families import LINK_CODES

    fam = glm_model.family
    p = np.array([0.1, 0.5, 0.8])
    with np.errstate(all="ignore"):
        values = np.asarray(fam.link(p), dtype=float)
    if isinstance(fam, families.Binomial) and np.allclose(values, np.log(p / (1 - p))):
        return 0
    if isinstance(fam, families.Binomial) and np.allclose(values, stats.norm.ppf(p)):
        return LINK_CODES["probit"]
    if isinstance(fam, families.Binomial) and np.allclose(values, np.log(-np.log1p(-p))):
        return LINK_CODES["cloglog"]
    if isinstance(fam, families.Poisson) and np.allclose(values, np.log(p)):
        return 1
    return None


def _glm_side(res, family):
    """What nesting compares, for a statsmodels GLM fit: the log-likelihood's kernel
    ``sum wy eta - wn c(eta)`` (whatever the GLM's coding of a binomial response)."""
    glm = res.model
    code = _glm_family_code(glm)
    if code is None:
        raise ValueError(f"reduced: a GLM with family {type(glm.family).__name__} and link "
                         f"{type(glm.family.link).__name__} is not nested in a GLMM with "
                         f"the {family.name} family and the {family.link_name} link")
    w = np.asarray(glm.var_weights, dtype=float) * np.asarray(glm.freq_weights, dtype=float)
    n = np.asarray(glm.n_trials, dtype=float) * np.ones(len(w))
    y = np.asarray(glm.endog, dtype=float)
    offset = np.zeros(len(w)) + np.asarray(getattr(glm, "_offset_exposure", 0.0), dtype=float)
    return SimpleNamespace(code=code, wy=w * n * y, wn=w * n, offset=offset,
                           X=np.asarray(glm.exog, dtype=float),
                           fe_names=list(glm.exog_names), vcp_names=[], Z=None, ident=None,
                           nobs=len(w))


def _check_nested(full, red):
    """``(df_fixed, dropped variance components)``, or ValueError naming what differs."""
    if red.nobs != full.nobs:
        raise ValueError(f"the models are not nested: reduced has {red.nobs} observations, "
                         f"full {full.nobs} (fit both to the same rows)")
    # The Poisson model is the negative binomial's alpha = 0: on the boundary (alpha >= 0),
    # so alpha counts as a boundary parameter, with chi-bar-square weights.
    nb_vs_poisson = full.code == 2 and red.code == 1
    if red.code != full.code and not nb_vs_poisson:
        names = {0: "binomial (Logit link)", 1: "Poisson", 2: "negative binomial",
                 10: "binomial (Probit link)", 11: "binomial (CLogLog link)"}
        hint = (" (did you swap full and reduced? the Poisson model is nested in the "
                "negative binomial at alpha = 0)" if red.code == 2 and full.code == 1 else "")
        raise ValueError(f"the models are not nested: reduced is {names[red.code]}, full "
                         f"{names[full.code]}{hint}")
    for what, a, b in (("observation weights (or binomial trials)", red.wn, full.wn),
                       ("response", red.wy, full.wy),
                       ("offset", red.offset, full.offset)):
        if not np.allclose(a, b, rtol=1e-10, atol=1e-12):
            raise ValueError(f"the models are not nested: their {what} differ")
    extra = [v for v in red.vcp_names if v not in full.vcp_names]
    if extra:
        raise ValueError(f"the models are not nested: reduced has variance component(s) "
                         f"{extra} that full does not have ({full.vcp_names})")
    for t, name in enumerate(red.vcp_names):
        if not _same_columns(red.Z, red.ident == t, full.Z,
                             full.ident == full.vcp_names.index(name)):
            raise ValueError(f"the models are not nested: variance component {name!r} has "
                             "a different random-effects design in the two models")
    outside = _columns_outside(red.X, full.X, red.fe_names, full.fe_names)
    if outside:
        hint = (" (did you swap full and reduced?)"
                if red.X.shape[1] + len(red.vcp_names) > full.X.shape[1] + len(full.vcp_names)
                else "")
        raise ValueError(f"the models are not nested: reduced's fixed-effect column(s) "
                         f"{outside} are not in the span of full's {full.fe_names}{hint}")
    dropped = [v for v in full.vcp_names if v not in red.vcp_names]
    if nb_vs_poisson:
        dropped.append("alpha")
    return full.X.shape[1] - red.X.shape[1], dropped


def _same_columns(Za, cols_a, Zb, cols_b):
    A = sp.csc_matrix(Za)[:, np.flatnonzero(cols_a)]
    B = sp.csc_matrix(Zb)[:, np.flatnonzero(cols_b)]
    if A.shape != B.shape:
        return False
    diff = sp.csc_matrix(A - B)
    return diff.nnz == 0 or float(abs(diff).max()) <= 1e-12


def _columns_outside(Xr, Xf, names_r, names_f):
    """Names of the columns of ``Xr`` that are not in the column space of ``Xf``.

    A column with a name of ``Xf`` must equal that column; any other must be a linear
    combination of ``Xf``'s columns (a reparametrization, e.g. a different contrast coding).
    """
    out = []
    for j, name in enumerate(names_r):
        x = Xr[:, j]
        if name in names_f:
            if np.allclose(x, Xf[:, names_f.index(name)], rtol=1e-10, atol=1e-12):
                continue
        elif Xf.shape[1]:
            coef = np.linalg.lstsq(Xf, x, rcond=None)[0]
            if np.linalg.norm(x - Xf @ coef) <= 1e-8 * max(np.linalg.norm(x), 1.0):
                continue
        out.append(name)
    return out


def _glmm_llf(res):
    """The fit's log-likelihood as estimated (``llf`` is clipped at 0, which would bias the
    statistic; ``llf_unclipped`` is not)."""
    return float(getattr(res, "llf_unclipped", res.llf))


def _reduced_llf(res, side, arrays):
    """``(llf, mcse)`` of the reduced fit, with the family's constants."""
    if _is_glmm(res):
        return _glmm_llf(res), float(res.llf_mcse)
    # A GLM: its kernel at its own linear predictor plus the constants of the (same)
    # response, so that the scale is the GLMM's whatever the GLM's binomial coding.
    eta = side.X @ np.asarray(res.params, dtype=float) + side.offset
    value = float(np.sum(arrays.family.obs_terms(eta, side.wy, side.wn)[0]))
    return value + arrays.family.log_constant(arrays.y, arrays.ntrials, arrays.weights), 0.0


# ------------------------------------------------------------------------ null model
def null_loglike(model):
    """Log-likelihood of the intercept-only GLM without random effects (``llnull``).

    The statsmodels GLM convention: the same response, weights and offset, a constant as
    the only regressor, the family's constants included.  Fitted exactly (IRLS).

    Parameters
    ----------
    model : MonteCarloGLMM

    Returns
    -------
    float
    """
    from glmm_sm.fit.boundary import glm_fit

    a = model.arrays
    ones = replace(a, X=np.ones((a.nobs, 1)))
    value = glm_fit(SimpleNamespace(arrays=ones))[2]
    return value + a.family.log_constant(a.y, a.ntrials, a.weights)
