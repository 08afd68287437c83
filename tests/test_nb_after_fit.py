"""After a negative binomial fit (issue 22): ``compare`` with statsmodels' Bayesian mixed
GLMs, the figures, and a Dask cluster.

* ``compare`` with ``PoissonBayesMixedGLM`` works for the Poisson model (Owls): its MAP
  fixed effects are within 0.5 of our SEs of the MLE (statsmodels' N(0, 2^2) prior moves a
  fixed effect by about ``(SE / 2)^2`` of the estimate, ~1% of an SE here, and the MAP of
  the log SD moves the rest little); a negative binomial fit against it is refused with a
  message saying why (statsmodels has no negative binomial mixed GLM; the Poisson posterior
  is of another model), as is a Bayesian fit of another family.
* Smoke-level: every figure of :mod:`glmm_sm.inference.plots` draws an NB fit (the
  deterministic default and an importance-sampling one) with what it claims (the
  caterpillar's means are ``random_effects``; the profile of ``alpha`` crosses ``-+z`` at
  its interval's ends).
* Dask: an importance-sampling NB fit on a cluster gives the same numbers as the local
  fit (the partitions are summed in a fixed order).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

import glmm_sm
from glmm_sm import MonteCarloGLMM

DATA = os.path.join(os.path.dirname(__file__), "data", "owls.csv")
FORMULA = "SiblingNegotiation ~ FoodTreatment * SexParent"
VC = {"Nest": "0 + C(Nest)"}
Z95 = 1.959963984540054


@pytest.fixture(scope="module")
def owls():
    return pd.read_csv(DATA)


def owls_model(d, family):
    return MonteCarloGLMM.from_formula(FORMULA, VC, data=d, family=family,
                                       offset=np.log(d.BroodSize))


@pytest.fixture(scope="module")
def nb_res(owls):
    return owls_model(owls, sm.families.NegativeBinomial(alpha=1.0)).fit(random_state=1,
                                                                         disp=False)


@pytest.fixture(scope="module")
def nb_is(owls):
    return owls_model(owls, sm.families.NegativeBinomial(alpha=1.0)).fit(
        random_state=1, disp=False, rao_blackwell=False)


#: statsmodels' Bayesian mixed GLMs take no offset: log(BroodSize) is a covariate there.
BAYES_FORMULA = FORMULA + " + logBroodSize"


@pytest.fixture(scope="module")
def bayes_poisson(owls):
    return sm.PoissonBayesMixedGLM.from_formula(BAYES_FORMULA, VC, owls).fit_map()


# ----------------------------------------------------------------------- compare
def test_compare_poisson_with_poisson_bayes_mixed_glm(owls, bayes_poisson):
    res = MonteCarloGLMM.from_formula(BAYES_FORMULA, VC, data=owls,
                                      family=sm.families.Poisson()).fit(random_state=1,
                                                                        disp=False)
    table = glmm_sm.compare(res, bayes_poisson)
    assert list(table.index) == list(res.params.index)
    assert ("PoissonBayesMixedGLM (Bayes)", "estimate") in table.columns
    fe = table[("difference", "in SE")].iloc[: res.model.k_fe]
    assert np.all(np.isfinite(fe)) and np.all(np.abs(fe) <= 0.5), fe
    assert np.isfinite(table.loc["Nest", ("difference", "in SE")])


def test_compare_negative_binomial_with_poisson_bayes_is_refused(nb_res, bayes_poisson):
    with pytest.raises(ValueError, match="no negative binomial mixed GLM.*compare_lr_test"):
        glmm_sm.compare(nb_res, bayes_poisson)
    with pytest.raises(ValueError, match="no negative binomial mixed GLM"):
        glmm_sm.plot_compare(nb_res, bayes_poisson)


def test_compare_with_a_bayes_fit_of_another_family_is_refused(owls, bayes_poisson):
    d = owls.assign(any=(owls.SiblingNegotiation > 0).astype(float))
    res = MonteCarloGLMM.from_formula("any ~ FoodTreatment", VC, data=d,
                                      family=sm.families.Binomial()).fit(random_state=1,
                                                                         disp=False)
    with pytest.raises(ValueError, match="BinomialBayesMixedGLM"):
        glmm_sm.compare(res, bayes_poisson)


def test_compare_two_negative_binomial_fits(nb_res, nb_is):
    """The deterministic and the importance-sampling fit of the same NB model, alpha
    included, agree to a few of the Monte Carlo fit's MCSEs (the table's difference is in
    SEs: MCSE/SE is at most ~0.1 by the fit's stopping rule)."""
    table = glmm_sm.compare(nb_res, nb_is, labels=("quadrature", "IS"))
    assert table.index[-1] == "alpha"
    mcse = np.asarray(nb_is.mcse())
    diff = np.abs(np.asarray(nb_is.params) - np.asarray(nb_res.params))
    assert np.all(diff <= 4 * mcse), diff / mcse


# ----------------------------------------------------------------------- plots
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


@pytest.mark.parametrize("which", ["deterministic", "importance sampling"])
def test_figures_of_a_negative_binomial_fit(nb_res, nb_is, which, tmp_path):
    res = nb_res if which == "deterministic" else nb_is
    fig = res.plot_diagnostics()
    assert len(fig.axes) == 4
    fig.savefig(tmp_path / "diag.png", dpi=50)
    fig = res.plot_random_effects("Nest")
    x = fig.axes[0].lines[0].get_xdata()
    np.testing.assert_array_equal(x, res.random_effects("Nest").sort_values("Mean")["Mean"])
    fig = res.plot_residuals(nsim=40, random_state=3)
    r = np.asarray(res.resid_quantile(nsim=40, random_state=3))
    assert np.all((r > 0) & (r < 1))  # randomized quantile residuals of the NB counts
    np.testing.assert_array_equal(fig.axes[1].lines[0].get_ydata(), r)
    fig.savefig(tmp_path / "resid.png", dpi=50)


def test_profile_figure_of_alpha(nb_res, tmp_path):
    from glmm_sm.inference.plots import profile_ends

    prof = nb_res.profile("alpha")
    fig = nb_res.plot_profile("alpha", profile=prof)
    line = fig.axes[0].lines[0]
    assert np.all(np.asarray(line.get_xdata()) > 0)
    ci = nb_res.profile_conf_int(cols=["alpha"])
    ends = profile_ends(prof.sort_values("value"), Z95)
    # the curve's interpolated crossings are the interval's ends, to the interpolation
    # error between the curve's points (a few % of the interval's width at 8 points)
    width = ci.loc["alpha", "upper"] - ci.loc["alpha", "lower"]
    np.testing.assert_allclose(ends, ci.loc["alpha", ["lower", "upper"]].to_numpy(dtype=float),
                               atol=0.05 * width)
    fig.savefig(tmp_path / "profile.png", dpi=50)


# ----------------------------------------------------------------------- Dask
def test_dask_fit_is_the_local_fit(owls, nb_is):
    distributed = pytest.importorskip("dask.distributed")
    mod = owls_model(owls, sm.families.NegativeBinomial(alpha=1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                           dashboard_address=None, silence_logs=50)
        client = distributed.Client(cluster)
        try:
            dres = mod.fit(random_state=1, disp=False, rao_blackwell=False, client=client)
        finally:
            client.close()
            cluster.close()
    np.testing.assert_allclose(np.asarray(dres.params), np.asarray(nb_is.params), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(dres.bse), np.asarray(nb_is.bse), rtol=1e-10)
    assert dres.params.index[-1] == "alpha"
