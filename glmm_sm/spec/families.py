"""Families and links: Bernoulli and binomial with trials (logit, probit, cloglog), Poisson.

The conditional log-density of one observation, without normalizing constants, is
``w * (y * eta - c(eta))`` with the cumulant ``c``:

* binomial with ``N`` trials (Bernoulli when ``N = 1``): ``c(eta) = N log(1 + e^eta)``;
* Poisson: ``c(eta) = e^eta``.

``c'`` is the conditional mean and ``c''`` the conditional variance.  All three are computed in
overflow-safe form for ``|eta|`` up to several hundred.  The constants left out of the
log-density (``log C(N, y)`` and ``-log y!``) are provided by :meth:`Family.log_constant` so that
log-likelihoods can be reported on the scale other packages use.

The binomial families also take two non-canonical links, the probit ``F = Phi`` and the
complementary log-log ``F(eta) = 1 - exp(-exp(eta))``: the success probability is ``F(eta)``
and the log-density ``w [y log F(eta) + (N - y) log(1 - F(eta))]``.  Its derivative in ``eta``
is no longer ``w (y - c'(eta))`` and minus its second derivative (the observed information
that the canonical form's ``w c''(eta)`` stands for) depends on ``y``:
:func:`link_terms` gives the three per observation, and :func:`link_info_derivative` the
derivative of the information (what the Laplace score needs in place of the cumulant's
third derivative).  Both use ``log Phi`` (``scipy.special.log_ndtr``) and ``log(1 - e^-mu)``
in forms that stay exact for ``|eta|`` in the hundreds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, gammaln, log_ndtr, ndtr

from glmm_sm.core.constants import POISSON_ETA_MAX

__all__ = ["Family", "BINOMIAL", "POISSON", "resolve_family", "LINK_CODES", "link_terms",
           "link_info_derivative"]

#: Kernel codes of the non-canonical links of the binomial families (a canonical link's
#: kernel code is its family code: 0 logit binomial, 1 Poisson).
LINK_CODES = {"probit": 10, "cloglog": 11}
#: The links each family takes (the first is the canonical one).
SUPPORTED_LINKS = {"binomial": ("logit", "probit", "cloglog"), "poisson": ("log",)}


@dataclass(frozen=True)
class Family:
    """A family and its link.

    Parameters
    ----------
    name : {"bernoulli", "binomial", "poisson"}
        Bernoulli is the binomial family with one trial per observation.
    code : int
        Family code: 0 for the binomial families, 1 for Poisson.
    link : {"logit", "probit", "cloglog", "log"} or None
        The link; ``None`` is the family's canonical link (logit, log).
    """

    name: str
    code: int
    link: str | None = None

    @property
    def is_binomial(self) -> bool:
        return self.code == 0

    @property
    def link_name(self) -> str:
        """The link's name (the canonical one when ``link`` is ``None``)."""
        return self.link or ("logit" if self.code == 0 else "log")

    @property
    def canonical(self) -> bool:
        return self.link_name in ("logit", "log")

    @property
    def kernel(self) -> int:
        """The code the kernels select the per-observation terms by: the family code for a
        canonical link, :data:`LINK_CODES` otherwise."""
        return self.code if self.canonical else LINK_CODES[self.link_name]

    def obs_terms(self, eta, wy, wn):
        """Per observation: the log-density ``l`` (without constants), ``dl/deta`` and the
        observed information ``-d^2 l/deta^2`` (``w (y eta - c)``, ``w (y - c')`` and
        ``w c''`` for a canonical link), with ``wy = w y`` and ``wn = w N``."""
        eta = np.asarray(eta, dtype=float)
        if not self.canonical:
            return link_terms(self.kernel, eta, wy, wn)
        return (wy * eta - wn * self.cumulant(eta), wy - wn * self.mean(eta),
                wn * self.variance(eta))

    def info_derivative(self, eta, wy, wn):
        """``d/deta`` of the observed information of :meth:`obs_terms` (``w`` times the
        cumulant's third derivative for a canonical link)."""
        eta = np.asarray(eta, dtype=float)
        if not self.canonical:
            return link_info_derivative(self.kernel, eta, wy, wn)
        h = wn * self.variance(eta)
        if self.code == 0:
            # c3 = c'' (1 - 2 expit(eta)) = -c'' tanh(eta / 2), for any number of trials.
            return -h * np.tanh(0.5 * eta)
        return h

    def cumulant(self, eta, ntrials=1.0):
        """``c(eta)``, per observation (a canonical link's only: a non-canonical link has no
        cumulant in ``eta``, see :meth:`obs_terms`)."""
        eta = np.asarray(eta, dtype=float)
        if not self.canonical:
            raise ValueError(f"the {self.link_name} link has no cumulant in eta; use "
                             "Family.obs_terms")
        if self.code == 0:
            return ntrials * np.logaddexp(0.0, eta)
        return np.exp(np.minimum(eta, POISSON_ETA_MAX))

    def mean(self, eta, ntrials=1.0):
        """The conditional mean (``c'(eta)`` for a canonical link, ``N F(eta)`` otherwise)."""
        eta = np.asarray(eta, dtype=float)
        if self.link_name == "probit":
            return ntrials * ndtr(eta)
        if self.link_name == "cloglog":
            return ntrials * -np.expm1(-np.exp(np.minimum(eta, POISSON_ETA_MAX)))
        if self.code == 0:
            return ntrials * expit(eta)
        return np.exp(np.minimum(eta, POISSON_ETA_MAX))

    def variance(self, eta, ntrials=1.0):
        """The conditional variance (``c''(eta)`` for a canonical link; ``N F (1 - F)``
        otherwise, which is then not the information: see :meth:`obs_terms`)."""
        eta = np.asarray(eta, dtype=float)
        if self.link_name == "probit":
            return ntrials * ndtr(eta) * ndtr(-eta)
        if self.link_name == "cloglog":
            mu = np.exp(np.minimum(eta, POISSON_ETA_MAX))
            return ntrials * -np.expm1(-mu) * np.exp(-mu)
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
        ``sm.families.Binomial()`` (logit link; ``link=sm.families.links.Probit()`` or
        ``CLogLog()`` for the probit and complementary log-log links) or
        ``sm.families.Poisson()`` (log link), or one of the strings ``"bernoulli"``,
        ``"binomial"``, ``"poisson"``.  ``None`` means binomial.
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
        if y.shape[1] != 2 or not fam.is_binomial:
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
        fam = Family("binomial", 0, fam.link)
    elif y.ndim == 1:
        ntrials = np.ones_like(y)
        if fam.name == "binomial":
            fam = Family("bernoulli", 0, fam.link)
    else:
        raise ValueError(f"endog must be one- or two-dimensional; got shape {y.shape}")
    fam.validate(y, ntrials)
    return fam, y, ntrials


def is_binomial_family(family):
    """Whether a user's family (as :func:`resolve_family` takes it) is binomial."""
    return _family_from_user(family).is_binomial


def _link_name(link):
    """``"logit"``, ``"probit"``, ``"cloglog"`` or ``"log"`` for statsmodels' link objects
    (and their subclasses, e.g. older statsmodels' lower-case ``cloglog``), else the class
    name."""
    from statsmodels.genmod.families import links

    # Probit and CLogLog subclass Logit in statsmodels: test them first, and take the
    # logit and log links by their exact classes (LogLog, LogC, ... subclass them too).
    if isinstance(link, links.CLogLog):
        return "cloglog"
    if isinstance(link, links.Probit):
        return "probit"
    exact = {links.Logit: "logit", links.Log: "log"}
    for alias, name in (("logit", "logit"), ("log", "log")):
        cls = getattr(links, alias, None)
        if isinstance(cls, type):
            exact[cls] = name
    return exact.get(type(link), type(link).__name__)


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
    if isinstance(family, (smf.Binomial, smf.Poisson)):
        kind = "binomial" if isinstance(family, smf.Binomial) else "poisson"
        link = _link_name(getattr(family, "link", None))
        if link not in SUPPORTED_LINKS[kind]:
            shown = type(getattr(family, "link", None)).__name__
            raise ValueError(
                f"family: the {shown} link is not supported for the "
                f"{type(family).__name__} family; supported links: Binomial takes "
                "links.Logit() (default), links.Probit() or links.CLogLog(); Poisson takes "
                "links.Log() (default)")
        if kind == "poisson":
            return POISSON
        return BINOMIAL if link == "logit" else Family("binomial", 0, link)
    raise ValueError(
        f"family: {type(family).__name__} is not supported; use statsmodels' Binomial() or "
        "Poisson() with their canonical links"
    )


# ----------------------------------------------------------------- non-canonical links
# Per observation with F the inverse link, l = wy log F(eta) + (wn - wy) log(1 - F(eta)).
# probit: F = Phi; with L(x) = phi(x) / Phi(x) and A(x) = x + L(x),
#   d log Phi(x)/dx = L(x),  -d^2 log Phi(x)/dx^2 = L(x) A(x),
#   d/dx [L A] = L (1 - A (A + L));  log(1 - Phi(eta)) = log Phi(-eta).
# cloglog: F = 1 - exp(-mu), mu = e^eta, q = e^-mu, om = 1 - q; log(1 - F) = -mu;
#   d log F/deta = g = mu q / om,  -d^2 log F/deta^2 = g D / om with D = mu - om >= 0,
#   d/deta [g D / om] = mu q / om^2 [D (1 - mu) + mu om - 2 mu q D / om].


def _mills(x):
    """``phi(x) / Phi(x)``, exact for any ``x`` (a ratio of logs)."""
    return np.exp(-0.5 * x * x - 0.5 * np.log(2.0 * np.pi) - log_ndtr(x))


def _cloglog_parts(eta):
    """``(mu, q, om, D)`` of the cloglog formulas; ``D = mu - (1 - e^-mu)`` by its series
    below ``mu = 1e-3`` (where the difference would cancel)."""
    mu = np.exp(np.minimum(eta, POISSON_ETA_MAX))
    q = np.exp(-mu)
    om = -np.expm1(-mu)
    small = mu < 1e-3
    ms = np.where(small, mu, 0.0)
    series = ms * ms * (0.5 - ms * (1 / 6 - ms * (1 / 24 - ms * (1 / 120 - ms * (1 / 720
                                                                                - ms / 5040)))))
    D = np.where(small, series, mu - om)
    return mu, q, om, D


def _log1mexp(mu):
    """``log(1 - e^-mu)`` for ``mu > 0``."""
    return np.where(mu < np.log(2.0), np.log(-np.expm1(-np.minimum(mu, 1.0))),
                    np.log1p(-np.exp(-np.maximum(mu, np.log(2.0)))))


def link_terms(code, eta, wy, wn):
    """``(l, dl/deta, -d^2 l/deta^2)`` per observation for a non-canonical binomial link.

    Parameters
    ----------
    code : int
        :data:`LINK_CODES` value (probit or cloglog).
    eta : ndarray
        Linear predictors; ``wy``, ``wn`` (weighted successes and trials) broadcast to it.
    """
    eta = np.asarray(eta, dtype=float)
    wf = wn - wy
    if code == LINK_CODES["probit"]:
        lp, lq = log_ndtr(eta), log_ndtr(-eta)
        m1, m0 = _mills(eta), _mills(-eta)
        ll = wy * lp + wf * lq
        r = wy * m1 - wf * m0
        h = wy * m1 * (eta + m1) + wf * m0 * (m0 - eta)
        return ll, r, h
    if code == LINK_CODES["cloglog"]:
        mu, q, om, D = _cloglog_parts(eta)
        with np.errstate(invalid="ignore", divide="ignore"):
            g = np.where(om > 0, mu * q / np.where(om > 0, om, 1.0), 1.0)
            hs = np.where(om > 0, g * D / np.where(om > 0, om, 1.0), 0.0)
        ll = wy * _log1mexp(mu) - wf * mu
        return ll, wy * g - wf * mu, wy * hs + wf * mu
    raise ValueError(f"no link with kernel code {code}")


def link_info_derivative(code, eta, wy, wn):
    """``d/deta`` of :func:`link_terms`' information per observation."""
    eta = np.asarray(eta, dtype=float)
    wf = wn - wy
    if code == LINK_CODES["probit"]:
        def dH(x):
            L = _mills(x)
            A = x + L
            return L * (1.0 - A * (A + L))
        return wy * dH(eta) - wf * dH(-eta)
    if code == LINK_CODES["cloglog"]:
        mu, q, om, D = _cloglog_parts(eta)
        with np.errstate(invalid="ignore", divide="ignore"):
            ok = om > 0
            o = np.where(ok, om, 1.0)
            ds = np.where(ok, mu * q / o**2 * (D * (1.0 - mu) + mu * om - 2.0 * mu * q * D / o),
                          0.0)
        return wy * ds + wf * mu
    raise ValueError(f"no link with kernel code {code}")
