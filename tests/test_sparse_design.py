"""The random-effects design from a formula is built sparse and in time linear in the rows.

A grouping factor's columns come straight from its level codes (glmm_sm.spec.sparse_formula):
the same columns, names, order and values as the formula engine's dense model matrix, except
that an interaction of grouping factors (``(1 | g1/g2)``) has only the combinations that
occur.  The wall-clock bounds are generous (CI machines are loaded): the builds measured on
a 2-core development machine take a few percent of them, the code before this change
minutes or an allocation of tens of GB.
"""

import time
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from statsmodels.formula._manager import FormulaManager

from glmm_sm import MonteCarloGLMM
from glmm_sm.spec.sparse_formula import capture_env, formula_missing_rows, sparse_columns
from glmm_sm.spec.validation import check_full_rank


def _small_frame(n=300, seed=1):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "s": rng.choice(["b", "a", "c", "dd"], n),
        "i": rng.integers(-2, 5, n),
        "f": rng.choice([0.5, 1.5, -2.0], n),
        "bo": rng.random(n) < 0.3,
        "x": rng.normal(size=n),
        "z": rng.integers(0, 3, n).astype(float),
        "cat": pd.Categorical(rng.choice(["u", "v"], n), categories=["v", "u", "w"]),
        "o": rng.choice(["p", "q"], n).astype(object),
    })


@pytest.mark.parametrize("formula", [
    "0 + C(s)", "0 + C(i)", "0 + C(f)", "0 + C(bo)", "0 + C(cat)", "0 + C(o)", "0 + s",
    "-1 + C(s)", "0 + C(s):C(i)", "0 + C(i):C(s)", "0 + C(s):C(i):C(cat)", "0 + C(s):x",
    "0 + x:C(s)", "0 + C(s):C(i):x", "0 + C(s):x:z", "0 + C(s):np.log(z + 1)",
    "0 + C(cat):C(bo)", "0 + C(s):I(2 * x)",
])
def test_sparse_columns_are_the_formula_engines_nonempty_columns(formula):
    """Names, order and bits of the formula engine's model matrix; a single grouping factor
    keeps every level (an unused category too), an interaction only the occurring ones."""
    df = _small_frame()
    ref = pd.DataFrame(FormulaManager().get_matrices(formula, df, eval_env=0, pandas=True,
                                                     na_action="raise"))
    built = sparse_columns(formula, df, capture_env(0))
    assert built is not None and sp.issparse(built.matrix)
    dense = ref.to_numpy()
    interaction = formula.count("C(") + formula.count("0 + s") > 1
    keep = (np.flatnonzero(np.any(dense != 0, axis=0)) if interaction
            else np.arange(dense.shape[1]))
    assert built.names == [str(ref.columns[j]) for j in keep]
    np.testing.assert_array_equal(built.matrix.toarray(), dense[:, keep])
    if formula == "0 + C(cat)":
        assert built.names[-1] == "C(cat)[w]" and built.matrix[:, -1].nnz == 0


@pytest.mark.parametrize("formula", ["0 + C(s, Sum)", "C(s)", "0 + C(s) + C(i)",
                                     "0 + center(x):C(s)"])
def test_other_formulas_are_left_to_the_formula_engine(formula):
    assert sparse_columns(formula, _small_frame(), capture_env(0)) is None


def test_missing_rows_without_a_model_matrix():
    df = _small_frame().assign(y=1.0)
    df.loc[3, "s"] = None
    df.loc[5, "x"] = np.nan
    df.loc[7, "i"] = np.nan
    env = capture_env(0)
    for formula, rows in [("y ~ C(s) + x", [3, 5]), ("0 + C(s):C(i)", [3, 7]),
                          ("0 + C(i):x", [5, 7])]:
        np.testing.assert_array_equal(np.flatnonzero(formula_missing_rows(formula, df, env)),
                                      rows)
    # A missing value in the build itself is the formula engine's error, as before.
    assert sparse_columns("0 + C(s)", df, env) is None


def _nested(n=20_000, l1=200, l2=2_000, seed=3):
    rng = np.random.default_rng(seed)
    g1 = rng.integers(0, l1, n)
    g2 = rng.integers(0, l2, n)
    g1[:l1] = np.arange(l1)  # every level of g1 occurs
    x = rng.normal(size=n)
    eta = -0.3 + 0.5 * x + rng.normal(size=l1)[g1]
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "g1": g1, "g2": g2})


def test_nested_term_has_only_occurring_combinations_and_builds_fast():
    df = _nested()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MonteCarloGLMM.from_formula("y ~ x + (1 | g1)", data=df.head(50), family="bernoulli")
        t0 = time.perf_counter()
        mod = MonteCarloGLMM.from_formula("y ~ x + (1 | g1/g2)", data=df, family="bernoulli")
        elapsed = time.perf_counter() - t0
    # Measured 0.3 s; the code before built all 400,000 combinations densely (minutes).
    assert elapsed < 5.0
    pairs = np.unique(df[["g2", "g1"]].to_numpy(), axis=0)  # patsy: g1 varies fastest
    expect = ([f"C(g1)[{a}]" for a in range(200)]
              + [f"C(g1)[{a}]:C(g2)[{b}]" for b, a in pairs])
    assert mod.vc_names == expect
    assert mod.exog_vc.shape == (len(df), 200 + len(pairs)) and mod.exog_vc.nnz == 2 * len(df)
    np.testing.assert_array_equal(mod.ident, np.repeat([0, 1], [200, len(pairs)]))


def _indicators(codes, k):
    return sp.csr_matrix((np.ones(codes.size), (np.arange(codes.size), codes)),
                         shape=(codes.size, k))


def test_nested_term_loglike_equals_the_array_models():
    """The formula model's l_m at a parameter equals, to the bit, that of the array
    constructor with the occurring combinations, and that of the design with every
    combination (the formula engine's columns: the empty ones belong to no block)."""
    df = _nested(n=4_000, l1=40, l2=300, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = MonteCarloGLMM.from_formula("y ~ x + (1 | g1/g2)", data=df, family="bernoulli")
    g1, g2 = df["g1"].to_numpy(), df["g2"].to_numpy()
    key = g1 + 40 * g2
    occ, inv = np.unique(key, return_inverse=True)
    X = np.column_stack([np.ones(len(df)), df["x"]])
    Z_occ = sp.hstack([_indicators(g1, 40), _indicators(inv, occ.size)], format="csr")
    Z_all = sp.hstack([_indicators(g1, 40), _indicators(key, 40 * 300)], format="csr")
    params = np.array([-0.3, 0.5, 0.8, 0.4])
    values = []
    for model in [mod,
                  MonteCarloGLMM(df["y"], X, Z_occ, np.repeat([0, 1], [40, occ.size]),
                                 family="bernoulli"),
                  MonteCarloGLMM(df["y"], X, Z_all, np.repeat([0, 1], [40, 12_000]),
                                 family="bernoulli")]:
        model.sample_draws(200, random_state=11, params=params)
        values.append(model.loglike(params))
    assert np.isfinite(values[0])
    assert values[0] == values[1] == values[2]


def test_many_levels_build_in_memory_linear_in_the_rows():
    """200,000 rows, 50,000 levels: the code before allocated a 50,000 x 50,000 identity and
    a 200,000 x 50,000 dense matrix (80 GB).  Bound: 200 bytes a row (40 MB) of traced
    allocations (numpy's included) during from_formula; measured about 27 MB."""
    n, levels = 200_000, 50_000
    rng = np.random.default_rng(7)
    df = pd.DataFrame({"y": rng.integers(0, 2, n).astype(float), "x": rng.normal(size=n),
                       "g": rng.permutation(np.arange(n) % levels)})
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        mod = MonteCarloGLMM.from_formula("y ~ x + (1 | g)", data=df, family="bernoulli")
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert mod.exog_vc.shape == (n, levels) and mod.exog_vc.nnz == n
    assert mod.vc_names[:2] == ["C(g)[0]", "C(g)[1]"]
    assert peak < 200 * n, f"peak traced memory {peak / 1e6:.1f} MB"
    assert elapsed < 30.0  # measured about 1 s (under tracemalloc)


def test_rank_check_of_a_large_fixed_factor_is_fast_and_names_the_columns():
    rng = np.random.default_rng(9)
    n, levels = 2_000, 1_000
    f = np.concatenate([np.arange(levels), rng.integers(0, levels, n - levels)])
    F = np.zeros((n, levels))
    F[np.arange(n), f] = 1.0
    x = rng.normal(size=n)
    names = [f"f{j}" for j in range(levels)] + ["x"]
    t0 = time.perf_counter()
    check_full_rank(np.column_stack([F, x]), names)  # full rank: no error
    X = np.column_stack([F, x, 2.0 * x + F[:, 5], F[:, 10] + F[:, 11], np.zeros(n)])
    with pytest.raises(ValueError, match=r"exog is rank deficient: column 'x2' is a linear "
                                         r"combination of 'f5', 'x' \(x2 = 1 \* f5 \+ 2 \* "
                                         r"x\); column 'f10_11' is a linear combination of "
                                         r"'f10', 'f11' \(f10_11 = 1 \* f10 \+ 1 \* f11\); "
                                         r"column 'z' is zero for every observation"):
        check_full_rank(X, [*names, "x2", "f10_11", "z"])
    # Measured 0.5 s for both (2.5 s at 2,000 levels); the code before solved a least-squares
    # problem per column (O(p^4): it did not finish in 240 s at 2,000 columns).
    assert time.perf_counter() - t0 < 60.0
