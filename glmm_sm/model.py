"""``MonteCarloGLMM``: the statsmodels model class, thin glue over the MCLA pipeline."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from statsmodels.base.data import ModelData, PandasData
from statsmodels.base.model import LikelihoodModel

from ._data import LayoutData, ModelArrays
from ._formula import refuse_lme4_terms
from .design import RandomEffectsDesign, _normalize_vc_spec, vc_design_from_formulas
from .draws import DEFAULT_MEMORY_BUDGET, DrawSet
from .engine import MCLAEngine, effective_n_jobs
from .families import resolve_family
from .laplace import BlockSystem, conditional_mode, laplace_fit
from .sampler import GlmmSampler, LaplaceSampler

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
    vcp_names : sequence of str, optional
        Names of the variance components (default ``vc1, vc2, ...``).
    family : statsmodels family, str or None
        ``sm.families.Binomial()`` (default) or ``sm.families.Poisson()``, canonical links.
    weights : array_like, optional
        Observation weights (non-negative); the log-density of observation ``i`` is multiplied
        by ``weights[i]``.
    offset : array_like, optional
        Added to the linear predictor.
    vc_names : sequence of str, optional
        Names of the random effects (the columns of ``exog_vc``).
    factorize : bool
        Split the integral into independent blocks (default).  ``False`` treats it as one
        block, which is glmm's estimator.
    **kwargs
        Passed to statsmodels' ``LikelihoodModel`` (``missing``, ``hasconst``, ...).
    """

    _formula_max_endog = 2

    def __init__(self, endog, exog, exog_vc, ident, vcp_names=None, family=None, weights=None,
                 offset=None, vc_names=None, factorize=True, exposure=None, **kwargs):
        unknown = sorted(set(kwargs) - _MODEL_KWARGS)
        if unknown:
            raise TypeError(f"MonteCarloGLMM() got unknown argument(s) {unknown}")
        kwargs.setdefault("missing", "raise")
        if kwargs["missing"] not in ("none", "drop", "raise"):
            raise ValueError("missing must be 'none', 'drop' or 'raise'; got "
                             f"{kwargs['missing']!r}")
        n_dropped = 0
        if kwargs["missing"] == "drop":
            endog, exog, exog_vc, weights, offset, n_dropped = _drop_missing_rows(
                endog, exog, exog_vc, weights, offset)
            if n_dropped:
                warnings.warn(f"{n_dropped} of {n_dropped + np.shape(endog)[0]} rows have missing "
                              "values and were dropped", UserWarning, stacklevel=2)
            kwargs["missing"] = "none"
        _check_finite(endog, "endog")
        _check_finite(exog, "exog")
        super().__init__(endog, exog, **kwargs)
        self.n_dropped = n_dropped
        self.data.__class__ = _SAFE_DATA.get(type(self.data), type(self.data))
        n = self.endog.shape[0]
        X = np.asarray(self.exog, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"exog must be two-dimensional; got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            bad = [self.exog_names[j] for j in np.flatnonzero(~np.isfinite(X).all(axis=0))]
            raise ValueError(f"exog contains NaN or infinite values in column(s) {bad}")
        _check_full_rank(X, list(self.exog_names))
        fam, y, ntrials = resolve_family(family, self.endog)
        ident = np.asarray(ident)
        if vcp_names is None:
            vcp_names = [f"vc{t + 1}" for t in range(int(ident.max()) + 1 if ident.size else 0)]
        Z = exog_vc if sp.issparse(exog_vc) else np.asarray(exog_vc, dtype=np.float64)
        if Z.shape[0] != n:
            raise ValueError(f"exog_vc has {Z.shape[0]} rows but endog has {n}")
        self.design = RandomEffectsDesign(Z, ident, vcp_names, vc_names)
        clash = sorted(set(self.design.vcp_names) & {str(c) for c in self.exog_names})
        if clash:
            raise ValueError(f"vcp_names: variance component name(s) {clash} are also names of "
                             "fixed-effect columns of exog; give the components other names")
        single = _single_effect_components(self.design.Z, self.design.ident)
        if single:
            t = single[0]
            raise ValueError(f"variance component {self.design.vcp_names[t]!r} has a single "
                             "random effect, the same for every observation (a factor with a "
                             "single level?); its variance cannot be estimated from the data")
        same = _same_design_components(self.design.Z, self.design.ident)
        if same:
            a, b = (self.design.vcp_names[t] for t in same)
            # A warning, not an error: glmm's murder example (0 + C(black), 0 + C(white)) is
            # such a design, fitted at the boundary.
            warnings.warn(f"variance components {a!r} and {b!r} have the same random-effects "
                          "design (e.g. a factor nested in another with one sub-level per "
                          "level, or the two levels of one factor coded twice), so only the "
                          "sum of their variances is identified; consider dropping one",
                          UserWarning, stacklevel=2)
        weights = _vector(weights, n, "weights", default=1.0)
        if np.any(weights < 0):
            neg = weights[weights < 0]
            raise ValueError(f"weights must be non-negative; found {neg.size} negative "
                             f"value(s): {_show_values(neg)}")
        offset = _vector(offset, n, "offset", default=0.0)
        self.exposure = None
        if exposure is not None:
            self.exposure = _exposure(exposure, n, fam)
            offset = offset + np.log(self.exposure)
        self.arrays = ModelArrays(fam, y, ntrials, weights, offset,
                                  np.ascontiguousarray(X), self.design.Z, self.design.ident,
                                  self.design.k_vc)
        self.family_kind = fam
        self.family = _sm_family(fam)
        self.exog_vc = self.design.Z
        self.ident = self.design.ident
        self.vcp_names = list(self.design.vcp_names)
        self.vc_names = list(self.design.col_names)
        self.weights = weights
        self.offset = offset
        self.factorize = bool(factorize)
        self.k_fe = X.shape[1]
        self.k_vc = self.design.k_vc
        self.k_extra = self.k_vc
        self.nobs = float(n)
        self.data.param_names = list(self.exog_names) + self.vcp_names
        self.data.fe_names = list(self.exog_names)
        self.data.vcp_names = list(self.vcp_names)
        rank = X.shape[1]  # _check_full_rank passed
        self.df_model = rank - self.k_constant
        self.df_resid = n - rank - self.k_extra
        self._init_keys.extend(["exog_vc", "ident", "vcp_names", "family", "weights", "offset",
                                "vc_names", "factorize", "exposure"])
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
            Fixed effects, e.g. ``"Mate ~ 0 + Cross"``.  A binomial response with trials is
            written with two columns on the left, ``"incidence + healthy ~ period"``
            (successes, failures), as R's ``cbind(incidence, healthy)``.
        vc_formulas : dict or list of str
            ``{"F": "0 + C(Female)", "M": "0 + C(Male)"}`` as for ``BinomialBayesMixedGLM``;
            or a list of formulas with ``varcomps_equal`` / ``varcomps_names`` (glmm style).
        data : pandas.DataFrame
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
        refuse_lme4_terms(formula)
        if isinstance(vc_formulas, pd.DataFrame) and (data is None or isinstance(data, dict)):
            vc_formulas, data = data, vc_formulas
        if not isinstance(data, pd.DataFrame):
            raise TypeError(f"data must be a pandas DataFrame; got {type(data).__name__}")
        if vc_formulas is None:
            raise ValueError("vc_formulas is required: MonteCarloGLMM needs random effects")
        if subset is not None:
            data = data.loc[subset]
        if missing not in ("drop", "raise"):
            raise ValueError(f"missing must be 'drop' or 'raise'; got {missing!r}")
        weights = _column(weights, data, "weights")
        offset = _column(offset, data, "offset")
        exposure = _column(exposure, data, "exposure")
        advance_eval_env(kwargs)
        eval_env = kwargs.get("eval_env")
        # Depth counted from the formula helpers: from here the user's frame is one less.
        env_here = eval_env - 1 if isinstance(eval_env, int) else eval_env
        keep = np.ones(len(data), dtype=bool)
        vc_list, vc_labels, vc_comp = _normalize_vc_spec(vc_formulas, varcomps_names,
                                                         varcomps_equal)
        if missing == "raise":
            _raise_on_missing([(f"formula {formula!r}", formula)]
                              + [(f"vc_formulas[{vc_labels[t]!r}]: {f!r}", f)
                                 for f, t in zip(vc_list, vc_comp, strict=True)], data)
        if missing == "drop":
            keep = _complete_rows([formula, *vc_list], data, env_here,
                                  (weights, offset, exposure))
            n_drop = int((~keep).sum())
            if n_drop:
                warnings.warn(f"{n_drop} of {len(data)} rows have missing values and were "
                              "dropped", UserWarning, stacklevel=2)
            data = data.iloc[np.flatnonzero(keep)]
        Z, ident, vcp_names, col_names = vc_design_from_formulas(
            vc_formulas, data, eval_env=eval_env, vcp_names=varcomps_names, equal=varcomps_equal)
        single = _single_effect_components(Z, ident)
        if single:
            t = single[0]
            which = [f for f, c in zip(vc_list, vc_comp, strict=True) if c == t]
            raise ValueError(f"vc_formulas[{vcp_names[t]!r}]: {' + '.join(map(repr, which))} "
                             "gives a single random effect shared by every observation (a "
                             "factor with a single level?); its variance cannot be estimated "
                             "from the data, so drop this component")
        kwargs["missing"] = "raise"
        if weights is not None:
            weights = np.asarray(weights, dtype=float)[keep]
        if offset is not None:
            offset = np.asarray(offset, dtype=float)[keep]
        if exposure is not None:
            kwargs["exposure"] = np.asarray(exposure, dtype=float)[keep]
        try:
            mod = super().from_formula(formula, data, None, drop_cols, exog_vc=Z, ident=ident,
                                       vcp_names=vcp_names, family=family, weights=weights,
                                       offset=offset, vc_names=col_names, **kwargs)
        except Exception as exc:
            if type(exc).__name__ not in ("PatsyError", "FactorEvaluationError",
                                          "MissingDataError", "FormulaMaterializationError"):
                raise
            raise ValueError(f"formula {formula!r}: {exc}") from exc
        categorical = _categorical_response(mod.data.ynames)
        if categorical is not None:
            base, levels = categorical
            raise ValueError(f"endog: the response {base!r} is categorical (levels {levels}) "
                             "and the formula turned it into indicator columns; give it as a "
                             "0/1 number (1 for a success) or as two columns 'successes + "
                             "failures'")
        mod.vc_formulas = vc_formulas
        mod.vc_spec = {"vcp_names": varcomps_names, "equal": varcomps_equal}
        mod.n_dropped = int((~keep).sum())
        return mod

    # ------------------------------------------------------------------ structure
    @property
    def blocks(self):
        """The independent blocks of the integral (list of :class:`~glmm_sm.design.Block`)."""
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
        """Laplace MLE: ``(params, laplace_loglike, mode)``; start values and sampler centre."""
        system = self.block_system(factorize)
        params, value, mode, _ = laplace_fit(system, start_params)
        return params, value, mode

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
            params, _, mode = self.fit_laplace(factorize=factorize)
        elif mode is None:
            params = self._check_params(params)
            if not (np.all(np.isfinite(params)) and np.all(params[self.k_fe:] > 0)):
                raise ValueError("params: a sampler needs finite beta and every variance nu > 0; "
                                 f"got {params.tolist()}")
            mode = conditional_mode(system, params[: self.k_fe], params[self.k_fe :])
        return SAMPLERS[sampler](system, params, mode, **options)

    def sample_draws(self, m, random_state=None, params=None, sampler="laplace",
                     factorize=None, memory_budget=DEFAULT_MEMORY_BUDGET, kernel="numba",
                     chunk_size=None, n_jobs=None, **options):
        """Draw ``m`` importance-sampling draws and make them the model's current draws.

        ``loglike``, ``score`` and ``hessian`` then evaluate ``l_m`` on these draws.

        Returns
        -------
        DrawSet
        """
        from ._random import as_seed_sequence

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
        S = np.zeros((1, self.k_vc, u.shape[0]))
        np.add.at(S[0], self.ident, (u * u).T)
        draws = DrawSet.from_arrays(data, u.T, logf[None, :], S)
        self._use_draws(draws, kernel, chunk_size, 1)
        return draws

    def _use_draws(self, draws, kernel, chunk_size, n_jobs):
        self._draws = draws
        self._engine = MCLAEngine(draws, kernel=kernel, chunk_size=chunk_size, n_jobs=n_jobs)

    @property
    def engine(self):
        """The :class:`~glmm_sm.engine.MCLAEngine` on the current draws."""
        if self._engine is None:
            raise RuntimeError("no draws yet: call sample_draws(m, ...) or set_draws(u, "
                               "log_density) first, or use fit()")
        return self._engine

    # ------------------------------------------------------------------ fitting
    def fit(self, m="auto", random_state=None, sampler="laplace", target_ratio=0.1,
            max_m=10**6, start_params=None, disp=True, callback=None, *, options=None,
            client=None, method="mcla", **kwargs):
        """Monte Carlo maximum likelihood (or, with ``method="laplace"``, the Laplace MLE).

        The Laplace MLE gives start values and the first sampler centre; each round then
        draws ``m`` draws, freezes them and maximizes ``l_m`` by a trust region with the
        exact Hessian; the sampler is re-centred at the estimate with fresh draws until the
        estimate is stable within its Monte Carlo error (:mod:`glmm_sm.fitting`).

        Parameters
        ----------
        m : int or "auto"
            Draws per round; ``"auto"`` grows m until every MCSE is at most
            ``target_ratio`` times its standard error.
        random_state : None, int, SeedSequence or Generator
            The only source of randomness; the same value gives the same fit.  With
            ``None`` fresh entropy is drawn and recorded in ``results.fit_log.seed_entropy``.
        sampler : {"laplace", "glmm"}
            Importance sampler: normal at the conditional mode with a defensive t
            (default), or glmm's three-part mixture.
        target_ratio : float
            Largest acceptable MCSE/SE with ``m="auto"``.
        max_m : int
            Upper limit for m with ``m="auto"``.
        start_params : array_like, optional
            ``(beta, nu)`` to start the Laplace step from.
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
            :class:`~glmm_sm.laplace_results.LaplaceGLMMResults`; deterministic, so only
            ``start_params`` and ``factorize`` apply (``random_state``, ``disp`` are unused).
        **kwargs
            Other :class:`~glmm_sm.fitting.FitOptions` fields: ``max_rounds``, ``min_ess``,
            ``time_budget``, ``m_start``, ``kernel``, ``chunk_size``, ``n_jobs`` (threads;
            default all cores; results do not depend on it),
            ``memory_budget``, ``factorize``, ``sampler_options``, ``gtol``, ``maxiter``.

        Returns
        -------
        MonteCarloGLMMResultsWrapper
        """
        if method == "laplace":
            from .laplace_results import fit_laplace_results

            return fit_laplace_results(self, start_params, m=m, sampler=sampler,
                                       target_ratio=target_ratio, max_m=max_m,
                                       callback=callback, options=options, client=client,
                                       **kwargs)
        if method != "mcla":
            raise ValueError(f"method must be 'mcla' or 'laplace'; got {method!r}")
        import dataclasses

        from .fitting import FitOptions, mcmle
        from .results import MonteCarloGLMMResults, MonteCarloGLMMResultsWrapper

        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}; got {sampler!r}")
        fields = {f.name for f in dataclasses.fields(FitOptions)}
        unknown = set(kwargs) - fields
        if unknown:
            raise TypeError(f"fit() got unknown argument(s) {sorted(unknown)}")
        base = options if options is not None else FitOptions()
        opts = dataclasses.replace(base, m=m, sampler=sampler, target_ratio=target_ratio,
                                   max_m=max_m, **kwargs)
        if start_params is not None:
            start_params = self._check_params(start_params)
        if client is not None:
            from .distributed import check_client

            check_client(client)
        outcome = mcmle(self, opts, random_state=random_state, start_params=start_params,
                        callback=callback, disp=disp, client=client)
        res = MonteCarloGLMMResults(self, outcome)
        res.fit_options = opts
        return MonteCarloGLMMResultsWrapper(res)

    # ------------------------------------------------------------------ likelihood
    def _check_params(self, params):
        params = np.asarray(params, dtype=np.float64)
        k = self.k_fe + self.k_vc
        if params.shape != (k,):
            raise ValueError(f"params must have length {k} (beta then nu); got {params.shape}")
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
        """The full :class:`~glmm_sm.engine.Evaluation` (value, derivatives, MCSE, ESS)."""
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


class _SafeUnpickle:
    """Model data whose unpickling survives a shallow call stack (statsmodels P13).

    statsmodels rebuilds the formula's model spec on unpickling by looking up the caller's
    frames, which fails at module level; this falls back to an empty environment.
    """

    def __setstate__(self, d):
        try:
            super().__setstate__(dict(d))
        except Exception:
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


_SAFE_DATA = {PandasData: _SafePandasData, ModelData: _SafeModelData}

#: Keyword arguments the constructor passes on to statsmodels (the formula machinery adds
#: ``formula``, ``model_spec`` and ``missing_idx``).
_MODEL_KWARGS = {"missing", "hasconst", "missing_idx", "formula", "model_spec", "design_info"}
#: Keyword arguments ``from_formula`` passes on to the constructor or the formula engine.
_FORMULA_KWARGS = {"eval_env", "hasconst", "factorize", "vc_names"}


def _exposure(exposure, n, fam):
    """Positive exposures for a Poisson model (``log(exposure)`` joins the offset)."""
    if fam.code != 1:
        raise ValueError("exposure is only defined for the Poisson family (log link); for "
                         "binomial data give the number of trials as a second response "
                         "column (successes + failures)")
    arr = _vector(exposure, n, "exposure", default=1.0)
    if np.any(arr <= 0):
        bad = arr[arr <= 0]
        raise ValueError(f"exposure must be positive; found {bad.size} value(s) <= 0: "
                         f"{_show_values(bad)}")
    return arr


def _sm_family(fam):
    from statsmodels.genmod import families as smf

    return smf.Poisson() if fam.code == 1 else smf.Binomial()


def _check_finite(values, name):
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


def _vector(value, n, name, default):
    if value is None:
        return np.full(n, default)
    arr = _as_float(value, name)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must have length {n} (one per observation); got "
                         f"shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or infinite value(s)")
    return arr


def _as_float(value, name):
    """``value`` as a float64 array, or ``ValueError`` naming ``name`` if it is not numeric."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None


def _column(value, data, name):
    if isinstance(value, str):
        if value not in data.columns:
            raise ValueError(f"{name}: column {value!r} is not in data")
        return _as_float(data[value], f"{name} (column {value!r})")
    if value is None:
        return None
    arr = _as_float(value, name)
    if arr.shape != (len(data),):
        raise ValueError(f"{name} must have length {len(data)} (the rows of data); got "
                         f"shape {arr.shape}")
    return arr


def _complete_rows(formulas, data, eval_env, arrays):
    """Mask of the rows of ``data`` where every formula and array is free of missing values."""
    from statsmodels.formula._manager import FormulaManager

    mgr = FormulaManager()
    pos = data.reset_index(drop=True)
    keep = np.ones(len(data), dtype=bool)
    for f in formulas:
        try:
            out = mgr.get_matrices(f, pos, eval_env=eval_env, pandas=True, na_action="drop")
        except Exception:  # the real build afterwards reports the error
            continue
        rows = out[1].index if isinstance(out, tuple) else out.index
        keep &= np.isin(np.arange(len(pos)), np.asarray(rows))
    for arr in arrays:
        if arr is not None:  # only NaN is missing; inf is an error reported by the build
            keep &= ~np.isnan(np.asarray(arr, dtype=float))
    return keep


def _raise_on_missing(labelled_formulas, data):
    """``missing="raise"``: name the columns of ``data`` used in a formula that hold NaN.

    A column counts as used when its name appears in the formula as a whole word; anything
    this misses is still refused by the formula engine, in its own words.
    """
    for label, f in labelled_formulas:
        bad = {}
        for col in data.columns:
            if (isinstance(col, str)
                    and re.search(rf"(?<![\w.]){re.escape(col)}(?!\w)", f)):
                k = int(data[col].isna().sum())
                if k:
                    bad[col] = k
        if bad:
            where = ", ".join(f"{c!r} ({k} row{'s' * (k > 1)})" for c, k in bad.items())
            raise ValueError(f"{label}: missing values (NaN) in column(s) {where}; use "
                             "missing='drop' to drop those rows")


def _drop_missing_rows(endog, exog, exog_vc, weights, offset):
    """``missing="drop"`` for the array constructor: drop rows with NaN in any input.

    Returns the five inputs without those rows (pandas objects keep their index) and the
    number of rows dropped.  Inputs whose length is not that of ``endog`` are returned
    unchanged, for the constructor's checks to report.
    """
    parts = (endog, exog, exog_vc, weights, offset)
    n = np.shape(endog)[0] if np.ndim(endog) else 0
    keep = np.ones(n, dtype=bool)
    for value in parts:
        keep &= ~_nan_rows(value, n)
    if keep.all():
        return (*parts, 0)
    rows = np.flatnonzero(keep)
    return (*(_take_rows(value, rows, n) for value in parts), n - rows.size)


def _nan_rows(value, n):
    """Rows of ``value`` (n rows) holding a NaN; all False if it is not an n-row array."""
    out = np.zeros(n, dtype=bool)
    if value is None:
        return out
    if sp.issparse(value):
        if value.shape[0] == n:
            csr = sp.csr_matrix(value)
            rows = np.repeat(np.arange(n), np.diff(csr.indptr))
            out[rows[np.isnan(csr.data)]] = True
        return out
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return out  # non-numeric: reported by the constructor's checks
    if arr.ndim == 0 or arr.shape[0] != n:
        return out
    return np.isnan(arr.reshape(n, -1)).any(axis=1)


def _take_rows(value, rows, n):
    if value is None or (not sp.issparse(value) and np.ndim(value) == 0):
        return value
    if np.shape(value)[0] != n:
        return value
    if isinstance(value, (pd.Series, pd.DataFrame)):
        return value.iloc[rows]
    if sp.issparse(value):
        return sp.csr_matrix(value)[rows]
    return np.asarray(value)[rows]


def _check_full_rank(X, names):
    """Raise ``ValueError`` naming the columns of ``X`` that are linear combinations of others.

    Columns are scaled to unit length (rank does not depend on units) and taken in order; a
    column is aliased when its least-squares residual on the columns kept before it is below
    the tolerance ``numpy.linalg.matrix_rank`` uses.
    """
    n, p = X.shape
    if p == 0:
        return
    if p > n:
        raise ValueError(f"exog is rank deficient: {p} fixed-effect columns but only {n} "
                         "observations")
    norms = np.linalg.norm(X, axis=0)
    zero = norms == 0
    R = np.linalg.qr(X / np.where(zero, 1.0, norms), mode="r")  # same column relations as X
    tol = np.linalg.norm(R, 2) * max(n, p) * np.finfo(np.float64).eps
    kept, problems = [], []
    for j in range(p):
        if zero[j]:
            problems.append(f"column {names[j]!r} is zero for every observation")
            continue
        coef = np.zeros(0)
        if kept:
            coef = np.linalg.lstsq(R[:, kept], R[:, j], rcond=None)[0]
        if np.linalg.norm(R[:, j] - R[:, kept] @ coef) > tol:
            kept.append(j)
            continue
        coef = coef * norms[j] / norms[kept]  # back to the units of X
        big = np.abs(coef) > 1e-8 * np.abs(coef).max()
        terms = [f"{c:.4g} * {names[k]}" for c, k, b in zip(coef, kept, big, strict=True) if b]
        others = ", ".join(repr(names[k]) for k, b in zip(kept, big, strict=True) if b)
        problems.append(f"column {names[j]!r} is a linear combination of {others} "
                        f"({names[j]} = {' + '.join(terms)})")
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ValueError("exog is rank deficient: " + "; ".join(problems[:3]) + more
                         + ". The fixed effects are not identifiable: drop or recode the "
                         "aliased column(s)")


def _single_effect_components(Z, ident):
    """Components with one random effect that loads equally on every observation.

    That is what a factor with a single level gives; its variance has a single realization
    to learn from and cannot be estimated.
    """
    Zc = sp.csc_matrix(Z)
    n = Zc.shape[0]
    ident = np.asarray(ident)
    out = []
    for t in np.flatnonzero(np.bincount(ident) == 1) if ident.size else []:
        j = int(np.flatnonzero(ident == t)[0])
        col = Zc.data[Zc.indptr[j] : Zc.indptr[j + 1]]
        if n > 1 and col.size == n and np.all(col == col[0]):
            out.append(int(t))
    return out


def _categorical_response(ynames):
    """``(name, levels)`` when the response columns are the indicators of one categorical.

    The formula engines code a string or boolean response as one indicator column per level,
    named ``name[level]`` (``name[T.level]``); fitted as (successes, failures) these would
    silently count the first level as the success.
    """
    names = [ynames] if isinstance(ynames, str) else list(ynames)
    parts = [re.fullmatch(r"(.+)\[(?:T\.)?(.*)\]", str(name)) for name in names]
    if not names or not all(parts) or len({m.group(1) for m in parts}) != 1:
        return None
    return parts[0].group(1), [m.group(2) for m in parts]


def _same_design_components(Z, ident):
    """The first pair ``(s, t)`` of components whose columns of ``Z`` are the same set."""
    Zc = sp.csc_matrix(Z)
    Zc.sort_indices()
    ident = np.asarray(ident)
    seen = {}
    for t in np.unique(ident):
        cols = frozenset(
            (Zc.indices[Zc.indptr[j] : Zc.indptr[j + 1]].tobytes(),
             Zc.data[Zc.indptr[j] : Zc.indptr[j + 1]].tobytes())
            for j in np.flatnonzero(ident == t))
        if cols in seen:
            return seen[cols], int(t)
        seen[cols] = int(t)
    return None


def _show_values(values, k=3):
    """A few distinct values for an error message: ``-1, -0.5`` (and ``...`` if more)."""
    vals = np.unique(values)
    return ", ".join(f"{v:g}" for v in vals[:k]) + (", ..." if vals.size > k else "")
