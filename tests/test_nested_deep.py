"""Nesting trees of depth 3 and more (pupils in classes in schools) are fitted
deterministically: every level integrated by a nested adaptive Gauss-Hermite rule
(:mod:`glmm_sm.mcla.rb.deep`), nothing sampled (issue 20, item 1).

References are independent of glmm_sm: the nested AGHQ log-likelihood of any depth of
``tests/aghq_nested3.py`` (fully adaptive at every level, its node study below), and for the
two-level reduced model of the LR test ``tests/aghq_nested.py``.  Before this, the default
fit of a three-level tree importance-sampled the two effects per block left once the pupils
were integrated (``test_the_default_fit_of_a_three_level_tree_is_deterministic`` fails on
that code).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from aghq_nested import NestedInterceptGLMM
from aghq_nested3 import Nested3GLMM, node_study
from scipy import special

from glmm_sm import MonteCarloGLMM, lrtest

FORMULA = "y ~ x + (1 | school) + (1 | school:klass) + (1 | school:klass:pupil)"


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


def _data3(seed=5, S=12, C=3, P=4, A=4):
    """S schools x C classes x P pupils x A Bernoulli answers; class and pupil labels are
    read within their school and class (lme4's ``(1 | school/klass/pupil)``)."""
    rng = np.random.default_rng(seed)
    school = np.repeat(np.arange(S), C * P * A)
    klass = np.tile(np.repeat(np.arange(C), P * A), S)
    pupil = np.tile(np.repeat(np.arange(P), A), S * C)
    n = school.size
    x = rng.normal(size=n)
    sc = rng.normal(0, 0.8, S)[school]
    kl = rng.normal(0, 0.6, S * C)[school * C + klass]
    pu = rng.normal(0, 1.2, S * C * P)[(school * C + klass) * P + pupil]
    y = (rng.random(n) < special.expit(-0.2 + 0.6 * x + sc + kl + pu)).astype(float)
    return pd.DataFrame({"y": y, "x": x, "school": school, "klass": klass, "pupil": pupil})


def _reference(d, nodes):
    X = np.c_[np.ones(len(d)), d["x"]]
    return Nested3GLMM(d["y"], X, [d["school"], d["klass"], d["pupil"]], "bernoulli",
                       n_nodes=nodes)


@pytest.fixture(scope="module")
def three():
    d = _data3()
    mod = MonteCarloGLMM.from_formula(FORMULA, data=d, family="bernoulli")
    return d, mod, _quiet(mod.fit, random_state=0, disp=False)


def _engine(mod, theta, **rule):
    """A deterministic engine with its rule placed at ``theta``."""
    from glmm_sm.fit.options import FitOptions
    from glmm_sm.mcla.rb.round import rb_round, rb_structure

    opts = FitOptions(sampler="quadrature", sampler_options=rule)
    st = rb_structure(mod, opts, mod.factorize, None)
    return rb_round(mod, st, np.asarray(theta, dtype=float), None, mod.factorize, 1,
                    np.random.SeedSequence(0), opts, 1)[1]


def test_the_default_fit_of_a_three_level_tree_is_deterministic(three):
    """Fails on the code before the nested rule of every level: it importance-sampled."""
    _, _, res = three
    assert res.fit_log.sampler["used"] == "quadrature"
    assert "nesting tree of depth 3" in res.fit_log.sampler["reason"]
    assert res.deterministic and res.converged
    assert np.all(np.asarray(res.mcse()) == 0.0)
    assert all(r["m"] == 1 for r in res.fit_log.rounds)
    text = str(res.summary())
    assert "Deterministic fit" in text and "chosen by sampler='auto'" in text


def test_the_split_of_a_three_level_tree_leaves_nothing_sampled(three):
    from glmm_sm.mcla.rb.deep import DeepTree, deep_tree_layout
    from glmm_sm.mcla.rb.split import quadrature_layout

    _, mod, res = three
    data = mod.layout_data(mod.factorize)
    names = list(mod.design.vcp_names)
    # the two-level rule leaves a school and its classes: it cannot integrate this
    assert not quadrature_layout(data, names)[0]
    ok, why = deep_tree_layout(data, names)
    assert ok and "'school' > 'school:klass' > 'school:klass:pupil'" in why
    st = DeepTree(data)
    assert st.depth == 3 and [c.size for c in st.cols] == [12, 36, 144]
    # every class under its school, every pupil under its class; each pupil's 4 answers
    assert np.all(np.diff(st.child_ptr[1]) == 3) and np.all(np.diff(st.child_ptr[2]) == 4)
    assert np.all(np.diff(st.row_ptr) == 4)
    rec = res.fit_log.rao_blackwell
    assert rec["largest_block_sampled"] == 0 and rec["depth"] == 3
    # a crossed pair is not a tree (its items are shared between schools)
    d = _data3()
    d["item"] = np.tile(np.arange(4), len(d) // 4)
    crossed = MonteCarloGLMM.from_formula(
        "y ~ x + (1 | school) + (1 | school:klass) + (1 | item)", data=d, family="bernoulli")
    ok, why = deep_tree_layout(crossed.layout_data(crossed.factorize))
    assert not ok


def test_the_reference_converges_with_its_nodes(three):
    _, _, res = three
    d = _data3()
    study = node_study(d["y"], np.c_[np.ones(len(d)), d["x"]],
                       [d["school"], d["klass"], d["pupil"]], "bernoulli",
                       np.asarray(res.params), nodes=((8, 8, 8), (12, 12, 12), (16, 16, 16)))
    v = list(study.values())
    # the error falls geometrically with the nodes: the last difference bounds the
    # reference's error at 16 nodes per level (the other tests' allowance for it)
    assert abs(v[2] - v[1]) < 0.1 * abs(v[1] - v[0])


def test_loglik_agrees_with_the_reference_within_the_measured_error(three):
    d, mod, res = three
    theta = np.asarray(res.params)
    ref16, ref12 = _reference(d, (16, 16, 16)), _reference(d, (12, 12, 12))
    r16 = ref16.loglike(theta)
    ref_err = abs(r16 - ref12.loglike(theta))
    own_err = abs(res.fit_log.quadrature["llf_change"])  # a finer rule's change, measured
    assert abs(res.llf - r16) <= 2 * own_err + 10 * ref_err + 1e-9
    # the finer rule is closer still
    fine = _engine(mod, theta, n_nodes=24, outer_nodes=30).evaluate(theta).value
    assert abs(fine - r16) <= 0.1 * abs(res.llf - r16) + 10 * ref_err + 1e-9


def four_level_frame(rng, shape):
    """Bernoulli answers in pupils in classes in schools in districts, ``shape`` = (districts,
    schools, classes, pupils, answers) per parent, level SDs 0.7, 0.5, 0.6, 1.0, ``eta = 0.1 +
    0.5 x + effects``; columns y, x, dist, school, klass, pupil (``rng`` is advanced)."""
    idx = np.indices(shape).reshape(5, -1)
    n = idx.shape[1]
    x = rng.normal(size=n)
    eff = 0.0
    for lev, sd in zip(range(1, 5), (0.7, 0.5, 0.6, 1.0), strict=True):
        units = np.ravel_multi_index(idx[:lev], shape[:lev])
        eff = eff + rng.normal(0, sd, int(np.prod(shape[:lev])))[units]
    y = (rng.random(n) < special.expit(0.1 + 0.5 * x + eff)).astype(float)
    return pd.DataFrame({"y": y, "x": x, "dist": idx[0], "school": idx[1], "klass": idx[2],
                         "pupil": idx[3]})


def test_four_levels_agree_with_the_reference():
    """Any depth: a four-level tree (answers in pupils in classes in schools in
    districts)."""
    d = four_level_frame(np.random.default_rng(11), (4, 2, 2, 3, 3))
    n, x, y = len(d), d["x"].to_numpy(), d["y"].to_numpy()
    mod = MonteCarloGLMM.from_formula(
        "y ~ x + (1 | dist) + (1 | dist:school) + (1 | dist:school:klass) + "
        "(1 | dist:school:klass:pupil)", data=d, family="bernoulli")
    theta = np.array([0.1, 0.5, 0.5, 0.3, 0.4, 0.9])
    eng = _engine(mod, theta, n_nodes=10, outer_nodes=12)
    assert eng.structure.depth == 4
    X = np.c_[np.ones(n), x]
    levels = [d["dist"], d["school"], d["klass"], d["pupil"]]
    r8 = Nested3GLMM(y, X, levels, "bernoulli", n_nodes=(8,) * 4).loglike(theta)
    r6 = Nested3GLMM(y, X, levels, "bernoulli", n_nodes=(6,) * 4).loglike(theta)
    fine = _engine(mod, theta, n_nodes=16, outer_nodes=18).evaluate(theta).value
    own = eng.evaluate(theta).value
    assert abs(own - r8) <= 2 * abs(fine - own) + 10 * abs(r8 - r6) + 1e-9


def test_score_and_hessian_are_the_derivatives_of_the_value(three):
    """At a rule fixed at one point, the engine's gradient and Hessian against central
    differences of its value and gradient, away from that point."""
    _, mod, res = three
    theta = np.asarray(res.params)
    eng = _engine(mod, theta)
    at = theta * np.array([1.05, 0.95, 1.1, 0.9, 1.08])
    ev = eng.evaluate(at)
    k = len(at)
    g_fd, H_fd = np.zeros(k), np.zeros((k, k))
    for i in range(k):
        h = 1e-5 * max(1.0, abs(at[i]))
        e = np.zeros(k)
        e[i] = h
        g_fd[i] = (eng.evaluate(at + e, False).value - eng.evaluate(at - e, False).value) / (2 * h)
        H_fd[:, i] = (eng.evaluate(at + e).gradient - eng.evaluate(at - e).gradient) / (2 * h)
    # central differences: error O(h^2 f''') + rounding (|l| 1e-16 / h ~ 4e-9)
    np.testing.assert_allclose(ev.gradient, g_fd, atol=1e-6)
    np.testing.assert_allclose(ev.hessian, 0.5 * (H_fd + H_fd.T), rtol=1e-5, atol=1e-5)
    assert np.all(np.linalg.eigvalsh(ev.hessian) < 0)
    assert np.all(ev.score_var == 0.0) and np.all(np.isinf(ev.ess))


def test_the_default_fit_is_the_reference_mle_within_the_measured_error(three):
    """The Newton step from the fit's estimate to the maximum of the reference likelihood
    (the reference's score by central differences, the fit's inverse information), in
    standard errors: within the quadrature error the fit measured, plus the reference's."""
    d, _, res = three
    theta = np.asarray(res.params)
    cov = np.asarray(res.cov_params())
    se = np.sqrt(np.diag(cov))
    steps = {k: cov @ _reference(d, k).score(theta) / se for k in ((10, 10, 10), (12, 12, 12))}
    ref_err = np.abs(steps[(12, 12, 12)] - steps[(10, 10, 10)])
    measured = res.fit_log.quadrature["max_step_in_se"]
    # central differences of the reference's value: rounding ~ 4e-9 / h in the score
    assert np.all(np.abs(steps[(12, 12, 12)]) <= 3 * measured + 10 * ref_err + 1e-5)
    assert measured < 0.1


def test_random_effects_and_conditional_predictions(three):
    """The conditional moments of every effect from the nested rule's node weights: SDs
    below the prior's, the covariance's diagonal their squares, and conditional
    predictions the plug-in of the means (lme4's convention)."""
    d, mod, res = three
    re = res.random_effects()
    assert re.shape == (12 + 36 + 144, 2)
    nu = np.asarray(res.params)[2:]
    prior = np.sqrt(nu[np.asarray(mod.ident)])
    sd, mean = np.asarray(re["SD"]), np.asarray(re["Mean"])
    assert np.all((sd > 0) & (sd < prior))
    cov = res.random_effects_cov
    cov = cov.toarray() if hasattr(cov, "toarray") else np.asarray(cov)
    np.testing.assert_allclose(np.diag(cov), sd**2, rtol=1e-10)
    np.testing.assert_allclose(cov, cov.T, atol=1e-14)
    assert np.linalg.eigvalsh(cov).min() > 0
    X = np.c_[np.ones(len(d)), d["x"]]
    Z = mod.arrays.Z
    plug = special.expit(X @ np.asarray(res.params)[:2] + Z @ mean)
    np.testing.assert_allclose(np.asarray(res.predict(conditional=True)), plug, atol=1e-10)


def test_profile_lrtest_simulate_on_a_three_level_fit(three):
    d, mod, res = three
    ci = _quiet(res.profile_conf_int, cols=[3], random_state=0)
    lo, hi = float(ci["lower"].iloc[0]), float(ci["upper"].iloc[0])
    assert lo < res.params.iloc[3] < hi
    assert float(ci["lower_mcse"].iloc[0]) == 0.0 and float(ci["upper_mcse"].iloc[0]) == 0.0
    # the LR test of the classes: the reduced model is a two-level tree
    red = _quiet(MonteCarloGLMM.from_formula(
        "y ~ x + (1 | school) + (1 | school:klass:pupil)", data=d, family="bernoulli").fit,
        random_state=0, disp=False)
    assert red.deterministic
    out = lrtest(res, red)
    X = np.c_[np.ones(len(d)), d["x"]]
    full_ref = _reference(d, (16, 16, 16)).loglike(np.asarray(res.params))
    pupil = d["klass"].astype(str) + ":" + d["pupil"].astype(str)
    red_ref = NestedInterceptGLMM(d["y"], X, d["school"], pupil, "bernoulli",
                                  n_nodes=(30, 30)).loglike(np.asarray(red.params))
    # each fit's log-likelihood is off by about its finer rule's change (measured): the
    # statistic by twice their sum, plus the references' errors (their node studies)
    err = 2 * (abs(res.fit_log.quadrature["llf_change"])
               + abs(red.fit_log.quadrature["llf_change"]))
    full_err = abs(full_ref - _reference(d, (12, 12, 12)).loglike(np.asarray(res.params)))
    red_err = abs(red_ref - NestedInterceptGLMM(d["y"], X, d["school"], pupil, "bernoulli",
                                                n_nodes=(20, 20)).loglike(
        np.asarray(red.params)))
    assert out.statistic == pytest.approx(2 * (full_ref - red_ref),
                                          abs=2 * err + 20 * (full_err + red_err) + 1e-8)
    sim = res.simulate(nrep=50, random_state=1)
    assert sim.shape == (len(d), 50) and set(np.unique(sim)) <= {0.0, 1.0}
    np.testing.assert_array_equal(sim, res.simulate(nrep=50, random_state=1))
    r = res.resid_quantile(nsim=100, random_state=2)
    assert r.shape == (len(d),) and np.all((r > 0) & (r < 1))


def test_conditional_covariances_are_the_reference_curvatures_in_offsets(three):
    """``Cov(a_u, a_v | y) = nu_u nu_v (d2 log L / do_u do_v + [u = v] / nu_u)``, ``o_u`` an
    offset on the observations of unit ``u`` (shifting ``a_u``'s prior mean): the reference's
    curvature by central differences (its offsets as extra columns of X), for a school, one
    of its classes and one of that class's pupils, against ``random_effects_cov``."""
    d, mod, res = three
    theta = np.asarray(res.params)
    names = list(mod.vc_names)
    which = [(names.index("C(school)[0]"), d["school"] == 0, theta[2]),
             (names.index("C(school)[0]:C(klass)[1]"),
              (d["school"] == 0) & (d["klass"] == 1), theta[3]),
             (names.index("C(school)[0]:C(klass)[1]:C(pupil)[2]"),
              (d["school"] == 0) & (d["klass"] == 1) & (d["pupil"] == 2), theta[4])]
    X = np.c_[np.ones(len(d)), d["x"]]
    Xo = np.c_[X, np.column_stack([np.asarray(m, dtype=float) for _, m, _ in which])]
    ref = Nested3GLMM(d["y"], Xo, [d["school"], d["klass"], d["pupil"]], "bernoulli",
                      n_nodes=(12, 12, 12))

    def ll(o):
        return ref.loglike(np.r_[theta[:2], o, theta[2:]])

    h = 1e-3
    cov = res.random_effects_cov
    cov = cov.toarray() if hasattr(cov, "toarray") else np.asarray(cov)
    err = abs(res.fit_log.quadrature["llf_change"])  # the rule's measured error
    for i in range(3):
        for j in range(i + 1):
            ei, ej = np.eye(3)[i] * h, np.eye(3)[j] * h
            d2 = (ll(ei + ej) - ll(ei - ej) - ll(ej - ei) + ll(-ei - ej)) / (4 * h * h)
            nu_i, nu_j = which[i][2], which[j][2]
            want = nu_i * nu_j * (d2 + (1.0 / nu_i if i == j else 0.0))
            got = cov[which[i][0], which[j][0]]
            # central differences: O(h^2) and rounding 1e-16 |l| / h^2 ~ 4e-8; the rule's
            # error in the moments is of the order of its error in the value
            assert got == pytest.approx(want, abs=1e-5 + 10 * err), (i, j, got, want)


def test_plots_on_a_three_level_fit(three, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    _, _, res = three
    res.plot_diagnostics().savefig(tmp_path / "diag.png")
    res.plot_random_effects().savefig(tmp_path / "re.png")


def test_a_poisson_tree_agrees_with_the_reference():
    """The leaf kernel's Poisson terms: a three-level count design's log-likelihood at a
    given point (constants: the reference includes ``-log y!``, the engine does not)."""
    from scipy.special import gammaln

    rng = np.random.default_rng(4)
    S, C, P, A = 6, 3, 3, 2
    d = pd.DataFrame({"school": np.repeat(np.arange(S), C * P * A),
                      "klass": np.tile(np.repeat(np.arange(C), P * A), S),
                      "pupil": np.tile(np.repeat(np.arange(P), A), S * C)})
    d["x"] = rng.normal(size=len(d))
    cls = d["school"] * C + d["klass"]
    eta = (0.3 + 0.4 * d["x"] + rng.normal(0, 0.5, S)[d["school"]]
           + rng.normal(0, 0.4, S * C)[cls] + rng.normal(0, 0.6, S * C * P)[cls * P + d["pupil"]])
    d["y"] = rng.poisson(np.exp(eta)).astype(float)
    mod = MonteCarloGLMM.from_formula(FORMULA, data=d, family="poisson")
    theta = np.array([0.3, 0.4, 0.25, 0.16, 0.36])
    eng = _engine(mod, theta)
    own = eng.evaluate(theta).value
    fine = _engine(mod, theta, n_nodes=16, outer_nodes=18).evaluate(theta).value
    X = np.c_[np.ones(len(d)), d["x"]]
    levels = [d["school"], d["klass"], d["pupil"]]
    const = -gammaln(d["y"] + 1).sum()
    r12 = Nested3GLMM(d["y"], X, levels, "poisson", n_nodes=(12,) * 3).loglike(theta) - const
    r8 = Nested3GLMM(d["y"], X, levels, "poisson", n_nodes=(8,) * 3).loglike(theta) - const
    assert abs(own - r12) <= 2 * abs(fine - own) + 10 * abs(r12 - r8) + 1e-9


def test_a_variance_put_back_by_its_exact_derivative_stays_in():
    """Two answers per pupil: Laplace puts the pupil variance at 0, the exact one-sided
    derivative there is positive (it is inside) and the refit with it put back starts its
    rounds there (it started at its Laplace fit, which sent it to 0 again, five times, and
    the fit reported it at 0 "unresolved"); the estimate is the reference MLE within the
    measured quadrature error."""
    d = _data3(A=2)
    mod = MonteCarloGLMM.from_formula(FORMULA, data=d, family="bernoulli")
    res = _quiet(mod.fit, random_state=0, disp=False)
    assert res.boundary == [] and res.deterministic and res.converged
    (ev, *_) = res.fit_log.boundary_evidence
    assert ev.decision == "interior" and ev.derivative > 0 and ev.mcse == 0.0
    assert res.laplace_params is not None
    theta = np.asarray(res.params)
    cov = np.asarray(res.cov_params())
    se = np.sqrt(np.diag(cov))
    steps = {k: cov @ _reference(d, k).score(theta) / se for k in ((10, 10, 10), (12, 12, 12))}
    ref_err = np.abs(steps[(12, 12, 12)] - steps[(10, 10, 10)])
    measured = res.fit_log.quadrature["max_step_in_se"]
    assert np.all(np.abs(steps[(12, 12, 12)]) <= 3 * measured + 10 * ref_err + 1e-5)


def test_a_coarse_deep_rule_is_measured_and_refined(three):
    """The quadrature error of a deep rule is measured as the two-level rule's (twice the
    nodes of every level below the top, 1.5 times the top's) and a rule too coarse for it is
    refined: 3 x 3 below 4 moves the estimate by 0.3 SE; the fit ends on a finer rule within
    the 0.1 SE tolerance, and within that of the default fit."""
    _, mod, res = three
    fit = _quiet(mod.fit, random_state=0, disp=False, sampler="quadrature",
                 sampler_options={"n_nodes": 3, "outer_nodes": 4})
    q = fit.fit_log.quadrature
    assert q["refinements"] and q["refinements"][0]["nodes"] == (3, 4)
    assert q["refinements"][0]["max_step_in_se"] > 0.1
    assert q["max_step_in_se"] <= 0.1 and fit.fit_options.sampler_options["n_nodes"] > 3
    np.testing.assert_array_less(np.abs(np.asarray(fit.params) - np.asarray(res.params)),
                                 (q["max_step_in_se"] + res.fit_log.quadrature[
                                     "max_step_in_se"]) * 3 * np.asarray(res.bse) + 1e-8)
