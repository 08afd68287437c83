"""``MonteCarloGLMM``: the statsmodels model class, thin glue over the MCLA pipeline."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from statsmodels.base.model import LikelihoodModel
from statsmodels.tools.sm_exceptions import MissingDataError

from glmm_sm.laplace.step import (
    BlockSystem,
    conditional_mode,
    family_system,
    laplace_fit,
    split_params,
)
from glmm_sm.mcla.draws import DEFAULT_MEMORY_BUDGET, DrawSet
from glmm_sm.mcla.engine import MCLAEngine, effective_n_jobs
from glmm_sm.mcla.sampler import GlmmSampler, LaplaceSampler
from glmm_sm.spec.arrays import LayoutData, ModelArrays
from glmm_sm.spec.compat import (  # noqa: F401  (_Safe*Data: older pickles name them here)
    ENGINE_ERRORS,
    SAFE_DATA,
    _SafeModelData,
    _SafePandasData,
    sm_family,
)
from glmm_sm.spec.design import (
    _normalize_vc_spec,
    check_effect_counts,
    check_single_effects,
    checked_design,
    vc_design_from_formulas,
)
from glmm_sm.spec.families import is_binomial_family, resolve_family
from glmm_sm.spec.formula_checks import (
    categorical_response,
    cbind_response,
    check_fixed_formula,
    check_formula_text,
    no_random_effects,
)
from glmm_sm.spec.frame import checked_frame
from glmm_sm.spec.lme4_terms import split_random_terms, vector_term_design, vector_terms
from glmm_sm.spec.missing import apply_missing_policy, check_rows_left, formula_rows
from glmm_sm.spec.validation import (
    check_callable,
    check_finite,
    checked_exog,
    checked_start_params,
    column,
    exposure_vector,
    observation_weights,
    proportion_response,
    vector,
)

__all__ = ["MonteCarloGLMM"]

SAMPLERS = {"laplace": LaplaceSampler, "glmm": GlmmSampler}


class MonteCarloGLMM(LikelihoodModel):
    """Generalized linear mixed model fitted by Monte Carlo likelihood approximation.

    ``y | u`` follows a Bernoulli, binomial or Poisson distribution with canonical link and
    linear predictor ``eta = X beta + offset + Z u``; the random effects are independent,
    ``u_j ~ N(0, nu[ident[j]])``.  Parameters are ``params = (beta..., nu...)`` with ``nu`` the
    variances, named by the columns of ``exog`` and by ``vcp_names``.

    Parameters
    ----------
    endog : array_like
        Response: 0/1, counts, or a two-column (successes, failures) array for binomial data.
    exog : array_like (n, p)
        Fixed-effects design.
    exog_vc : array_like or scipy.sparse matrix (n, q)
        Random-effects design, as ``BinomialBayesMixedGLM`` takes it.
    ident : array_like of int (q,)
        Variance component (0-based) of each column of ``exog_vc``.
    vcp_p, fe_p : None
        ``BinomialBayesMixedGLM``'s prior standard deviations, in its positions so that
        its positional calls carry over; a likelihood fit has no prior, so numbers given
        here are unused (with a warning).
    fep_names : sequence of str, optional
        Names of the fixed effects (default: the columns of ``exog``), as in
        ``BinomialBayesMixedGLM``.
    vcp_names : sequence of str, optional
        Names of the variance components (default ``vc1, vc2, ...``).
    vc_names : sequence of str, optional
        Names of the random effects (the columns of ``exog_vc``).
    family : statsmodels family, str or None
        ``sm.families.Binomial()`` (default) or ``sm.families.Poisson()``, canonical links.
    weights : array_like, optional
        Observation weights (non-negative); the log-density of observation ``i`` is multiplied
        by ``weights[i]``.
    offset : array_like, optional
        Added to the linear predictor.
    factorize : bool
        Split the integral into independent blocks (default).  ``False`` treats it as one
        block, which is glmm's estimator.
    exposure : array_like, optional
        Poisson only: positive exposures; ``log(exposure)`` is added to the offset.
    cov_terms : list, optional
        Correlated terms ``(name, components, column labels)``.
    **kwargs
        Passed to statsmodels' ``LikelihoodModel`` (``missing``, ``hasconst``, ...).

    Notes
    -----
    The positional order is ``BinomialBayesMixedGLM``'s, ``(endog, exog, exog_vc, ident,
    vcp_p, fe_p, fep_names, vcp_names, vc_names)``; the arguments after those are
    keyword-only.  The former order ``(endog, exog, exog_vc, ident, vcp_names, family,
    weights, offset, vc_names)`` given by position still works, with a ``FutureWarning``
    (it is recognised by its values: names where ``vcp_p`` stands, a family where ``fe_p``
    stands, numbers where names stand).

    Attributes
    ----------
    k_fe : int
        Number of fixed effects.
    k_vcp : int
        Number of variance parameters, statsmodels' name (``BinomialBayesMixedGLM.k_vcp``).
    k_vc : int
        The same number, under this package's original name.  Note that statsmodels'
        ``BinomialBayesMixedGLM.k_vc`` counts the random-effect columns instead
        (``exog_vc.shape[1]`` here).
    """

    _formula_max_endog = 2

    def __init__(self, endog, exog, exog_vc, ident, vcp_p=None, fe_p=None, fep_names=None,
                 vcp_names=None, vc_names=None, *, family=None, weights=None, offset=None,
                 factorize=True, exposure=None, cov_terms=None, **kwargs):
        # One partition of partitioned data: its columns may be rank deficient alone (a
        # level it lacks); the whole design's rank is checked from the partitions' sums.
        piece = bool(kwargs.pop("_piece", False))
        unknown = sorted(set(kwargs) - _MODEL_KWARGS)
        if unknown:
            raise TypeError(f"MonteCarloGLMM() got unknown argument(s) {unknown}")
        vcp_names, family, weights, offset, fep_names = _constructor_order(
            vcp_p, fe_p, fep_names, vcp_names, family, weights, offset)
        endog, exog, exog_vc, weights, offset, n_dropped = apply_missing_policy(
            kwargs, endog, exog, exog_vc, weights, offset)
        check_finite(endog, "endog")
        check_finite(exog, "exog")
        super().__init__(endog, exog, **kwargs)
        self.fep_names = None
        if fep_names is not None:  # BinomialBayesMixedGLM's names of the fixed effects
            fep_names = [str(v) for v in fep_names]
            if len(fep_names) != self.exog.shape[1]:
                raise ValueError(f"fep_names must name the {self.exog.shape[1]} columns of "
                                 f"exog; got {len(fep_names)} names")
            self.data.xnames = self.fep_names = fep_names
        self.n_dropped = n_dropped
        self.data.__class__ = SAFE_DATA.get(type(self.data), type(self.data))
        n = self.endog.shape[0]
        X = checked_exog(self.exog, list(self.exog_names), full_rank=not piece)
        # R's glm convention: a proportion response with the trials as weights.
        endog, weights = proportion_response(is_binomial_family(family), self.endog, weights)
        fam, y, ntrials = resolve_family(family, endog)
        self.design = checked_design(exog_vc, ident, vcp_names, vc_names, n,
                                     list(self.exog_names), cov_terms)
        weights = observation_weights(weights, n)
        offset = vector(offset, n, "offset", default=0.0)
        self.exposure = None
        if exposure is not None:
            self.exposure = exposure_vector(exposure, n, fam)
            offset = offset + np.log(self.exposure)
        self.arrays = ModelArrays(fam, y, ntrials, weights, offset,
                                  np.ascontiguousarray(X), self.design.Z, self.design.ident,
                                  self.design.k_vc, self.design.cov)
        self.family_kind = fam
        self.family = sm_family(fam)
        self.exog_vc = self.design.Z
        self.ident = self.design.ident
        self.cov_terms = self.design.cov_terms
        # Names of the covariance parameters: the components' names, and for a correlated
        # term g Var(a), g Cov(b, a), ... (its components' own names are design.vcp_names).
        self.vcp_names = list(self.design.param_names)
        self.vc_names = list(self.design.col_names)
        self.weights = weights
        self.offset = offset
        self.factorize = bool(factorize)
        self.k_fe = X.shape[1]
        self.k_extra = self.k_vcp + fam.k_fam  # (the negative binomial: alpha too)
        self.nobs = float(n)
        #: The family's own parameters after the covariance parameters in ``params``:
        #: ``["alpha"]`` for the negative binomial (statsmodels' discrete
        #: ``NegativeBinomial`` name), else empty.
        self.fam_names = ["alpha"] * fam.k_fam
        self.data.param_names = list(self.exog_names) + self.vcp_names + self.fam_names
        self.data.fe_names = list(self.exog_names)
        self.data.vcp_names = list(self.vcp_names)
        rank = X.shape[1]  # check_full_rank passed
        self.df_model = rank - self.k_constant
        self.df_resid = n - rank - self.k_extra
        self._init_keys.extend(["exog_vc", "ident", "fep_names", "vcp_names", "family",
                                "weights", "offset", "vc_names", "factorize", "exposure",
                                "cov_terms"])
        self._data_attr.extend(["exog_vc", "weights", "offset", "arrays", "design",
                                "_layout_data"])
        self._layout_data = {}
        self._draws = None
        self._engine = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_formula(cls, formula, vc_formulas=None, data=None, family=None, *,
                     varcomps_equal=None, varcomps_names=None, subset=None, drop_cols=None,
                     weights=None, offset=None, exposure=None, missing="drop", **kwargs):
        """Build the model from a fixed-effects formula and variance-component formulas.

        Parameters
        ----------
        formula : str
            Fixed effects, e.g. ``"Mate ~ 0 + Cross"``, optionally with lme4 random-effect
            terms: ``"Mate ~ 0 + Cross + (1 | Female) + (1 | Male)"``.  A binomial response
            with trials is written with two columns on the left, ``"incidence + healthy ~ period"``
            (successes, failures), as R's ``cbind(incidence, healthy)``.
        vc_formulas : dict or list of str
            ``{"F": "0 + C(Female)", "M": "0 + C(Male)"}`` as for ``BinomialBayesMixedGLM``;
            or a list of formulas with ``varcomps_equal`` / ``varcomps_names`` (glmm style).
            Optional when ``formula`` holds lme4 terms such as ``(1 | Female)``, which are
            read as components of the same form (:mod:`glmm_sm.spec.lme4_terms`).
        data : pandas.DataFrame, dask.dataframe.DataFrame or list of partitions
            A Dask DataFrame or a list of partitions (pandas data frames, or Dask futures
            of them) gives a :class:`~glmm_sm.fit.partitioned.PartitionedGLMM`, whose
            ``fit(client=...)`` keeps each partition's rows on the worker that holds it
            (every grouping level in one partition; :mod:`glmm_sm.fit.partitioned`).
        family : statsmodels family or str
        varcomps_equal : sequence of int, optional
            glmm's ``varcomps.equal`` for the list form.
        varcomps_names : sequence of str, optional
            glmm's ``varcomps.names`` for the list form.
        weights, offset : array_like or str, optional
            Arrays of the data's length, or column names of ``data``.
        exposure : array_like or str, optional
            Poisson only: positive exposures (time at risk, area); ``log(exposure)`` is added
            to the offset, as in statsmodels' ``GLM``.
        missing : {"drop", "raise"}
            Rows with missing values in any variable used are dropped (and counted in a
            warning), or raise an error.
        """
        from statsmodels.formula.formulatools import advance_eval_env

        unknown = sorted(set(kwargs) - _FORMULA_KWARGS)
        if unknown:
            raise TypeError(f"from_formula() got unknown argument(s) {unknown}")
        from glmm_sm.fit.partitioned import is_partitioned

        if is_partitioned(data):
            return _partitioned_model(formula, vc_formulas, data, family, subset, drop_cols,
                                      dict(varcomps_equal=varcomps_equal,
                                           varcomps_names=varcomps_names, weights=weights,
                                           offset=offset, exposure=exposure, missing=missing,
                                           **kwargs))
        if isinstance(vc_formulas, pd.DataFrame) and (data is None or isinstance(data, dict)):
            # statsmodels' other models take (formula, data): the data frame second is
            # unambiguous (a frame is never vc_formulas), so it still works, with a
            # FutureWarning (statsmodels' deprecation category) naming the order.
            import warnings

            warnings.warn("from_formula(formula, data, vc_formulas): the data frame was given "
                          "in second place, where MonteCarloGLMM (like "
                          "BinomialBayesMixedGLM) takes vc_formulas; it is used as data. "
                          "This order will be refused in a future version: write "
                          "from_formula(formula, vc_formulas, data) or pass data=... by "
                          "keyword", FutureWarning, stacklevel=2)
            vc_formulas, data = data, vc_formulas
        if not isinstance(data, pd.DataFrame):
            raise TypeError(f"data must be a pandas DataFrame; got {type(data).__name__}")
        check_formula_text(formula)
        formula = cbind_response(formula)
        data = checked_frame(data, formula, vc_formulas)
        full_formula = formula
        vterms = vector_terms(formula, data)
        formula, vc_formulas = split_random_terms(formula, vc_formulas, data)
        check_fixed_formula(full_formula, formula)
        if vc_formulas is None and not vterms:
            raise no_random_effects(full_formula, formula)
        if subset is not None:
            data = data.loc[subset]
        if missing not in ("drop", "raise"):
            raise ValueError(f"missing must be 'drop' or 'raise'; got {missing!r}")
        weights, offset, exposure = (column(a, data, n) for a, n in (
            (weights, "weights"), (offset, "offset"), (exposure, "exposure")))
        advance_eval_env(kwargs)
        eval_env = kwargs.get("eval_env")
        # Depth counted from the formula helpers: from here the user's frame is one less.
        env_here = eval_env - 1 if isinstance(eval_env, int) else eval_env
        vc_list, vc_labels, vc_comp = ([], [], []) if vc_formulas is None else \
            _normalize_vc_spec(vc_formulas, varcomps_names, varcomps_equal)
        components = _missing_components(vc_list, vc_labels, vc_comp, vterms)
        keep = formula_rows(missing, formula, components, data, env_here,
                            (weights, offset, exposure))
        check_rows_left(keep, data, [formula, *(f for f, _, _ in components)],
                        {"weights": weights, "offset": offset, "exposure": exposure})
        if missing == "drop":
            data = data.iloc[np.flatnonzero(keep)]
        Z, ident, vcp_names, col_names, cov_terms = _random_design(
            vc_formulas, vterms, data, eval_env, varcomps_names, varcomps_equal)
        check_single_effects(Z, ident, vcp_names, list(zip(vc_list, vc_comp, strict=True)))
        check_effect_counts(Z, ident, vcp_names, cov_terms, [f"({e} | {g})" for g, e in vterms])
        kwargs["missing"] = "raise"
        weights, offset, exposure = (None if a is None else np.asarray(a, dtype=float)[keep]
                                     for a in (weights, offset, exposure))
        if exposure is not None:
            kwargs["exposure"] = exposure
        try:
            mod = super().from_formula(formula, data, None, drop_cols, exog_vc=Z, ident=ident,
                                       vcp_names=vcp_names, family=family, weights=weights,
                                       offset=offset, vc_names=col_names,
                                       cov_terms=cov_terms or None, **kwargs)
        except (*ENGINE_ERRORS, MissingDataError) as exc:
            raise ValueError(f"formula {formula!r}: {exc}") from exc
        categorical = categorical_response(mod.data.ynames)
        if categorical is not None:
            base, levels = categorical
            raise ValueError(f"endog: the response {base!r} is categorical (levels {levels}) "
                             "and the formula turned it into indicator columns; give it as a "
                             "0/1 number (1 for a success) or as two columns 'successes + "
                             "failures'")
        mod.vc_formulas = vc_formulas
        #: The correlated terms ``(group, expr)`` in the order of ``cov_terms`` (their
        #: designs are rebuilt from these for conditional predictions on new data).
        mod.vector_terms = [(g, e) for g, e in vterms]
        mod.vc_spec = {"vcp_names": varcomps_names, "equal": varcomps_equal}
        mod.n_dropped = int((~keep).sum())
        return mod

    def _get_init_kwds(self):
        kw = super()._get_init_kwds()
        kw["vcp_names"] = list(self.design.vcp_names)  # the components' own names
        if self.exposure is not None:  # the constructor adds log(exposure) to the offset
            kw["offset"] = self.offset - np.log(self.exposure)
        return kw

    # ------------------------------------------------------------------ structure
    @property
    def k_vcp(self) -> int:
        """Number of covariance parameters: variances (and covariances of correlated
        terms); statsmodels' name (``BinomialBayesMixedGLM.k_vcp``)."""
        return self.design.cov.k_vcp

    @property
    def k_fam(self) -> int:
        """Number of the family's own parameters, last in ``params``: 1 (``alpha``) for
        the negative binomial, else 0."""
        return self.arrays.family.k_fam

    @property
    def k_vc(self) -> int:
        """Deprecated name of :attr:`k_vcp` (statsmodels' ``k_vc`` counts random-effect
        columns, ``exog_vc.shape[1]`` here)."""
        import warnings

        warnings.warn("MonteCarloGLMM.k_vc is deprecated: use k_vcp (the number of "
                      "covariance parameters); statsmodels' BinomialBayesMixedGLM.k_vc counts "
                      "random-effect columns instead", DeprecationWarning, stacklevel=2)
        return self.k_vcp

    @property
    def blocks(self):
        """The independent blocks of the integral (list of :class:`~glmm_sm.spec.design.Block`)."""
        return self.design.blocks(self.factorize)

    def layout_data(self, factorize=None):
        """The model's arrays in block-layout order (cached per layout)."""
        factorize = self.factorize if factorize is None else bool(factorize)
        if factorize not in self._layout_data:
            self._layout_data[factorize] = LayoutData(self.arrays,
                                                      self.design.layout(factorize))
        return self._layout_data[factorize]

    def block_system(self, factorize=None):
        """The batched block linear algebra used by the Laplace step and samplers."""
        data = self.layout_data(factorize)
        if not hasattr(data, "_system"):
            data._system = BlockSystem(data)
        return data._system

    # ------------------------------------------------------------------ Laplace
    def fit_laplace(self, start_params=None, factorize=None):
        """The Laplace MLE (lme4's ``glmer``) as a results object: the same as
        ``fit(start_params, method="laplace", factorize=factorize)``.

        Returns
        -------
        LaplaceGLMMResultsWrapper
            ``params``, ``llf`` (``llf_mc`` without the family's constants),
            ``laplace_mode`` (the conditional modes), standard errors, ``summary()``, ...

        Notes
        -----
        It used to return the tuple ``(params, laplace_loglike, mode)``.  Unpacking the
        results in three still gives ``(params, llf_mc, laplace_mode)``, with a
        ``FutureWarning``; anything else treats it as the results object it is.
        """
        from glmm_sm.results.laplace import fit_laplace_results

        res = fit_laplace_results(self, start_params, factorize=factorize)
        res._results._unpack_as_tuple = True
        return res

    def _laplace_estimate(self, start_params=None, factorize=None):
        """The bare Laplace MLE, ``LaplaceEstimate(params, value, mode)``: start values and
        sampler centre, without the results' Hessian."""
        system = self.block_system(factorize)
        if start_params is not None:
            start_params = self._check_start_params(start_params)
        lap = laplace_fit(system, start_params)
        return LaplaceEstimate(lap.params, lap.value, lap.mode)

    # ------------------------------------------------------------------ draws
    def make_sampler(self, params=None, sampler="laplace", factorize=None, mode=None,
                     **options):
        """Build an importance sampler at ``params`` (default: the Laplace MLE).

        Parameters
        ----------
        params : array_like, optional
            ``(beta, nu)`` at which the sampler is centred.
        sampler : {"laplace", "glmm"}
        factorize : bool, optional
            Per-block sampler (default: the model's ``factorize``).
        mode : ModeResult, optional
            Conditional modes at ``params`` if already computed.
        **options
            Sampler options (``t_weight``, ``df`` for "laplace"; ``probs``, ``df`` for "glmm").
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}; got {sampler!r}")
        system = self.block_system(factorize)
        if params is None:
            params, _, mode = self._laplace_estimate(factorize=factorize)
        elif mode is None:
            params = self._check_params(params)
            k = self.k_fe + self.k_vcp
            if not (np.all(np.isfinite(params)) and np.all(params[k:] > 0)
                    and self.design.cov.valid(params[self.k_fe : k])):
                raise ValueError("params: a sampler needs finite beta and every variance nu > 0 "
                                 "(covariance matrices positive definite; the negative "
                                 f"binomial's alpha > 0); got {params.tolist()}")
            beta, nu, alpha = split_params(system.data, params)
            mode = conditional_mode(family_system(system, alpha), beta, nu)
        alpha = split_params(system.data, params)[2]
        return SAMPLERS[sampler](family_system(system, alpha), params, mode, **options)

    def sample_draws(self, m, random_state=None, params=None, sampler="laplace",
                     factorize=None, memory_budget=DEFAULT_MEMORY_BUDGET, kernel="numba",
                     chunk_size=None, n_jobs=None, **options):
        """Draw ``m`` importance-sampling draws and make them the model's current draws.

        ``loglike``, ``score`` and ``hessian`` then evaluate ``l_m`` on these draws.

        Returns
        -------
        DrawSet
        """
        from glmm_sm.core.random import as_seed_sequence

        smp = self.make_sampler(params, sampler, factorize, **options)
        draws = DrawSet.from_sampler(smp, m, as_seed_sequence(random_state), memory_budget,
                                     n_jobs=effective_n_jobs(n_jobs))
        self._use_draws(draws, kernel, chunk_size, n_jobs)
        return draws

    def set_draws(self, u, log_density, kernel="numba", chunk_size=None):
        """Use user-supplied draws of all random effects jointly (one block).

        Parameters
        ----------
        u : array_like (m, q)
            Draws of the random effects, columns in the model's order (``exog_vc``).
        log_density : array_like (m,)
            Log importance density of each draw.
        """
        u = np.asarray(u, dtype=np.float64)
        q = self.design.q
        if u.ndim != 2 or u.shape[1] != q or u.shape[0] < 1:
            raise ValueError(f"u must have shape (m, {q}) with m >= 1; got {u.shape}")
        logf = np.asarray(log_density, dtype=np.float64)
        if logf.shape != (u.shape[0],):
            raise ValueError(f"log_density must have shape ({u.shape[0]},); got {logf.shape}")
        if not (np.all(np.isfinite(u)) and np.all(np.isfinite(logf))):
            raise ValueError("u and log_density must be finite")
        data = self.layout_data(False)
        S = np.zeros((1, data.n_s, u.shape[0]))
        np.add.at(S[0], self.ident, (u * u).T)
        S[:, data.k_vc:] = data.cross_sums(u.T)
        draws = DrawSet.from_arrays(data, u.T, logf[None, :], S)
        self._use_draws(draws, kernel, chunk_size, 1)
        return draws

    def _use_draws(self, draws, kernel, chunk_size, n_jobs):
        self._draws = draws
        self._engine = MCLAEngine(draws, kernel=kernel, chunk_size=chunk_size, n_jobs=n_jobs)

    @property
    def engine(self):
        """The :class:`~glmm_sm.mcla.engine.MCLAEngine` on the current draws."""
        if self._engine is None:
            raise RuntimeError("no draws yet: call sample_draws(m, ...) or set_draws(u, "
                               "log_density) first, or use fit()")
        return self._engine

    # ------------------------------------------------------------------ fitting
    def fit(self, start_params=None, m="auto", random_state=None, sampler="auto",
            target_ratio=0.1, max_m=10**6, disp=True, callback=None, *, options=None,
            client=None, method="mcla", **kwargs):
        """Monte Carlo maximum likelihood (or, with ``method="laplace"``, the Laplace MLE).

        The Laplace MLE gives start values and the first sampler centre; each round then
        draws ``m`` draws, freezes them and maximizes ``l_m`` by a trust region with the
        exact Hessian; the sampler is re-centred at the estimate with fresh draws until the
        estimate is stable within its Monte Carlo error (:mod:`glmm_sm.fit.driver`).

        Parameters
        ----------
        start_params : array_like, optional
            ``(beta, nu)`` to start the Laplace step from.  First, as in every statsmodels
            ``fit``; the former order ``fit(m, random_state, ...)`` given by position (a
            number or ``"auto"`` first) still works, with a ``FutureWarning``.
        m : int or "auto"
            Draws per round; ``"auto"`` grows m until every MCSE is at most
            ``target_ratio`` times its standard error.
        random_state : None, int, SeedSequence or Generator
            The only source of randomness; the same value gives the same fit.  With
            ``None`` fresh entropy is drawn and recorded in ``results.fit_log.seed_entropy``.
        sampler : {"auto", "laplace", "glmm", "quadrature"}
            ``"quadrature"`` replaces the draws by adaptive Gauss-Hermite nodes where every
            block has at most one effect left once a component is integrated (a single
            grouping factor, two nested factors, an observation-level effect within
            clusters): a deterministic fit, every MCSE 0
            (:class:`~glmm_sm.mcla.rb.split.QuadratureSampler`; ``sampler_options``
            ``n_nodes`` and ``outer_nodes`` set the inner and outer rules, 12 and 20;
            ``recentre=True`` re-centres the inner rules at every outer node).  A variance
            that reaches 0 is decided without draws: the model without it is refitted by
            quadrature where its structure allows it, and the one-sided derivative of the
            log-likelihood at 0 is exact (MCSE 0; ``results.fit_log.boundary_evidence``).
            A nesting tree of depth 3 or more (pupils in classes in schools) is integrated
            level by level (:mod:`glmm_sm.mcla.rb.deep`; ``n_nodes`` per level below the
            top, 8, and ``outer_nodes`` at the top, 12).
            ``"laplace"``: importance sampling from a normal at the conditional mode with a
            defensive t; ``"glmm"``: glmm's three-part mixture.  ``"auto"`` (default):
            ``"quadrature"`` where the structure allows it and ``m`` is ``"auto"``,
            ``"laplace"`` otherwise (crossed factors, correlated terms on more than one
            grouping factor, an explicit ``m``, ``rao_blackwell=False``); the choice and
            its reason are in ``results.fit_log.sampler``
            (:func:`~glmm_sm.mcla.rb.round.resolve_sampler`).
        target_ratio : float
            Largest acceptable MCSE/SE with ``m="auto"``.
        max_m : int
            Upper limit for m with ``m="auto"``.
        disp : bool
            Show a progress bar (only on a terminal).
        callback : callable, optional
            Called with a dict describing each finished round; returning True stops the fit.
        options : FitOptions, optional
            All settings as one object; keyword arguments override its fields.
        client : dask.distributed.Client, optional
            Evaluate the Monte Carlo sums on this Dask cluster: each worker generates its
            share of the draws from their seeds and keeps them; only ``theta`` and partial
            sums travel.  The estimates equal those without ``client`` (needs
            ``pip install "glmm_sm[distributed]"``).
        method : {"mcla", "laplace"}
            ``"laplace"``: the Laplace MLE (lme4's ``glmer``) with standard errors from the
            Laplace log-likelihood's Hessian, as a
            :class:`~glmm_sm.results.laplace.LaplaceGLMMResults`; deterministic, so only
            ``start_params`` and ``factorize`` apply (``random_state``, ``disp`` are unused).
        **kwargs
            Other :class:`~glmm_sm.FitOptions` fields: ``max_rounds``, ``min_ess``,
            ``time_budget``, ``m_start`` (first-round draws; default 4000, or 400 when a
            block is Rao-Blackwellized), ``kernel``, ``chunk_size``, ``n_jobs`` (threads;
            default all cores; results do not depend on it),
            ``memory_budget`` (bytes, default 1 GiB: what a round's evaluation may hold
            beyond the data, its stored draws, the kernels' work arrays per thread, the
            partial sums, derivatives and diagnostics together,
            :class:`~glmm_sm.mcla.memory.MemoryPlan`; draws that do not fit beside the
            rest are regenerated per evaluation, m grows between rounds no further than
            the budget holds, and a fit that cannot fit it even so is refused before the
            Laplace step, with the bytes it needs by component),
            ``factorize``, ``sampler_options``, ``gtol``, ``maxiter``,
            ``rao_blackwell`` (``"auto"``, the default: in a block of at least 100 effects
            where one crossed factor's levels can be integrated by quadrature and at most a
            quarter of the effects remain sampled, only those are importance-sampled;
            ``True``: wherever a block allows it; ``False``: never; see
            :mod:`glmm_sm.mcla.rb.split`), ``per_block_m`` (``True``: with ``m="auto"``
            each independent block gets the draws its own share of the MCSE needs, a
            prefix of the round's draws, :mod:`glmm_sm.mcla.block_m`; default ``False``).

        Returns
        -------
        MonteCarloGLMMResultsWrapper
        """
        check_callable(callback, "callback")
        if _former_m(start_params):
            start_params, m, random_state, sampler, target_ratio, max_m = _fit_order(
                start_params, m, random_state, sampler, target_ratio, max_m)
        if start_params is not None:
            start_params = self._check_start_params(start_params)
        if method == "laplace":
            from glmm_sm.results.laplace import fit_laplace_results

            return fit_laplace_results(self, start_params, m=m, sampler=sampler,
                                       target_ratio=target_ratio, max_m=max_m,
                                       callback=callback, options=options, client=client,
                                       **kwargs)
        if method != "mcla":
            raise ValueError(f"method must be 'mcla' or 'laplace'; got {method!r}")
        import dataclasses

        from glmm_sm.fit.driver import FitOptions, mcmle
        from glmm_sm.results.mcla import MonteCarloGLMMResults, MonteCarloGLMMResultsWrapper

        if sampler not in SAMPLERS and sampler not in ("quadrature", "auto"):
            raise ValueError("sampler must be one of "
                             f"{['auto'] + sorted(SAMPLERS) + ['quadrature']}; got {sampler!r}")
        fields = {f.name for f in dataclasses.fields(FitOptions)}
        unknown = set(kwargs) - fields
        if unknown:
            raise TypeError(f"fit() got unknown argument(s) {sorted(unknown)}")
        base = options if options is not None else FitOptions()
        opts = dataclasses.replace(base, m=m, sampler=sampler, target_ratio=target_ratio,
                                   max_m=max_m, **kwargs)
        if client is not None:
            from glmm_sm.mcla.distributed import check_client

            check_client(client)
        if opts.sampler == "auto":
            from glmm_sm.mcla.rb.round import resolve_sampler

            used, why = resolve_sampler(self, opts)
            opts = dataclasses.replace(opts, sampler=used, sampler_reason=why)
        outcome = mcmle(self, opts, random_state=random_state, start_params=start_params,
                        callback=callback, disp=disp, client=client)
        used = outcome.log.sampler.get("used", opts.sampler)
        if used != opts.sampler:  # a deterministic fit that reached the boundary
            opts = dataclasses.replace(
                opts, sampler=used, sampler_reason=outcome.log.sampler.get("reason", ""),
                sampler_options={k: v for k, v in opts.sampler_options.items()
                                 if k not in ("n_nodes", "outer_nodes", "recentre")})
        if outcome.sampler_options is not None:  # a deterministic fit refined its rule
            opts = dataclasses.replace(opts, sampler_options=outcome.sampler_options)
        res = MonteCarloGLMMResults(self, outcome)
        res.fit_options = opts
        return MonteCarloGLMMResultsWrapper(res)

    # ------------------------------------------------------------------ likelihood
    def _check_start_params(self, start_params):
        return checked_start_params(start_params,
                                    list(self.exog_names) + self.vcp_names + self.fam_names,
                                    self.k_fe, self.design.cov)

    def _check_params(self, params):
        params = np.asarray(params, dtype=np.float64)
        k = self.k_fe + self.k_vcp + self.k_fam
        if params.shape != (k,):
            what = "beta, nu, then alpha" if self.k_fam else "beta then nu"
            raise ValueError(f"params must have length {k} ({what}); got {params.shape}")
        return params

    def loglike(self, params):
        """Monte Carlo log-likelihood ``l_m`` at ``params = (beta, nu)`` on the current draws.

        Excludes the family's normalizing constants, as glmm does; ``nu <= 0`` gives ``-inf``.
        """
        return self.engine.evaluate(self._check_params(params), derivs=False).value

    def score(self, params):
        """Gradient of ``l_m`` with respect to ``(beta, nu)``."""
        return self._evaluate_derivs(params).gradient

    def hessian(self, params):
        """Hessian of ``l_m`` with respect to ``(beta, nu)``."""
        return self._evaluate_derivs(params).hessian

    def evaluate(self, params, derivs=True):
        """The full :class:`~glmm_sm.mcla.engine.Evaluation` (value, derivatives, MCSE, ESS)."""
        return self.engine.evaluate(self._check_params(params), derivs=derivs)

    def _evaluate_derivs(self, params):
        ev = self.evaluate(params)
        if ev.gradient is None:
            raise ValueError("the log-likelihood is not finite at these params (every "
                             "variance must be positive)")
        return ev

    def predict(self, params, exog=None, which="mean", offset=None):
        """Fixed-effects prediction: ``which="linear"`` gives ``X beta + offset``."""
        params = np.asarray(params)
        if exog is None:
            exog = self.exog
            offset = self.offset if offset is None else offset
        eta = np.asarray(exog, dtype=float) @ params[: self.k_fe]
        if offset is not None:
            eta = eta + offset
        if which == "linear":
            return eta
        if which == "mean":
            return self.family.link.inverse(eta)
        raise ValueError(f"which must be 'mean' or 'linear'; got {which!r}")


class LaplaceEstimate(NamedTuple):
    """The bare Laplace MLE: ``(beta, nu)``, the Laplace log-likelihood there (without the
    family's constants) and the conditional modes."""

    params: np.ndarray
    value: float
    mode: object


def _shifted(given, defaults):
    """The values given by position in a former order: ``given[0]`` is certainly
    positional; each next one is taken while it differs from its default (positional
    arguments are contiguous; a value at its default is the same either way)."""
    out = [given[0]]
    for value, default in zip(given[1:], defaults[1:], strict=True):
        if value is default or (isinstance(value, (str, float, int)) and value == default):
            break
        out.append(value)
    return out


def _former_m(value):
    """Whether ``fit``'s first argument is the former first one, ``m``: a number or
    ``"auto"`` (start values are a vector, a Series or a dict)."""
    if isinstance(value, str):
        return value == "auto"
    return isinstance(value, (int, float, np.integer, np.floating)) \
        and not isinstance(value, (bool, np.bool_))


def _fit_order(start_params, m, random_state, sampler, target_ratio, max_m):
    """``fit``'s former positional order ``(m, random_state, sampler, target_ratio, max_m,
    start_params)``, recognised by a number (or ``"auto"``) where ``start_params`` stands."""
    import warnings

    warnings.warn("fit(m, random_state, ...) by position is deprecated: fit's first argument "
                  "is now start_params, as in statsmodels; pass m=..., random_state=... by "
                  "keyword", FutureWarning, stacklevel=3)
    new = (start_params, m, random_state, sampler, target_ratio, max_m)
    got = _shifted(new, (None, "auto", None, "laplace", 0.1, 10**6))
    # The former i-th argument is got[i] when given by position; otherwise it was given by
    # keyword (or not at all) and sits under its own name, new[i + 1] (start_params, the
    # former last, cannot be: its slot holds the former m).
    old = [got[i] if i < len(got) else (new[i + 1] if i < 5 else None) for i in range(6)]
    m, random_state, sampler, target_ratio, max_m, start_params = old
    return start_params, m, random_state, sampler, target_ratio, max_m


def _constructor_order(vcp_p, fe_p, fep_names, vcp_names, family, weights, offset):
    """The constructor's arguments in ``BinomialBayesMixedGLM``'s order; the former order
    ``(vcp_names, family, weights, offset)`` in positions 5 to 8 is recognised by its
    values, remapped and warned about (FutureWarning)."""
    import numbers
    import warnings

    def number(v):
        return v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool))

    def names(v):
        return v is None or (not isinstance(v, str)
                             and all(isinstance(x, str) for x in np.ravel(
                                 np.asarray(v, dtype=object))))

    if number(vcp_p) and number(fe_p) and names(fep_names) and names(vcp_names):
        if vcp_p is not None or fe_p is not None:
            warnings.warn("vcp_p and fe_p are BinomialBayesMixedGLM's prior standard "
                          "deviations; a maximum-likelihood fit has no prior, so they are "
                          "not used", UserWarning, stacklevel=3)
        return vcp_names, family, weights, offset, fep_names
    warnings.warn("MonteCarloGLMM(endog, exog, exog_vc, ident, vcp_names, family, weights, "
                  "offset, ...) by position is deprecated: the order is now "
                  "BinomialBayesMixedGLM's (endog, exog, exog_vc, ident, vcp_p, fe_p, "
                  "fep_names, vcp_names, vc_names); pass vcp_names=..., family=..., "
                  "weights=..., offset=... by keyword", FutureWarning, stacklevel=3)
    # vcp_p, fe_p and fep_names are new names: in a former call they hold what was given
    # in positions 5 to 7; position 8 (offset) is vcp_names when it holds numbers.
    out = {}
    for name, positional, keyword in (
            ("vcp_names", vcp_p, vcp_names if names(vcp_names) else None),
            ("family", fe_p, family), ("weights", fep_names, weights),
            ("offset", None if names(vcp_names) else vcp_names, offset)):
        if positional is not None and keyword is not None:
            raise TypeError(f"MonteCarloGLMM(): {name} given by position (the former order) "
                            "and by keyword")
        out[name] = keyword if positional is None else positional
    return out["vcp_names"], out["family"], out["weights"], out["offset"], None


def _missing_components(vc_list, vc_labels, vc_comp, vterms):
    """``(formula, label, component)`` of every random-effect formula, for the missing-data
    policy: the vc formulas, and each correlated term's model matrix and grouping factor."""
    out = [(f, vc_labels[t], t) for f, t in zip(vc_list, vc_comp, strict=True)]
    out += [(f, f"({e} | {g})", -1) for g, e in vterms
            for f in (e, "0 + " + ":".join(f"C({v})" for v in g.split(":")))]
    return out


def _random_design(vc_formulas, vterms, data, eval_env, vcp_names, equal):
    """``(Z, ident, component names, effect names, cov_terms)``: the scalar components of
    ``vc_formulas`` first, then the correlated terms ``vterms`` (``(group, expr)`` pairs)."""
    import scipy.sparse as sp

    mats, idents, names, cols, terms = [], [], [], [], []
    if vc_formulas is not None:
        Z, ident, names, cols = vc_design_from_formulas(vc_formulas, data, eval_env=eval_env,
                                                        vcp_names=vcp_names, equal=equal)
        mats, idents, names, cols = [Z], [ident], list(names), list(cols)
    for group, expr in vterms:
        Zt, eff, labels = vector_term_design(group, expr, data, eval_env)
        t0, k = len(names), len(labels)
        if group in names:
            raise ValueError(f"random-effect term ({expr} | {group}): the name {group!r} is "
                             "also a variance component; give each grouping factor once")
        names += [group if lab == "Intercept" else f"{group}:{lab}" for lab in labels]
        mats.append(Zt)
        idents.append(np.repeat(np.arange(t0, t0 + k), Zt.shape[1] // k))
        cols += eff
        terms.append((group, list(range(t0, t0 + k)), labels))
    return (sp.hstack(mats, format="csr"), np.concatenate(idents), names, cols, terms)


#: Keyword arguments the constructor passes on to statsmodels (the formula machinery adds
#: ``formula``, ``model_spec`` and ``missing_idx``).
def _partitioned_model(formula, vc_formulas, data, family, subset, drop_cols, options):
    """A :class:`~glmm_sm.fit.partitioned.PartitionedGLMM` of partitioned ``data``."""
    from functools import partial

    from glmm_sm.fit.partitioned import PartitionedGLMM

    if subset is not None or drop_cols is not None:
        raise ValueError("subset, drop_cols: not available with partitioned data; select the "
                         "rows and columns of the partitions (ddf[...]) before the model")
    for name in ("weights", "offset", "exposure"):
        v = options[name]
        if v is not None and not isinstance(v, str):
            raise ValueError(f"{name}: with partitioned data give the name of a column of "
                             f"the partitions (an array cannot follow the rows to the "
                             f"workers); got {type(v).__name__}")
    if not isinstance(formula, str):
        raise TypeError(f"formula must be a string; got {type(formula).__name__}")
    build = partial(_partition_piece, formula=formula, vc_formulas=vc_formulas, family=family,
                    options=options)
    return PartitionedGLMM(data, build, formula)


def _partition_piece(frame, levels, formula, vc_formulas, family, options):
    """One partition's :class:`~glmm_sm.mcla.partitioned.Piece`: its model in block layout,
    the fixed effects' categorical columns coded by the union of ``levels`` (runs on the
    worker that holds ``frame``)."""
    from glmm_sm.fit.partitioned import with_levels
    from glmm_sm.mcla.partitioned import Piece

    mod = MonteCarloGLMM.from_formula(formula, vc_formulas, data=with_levels(frame, levels),
                                      family=family, _piece=True, **options)
    return Piece.from_model(mod)


_MODEL_KWARGS = {"missing", "hasconst", "missing_idx", "formula", "model_spec", "design_info"}
#: Keyword arguments ``from_formula`` passes on to the constructor or the formula engine.
_FORMULA_KWARGS = {"eval_env", "hasconst", "factorize", "vc_names", "_piece"}
