"""The negative binomial family (NB2: variance ``mu + alpha mu^2``, log link; issue 22).

* Finite-difference checks of the Monte Carlo log-likelihood's gradient and Hessian with
  ``alpha`` included, on frozen and on moving draws, for the numba and the numpy kernels
  (the tolerance of tests/test_derivatives.py: ``max |fd - analytic| <= 1e-6 * ||analytic||``
  with central differences of step ``1e-5 max(|x|, 0.1)``, whose truncation and roundoff
  errors are ~1e-9 of the norm here), and the two kernels agree to roundoff.
* ``alpha -> 0`` is the Poisson model: the log-density differs from Poisson's by
  ``alpha ((y - mu)^2 - y) / 2 + O(alpha^2)`` per observation.
* The exact reference: glmmTMB's Owls model fitted by adaptive Gauss-Hermite quadrature
  (tests/aghq.py, independent of glmm_sm), every estimate within 3 MCSE plus the
  quadrature's node-study error, standard errors within 10%.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import patsy
import pytest
import statsmodels.api as sm
from aghq import NegBinRandomIntercept

from glmm_sm import MonteCarloGLMM
from glmm_sm.spec.families import nb_constant, nb_draw_terms

DATA = os.path.join(os.path.dirname(__file__), "data", "owls.csv")
FORMULA = "SiblingNegotiation ~ FoodTreatment * SexParent"
TOL = 1e-6


@pytest.fixture(scope="module")
def owls():
    return pd.read_csv(DATA)


def owls_model(d, family):
    return MonteCarloGLMM.from_formula(FORMULA, {"Nest": "0 + C(Nest)"}, data=d,
                                       family=family, offset=np.log(d.BroodSize))


@pytest.fixture(scope="module")
def nb_model(owls):
    mod = owls_model(owls, sm.families.NegativeBinomial(alpha=1.0))
    return mod, mod._laplace_estimate()


def _central(f, x, rel=1e-5):
    x = np.asarray(x, dtype=float)
    h = rel * np.maximum(np.abs(x), 0.1)
    return np.array([(np.atleast_1d(f(x + h[j] * e)) - np.atleast_1d(f(x - h[j] * e)))
                     / (2 * h[j]) for j, e in enumerate(np.eye(len(x)))]).T


@pytest.mark.parametrize("kernel", ["numba", "numpy"])
@pytest.mark.parametrize("shift", [True, False], ids=["moving", "frozen"])
def test_gradient_and_hessian_with_alpha(nb_model, kernel, shift):
    mod, est = nb_model
    mod.sample_draws(500, random_state=7, params=est.params, kernel=kernel, shift=shift)
    x = est.params * np.r_[1.02, 1, 1, 1, 1.1, 0.9] + np.r_[0.01, 0.02, 0, 0, 0, 0]
    ev = mod.evaluate(x)
    assert mod.data.param_names[-1] == "alpha"
    g = _central(mod.loglike, x).ravel()
    H = _central(mod.score, x)
    assert np.max(np.abs(g - ev.gradient)) <= TOL * np.linalg.norm(ev.gradient)
    assert np.max(np.abs(H - ev.hessian)) <= TOL * np.linalg.norm(ev.hessian)
    assert abs(ev.gradient[-1]) > 1.0  # the alpha score is really checked (not 0)


def test_kernels_agree(nb_model):
    mod, est = nb_model
    x = est.params * 1.01
    evs = []
    for kernel in ("numba", "numpy"):
        mod.sample_draws(300, random_state=3, params=est.params, kernel=kernel)
        evs.append(mod.evaluate(x))
    a, b = evs
    assert abs(a.value - b.value) <= 1e-10 * abs(a.value)
    np.testing.assert_allclose(a.gradient, b.gradient, rtol=0,
                               atol=1e-10 * np.linalg.norm(a.gradient))
    np.testing.assert_allclose(a.hessian, b.hessian, rtol=0,
                               atol=1e-10 * np.linalg.norm(a.hessian))
    np.testing.assert_allclose(a.score_var, b.score_var, rtol=0,
                               atol=1e-9 * np.linalg.norm(a.score_var))


def test_draw_terms_derivatives():
    """Each closed form of nb_draw_terms against differences, across the series switch."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 20, 50).astype(float)
    w = rng.uniform(0.5, 2, 50)
    eta = rng.normal(0, 2, 50)
    for a in (3e-3, 0.7, 5.0):
        t = nb_draw_terms(w * y, w, eta, a)
        he, ha = 1e-6, 1e-4 * a
        pe, me = nb_draw_terms(w * y, w, eta + he, a), nb_draw_terms(w * y, w, eta - he, a)
        pa, ma = nb_draw_terms(w * y, w, eta, a + ha), nb_draw_terms(w * y, w, eta, a - ha)
        for got, want in [(t.r, (pe.ll - me.ll) / (2 * he)), (t.h, -(pe.r - me.r) / (2 * he)),
                          (t.dh, (pe.h - me.h) / (2 * he)), (t.la, (pa.ll - ma.ll) / (2 * ha)),
                          (t.lea, (pa.r - ma.r) / (2 * ha)), (t.laa, (pa.la - ma.la) / (2 * ha)),
                          (t.ha, (pa.h - ma.h) / (2 * ha))]:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    # the limits at alpha -> 0 (Poisson): la -> w (mu^2 / 2 - y mu), laa -> w (y mu^2 -
    # 2 mu^3 / 3), h -> w mu
    mu = np.exp(eta)
    t = nb_draw_terms(w * y, w, eta, 1e-12)
    np.testing.assert_allclose(t.la, w * (mu**2 / 2 - y * mu), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(t.laa, w * (y * mu**2 - 2 * mu**3 / 3), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(t.h, w * mu, rtol=1e-9)
    # the constant: exact finite sums (y <= 200) and lgamma agree; derivatives
    yy = np.array([0.0, 1, 5, 150, 250, 400])
    for a in (0.05, 1.3):
        v, d1, d2 = nb_constant(yy, 1.0, a)
        from scipy.special import gammaln
        th = 1 / a
        np.testing.assert_allclose(v, np.sum(gammaln(yy + th) - gammaln(th) + yy * np.log(a)),
                                   rtol=1e-11)
        h = 1e-6 * a
        np.testing.assert_allclose(d1, (nb_constant(yy, 1.0, a + h)[0]
                                        - nb_constant(yy, 1.0, a - h)[0]) / (2 * h), rtol=1e-6)
        np.testing.assert_allclose(d2, (nb_constant(yy, 1.0, a + h)[1]
                                        - nb_constant(yy, 1.0, a - h)[1]) / (2 * h), rtol=1e-6)


def test_alpha_to_zero_is_poisson(owls, nb_model):
    """On the same draws, l_m(beta, nu, alpha) - l_m^Poisson(beta, nu) = alpha D + O(alpha^2)
    with ``D`` the importance-weighted mean of ``sum ((y - mu)^2 - y) / 2`` (the alpha score
    at 0): both the difference and its ratio to ``alpha`` are checked."""
    mod, est = nb_model
    pois = owls_model(owls, sm.families.Poisson())
    x = est.params[:-1]
    # The same draws need the same proposal: the NB sampler centred at alpha = 1e-12 has the
    # Poisson sampler's modes and precisions up to ~1e-12 (same seed, same draws).
    mod.sample_draws(400, random_state=5, params=np.r_[x, 1e-12], kernel="numpy")
    pois.sample_draws(400, random_state=5, params=x, kernel="numpy")
    lp = pois.loglike(x)
    ev0 = mod.evaluate(np.r_[x, 1e-6])
    d1 = ev0.gradient[-1]  # ~ D
    for a in (1e-4, 1e-5, 1e-6):
        diff = mod.loglike(np.r_[x, a]) - lp
        assert np.isfinite(diff)
        # |diff - a D| <= a^2 * C; C bounded by the second derivative's size at small alpha
        C = abs(mod.hessian(np.r_[x, 1e-6])[-1, -1])
        assert abs(diff - a * d1) <= a * a * C + 1e-9 * abs(lp), (a, diff, a * d1)


def test_owls_against_aghq(owls):
    """Owls (glmmTMB's example, 599 counts in 27 nests): the default MCLA fit against the
    exact AGHQ MLE (node study 25 vs 40 nodes gives the quadrature's own error)."""
    d = owls
    X = np.asarray(patsy.dmatrix("FoodTreatment * SexParent", d))
    ref = {}
    for K in (25, 40):
        ref[K] = NegBinRandomIntercept(d.SiblingNegotiation.values, X, d.Nest.values,
                                       np.log(d.BroodSize.values), n_nodes=K).fit()
        assert ref[K].success
    node_err = np.abs(ref[40].params - ref[25].params)
    # importance sampling (the default is the deterministic quadrature:
    # tests/test_nb_integrated.py)
    res = owls_model(d, sm.families.NegativeBinomial(alpha=1.0)).fit(random_state=1, disp=False,
                                                                      rao_blackwell=False)
    assert res.converged
    assert res.fit_log.sampler["used"] == "laplace"
    assert list(res.params.index[-2:]) == ["Nest", "alpha"]
    mcse = np.asarray(res.mcse())
    z = np.abs(np.asarray(res.params) - ref[40].params) / (mcse + node_err)
    assert np.all(z <= 3.0), z
    ratio = np.asarray(res.bse) / ref[40].bse
    assert np.all(np.abs(ratio - 1.0) <= 0.10), ratio
    # llf on the scale of the other packages (glmmTMB: -1741.805 at its Laplace MLE)
    assert abs(res.llf - ref[40].llf) <= 3 * res.llf_mcse + 0.05


def test_bad_alpha_and_link(owls):
    with pytest.raises(ValueError, match="alpha"):
        owls_model(owls, sm.families.NegativeBinomial(alpha=0.0))
    with pytest.raises(ValueError, match="log link"):
        owls_model(owls, sm.families.NegativeBinomial(link=sm.families.links.Identity()))


def test_aic_counts_alpha_and_simulate_is_overdispersed(owls):
    res = owls_model(owls, sm.families.NegativeBinomial(alpha=1.0)).fit(random_state=1,
                                                                        disp=False)
    assert abs(res.aic - (-2 * res.llf + 2 * 6)) < 1e-9
    th = res.theta
    a = float(res.params["alpha"])
    assert abs(th["estimate"] - 1 / a) < 1e-12 and abs(th["se"] - res.bse["alpha"] / a**2) < 1e-12
    # simulated counts at the fit: variance well above the mean (alpha ~ 1.2), per row
    y = res.simulate(400, random_state=2)
    m, v = y.mean(axis=1), y.var(axis=1)
    assert np.median(v / m) > 3.0


def test_lrtest_against_poisson_is_chibar(owls):
    """NB2 against the Poisson model with the same effects: alpha = 0 on the boundary, so
    the statistic's null is 0.5 chi2(0) + 0.5 chi2(1) (the chi2(1) p-value halved)."""
    from scipy import stats

    nb = owls_model(owls, sm.families.NegativeBinomial(alpha=1.0)).fit(random_state=1,
                                                                       disp=False)
    po = owls_model(owls, sm.families.Poisson()).fit(random_state=1, disp=False)
    from glmm_sm.inference.lrtest import lrtest

    lr = lrtest(nb, po)
    assert lr.mixture == ((0.5, 0), (0.5, 1))
    assert "alpha" in lr.dropped_vc
    assert abs(lr.statistic - 2 * (nb.llf - po.llf)) < 1e-6
    assert lr.statistic > 1000  # Owls are strongly overdispersed
    assert lr.pvalue == pytest.approx(0.5 * stats.chi2.sf(lr.statistic, 1), abs=1e-300)
    with pytest.raises(ValueError, match="swap"):
        lrtest(po, nb)


def test_laplace_matches_glmmtmb(owls):
    """The Laplace fit is the model glmmTMB's nbinom2 fits (tests/results/owls_glmmtmb.R,
    its output in owls_glmmtmb.txt): the same maximum up to the two optimizers' stopping
    (the log-likelihood's gradient at either is ~1e-6, moving estimates by ~1e-5)."""
    path = os.path.join(os.path.dirname(__file__), "results", "owls_glmmtmb.txt")
    ref = {}
    with open(path) as fh:
        for line in fh:
            key, *vals = line.split()
            if key in ("beta", "se", "nu", "theta", "logLik"):
                ref[key] = np.array(vals, dtype=float)
    lap = owls_model(owls, sm.families.NegativeBinomial(alpha=1.0)).fit_laplace()
    p = np.asarray(lap.params)
    np.testing.assert_allclose(p[:4], ref["beta"], atol=1e-4)
    np.testing.assert_allclose(np.asarray(lap.bse)[:4], ref["se"], rtol=1e-3)
    assert abs(p[4] - ref["nu"][0]) <= 1e-4
    assert abs(1.0 / p[5] - ref["theta"][0]) <= 1e-4
    assert abs(lap.llf - ref["logLik"][0]) <= 1e-5


def test_exposure_is_log_offset(owls):
    """``exposure=BroodSize`` is ``offset=log(BroodSize)``: the same likelihood on the same
    draws (statsmodels' meaning of exposure), for the negative binomial as for Poisson."""
    fam = sm.families.NegativeBinomial(alpha=1.0)
    a = owls_model(owls, fam)
    b = MonteCarloGLMM.from_formula(FORMULA, {"Nest": "0 + C(Nest)"}, data=owls, family=fam,
                                    exposure=owls.BroodSize)
    est = a._laplace_estimate()
    x = est.params * 1.01
    evs = []
    for mod in (a, b):
        mod.sample_draws(200, random_state=4, params=est.params)
        evs.append(mod.evaluate(x))
    assert abs(evs[0].value - evs[1].value) <= 1e-9 * abs(evs[0].value)
    np.testing.assert_allclose(evs[0].gradient, evs[1].gradient, rtol=1e-9, atol=1e-9)
