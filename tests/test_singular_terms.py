"""Singular correlated terms: the degenerate direction, the reduced fits and their tests.

Data simulated with a random intercept only (the slope's variance is 0), fitted with
``(1 + x | g)``: the estimated covariance is nearly singular along the slope's axis (the
Monte Carlo fit stops at a slope variance of about 2e-4, an eigenvalue ratio below 1e-3;
lme4's rule, ``res.singular``, flags only a Cholesky diagonal below 1e-4).
"""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from glmm_sm import MonteCarloGLMM

SEED = 6
TOL = 1e-3


def _data(seed, L=60, per=10):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(L), per)
    x = rng.normal(size=L * per)
    b = rng.normal(size=L)  # random intercepts; the slope does not vary
    eta = -0.2 + 0.7 * x + b[g]
    y = (rng.random(L * per) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"y": y, "x": x, "g": g})


@pytest.fixture(scope="module")
def singular_fit():
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 + x | g)", data=_data(SEED),
                                      family=sm.families.Binomial())
    return mod.fit(random_state=0, disp=False, n_jobs=1, m=2000, max_rounds=6)


def test_degenerate_direction_is_reported(singular_fit):
    res = singular_fit
    (d,) = res.degenerate_directions(tol=TOL)
    assert d.term == "g" and list(d.vector.index) == ["Intercept", "x"]
    S = np.array([[res.params["g Var(Intercept)"], res.params["g Cov(x, Intercept)"]],
                  [res.params["g Cov(x, Intercept)"], res.params["g Var(x)"]]])
    # The direction is an eigenvector of the estimate with the smallest eigenvalue.
    v = d.vector.to_numpy()
    assert np.isclose(np.linalg.norm(v), 1.0)
    assert np.allclose(S @ v, d.eigenvalues[0] * v, atol=1e-8 * np.abs(S).max())
    assert d.eigenvalues[0] <= TOL * d.eigenvalues[-1]
    # Here the slope's variance is the degenerate one: its axis, and the reduced term.
    assert d.kind == "variance" and d.column == "x" and abs(v[1]) > 0.99
    assert d.suggested == "(1 | g)"
    assert "(1 | g)" in d.describe() and "variance of x is 0" in d.describe()


def test_reduced_fits_and_their_likelihood_ratio_tests(singular_fit):
    res = singular_fit
    before = res.params.copy()
    rf = res.reduced_fits(tol=TOL, m=2000, max_rounds=6)
    assert list(rf.fits) == ["(1 + x || g)", "(1 | g)"]
    pd.testing.assert_series_equal(res.params, before)  # never refitted in place
    assert rf.fits["(1 | g)"].model.vcp_names == ["g"] or \
        len(rf.fits["(1 | g)"].model.vcp_names) == 1
    t = rf.tests
    # Dropping the covariance only: an interior parameter, chi2(1).
    assert t.loc["(1 + x || g)", "df"] == 1
    assert t.loc["(1 + x || g)", "null"] == "chi2(1)"
    # Dropping the slope's variance and its covariance: the 50:50 mixture (Self and Liang).
    assert t.loc["(1 | g)", "df"] == 2
    assert rf.lrtests["(1 | g)"].mixture == ((0.5, 1), (0.5, 2))
    for label in t.index:
        assert 0.0 <= t.loc[label, "pvalue"] <= 1.0
        assert np.isfinite(t.loc[label, "statistic_mcse"])
    # With the slope variance truly 0 the fit barely beats the intercept-only model: the
    # statistic is near 0 (a few of its MCSEs at most) and the test does not reject.
    st = t.loc["(1 | g)"]
    assert st["statistic"] <= 3.84 + 4 * st["statistic_mcse"]
    assert rf.direction is not None and "(1 | g)" in rf.summary()
