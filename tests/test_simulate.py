"""Simulation from a fitted GLMM and randomized quantile residuals (glmm_sm.inference.simulate).

* ``simulate`` is reproducible from its seed, draws responses of the right kind, and its
  moments match the Poisson-lognormal model's closed forms (tolerances from the simulation's
  own standard errors).
* ``quantile_residuals`` is exactly Uniform(0, 1) when the observation is exchangeable with
  its simulations, ties included.
* ``resid_quantile`` of fitted models: uniform on data simulated from the model (several
  independent data sets, one residual per cluster so that the KS test's independence holds),
  and not on overdispersed data (an observation-level random effect left out of the fit),
  where the residuals pile near 0 and 1 and the simulation dispersion test rejects.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

import glmm_sm
from glmm_sm import MonteCarloGLMM
from glmm_sm.inference.simulate import dispersion_test, quantile_residuals

CLUSTER = 5  # observations per cluster in the simulated Poisson data


def poisson_data(seed, n_clusters, nu, olre_sd=0.0, beta=(1.5, 0.4)):
    """Poisson GLMM data: ``log mu = b0 + b1 x + u_cluster (+ e_obs)``, ``u ~ N(0, nu)``."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_clusters), CLUSTER)
    x = rng.normal(size=g.size)
    eta = (beta[0] + beta[1] * x + rng.normal(0.0, np.sqrt(nu), n_clusters)[g]
           + rng.normal(0.0, olre_sd, g.size))
    return pd.DataFrame({"y": rng.poisson(np.exp(eta)), "x": x, "g": g})


def fit_poisson(df):
    model = MonteCarloGLMM.from_formula("y ~ x", {"g": "0 + C(g)"}, df,
                                        family=sm.families.Poisson())
    return model.fit(random_state=0, disp=False, n_jobs=1)


@pytest.fixture(scope="module")
def res_poisson():
    return fit_poisson(poisson_data(100, n_clusters=60, nu=0.5))


@pytest.fixture(scope="module")
def res_cbpp():
    df = glmm_sm.datasets.load("cbpp2")
    agg = (df.groupby(["herd", "period"], observed=True)["Y"].agg(["sum", "count"])
           .reset_index().rename(columns={"sum": "incidence", "count": "size"}))
    agg["healthy"] = agg["size"] - agg["incidence"]
    model = MonteCarloGLMM.from_formula("incidence + healthy ~ period", {"herd": "0 + C(herd)"},
                                        agg, family=sm.families.Binomial())
    return model.fit(method="laplace")


# ----------------------------------------------------------------------- simulate
def test_simulate_reproducible_and_shaped(res_poisson):
    a = res_poisson.simulate(3, random_state=7)
    b = res_poisson.simulate(3, random_state=np.random.SeedSequence(7))
    c = res_poisson.simulate(3, random_state=8)
    n = int(res_poisson.nobs)
    assert a.shape == (n, 3) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(a >= 0) and np.all(a == np.round(a))
    assert res_poisson.simulate(random_state=1).shape == (n, 1)


def test_simulate_binomial_trials_gives_successes(res_cbpp):
    a = res_cbpp.model.arrays
    y = res_cbpp.simulate(200, random_state=3)
    assert y.shape == (a.y.size, 200)
    assert np.all(y >= 0) and np.all(y <= a.ntrials[:, None]) and np.all(y == np.round(y))
    # Rows with more trials have more successes on average (not proportions).
    big, small = a.ntrials >= 20, a.ntrials <= 5
    assert y[big].mean() > 2 * y[small].mean()


def test_simulate_moments_match_poisson_lognormal(res_poisson):
    """E[y_i] = exp(x_i' beta + s_i / 2) and Var(sum_i y_i) = sum mu + mu' (exp(S) - 1) mu,
    ``S = Z diag(nu) Z'`` (lognormal moments), within 4 simulation standard errors."""
    mod = res_poisson.model
    params = np.asarray(res_poisson.params)
    beta, nu = params[: mod.k_fe], params[mod.k_fe :]
    Z = mod.exog_vc.toarray()
    S = (Z * nu[mod.ident]) @ Z.T
    mu = np.exp(mod.exog @ beta + mod.offset + 0.5 * np.diag(S))
    nrep = 4000
    y = res_poisson.simulate(nrep, random_state=11)
    total = y.sum(axis=0)
    se_mean = total.std(ddof=1) / np.sqrt(nrep)
    assert abs(total.mean() - mu.sum()) < 4 * se_mean
    var_total = mu.sum() + mu @ np.expm1(S) @ mu
    dev = total - total.mean()
    se_var = np.sqrt((np.mean(dev**4) - np.mean(dev**2) ** 2) / nrep)
    assert abs(total.var(ddof=1) - var_total) < 4 * se_var
    # Per observation (Bonferroni over the rows: |z| < 4.5).
    z = (y.mean(axis=1) - mu) / (y.std(axis=1, ddof=1) / np.sqrt(nrep))
    assert np.max(np.abs(z)) < 4.5


def test_simulate_boundary_component_contributes_nothing(res_poisson):
    """With nu = 0 the rows are independent Poisson(exp(x' beta)): Var(sum) = sum mu."""
    inner = res_poisson._results
    mod = inner.model
    params = np.asarray(inner.params).copy()
    params[mod.k_fe :] = 0.0
    fake = type("Fit", (), {"model": mod, "params": params})()
    y = glmm_sm.inference.simulate.simulate(fake, 2000, random_state=5)
    mu = np.exp(mod.exog @ params[: mod.k_fe] + mod.offset)
    total = y.sum(axis=0)
    se_var = np.sqrt(2.0 / 2000) * mu.sum()  # normal approximation of the total
    assert abs(total.var(ddof=1) - mu.sum()) < 4 * se_var


def test_simulate_warns_about_weights_and_checks_nrep(res_cbpp):
    mod = res_cbpp.model
    wmod = MonteCarloGLMM(mod.endog, mod.exog, mod.exog_vc, mod.ident, family="binomial",
                          weights=np.full(mod.endog.shape[0], 2.0))
    wres = wmod.fit(method="laplace")
    with pytest.warns(UserWarning, match="ignores the observation weights"):
        wres.simulate(2, random_state=0)
    for bad in (0, 2.5, True, "3"):
        with pytest.raises(ValueError, match="nrep must be an integer >= 1"):
            res_cbpp.simulate(bad)
    with pytest.raises(ValueError, match="nsim must be an integer >= 1"):
        res_cbpp.resid_quantile(nsim=0)


# ----------------------------------------------------------------------- residuals
def test_quantile_residuals_exact_under_exchangeability():
    """Observed and simulated values iid: the residuals are exactly Uniform(0, 1), with
    heavy ties (small Poisson and binomial means) and few simulations."""
    rng = np.random.default_rng(2024)
    n, nsim = 4000, 9
    lam = rng.uniform(0.05, 3.0, size=n)
    draws = rng.poisson(lam[:, None], size=(n, nsim + 1))
    r = quantile_residuals(draws[:, 0], draws[:, 1:], random_state=1)
    assert np.all((r > 0) & (r < 1))
    assert stats.kstest(r, "uniform").pvalue > 1e-3
    p = rng.uniform(0.02, 0.98, size=n)
    draws = rng.binomial(3, p[:, None], size=(n, nsim + 1))
    r = quantile_residuals(draws[:, 0], draws[:, 1:], random_state=2)
    assert stats.kstest(r, "uniform").pvalue > 1e-3
    # A value above every simulation lands in the top cell, (S, S + 1) / (S + 1).
    top = quantile_residuals(np.array([5.0]), np.zeros((1, 9)), random_state=0)
    assert 0.9 < top[0] < 1.0
    with pytest.raises(ValueError, match="ysim must have shape"):
        quantile_residuals(np.zeros(3), np.zeros((4, 2)))


def test_resid_quantile_reproducible(res_poisson):
    a = res_poisson.resid_quantile(nsim=50, random_state=4)
    b = res_poisson.resid_quantile(nsim=50, random_state=4)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (int(res_poisson.nobs),) and np.all((a > 0) & (a < 1))


@pytest.mark.slow
def test_resid_quantile_uniform_under_the_model():
    """Four independent data sets from the model, each fitted; one residual per cluster
    (clusters are independent, so the KS test's assumption holds), pooled and per set."""
    pooled = []
    for seed in range(4):
        res = fit_poisson(poisson_data(seed, n_clusters=100, nu=0.5))
        r = res.resid_quantile(random_state=seed + 10)[::CLUSTER]
        assert stats.kstest(r, "uniform").pvalue > 1e-3
        assert dispersion_test(res, random_state=seed + 20).pvalue > 0.01
        pooled.append(r)
    assert stats.kstest(np.concatenate(pooled), "uniform").pvalue > 1e-3


@pytest.mark.slow
def test_resid_quantile_detects_overdispersion():
    """Observation-level random effect (SD 1) left out of the fit: too many residuals near
    0 and 1 and a dispersion ratio above 1.  The count of residuals in the outer 5% is
    compared with its null mean under the worst within-cluster correlation (variance
    ``G k^2 0.05 0.95``)."""
    res = fit_poisson(poisson_data(50, n_clusters=200, nu=0.1, olre_sd=1.0))
    r = res.resid_quantile(random_state=1)
    G = r.size // CLUSTER
    tails = np.sum((r < 0.025) | (r > 0.975))
    assert (tails - 0.05 * r.size) / np.sqrt(G * CLUSTER**2 * 0.05 * 0.95) > 3.0
    assert stats.kstest(r[::CLUSTER], "uniform").pvalue < 0.01
    test = dispersion_test(res, nsim=250, random_state=2)
    assert test.statistic > 1.5 and test.pvalue < 0.01
    with pytest.raises(ValueError, match="alternative must be"):
        dispersion_test(res, alternative="bigger")
