"""Bad input, round two (issue 23, items 1 and 5): one table of cases.

Each case is an input and what it must give: an exception of a given type whose message
matches a regex (naming the argument or column, what is wrong, what to write instead), a
warning, or a fit with a stated property (usually: the same estimates as the input written
the plain way).  Every case failed on the code before this table was written (silently
wrong answers, raw exceptions from pandas / patsy / numpy / scipy, or unclear messages).

At the end, a property-based test (hypothesis) draws small data frames with nullable dtypes,
missing values, odd level codes and mixed types, and checks that building a formula model
and evaluating its Laplace log-likelihood either works or fails with a ValueError / TypeError
raised from glmm_sm's own code, never a raw exception from a library underneath.
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from glmm_sm import MonteCarloGLMM
from glmm_sm.results.mcla import DataRemovedError

ConvergenceWarning = sm.tools.sm_exceptions.ConvergenceWarning

N = 60


def _data():
    rng = np.random.default_rng(20240601)
    g = np.repeat(np.arange(10), 6)
    x = rng.normal(size=N)
    u = rng.normal(scale=0.8, size=10)
    y = (rng.uniform(size=N) < 1 / (1 + np.exp(-(0.3 + 0.7 * x + u[g])))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "g": g, "h": np.tile(np.arange(3), N // 3),
                         "a": rng.integers(0, 3, N), "b": rng.integers(0, 3, N),
                         "xc": np.arange(N)})


DATA = _data()


def frame(**columns):
    """A copy of the data with columns replaced or added."""
    out = DATA.copy()
    for name, values in columns.items():
        out[name] = values
    return out


def model(formula="y ~ x + (1 | g)", data=None, **kw):
    kw.setdefault("family", "binomial")
    return MonteCarloGLMM.from_formula(formula, None, DATA if data is None else data, **kw)


def laplace(formula="y ~ x + (1 | g)", data=None, **kw):
    """Laplace estimates (deterministic, fast) as a Series."""
    return model(formula, data, **kw).fit(method="laplace").params


def pair(a, b):
    """Two estimates that must agree (the odd input and the plain one)."""
    return lambda: (laplace(*a[:2], **(a[2] if len(a) > 2 else {})),
                    laplace(*b[:2], **(b[2] if len(b) > 2 else {})))


def same_fit(value):
    got, ref = value
    return list(got.index) == list(ref.index) and np.allclose(got, ref, rtol=1e-8, atol=0)


def with_na(values, row, dtype):
    s = pd.Series(values, dtype=dtype).copy()
    s[row] = pd.NA
    return s


def with_nan(values, row):
    s = pd.Series(values, dtype=float).copy()
    s[row] = np.nan
    return s


def obj(values, **at):
    s = pd.Series(values).astype(object)
    for row, v in at.items():
        s[int(row[1:])] = v
    return s


def dropped(row, **columns):
    return frame(**columns).drop(index=row)


def fitted(start_params=None, **kw):
    return lambda: model().fit(method="laplace", start_params=start_params, **kw)


def predict_frame(cols):
    return lambda: model().fit(method="laplace").predict(DATA[cols])


def summary_text():
    d = frame(gc=pd.Categorical(DATA["g"], categories=range(12)))
    return str(model("y ~ x + (1 | gc)", d).fit(method="laplace").summary())


def params_of_dict():
    mod = model()
    ref = mod.fit(method="laplace").params
    start = {"g": 0.5, "x": 0.1, "Intercept": 0.0}  # every name, another order
    got = mod.fit(method="laplace", start_params=start).params
    arr = mod.fit(method="laplace", start_params=[0.0, 0.1, 0.5]).params
    return got, arr if np.allclose(arr, ref, atol=1e-6) else ref


def mcla_without_fixed_effects():
    with warnings.catch_warnings():  # one short round: not converged, and it says so
        warnings.simplefilter("ignore", sm.tools.sm_exceptions.ConvergenceWarning)
        res = model("y ~ 0 + (1 | g)").fit(m=200, max_rounds=1, random_state=0, disp=False)
    return res.params


def short_fit(formula="y ~ x + (1 | g)"):
    with warnings.catch_warnings():  # one short round: not converged, and it says so
        warnings.simplefilter("ignore", sm.tools.sm_exceptions.ConvergenceWarning)
        return model(formula).fit(m=200, max_rounds=1, random_state=0, disp=False)


def removed(call):
    """``call`` on a fit whose data were removed (``remove_data()``)."""
    def run():
        res = short_fit()
        res.remove_data()
        return call(res)
    return run


def lrtest_removed(side):
    def run():
        from glmm_sm import lrtest

        full, red = short_fit(), short_fit("y ~ 1 + (1 | g)")
        (full if side == "full" else red).remove_data()
        return lrtest(full, red)
    return run


def huge_counts():
    cnt = np.random.default_rng(0).poisson(1e7, size=N).astype(float)
    return model("cnt ~ x + (1 | g)", frame(cnt=cnt), family="poisson").fit(method="laplace")


@dataclass(frozen=True)
class Case:
    """One input and its expected outcome.

    Exactly one of ``raises`` (with ``match``), ``warns`` (with ``match``) or ``check``
    (a predicate on the value ``call`` returns)."""

    id: str
    call: Callable[[], object]
    raises: type | None = None
    warns: type | None = None
    match: str | None = None
    check: Callable[[object], bool] | None = None


Y01 = DATA["y"].to_numpy()
R = 5  # the row given a missing value

CASES = [
    # ------------------------------------------------------ silent wrong answers
    Case("group column named class", lambda: model(
        "y ~ x + (1 | class)", data=frame(**{"class": DATA["g"]})), ValueError,
        match=r"grouping factor 'class' in \(class\): a column named like a Python keyword .*"
              r"rename it, e.g. data.rename\(columns=\{'class': 'class_'\}\)"),
    Case("group a + b", lambda: model("y ~ x + (1 | a + b)"), ValueError, match=(
        r"\(1 \| a \+ b\).*not a sum.*Invalid grouping factor.*\(1 \| a:b\).*"
        r"\(1 \| a\) \+ \(1 \| b\)")),
    Case("object covariate with 'n/a'", lambda: model(
        "y ~ xo + (1 | g)", frame(xo=obj(DATA["x"], r3="n/a"))), ValueError, match=(
        r"column 'xo'.*59 of its 60 values are numbers and 1 is not \('n/a'\).*60 levels"
        r".*pd\.to_numeric\(data\['xo'\], errors='coerce'\).*na_values=\['n/a'\].*C\(xo\)")),
    Case("object covariate of numbers", lambda: model(
        "y ~ xo + (1 | g)", frame(xo=DATA["x"].astype(object))), ValueError,
        match=r"column 'xo'.*all its values are numbers.*pd\.to_numeric"),
    Case("covariate of numeric strings", lambda: model(
        "y ~ xo + (1 | g)", frame(xo=DATA["x"].map(str).astype(object))), ValueError,
        match=r"column 'xo'.*stored as text.*pd\.to_numeric"),
    Case("group mixing 0 and '0'", lambda: model(
        "y ~ x + (1 | go)", frame(go=obj(DATA["g"], r0="0"))), ValueError,
        match=r"grouping column 'go' holds .*0.* and .*0.*same name.*astype\(str\)"),
    Case("group of numbers and 'n/a' warns", lambda: model(
        "y ~ x + (1 | go)", frame(go=obj(DATA["g"], r7="n/a"))), warns=UserWarning,
        match=r"grouping column 'go' mixes numbers and strings \('n/a'\).*to_numeric"),
    Case("all-zero weights", lambda: model(weights=np.zeros(N)), ValueError,
         match=r"weights must have a positive sum; all 60 weights are 0"),
    Case("all-zero weights, arrays", lambda: MonteCarloGLMM(
        Y01, np.ones((N, 1)), np.eye(10)[DATA["g"]], np.zeros(10, dtype=int),
        weights=np.zeros(N)).fit_laplace(), ValueError,
        match=r"weights must have a positive sum"),
    Case("m=1 (MCSE undefined)", lambda: model().fit(m=1, disp=False), ValueError,
         match=r"m must be 'auto' or an integer >= 2; got 1 \(.*one draw has none\)"),
    Case("m_start=1", lambda: model().fit(m_start=1, disp=False), ValueError,
         match=r"m_start must be None or an integer >= 2"),
    # ------------------------------------------------------ nullable dtypes, booleans
    Case("Int64 response with NA, drop", pair(
        ("yI ~ x + (1 | g)", frame(yI=with_na(Y01.astype(int), R, "Int64"))),
        ("y ~ x + (1 | g)", frame(y=with_nan(Y01, R)))), check=same_fit),
    Case("Float64 covariate with NA", pair(
        ("y ~ xF + (1 | g)", frame(xF=with_na(DATA["x"], R, "Float64"))),
        ("y ~ xF + (1 | g)", frame(xF=with_nan(DATA["x"], R)))), check=same_fit),
    Case("boolean response", pair(
        ("yb ~ x + (1 | g)", frame(yb=pd.Series(Y01 > 0, dtype="boolean"))),
        ("y ~ x + (1 | g)", DATA)), check=lambda v: same_fit((v[0].rename(
            index={"yb": "y"}), v[1]))),
    Case("boolean response with NA", pair(
        ("yb ~ x + (1 | g)", frame(yb=with_na(Y01 > 0, R, "boolean"))),
        ("y ~ x + (1 | g)", frame(y=with_nan(Y01, R)))), check=same_fit),
    Case("numpy bool response", pair(
        ("yb ~ x + (1 | g)", frame(yb=Y01 > 0)), ("y ~ x + (1 | g)", DATA)),
        check=same_fit),
    Case("string group with NA", pair(
        ("y ~ x + (1 | gs)", frame(gs=with_na(DATA["g"].map(lambda v: f"G {v}"), R,
                                              "string"))),
        ("y ~ x + (1 | gs)", dropped(R, gs=DATA["g"].map(lambda v: f"G {v}")))),
        check=same_fit),
    Case("Int64 group with NA", pair(
        ("y ~ x + (1 | gI)", frame(gI=with_na(DATA["g"], R, "Int64"))),
        ("y ~ x + (1 | gI)", dropped(R, gI=DATA["g"]))), check=same_fit),
    # ------------------------------------------------------ start_params, callback, family
    Case("start_params with NaN (Laplace)", fitted([np.nan, 0.0, 1.0]), ValueError,
         match=r"start_params holds NaN or infinite values for \['Intercept'\]"),
    Case("start_params with inf (MCLA)", lambda: model().fit(
        start_params=[np.inf, 0.0, 1.0], m=50, disp=False), ValueError,
        match=r"start_params holds NaN or infinite values for \['Intercept'\]"),
    Case("start_params with a variance <= 0", fitted([0.0, 0.0, -1.0]), ValueError,
         match=r"start_params: every variance must be > 0.*'g': -1\.0"),
    Case("start_params a partial dict", fitted({"x": 1.0}), ValueError, match=(
        r"start_params: a dict or Series must give every parameter by name \(missing "
        r"\['Intercept', 'g'\]\).*\['Intercept', 'x', 'g'\]")),
    Case("start_params a dict with an unknown name", fitted(
        {"Intercept": 0.0, "x": 1.0, "G": 1.0}), ValueError,
        match=r"start_params.*unknown name\(s\) \['G'\]; missing \['g'\]"),
    Case("start_params a full dict", params_of_dict, check=same_fit),
    Case("callback not callable", lambda: model().fit(
        callback="stop", m=50, max_rounds=2, disp=False, random_state=0), TypeError,
        match=r"callback must be a function \(or None\); got str 'stop'"),
    Case("family the class", lambda: model(family=sm.families.Binomial), TypeError,
         match=r"family: got the class Binomial.*pass an instance: "
               r"sm\.families\.Binomial\(\)"),
    # ------------------------------------------------------ data frames
    Case("duplicate column names", lambda: model(data=pd.concat(
        [DATA[["y", "x"]], DATA[["x", "g"]]], axis=1)), ValueError,
        match=r"duplicate column name\(s\) \['x'\].*rename"),
    Case("empty data", lambda: model(data=DATA.iloc[:0]), ValueError,
         match=r"data has no rows"),
    Case("every row dropped", lambda: model(data=frame(x=np.nan)), ValueError,
         match=r"no rows left after dropping all 60 rows with missing values \(NaN\) in "
               r"'x' \(60\)"),
    Case("predict on a frame without a column", predict_frame(["y", "g"]), ValueError,
         match=r"exog: the new data lack column\(s\) \['x'\], which the formula 'y ~ x'"),
    Case("no fixed effects, MCLA", mcla_without_fixed_effects,
         check=lambda p: list(p.index) == ["g"] and np.isfinite(p["g"]) and p["g"] > 0),
    Case("no fixed effects, Laplace", lambda: laplace("y ~ 0 + (1 | g)"),
         check=lambda p: list(p.index) == ["g"] and np.isfinite(p["g"]) and p["g"] > 0),
    Case("duplicate exog names, arrays", lambda: MonteCarloGLMM(
        Y01, pd.DataFrame(np.column_stack([np.ones(N), DATA["x"]]), columns=["a", "a"]),
        np.eye(10)[DATA["g"]], np.zeros(10, dtype=int), family="binomial"), ValueError,
        match=r"exog: duplicate column name\(s\) \['a'\].*rename the columns"),
    Case("Laplace at counts near 1e7 warns", huge_counts, warns=ConvergenceWarning,
         match=r"Laplace log-likelihood is not negative definite"),
    # ------------------------------------------------------ after remove_data()
    Case("remove_data, summary", removed(lambda r: str(r.summary())),
         check=lambda text: "Variance components" in text),
    Case("remove_data, random_effects", removed(lambda r: r.random_effects()),
         check=lambda re: re.shape == (10, 2) and np.all(np.isfinite(np.asarray(re)))),
    Case("remove_data, profile interval", removed(lambda r: r.conf_int(method="profile")),
         DataRemovedError, match=r"conf_int\(method='profile'\): this result had its data "
                                 r"removed by remove_data\(\); refit or keep the data"),
    Case("remove_data, resid_quantile", removed(lambda r: r.resid_quantile()),
         DataRemovedError, match=r"resid_quantile\(\): this result had its data removed"),
    Case("remove_data, lrtest full", lrtest_removed("full"), ValueError,
         match=r"full had its data removed by remove_data\(\).*refit it, or keep the data"),
    Case("remove_data, lrtest reduced", lrtest_removed("reduced"), ValueError,
         match=r"reduced had its data removed by remove_data\(\)"),
    # ------------------------------------------------------ formulas
    Case("unclosed parenthesis", lambda: model("y ~ x + (1 | g"), ValueError,
         match=r"the '\(' at position 8 .* is never closed"),
    Case("term without its bar", lambda: model("y ~ x + (1 g)"), ValueError,
         match=r"term \(1 g\) is not an expression.*lacks its bar: write \(1 \| g\)"),
    Case("bar outside parentheses", lambda: model("y ~ x + 1 | g"), ValueError,
         match=r"needs its own parentheses, e\.g\. '\(1 \| g\)'"),
    Case("dangling +", lambda: model("y ~ x +"), ValueError,
         match=r"(?s)could not be read: expected a noun.*'\(1 \| g\)'"),
    Case("no random effects", lambda: model("y ~ x"), ValueError,
         match=r"no random-effect term.*'\+ \(1 \| g\)'.*vc_formulas=\{'g': '0 \+ C\(g\)'\}"),
    Case("(1 | C(g)) is (1 | g)", pair(("y ~ x + (1 | C(g))", None), ("y ~ x + (1 | g)", None)),
         check=same_fit),
    Case("(1 | factor(g)) is (1 | g)", pair(
        ("y ~ x + (1 | factor(g))", None), ("y ~ x + (1 | g)", None)), check=same_fit),
    Case("subtracted term", lambda: model("y ~ x - (1 | g)"), ValueError,
         match=r"\(1 \| g\) is subtracted.*write '\+ \(1 \| g\)'"),
    Case("empty group", lambda: model("y ~ x + (1 | )"), ValueError,
         match=r"\(1 \| \) has no grouping factor after the bar"),
    Case("group g*h", lambda: model("y ~ x + (1 | g*h)"), ValueError,
         match=r"'\*' is not allowed.*\(1 \| g\) \+ \(1 \| h\) \+ \(1 \| g:h\)"),
    Case("offset() in the formula", lambda: model("y ~ x + offset(x) + (1 | g)"), ValueError,
         match=r"offset\(x\) in the formula is not supported.*offset='x'"),
    Case("offset(log(n)) in the formula", lambda: model(
        "y ~ x + offset(np.log(xc + 1)) + (1 | g)"), ValueError,
        match=r"offset\(np\.log\(xc \+ 1\)\).*offset=np\.log\(data\['n'\]\)"),
    Case("more effects than observations", lambda: model("y ~ x + (x | xc)"), ValueError,
         match=r"\(x \| xc\): 120 random effects \(60 levels x 2\) for 60 observations.*"
               r"lme4"),
    Case("unused category levels are not counted", summary_text,
         check=lambda text: "gc 10" in text and "gc 12" not in text),
]


@pytest.mark.filterwarnings("ignore:.*rows have missing values:UserWarning")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case):
    if case.raises is not None:
        with pytest.raises(case.raises, match=case.match):
            case.call()
    elif case.warns is not None:
        with pytest.warns(case.warns, match=case.match):
            case.call()
    else:
        assert case.check(case.call())


# ---------------------------------------------------------------- item 5: properties

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

#: Odd level codes: ints, negative numbers, strings with spaces, "None", "0" beside 0.
LEVELS = st.sampled_from([0, 1, 2, -1, -3, "0", "a b", " a", "None", "n/a", 2.5, "1"])


def _column(draw, kind, n):
    """One column of ``n`` rows of the drawn kind (``kind`` in the strategies below)."""
    rows = st.lists
    if kind == "float":
        vals = draw(rows(st.one_of(st.floats(-3, 3), st.just(np.nan)), min_size=n, max_size=n))
        return pd.Series(vals, dtype=float)
    if kind == "Float64":
        vals = draw(rows(st.one_of(st.floats(-3, 3), st.none()), min_size=n, max_size=n))
        return pd.Series([pd.NA if v is None else v for v in vals], dtype="Float64")
    if kind == "Int64":
        vals = draw(rows(st.one_of(st.integers(-3, 5), st.none()), min_size=n, max_size=n))
        return pd.Series([pd.NA if v is None else v for v in vals], dtype="Int64")
    if kind == "boolean":
        vals = draw(rows(st.one_of(st.booleans(), st.none()), min_size=n, max_size=n))
        return pd.Series([pd.NA if v is None else v for v in vals], dtype="boolean")
    if kind == "bool":
        return pd.Series(draw(rows(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    if kind == "string":
        vals = draw(rows(st.one_of(st.sampled_from(["a b", "None", "-1", " x"]), st.none()),
                         min_size=n, max_size=n))
        return pd.Series([pd.NA if v is None else v for v in vals], dtype="string")
    if kind == "object":
        return pd.Series(draw(rows(st.one_of(LEVELS, st.none()), min_size=n, max_size=n)),
                         dtype=object)
    if kind == "category":
        vals = draw(rows(st.one_of(st.sampled_from(["p", "q", "r"]), st.none()),
                         min_size=n, max_size=n))
        return pd.Series(pd.Categorical(vals, categories=["p", "q", "r", "unused"]))
    vals = draw(rows(st.integers(-2, 6), min_size=n, max_size=n))  # "int"
    return pd.Series(vals, dtype=np.int64)


KINDS = ["float", "Float64", "Int64", "boolean", "bool", "string", "object", "category",
         "int"]


@st.composite
def problems(draw):
    n = draw(st.integers(0, 14))
    kinds = {c: draw(st.sampled_from(KINDS)) for c in ("y", "x", "g")}
    data = pd.DataFrame({c: _column(draw, k, n) for c, k in kinds.items()})
    if kinds["y"] in ("float", "Float64", "Int64", "int"):
        data["y"] = data["y"].abs()
    formula = draw(st.sampled_from([
        "y ~ x + (1 | g)", "y ~ 1 + (1 | g)", "y ~ 0 + (1 | g)", "y ~ x + (x | g)",
        "y ~ C(x) + (1 | g)", "y ~ x + (1 | x:g)", "y ~ x + (1 + x || g)",
    ]))
    family = draw(st.sampled_from(["binomial", "poisson"]))
    missing = draw(st.sampled_from(["drop", "raise"]))
    return data, formula, family, missing


def _ours(exc):
    """The exception was raised by glmm_sm code (its last frame inside glmm_sm)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and "glmm_sm" in frames[-1].filename.replace("\\", "/").split("/")


@hypothesis.settings(max_examples=80, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(problems())
def test_odd_frames_fit_or_fail_in_our_words(problem):
    """Any odd frame gives a model and a Laplace log-likelihood, or a ValueError /
    TypeError raised from glmm_sm's code (never a raw library exception)."""
    data, formula, family, missing = problem
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = MonteCarloGLMM.from_formula(formula, None, data, family=family,
                                              missing=missing)
            from glmm_sm.laplace.step import laplace_loglike

            value, _ = laplace_loglike(mod.block_system(), np.zeros(mod.k_fe),
                                       mod.design.cov.start())
            assert np.ndim(value) == 0
    except (ValueError, TypeError) as exc:
        assert _ours(exc), (f"{type(exc).__name__} from outside glmm_sm for {formula!r}, "
                            f"{family}, missing={missing}:\n{data}\n"
                            + "".join(traceback.format_exception(exc)))
