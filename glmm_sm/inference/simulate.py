"""Responses simulated from a fitted GLMM, randomized quantile residuals, a dispersion test.

Simulation is *unconditional*, as DHARMa's default: every replicate draws new random effects
``u_j ~ N(0, nu_hat[t(j)])``, then ``y_i | u`` from the family at
``eta_i = x_i' beta_hat + offset_i + z_i' u`` (binomial with the model's trials, or Poisson).
A variance component estimated at 0 contributes nothing.

Observation weights are not used: each row is drawn once from ``f(y_i | u)``.  A weight
multiplies a row's log-likelihood (relevance or frequency weighting) and has no generative
counterpart; a model with weights other than 1 gets a warning.

Randomized quantile residuals (Dunn and Smyth 1996; DHARMa): with ``y*_i1..y*_iS`` the ``S``
simulated responses of observation ``i``,

    r_i = (#{s: y*_is < y_i} + U_i (#{s: y*_is = y_i} + 1)) / (S + 1),   U_i ~ Uniform(0, 1),

the rank of ``y_i`` among the ``S + 1`` values ``y_i, y*_i1..y*_iS`` with ties broken at
random, spread uniformly over its cell.  When ``y_i`` is a draw from the model it is
exchangeable with the simulations and ``r_i`` is exactly Uniform(0, 1) for any ``S``
(DHARMa's ``F_S(y_i - 1) + U (F_S(y_i) - F_S(y_i - 1))`` on the ``S`` simulations alone
differs by ``O(1/S)``, and reaches 0 and 1).  Residuals of one cluster are correlated
(they share the random effects).  Overdispersion piles the residuals near 0 and 1.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import numpy as np

from glmm_sm.core.random import as_seed_sequence, child_seed, generator

__all__ = ["simulate", "quantile_residuals", "resid_quantile", "dispersion_test",
           "DispersionTest"]

#: Largest Poisson mean numpy's sampler takes (about 9.2e18, with a margin).
_POISSON_MEAN_MAX = 1e18


def _count(value, name):
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral)
            or value < 1):
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def simulate(res, nrep=1, random_state=None):
    """Responses simulated from the fitted model with new random effects.

    Parameters
    ----------
    res : MonteCarloGLMMResults
    nrep : int
        Number of simulated data sets.
    random_state : None, int, SeedSequence or Generator
        The same value gives the same responses.

    Returns
    -------
    ndarray (n, nrep)
        Counts, or successes for a binomial model with trials (float64, as ``endog``).
    """
    nrep = _count(nrep, "nrep")
    mod = res.model
    a = mod.arrays
    if np.any(a.weights != 1.0):
        warnings.warn("simulate ignores the observation weights: each row is drawn once "
                      "from its conditional distribution", UserWarning, stacklevel=3)
    rng = generator(as_seed_sequence(random_state))
    params = np.asarray(res.params, dtype=float)
    kc = mod.k_fe + mod.k_vcp  # (the negative binomial's alpha after the variances)
    beta, nu = params[: mod.k_fe], params[mod.k_fe : kc]
    cov = mod.design.cov
    sd = np.sqrt(np.clip(cov.variances(nu) if cov.has_vector else nu, 0.0, None))[a.ident]
    U = rng.standard_normal((sd.size, nrep)) * sd[:, None]
    if cov.has_vector:
        _correlate(U, sd, cov, nu, mod.design.pairs)
    eta = (a.X @ beta + a.offset)[:, None] + np.asarray(a.Z @ U)
    if a.family.is_binomial:
        trials = np.rint(a.ntrials).astype(np.int64)
        y = rng.binomial(trials[:, None], a.family.mean(eta))
    else:
        lam = np.exp(np.minimum(eta, 700.0))
        if lam.max(initial=0.0) > _POISSON_MEAN_MAX:
            raise ValueError("simulate: a Poisson mean exceeds 1e18 (linear predictor "
                             f"{eta.max():.1f}); the fitted model cannot be simulated")
        if a.family.code == 2:
            # NB2 as the gamma-Poisson mixture: lam * Gamma(theta, 1/theta), theta = 1/alpha
            # (mean lam, variance lam + alpha lam^2).
            th = 1.0 / params[kc]
            lam = lam * rng.gamma(th, 1.0 / th, size=lam.shape)
        y = rng.poisson(lam)
    return y.astype(np.float64)


def _correlate(U, sd, cov, nu, pairs):
    """Turn the independent ``N(0, Sigma_aa)`` draws of each correlated term's levels into
    ``N(0, Sigma)`` draws, in place: ``b_l = chol(Sigma) z_l``."""
    vi = 0
    for ui, u in enumerate(cov.units):
        if len(u) == 1:
            continue
        idx = pairs[vi]
        vi += 1
        S = cov.sigma(nu, ui)
        w, V = np.linalg.eigh(S)
        root = V * np.sqrt(np.clip(w, 0.0, None))  # any root: Sigma may be singular
        z = U[idx] / np.where(sd[idx] > 0, sd[idx], 1.0)[..., None]  # (L, k, nrep)
        U[idx] = np.einsum("ij,ljr->lir", root, z)


def quantile_residuals(y, ysim, random_state=None):
    """Randomized quantile residuals of ``y`` against simulated responses ``ysim``.

    Parameters
    ----------
    y : array_like (n,)
        Observed responses.
    ysim : array_like (n, S)
        ``S`` simulated responses per observation.
    random_state : None, int, SeedSequence or Generator
        Source of the uniform randomization over ties.

    Returns
    -------
    ndarray (n,)
        In (0, 1); exactly Uniform(0, 1) when ``y_i`` is exchangeable with ``ysim[i]``.
    """
    y = np.asarray(y, dtype=float)
    ysim = np.asarray(ysim, dtype=float)
    if y.ndim != 1 or ysim.ndim != 2 or ysim.shape[0] != y.shape[0] or ysim.shape[1] < 1:
        raise ValueError(f"ysim must have shape (n, S) with n = len(y) = {y.shape[0]} and "
                         f"S >= 1; got y {y.shape}, ysim {ysim.shape}")
    less = (ysim < y[:, None]).sum(axis=1)
    ties = (ysim == y[:, None]).sum(axis=1)
    u = generator(as_seed_sequence(random_state)).uniform(size=y.shape[0])
    return (less + u * (ties + 1)) / (ysim.shape[1] + 1)


def resid_quantile(res, nsim=250, random_state=None):
    """Randomized quantile residuals of the data fitted (DHARMa's scaled residuals).

    ``nsim`` responses are simulated unconditionally (:func:`simulate`, new random
    effects) and each observation is ranked among its simulations
    (:func:`quantile_residuals`).  Under the model the residuals are Uniform(0, 1).

    Parameters
    ----------
    res : MonteCarloGLMMResults
    nsim : int
        Simulations per observation.
    random_state : None, int, SeedSequence or Generator

    Returns
    -------
    ndarray (n,)
    """
    nsim = _count(nsim, "nsim")
    seq = as_seed_sequence(random_state)
    ysim = simulate(res, nsim, child_seed(seq, 0))
    return quantile_residuals(res.model.arrays.y, ysim, child_seed(seq, 1))


@dataclass(frozen=True)
class DispersionTest:
    """Result of :func:`dispersion_test`.

    Attributes
    ----------
    statistic : float
        Observed over mean simulated spread; above 1: more spread than the model allows.
    pvalue : float
    alternative : str
    """

    statistic: float
    pvalue: float
    alternative: str


def dispersion_test(res, nsim=250, random_state=None, alternative="greater"):
    """Simulation test of dispersion (DHARMa's ``testDispersion``).

    The statistic is ``sum_i (y_i - m_i)^2`` with ``m_i`` the mean of the ``nsim``
    unconditional simulations of observation ``i``, compared with the same sum for each
    simulated data set; the p-value is the rank of the observed value among the
    simulated ones, ``(1 + #{sim >= obs}) / (nsim + 1)`` for ``"greater"``.

    Parameters
    ----------
    res : MonteCarloGLMMResults
    nsim : int
    random_state : None, int, SeedSequence or Generator
    alternative : {"greater", "less", "two-sided"}

    Returns
    -------
    DispersionTest
    """
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError("alternative must be 'greater', 'less' or 'two-sided'; got "
                         f"{alternative!r}")
    nsim = _count(nsim, "nsim")
    ysim = simulate(res, nsim, random_state)
    centre = ysim.mean(axis=1)
    observed = float(np.sum((res.model.arrays.y - centre) ** 2))
    simulated = np.sum((ysim - centre[:, None]) ** 2, axis=0)
    p_greater = (1.0 + np.sum(simulated >= observed)) / (nsim + 1.0)
    p_less = (1.0 + np.sum(simulated <= observed)) / (nsim + 1.0)
    pvalue = {"greater": p_greater, "less": p_less,
              "two-sided": min(1.0, 2.0 * min(p_greater, p_less))}[alternative]
    return DispersionTest(observed / float(simulated.mean()), float(pvalue), alternative)
