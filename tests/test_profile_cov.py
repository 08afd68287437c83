"""Profile intervals of a correlated ``(1 + x | g)`` term against the exact likelihood.

The reference is a separate path: the exact log-likelihood of the Bernoulli model by
two-dimensional Gauss-Hermite quadrature over each group's effects (a node study checks it),
profiled by brute force (a BFGS maximization over the other parameters at each value of the
profiled one) and its ends located by root finding.  The Monte Carlo profile's ends must
agree within a multiple of their Monte Carlo standard errors (plus the root finders'
tolerances).
"""

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import optimize, stats
from scipy.special import logsumexp

from glmm_sm import MonteCarloGLMM

CUT = float(stats.chi2.ppf(0.95, 1))


class ExactLoglike:
    """Exact log-likelihood by Gauss-Hermite quadrature on the prior scale (``u = L v``)."""

    def __init__(self, df, n_nodes):
        self.y = df["y"].to_numpy(float)
        self.x = df["x"].to_numpy(float)
        self.g = df["g"].to_numpy(int)
        t, w = np.polynomial.hermite.hermgauss(n_nodes)
        T1, T2 = np.meshgrid(t, t, indexing="ij")
        self.v = np.sqrt(2.0) * np.stack([T1.ravel(), T2.ravel()])  # (2, K)
        self.logw = np.log(np.outer(w, w).ravel() / np.pi)
        self.G = self.g.max() + 1

    def __call__(self, beta0, beta1, v0, cov, v1):
        S = np.array([[v0, cov], [cov, v1]])
        try:
            L = np.linalg.cholesky(S)
        except np.linalg.LinAlgError:
            return -np.inf
        u = L @ self.v  # (2, K)
        eta = (beta0 + beta1 * self.x)[:, None] + u[0][None, :] + self.x[:, None] * u[1][None, :]
        ll = self.y[:, None] * eta - np.logaddexp(0.0, eta)  # (n, K)
        per = np.zeros((self.G, ll.shape[1]))
        np.add.at(per, self.g, ll)
        return float(np.sum(logsumexp(per + self.logw[None, :], axis=1)))


def _theta(q, fixed):
    """(beta0, beta1, v0, cov, v1) from the free coordinates ``q`` and the fixed one."""
    full = dict(zip([k for k in ("b0", "b1", "s0", "s1", "z") if k not in fixed], q, strict=True))
    full.update(fixed)
    v0, v1 = np.exp(2 * full["s0"]), np.exp(2 * full["s1"])
    return full["b0"], full["b1"], v0, np.tanh(full["z"]) * np.sqrt(v0 * v1), v1


def _maximize(ll, fixed, start):
    keys = [k for k in ("b0", "b1", "s0", "s1", "z") if k not in fixed]
    q0 = np.array([start[k] for k in keys])
    r = optimize.minimize(lambda q: -ll(*_theta(q, fixed)), q0, method="BFGS",
                          options={"gtol": 1e-7})
    return -r.fun, dict(zip(keys, r.x, strict=True))


@pytest.fixture(scope="module")
def fitted(slope_data):
    mod = MonteCarloGLMM.from_formula("y ~ x + (1 + x | g)", data=slope_data,
                                      family=sm.families.Binomial())
    # importance sampling, as the Monte Carlo profile is what these tests check (the
    # default for one grouping factor is now a deterministic fit, whose profiles
    # tests/test_vector_quadrature.py checks)
    return mod.fit(random_state=0, disp=False, n_jobs=1, sampler="laplace")


@pytest.fixture(scope="module")
def exact(slope_data, fitted):
    ll = ExactLoglike(slope_data, 32)
    p = np.asarray(fitted.params)
    rho = p[3] / np.sqrt(p[2] * p[4])
    start = dict(b0=p[0], b1=p[1], s0=0.5 * np.log(p[2]), s1=0.5 * np.log(p[4]),
                 z=np.arctanh(rho))
    lmax, top = _maximize(ll, {}, start)
    # Node study: 24 nodes per dimension change the value at the maximum by less than
    # 1e-3, so the reference deviance is exact to well below its comparison's Monte Carlo
    # error (twice llf_mcse at least: 0.04 here).
    assert abs(ExactLoglike(slope_data, 24)(*_theta([], top)) - lmax) < 1e-3
    assert 2.0 * fitted.llf_mcse > 20 * 1e-3
    return ll, lmax, top


def _exact_end(exact, key, lo, hi):
    """Where the exact profile deviance in coordinate ``key`` crosses the chi2(1) cut."""
    ll, lmax, top = exact

    def dev(v):
        start = {k: val for k, val in top.items() if k != key}
        return 2.0 * (lmax - _maximize(ll, {key: v}, start)[0]) - CUT

    return optimize.brentq(dev, lo, hi, xtol=1e-6), dev


def test_profile_ends_of_a_correlation_and_a_slope_variance_match_the_exact_profile(
        fitted, exact):
    ci = fitted.profile_conf_int(cols=None)
    assert {"g Var(x)", "g Corr(x, Intercept)", "g Cov(x, Intercept)"} <= set(ci.index)
    _, _, top = exact
    # The slope's variance (coordinate log SD): both ends.
    row = ci.loc["g Var(x)"]
    for side, end, mcse in ((-1, row["lower"], row["lower_mcse"]),
                            (+1, row["upper"], row["upper_mcse"])):
        s_end = 0.5 * np.log(end)
        ref, _ = _exact_end(exact, "s1", top["s1"], s_end + side * 0.5)
        ref_var = np.exp(2 * ref)
        # The root finder stops at |zeta - target| < 2e-3, about 2e-3 profile SEs.
        tol = 4.0 * mcse + 3e-3 * abs(end - fitted.params["g Var(x)"])
        assert abs(end - ref_var) <= tol, (side, end, ref_var, mcse)
    # The correlation: its lower end; its upper end at the edge +1 exactly when the exact
    # profile deviance stays below the cut up to rho = 0.9999.
    row = ci.loc["g Corr(x, Intercept)"]
    ref, dev = _exact_end(exact, "z", np.arctanh(row["lower"]) - 0.5, top["z"])
    tol = 4.0 * row["lower_mcse"] + 3e-3 * abs(row["lower"] - np.tanh(top["z"]))
    assert abs(row["lower"] - np.tanh(ref)) <= tol, (row["lower"], np.tanh(ref))
    edge = dev(np.arctanh(0.9999)) < 0
    assert (row["upper"] == 1.0) == edge, (row["upper"], edge)
    if edge:
        assert "edge +1" in row["note"]


def test_profile_interfaces_for_correlated_terms(fitted):
    ci = fitted.conf_int(method="profile", cols=["g Var(x)"])
    assert ci.shape == (5, 2)
    full = fitted.profile_conf_int(cols=["g Var(x)"])
    assert np.allclose(ci.loc["g Var(x)"].to_numpy(float),
                       full.loc["g Var(x)", ["lower", "upper"]].to_numpy(float))
    vc = fitted.varcorr(ci="profile")
    assert list(vc.columns[:5]) == ["grp", "var1", "var2", "vcov", "sdcor"]
    sd = vc[(vc.var1 == "x") & (vc.var2 == "")].iloc[0]
    assert np.isclose(sd["lower"] ** 2, full.loc["g Var(x)", "lower"])
    assert sd["lower"] < sd["sdcor"] < sd["upper"]
    corr = vc[vc.var2 != ""].iloc[0]
    assert -1.0 <= corr["lower"] < corr["sdcor"] <= corr["upper"] <= 1.0
    frame = fitted.profile("g Corr(x, Intercept)", alpha=0.05, n_points=3)
    assert {"value", "zeta", "deviance"} <= set(frame.columns)
    assert np.all(np.diff(frame["zeta"].to_numpy()) > -0.05)  # increasing up to noise
    import matplotlib

    matplotlib.use("Agg")
    fig = fitted.plot_profile("g Corr(x, Intercept)", profile=frame)
    assert fig.axes[0].get_xlabel() == "g Corr(x, Intercept)"
