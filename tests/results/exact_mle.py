"""Exact maximum-likelihood estimates of three GLMMs with one random intercept per cluster.

Provenance: 80-node/60-node Gauss-Hermite quadrature per cluster, from MCLA_SPEC section 8
(``/work/shared/docs/MCLA_SPEC.md`` sections 8.1, 8.3 and 8.4).  With a single random
intercept per cluster the likelihood is a product of one-dimensional integrals, which
Gauss-Hermite quadrature evaluates to machine precision; the MLE was then maximized to
1e-14.  The values are given there to 6 decimals, so each carries a rounding error of at
most 5e-7 (``QUADRATURE_ROUNDING`` below allows 1e-6).

Parameters are in the package's order: the fixed effects (statsmodels' names, treatment
coding with the first level as baseline, as R's default contrasts), then the variance of the
random intercept (variance scale, as glmm reports it).

Do not edit the values; they are used as is by ``tests/test_statistical.py``.
"""

from __future__ import annotations

#: Rounding of the stored quadrature values (6 decimals, so at most 5e-7; 1e-6 allowed).
QUADRATURE_ROUNDING = 1e-6

#: MCLA_SPEC 8.1. BoothHobert, Bernoulli, ``y ~ 0 + x1``, random ``~0 + z1`` (10 clusters).
#: 60-node Gauss-Hermite per cluster; agrees with ``glmer(..., nAGQ=25)`` to 6 digits.
BOOTH_HOBERT = {
    "formula": "y ~ 0 + x1",
    "vc_formulas": {"z1": "0 + C(z1)"},
    "params": {"x1": 6.132163, "z1": 1.766462},
    "bse": {"x1": 1.34226, "z1": 1.59752},  # observed information, numerical Hessian
    "loglike": -44.056256,  # Bernoulli: no constant
}

#: MCLA_SPEC 8.3. lme4's ``cbpp`` (glmm's ``cbpp2`` aggregated by herd and period: 56 rows),
#: binomial with trials, ``cbind(incidence, size - incidence) ~ period``, random ``~0 + herd``
#: (15 herds).  80-node Gauss-Hermite per herd.
CBPP = {
    "formula": "incidence + failures ~ period",
    "vc_formulas": {"herd": "0 + C(herd)"},
    "params": {
        "Intercept": -1.399230,
        "period[T.2]": -0.991404,
        "period[T.3]": -1.127820,
        "period[T.4]": -1.579471,
        "herd": 0.419280,
    },
    # Without sum(log C(size, incidence)).  The spec's "with it: -92.02657" is glmer's
    # Laplace value; the exact value plus the constant 185.475660 is -91.983369.
    "loglike_without_constant": -277.459029,
}

#: MCLA_SPEC 8.4. bacteria (MASS), Bernoulli, ``y2 ~ trt + I(week > 2)``, random ``~0 + ID``
#: (50 children).  ``trt`` levels placebo, drug, drug+ (placebo is the baseline).
#: 80-node Gauss-Hermite per child.
BACTERIA = {
    "formula": "y2 ~ trt + I(week > 2)",
    "vc_formulas": {"ID": "0 + C(ID)"},
    "params": {
        "Intercept": 3.579049,
        "trt[T.drug]": -1.368949,
        "trt[T.drug+]": -0.789092,
        "I(week > 2)[T.True]": -1.626867,
        "ID": 1.701240,
    },
    "loglike": -95.897057,  # Bernoulli: no constant
}
