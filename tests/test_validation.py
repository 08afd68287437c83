"""Bad input must raise ValueError (TypeError where noted) naming the argument or column.

Every case checks the message with a regex for the offending argument (``endog``, ``exog``,
``weights``, ``offset``, ``exog_vc``, ``vc_formulas[...]``, ``m``, ``sampler``, ``family``,
``random_state``...) or column; no foreign exception (statsmodels' ``MissingDataError``,
patsy's ``PatsyError``) may reach the user.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
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
    with pytest.raises(ValueError, match=r"endog.*0/1 or successes out of trials.*weights="):
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


def test_unsupported_link(sal):
    with pytest.raises(ValueError, match=r"family.*Log link.*Probit"):
        from_formula(sal, family=sm.families.Binomial(link=sm.families.links.Log()))
    with pytest.raises(ValueError, match=r"family.*Identity link is not supported"):
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


# ---------------------------------------------------------------- missing="drop"

@pytest.mark.parametrize("column", ["Mate", "x"])
def test_formula_nan_missing_raise_names_the_column(sal, column):
    df = with_value(sal, column, 5, np.nan)
    df.loc[9, column] = np.nan
    with pytest.raises(ValueError, match=rf"formula 'Mate ~ 0 \+ Cross \+ x': missing values "
                                         rf"\(NaN\) in column\(s\) '{column}' \(2 rows\); use "
                                         r"missing='drop'"):
        from_formula(df, missing="raise")


def test_formula_nan_in_covariate_missing_drop_drops_the_row(sal):
    with pytest.warns(UserWarning, match="1 of 360 rows have missing values"):
        model = from_formula(with_value(sal, "x", 5, np.nan), missing="drop")
    assert model.nobs == 359 and model.n_dropped == 1


@pytest.mark.parametrize("name", ["weights", "offset"])
def test_formula_nan_in_weights_offset_missing_drop(sal, name):
    df = sal.copy()
    df["vec"] = 1.0
    df.loc[[11, 12], "vec"] = np.nan
    for value in ("vec", df["vec"].to_numpy()):
        with pytest.warns(UserWarning, match="2 of 360 rows have missing values"):
            model = from_formula(df, missing="drop", **{name: value})
        assert model.nobs == 358 and np.all(np.isfinite(getattr(model, name)))


@pytest.mark.parametrize("name", ["weights", "offset"])
def test_formula_inf_in_weights_offset_missing_drop_raises(sal, name):
    """inf is not a missing value: it is reported, as for the response and covariates."""
    df = sal.copy()
    df["vec"] = 1.0
    df.loc[11, "vec"] = np.inf
    with pytest.raises(ValueError, match=rf"{name}.*1 NaN or infinite"):
        from_formula(df, missing="drop", **{name: "vec"})


@pytest.mark.parametrize("where", ["endog", "exog", "exog_vc", "exog_vc_sparse", "weights",
                                   "offset"])
def test_array_missing_drop_drops_the_rows(arrays, where):
    y, X, Z, ident = (a.copy() for a in arrays)
    kw = {"weights": np.ones(360), "offset": np.zeros(360)}
    Zd = Z.toarray()
    if where == "endog":
        y[[2, 7]] = np.nan
    elif where == "exog":
        X[2, 4] = X[7, 0] = np.nan
    elif where.startswith("exog_vc"):
        col = Zd[2].nonzero()[0][0], Zd[7].nonzero()[0][0]
        Zd[2, col[0]] = Zd[7, col[1]] = np.nan
    else:
        kw[where][[2, 7]] = np.nan
    Zin = sp.csr_matrix(Zd) if where == "exog_vc_sparse" else Zd
    with pytest.warns(UserWarning, match="2 of 360 rows have missing values"):
        model = build(arrays, y=y, X=X, Z=Zin, missing="drop", **kw)
    assert model.nobs == 358 and model.n_dropped == 2
    assert model.exog_vc.shape[0] == model.weights.shape[0] == model.offset.shape[0] == 358
    np.testing.assert_array_equal(model.exog, np.delete(arrays[1], [2, 7], axis=0))


def test_array_missing_drop_keeps_pandas_row_labels(arrays, model):
    y = pd.Series(arrays[0], name="Mate")
    y[4] = np.nan
    X = pd.DataFrame(arrays[1], columns=model.exog_names)
    with pytest.warns(UserWarning, match="1 of 360"):
        dropped = build(arrays, y=y, X=X, missing="drop")
    assert 4 not in dropped.data.row_labels and dropped.exog_names == model.exog_names


def test_array_missing_drop_inf_still_raises(arrays):
    y = arrays[0].copy()
    y[4] = np.inf
    with pytest.raises(ValueError, match=r"endog.*NaN or infinite"):
        build(arrays, y=y, missing="drop")


def test_unknown_missing_option(arrays, sal):
    with pytest.raises(ValueError, match=r"missing.*'skip'"):
        build(arrays, missing="skip")
    with pytest.raises(ValueError, match=r"missing.*'skip'"):
        from_formula(sal, missing="skip")


# ---------------------------------------------------------------- more response checks

def test_negative_weights_message_shows_count_and_values(sal):
    df = sal.copy()
    df["w"] = 1.0
    df.loc[[0, 1], "w"] = [-2.0, -0.5]
    with pytest.raises(ValueError, match=r"weights must be non-negative; found 2 negative "
                                         r"value\(s\): -2, -0.5"):
        from_formula(df, weights="w")


def test_binomial_formula_two_column_response(sal):
    df = sal.copy()
    df["s"] = 2.0 * df["Mate"]
    df["f"] = 3.0 - df["Mate"]
    fml = "s + f ~ 0 + Cross"
    assert from_formula(df, fml, family="binomial").family_kind.name == "binomial"
    with pytest.raises(ValueError, match=r"endog: failures.*non-negative; found -1"):
        from_formula(with_value(df, "f", 0, -1.0), fml, family="binomial")
    with pytest.raises(ValueError, match=r"endog: successes.*integers; found 1.5"):
        from_formula(with_value(df, "s", 0, 1.5), fml, family="binomial")
    with pytest.raises(ValueError, match=r"endog: failures.*integers; found 0.25"):
        from_formula(with_value(df, "f", 0, 0.25), fml, family="binomial")


@pytest.mark.parametrize("lhs, levels", [("yn", r"\['no', 'yes'\]"),
                                         ("I(Mate > 0)", r"\['False', 'True'\]"),
                                         ("C(Mate)", r"\['0.0', '1.0'\]")])
def test_categorical_response_is_refused(sal, lhs, levels):
    """A str/bool response becomes indicator columns; fitted as (successes, failures) the
    first level would silently be the success."""
    df = sal.copy()
    df["yn"] = np.where(df["Mate"] > 0, "yes", "no")
    with pytest.raises(ValueError, match=rf"endog: the response .* is categorical \(levels "
                                         rf"{levels}\).*0/1"):
        from_formula(df, f"{lhs} ~ 0 + Cross")


def test_non_numeric_inputs(sal, arrays):
    df = sal.copy()
    df["w"] = "a"
    with pytest.raises(ValueError, match=r"weights \(column 'w'\) must be numeric"):
        from_formula(df, weights="w")
    with pytest.raises(ValueError, match=r"offset must be numeric"):
        build(arrays, offset=np.array(["a"] * 360))
    with pytest.raises(ValueError, match=r"endog must be numeric"):
        build(arrays, y=np.array(["a"] * 360))


# ---------------------------------------------------------------- rank-deficient exog

def test_rank_deficient_exog_names_the_aliased_column(sal):
    df = sal.copy()
    df["x2"] = 2.0 * df["x"]
    with pytest.raises(ValueError, match=r"exog is rank deficient: column 'x2' is a linear "
                                         r"combination of 'x' \(x2 = 2 \* x\)"):
        from_formula(df, "Mate ~ 0 + Cross + x + x2")
    df["x3"] = df["x"] + 1.0
    with pytest.raises(ValueError, match=r"column 'x3' is a linear combination of "
                                         r"'Intercept', 'x' \(x3 = 1 \* Intercept \+ 1 \* x\)"):
        from_formula(df, "Mate ~ 1 + x + x3")


def test_rank_deficient_exog_several_columns_and_zero_column(arrays):
    X = arrays[1]
    X2 = np.column_stack([X, X[:, 0] + 3.0 * X[:, 4], X[:, 1]])
    with pytest.raises(ValueError, match=r"column 'x6' is a linear combination of 'x1', "
                                         r"'x5' \(x6 = 1 \* x1 \+ 3 \* x5\); column 'x7' is "
                                         r"a linear combination of 'x2'"):
        build(arrays, X=X2)
    X3 = pd.DataFrame(np.column_stack([X, np.zeros(360)]), columns=list("abcdez"))
    with pytest.raises(ValueError, match=r"column 'z' is zero for every observation"):
        build(arrays, X=X3)


def test_more_columns_than_observations(arrays):
    y, X, Z, ident = arrays
    with pytest.raises(ValueError, match=r"exog is rank deficient: 5 fixed-effect columns but "
                                         r"only 4 observations"):
        build(arrays, y=y[:4], X=X[:4], Z=Z[:4])


def test_full_rank_check_ignores_units(arrays):
    """Columns in wildly different units are not aliased (the check is scale free)."""
    X = arrays[1].copy()
    X[:, 4] *= 1e-9
    X[:, 0] *= 1e9
    assert build(arrays, X=X).df_model == 4  # 5 columns, none a constant (k_constant = 1)


# ---------------------------------------------------------------- single-level factors

def test_single_level_factor_in_vc_formula(sal):
    df = sal.copy()
    df["g"] = "only"
    with pytest.raises(ValueError, match=r"vc_formulas\['G'\]: '0 \+ C\(g\)' gives a single "
                                         r"random effect.*single level"):
        from_formula(df, vc={"F": "0 + C(Female)", "G": "0 + C(g)"})
    with pytest.raises(ValueError, match=r"vc_formulas\['G'\].*single level"):
        from_formula(df, vc=["0 + C(Female)", "0 + C(g)"], varcomps_names=["F", "G"])


def test_single_level_factor_after_dropping_rows(sal):
    """The factor has two levels, but one only on a row dropped for a missing response."""
    df = with_value(sal, "Mate", 0, np.nan)
    df["g"] = np.where(np.arange(len(df)) == 0, "b", "a")
    with pytest.warns(UserWarning, match="1 of 360"), \
            pytest.raises(ValueError, match=r"vc_formulas\['G'\].*single level"):
        from_formula(df, vc={"F": "0 + C(Female)", "G": "0 + C(g)"})


def test_single_effect_component_in_arrays(arrays):
    y, X, Z, ident = arrays
    Z1 = sp.hstack([Z, sp.csr_matrix(np.ones((360, 1)))]).tocsr()
    with pytest.raises(ValueError, match=r"variance component 'G' has a single random "
                                         r"effect.*single level"):
        build(arrays, Z=Z1, ident=np.r_[ident, 2], vcp_names=["F", "M", "G"])


def test_components_with_the_same_design_warn(sal, arrays):
    """Only the sum of the two variances is identified: a warning (glmm's murder example is
    such a design, so it is not refused)."""
    df = sal.copy()
    df["sub"] = df["Female"].astype(str) + "/1"  # nested in Female, one sub-level each
    with pytest.warns(UserWarning, match=r"variance components 'F' and 'S' have the same "
                                         r"random-effects design.*sum of their variances"):
        from_formula(df, vc={"F": "0 + C(Female)", "M": "0 + C(Male)", "S": "0 + C(sub)"})
    df["b"] = (np.arange(len(df)) % 2).astype(str)
    df["w"] = (1 - np.arange(len(df)) % 2).astype(str)  # murder's black/white coding
    with pytest.warns(UserWarning, match=r"'B' and 'W' have the same random-effects design"):
        from_formula(df, vc={"F": "0 + C(Female)", "B": "0 + C(b)", "W": "0 + C(w)"})
    y, X, Z, ident = arrays
    Z2 = sp.hstack([Z, Z[:, ident == 1]]).tocsr()
    with pytest.warns(UserWarning, match=r"'M' and 'M2' have the same random-effects design"):
        build(arrays, Z=Z2, ident=np.r_[ident, np.full((ident == 1).sum(), 2)],
              vcp_names=["F", "M", "M2"])


def test_component_name_clashes_with_fixed_effect(sal):
    with pytest.raises(ValueError, match=r"vcp_names.*\['x'\].*fixed-effect"):
        from_formula(sal, vc={"x": "0 + C(Female)", "M": "0 + C(Male)"})


# ---------------------------------------------------------------- fit arguments

@pytest.mark.parametrize("kw, pattern", [
    ({"m": 0}, r"\bm\b.*integer >= 2; got 0"),
    ({"m": -10}, r"\bm\b.*integer >= 2; got -10"),
    ({"m": 2.5}, r"\bm\b.*integer >= 2; got 2.5"),
    ({"m": True}, r"\bm\b.*integer >= 2; got True"),
    ({"m": "many"}, r"\bm\b.*'auto' or a positive integer; got 'many'"),
    ({"max_m": 0}, r"max_m.*integer >= 1; got 0"),
    ({"max_m": -1}, r"max_m.*integer >= 1; got -1"),
    ({"max_m": 2.5}, r"max_m.*integer >= 1; got 2.5"),
    ({"target_ratio": 0}, r"target_ratio.*\(0, 10\); got 0"),
    ({"target_ratio": -0.1}, r"target_ratio.*\(0, 10\); got -0.1"),
    ({"target_ratio": 10}, r"target_ratio.*\(0, 10\); got 10"),
    ({"target_ratio": np.nan}, r"target_ratio.*\(0, 10\); got nan"),
    ({"sampler": "metropolis"}, r"sampler.*'metropolis'"),
    ({"random_state": -1}, r"random_state.*non-negative"),
    ({"max_rounds": 0}, r"max_rounds must be an integer >= 1"),
    ({"time_budget": 0}, r"time_budget.*positive"),
])
def test_fit_argument_out_of_range(model, kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        model.fit(disp=False, **({"random_state": 1} | kw))


@pytest.mark.parametrize("state", ["seed", 1.5, np.float64(2.0), [1, 2], True])
def test_fit_random_state_wrong_type(model, state):
    with pytest.raises(TypeError, match=r"random_state must be None, an int, a SeedSequence "
                                        r"or a Generator; got"):
        model.fit(m=10, random_state=state, disp=False)


def test_fit_unknown_keyword(model):
    with pytest.raises(TypeError, match=r"fit\(\) got unknown argument\(s\) \['nsim'\]"):
        model.fit(nsim=10, disp=False)


@pytest.mark.parametrize("kw", [{"m": None}, {"target_ratio": "0.1"}, {"target_ratio": None},
                                {"max_m": "big"}])
def test_fit_argument_wrong_type_names_it(model, kw):
    """Not a raw TypeError from float() or '<': the message names the argument."""
    name = next(iter(kw))
    with pytest.raises((TypeError, ValueError), match=rf"^{name} must be"):
        model.fit(disp=False, random_state=1, **kw)


def test_fit_integer_valued_float_max_m_is_accepted(model):
    from glmm_sm.fit.driver import FitOptions

    assert FitOptions(max_m=1e6).max_m == 10**6


@pytest.mark.parametrize("kw, exc, pattern", [
    ({"memory_budget": -1}, ValueError, "memory_budget must be a number of bytes >= 0"),
    ({"factorize": "yes"}, TypeError, "factorize must be True, False or None"),
    ({"kernel": "cuda"}, ValueError, "kernel must be 'numba' or 'numpy'"),
    ({"chunk_size": 0}, ValueError, "chunk_size must be None or an integer >= 1"),
    ({"boundary_tol": -1.0}, ValueError, "boundary_tol must be a number >= 0"),
    ({"n_jobs": 0}, ValueError, "n_jobs must be at least 1"),
])
def test_fit_options_checked_before_any_work(model, kw, exc, pattern):
    with pytest.raises(exc, match=re.escape(pattern)):
        model.fit(disp=False, random_state=1, **kw)


def test_sampler_at_nonpositive_variance_is_refused(model):
    params = np.r_[np.zeros(model.k_fe), np.ones(model.k_vcp)]
    params[-1] = 0.0
    with pytest.raises(ValueError, match=r"params: a sampler needs finite beta and every "
                                         r"variance nu > 0"):
        model.sample_draws(10, random_state=1, params=params)
