"""Correlated random effects (issue 10): derivatives, coordinates, syntax and results.

The exact-likelihood reference (2-D adaptive Gauss-Hermite on Contraception) is in
``tests/test_vector_reference.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import statsmodels.api as sm

from glmm_sm import MonteCarloGLMM
from glmm_sm.laplace.step import laplace_loglike, laplace_score
from glmm_sm.spec.covstruct import CovStructure, log_cholesky_map, singular_terms
from glmm_sm.spec.params import ParamTransform

BINOMIAL = sm.families.Binomial()


def _model(df, formula="y ~ x + (1 + x | g)"):
    return MonteCarloGLMM.from_formula(formula, data=df, family=BINOMIAL)


def _fd(f, x, h=1e-5):
    return np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(len(x))])


@pytest.mark.parametrize("kernel", ["numba", "numpy"])
@pytest.mark.parametrize("shift", [False, True])
def test_engine_derivatives_match_finite_differences(slope_data, kernel, shift):
    mod = _model(slope_data)
    start = np.array([-0.2, 0.7, 0.8, 0.3, 0.6])
    mod.sample_draws(1500, random_state=3, params=start, kernel=kernel, n_jobs=1, shift=shift)
    th = start + np.array([0.05, -0.05, 0.1, 0.05, 0.07])
    ev = mod.evaluate(th)
    g_fd = _fd(mod.loglike, th)
    H_fd = _fd(mod.score, th)
    # Central differences of a smooth function: error O(h^2) ~ 1e-9 relative here.
    assert np.max(np.abs(ev.gradient - g_fd)) < 1e-6 * max(1.0, np.abs(ev.gradient).max())
    assert np.max(np.abs(ev.hessian - H_fd)) < 1e-5 * max(1.0, np.abs(ev.hessian).max())


def test_numba_and_numpy_kernels_agree(slope_data):
    mod = _model(slope_data)
    th = np.array([-0.2, 0.7, 0.8, 0.3, 0.6])
    out = []
    for kernel in ("numba", "numpy"):
        mod.sample_draws(700, random_state=5, params=th, kernel=kernel, n_jobs=1)
        out.append(mod.evaluate(th))
    assert abs(out[0].value - out[1].value) < 1e-9 * abs(out[0].value)
    np.testing.assert_allclose(out[0].hessian, out[1].hessian, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(out[0].score_var, out[1].score_var, rtol=1e-7, atol=1e-9)


def test_threads_give_the_same_bits(slope_data):
    mod = _model(slope_data)
    th = np.array([-0.2, 0.7, 0.8, 0.3, 0.6])
    evs = []
    for n_jobs in (1, 2):
        mod.sample_draws(9000, random_state=5, params=th, n_jobs=n_jobs, chunk_size=1024)
        evs.append(mod.evaluate(th))
    assert evs[0].value == evs[1].value
    assert np.array_equal(evs[0].hessian, evs[1].hessian)


def test_laplace_score_matches_finite_differences(slope_data):
    mod = _model(slope_data)
    system = mod.block_system()
    th = np.array([-0.2, 1.1, 0.7, 0.3, 0.6])

    def f(t):
        return laplace_loglike(system, t[:2], t[2:])[0]

    _, mode = laplace_loglike(system, th[:2], th[2:])
    g = laplace_score(system, th[:2], th[2:], mode)
    assert np.max(np.abs(g - _fd(f, th, 1e-6))) < 1e-6


@pytest.mark.parametrize("k", [2, 3])
def test_log_cholesky_map_derivatives(k):
    rng = np.random.default_rng(k)
    x = rng.normal(size=k * (k + 1) // 2)
    theta, jac, hess = log_cholesky_map(x, k)
    np.testing.assert_allclose(jac, _fd(lambda z: log_cholesky_map(z, k)[0], x).T,
                               rtol=1e-7, atol=1e-8)
    jac_fd = [_fd(lambda z, r=r: log_cholesky_map(z, k)[1][r], x) for r in range(len(theta))]
    for r in range(len(theta)):
        np.testing.assert_allclose(hess[r], jac_fd[r], rtol=1e-6, atol=1e-7)


def test_param_transform_chain_rule(slope_data):
    """Gradient and Hessian in the optimizer's coordinates equal finite differences of
    ``l_m`` composed with the coordinate map."""
    mod = _model(slope_data)
    th = np.array([-0.2, 0.7, 0.8, 0.3, 0.6])
    mod.sample_draws(800, random_state=2, params=th, n_jobs=1)
    tr = ParamTransform(mod.arrays.X, mod.k_vcp, cov=mod.design.cov)
    x = tr.to_x(th)
    np.testing.assert_allclose(tr.to_theta(x), th, rtol=1e-12)
    ev = mod.evaluate(th)
    gx = tr.gradient(ev.gradient, th)
    Hx = tr.hessian(ev.hessian, ev.gradient, th)
    np.testing.assert_allclose(gx, _fd(lambda z: mod.loglike(tr.to_theta(z)), x),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        Hx, _fd(lambda z: tr.gradient(mod.score(tr.to_theta(z)), tr.to_theta(z)), x),
        rtol=1e-5, atol=1e-5)


def test_zero_covariance_equals_independent_terms(slope_data):
    """On the same draws, ``Sigma = diag(v1, v2)`` gives the ``||`` model's value and the
    variances' derivatives."""
    vec, ind = _model(slope_data), _model(slope_data, "y ~ x + (1 + x || g)")
    assert ind.vcp_names == ["g", "g:x"]
    rng = np.random.default_rng(0)
    q = vec.design.q
    assert ind.design.q == q and (vec.exog_vc != ind.exog_vc).nnz == 0
    u = rng.normal(size=(300, q)) * 0.8
    logf = -0.5 * (u**2 / 0.64).sum(axis=1)
    for mod in (vec, ind):
        mod.set_draws(u, logf)
    b, v1, v2 = [-0.2, 0.7], 0.9, 0.4
    ev_v = vec.evaluate(np.array([*b, v1, 0.0, v2]))
    ev_i = ind.evaluate(np.array([*b, v1, v2]))
    assert abs(ev_v.value - ev_i.value) < 1e-10 * abs(ev_i.value)
    keep = [0, 1, 2, 4]
    np.testing.assert_allclose(ev_v.gradient[keep], ev_i.gradient, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ev_v.hessian[np.ix_(keep, keep)], ev_i.hessian, rtol=1e-8,
                               atol=1e-8)


def test_names_fit_and_results(slope_data):
    mod = _model(slope_data, "y ~ x + (x | g)")  # lme4: (x | g) is (1 + x | g)
    assert mod.vcp_names == ["g Var(Intercept)", "g Cov(x, Intercept)", "g Var(x)"]
    res = mod.fit(random_state=1, disp=False, n_jobs=1)
    assert res.converged
    vc = res.varcorr()  # lme4's VarCorr columns
    assert list(vc["Name"]) == ["(Intercept)", "x"] and list(vc["Groups"]) == ["g", "g"]
    S = res.params.iloc[2:].to_numpy()
    assert vc["Corr"].iloc[1] == pytest.approx(S[1] / np.sqrt(S[0] * S[2]))
    assert "VarCorr" in str(res.summary())
    re = res.random_effects("g")
    assert re.shape == (40, 4) and list(re["Mean"].columns) == ["Intercept", "x"]
    tt = res.t_test("g Cov(x, Intercept) = 0")
    assert np.isfinite(tt.pvalue)
    # Conditional predictions use the slopes: eta = X beta + Z u with both columns of u.
    a = mod.arrays
    u = np.concatenate([re[("Mean", "Intercept")], re[("Mean", "x")]])
    eta = a.X @ res.fe_params.to_numpy() + a.Z @ u
    np.testing.assert_allclose(res.predict(conditional=True, which="linear"), eta,
                               rtol=1e-10)


def test_singular_terms_rule():
    cov = CovStructure(3, [(0, 1)])
    names = ["g Var(Intercept)", "g Cov(x, Intercept)", "g Var(x)", "h"]
    assert singular_terms(cov, np.array([1.0, 0.5, 1.0, 0.3]), names) == []
    assert singular_terms(cov, np.array([1.0, 1.0, 1.0, 0.3]), names) == ["g"]  # corr 1
    assert singular_terms(cov, np.array([1.0, 0.0, 0.0, 0.3]), names) == ["g"]  # var 0
    assert singular_terms(cov, np.array([1.0, 0.5, 1.0, 0.0]), names) == ["h"]


def test_bad_correlated_terms_are_refused(slope_data):
    Z = sp.random(len(slope_data), 10, density=0.3, format="csr", random_state=0)
    ident = np.repeat([0, 1], [4, 6])
    with pytest.raises(ValueError, match="same number of columns"):
        MonteCarloGLMM(slope_data["y"], np.ones((len(slope_data), 1)), Z, ident,
                       vcp_names=["a", "b"], cov_terms=[("g", [0, 1], ["A", "B"])])
    with pytest.raises(ValueError, match="two distinct|at least two"):
        MonteCarloGLMM(slope_data["y"], np.ones((len(slope_data), 1)), Z, ident,
                       vcp_names=["a", "b"], cov_terms=[("g", [0], ["A"])])
    with pytest.raises(ValueError, match="nested correlated term"):
        _model(slope_data, "y ~ x + (1 + x | g/x)")


def test_likelihood_ratio_tests_of_a_correlated_term(slope_data):
    import glmm_sm

    fits = {f: _model(slope_data, f).fit(random_state=0, disp=False, n_jobs=1)
            for f in ("y ~ x + (1 + x | g)", "y ~ x + (1 + x || g)", "y ~ x + (1 | g)")}
    full = fits["y ~ x + (1 + x | g)"]
    cov_only = glmm_sm.lrtest(full, fits["y ~ x + (1 + x || g)"])
    assert cov_only.df == 1 and cov_only.mixture == ((1.0, 1),)  # an interior parameter
    slope = glmm_sm.lrtest(full, fits["y ~ x + (1 | g)"])
    assert slope.df == 2 and slope.mixture == ((0.5, 1), (0.5, 2))  # Self and Liang
    assert "g Cov(x, Intercept)" in slope.dropped_vc


def test_factor_slope_is_correlated_and_laplace_fit_works(slope_data):
    df = slope_data.assign(f=np.where(slope_data["x"] > 0, "hi", "lo"))
    mod = _model(df, "y ~ f + (0 + f | g)")  # lme4: a k x k covariance for a factor
    assert mod.vcp_names == ["g Var(f[hi])", "g Cov(f[lo], f[hi])", "g Var(f[lo])"]
    lap = _model(slope_data).fit(method="laplace")
    assert np.all(np.isfinite(lap.bse)) and lap.converged
