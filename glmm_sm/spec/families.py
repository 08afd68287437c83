"""Exponential families with canonical links: Bernoulli, binomial with trials, Poisson.

The conditional log-density of one observation, without normalizing constants, is
``w * (y * eta - c(eta))`` with the cumulant ``c``:

* binomial with ``N`` trials (Bernoulli when ``N = 1``): ``c(eta) = N log(1 + e^eta)``;
* Poisson: ``c(eta) = e^eta``.

``c'`` is the conditional mean and ``c''`` the conditional variance.  All three are computed in
overflow-safe form for ``|eta|`` up to several hundred.  The constants left out of the
log-density (``log C(N, y)`` and ``-log y!``) are provided by :meth:`Family.log_constant` so that
log-likelihoods can be reported on the scale other packages use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, gammaln

from glmm_sm.core.constants import POISSON_ETA_MAX

__all__ = ["Family", "BINOMIAL", "POISSON", "resolve_family"]


@dataclass(frozen=True)
class Family:
    """A canonical-link family.

    Parameters
    ----------
    name : {"bernoulli", "binomial", "poisson"}
        Bernoulli is the binomial family with one trial per observation.
    code : int
        Kernel code: 0 for the logit families, 1 for Poisson.
    """

    name: str
    code: int

    @property
    def is_binomial(self) -> bool:
        return self.code == 0

    def cumulant(self, eta, ntrials=1.0):
        """``c(eta)``, per observation."""
        eta = np.asarray(eta, dtype=float)
        if self.code == 0:
            return ntrials * np.logaddexp(0.0, eta)
        return np.exp(np.minimum(eta, POISSON_ETA_MAX))

    def mean(self, eta, ntrials=1.0):
        """``c'(eta)``, the conditional mean."""
        eta = np.asarray(eta, dtype=float)
        if self.code == 0:
            return ntrials * expit(eta)
        return np.exp(np.minimum(eta, POISSON_ETA_MAX))

    def variance(self, eta, ntrials=1.0):
        """``c''(eta)``, the conditional variance."""
        eta = np.asarray(eta, dtype=float)
        if self.code == 0:
            t = np.exp(-np.abs(eta))
            return ntrials * t / (1.0 + t) ** 2
        return np.exp(np.minimum(eta, POISSON_ETA_MAX))

    def log_constant(self, y, ntrials=1.0, weights=1.0):
        """The omitted constant ``sum w * log C(N, y)`` (binomial) or ``-sum w * log y!``."""
        y = np.asarray(y, dtype=float)
        if self.code == 0:
            n = np.broadcast_to(np.asarray(ntrials, dtype=float), y.shape)
            term = gammaln(n + 1) - gammaln(y + 1) - gammaln(n - y + 1)
        else:
            term = -gammaln(y + 1)
        return float(np.sum(weights * term))

    def validate(self, y, ntrials, name="endog"):
        """Check the response; raise ``ValueError`` naming ``name`` if it is not valid."""
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if self.name == "bernoulli":
            bad = (y != 0) & (y != 1)
            if bad.any():
                raise ValueError(
                    f"{name}: a Bernoulli response must be 0 or 1; found {_show(y[bad])}"
                )
        elif self.name == "binomial":
            bad = (y < 0) | (y != np.round(y))
            if bad.any():
                raise ValueError(f"{name}: successes must be non-negative integers; found "
                                 f"{_show(y[bad])}")
            failures = ntrials - y
            if np.any(failures < 0):
                raise ValueError(f"{name}: successes exceed the number of trials (failures "
                                 f"{_show(failures[failures < 0])})")
            bad = failures != np.round(failures)
            if bad.any():
                raise ValueError(f"{name}: failures must be non-negative integers; found "
                                 f"{_show(failures[bad])}")
        else:
            if np.any(y < 0):
                raise ValueError(f"{name}: Poisson counts must be non-negative; found "
                                 f"{_show(y[y < 0])}")
            if np.any(y != np.round(y)):
                raise ValueError(f"{name}: Poisson counts must be integers; found "
                                 f"{_show(y[y != np.round(y)])}")


def _show(values, k=3):
    vals = np.unique(values)[:k]
    return ", ".join(f"{v:g}" for v in vals)


BERNOULLI = Family("bernoulli", 0)
BINOMIAL = Family("binomial", 0)
POISSON = Family("poisson", 1)

_BY_NAME = {"bernoulli": BERNOULLI, "binomial": BINOMIAL, "poisson": POISSON}


def resolve_family(family, endog):
    """Turn a user's family and response into ``(Family, y, ntrials)``.

    Parameters
    ----------
    family : statsmodels family instance, str or None
        ``sm.families.Binomial()`` (logit link) or ``sm.families.Poisson()`` (log link), or one
        of the strings ``"bernoulli"``, ``"binomial"``, ``"poisson"``.  ``None`` means binomial.
    endog : array_like
        The response: a vector, or for the binomial family a two-column array of
        (successes, failures) as statsmodels' GLM accepts it.

    Returns
    -------
    family : Family
    y : ndarray
        Successes or counts, float64.
    ntrials : ndarray
        Trials per observation (ones for Bernoulli and Poisson).
    """
    fam = _family_from_user(family)
    y = np.asarray(endog, dtype=float)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        if y.shape[1] != 2 or fam is POISSON:
            raise ValueError(
                "endog: a two-column response (successes, failures) is only allowed for the "
                f"binomial family; got shape {y.shape} with family {fam.name!r}"
            )
        if not np.all(np.isfinite(y)):
            raise ValueError("endog contains NaN or infinite values")
        if np.any(y[:, 1] < 0):
            raise ValueError("endog: failures (second column) must be non-negative; found "
                             f"{_show(y[:, 1][y[:, 1] < 0])}")
        ntrials = y[:, 0] + y[:, 1]
        y = y[:, 0].copy()
        fam = BINOMIAL
    elif y.ndim == 1:
        ntrials = np.ones_like(y)
        if fam is BINOMIAL:
            fam = BERNOULLI
    else:
        raise ValueError(f"endog must be one- or two-dimensional; got shape {y.shape}")
    fam.validate(y, ntrials)
    return fam, y, ntrials


def _family_from_user(family):
    if family is None:
        return BINOMIAL
    if isinstance(family, str):
        try:
            return _BY_NAME[family.lower()]
        except KeyError:
            raise ValueError(
                f"family: unknown family {family!r}; use one of {sorted(_BY_NAME)}"
            ) from None
    if isinstance(family, Family):
        return family
    from statsmodels.genmod import families as smf

    if isinstance(family, type):
        known = issubclass(family, (smf.Binomial, smf.Poisson))
        raise TypeError(f"family: got the class {family.__name__}, not a family object; "
                        + (f"pass an instance: sm.families.{family.__name__}() (as "
                           "statsmodels' GLM takes)" if known else
                           "pass sm.families.Binomial() or sm.families.Poisson()"))
    link = type(getattr(family, "link", None)).__name__
    if isinstance(family, smf.Binomial):
        if link != "Logit":
            raise ValueError(f"family: only the canonical logit link is supported, not {link}")
        return BINOMIAL
    if isinstance(family, smf.Poisson):
        if link != "Log":
            raise ValueError(f"family: only the canonical log link is supported, not {link}")
        return POISSON
    raise ValueError(
        f"family: {type(family).__name__} is not supported; use statsmodels' Binomial() or "
        "Poisson() with their canonical links"
    )
