"""Figures of a fit (glmm_sm.inference.plots): what each panel draws is the data it claims to draw.

matplotlib is an optional extra; these tests are skipped without it and use the Agg backend.
One salamander fit serves the module.  The weight histogram is also checked against the
engine's own effective sample sizes (an identity, so to rounding), and on fits with a
variance component at 0 (the engine then has fewer parameters than the results) and with
none left (no engine).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from models import salamander_binomial  # noqa: E402

import glmm_sm  # noqa: E402
from glmm_sm import MonteCarloGLMM  # noqa: E402
from glmm_sm.inference import plots  # noqa: E402

FORMULA = "Mate ~ 0 + Cross"
VC = {"F": "0 + C(Female)", "M": "0 + C(Male)"}
Z95 = 1.959963984540054


@pytest.fixture(scope="module")
def salamander(salamander_df):
    return salamander_df


@pytest.fixture(scope="module")
def res():
    model = salamander_binomial()
    return model.fit(random_state=1, disp=False, n_jobs=1)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _saved(fig, tmp_path, name):
    """Render the figure (Agg) and check a PNG came out."""
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=60)
    assert path.stat().st_size > 1000
    return path


# ----------------------------------------------------------------------- weights
def test_weight_histogram_matches_engine_ess(res):
    h = plots.weight_histogram(res)
    m = res.m
    # 1 / sum_k w_k^2 from the two passes equals the kernel's S0^2 / sum e^(2(b-a)).
    np.testing.assert_allclose(h["ess"], res.ess, rtol=1e-10)
    np.testing.assert_array_equal(h["counts"].sum(axis=1), np.full(res.n_blocks, m))
    np.testing.assert_allclose(h["mass"].sum(axis=1), 1.0, rtol=1e-12)
    assert np.all((h["max_weight"] >= 1.0 / m) & (h["max_weight"] <= 1.0))
    # sum w^2 <= max w (sum w = 1): ESS >= 1 / max weight.
    assert np.all(h["ess"] >= 1.0 / h["max_weight"] * (1 - 1e-12))
    np.testing.assert_allclose(h["edges"][[0, -1]], [-8.0, np.log10(m)])


def test_weight_histogram_bad_edges(res):
    with pytest.raises(ValueError, match="edges"):
        plots.weight_histogram(res, edges=[1.0, 0.0])


def test_weight_histogram_with_a_component_at_zero(salamander):
    # A random Cross effect beside the fixed Cross effects is not identified: its
    # variance goes to 0 and the final engine is the model without it.
    vc = dict(VC, C="0 + Cross")
    model = MonteCarloGLMM.from_formula(FORMULA, vc, salamander, family=sm.families.Binomial())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(random_state=0, disp=False, n_jobs=1)
    assert fit.boundary == ["C"] and fit.engine is not None
    h = plots.weight_histogram(fit)
    np.testing.assert_allclose(h["ess"], fit.ess, rtol=1e-10)


def test_exact_glm_fit_has_no_weights(tmp_path):
    df = glmm_sm.datasets.load("murder")
    model = MonteCarloGLMM.from_formula("y ~ race", {"R": "0 + C(race)"}, df,
                                        family=sm.families.Poisson())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(random_state=0, disp=False, n_jobs=1)
    assert fit.engine is None
    assert plots.weight_histogram(fit) is None
    fig = fit.plot_diagnostics()
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("exact GLM" in t for t in texts)
    _saved(fig, tmp_path, "diagnostics_glm")


# ----------------------------------------------------------------------- diagnostics
def test_plot_diagnostics_draws_the_fit(res, tmp_path):
    fig = res.plot_diagnostics()
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    ess_ax, ratio_ax, rounds_ax, weight_ax = fig.axes
    np.testing.assert_array_equal(ess_ax.lines[0].get_ydata(), res.ess)
    rounds = res.fit_log.to_frame()
    np.testing.assert_array_equal(ratio_ax.lines[0].get_ydata(), rounds["max_ratio"])
    np.testing.assert_array_equal(rounds_ax.lines[0].get_ydata(), rounds["m"])
    np.testing.assert_array_equal(rounds_ax.lines[1].get_ydata(), rounds["min_ess"])
    worst = int(np.argmin(res.ess))
    assert f"block {worst}" in weight_ax.get_title()
    share, mass = (p.get_data()[0] for p in weight_ax.patches[:2])
    # At most 0.1% of the draws (the smallest weights, so at most 0.1% of the weight)
    # fall left of the axis.
    assert 1 - 1e-3 <= share.sum() <= 1 + 1e-12 and 1 - 1e-3 <= mass.sum() <= 1 + 1e-12
    _saved(fig, tmp_path, "diagnostics")


def test_plot_diagnostics_refuses_a_laplace_fit(res):
    lap = res.model.fit(method="laplace")
    with pytest.raises(ValueError, match="Laplace"):
        lap.plot_diagnostics()
    assert len(lap.plot_random_effects("M").axes) == 1


# ----------------------------------------------------------------------- random effects
def test_plot_random_effects_caterpillar(res, tmp_path):
    fig = res.plot_random_effects("F")
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    expected = res.random_effects("F").sort_values("Mean")
    x = ax.lines[0].get_xdata()
    np.testing.assert_array_equal(x, expected["Mean"].to_numpy())
    assert [t.get_text() for t in ax.get_yticklabels()] == list(expected.index)
    # the horizontal bars span Mean -+ z SD
    segments = ax.collections[0].get_segments()
    lo = np.array([s[0, 0] for s in segments])
    np.testing.assert_allclose(lo, expected["Mean"] - Z95 * expected["SD"], rtol=1e-12)
    _saved(fig, tmp_path, "random_effects")
    assert len(res.plot_random_effects().axes) == 2  # one panel per component


def test_plot_random_effects_bad_input(res):
    with pytest.raises(ValueError, match="term"):
        res.plot_random_effects("X")
    with pytest.raises(ValueError, match="alpha"):
        res.plot_random_effects("F", alpha=1.5)


# ----------------------------------------------------------------------- comparison
def test_plot_compare_with_bayes_mixed_glm(res, salamander, tmp_path):
    vb = sm.BinomialBayesMixedGLM.from_formula(FORMULA, VC, salamander).fit_vb()
    table = glmm_sm.compare(res, vb)
    fig = glmm_sm.plot_compare(res, vb)
    fe_ax, vc_ax = fig.axes[:2]
    assert [t.get_text() for t in fe_ax.get_yticklabels()] == list(res.fe_params.index)
    assert [t.get_text() for t in vc_ax.get_yticklabels()] == ["F", "M"]
    fits = table.columns.get_level_values(0).unique()[:2]
    for i, fit in enumerate(fits):
        for ax, rows in ((fe_ax, slice(0, 4)), (vc_ax, slice(4, 6))):
            bars = ax.containers[i]  # ErrorbarContainer: (data line, caps, bars)
            est, se = (table[(fit, q)].iloc[rows].to_numpy() for q in ("estimate", "se"))
            np.testing.assert_allclose(bars.lines[0].get_xdata(), est, rtol=1e-12)
            lo = np.array([s[0, 0] for s in bars.lines[2][0].get_segments()])
            np.testing.assert_allclose(lo, est - Z95 * se, rtol=1e-12)
    assert [t.get_text() for t in fe_ax.get_legend().get_texts()] == list(fits)
    _saved(fig, tmp_path, "compare")


# ----------------------------------------------------------------------- profile
def test_profile_ends_interpolate_linear_zeta():
    value = np.linspace(0.0, 4.0, 9)
    frame = pd.DataFrame({"value": value, "zeta": (value - 2.0) / 0.5})
    np.testing.assert_allclose(plots.profile_ends(frame, Z95),
                               [2.0 - 0.5 * Z95, 2.0 + 0.5 * Z95], rtol=1e-12)
    # a variance whose profile at 0 is above -z: no lower crossing
    frame = pd.DataFrame({"value": value, "zeta": (value - 1.0) / 1.0})
    np.testing.assert_allclose(plots.profile_ends(frame, Z95), [1.0 + Z95], rtol=1e-12)


def test_plot_profile_draws_res_profile(res, tmp_path):
    """Needs ``res.profile`` (another helper's work)."""
    prof = res.profile("F")
    fig = res.plot_profile("F")  # computes the profile itself: frozen draws, same numbers
    ax = fig.axes[0]
    line = ax.lines[0]
    np.testing.assert_allclose(line.get_xdata(), prof.sort_values("value")["value"])
    np.testing.assert_allclose(line.get_ydata(), prof.sort_values("value")["zeta"])
    mle = [ln for ln in ax.lines if ln.get_label() == "MLE"][0]
    assert mle.get_xdata()[0] == res.params["F"] and mle.get_ydata()[0] == 0.0
    levels = sorted(ln.get_ydata()[0] for ln in ax.lines if ln.get_linestyle() == "--")
    np.testing.assert_allclose(levels, [-Z95, Z95])
    _saved(fig, tmp_path, "profile")
    with pytest.raises(ValueError, match="profile"):
        res.plot_profile("F", profile=prof.drop(columns="zeta"))
    with pytest.raises(ValueError, match="name"):
        res.plot_profile("nope", profile=prof)


# ----------------------------------------------------------------------- residuals
def test_plot_residuals_passes_nsim_and_random_state(res, tmp_path):
    """Needs ``res.resid_quantile`` (another helper's work)."""
    r = np.asarray(res.resid_quantile(nsim=40, random_state=3))
    fig = res.plot_residuals(nsim=40, random_state=3)
    qq, scatter = fig.axes
    points = [ln for ln in qq.lines if ln.get_marker() == "o"][0]
    np.testing.assert_array_equal(points.get_ydata(), np.sort(r))
    np.testing.assert_array_equal(scatter.lines[0].get_ydata(), r)
    _saved(fig, tmp_path, "residuals")
    with pytest.raises(ValueError, match="resid"):
        res.plot_residuals(resid=r[:-1])


# ----------------------------------------------------------------------- no matplotlib
def test_missing_matplotlib_says_how_to_install(res, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r'pip install "glmm_sm\[plots\]"'):
        res.plot_random_effects("F")
