"""Property-based tests (hypothesis): family functions and random small designs.

Part 1 checks the family functions of :mod:`glmm_sm.spec.families` against ``mpmath`` at 40
significant digits over the whole range of linear predictors the kernels see,
``eta`` in [-700, 700].  Each tolerance is an error bound from the floating-point operations
the function performs, in units of the machine epsilon ``EPS``, with numpy's ``exp`` allowed
``EXP_ULP`` ulps (its AVX-512 path is documented at < 2.52 ulp; glibc's is < 1):

* Poisson ``exp(eta)``: the ``exp`` error, plus rounding: ``EXP_ULP + 1``;
* logit mean ``1 / (1 + exp(-eta))``: ``exp``, one addition, one division, times ``N``: the
  error of ``t = exp(-eta)`` enters scaled by ``t / (1 + t) <= 1``, so ``EXP_ULP + 3``;
* logit cumulant ``N log1p(exp(eta))`` (``numpy.logaddexp``): ``exp``, ``log1p``, the
  addition of ``max(eta, 0)``, times ``N``: ``EXP_ULP + 3``;
* logit variance ``N t / (1 + t)^2`` with ``t = exp(-|eta|)``: ``t`` appears three times
  (``3 EXP_ULP``) plus an addition, a square, a division and the product by ``N``:
  ``3 EXP_ULP + 4``;
* ``log_constant``: scipy's ``gammaln`` (cephes ``lgam``) has at most 5.4e-16 absolute error
  on [0, 3] and 3.5e-16 relative error above, i.e. < 2.5 EPS times ``|lgamma| + 1``; the
  differences add one rounding each, relative to the sum of the magnitudes.

Poisson linear predictors above ``POISSON_ETA_MAX`` are clipped there by design, so above it
the functions must return exactly ``exp(POISSON_ETA_MAX)``, finite.

Part 2 builds random small GLMMs (1-3 variance components, crossed or nested, 20-80
observations, Bernoulli, binomial with trials, Poisson) as DataFrames and fits them with
``from_formula(...).fit(m=500, ...)``: the fit returns finite fixed effects and finite,
non-negative variances, or raises one of the documented ``ValueError`` messages (a factor
with a single level).  A ``ConvergenceWarning`` is allowed (small designs often put a
variance at zero); the RuntimeWarnings that pyproject turns into errors are not.

Every ``settings`` uses ``database=None`` and ``derandomize=True``: nothing is written into
the repository, and the examples are the same on every run.
"""

from __future__ import annotations

import re
import warnings

import mpmath as mp
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from glmm_sm import MonteCarloGLMM
from glmm_sm.spec.families import BERNOULLI, BINOMIAL, POISSON, POISSON_ETA_MAX

EPS = np.finfo(np.float64).eps
EXP_ULP = 3
TOL = {
    "poisson": (EXP_ULP + 1) * EPS,
    "mean": (EXP_ULP + 3) * EPS,
    "cumulant": (EXP_ULP + 3) * EPS,
    "variance": (3 * EXP_ULP + 4) * EPS,
}
LGAMMA_ERR = 2.5 * EPS  # per gammaln call, relative to |lgamma| + 1 (cephes lgam tables)

FAMILY_SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None)

etas = st.floats(min_value=-700.0, max_value=700.0, allow_nan=False, allow_infinity=False)
trials = st.integers(min_value=1, max_value=10**6)


def _logit_reference(eta):
    """Cumulant, mean and variance of the Bernoulli family at ``eta``, to 40 digits."""
    with mp.workdps(40):
        e = mp.mpf(float(eta))  # exact: the double itself
        return (mp.log1p(mp.exp(e)), 1 / (1 + mp.exp(-e)), mp.exp(e) / (1 + mp.exp(e)) ** 2)


def _assert_rel(value, ref, tol, what):
    """``|value - ref| <= tol |ref|`` with ``ref`` an mpmath number (never 0 here)."""
    value = float(value)
    assert np.isfinite(value), f"{what} is not finite: {value!r}"
    with mp.workdps(40):
        err = abs(mp.mpf(value) - ref) / abs(ref)
    assert err <= tol, f"{what}: relative error {float(err) / EPS:.2f} eps > {tol / EPS:.0f} eps"


# ---------------------------------------------------------------- family functions

@FAMILY_SETTINGS
@given(eta=etas, ntrials=trials)
def test_logit_family_matches_high_precision(eta, ntrials):
    ref = _logit_reference(eta)
    N = float(ntrials)
    with np.errstate(all="raise"):
        got = (BINOMIAL.cumulant(eta, N), BINOMIAL.mean(eta, N), BINOMIAL.variance(eta, N))
        bern = (BERNOULLI.cumulant(eta), BERNOULLI.mean(eta), BERNOULLI.variance(eta))
    for name, value, r in zip(("cumulant", "mean", "variance"), got, ref, strict=True):
        _assert_rel(value, N * r, TOL[name], f"binomial {name}({eta!r}, N={ntrials})")
    for name, value, r in zip(("cumulant", "mean", "variance"), bern, ref, strict=True):
        _assert_rel(value, r, TOL[name], f"bernoulli {name}({eta!r})")


@FAMILY_SETTINGS
@given(eta=etas)
def test_logit_family_bounds(eta):
    """0 < mean <= 1, 0 < variance <= 1/4 and cumulant >= max(eta, 0), up to rounding.

    The variance may exceed 1/4 by its rounding error near ``eta = 0`` (e.g. 0.25 + 1 ulp at
    ``eta = 1.9e-10``), so that bound carries the variance tolerance.
    """
    with np.errstate(all="raise"):
        c, mu, v = BERNOULLI.cumulant(eta), BERNOULLI.mean(eta), BERNOULLI.variance(eta)
    assert 0.0 < mu <= 1.0 and 0.0 < v <= 0.25 * (1.0 + TOL["variance"])
    assert c >= max(eta, 0.0) and c > 0.0


@FAMILY_SETTINGS
@given(eta=st.floats(min_value=-700.0, max_value=POISSON_ETA_MAX, allow_nan=False))
def test_poisson_family_matches_high_precision(eta):
    with mp.workdps(40):
        ref = mp.exp(mp.mpf(float(eta)))
    with np.errstate(all="raise"):
        got = (POISSON.cumulant(eta), POISSON.mean(eta), POISSON.variance(eta, 7.0))
    for name, value in zip(("cumulant", "mean", "variance"), got, strict=True):
        _assert_rel(value, ref, TOL["poisson"], f"poisson {name}({eta!r})")


@FAMILY_SETTINGS
@given(eta=st.one_of(st.floats(min_value=POISSON_ETA_MAX, max_value=700.0),
                     st.floats(min_value=POISSON_ETA_MAX, allow_nan=False)))
def test_poisson_family_is_clipped_above_the_cap(eta):
    """Above ``POISSON_ETA_MAX`` (inf included) every function is ``exp(cap)``, finite."""
    cap = np.exp(POISSON_ETA_MAX)
    with np.errstate(all="raise"):
        got = (POISSON.cumulant(eta), POISSON.mean(eta), POISSON.variance(eta))
    assert np.isfinite(cap)
    assert all(float(g) == cap for g in got)


@FAMILY_SETTINGS
@given(etas=st.lists(etas, min_size=1, max_size=20),
       ntrials=st.lists(trials, min_size=20, max_size=20))
def test_family_functions_are_elementwise(etas, ntrials):
    """The vectorized call gives, element by element, the scalar results."""
    eta = np.array(etas)
    N = np.array(ntrials[: len(etas)], dtype=float)
    for fam in (BINOMIAL, POISSON):
        for fn in (fam.cumulant, fam.mean, fam.variance):
            with np.errstate(all="raise"):
                vec = fn(eta, N)
            assert vec.shape == eta.shape and np.all(np.isfinite(vec))
            np.testing.assert_array_equal(vec, [fn(e, n) for e, n in zip(eta, N, strict=True)])


@FAMILY_SETTINGS
@given(data=st.data())
def test_binomial_log_constant_matches_high_precision(data):
    from scipy.special import gammaln

    N = data.draw(st.one_of(st.integers(0, 30), st.integers(0, 10**6)), label="N")
    y = data.draw(st.integers(0, N), label="y")
    got = BINOMIAL.log_constant(float(y), float(N))
    with mp.workdps(40):
        ref = mp.log(mp.binomial(N, y))
        err = float(abs(mp.mpf(got) - ref))
    scale = sum(abs(gammaln(k + 1.0)) + 1.0 for k in (N, y, N - y))
    assert err <= (LGAMMA_ERR + 2 * EPS) * scale, f"log C({N}, {y}): error {err:.3g}"


@FAMILY_SETTINGS
@given(y=st.integers(0, 10**7))
def test_poisson_log_constant_matches_high_precision(y):
    from scipy.special import gammaln

    got = POISSON.log_constant(float(y))
    with mp.workdps(40):
        err = float(abs(mp.mpf(got) + mp.loggamma(y + 1)))
    assert err <= LGAMMA_ERR * (abs(gammaln(y + 1.0)) + 1.0), f"-log {y}!: error {err:.3g}"


# ---------------------------------------------------------------- random small designs

#: What a random small design may legitimately be refused for (documented ValueErrors).
DOCUMENTED = re.compile(r"single level|rank deficient")

FAMILIES = [("bernoulli", "bernoulli"), ("bernoulli", sm.families.Binomial()),
            ("binomial", "binomial"), ("poisson", "poisson"),
            ("poisson", sm.families.Poisson())]


def simulate_design(seed, n, kind, levels, nested, scale):
    """``(formula, vc_formulas, data)`` of a small simulated GLMM.

    Parameters
    ----------
    seed : int
        Seeds the covariate, random effects and response.
    n : int
        Number of observations.
    kind : {"bernoulli", "binomial", "poisson"}
        Response; binomial has 1-5 trials per row, written ``s + f ~ x``.
    levels : sequence of int
        Levels of the factor of each variance component ``V0, V1, ...``.
    nested : sequence of bool
        For each component after the first, whether its factor is nested in the previous
        one (levels are sub-levels of that factor's) or crossed with it.
    scale : float
        Standard deviation of every random effect.
    """
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x": rng.normal(size=n)})
    eta = -0.3 + 0.5 * df["x"].to_numpy()
    vc, prev = {}, None
    for t, (L, nest) in enumerate(zip(levels, [False, *nested], strict=True)):
        g = rng.integers(L, size=n).astype(str)
        if nest:
            g = np.char.add(np.char.add(prev, "/"), g)
        codes, uniq = pd.factorize(g)
        eta = eta + rng.normal(scale=scale, size=len(uniq))[codes]
        df[f"g{t}"] = g
        vc[f"V{t}"] = f"0 + C(g{t})"
        prev = g
    p = 1.0 / (1.0 + np.exp(-eta))
    if kind == "poisson":
        df["y"] = rng.poisson(np.exp(eta))
    elif kind == "bernoulli":
        df["y"] = rng.binomial(1, p)
    else:
        trials = rng.integers(1, 6, size=n)
        df["s"] = rng.binomial(trials, p)
        df["f"] = trials - df["s"]
        return "s + f ~ x", vc, df
    return "y ~ x", vc, df


@st.composite
def small_designs(draw):
    """``(formula, vc_formulas, data, family, seed)`` for a random small GLMM.

    1-3 components with 1-6 levels each, every component after the first crossed with or
    nested in the previous one, 20-80 rows (see :func:`simulate_design`).
    """
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    n = draw(st.integers(20, 80), label="n")
    kind, family = draw(st.sampled_from(FAMILIES), label="family")
    # One level (a documented refusal when crossed) in about one draw of six.
    levels = draw(st.lists(st.sampled_from([2, 3, 4, 5, 6, 1]), min_size=1, max_size=3),
                  label="levels")
    nested = [draw(st.booleans(), label=f"nested{t}") for t in range(1, len(levels))]
    scale = draw(st.sampled_from([0.0, 0.5, 1.5]), label="sd")
    formula, vc, df = simulate_design(seed, n, kind, levels, nested, scale)
    return formula, vc, df, family, seed


@pytest.mark.slow
@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(design=small_designs())
def test_random_small_design_fits_or_is_refused_clearly(design):
    formula, vc, df, family, seed = design
    try:
        model = MonteCarloGLMM.from_formula(formula, vc, df, family=family)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = model.fit(m=500, random_state=seed, disp=False, time_budget=5)
    except (ValueError, TypeError) as exc:
        assert DOCUMENTED.search(str(exc)), f"undocumented error: {exc}"
        event("refused: " + DOCUMENTED.search(str(exc)).group())
        return
    params = np.asarray(res.params)
    beta, nu = params[: model.k_fe], params[model.k_fe :]
    event("converged" if res.converged else "not converged")
    event(f"{int(np.sum(nu < 1e-6))} variance(s) at the boundary (< 1e-6)")
    assert len(nu) == len(vc)
    assert np.all(np.isfinite(beta)), f"fixed effects not finite: {beta}"
    assert np.all(np.isfinite(nu)) and np.all(nu >= 0), f"variances: {nu}"
    assert list(res.params.index) == model.exog_names + list(vc)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(design=small_designs())
def test_random_small_design_blocks_partition_the_data(design):
    """The blocks split the rows and the used random effects, and no row loads outside its
    block; every block holds a level of every component, and a purely nested design has one
    block per level of its top factor."""
    formula, vc, df, family, _ = design
    try:
        model = MonteCarloGLMM.from_formula(formula, vc, df, family=family)
    except ValueError as exc:
        assert DOCUMENTED.search(str(exc)), f"undocumented error: {exc}"
        return
    blocks = model.blocks
    obs = np.concatenate([b.obs for b in blocks])
    cols = np.concatenate([b.columns for b in blocks])
    np.testing.assert_array_equal(np.sort(obs), np.arange(len(df)))
    used = np.flatnonzero(np.diff(model.exog_vc.tocsc().indptr) > 0)
    np.testing.assert_array_equal(np.sort(cols), used)
    counts = sum(b.q_per_component for b in blocks)
    np.testing.assert_array_equal(counts, np.bincount(model.ident[used], minlength=len(vc)))
    row_block = np.empty(len(df), dtype=int)
    col_block = np.full(model.exog_vc.shape[1], -1)
    for k, b in enumerate(blocks):
        row_block[b.obs], col_block[b.columns] = k, k
        assert np.all(b.q_per_component >= 1)
    rows, cols = model.exog_vc.nonzero()
    np.testing.assert_array_equal(row_block[rows], col_block[cols])
    nested = all("/" in str(df[f"g{t}"].iloc[0]) for t in range(1, len(vc)))
    if nested:
        assert len(blocks) == df["g0"].nunique()


@settings(max_examples=6, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(design=small_designs())
def test_random_small_design_same_seed_same_fit(design):
    """``random_state`` is the only source of randomness: the same seed, the same fit."""
    formula, vc, df, family, seed = design
    try:
        model = MonteCarloGLMM.from_formula(formula, vc, df, family=family)
    except ValueError:
        return
    fits = []
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits.append(model.fit(m=200, random_state=seed, disp=False, max_rounds=2,
                                  time_budget=5).params)
    np.testing.assert_array_equal(fits[0], fits[1])
