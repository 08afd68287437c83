"""Predictions with intervals, fitted values and residuals (glmm_sm.inference.prediction).

* The marginal prediction equals statsmodels' GLM ``get_prediction`` at the same ``beta`` and
  ``Cov(beta)`` (the conventions: columns, endpoint intervals, proportions for binomial data).
* Both intervals match a finite-difference delta method in ``(beta, u)`` with covariance
  ``blockdiag(Cov(beta), Var(u | y))``.
* ``Var(u | y)`` (``random_effects_cov``) equals the importance-sampling variance of each
  row's ``z' u`` computed directly from the final draws and weights (salamander: two
  correlated effects per row), its diagonal the SDs of ``random_effects``; with one effect
  per row (cbpp) the conditional variance is ``x' Cov x + SD^2``, and an unseen level adds
  ``nu``.
* Residuals equal statsmodels GLM's at the conditional linear predictor (trials, weights).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import statsmodels.api as sm
from models import cbpp, cbpp_aggregated, salamander_binomial
from scipy.special import expit
from statsmodels.genmod.generalized_linear_model import GLMResults

from glmm_sm import MonteCarloGLMM
from glmm_sm.inference.prediction import conditional_re_cov, quadratic_rows

VC_SAL = {"F": "0 + C(Female)", "M": "0 + C(Male)"}


cbpp_frame, cbpp_model = cbpp_aggregated, cbpp


@pytest.fixture(scope="module")
def sal_df(salamander_df):
    return salamander_df


@pytest.fixture(scope="module")
def res_sal():
    model = salamander_binomial()
    return model.fit(random_state=1, disp=False, n_jobs=1)


@pytest.fixture(scope="module")
def res_cbpp():
    return cbpp_model(cbpp_frame()).fit(random_state=2, disp=False, n_jobs=1)


def _beta_cov(res):
    k = res.model.k_fe
    return np.asarray(res.params)[:k], np.asarray(res.cov_params())[:k, :k]


def _glm_at(res, offset=None, var_weights=None):
    """statsmodels GLM results object at the fit's ``beta`` and ``Cov(beta)``."""
    mod = res.model
    beta, cov = _beta_cov(res)
    kw = {} if var_weights is None else {"var_weights": var_weights}
    glm = sm.GLM(np.asarray(mod.endog), np.asarray(mod.exog), family=mod.family,
                 offset=offset, **kw)
    return GLMResults(glm, beta, cov, scale=1.0)


# ----------------------------------------------------------------------- marginal
@pytest.mark.parametrize("which", ["sal", "cbpp"])
def test_marginal_equals_glm_get_prediction(which, res_sal, res_cbpp, sal_df):
    res, df = (res_sal, sal_df) if which == "sal" else (res_cbpp, cbpp_frame())
    rows = [0, 5, 31, 50]  # new data: a DataFrame through the formula
    ours = res.get_prediction(df.iloc[rows]).summary_frame(alpha=0.1)
    ref = _glm_at(res).get_prediction(np.asarray(res.model.exog)[rows]).summary_frame(alpha=0.1)
    assert list(ours.columns) == ["mean", "mean_se", "mean_ci_lower", "mean_ci_upper"]
    assert list(ours.index) == list(df.index[rows])
    np.testing.assert_allclose(ours.to_numpy(), ref.to_numpy(), rtol=1e-10, atol=1e-14)


def test_prediction_object_conventions(res_sal, sal_df):
    pred = res_sal.get_prediction(sal_df.head(3), conditional=True)
    frame = pred.summary_frame()
    np.testing.assert_allclose(pred.predicted_mean, frame["mean"])
    np.testing.assert_allclose(pred.se_mean, frame["mean_se"])
    np.testing.assert_allclose(pred.conf_int(), frame[["mean_ci_lower", "mean_ci_upper"]])
    np.testing.assert_allclose(pred.predicted_mean,
                               res_sal.predict(sal_df.head(3), conditional=True))
    # Endpoint interval: the linear predictor's normal interval through the inverse link.
    np.testing.assert_allclose(expit(pred.linpred.conf_int(alpha=0.2)), pred.conf_int(alpha=0.2))
    wide, narrow = pred.conf_int(alpha=0.01), pred.conf_int(alpha=0.2)
    assert np.all(wide[:, 0] < narrow[:, 0]) and np.all(wide[:, 1] > narrow[:, 1])
    default = res_sal.get_prediction().summary_frame()
    assert len(default) == 360 and list(default.index) == list(sal_df.index)


# ----------------------------------------------------------------------- delta method
def _fd_delta_se(res, X, Z, offset, h=1e-6):
    """Delta-method SE of mu = expit(X beta + offset + Z u) by central differences in
    (beta, u), with covariance blockdiag(Cov(beta), Var(u | y))."""
    beta, cov_b = _beta_cov(res)
    u = np.asarray(res._results._re_mean)
    V = res.random_effects_cov.toarray()

    def mu(b, v):
        return expit(X @ b + offset + Z @ v)

    Jb = np.column_stack([(mu(beta + h * e, u) - mu(beta - h * e, u)) / (2 * h)
                          for e in np.eye(beta.size)])
    Ju = np.column_stack([(mu(beta, u + h * e) - mu(beta, u - h * e)) / (2 * h)
                          for e in np.eye(u.size)])
    var = np.einsum("ij,jk,ik->i", Jb, cov_b, Jb) + np.einsum("ij,jk,ik->i", Ju, V, Ju)
    return np.sqrt(var)


@pytest.mark.parametrize("conditional", [False, True])
def test_se_matches_finite_difference_delta_method(conditional, res_sal):
    mod = res_sal.model
    X = np.asarray(mod.exog)
    Z = mod.exog_vc.toarray() if conditional else np.zeros_like(mod.exog_vc.toarray())
    se_fd = _fd_delta_se(res_sal, X, Z, mod.offset)
    se = res_sal.get_prediction(conditional=conditional).se_mean
    np.testing.assert_allclose(se, se_fd, rtol=1e-6)


# ----------------------------------------------------------------------- Var(u | y)
def test_conditional_variance_equals_weighted_draws(res_sal):
    """Each row's Var(z'u | y) from ``random_effects_cov`` equals the self-normalised
    weighted variance of ``eta_ik - x_i' beta`` over the final draws (computed here
    directly from the engine's weights, one observation at a time)."""
    inner = res_sal._results
    eng = inner.engine
    data = eng.data
    beta = np.asarray(inner.params)[: inner.model.k_fe]
    fixed = data.linear_fixed(beta)[:, None]
    bo = data.block_of_obs
    s0 = np.zeros(data.n_blocks)
    s1 = np.zeros(data.y.size)
    s2 = np.zeros(data.y.size)
    for _, eta, v, sc in eng.weighted_draws(np.asarray(inner.params), chunk_size=700):
        r = eta - fixed
        s0 = s0 * sc + v.sum(axis=1)
        s1 = s1 * sc[bo] + np.sum(v[bo] * r, axis=1)
        s2 = s2 * sc[bo] + np.sum(v[bo] * r * r, axis=1)
    mean_layout = s1 / s0[bo]
    var_layout = s2 / s0[bo] - mean_layout**2
    var = np.empty_like(var_layout)
    mean = np.empty_like(mean_layout)
    var[data.layout.obs_perm] = var_layout
    mean[data.layout.obs_perm] = mean_layout
    Z = inner.model.exog_vc
    np.testing.assert_allclose(quadratic_rows(Z, inner.random_effects_cov), var, rtol=1e-8)
    np.testing.assert_allclose(Z @ inner._re_mean, mean, rtol=1e-8, atol=1e-12)


def test_random_effects_cov_structure(res_sal):
    C = res_sal.random_effects_cov
    q = len(res_sal.model.vc_names)
    assert sp.issparse(C) and C.shape == (q, q)
    np.testing.assert_allclose(C.diagonal(), res_sal.random_effects()["SD"] ** 2, rtol=1e-10)
    np.testing.assert_allclose((C - C.T).toarray(), 0.0, atol=1e-15)
    np.testing.assert_allclose(conditional_re_cov(res_sal._results, chunk_size=97).toarray(),
                               C.toarray(), rtol=1e-9, atol=1e-13)
    # Block diagonal: 6 blocks of 20 effects; females and males of a block are correlated.
    assert C.nnz == 6 * 20 * 20
    blocks = res_sal.model.blocks
    cols = blocks[0].columns
    sub = C[cols][:, cols].toarray()
    corr = sub / np.sqrt(np.outer(np.diag(sub), np.diag(sub)))
    assert np.max(np.abs(corr - np.eye(len(cols)))) > 0.05
    assert np.all(np.linalg.eigvalsh(sub) > 0)


def test_conditional_single_effect_per_row(res_cbpp):
    """cbpp: one herd effect per row, so Var(eta) = x' Cov(beta) x + SD_herd^2; a herd not
    seen in the fit gets mean 0 and variance nu; exog_vc gives the same as the DataFrame."""
    mod = res_cbpp.model
    df = cbpp_frame()
    beta, cov = _beta_cov(res_cbpp)
    X = np.asarray(mod.exog)
    xcx = np.einsum("ij,jk,ik->i", X, cov, X)
    sd = res_cbpp.random_effects()["SD"].to_numpy()
    herd = np.asarray(mod.exog_vc.argmax(axis=1)).ravel()
    pred = res_cbpp.get_prediction(df, conditional=True)
    np.testing.assert_allclose(pred.linpred.se**2, xcx + sd[herd] ** 2, rtol=1e-10)
    via_z = res_cbpp.get_prediction(np.asarray(mod.exog), conditional=True,
                                    exog_vc=mod.exog_vc.toarray(), transform=False)
    np.testing.assert_allclose(via_z.summary_frame(), pred.summary_frame(), rtol=1e-12)
    new = df.head(4).copy()
    new["herd"] = "99"
    with pytest.raises(ValueError, match=r"not seen in the fit \(herd: \['C\(herd\)\[99\]'\]\)"):
        res_cbpp.get_prediction(new, conditional=True)
    unseen = res_cbpp.get_prediction(new, conditional=True, allow_new_levels=True)
    nu = float(res_cbpp.vcomp.iloc[0])
    np.testing.assert_allclose(unseen.linpred.se**2, xcx[:4] + nu, rtol=1e-10)
    np.testing.assert_allclose(unseen.predicted_mean, expit(X[:4] @ beta), rtol=1e-12)


def test_conditional_interval_wider_on_link_scale(res_sal, res_cbpp):
    for res in (res_sal, res_cbpp):
        marg = res.get_prediction()
        cond = res.get_prediction(conditional=True)
        assert np.all(cond.linpred.se > marg.linpred.se)
        frame = cond.summary_frame()
        assert np.all(frame["mean_ci_lower"] < frame["mean"])
        assert np.all(frame["mean"] < frame["mean_ci_upper"])
        assert np.all((frame["mean_ci_lower"] > 0) & (frame["mean_ci_upper"] < 1))


def _boundary_data(only_h=False):
    """Poisson counts with a cluster effect ``g`` and a factor ``h`` without any effect
    (seeds chosen so that ``h``'s variance is estimated at 0); ``only_h``: no ``g`` at
    all, so the fit is a GLM."""
    rng = np.random.default_rng(0 if only_h else 5)
    g = np.repeat(np.arange(40), 5)
    h = rng.integers(0, 8, g.size)
    eta = 0.5 + (0.0 if only_h else rng.normal(0.0, 0.7, 40)[g])
    df = pd.DataFrame({"y": rng.poisson(np.exp(eta)), "g": g, "h": h})
    vc = {"h": "0 + C(h)"} if only_h else {"g": "0 + C(g)", "h": "0 + C(h)"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return MonteCarloGLMM.from_formula("y ~ 1", vc, df, family=sm.families.Poisson()).fit(
            random_state=0, disp=False, n_jobs=1)


def test_random_effects_cov_with_components_at_zero():
    """A component at 0: the engine is the reduced model's; its effects get variance 0 and
    the others their conditional variances.  All at 0 (a GLM): conditional = marginal."""
    res = _boundary_data()
    assert res.boundary == ["h"]
    mod = res.model
    C = res.random_effects_cov
    at0 = mod.ident == mod.vcp_names.index("h")
    assert C.shape == (at0.size, at0.size)
    assert C[np.flatnonzero(at0)].nnz == 0
    np.testing.assert_allclose(C.diagonal()[~at0], res.random_effects()["SD"][~at0] ** 2,
                               rtol=1e-10)
    res_glm = _boundary_data(only_h=True)
    assert res_glm.engine is None
    assert res_glm.random_effects_cov.nnz == 0
    np.testing.assert_allclose(res_glm.get_prediction(conditional=True).summary_frame(),
                               res_glm.get_prediction().summary_frame())


# ----------------------------------------------------------------------- residuals
def test_fittedvalues_conditional(res_cbpp):
    """fittedvalues are conditional (MixedLM, lme4's fitted()); predict() is marginal."""
    mod = res_cbpp.model
    beta, _ = _beta_cov(res_cbpp)
    fv = res_cbpp.fittedvalues
    assert isinstance(fv, pd.Series) and list(fv.index) == list(mod.data.row_labels)
    u = res_cbpp.random_effects()["Mean"].to_numpy()
    np.testing.assert_allclose(fv, expit(np.asarray(mod.exog) @ beta + mod.exog_vc @ u),
                               rtol=1e-12)
    np.testing.assert_allclose(res_cbpp.predict(), expit(np.asarray(mod.exog) @ beta),
                               rtol=1e-12)


def test_residuals_equal_glm_at_conditional_eta():
    """Binomial with trials and weights: statsmodels GLM at eta = X beta + Z E[u|y] with
    var_weights = w gives the same response and Pearson residuals (counts scale)."""
    df = cbpp_frame()
    w = np.linspace(0.5, 2.0, len(df))
    res = cbpp_model(df, weights=w).fit(method="laplace")
    mod = res.model
    eta_c = np.asarray(res.predict(conditional=True, which="linear"))
    beta = np.asarray(res.params)[: mod.k_fe]
    glm = sm.GLM(np.asarray(mod.endog), np.asarray(mod.exog), family=mod.family,
                 offset=eta_c - np.asarray(mod.exog) @ beta, var_weights=w)
    ref = GLMResults(glm, beta, np.eye(beta.size), scale=1.0)
    np.testing.assert_allclose(res.resid_response, ref.resid_response, rtol=1e-10)
    np.testing.assert_allclose(res.resid_pearson, ref.resid_pearson, rtol=1e-10)
    a = mod.arrays
    np.testing.assert_allclose(res.resid_response, a.y - a.ntrials * expit(eta_c), rtol=1e-12)


# ----------------------------------------------------------------------- errors
def test_prediction_errors(res_sal, res_cbpp, sal_df):
    X = np.asarray(res_sal.model.exog)[:3]
    with pytest.raises(ValueError, match="needs a DataFrame"):
        res_sal.get_prediction(X, conditional=True, transform=False)
    with pytest.raises(ValueError, match="exog_vc must have shape"):
        res_sal.get_prediction(X, conditional=True, transform=False, exog_vc=np.ones((3, 2)))
    with pytest.raises(ValueError, match="offset must be 3 finite numbers"):
        res_sal.get_prediction(X, offset=np.zeros(4), transform=False)
    with pytest.raises(ValueError, match="exog must have 4 columns"):
        res_sal.get_prediction(X[:, :2], transform=False)
    with pytest.raises(TypeError, match="conditional must be True or False"):
        res_sal.get_prediction(sal_df.head(), conditional="yes")
    off = res_cbpp.get_prediction(cbpp_frame().head(2), offset=0.5).linpred.predicted_mean
    base = res_cbpp.get_prediction(cbpp_frame().head(2)).linpred.predicted_mean
    np.testing.assert_allclose(off - base, 0.5)
