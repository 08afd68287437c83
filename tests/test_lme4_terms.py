"""lme4 random-effect terms in the formula: each scalar term is exactly a vc_formulas
component (same names, same bits for the same seed); correlated terms are tested in
tests/test_vector_effects.py."""

import numpy as np
import pandas as pd
import pytest

import glmm_sm
import glmm_sm.formula.api as smf
from glmm_sm import MonteCarloGLMM
from glmm_sm.spec.lme4_terms import split_random_terms


@pytest.fixture(scope="module")
def sal():
    df = glmm_sm.datasets.load("salamander")
    return df.assign(x=np.linspace(-1.0, 1.0, len(df)),
                     sub=np.arange(len(df)) % 2)


def test_salamander_demo_as_an_lme4_formula_gives_the_same_bits(sal):
    a = smf.mcglmm("Mate ~ 0 + Cross + (1 | Female) + (1 | Male)", data=sal,
                   family="bernoulli").fit(random_state=0, disp=False, n_jobs=1)
    b = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross", {"Female": "0 + C(Female)",
                                                         "Male": "0 + C(Male)"}, sal,
                                    family="bernoulli").fit(random_state=0, disp=False,
                                                            n_jobs=1)
    assert a.param_names == b.param_names and a.model.vcp_names == ["Female", "Male"]
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.bse, b.bse)


@pytest.mark.parametrize("formula, fixed, comps", [
    ("y ~ x + (1 | g)", "y ~ x", {"g": "0 + C(g)"}),
    ("y ~ (0 + x | g)", "y ~ 1", {"g:x": "0 + C(g):x"}),
    ("y ~ x + (1 + x || g)", "y ~ x", {"g": "0 + C(g)", "g:x": "0 + C(g):x"}),
    ("y ~ x + (1 | g1/g2)", "y ~ x", {"g1": "0 + C(g1)", "g1:g2": "0 + C(g1):C(g2)"}),
    ("y ~ x + (1 | g1:g2) + (1|h)", "y ~ x", {"g1:g2": "0 + C(g1):C(g2)", "h": "0 + C(h)"}),
])
def test_terms_translate_to_components(formula, fixed, comps):
    got_fixed, got = split_random_terms(formula)
    assert got_fixed == fixed and got == comps


def test_double_bar_equals_two_independent_terms_and_nesting_its_expansion(sal):
    vc = {"Female": "0 + C(Female)", "Female:x": "0 + C(Female):x"}
    a = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross + (1 + x || Female)", data=sal,
                                    family="bernoulli")
    b = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross", vc, sal, family="bernoulli")
    assert (a.exog_vc != b.exog_vc).nnz == 0 and a.vcp_names == b.vcp_names
    np.testing.assert_array_equal(a.ident, b.ident)
    c = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross + (1 | Female/sub)", data=sal,
                                    family="bernoulli")
    d = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross", {"Female": "0 + C(Female)",
                                                         "Female:sub": "0 + C(Female):C(sub)"},
                                    sal, family="bernoulli")
    assert (c.exog_vc != d.exog_vc).nnz == 0 and c.vcp_names == d.vcp_names
    np.testing.assert_array_equal(c._laplace_estimate()[0], d._laplace_estimate()[0])


def test_terms_combine_with_vc_formulas_and_conditional_predictions_work(sal):
    mod = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross + (1 | Male)",
                                      {"F": "0 + C(Female)"}, sal, family="bernoulli")
    assert mod.vcp_names == ["F", "Male"]
    res = mod.fit(random_state=1, disp=False, n_jobs=1)
    pred = res.predict(sal.head(), conditional=True)
    assert isinstance(pred, pd.Series) and np.all((pred > 0) & (pred < 1))


@pytest.mark.parametrize("formula, vc, match", [
    ("Mate ~ 0 + Cross + (x | Female/Male)", None, r"nested correlated term.*\(x \| Female\)"),
    ("Mate ~ 0 + Cross + (1 | Female) + (1 + x | Female)", None, "also a variance component"),
    ("Mate ~ 0 + Cross + (1 | Female)", {"Female": "0 + C(Female)"}, "also in vc_formulas"),
    ("Mate ~ 0 + Cross + (1 | Female)", ["0 + C(Male)"], "only with vc_formulas given as a"),
    ("Mate ~ 0 + Cross + (0 | Female)", None, "has no random effect"),
])
def test_terms_that_cannot_be_fitted_are_refused(sal, formula, vc, match):
    with pytest.raises(ValueError, match=match):
        MonteCarloGLMM.from_formula(formula, vc, sal, family="bernoulli")
