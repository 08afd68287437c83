"""Results of a Monte Carlo MLE fit: a statsmodels ``LikelihoodModelResults`` subclass."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from statsmodels.base import wrapper as wrap
from statsmodels.base.model import LikelihoodModelResults, LikelihoodResultsWrapper, ResultMixin

try:  # statsmodels >= 0.15 moved the decorators
    from statsmodels.tools._decorators import cache_readonly
except ImportError:  # pragma: no cover
    from statsmodels.tools.decorators import cache_readonly

__all__ = ["MonteCarloGLMMResults", "MonteCarloGLMMResultsWrapper"]


class MonteCarloGLMMResults(LikelihoodModelResults, ResultMixin):
    """Results of :meth:`MonteCarloGLMM.fit`.

    Inherits ``params``, ``bse``, ``tvalues``, ``pvalues``, ``cov_params``, ``conf_int``,
    ``t_test``, ``wald_test``, ``save``/``load`` from statsmodels.  The covariance is the
    inverse of the Monte Carlo observed information ``-H`` at the estimate, jointly for the
    fixed effects and the variance components (on the variance scale).

    Attributes
    ----------
    mcse_cov : ndarray
        Monte Carlo covariance of the estimate, ``H^{-1} V H^{-1}`` (Sung and Geyer 2007).
    ess : ndarray
        Effective sample size of each block's importance weights at the estimate.
    m : int
        Number of draws of the final round.
    llf_mc : float
        ``l_m`` at the estimate, without the family's normalizing constants (glmm's value).
    llf_mcse : float
        Monte Carlo standard error of ``llf``.
    converged : bool
    fit_log : FitLog
        Every evaluation and round of the fit.
    laplace_params : ndarray
        The Laplace MLE the fit started from.
    boundary : list of str
        Variance components estimated at 0.  Their standard errors are NaN (undefined at
        the boundary) and their rows of ``cov_params`` zero; see :mod:`glmm_sm.boundary`.
    """

    def __init__(self, model, outcome):
        cov, mc = outcome.errors()
        super().__init__(model, outcome.params, normalized_cov_params=cov, scale=1.0,
                         use_t=False, cov_type="nonrobust")
        ev = outcome.evaluation
        if not hasattr(self, "_cache"):
            self._cache = {}
        self.nobs = model.nobs
        self.df_model = model.df_model
        self.df_resid = model.df_resid
        self.k_extra = model.k_extra
        self.mcse_cov = mc
        self.ess = ev.ess
        self.m = outcome.n_draws
        self.llf_mc = ev.value
        self.llf_mcse = (float(np.sqrt(np.sum(np.clip(1.0 / ev.ess - 1.0 / self.m, 0, None))))
                         if self.m else 0.0)
        self.converged = outcome.converged
        self.fit_log = outcome.log
        self.laplace_params = outcome.log.laplace.get("params")
        self.gradient = ev.gradient
        self.hessian = ev.hessian
        self.seed = outcome.seed
        self.n_blocks = len(ev.ess)
        self._re_mean, self._re_sd = outcome.random_effect_moments()
        self.boundary = [model.vcp_names[t] for t in outcome.boundary]
        self._boundary_idx = [model.k_fe + t for t in outcome.boundary]
        self.mle_retvals = {"converged": outcome.converged, "message": outcome.log.message,
                            "rounds": len(outcome.log.rounds)}
        self.mle_settings = {"optimizer": "trust-exact (MCLA rounds)"}

    @cache_readonly
    def bse(self):
        """Standard errors; NaN for variance components estimated at 0 (undefined there)."""
        b = np.sqrt(np.clip(np.diag(self.cov_params()), 0, None))
        b[self._boundary_idx] = np.nan
        return b

    # --------------------------------------------------------------- names and pieces
    @property
    def param_names(self):
        return list(self.model.data.param_names)

    @property
    def fe_params(self):
        """Fixed-effect estimates (Series)."""
        k = self.model.k_fe
        return pd.Series(np.asarray(self.params)[:k], index=self.param_names[:k])

    @property
    def vcomp(self):
        """Variance-component estimates on the variance scale (Series)."""
        k = self.model.k_fe
        return pd.Series(np.asarray(self.params)[k:], index=self.model.vcp_names)

    def mcse(self):
        """Monte Carlo standard errors of the estimates (Series)."""
        return pd.Series(np.sqrt(np.clip(np.diag(self.mcse_cov), 0, None)),
                         index=self.param_names)

    @cache_readonly
    def llf(self):
        """Monte Carlo log-likelihood including the family's constants (``log C(N, y)``,
        ``-log y!``), comparable with lme4 and glmmTMB."""
        a = self.model.arrays
        return self.llf_mc + a.family.log_constant(a.y, a.ntrials, a.weights)

    # --------------------------------------------------------------- random effects
    def random_effects(self, term=None):
        """Conditional means and SDs of the random effects given the data, at the estimate.

        Parameters
        ----------
        term : str, optional
            A variance-component name; by default all random effects.

        Returns
        -------
        DataFrame
            Index: the random effects; columns ``Mean`` and ``SD`` (as
            ``BinomialBayesMixedGLM``'s ``random_effects``).
        """
        mod = self.model
        sel = np.arange(len(mod.vc_names))
        if term is not None:
            if term not in mod.vcp_names:
                raise ValueError(f"term: unknown variance component {term!r}; use one of "
                                 f"{mod.vcp_names}")
            sel = np.flatnonzero(mod.ident == mod.vcp_names.index(term))
        names = [mod.vc_names[j] for j in sel]
        return pd.DataFrame({"Mean": self._re_mean[sel], "SD": self._re_sd[sel]}, index=names)

    # --------------------------------------------------------------- prediction
    def predict(self, exog=None, which="mean", conditional=False, offset=None,
                transform=True):
        """Predicted means (``which="mean"``) or linear predictors (``which="linear"``).

        Parameters
        ----------
        exog : DataFrame or array_like, optional
            New data: a DataFrame goes through the model's formulas; default: the data fitted.
        which : {"mean", "linear"}
        conditional : bool
            Add the predicted random effects (conditional means given the data); effects of
            levels not seen in the fit are set to their mean, zero.  Default: fixed effects
            only (the prediction for a new, unobserved cluster).
        offset : array_like, optional
        transform : bool
            Pass ``exog`` through the formula (statsmodels' convention).
        """
        mod = self.model
        if which not in ("mean", "linear"):
            raise ValueError(f"which must be 'mean' or 'linear'; got {which!r}")
        beta = np.asarray(self.params)[: mod.k_fe]
        if exog is None:
            eta = mod.exog @ beta + (mod.offset if offset is None else offset)
            if conditional:
                eta = eta + mod.exog_vc @ self._re_mean
            index = getattr(mod.data, "row_labels", None)
        else:
            eta = np.asarray(super().predict(exog, transform=transform, which="linear"))
            eta = eta + (0.0 if offset is None else np.asarray(offset, dtype=float))
            if conditional:
                eta = eta + self._new_vc_design(exog) @ self._re_mean
            index = exog.index if isinstance(exog, pd.DataFrame) else None
        out = eta if which == "linear" else mod.family.link.inverse(eta)
        return pd.Series(out, index=index) if index is not None else out

    def _new_vc_design(self, exog):
        from .design import vc_design_from_formulas

        mod = self.model
        if not isinstance(exog, pd.DataFrame) or getattr(mod, "vc_formulas", None) is None:
            raise ValueError("conditional predictions for new data need a DataFrame and a "
                             "model built with from_formula")
        Z, _, _, names = vc_design_from_formulas(mod.vc_formulas, exog, eval_env={},
                                                 **mod.vc_spec)
        pos = {n: j for j, n in enumerate(mod.vc_names)}
        cols = np.array([pos.get(n, -1) for n in names])
        Zc = Z.tocsc()
        out = np.zeros((Z.shape[0], len(mod.vc_names)))
        for k, j in enumerate(cols):
            if j >= 0:
                out[:, j] += Zc[:, [k]].toarray()[:, 0]
        return out

    # --------------------------------------------------------------- tests
    def _canonical_contrast(self, r_matrix):
        if not isinstance(r_matrix, (str, list, tuple)):
            return r_matrix
        if isinstance(r_matrix, (list, tuple)):
            if all(isinstance(s, str) for s in r_matrix):
                return [self._canonical_contrast(s) for s in r_matrix]
            return r_matrix
        aliases = {}
        for name in self.param_names:
            alias = re.sub(r"\[T\.(True|False)\]", lambda mt: mt.group(1).upper(), name)
            alias = re.sub(r"\[(T\.)?(.*?)\]", r"\2", alias)
            if alias != name and alias not in self.param_names:
                aliases[alias] = name
        out = r_matrix
        for alias in sorted(aliases, key=len, reverse=True):
            pattern = r"(?<![\w\[\].])" + re.escape(alias) + r"(?![\w\[\]])"
            out = re.sub(pattern, lambda _m, a=alias: aliases[a], out)
        return out

    def t_test(self, r_matrix, cov_p=None, use_t=None):
        """statsmodels' ``t_test``; also accepts R-style names such as ``"CrossR/R"``."""
        return super().t_test(self._canonical_contrast(r_matrix), cov_p=cov_p, use_t=use_t)

    def wald_test(self, r_matrix, cov_p=None, invcov=None, use_f=None, df_constraints=None,
                  scalar=True):
        """statsmodels' ``wald_test``; also accepts R-style names such as ``"CrossR/R"``."""
        return super().wald_test(self._canonical_contrast(r_matrix), cov_p=cov_p,
                                 invcov=invcov, use_f=use_f, df_constraints=df_constraints,
                                 scalar=scalar)

    # --------------------------------------------------------------- summary
    def summary(self, alpha=0.05, title=None):
        """Header, fixed effects, and variance components with MCSE.

        Variance components get one-sided p-values (H1: nu > 0); Wald inference at the
        zero boundary is conservative.
        """
        from .summary import build_summary

        return build_summary(self, alpha=alpha, title=title)


class MonteCarloGLMMResultsWrapper(LikelihoodResultsWrapper):
    _attrs = {}
    _wrap_attrs = wrap.union_dicts(LikelihoodResultsWrapper._wrap_attrs, _attrs)
    _methods = {}
    _wrap_methods = wrap.union_dicts(LikelihoodResultsWrapper._wrap_methods, _methods)


wrap.populate_wrapper(MonteCarloGLMMResultsWrapper, MonteCarloGLMMResults)

