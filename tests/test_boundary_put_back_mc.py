"""The Monte Carlo boundary procedure puts back a variance that Laplace set to 0 and keeps it.

Three-level Bernoulli tree (``tests/test_nested_deep.py``'s design with two answers per
pupil): Laplace puts the pupil variance at 0, the exact MLE has it at about 0.19 (inside).
Fitted by importance sampling (``sampler="laplace"``), the boundary procedure refits the
model without the pupils, finds the one-sided derivative at 0 positive beyond its MCSE
(about +0.94, MCSE 0.04) and puts the component back.  The refit of the full model then
started from its own Laplace fit, which put the pupil variance at 0 again and ended the
fit before its first round, five times over: the fit reported the variance at 0
("unresolved") with a warning that the derivative is positive
(``test_a_variance_put_back_by_its_one_sided_derivative_stays_in`` fails on that code).
The refit now starts its rounds at the put-back values, as the quadrature procedure's does
(commit 9dad95e).

The reference is independent of glmm_sm: the nested adaptive Gauss-Hermite log-likelihoods
of ``tests/aghq_nested.py`` (the model without the pupils, its exact MLE) and
``tests/aghq_nested3.py`` (the full model), with a node study for their error.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from aghq_nested import NestedInterceptGLMM
from aghq_nested3 import Nested3GLMM
from test_nested_deep import FORMULA, _data3

from glmm_sm import MonteCarloGLMM
from glmm_sm.fit.boundary import BOUNDARY_NU, BOUNDARY_Z

#: The one-sided derivative at 0 of the reference is extrapolated from forward differences
#: at these pupil variances (error O(EPS^2)).
EPS = 1e-3


@pytest.fixture(scope="module")
def fit():
    d = _data3(A=2)
    mod = MonteCarloGLMM.from_formula(FORMULA, data=d, family="bernoulli")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = mod.fit(random_state=0, disp=False, sampler="laplace")
    return d, mod, res, [str(w.message) for w in caught]


def _reference_derivative(d, red, nodes):
    """The exact one-sided derivative of the full log-likelihood in the pupil variance at
    0, at the reduced model's parameters ``red = (beta, nu_school, nu_class)``:
    ``2 s(EPS) - s(2 EPS)`` with ``s(e) = (l(2e) - l(e)) / e``."""
    X = np.c_[np.ones(len(d)), d["x"]]
    ref = Nested3GLMM(d["y"], X, [d["school"], d["klass"], d["pupil"]], "bernoulli",
                      n_nodes=nodes)
    ll = {k: ref.loglike(np.r_[red, k * EPS]) for k in (1, 2, 4)}
    s1, s2 = (ll[2] - ll[1]) / EPS, (ll[4] - ll[2]) / (2 * EPS)
    return 2 * s1 - s2


def test_a_variance_put_back_by_its_one_sided_derivative_stays_in(fit):
    """Laplace at 0, the Monte Carlo evidence says inside: the component is put back once
    and the full model's rounds start there (not at its Laplace fit's 0)."""
    _, mod, res, caught = fit
    p = mod.k_fe
    lap = mod.fit(method="laplace", disp=False)
    assert np.asarray(lap.params)[-1] < BOUNDARY_NU  # the case: Laplace at 0
    assert res.boundary == []
    assert np.allclose(res.laplace_params, lap.params)
    assert np.asarray(res.params)[-1] > BOUNDARY_NU
    assert not any("were set to 0" in w for w in caught)
    (ev,) = res.fit_log.boundary_evidence
    assert ev.component == "school:klass:pupil"
    assert ev.decision == "interior" and ev.action == "put back"
    assert ev.derivative > BOUNDARY_Z * ev.mcse > 0 and ev.m > 0
    # the full model's first evaluation is at the put-back start: every variance inside
    full = [e for e in res.fit_log.evaluations if len(e["theta"]) == p + mod.k_vcp]
    assert full and np.all(np.asarray(full[0]["theta"])[p:] > BOUNDARY_NU)
    assert res.fit_log.rounds, "the full model ran no round"


def test_the_evidence_agrees_with_the_exact_derivative(fit):
    """The Monte Carlo one-sided derivative that put the component back, against the exact
    derivative at the exact MLE of the model without the pupils, within 3 of its MCSEs
    (which carry the reduced estimate's own Monte Carlo error) and the reference's node
    error.  The exact derivative is positive: 0 is not a maximum of the full model."""
    d, _, res, _ = fit
    (ev,) = res.fit_log.boundary_evidence
    X = np.c_[np.ones(len(d)), d["x"]]
    red_ref = NestedInterceptGLMM(d["y"], X, d["school"], d["klass"], "bernoulli",
                                  n_nodes=(20, 20))
    start = np.asarray(res.params)[:-1]
    red = red_ref.fit(start).params
    fine = _reference_derivative(d, red, (12, 12, 12))
    coarse = _reference_derivative(d, red, (10, 10, 10))
    assert fine > 0
    assert abs(ev.derivative - fine) <= BOUNDARY_Z * ev.mcse + 10 * abs(fine - coarse)
