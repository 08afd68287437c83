"""Bad input must raise ValueError (TypeError where noted) naming the argument or column.

Every case checks the message with a regex for the offending argument (``endog``, ``exog``,
``weights``, ``offset``, ``exog_vc``, ``vc_formulas[...]``, ``m``, ``sampler``, ``family``,
``random_state``...) or column; no foreign exception (statsmodels' ``MissingDataError``,
patsy's ``PatsyError``) may reach the user.
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

import glmm_sm
from glmm_sm import MonteCarloGLMM

try:
    from patsy import PatsyError
except ImportError:  # pragma: no cover - another formula engine
    PatsyError = Exception

SAL_VC = {"F": "0 + C(Female)", "M": "0 + C(Male)"}
SAL_FORMULA = "Mate ~ 0 + Cross + x"


@pytest.fixture(scope="module")
def sal():
    df = glmm_sm.datasets.load("salamander")
    df["x"] = np.linspace(0.0, 1.0, len(df))  # a numeric covariate named "x"
    df["Mate"] = df["Mate"].astype(float)
    return df


@pytest.fixture(scope="module")
def arrays(sal):
    """(y, X, Z, ident) of the salamander model, for the array constructor."""
    model = MonteCarloGLMM.from_formula(SAL_FORMULA, SAL_VC, sal, family="bernoulli")
    return (np.asarray(model.endog, dtype=float), np.asarray(model.exog, dtype=float),
            model.exog_vc, np.asarray(model.ident))


@pytest.fixture(scope="module")
def model(sal):
    return MonteCarloGLMM.from_formula(SAL_FORMULA, SAL_VC, sal, family="bernoulli")


def build(arrays, y=None, X=None, Z=None, ident=None, **kw):
    y0, X0, Z0, ident0 = arrays
    kw.setdefault("family", "bernoulli")
    kw.setdefault("vcp_names", ["F", "M"])
    return MonteCarloGLMM(y0 if y is None else y, X0 if X is None else X,
                          Z0 if Z is None else Z, ident0 if ident is None else ident, **kw)


def with_value(df, column, row, value):
    out = df.copy()
    out[column] = out[column].astype(float)
    out.loc[row, column] = value
    return out


def from_formula(df, formula=SAL_FORMULA, vc=None, **kw):
    kw.setdefault("family", "bernoulli")
    return MonteCarloGLMM.from_formula(formula, SAL_VC if vc is None else vc, df, **kw)


def test_valid_inputs_build(arrays, sal):
    """Sanity: the unmodified data build, so every failure below is the bad value's."""
    build(arrays)
    from_formula(sal, missing="raise")


# ---------------------------------------------------------------- response

def test_array_inf_in_response(arrays):
    y = arrays[0].copy()
    y[4] = np.inf
    with pytest.raises(ValueError, match=r"endog"):
        build(arrays, y=y)


def test_array_nan_in_response(arrays):
    y = arrays[0].copy()
    y[4] = np.nan
    with pytest.raises(ValueError, match=r"endog"):
        build(arrays, y=y)


@pytest.mark.parametrize("missing", ["raise", "drop"])
def test_formula_inf_in_response(sal, missing):
    with pytest.raises(ValueError, match=r"endog|Mate"):
        from_formula(with_value(sal, "Mate", 7, np.inf), missing=missing)


def test_formula_nan_in_response_missing_raise(sal):
    with pytest.raises(ValueError, match=r"endog|Mate"):
        from_formula(with_value(sal, "Mate", 7, np.nan), missing="raise")


def test_formula_nan_in_response_missing_drop_drops_the_row(sal):
    with pytest.warns(UserWarning, match="1 of 360 rows"):
        model = from_formula(with_value(sal, "Mate", 7, np.nan), missing="drop")
    assert model.nobs == 359 and model.n_dropped == 1


def test_bernoulli_response_not_0_1(sal, arrays):
    with pytest.raises(ValueError, match=r"endog.*0 or 1.*\b2\b"):
        from_formula(with_value(sal, "Mate", 3, 2.0))
    y = arrays[0].copy()
    y[3] = 0.5
    with pytest.raises(ValueError, match=r"endog.*0 or 1"):
        build(arrays, y=y)


@pytest.mark.parametrize("bad, pattern", [(-1.0, r"endog.*non-negative"),
                                          (2.5, r"endog.*integer")])
def test_poisson_counts(arrays, bad, pattern):
    y = arrays[0] * 3.0
    y[10] = bad
    with pytest.raises(ValueError, match=pattern):
        build(arrays, y=y, family=sm.families.Poisson())
    with pytest.raises(ValueError, match=pattern):
        build(arrays, y=y, family="poisson")


def test_binomial_two_column_response(arrays):
    y = arrays[0]
    Y = np.column_stack([2.0 * y, 3.0 - y])  # (successes, failures)
    build(arrays, y=Y, family="binomial")  # valid
    bad = Y.copy()
    bad[0] = [5.0, -2.0]  # successes above trials = 3, i.e. negative failures
    with pytest.raises(ValueError, match=r"endog.*failures"):
        build(arrays, y=bad, family="binomial")
    bad = Y.copy()
    bad[0, 1] = -1.0
    with pytest.raises(ValueError, match=r"endog.*failures"):
        build(arrays, y=bad, family=sm.families.Binomial())
    bad = Y.copy()
    bad[0, 0] = -1.0
    with pytest.raises(ValueError, match=r"endog.*successes"):
        build(arrays, y=bad, family="binomial")
    bad = Y.copy()
    bad[0, 0] = 1.5
    with pytest.raises(ValueError, match=r"endog.*successes.*integer"):
        build(arrays, y=bad, family="binomial")
    with pytest.raises(ValueError, match=r"endog.*two-column.*binomial"):
        build(arrays, y=Y, family="poisson")


def test_binomial_nan_in_two_column_response(arrays):
    y = arrays[0]
    Y = np.column_stack([2.0 * y, 3.0 - y])
    Y[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"endog"):
        build(arrays, y=Y, family="binomial")


# ---------------------------------------------------------------- covariates

def test_formula_nan_in_covariate_missing_raise(sal):
    with pytest.raises(ValueError, match=r"\bx\b"):
        from_formula(with_value(sal, "x", 5, np.nan), missing="raise")


@pytest.mark.parametrize("missing", ["raise", "drop"])
def test_formula_inf_in_covariate(sal, missing):
    with pytest.raises(ValueError, match=r"\bx\b"):
        from_formula(with_value(sal, "x", 5, np.inf), missing=missing)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_array_bad_value_in_exog(arrays, bad):
    X = arrays[1].copy()
    X[5, 4] = bad  # column 4 is "x"
    with pytest.raises(ValueError, match=r"exog.*\bx\b|exog.*column"):
        build(arrays, X=X)


# ---------------------------------------------------------------- weights and offset

@pytest.mark.parametrize("name", ["weights", "offset"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_array_weights_offset_not_finite(arrays, name, bad):
    vec = np.ones(360) if name == "weights" else np.zeros(360)
    vec[11] = bad
    with pytest.raises(ValueError, match=rf"{name}.*(NaN|infinite)"):
        build(arrays, **{name: vec})


@pytest.mark.parametrize("name", ["weights", "offset"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_formula_weights_offset_not_finite(sal, name, bad):
    df = sal.copy()
    df["vec"] = 1.0
    df.loc[11, "vec"] = bad
    with pytest.raises(ValueError, match=rf"{name}.*(NaN|infinite)"):
        from_formula(df, missing="raise", **{name: "vec"})
    with pytest.raises(ValueError, match=rf"{name}.*(NaN|infinite)"):
        from_formula(df, missing="raise", **{name: df["vec"].to_numpy()})


def test_negative_weights(arrays):
    w = np.ones(360)
    w[0] = -1.0
    with pytest.raises(ValueError, match=r"weights.*non-negative"):
        build(arrays, weights=w)


@pytest.mark.parametrize("name", ["weights", "offset"])
@pytest.mark.parametrize("length", [359, 361])
def test_weights_offset_length(arrays, sal, name, length):
    with pytest.raises(ValueError, match=rf"{name}.*length 360"):
        build(arrays, **{name: np.ones(length)})
    with pytest.raises(ValueError, match=rf"{name}.*length 360"):
        from_formula(sal, **{name: np.ones(length)})


def test_unknown_weights_column(sal):
    with pytest.raises(ValueError, match=r"weights.*'nope'"):
        from_formula(sal, weights="nope")


# ---------------------------------------------------------------- random-effects design

def test_exog_vc_rows_mismatch(arrays):
    Z = arrays[2]
    with pytest.raises(ValueError, match=r"exog_vc.*359.*360"):
        build(arrays, Z=Z[:359])


def test_ident_length_mismatch(arrays):
    with pytest.raises(ValueError, match=r"ident"):
        build(arrays, ident=arrays[3][:-1])


@pytest.mark.parametrize("formula", ["0", "", "   "])
def test_empty_vc_formula(sal, formula):
    with pytest.raises(ValueError, match=r"vc_formulas\['F'\]"):
        from_formula(sal, vc={"F": formula, "M": "0 + C(Male)"})


def test_all_nan_vc_column(sal):
    df = sal.copy()
    df["g"] = np.nan
    with pytest.raises(ValueError, match=r"vc_formulas\['G'\].*g"):
        from_formula(df, vc={"F": "0 + C(Female)", "G": "0 + g"}, missing="raise")


def test_unknown_vc_column(sal):
    with pytest.raises(ValueError, match=r"vc_formulas\['F'\].*Nope"):
        from_formula(sal, vc={"F": "0 + C(Nope)"})


def test_duplicate_component_names(sal, arrays):
    with pytest.raises(ValueError, match=r"vcp_names.*duplicate.*'F'"):
        from_formula(sal, vc=["0 + C(Female)", "0 + C(Male)"], varcomps_names=["F", "F"])
    with pytest.raises(ValueError, match=r"vcp_names.*duplicate"):
        build(arrays, vcp_names=["F", "F"])


def test_component_names_and_numbers_must_match(sal, arrays):
    vc = ["0 + C(Female)", "0 + C(Male)"]
    with pytest.raises(ValueError, match=r"varcomps_names"):
        from_formula(sal, vc=vc, varcomps_names=["F", "M", "X"])
    with pytest.raises(ValueError, match=r"varcomps_equal"):
        from_formula(sal, vc=vc, varcomps_equal=[1, 3])  # component 2 missing
    with pytest.raises(ValueError, match=r"varcomps_equal"):
        from_formula(sal, vc=vc, varcomps_equal=[1])
    with pytest.raises(ValueError, match=r"varcomps_equal.*varcomps_names|list of formulas"):
        from_formula(sal, vc=SAL_VC, varcomps_names=["F", "M"])
    with pytest.raises(ValueError, match=r"vcp_names|ident"):
        build(arrays, vcp_names=["F"])  # ident refers to component 1
    with pytest.raises(ValueError, match=r"vc_formulas.*empty"):
        from_formula(sal, vc={})


# ---------------------------------------------------------------- family

def test_unsupported_family(sal):
    with pytest.raises(ValueError, match=r"family.*Gaussian"):
        from_formula(sal, family=sm.families.Gaussian())
    with pytest.raises(ValueError, match=r"family.*'gamma'"):
        from_formula(sal, family="gamma")


def test_non_canonical_link(sal):
    with pytest.raises(ValueError, match=r"family.*link.*Probit"):
        from_formula(sal, family=sm.families.Binomial(link=sm.families.links.Probit()))
    with pytest.raises(ValueError, match=r"family.*link.*Identity"):
        from_formula(sal, family=sm.families.Poisson(link=sm.families.links.Identity()))


# ---------------------------------------------------------------- sample_draws

@pytest.mark.parametrize("m", [0, -1, -100])
def test_m_below_one(model, m):
    with pytest.raises(ValueError, match=rf"\bm\b.*at least 1.*{m}"):
        model.sample_draws(m, random_state=1)


@pytest.mark.parametrize("m", [2.5, "10", None, True])
def test_m_not_an_integer(model, m):
    with pytest.raises(ValueError, match=r"\bm\b.*positive integer"):
        model.sample_draws(m, random_state=1)


def test_m_integer_valued_float_is_accepted(model):
    assert model.sample_draws(10.0, random_state=1).m == 10


def test_unknown_sampler(model):
    with pytest.raises(ValueError, match=r"sampler.*'metropolis'"):
        model.sample_draws(10, random_state=1, sampler="metropolis")


@pytest.mark.parametrize("state", ["seed", 1.5, [1, 2]])
def test_random_state_wrong_type(model, state):
    with pytest.raises(TypeError, match=r"random_state"):
        model.sample_draws(10, random_state=state)


def test_random_state_negative(model):
    with pytest.raises(ValueError, match=r"random_state.*non-negative"):
        model.sample_draws(10, random_state=-1)


def test_unknown_kernel_and_bad_n_jobs(model):
    with pytest.raises(ValueError, match=r"kernel.*'cuda'"):
        model.sample_draws(10, random_state=1, kernel="cuda")
    with pytest.raises(ValueError, match=r"n_jobs.*at least 1"):
        model.sample_draws(10, random_state=1, n_jobs=0)
    with pytest.raises(ValueError, match=r"chunk_size.*at least 1"):
        model.sample_draws(10, random_state=1, chunk_size=-5)


def test_chunk_size_zero(model):
    with pytest.raises(ValueError, match=r"chunk_size.*at least 1"):
        model.sample_draws(10, random_state=1, chunk_size=0)


def test_set_draws_shapes(model):
    q = model.exog_vc.shape[1]
    with pytest.raises(ValueError, match=r"\bu\b.*shape"):
        model.set_draws(np.zeros((5, q - 1)), np.zeros(5))
    with pytest.raises(ValueError, match=r"log_density.*shape"):
        model.set_draws(np.zeros((5, q)), np.zeros(4))
    bad = np.zeros(5)
    bad[2] = np.nan
    with pytest.raises(ValueError, match=r"log_density.*finite"):
        model.set_draws(np.zeros((5, q)), bad)


def test_params_length(model):
    model.sample_draws(10, random_state=1)
    with pytest.raises(ValueError, match=r"params.*length"):
        model.loglike(np.zeros(3))
