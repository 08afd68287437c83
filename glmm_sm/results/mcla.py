"""Results of a Monte Carlo MLE fit: a statsmodels ``LikelihoodModelResults`` subclass."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from statsmodels.base import wrapper as wrap
from statsmodels.base.model import LikelihoodModelResults, LikelihoodResultsWrapper, ResultMixin

from glmm_sm.fit.boundary import boundary_view
from glmm_sm.mcla.tails import checked_pareto_k
from glmm_sm.spec.validation import nonnegative_up_to_rounding

try:  # statsmodels >= 0.15 moved the decorators
    from statsmodels.tools._decorators import cache_readonly
except ImportError:  # pragma: no cover
    from statsmodels.tools.decorators import cache_readonly

__all__ = ["MonteCarloGLMMResults", "MonteCarloGLMMResultsWrapper", "DataRemovedError",
           "summary_arguments"]

#: What a result says when asked for something that needs the data after remove_data().
DATA_REMOVED = "this result had its data removed by remove_data(); refit or keep the data"


class DataRemovedError(RuntimeError):
    """Raised by a result's methods that need the data, draws or design arrays after
    :meth:`.MonteCarloGLMMResults.remove_data` dropped them."""


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
        the boundary) and their rows of ``cov_params`` zero; see :mod:`glmm_sm.fit.boundary`.
    """

    _data_in_cache = ["fittedvalues", "resid", "wresid", "resid_response", "resid_pearson",
                      "resid_deviance"]

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
        # The size of the terms each MCSE variance sums, diag(|H^-1| |V| |H^-1|): a diagonal
        # of H^-1 V H^-1 below 0 by less than rounding of these is 0 (a parameter the random
        # effects barely touch, as a within-cluster contrast, has ~1e-20).
        V = getattr(ev, "score_var", None)
        # (NaN rows, parameters off the positive definite part, add no scale: their
        # variance stays NaN)
        A = None if cov is None else np.where(np.isfinite(cov), np.abs(cov), 0.0)
        view = boundary_view(model, outcome.params, outcome.boundary, outcome.engine)
        self._mcse_scale = None
        if A is not None and V is not None and np.all(np.isfinite(V)):
            # V is the final engine's: without the components at 0 when some went there
            keep = np.r_[np.arange(model.k_fe), model.k_fe + view.keep,
                         model.k_fe + model.k_vcp + np.arange(model.k_fam)]
            full = np.zeros_like(A)
            full[np.ix_(keep, keep)] = np.abs(np.asarray(V, dtype=float))
            self._mcse_scale = np.diag(A @ full @ A)
        self.ess = ev.ess
        self.m = outcome.n_draws
        #: Each block's draws where they differ between blocks (``per_block_m=True``,
        #: :mod:`glmm_sm.mcla.block_m`: block ``b`` used the first ``block_m[b]`` of the
        #: ``m`` draws); None when every block used all ``m``.
        self.block_m = getattr(outcome.engine, "block_m", None) if outcome.m is None else None
        self.llf_mc = ev.value
        a = model.arrays
        #: The family's normalizing constants (``llf - llf_mc``), kept for remove_data().
        self._log_constant = float(a.family.log_constant(a.y, a.ntrials, a.weights))
        #: Whether the likelihood was integrated by quadrature alone (``sampler="quadrature"``):
        #: no Monte Carlo error, every MCSE 0.
        self.deterministic = bool(getattr(getattr(outcome.engine, "sampler", None),
                                          "deterministic", False))
        # 1 / ESS - 1 / m >= 0 (ESS <= m by Cauchy-Schwarz): below 0 only by rounding.
        m_b = self.m if self.block_m is None else self.block_m
        self.llf_mcse = (float(np.sqrt(np.sum(nonnegative_up_to_rounding(
            1.0 / ev.ess - 1.0 / m_b, 1.0 / ev.ess, "llf_mcse: 1 / ESS - 1 / m"))))
            if self.m and not self.deterministic else 0.0)
        self.converged = outcome.converged
        self.fit_log = outcome.log
        self.laplace_params = outcome.log.laplace.get("params")
        self.gradient = ev.gradient
        self.hessian = ev.hessian
        self.seed = outcome.seed
        self.n_blocks = len(ev.ess)
        self._re_mean, self._re_sd = outcome.random_effect_moments()
        #: The final round's engine (its frozen draws): ``l_m`` for profiles, weights for
        #: diagnostics.  None when no variance component is left (an exact GLM fit).
        self.engine = outcome.engine
        #: Pareto k (PSIS) of each block's importance weights at the estimate: below 0.5
        #: the MCSE holds; above ``pareto_k_threshold(m)`` (0.7) it means nothing.
        self.pareto_k = checked_pareto_k(self.engine, view.theta)
        self.boundary = [model.vcp_names[t] for t in outcome.boundary]
        #: Correlated terms (and scalar components) whose covariance is singular at the
        #: estimate (lme4's "boundary (singular) fit"); only with correlated terms.
        self.singular = list(getattr(outcome, "singular", []))
        self._boundary_idx = [model.k_fe + t for t in outcome.boundary]
        self.mle_retvals = _mle_retvals(outcome)
        self.mle_settings = {"optimizer": "trust-exact (MCLA rounds)",
                             "laplace_optimizer": "L-BFGS-B"}

    @cache_readonly
    def bse(self):
        """Standard errors; NaN for variance components estimated at 0 (undefined there)
        and for parameters on a direction where the Hessian is not negative definite."""
        var = np.diag(self.cov_params()).astype(float)
        with np.errstate(invalid="ignore"):
            b = np.where(var >= 0, np.sqrt(np.abs(var)), np.nan)
        b[self._boundary_idx] = np.nan
        return b

    # --------------------------------------------------------------- remove_data
    def remove_data(self):
        """Drop the data, the design arrays and the draws, keeping what inference needs.

        statsmodels' ``remove_data`` (the model's ``endog``, ``exog``, ``exog_vc``,
        weights, offset, arrays and block layouts, and the cached fitted values and
        residuals), plus the final round's engine with its draws and its copy of the data
        in block order.  ``params``, ``bse``, ``cov_params()``, ``conf_int()`` (Wald),
        ``t_test``, ``wald_test``, ``mcse()``, ``summary()``, ``random_effects()``,
        ``varcorr()`` and predictions for new data keep working (``random_effects_cov``
        and what uses it only when computed before); everything that needs the data or the
        draws raises :class:`.DataRemovedError` saying so.  The model's ``data`` (the
        formula's frame, needed to unpickle a formula model) is statsmodels' and stays.
        """
        import copy

        mod = self.model
        design = getattr(mod, "design", None)
        super().remove_data()
        if design is not None:  # names, ident and covariance structure, without Z
            slim = copy.copy(design)
            slim.Z = None
            slim._layout = None
            mod.design = slim
        for key in self._data_in_cache:  # recomputed on access, hence refused clearly
            self._cache.pop(key, None)
        self.engine = None
        mod._draws = None
        mod._engine = None
        self._data_removed = True

    def _check_data(self, what):
        """Raise :class:`DataRemovedError` for ``what`` after :meth:`remove_data`."""
        if getattr(self, "_data_removed", False):
            raise DataRemovedError(f"{what}: {DATA_REMOVED}")

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
        return pd.Series(np.asarray(self.params)[k : k + self.model.k_vcp],
                         index=self.model.vcp_names)

    @property
    def theta(self):
        """The negative binomial's size ``theta = 1/alpha`` (lme4's and glmmTMB's
        parameter) as a Series ``(estimate, se, mcse)`` by the delta method
        (``se(theta) = se(alpha) / alpha^2``); None for the other families."""
        mod = self.model
        if not getattr(mod, "k_fam", 0):
            return None
        j = mod.k_fe + mod.k_vcp
        a = float(np.asarray(self.params)[j])
        se = float(np.asarray(self.bse)[j])
        mc = float(np.asarray(self.mcse())[j])
        return pd.Series({"estimate": 1.0 / a, "se": se / a**2, "mcse": mc / a**2},
                         name="theta")

    def _boundary_view(self):
        """The fit as its final engine sees it (:class:`~glmm_sm.fit.boundary.BoundaryView`):
        without the variance components set to 0."""
        k = self.model.k_fe
        return boundary_view(self.model, self.params, [i - k for i in self._boundary_idx],
                             self.engine)

    def mcse(self):
        """Monte Carlo standard errors of the estimates (Series)."""
        # The sandwich is positive semi-definite: a negative diagonal is roundoff around 0
        # (NaN stays NaN: a direction where the Hessian is not negative definite).
        var = np.diag(self.mcse_cov).astype(float)
        row = np.nanmax(np.abs(np.asarray(self.mcse_cov, dtype=float)), axis=1, initial=0.0)
        terms = getattr(self, "_mcse_scale", None)
        if terms is not None and terms.shape == row.shape:
            row = np.fmax(row, terms)
        var = nonnegative_up_to_rounding(var, row, "mcse: Monte Carlo variances")
        return pd.Series(np.sqrt(var), index=self.param_names)

    @property
    def llf_unclipped(self):
        """The same as :attr:`llf` (kept for code written when ``llf`` was clipped at 0)."""
        return self.llf

    @cache_readonly
    def llf(self):
        """Monte Carlo log-likelihood including the family's constants (``log C(N, y)``,
        ``-log y!``), comparable with lme4 and glmmTMB; AIC and BIC come from it.

        A probability is at most 1, so the log-likelihood of binomial and Poisson data is at
        most 0; a Monte Carlo estimate may still come out above 0 (data fitted almost
        perfectly, e.g. separated data).  It is reported as estimated, never clipped:
        ``llf_mcse`` gives its Monte Carlo error and the summary notes the excess.
        """
        return self.llf_mc + self._log_constant

    def varcorr(self, ci=None, alpha=0.05, random_state=None):
        """SDs and correlations of the random effects, lme4's ``VarCorr`` columns, with
        delta-method standard errors and MCSEs (:func:`glmm_sm.results.varcorr.varcorr_table`).

        ``ci="profile"`` gives instead lme4's ``as.data.frame(VarCorr(fit))`` columns
        (``grp``, ``var1``, ``var2``, ``vcov``, ``sdcor``) with the ``1 - alpha`` profile
        intervals of each SD and correlation and their ends' MCSEs, for models with
        correlated terms (:func:`glmm_sm.inference.profile_cov.varcorr_profile`).

        Returns
        -------
        DataFrame
            One row per random effect of a grouping factor: ``Groups``, ``Name``
            (``(Intercept)`` for a random intercept), ``Variance``, ``Std.Dev.``, ``Corr``
            (correlation with the group's first effect; ``Corr.2``, ... with its second, ...
            for terms of three or more columns), then ``SE(...)`` and ``MCSE(...)`` of the
            SD and of each correlation.
        """
        from glmm_sm.results.varcorr import varcorr_table

        if ci is not None:
            if ci != "profile":
                raise ValueError(f"ci must be None or 'profile'; got {ci!r}")
            if not self.model.design.cov.has_vector:
                raise ValueError("varcorr(ci='profile') is for models with correlated terms; "
                                 "use profile_conf_int() for scalar variance components")
            from glmm_sm.inference.profile_cov import varcorr_profile

            self._check_data("varcorr(ci='profile')")
            return varcorr_profile(self, alpha, random_state)
        return varcorr_table(self)

    def degenerate_directions(self, tol=None):
        """For each correlated term whose covariance is singular at the estimate (see
        ``singular``), the degenerate direction in the term's column names and the
        suggested reduced term
        (:func:`glmm_sm.inference.singular.degenerate_directions`).

        Returns
        -------
        list of DegenerateDirection
        """
        from glmm_sm.inference.singular import degenerate_directions

        return degenerate_directions(self, tol)

    def reduced_fits(self, term=None, random_state=None, tol=None, **fit_kwargs):
        """Refit a correlated term's reduced models, ``(1 + x || g)`` and ``(1 | g)``, and
        test each against this fit by a likelihood ratio with its boundary mixture
        (:func:`glmm_sm.inference.singular.reduced_fits`).  This fit is not changed.

        Returns
        -------
        ReducedFits
        """
        from glmm_sm.inference.singular import reduced_fits

        self._check_data("reduced_fits()")
        return reduced_fits(self, term, random_state, tol, **fit_kwargs)

    def VarCorr(self):  # noqa: N802  (lme4's name)
        """lme4's name for :meth:`varcorr`."""
        return self.varcorr()

    def fixef(self):
        """lme4's ``fixef``: the fixed-effect estimates (Series, as :attr:`fe_params`)."""
        return self.fe_params

    def ranef(self):
        """lme4's ``ranef``: ``{grouping term: random_effects(term)}``, one frame per
        variance component or correlated term (as MixedLM's ``random_effects``, a dict by
        group), rows labelled by the level."""
        return {name: self.random_effects(name) for name in self._effect_terms()}

    def _effect_terms(self):
        """Names :meth:`random_effects` takes: scalar components, then correlated terms."""
        design = self.model.design
        in_terms = {c for _, comps, _ in design.cov_terms for c in comps}
        return ([n for t, n in enumerate(design.vcp_names) if t not in in_terms]
                + [name for name, _, _ in design.cov_terms])

    # --------------------------------------------------------------- random effects
    def random_effects(self, term=None):
        """Conditional means and SDs of the random effects given the data, at the estimate.

        Parameters
        ----------
        term : str, optional
            A variance component or correlated term (``"herd"`` for ``(1 | herd)``); by
            default all random effects.

        Returns
        -------
        DataFrame
            Columns ``Mean`` and ``SD`` (as ``BinomialBayesMixedGLM``'s
            ``random_effects``).  With ``term``, one row per level labelled by the level
            (``1``, as lme4's ``ranef``; ``1:2`` for a level of ``a:b``), the index named by
            the term; a correlated term has columns ``("Mean", name)`` and ``("SD", name)``
            per column of the term.  Without ``term``, a ``(component, level)`` MultiIndex.
            Effects that a level alone does not name keep the design's column names.
        """
        from glmm_sm.results.varcorr import effect_levels

        mod = self.model
        levels = effect_levels(mod)
        terms = {name: (comps, labels) for name, comps, labels in mod.design.cov_terms}
        if term in terms:
            return self._vector_effects(*terms[term], levels, term)
        comps = list(mod.design.vcp_names)
        if term is None:
            index = pd.MultiIndex.from_arrays([[comps[t] for t in mod.ident], levels],
                                              names=["component", "level"])
            if index.has_duplicates:
                index = list(mod.vc_names)
            return pd.DataFrame({"Mean": self._re_mean, "SD": self._re_sd}, index=index)
        if term not in comps:
            raise ValueError(f"term: unknown variance component {term!r}; use one of "
                             f"{self._effect_terms()}")
        sel = np.flatnonzero(mod.ident == comps.index(term))
        index = _level_index([levels[j] for j in sel], [mod.vc_names[j] for j in sel], term)
        return pd.DataFrame({"Mean": self._re_mean[sel], "SD": self._re_sd[sel]}, index=index)

    def _vector_effects(self, comps, labels, levels, term):
        """A correlated term's effects: one row per level, columns ``("Mean", label)`` and
        ``("SD", label)`` for each of its ``k`` columns."""
        mod = self.model
        cols = [np.flatnonzero(mod.ident == c) for c in comps]
        index = _level_index([levels[j] for j in cols[0]], [mod.vc_names[j] for j in cols[0]],
                             term)
        data = {}
        for what, arr in (("Mean", self._re_mean), ("SD", self._re_sd)):
            for lab, cl in zip(labels, cols, strict=True):
                data[(what, lab)] = arr[cl]
        return pd.DataFrame(data, index=index)

    # --------------------------------------------------------------- prediction
    def predict(self, exog=None, which="mean", conditional=False, offset=None,
                transform=True, allow_new_levels=False, exposure=None):
        """Predicted means (``which="mean"``) or linear predictors (``which="linear"``).

        The default is the fixed-effects prediction, random effects at 0, as statsmodels'
        ``MixedLM.predict`` and ``BinomialBayesMixedGLM.predict`` give it (and lme4's
        ``predict(fit, re.form = NA)``): the prediction for a new, unobserved cluster.  For
        a non-identity link it is not the population-averaged mean ``E[y]``, which averages
        the inverse link over the random effects.  ``conditional=True`` adds the predicted
        random effects (lme4's default ``predict``; :attr:`fittedvalues` are those for the
        data fitted).

        Parameters
        ----------
        exog : DataFrame or array_like, optional
            New data: a DataFrame goes through the model's formulas; default: the data fitted.
        which : {"mean", "linear"}
            The scale, statsmodels GLM's ``which``: the mean (a proportion for binomial data)
            or the linear predictor.
        conditional : bool
            Add the predicted random effects (conditional means given the data), scalar
            components and correlated terms alike.  Default: fixed effects only.
        offset : array_like, optional
            Default: the model's offset for the data fitted, 0 for new data.
        transform : bool
            Pass ``exog`` through the formula (statsmodels' convention).
        allow_new_levels : bool
            With ``conditional=True``: a level of ``exog`` not seen in the fit is an error
            (default) or, with ``True``, gets effect 0, its mean (lme4's
            ``allow.new.levels``).  See :func:`glmm_sm.inference.prediction.random_effects_design`.
        exposure : array_like or float, optional
            Log-link (Poisson) models: ``log(exposure)`` is added to the offset, as in
            statsmodels' GLM; default: the model's exposure for the data fitted.  Required
            for new data when the model was fitted with an exposure
            (:func:`glmm_sm.inference.prediction.prediction_offset`).
        """
        from glmm_sm.inference.prediction import prediction_offset

        mod = self.model
        if which not in ("mean", "linear"):
            hint = (" (the random effects are chosen by conditional=True or False)"
                    if which in ("conditional", "marginal") else "")
            raise ValueError(f"which must be 'mean' or 'linear'; got {which!r}{hint}")
        if not isinstance(conditional, (bool, np.bool_)):
            raise TypeError(f"conditional must be True or False; got {conditional!r}")
        beta = np.asarray(self.params)[: mod.k_fe]
        if exog is None:
            self._check_data("predict() for the data fitted (pass exog)")
            eta = mod.exog @ beta
            index = getattr(mod.data, "row_labels", None)
        else:
            from glmm_sm.spec.formula_checks import check_new_data

            check_new_data(mod, exog, transform)
            eta = np.asarray(super().predict(exog, transform=transform, which="linear"))
            index = exog.index if isinstance(exog, pd.DataFrame) else None
        n = len(eta)
        eta = eta + prediction_offset(self, exog is not None, n, offset, exposure)
        if conditional:
            from glmm_sm.inference.prediction import random_effects_design

            rd = random_effects_design(self, exog, n, allow_new_levels=allow_new_levels)
            eta = eta + rd.Z @ np.asarray(self._re_mean, dtype=float)
        out = eta if which == "linear" else mod.family.link.inverse(eta)
        return pd.Series(out, index=index) if index is not None else out

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

    # --------------------------------------------------------------- inference
    # (likelihood-ratio tests, profiles: glmm_sm/inference/lrtest.py, glmm_sm/inference/profile.py)
    def conf_int(self, alpha=0.05, cols=None, method="wald", random_state=None,
                 time_budget=600.0, disp=True):
        """Confidence intervals: Wald (statsmodels' default) or profile likelihood.

        Parameters
        ----------
        alpha : float
            ``1 - alpha`` intervals.
        cols : None, str, int or sequence of them
            Parameters to compute (names or positions); the rows of the others are NaN.
            Default: all.
        method : {"wald", "profile"}
            ``"wald"``: ``params -+ z se``, exactly statsmodels' (no truncation at 0).
            ``"profile"``: ``{psi : 2 (l_max - l_p(psi)) <= chi2_{1, 1-alpha}}`` from the
            Monte Carlo log-likelihood on the final draws, a variance's lower end 0 when the
            profile deviance at 0 is below the cut (see :mod:`glmm_sm.inference.profile`).
            The ends'
            Monte Carlo errors are in :meth:`profile_conf_int`.
        random_state : optional
            For ``"profile"``: seeds re-centred draws and fits without a component
            (default: derived from the fit's seed, so the result is reproducible).
        time_budget : float or None
            For ``"profile"``: seconds for the whole call (default 600, as the fit's; None:
            no limit).  Ends not found when it runs out are NaN, with a ConvergenceWarning
            that says why (the reasons are in :meth:`profile_conf_int`'s ``note``).
        disp : bool
            For ``"profile"``: a progress bar of the ends (on a terminal or in a notebook).

        Returns
        -------
        ndarray (k, 2), or a DataFrame for pandas data
            statsmodels' shape and columns (``0`` lower, ``1`` upper) for both methods, so
            that code written for any statsmodels result reads it.  The profile ends' Monte
            Carlo standard errors, with named columns (``lower``, ``upper``,
            ``lower_mcse``, ``upper_mcse``), are :meth:`profile_conf_int`'s.
        """
        from glmm_sm.inference.profile import _check_alpha, param_indices

        if method not in ("wald", "profile"):
            raise ValueError(f"method must be 'wald' or 'profile'; got {method!r}")
        _check_alpha(alpha)
        if method == "wald" and cols is None:
            return super().conf_int(alpha=alpha)
        if method == "profile":
            self._check_data("conf_int(method='profile')")
        rows = param_indices(self, cols)
        out = np.full((len(self.params), 2), np.nan)
        if method == "wald":
            out[rows] = np.asarray(super().conf_int(alpha=alpha))[rows]
        else:
            ci = self.profile_conf_int(alpha, rows, random_state, time_budget, disp)
            out[rows] = ci[["lower", "upper"]].to_numpy(dtype=float)
        return out

    def profile_conf_int(self, alpha=0.05, cols=None, random_state=None, time_budget=600.0,
                         disp=True):
        """Profile-likelihood intervals with the Monte Carlo standard error of each end;
        ``time_budget`` (seconds, default 600; None: no limit) and ``disp`` (progress bar)
        as in :func:`glmm_sm.inference.profile.profile_conf_int`.

        Returns
        -------
        DataFrame
            Columns ``lower``, ``upper``, ``lower_mcse``, ``upper_mcse``, ``note``; see
            :func:`glmm_sm.inference.profile.profile_conf_int`.
        """
        from glmm_sm.inference.profile import param_indices, profile_conf_int

        self._check_data("profile_conf_int()")
        if self.model.design.cov.has_vector:
            from glmm_sm.inference.profile_cov import cov_profile_conf_int

            targets = None if cols is None else param_indices(self, cols)
            return cov_profile_conf_int(self, alpha, targets, random_state, time_budget)
        return profile_conf_int(self, alpha, cols, random_state, time_budget, disp)

    def profile(self, name, alpha=0.01, n_points=8, random_state=None, time_budget=600.0,
                disp=True):
        """Profile curve of one parameter: DataFrame with ``value``, ``loglike``,
        ``deviance``, ``zeta`` in increasing ``value``
        (:func:`glmm_sm.inference.profile.profile_frame`; ``time_budget``, seconds, default
        600, None: no limit; ``disp``: a progress bar).
        ``deviance >= 0`` (how each is estimated: :mod:`glmm_sm.inference.profile`);
        ``loglike`` is ``llf_mc - deviance / 2``, on the fit's scale whatever the draws.
        """
        from glmm_sm.inference.profile import profile_frame

        self._check_data("profile()")
        if self.model.design.cov.has_vector:
            from glmm_sm.inference.profile_cov import cov_profile_frame

            return cov_profile_frame(self, name, alpha=alpha, n_points=n_points,
                                     random_state=random_state)
        return profile_frame(self, name, alpha=alpha, n_points=n_points,
                             random_state=random_state, time_budget=time_budget, disp=disp)

    def compare_lr_test(self, restricted, mixture=True):
        """Likelihood-ratio test against a nested ``restricted`` fit (GLMM or GLM).

        Returns
        -------
        (lr_stat, p_value, df_diff)
            As statsmodels' ``compare_lr_test``; a chi-bar-square mixture gives the p-value
            when variance components are set to 0.
            :func:`glmm_sm.lrtest <glmm_sm.inference.lrtest.lrtest>` returns the full result
            with Monte Carlo errors.
        """
        from glmm_sm.inference.lrtest import lrtest

        self._check_data("compare_lr_test()")
        out = lrtest(self, restricted, mixture=mixture)
        return out.statistic, out.pvalue, out.df

    @cache_readonly
    def llnull(self):
        """Log-likelihood of the intercept-only GLM without random effects (statsmodels'
        GLM convention; exact, with the family's constants)."""
        from glmm_sm.inference.lrtest import null_loglike

        self._check_data("llnull")
        return null_loglike(self.model)

    # --------------------------------------------------------------- prediction, simulation
    # (get_prediction, simulate, residuals: glmm_sm/inference/prediction.py and
    # glmm_sm/inference/simulate.py)
    #: How the likelihood was approximated: "mcla" here, "laplace" for ``fit(method="laplace")``.
    method = "mcla"

    @property
    def response_label(self):
        """The response as the summary names it: ``y``, or ``s / (s + f)`` for a binomial
        response given as successes and failures."""
        names = self.model.endog_names
        if isinstance(names, (list, tuple)) and len(names) == 2:
            return f"{names[0]} / ({names[0]} + {names[1]})"
        return str(names)

    def get_prediction(self, exog=None, offset=None, conditional=False, transform=True,
                       exog_vc=None, allow_new_levels=False, exposure=None):
        """Predicted means with delta-method standard errors and confidence intervals.

        The interval is a normal interval for the linear predictor ``eta``, mapped through
        the inverse link.  Marginal (default): ``eta = x' beta + offset`` with variance
        ``x' Cov(beta) x``.  ``conditional=True``: ``eta`` adds ``z' E[u | y]`` and its
        variance ``z' Var(u | y) z`` (:attr:`random_effects_cov`, correlations within a
        block kept), treating ``beta_hat`` and ``u | y`` as independent and ``nu`` as known
        (see :mod:`glmm_sm.inference.prediction`).

        Parameters
        ----------
        exog : DataFrame or array_like, optional
            New data; a DataFrame goes through the model's formulas.  Default: the data.
        offset : array_like, optional
            Default: the model's offset for the data fitted, 0 for new data.
        conditional : bool
            Include the predicted random effects (see ``allow_new_levels`` for levels not
            seen in the fit).
        transform : bool
            Pass ``exog`` through the formula.
        exog_vc : array_like or sparse (n, q), optional
            Random-effects design in the model's columns, for conditional predictions from
            arrays.
        allow_new_levels : bool
            With ``conditional=True``: a level not seen in the fit is an error (default),
            or gets mean 0 and the prior variance (``True``, lme4's ``allow.new.levels``).
        exposure : array_like or float, optional
            Log-link models: ``log(exposure)`` joins the offset; required for new data when
            the model was fitted with an exposure (see :meth:`predict`).

        Returns
        -------
        PredictionResultsMean
            statsmodels' GLM prediction object: ``predicted_mean``, ``se_mean``,
            ``conf_int()``, ``summary_frame(alpha)`` with ``mean``, ``mean_se``,
            ``mean_ci_lower``, ``mean_ci_upper``; ``linpred`` for the linear predictor.
        """
        from glmm_sm.inference.prediction import get_prediction

        if exog is None:
            self._check_data("get_prediction() for the data fitted (pass exog)")
        return get_prediction(self, exog=exog, offset=offset, conditional=conditional,
                              transform=transform, exog_vc=exog_vc,
                              allow_new_levels=allow_new_levels, exposure=exposure)

    @cache_readonly
    def random_effects_cov(self):
        """Conditional covariance of the random effects given the data, at the estimate.

        scipy.sparse ``(q, q)``, block diagonal, in the order of ``model.vc_names``:
        importance-sampling moments of the final round's draws (see
        :func:`glmm_sm.inference.prediction.conditional_re_cov`).  Its diagonal is the square of
        ``random_effects()["SD"]``.
        """
        from glmm_sm.inference.prediction import conditional_re_cov

        self._check_data("random_effects_cov (compute it before remove_data() to keep it)")
        return conditional_re_cov(self)

    @cache_readonly
    def fittedvalues(self):
        """Conditional fitted means ``mu = g^{-1}(X beta + offset + Z E[u | y])`` (a
        proportion for binomial data), as MixedLM's ``fittedvalues`` and lme4's
        ``fitted()``: ``predict(conditional=True)``.  ``predict()`` gives the fixed-effects
        ones (random effects at 0).  For Bernoulli and Poisson data
        ``resid == endog - fittedvalues``."""
        self._check_data("fittedvalues")
        return np.asarray(self.predict(conditional=True), dtype=float)

    @cache_readonly
    def resid(self):
        """Response residuals on the conditional fit, MixedLM's ``resid``: the same as
        :attr:`resid_response` (successes minus expected successes for binomial data with
        trials, as statsmodels' GLM)."""
        self._check_data("resid")
        return np.asarray(self.resid_response, dtype=float)

    @cache_readonly
    def resid_response(self):
        """Conditional response residuals ``y - N mu``, ``mu`` = :attr:`fittedvalues`
        (as lme4's ``residuals(fit, "response")`` and MixedLM's ``resid``); successes minus
        expected successes for binomial data with trials, as statsmodels' GLM."""
        from glmm_sm.inference.prediction import resid_response

        self._check_data("resid_response")
        return resid_response(self)

    @cache_readonly
    def resid_pearson(self):
        """Conditional Pearson residuals ``sqrt(w) (y - N mu) / sqrt(N V(mu))`` (statsmodels
        GLM's, with the weights as ``var_weights``); ``mu`` as in :attr:`resid_response`."""
        from glmm_sm.inference.prediction import resid_pearson

        self._check_data("resid_pearson")
        return resid_pearson(self)

    @cache_readonly
    def resid_deviance(self):
        """Conditional deviance residuals (statsmodels GLM's ``resid_deviance`` at the
        conditional mean, the weights as ``var_weights``; lme4's ``residuals(fit)``);
        see :func:`glmm_sm.inference.prediction.resid_deviance`."""
        from glmm_sm.inference.prediction import resid_deviance

        self._check_data("resid_deviance")
        return resid_deviance(self)

    def simulate(self, nrep=1, random_state=None):
        """Responses simulated from the fitted model with new random effects.

        ``u ~ N(0, nu_hat)`` afresh for each replicate, then ``y | u`` from the family with
        the model's trials and offset; the observation weights are not used (each row is
        drawn once; a warning says so when they are not all 1).  See
        :mod:`glmm_sm.inference.simulate`.

        Parameters
        ----------
        nrep : int
        random_state : None, int, SeedSequence or Generator

        Returns
        -------
        ndarray (n, nrep)
            Counts, or successes for binomial data with trials.
        """
        from glmm_sm.inference.simulate import simulate

        self._check_data("simulate()")
        return simulate(self, nrep=nrep, random_state=random_state)

    def resid_quantile(self, nsim=250, random_state=None):
        """Randomized quantile residuals (DHARMa's scaled residuals), Uniform(0, 1) under
        the model.

        Each observation is ranked among ``nsim`` responses simulated *unconditionally*
        (new random effects, DHARMa's default), ties broken uniformly at random.
        Overdispersion piles them near 0 and 1.  See :mod:`glmm_sm.inference.simulate`.

        Parameters
        ----------
        nsim : int
        random_state : None, int, SeedSequence or Generator

        Returns
        -------
        ndarray (n,)
        """
        from glmm_sm.inference.simulate import resid_quantile

        self._check_data("resid_quantile()")
        return resid_quantile(self, nsim=nsim, random_state=random_state)

    # --------------------------------------------------------------- plots
    # (glmm_sm/inference/plots.py; matplotlib is an optional extra)
    def plot_diagnostics(self, figsize=None):
        """Monte Carlo diagnostics: ESS per block, MCSE/SE and m per round, importance
        weights (a matplotlib Figure; see :func:`glmm_sm.inference.plots.plot_diagnostics`)."""
        from glmm_sm.inference.plots import plot_diagnostics

        self._check_data("plot_diagnostics()")
        return plot_diagnostics(self, figsize=figsize)

    def plot_random_effects(self, term=None, alpha=0.05, sort=True, figsize=None):
        """Caterpillar plot of the conditional means of the random effects with intervals
        (see :func:`glmm_sm.inference.plots.plot_random_effects`)."""
        from glmm_sm.inference.plots import plot_random_effects

        return plot_random_effects(self, term=term, alpha=alpha, sort=sort, figsize=figsize)

    def plot_profile(self, name, alpha=0.05, profile=None, ax=None, **kwargs):
        """Profile zeta plot of parameter ``name``; ``kwargs`` go to :meth:`profile`
        (see :func:`glmm_sm.inference.plots.plot_profile`)."""
        from glmm_sm.inference.plots import plot_profile

        if profile is None:
            self._check_data("plot_profile() without a profile")
        return plot_profile(self, name, alpha=alpha, profile=profile, ax=ax, **kwargs)

    def plot_residuals(self, nsim=250, random_state=None, resid=None, figsize=None):
        """Randomized quantile residuals: uniform QQ plot and residuals against fitted
        values (see :func:`glmm_sm.inference.plots.plot_residuals`)."""
        from glmm_sm.inference.plots import plot_residuals

        self._check_data("plot_residuals()")
        return plot_residuals(self, nsim=nsim, random_state=random_state, resid=resid,
                              figsize=figsize)

    # --------------------------------------------------------------- summary
    def summary(self, yname=None, xname=None, title=None, alpha=0.05):
        """Header, fixed effects, and variance components with MCSE.

        Variance components get one-sided p-values (H1: nu > 0); Wald inference at the
        zero boundary is conservative.

        Parameters
        ----------
        yname : str, optional
            Name of the response (default: the model's).
        xname : list of str, optional
            Names of all parameters, fixed effects then covariance parameters (default: the
            model's).
        title : str, optional
        alpha : float
            ``1 - alpha`` intervals.

        The order is statsmodels' (``GLMResults.summary(yname, xname, title, alpha)``);
        the former ``summary(alpha, title)`` given positionally still works with a
        ``FutureWarning``.
        """
        from glmm_sm.results.summary import build_summary

        yname, xname, title, alpha = summary_arguments(yname, xname, title, alpha)
        return build_summary(self, alpha=alpha, title=title, yname=yname, xname=xname)


def summary_arguments(yname, xname, title, alpha):
    """``summary``'s arguments in statsmodels' order ``(yname, xname, title, alpha)``; a
    number first is the former order ``summary(alpha, title)`` (FutureWarning)."""
    import numbers
    import warnings

    if isinstance(yname, numbers.Real) and not isinstance(yname, bool):
        warnings.warn("summary(alpha, title) by position is deprecated: summary now takes "
                      "statsmodels' order summary(yname=None, xname=None, title=None, "
                      "alpha=0.05); pass alpha=... and title=... by keyword",
                      FutureWarning, stacklevel=3)
        if title is not None or alpha != 0.05:
            raise TypeError("summary(): alpha given both by position (first, the former "
                            "order) and by keyword")
        return None, None, xname, float(yname)
    if yname is not None and not isinstance(yname, str):
        raise TypeError(f"yname must be a string; got {yname!r}")
    return yname, xname, title, alpha


def _level_index(levels, names, term):
    """Rows of one term labelled by their levels (its column names if the levels repeat)."""
    index = pd.Index(levels, name=term)
    return pd.Index(names, name=term) if index.has_duplicates else index


class MonteCarloGLMMResultsWrapper(LikelihoodResultsWrapper):
    _attrs = {"resid_response": "rows", "resid_pearson": "rows", "resid_deviance": "rows"}
    _wrap_attrs = wrap.union_dicts(LikelihoodResultsWrapper._wrap_attrs, _attrs)
    _methods = {}
    _wrap_methods = wrap.union_dicts(LikelihoodResultsWrapper._wrap_methods, _methods)


wrap.populate_wrapper(MonteCarloGLMMResultsWrapper, MonteCarloGLMMResults)


def _mle_retvals(outcome):
    """statsmodels' ``mle_retvals`` (``converged``, ``iterations``, ``fopt``, ``gopt``,
    ``hopt``, ``warnflag``) plus the MCLA rounds' raw optimizer statuses."""
    log = outcome.log
    ev = outcome.evaluation
    rounds = log.rounds
    last = rounds[-1] if rounds else {}
    return {"converged": bool(outcome.converged), "message": log.message,
            "iterations": int(sum(r.get("iterations", 0) for r in rounds)),
            "rounds": len(rounds),
            "fopt": -float(ev.value) if ev is not None else np.nan,
            "gopt": None if ev is None or ev.gradient is None else -ev.gradient,
            "hopt": None if ev is None or ev.hessian is None else -ev.hessian,
            "warnflag": 0 if outcome.converged else 1,
            "optimizer_status": [r.get("optimizer_status") for r in rounds],
            "optimizer_message": last.get("optimizer_message"),
            "laplace": {k: v for k, v in log.laplace.items() if k != "params"}}
