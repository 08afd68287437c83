"""Profile likelihood: intervals and curves from the Monte Carlo log-likelihood.

* BoothHobert (one random intercept per cluster) has an exact likelihood by Gauss-Hermite
  quadrature (MCLA_SPEC 8.1); its exact profile intervals, computed here, must match the
  Monte Carlo ones within 4 reported MCSEs of each end.
* On the fit's frozen draws the profile deviance is 0 at the estimate and its curvature is
  the observed information (``1 / cov_jj``), both up to the optimizer's tolerance.
* For a well-determined fixed effect the profile interval is the Wald interval shifted by
  the likelihood's skewness (second-order Taylor expansion of the profile deviance).
* A variance's lower end is 0 when ``D(0)`` is below the cut, and for an estimate at 0.
* Salamander (crossed effects, where the profile needs fresh draws on both sides): every
  deviance is >= 0 and zeta increases along the curve, each step resolved beyond its MCSE;
  the deviance MCSE of a point on fresh draws matches the spread over independent draw sets.
* Coverage on salamander-shaped data (crossed ``F``/``M`` effects, few levels): profile
  intervals for a variance are closer to 95% than Wald's (slow).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from scipy.optimize import brentq, minimize, minimize_scalar
from scipy.special import logsumexp

from glmm_sm import MonteCarloGLMM
from glmm_sm.datasets import load
from glmm_sm.inference.profile import ZETA_TOL, Profiler, paired_deviance_mcse

CUT = stats.chi2.ppf(0.95, 1)


def _fit(model, seed=1, m=4000):
    return model.fit(random_state=seed, disp=False, n_jobs=1, m=m)


# ---------------------------------------------------------------- exact reference
class _Quadrature:
    """BoothHobert's exact log-likelihood (Bernoulli, ``y ~ 0 + x1``, intercept per ``z1``)
    by 100-node Gauss-Hermite quadrature per cluster (one-dimensional integrals, exact to
    rounding for these smooth integrands), and its exact profile intervals."""

    def __init__(self, df, nodes=100):
        self.y, self.x = df["y"].to_numpy(float), df["x1"].to_numpy(float)
        self.g = df["z1"].astype(int).to_numpy() - 1
        self.t, self.w = np.polynomial.hermite.hermgauss(nodes)

    def loglike(self, beta, nu):
        eta = self.x[:, None] * beta + np.sqrt(2 * nu) * self.t[None, :]
        ll = self.y[:, None] * eta - np.logaddexp(0.0, eta)
        S = np.zeros((self.g.max() + 1, len(self.t)))
        np.add.at(S, self.g, ll)
        return float(np.sum(logsumexp(S + np.log(self.w), axis=1))
                     - S.shape[0] * 0.5 * np.log(np.pi))

    def intervals(self):
        r = minimize(lambda v: -self.loglike(v[0], np.exp(v[1])), [6.0, 0.5],
                     method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12})
        bh, nh, lh = r.x[0], np.exp(r.x[1]), -r.fun

        def dev_nu(s):
            best = minimize_scalar(lambda b: -self.loglike(b, np.exp(s)),
                                   bracket=(bh - 1, bh + 1))
            return 2 * (lh + best.fun) - CUT

        def dev_beta(b):
            best = minimize_scalar(lambda s: -self.loglike(b, np.exp(s)),
                                   bracket=(np.log(nh) - 1, np.log(nh) + 1))
            return 2 * (lh + best.fun) - CUT

        nu = [np.exp(brentq(dev_nu, np.log(1e-3), np.log(nh), xtol=1e-12)),
              np.exp(brentq(dev_nu, np.log(nh), np.log(100), xtol=1e-12))]
        beta = [brentq(dev_beta, bh - 5, bh, xtol=1e-12), brentq(dev_beta, bh, bh + 6,
                                                                  xtol=1e-12)]
        return {"x1": beta, "z1": nu}, (bh, nh)


@pytest.fixture(scope="module")
def booth():
    df = load("BoothHobert")
    model = MonteCarloGLMM.from_formula("y ~ 0 + x1", {"z1": "0 + C(z1)"}, df,
                                        family=sm.families.Binomial())
    return df, _fit(model)


def test_boothhobert_profile_intervals_match_exact_quadrature(booth):
    df, res = booth
    exact, mle = _Quadrature(df).intervals()
    np.testing.assert_allclose(mle, [6.132163, 1.766462], atol=1e-5)  # MCLA_SPEC 8.1
    ci = res.profile_conf_int()
    for name in ("x1", "z1"):
        row = ci.loc[name]
        width = row["upper"] - row["lower"]
        for end, k in (("lower", 0), ("upper", 1)):
            err = abs(row[end] - exact[name][k])
            mcse = row[f"{end}_mcse"]
            # 4 MCSEs, plus the root finder's tolerance (|zeta - target| < 1e-3 out of a
            # zeta span of 3.9 over the interval)
            assert 0 < mcse and err <= 4 * mcse + 1e-3 * width, (name, end, err, mcse)
    # the variance's interval is skewed: positive lower end where Wald's is negative
    wald = res.conf_int()
    assert wald.loc["z1", 0] < 0 < ci.loc["z1", "lower"] < res.params["z1"]
    assert ci.loc["z1", "upper"] - res.params["z1"] > wald.loc["z1", 1] - res.params["z1"]
    np.testing.assert_array_equal(res.conf_int(method="profile").to_numpy(),
                                  ci[["lower", "upper"]].to_numpy())


def test_boundary_component_with_others_left_booth2():
    """Booth2 (MCLA_SPEC 8): ``z2`` ends at 0, leaving BoothHobert's model, so the profiles
    of ``x1`` and ``z1`` (on the fit without ``z2``, ``z2`` held at 0) are BoothHobert's
    exact ones; ``z2``'s interval is ``[0, upper]`` from fresh draws of the full model."""
    df = load("Booth2")
    model = MonteCarloGLMM.from_formula("y ~ 0 + x1", {"z1": "0 + C(z1)", "z2": "0 + C(z2)"},
                                        df, family="bernoulli")
    res = _fit(model, seed=2)
    assert res.boundary == ["z2"]
    exact, _ = _Quadrature(load("BoothHobert")).intervals()
    ci = res.profile_conf_int()
    for name in ("x1", "z1"):
        width = ci.loc[name, "upper"] - ci.loc[name, "lower"]
        for k, end in enumerate(("lower", "upper")):
            err = abs(ci.loc[name, end] - exact[name][k])
            assert err <= 4 * ci.loc[name, f"{end}_mcse"] + 1e-3 * width, (name, end, err)
    row = ci.loc["z2"]
    assert row["lower"] == 0 and 0 < row["upper"] < np.inf and "boundary" in row["note"]
    assert 0 < row["upper_mcse"] < 0.1 * row["upper"]


def test_deviance_zero_at_the_estimate_and_curvature_is_the_information(booth):
    """On the final draws ``l_m`` is maximized at ``params`` and ``cov_params`` is the
    inverse of ``-H``, so ``D(psi_hat +- h) = h^2 / cov_jj + O(h^3)``: the mean of the two
    sides is ``h^2 / cov_jj`` up to a relative ``O(h^2)`` (1e-4 for h = 0.01 SE)."""
    _, res = booth
    cov = np.asarray(res.cov_params())
    for j, name in enumerate(res.params.index):
        prof = Profiler(res, name)
        psi, se = float(res.params[name]), float(np.sqrt(cov[j, j]))
        at = prof.point(psi)
        assert abs(prof.deviance(at)) < 1e-10 and abs(at.slope) < 1e-6
        h = 0.01 * se
        d = [prof.deviance(prof.point(psi + s * h)) for s in (-1, 1)]
        assert all(v > 0 for v in d)
        assert np.mean(d) / h**2 == pytest.approx(1 / cov[j, j], rel=1e-3)
        assert np.sign(prof.zeta(prof.point(psi + h))) == 1


def test_profile_curve_format(booth):
    _, res = booth
    frame = res.profile("z1", n_points=3)
    assert list(frame.columns) == ["value", "loglike", "deviance", "zeta"]
    assert np.all(np.diff(frame["value"]) > 0) and np.all(np.diff(frame["zeta"]) > 0)
    np.testing.assert_allclose(frame["deviance"], 2 * (res.llf_mc - frame["loglike"]))
    np.testing.assert_allclose(np.sign(frame["zeta"]) * frame["zeta"] ** 2,
                               np.sign(frame["value"] - res.params["z1"]) * frame["deviance"],
                               atol=1e-12)
    at = frame.index[frame["value"] == res.params["z1"]]
    assert len(at) == 1 and frame.loc[at[0], "deviance"] == 0
    mcse = np.asarray(frame.attrs["deviance_mcse"])
    assert np.all(frame["deviance"] >= -4 * mcse)
    # The curve spans the 99% interval (alpha = 0.01, as lme4's profile): it reaches
    # zeta = z_{0.995} above; below, D(0) = 6.1 < chi2_{1, 0.99} = 6.63, so it stops at 0.
    zmax = stats.norm.ppf(0.995)
    assert frame["zeta"].iloc[-1] == pytest.approx(zmax, abs=2 * ZETA_TOL)
    assert frame["value"].iloc[0] == 0 and -zmax < frame["zeta"].iloc[0] < -2
    assert frame.attrs["name"] == "z1" and frame.attrs["estimate"] == res.params["z1"]
    assert frame.attrs["lower"] == 0 and frame.attrs["upper"] == frame["value"].iloc[-1]
    beta = res.profile("x1", n_points=2)  # by name; two points a side, the ends included
    assert beta["value"].size == 5
    np.testing.assert_allclose(beta["zeta"].iloc[[0, -1]], [-zmax, zmax], atol=2 * ZETA_TOL)
    assert res.profile(1, n_points=1)["value"].iloc[0] == 0  # by position


def test_well_determined_fixed_effect_agrees_with_wald():
    """Poisson, 30 clusters of 10: the slope's profile deviance is nearly quadratic.  With
    ``D(psi_hat + t se) = t^2 + a t^3 + O(t^4)`` the ends move from Wald's ``+-z`` by
    ``-a z^2 / 2`` (to second order); ``a`` is read off ``D(+-se)`` and the remaining
    error is the quartic term ``b z^2`` (``b`` from the mean of ``D(+-se)``), the root
    tolerance and 4 MCSEs."""
    rng = np.random.default_rng(5)
    J, n = 30, 10
    g = np.repeat(np.arange(J), n)
    x = rng.normal(size=J * n)
    y = rng.poisson(np.exp(0.5 + 0.3 * x + rng.normal(scale=0.55, size=J)[g]))
    df = pd.DataFrame({"y": y, "x": x, "g": g})
    res = _fit(MonteCarloGLMM.from_formula("y ~ x", {"g": "0 + C(g)"}, df, family="poisson"))
    ci = res.profile_conf_int(cols="x").loc["x"]
    wald = np.asarray(res.conf_int())[1]
    se, psi = float(res.bse["x"]), float(res.params["x"])
    prof = Profiler(res, "x")
    d_minus, d_plus = (prof.deviance(prof.point(psi + s * se)) for s in (-1, 1))
    a, b = (d_plus - d_minus) / 2, (d_plus + d_minus) / 2 - 1
    z = stats.norm.ppf(0.975)
    for end, w in (("lower", wald[0]), ("upper", wald[1])):
        shift = (ci[end] - w) / se
        assert abs(shift) < 0.02
        tol = abs(b) * z**2 + 2 * ZETA_TOL + 4 * ci[f"{end}_mcse"] / se + a**2 * z**3
        assert abs(shift + a * z**2 / 2) <= tol, (end, shift, -a * z**2 / 2, tol)


def test_variance_lower_end_at_zero():
    """A small variance: ``D(0)`` (the GLM, exact) is below the cut, so the lower end is 0;
    the upper end is positive and finite, the estimate inside."""
    rng = np.random.default_rng(2)
    J, n = 10, 6
    g = np.repeat(np.arange(J), n)
    x = rng.normal(size=J * n)
    eta = 0.2 + 0.8 * x + rng.normal(scale=0.4, size=J)[g]
    df = pd.DataFrame({"y": rng.binomial(1, 1 / (1 + np.exp(-eta))), "x": x, "g": g})
    res = _fit(MonteCarloGLMM.from_formula("y ~ x", {"g": "0 + C(g)"}, df,
                                           family="bernoulli"))
    assert not res.boundary and res.params["g"] > 0
    ci = res.profile_conf_int()
    row = ci.loc["g"]
    assert row["lower"] == 0 and row["lower_mcse"] == 0 and "D(0)" in row["note"]
    assert res.params["g"] < row["upper"] < np.inf
    glm = sm.GLM.from_formula("y ~ x", df, family=sm.families.Binomial()).fit()
    d0 = 2 * (res.llf - glm.llf)
    assert f"D(0) = {d0:.3g}" in row["note"] and d0 <= CUT
    assert np.all(ci["lower"] <= res.params) and np.all(res.params <= ci["upper"])
    frame = res.profile("g", n_points=2)
    assert frame["value"].iloc[0] == 0
    assert frame["deviance"].iloc[0] == pytest.approx(d0, abs=1e-9 + 8 * res.llf_mcse)


def test_boundary_estimates_and_exact_glm_profiles():
    """murder: both components end at 0, the fit is the Poisson GLM.  The fixed effects'
    profiles are then exact (the GLM refitted with the profiled coefficient as an offset);
    a component's interval starts at 0 and ends where its (re-drawn) profile crosses the
    cut."""
    df = load("murder")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = MonteCarloGLMM.from_formula("y ~ race", {"black": "0 + C(black)",
                                                         "white": "0 + C(white)"}, df,
                                            family="poisson")
    res = _fit(model)
    assert res.boundary == ["black", "white"] and res.engine is None
    ci = res.profile_conf_int()
    glm = sm.GLM.from_formula("y ~ race", df, family=sm.families.Poisson()).fit()
    white = (df["race"] == "White").to_numpy(float)

    def dev(b):
        fit = sm.GLM(df["y"], np.ones((len(df), 1)), family=sm.families.Poisson(),
                     offset=b * white).fit()
        return 2 * (glm.llf - fit.llf) - CUT

    b, se = glm.params.iloc[1], glm.bse.iloc[1]
    exact = [brentq(dev, b - 4 * se, b, xtol=1e-12), brentq(dev, b, b + 4 * se, xtol=1e-12)]
    np.testing.assert_allclose(ci.loc["race[T.White]", ["lower", "upper"]], exact,
                               atol=2 * ZETA_TOL * se)
    assert np.all(ci.loc[["Intercept", "race[T.White]"], ["lower_mcse", "upper_mcse"]] == 0)
    for name in ("black", "white"):
        row = ci.loc[name]
        assert row["lower"] == 0 and "boundary" in row["note"]
        assert 0 < row["upper"] < np.inf and row["upper_mcse"] < 0.1 * row["upper"]
    frame = res.profile("black", n_points=2)
    assert frame["value"].iloc[0] == 0 and frame["deviance"].iloc[0] == 0
    assert np.all(np.diff(frame["deviance"]) > 0)


def test_conf_int_methods_and_arguments(booth):
    _, res = booth
    wald = res.conf_int(alpha=0.1)
    z = stats.norm.ppf(0.95)
    expected = np.column_stack([res.params - z * res.bse, res.params + z * res.bse])
    np.testing.assert_allclose(wald.to_numpy(), expected, rtol=1e-14)
    assert isinstance(wald, pd.DataFrame) and list(wald.index) == ["x1", "z1"]
    part = res.conf_int(alpha=0.1, cols=["z1"])
    assert np.all(np.isnan(part.loc["x1"])) and np.allclose(part.loc["z1"], wald.loc["z1"])
    prof = res.conf_int(cols=[1], method="profile")
    assert np.isnan(prof.loc["x1", 0]) and prof.loc["z1", 0] > 0
    for kwargs, match in (({"method": "score"}, "method"), ({"alpha": 1.5}, "alpha"),
                          ({"cols": ["nope"]}, "cols"), ({"cols": [7]}, "cols")):
        with pytest.raises(ValueError, match=match):
            res.conf_int(**kwargs)
    with pytest.raises(ValueError, match="n_points"):
        res.profile("z1", n_points=0)
    lap = res.model.fit(method="laplace")
    with pytest.raises(ValueError, match="Laplace"):
        lap.conf_int(method="profile")


# ---------------------------------------------------------------- fresh draws: salamander
@pytest.fixture(scope="module")
def salamander_model():
    return MonteCarloGLMM.from_formula("Mate ~ 0 + Cross",
                                       {"F": "0 + C(Female)", "M": "0 + C(Male)"},
                                       load("salamander"), family="bernoulli")


def _newton_decrement(res):
    """``g' (-H)^{-1} g / 2`` at ``params`` on the fit's draws: how far ``llf_mc`` may lie
    below the maximum of ``l_m`` on those draws when the optimizer stopped."""
    ev = res.engine.evaluate(np.asarray(res.params, dtype=float))
    return 0.5 * float(ev.gradient @ np.linalg.solve(-ev.hessian, ev.gradient))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_salamander_profile_deviance_nonnegative_and_zeta_monotone(salamander_model, seed):
    """Regression (seed 0: a point at ``nu_F = 0.786`` on draws centred far from it had
    ``loglike`` above ``llf_mc``, ``D = -0.26`` with MCSE 1.5, and a spike in the zeta plot).
    Every ``D`` compares two values of one Monte Carlo log-likelihood or two estimates of
    the maximum, so ``D >= 0`` up to the fit's optimizer (its Newton decrement on the final
    draws).  ``zeta`` increases strictly, and each step of ``D`` between neighbours is
    larger than the point's MCSE, so the monotone curve is the likelihood's, not noise."""
    res = salamander_model.fit(random_state=seed, disp=False, n_jobs=1)
    frame = res.profile("F")
    assert np.all(np.diff(frame["value"]) > 0) and frame.shape[0] == 17
    dev, zeta = frame["deviance"].to_numpy(), frame["zeta"].to_numpy()
    assert np.all(dev >= -(_newton_decrement(res) + 1e-12)), dev
    assert np.all(np.diff(zeta) > 0), zeta
    np.testing.assert_allclose(frame["loglike"], res.llf_mc - dev / 2, rtol=0, atol=1e-9)
    mcse = np.asarray(frame.attrs["deviance_mcse"])
    steps = np.abs(np.diff(dev))
    nearest_step = np.minimum(np.r_[np.inf, steps], np.r_[steps, np.inf])
    assert np.all(mcse < nearest_step), (mcse, nearest_step)
    sets = np.asarray(frame.attrs["draw_set"])
    assert np.any(sets[frame["value"] < res.params["F"]] > 0)  # fresh draws were needed
    assert np.any(sets[frame["value"] > res.params["F"]] > 0)


@pytest.mark.slow
def test_fresh_draws_deviance_mcse_matches_spread_over_draw_sets(salamander_model):
    """At a point below ``nu_hat`` and one above, ``D`` on R = 40 independent fresh draw sets
    centred there: the sample SD of ``D`` over the sets against the root mean square of the
    reported MCSEs.  The fit's ``llf_mc`` is common to all sets, so its share
    ``(2 llf_mcse)^2`` of an across-sets MCSE does not vary and is taken out.  The ratio must
    lie in ``tests/calibration.py``'s band for n = 40 and 2 points, ``[0.628, 1.408]``
    (both pass with probability 99.9% when the MCSEs are right; an MCSE off by a factor 2
    fails with probability 0.996 if too small, 0.988 if too large; the earlier R = 10 with a
    two-sided 0.002 test caught these 0.64 and 0.13 of the time).  The fit uses m = 1000
    (the draw sets have the fit's m), so 40 sets cost what 10 did at the default m = 4000.
    Each point's ``D`` is also at least 0 and at most as uncertain as the same-set estimate
    (where the set covers its own maximum; else the across-sets estimate is used)."""
    from calibration import band

    res = salamander_model.fit(random_state=0, disp=False, n_jobs=1, m=1000)
    R, lhat_var = 40, (2 * res.llf_mcse) ** 2
    for psi in (0.6, 2.2):
        dev, var = [], []
        for r in range(R):
            prof = Profiler(res, "F", random_state=500 + r)
            on_fit = prof._optimum(0, psi, prof._start(psi))
            pt = prof._optimum(prof.sets.add(on_fit.theta), psi, on_fit.theta)
            d, mcse = prof.sets.deviance(pt)
            across = mcse == pytest.approx(2 * np.hypot(res.llf_mcse, pt.mcse), rel=1e-12)
            top = prof.sets.maximum(pt.engine)  # None: the set does not cover its maximum
            if top is not None:
                paired = paired_deviance_mcse(prof.sets.engines[pt.engine], top.theta,
                                              pt.theta)
                assert mcse <= paired + 1e-12
            assert d >= 0 and (across or top is not None)
            dev.append(d)
            var.append(mcse**2 - lhat_var if across else mcse**2)
        ratio = np.std(dev, ddof=1) / np.sqrt(np.mean(var))
        lo, hi = band(R, 2)
        assert lo <= ratio <= hi, (psi, ratio, (lo, hi))


# ---------------------------------------------------------------- coverage (slow)
def _salamander_like(rng, n_blocks=2, per_species=3, per_female=3, nu=1.5):
    """Blocks as in the salamander experiment: females and males of two species each,
    every female mated with ``per_female`` random males of each species; crossed random
    effects ``F`` and ``M``; four cross types (salamander's estimates as fixed effects)."""
    rows, f0 = [], 0
    for _ in range(n_blocks):
        species = ["R"] * per_species + ["W"] * per_species
        for i, fs in enumerate(species):
            for ms in "RW":
                pool = [f0 + j for j, s in enumerate(species) if s == ms]
                for mate in rng.choice(pool, size=per_female, replace=False):
                    rows.append((f0 + i, int(mate), f"{fs}/{ms}"))
        f0 += len(species)
    df = pd.DataFrame(rows, columns=["Female", "Male", "Cross"])
    beta = {"R/R": 1.0, "R/W": 0.3, "W/R": -1.7, "W/W": 1.0}
    eta = (df["Cross"].map(beta).to_numpy()
           + rng.normal(scale=np.sqrt(nu), size=f0)[df["Female"]]
           + rng.normal(scale=np.sqrt(nu), size=f0)[df["Male"]])
    df["Mate"] = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    return df


@pytest.mark.slow
def test_profile_coverage_beats_wald_for_a_variance_on_salamander_shaped_data():
    """R = 40 data sets of 72 matings (12 females, 12 males, 2 blocks), ``nu_F = nu_M =
    1.5``; 95% intervals for ``nu_F``.  Few levels make the likelihood in ``nu`` strongly
    skewed (and put some estimates at 0, where the Wald interval is undefined), so Wald
    under-covers (about 70% in a trial run) while the profile interval is close to 95%.

    Claims, with the simulation's own error: (1) McNemar's exact one-sided test that the
    profile covers more often than Wald, on the discordant pairs, at level 0.01; (2) the
    profile's coverage count is consistent with 95% (two-sided binomial test at 0.01);
    (3) the profile's coverage is closer to 0.95 than Wald's."""
    R, nu = 40, 1.5
    wald_cov, prof_cov = [], []
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in range(R):
            df = _salamander_like(np.random.default_rng(1000 + r), nu=nu)
            model = MonteCarloGLMM.from_formula(
                "Mate ~ 0 + Cross", {"F": "0 + C(Female)", "M": "0 + C(Male)"}, df,
                family=sm.families.Binomial())
            res = _fit(model, seed=r, m=3000)
            w = np.asarray(res.conf_int())[4]
            p = res.profile_conf_int(cols="F").loc["F"]
            wald_cov.append(bool(w[0] <= nu <= w[1]))
            prof_cov.append(bool(p["lower"] <= nu <= p["upper"]))
            assert p["lower"] >= 0 and p["lower"] <= res.params["F"] <= p["upper"]
    wald_cov, prof_cov = np.array(wald_cov), np.array(prof_cov)
    only_prof = int(np.sum(prof_cov & ~wald_cov))
    only_wald = int(np.sum(wald_cov & ~prof_cov))
    print(f"\ncoverage over {R} data sets: Wald {wald_cov.mean():.3f}, profile "
          f"{prof_cov.mean():.3f}; discordant {only_prof} (profile only) / {only_wald} (Wald "
          f"only); {time.perf_counter() - t0:.1f} s")
    mcnemar = stats.binomtest(only_prof, only_prof + only_wald, 0.5, alternative="greater")
    assert mcnemar.pvalue < 0.01
    assert stats.binomtest(int(prof_cov.sum()), R, 0.95).pvalue > 0.01
    assert abs(prof_cov.mean() - 0.95) < abs(wald_cov.mean() - 0.95)
