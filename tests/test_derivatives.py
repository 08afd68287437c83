"""Analytic gradient and Hessian of l_m against finite differences, on fixed draws.

On a frozen sample ``l_m(theta)`` is a smooth deterministic function, so ``score`` and
``hessian`` must be its exact derivatives (up to roundoff) whatever the Monte Carlo error of
``l_m`` itself.  Each model gets the default ("laplace") sampler built at the Laplace
estimate, ``m = 2000`` draws from a fixed seed, and is differentiated at a point near but not
at the Laplace estimate (``beta + delta * linspace(-1, 1, p)``, ``nu * (1 + delta)``).  By
default the draws move with the fixed effects (``u_k + du/dbeta (beta - beta0)``, the
engine's ``DrawShift``): ``l_m`` on those draws is again a fixed smooth function of theta,
whose derivatives carry the extra terms of the moving draws; the ``*_frozen`` cases check
the frozen draws (``shift=False``) as well.

Tolerance: ``max |fd - analytic| <= 1e-6 * ||analytic||_F``.  The error of a difference
quotient is absolute -- truncation ``~h^2 |f'''|`` and roundoff ``~eps |f| / h`` -- and sits
on the scale of the whole derivative, not of each entry: entries that are near zero (gradient
components close to the optimum, beta-nu cross terms of the Hessian) cannot be checked to a
relative accuracy, so the error is measured against the norm of the derivative.

Finite differences: statsmodels' ``approx_fprime(..., centered=True)`` (step
``eps^(1/3) max(|x|, 0.1)``) of ``loglike`` for the gradient and of ``score`` for the Hessian,
and, for every model, Ridders' polynomial extrapolation of central differences (Numerical
Recipes ``dfridr``), which also returns an error estimate ``err``.  The Ridders tests take
their tolerance from that estimate, not from one machine's run (the roundoff in ``err``
differs between CPUs): ``max |fd - analytic| <= RIDDERS_FACTOR * max(err) + ROUNDOFF *
||analytic||``.  ``err`` is the size of the last extrapolation step, the same order as the
actual error (measured ratio of actual error to ``max(err)``: 0.6-3.7 over the twelve
cases); the factor 10 leaves room for that, and ``ROUNDOFF = 1e-9`` covers the rounding of
the analytic sums over 2000 draws (~1e-12 of their norm) with room to spare.  So that the
check stays sharp, ``max(err)`` must itself be at most ``TOL`` of the norm (it is 1e-13 to
1.2e-7 here): a failure then means a wrong derivative, not a poor reference.

radish2 (Poisson, counts up to 4685) is badly conditioned for plain differences: ``l_m``
is ~7e5 (``-log y!`` is left out) and its gradient is a ~1e4-fold cancellation of the
per-draw scores, so ``eps |f| / h`` limits one-step centred differences to ~5e-6 of the
Hessian's norm -- above the tolerance.  On frozen draws the curvature scale in beta is ~3e-3
(the posterior sd of the effects), which rules out large steps: Ridders' extrapolation from
``h0 = 1e-3 max(|x|, 0.1)`` reaches ~2e-8 and is the only check used there.  On moving
draws ``l_m`` varies in beta on the scale of the likelihood itself, and its gradient near the
estimate is small (~1): Ridders from ``h0 = 1e-2 max(|x|, 0.1)`` (error ~5e-8).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import statsmodels.api as sm
from models import cbpp, cbpp_aggregated, radish2, salamander_binomial
from statsmodels.tools.numdiff import approx_fprime

import glmm_sm
from glmm_sm import MonteCarloGLMM

M_DRAWS = 2000
SEED = 2024
TOL = 1e-6
RIDDERS_FACTOR, ROUNDOFF = 10.0, 1e-9


def ridders(f, x, h0, con=1.4, ntab=10):
    """Derivative of ``f`` (scalar or vector valued) at ``x`` by Ridders' method.

    Returns ``(jac, err)``: ``jac[i, j] = d f_i / d x_j`` (a vector for scalar ``f``) and
    the method's error estimate of each entry.
    """
    x = np.asarray(x, dtype=float)
    f0 = np.atleast_1d(f(x))
    jac = np.empty((f0.size, x.size))
    err = np.empty((f0.size, x.size))
    for j in range(x.size):

        def central(h, j=j):
            xp, xm = x.copy(), x.copy()
            xp[j] += h
            xm[j] -= h
            return (np.atleast_1d(f(xp)) - np.atleast_1d(f(xm))) / (2.0 * h)

        h = h0[j]
        table = [[central(h)]]
        best, best_err = table[0][0], np.full(f0.size, np.inf)
        for i in range(1, ntab):
            h /= con
            row = [central(h)]
            fac = con * con
            for k in range(1, i + 1):
                row.append((row[k - 1] * fac - table[i - 1][k - 1]) / (fac - 1.0))
                fac *= con * con
                e = np.maximum(np.abs(row[k] - row[k - 1]), np.abs(row[k] - table[i - 1][k - 1]))
                better = e < best_err
                best = np.where(better, row[k], best)
                best_err = np.where(better, e, best_err)
            table.append(row)
            if np.all(np.abs(row[i] - table[i - 1][i - 1]) >= 2.0 * best_err):
                break
        jac[:, j] = best
        err[:, j] = best_err
    return (jac[0], err[0]) if np.ndim(f(x)) == 0 else (jac, err)


_salamander, _cbpp, _radish = salamander_binomial, cbpp, radish2


FROZEN = {"shift": False}

# name: (builder, shift delta, Ridders' first step relative to max(|x|, 0.1), sampler options)
CASES = {
    "salamander": (_salamander, 0.05, 1e-2, {}),
    "cbpp_binomial": (_cbpp, 0.05, 1e-2, {}),
    "radish2_poisson": (_radish, 0.01, 1e-2, {}),
    "salamander_frozen": (_salamander, 0.05, 1e-2, FROZEN),
    "cbpp_binomial_frozen": (_cbpp, 0.05, 1e-2, FROZEN),
    "radish2_poisson_frozen": (_radish, 0.01, 1e-3, FROZEN),
}


@functools.cache
def prepared(name):
    """The model with its draws, the evaluation point and the Evaluation there."""
    build, delta, h_rel, options = CASES[name]
    model = build()
    params, value, _ = model._laplace_estimate()
    assert np.all(np.isfinite(params)) and np.isfinite(value)
    draws = model.sample_draws(M_DRAWS, random_state=SEED, **options)
    assert draws.sampler.shift == options.get("shift", True)
    theta = params.copy()
    p = model.k_fe
    theta[:p] += delta * np.linspace(-1.0, 1.0, p)
    theta[p:] *= 1.0 + delta
    ev = model.evaluate(theta)
    assert np.isfinite(ev.value) and np.all(ev.ess > 1)
    return {"model": model, "theta": theta, "ev": ev, "h_rel": h_rel, "name": name}


@pytest.fixture(params=list(CASES))
def case(request):
    return prepared(request.param)


def _check_ridders(name, fd, err, exact, what):
    """Ridders' differences ``fd`` against ``exact`` to a tolerance from their own error
    estimate ``err`` (module docstring)."""
    scale = np.linalg.norm(exact)
    assert np.max(err) <= TOL * scale, (f"{name}: finite-difference reference not accurate "
                                        f"enough ({np.max(err) / scale:.2e} of the norm)")
    worst = np.max(np.abs(fd - exact))
    tol = RIDDERS_FACTOR * np.max(err) + ROUNDOFF * scale
    assert worst <= tol, (f"{name}: {what} differs from Ridders' differences by "
                          f"{worst / scale:.2e} of its norm (tolerance {tol / scale:.2e})")


def _check(name, approx, exact, what):
    scale = np.linalg.norm(exact)
    worst = np.max(np.abs(approx - exact))
    assert worst <= TOL * scale, (f"{name}: {what} differs from finite differences by "
                                  f"{worst / scale:.2e} of its norm")


def test_gradient_ridders(case):
    model, theta, ev = case["model"], case["theta"], case["ev"]
    h0 = case["h_rel"] * np.maximum(np.abs(theta), 0.1)
    fd, err = ridders(model.loglike, theta, h0)
    _check_ridders(case["name"], fd, err, ev.gradient, "gradient")
    np.testing.assert_array_equal(model.score(theta), ev.gradient)


def test_hessian_ridders(case):
    model, theta, ev = case["model"], case["theta"], case["ev"]
    h0 = case["h_rel"] * np.maximum(np.abs(theta), 0.1)
    fd, err = ridders(model.score, theta, h0)
    _check_ridders(case["name"], fd, err, ev.hessian, "Hessian")
    np.testing.assert_array_equal(ev.hessian, ev.hessian.T)
    np.testing.assert_array_equal(model.hessian(theta), ev.hessian)


@pytest.mark.parametrize("name", ["salamander", "cbpp_binomial", "salamander_frozen",
                                  "cbpp_binomial_frozen"])
def test_gradient_and_hessian_statsmodels_numdiff(name):
    """One-step centred differences (not for radish2: roundoff-limited, module docstring)."""
    case = prepared(name)
    model, theta, ev = case["model"], case["theta"], case["ev"]
    grad_fd = approx_fprime(theta, model.loglike, centered=True)
    hess_fd = approx_fprime(theta, model.score, centered=True)
    _check(case["name"], grad_fd, ev.gradient, "gradient")
    _check(case["name"], hess_fd, ev.hessian, "Hessian")


def test_cbpp_is_binomial_with_trials():
    model = _cbpp()
    assert model.family_kind.name == "binomial"
    assert model.endog.shape == (56, 2)
    assert model.exog_names == ["Intercept", "period[T.2]", "period[T.3]", "period[T.4]"]
    assert len(model.blocks) == 15 and all(b.q == 1 for b in model.blocks)
    agg = cbpp_aggregated()
    assert agg["size"].sum() == 842
    assert agg["incidence"].sum() == glmm_sm.datasets.load("cbpp2")["Y"].sum()
    assert agg["healthy"].min() >= 0


def test_cbpp_aggregated_equals_bernoulli_rows():
    """Without normalizing constants, the binomial rows' l_m equals the Bernoulli rows' l_m.

    Both models get the same joint draws (``set_draws``) of the 15 herd effects; log f(y|u)
    is sum_i (y_i eta_i - N_i log(1 + e^eta_i)) either way (glmm's BinBerTest).
    """
    binom = _cbpp()
    bern = MonteCarloGLMM.from_formula("Y ~ period", {"herd": "0 + C(herd)"},
                                       glmm_sm.datasets.load("cbpp2"), family="bernoulli")
    assert binom.vc_names[-1].endswith("[15]") and len(bern.vc_names) == 15
    np.testing.assert_array_equal([n.split(":")[-1] for n in binom.vc_names],
                                  [n.split(":")[-1] for n in bern.vc_names])
    rng = np.random.default_rng(5)
    u = rng.normal(scale=0.7, size=(500, 15))
    logf = -0.5 * ((u / 0.7) ** 2).sum(axis=1) - 15 * np.log(0.7 * np.sqrt(2 * np.pi))
    theta = np.array([-1.4, -1.0, -1.1, -1.6, 0.45])
    binom.set_draws(u, logf)
    e1 = binom.evaluate(theta)
    bern.set_draws(u, logf)
    e2 = bern.evaluate(theta)
    assert e1.value == pytest.approx(e2.value, rel=1e-12)
    np.testing.assert_allclose(e1.gradient, e2.gradient, rtol=0, atol=1e-10 * np.linalg.norm(
        e2.gradient))
    np.testing.assert_allclose(e1.hessian, e2.hessian, rtol=0, atol=1e-10 * np.linalg.norm(
        e2.hessian))


def test_radish2_design_and_laplace():
    """Block is nested in Site: of the Site:Block interaction's 20 combinations 10 occur,
    and only those are columns (tests/test_sparse_design.py: the formula engine's 10 empty
    columns would integrate to one and drop out of every block).

    The fit equals the one with the 10 used Block levels directly (they are unique across
    sites).
    """
    model = _radish()
    assert model.exog_names == ["Intercept", "Site[T.Riverside]", "Region[T.S]"]
    assert model.vcp_names == ["Block", "Pop"]
    assert model.exog_vc.shape == (233, 16)
    used = np.asarray(model.exog_vc.sum(axis=0)).ravel() > 0
    assert used.sum() == 16
    assert len(model.blocks) == 1 and model.blocks[0].q == 16 and model.blocks[0].nobs == 233
    params, value, _ = model._laplace_estimate()
    assert np.all(np.isfinite(params)) and np.isfinite(value) and np.all(params[3:] > 0)
    df = glmm_sm.datasets.load("radish2")
    direct = MonteCarloGLMM.from_formula("resp ~ Site + Region",
                                         {"Block": "0 + C(Block)", "Pop": "0 + C(Pop)"}, df,
                                         family=sm.families.Poisson())
    params2, value2, _ = direct._laplace_estimate()
    np.testing.assert_allclose(params2, params, rtol=1e-6)
    assert value2 == pytest.approx(value, rel=1e-12)
