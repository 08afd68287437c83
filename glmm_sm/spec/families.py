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

from collections import namedtuple
from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, expit, gammaln, log_ndtr, ndtr, polygamma

from glmm_sm.core.constants import POISSON_ETA_MAX

__all__ = ["Family", "BINOMIAL", "POISSON", "resolve_family", "LINK_CODES", "link_terms",
           "link_info_derivative", "NEGBIN", "nb_constant", "nb_draw_terms", "nb_eta_terms"]

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
    name : {"bernoulli", "binomial", "poisson", "negbin"}
        Bernoulli is the binomial family with one trial per observation.
    code : int
        Family code: 0 for the binomial families, 1 for Poisson, 2 for the negative binomial
        (NB2, log link; see :func:`nb_draw_terms`).
    link : {"logit", "probit", "cloglog", "log"} or None
        The link; ``None`` is the family's canonical link (logit, log).
    alpha : float, optional
        The negative binomial's dispersion (variance ``mu + alpha mu^2``): the start value
        of its estimate.  None for the other families.
    """

    name: str
    code: int
    link: str | None = None
    alpha: float | None = None

    @property
    def k_fam(self) -> int:
        """Number of the family's own parameters (1, ``alpha``, for the negative binomial)."""
        return 1 if self.code == 2 else 0

    def with_alpha(self, alpha):
        """The negative binomial family with dispersion ``alpha``."""
        return Family(self.name, self.code, link=self.link, alpha=float(alpha))

    def data_loglik(self, wy, wn, eta, alpha=None):
        """The part of ``sum w log f(y | eta)`` that depends on ``eta``, per observation:
        ``w (y eta - c(eta))``, or for the negative binomial
        ``w (y eta - (y + 1/alpha) log(1 + alpha e^eta))`` (:func:`nb_draw_terms`)."""
        if self.code == 2:
            return nb_eta_terms(wy, wn, eta, self.alpha if alpha is None else alpha)[0]
        if not self.canonical:
            return link_terms(self.kernel, eta, wy, wn)[0]
        return wy * eta - wn * self.cumulant(eta)

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
        if self.code == 2:
            return tuple(nb_eta_terms(wy, wn, eta, self.alpha)[:3])
        return (wy * eta - wn * self.cumulant(eta), wy - wn * self.mean(eta),
                wn * self.variance(eta))

    def info_derivative(self, eta, wy, wn, h=None):
        """``d/deta`` of the observed information of :meth:`obs_terms` (``w`` times the
        cumulant's third derivative for a canonical link); ``h``: that information where
        the caller has it (a canonical link's derivative is a multiple of it)."""
        eta = np.asarray(eta, dtype=float)
        if not self.canonical:
            return link_info_derivative(self.kernel, eta, wy, wn)
        if self.code == 2:
            return nb_draw_terms(wy, wn, eta, self.alpha).dh
        if h is None:
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
            what = "negative binomial" if self.code == 2 else "Poisson"
            if np.any(y < 0):
                raise ValueError(f"{name}: {what} counts must be non-negative; found "
                                 f"{_show(y[y < 0])}")
            if np.any(y != np.round(y)):
                raise ValueError(f"{name}: {what} counts must be integers; found "
                                 f"{_show(y[y != np.round(y)])}")


def _show(values, k=3):
    vals = np.unique(values)[:k]
    return ", ".join(f"{v:g}" for v in vals)


BERNOULLI = Family("bernoulli", 0)
BINOMIAL = Family("binomial", 0)
POISSON = Family("poisson", 1)
#: The negative binomial (NB2) with the start value ``alpha = 1`` (statsmodels' default).
NEGBIN = Family("negbin", 2, alpha=1.0)

_BY_NAME = {"bernoulli": BERNOULLI, "binomial": BINOMIAL, "poisson": POISSON,
            "negbin": NEGBIN}


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
    if isinstance(family, smf.NegativeBinomial):
        return _negbin_from_user(family, type(getattr(family, "link", None)).__name__)
    raise ValueError(
        f"family: {type(family).__name__} is not supported; use statsmodels' Binomial() or "
        "Poisson() with their canonical links, or NegativeBinomial(alpha=...) with the log link"
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


def _negbin_from_user(family, link):
    """statsmodels' ``NegativeBinomial(alpha=a)``: NB2 with the log link, ``a`` the start."""
    if link != "Log":
        raise ValueError(f"family: the negative binomial is supported with the log link only, "
                         f"not {link}; write sm.families.NegativeBinomial(alpha=1.0)")
    alpha = float(family.alpha)
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"family: NegativeBinomial(alpha={family.alpha!r}): alpha is the "
                         "start value of the estimated dispersion and must be positive and "
                         "finite; write e.g. NegativeBinomial(alpha=1.0) (alpha = 0 is the "
                         "Poisson model: use sm.families.Poisson())")
    return NEGBIN.with_alpha(alpha)


#: Below this ``x = alpha mu`` the alpha derivatives use their power series (the closed
#: forms lose about ``eps / x`` relative accuracy to cancellation).
NB_SERIES_X = 1e-2


def _nb_f(x):
    """``log(1 + x) - x / (1 + x)`` (``~ x^2 / 2``), accurate for small ``x``."""
    x = np.asarray(x, dtype=float)
    small = x < NB_SERIES_X
    xs = np.where(small, x, 0.0)
    ser = np.zeros_like(xs)
    for k in range(9, 1, -1):  # sum_k (-1)^k (k - 1) / k x^k, k = 2..9
        ser = (ser + (-1) ** k * (k - 1) / k) * xs
    ser = ser * xs
    with np.errstate(divide="ignore", invalid="ignore"):
        full = np.log1p(x) - x / (1.0 + x)
    return np.where(small, ser, full)


def _nb_g(x):
    """``x^2 / (1 + x)^2 - 2 log(1 + x) + 2 x / (1 + x)`` (``~ -2 x^3 / 3``), accurate for
    small ``x``."""
    x = np.asarray(x, dtype=float)
    small = x < NB_SERIES_X
    xs = np.where(small, x, 0.0)
    ser = np.zeros_like(xs)
    for k in range(11, 2, -1):  # sum_k (-1)^k (k - 1)(k - 2) / k x^k, k = 3..11
        ser = (ser + (-1) ** k * (k - 1) * (k - 2) / k) * xs
    ser = ser * xs * xs
    with np.errstate(divide="ignore", invalid="ignore"):
        full = x**2 / (1.0 + x) ** 2 - 2.0 * (np.log1p(x) - x / (1.0 + x))
    return np.where(small, ser, full)


def nb_draw_terms(wy, wn, eta, alpha):
    """The random-effect-dependent part of the NB2 log-density and its derivatives.

    With ``theta = 1/alpha``, ``mu = e^eta`` and ``x = alpha mu``, the log-density of one
    count is ``log f = k(y, alpha) + y eta - (y + theta) log(1 + x)`` with the constant
    in ``eta`` ``k = lgamma(y + theta) - lgamma(theta) - lgamma(y + 1) + y log alpha``
    (:func:`nb_constant`).  Per observation, with weights (``wy = w y``, ``wn = w``):

    * ``ll = wy eta - (wy + wn theta) log(1 + x)``;
    * ``r = d ll / d eta = (wy - wn mu) / (1 + x)``;
    * ``h = -d2 ll / d eta2 = (wn + alpha wy) mu / (1 + x)^2`` (observed, not expected:
      it depends on ``y``), ``dh = dh / d eta = h (1 - x) / (1 + x)``;
    * ``la = d ll / d alpha = wn f(x) / alpha^2 - wy mu / (1 + x)``,
      ``f(x) = log(1 + x) - x / (1 + x)``;
    * ``lea = d2 ll / d eta d alpha = -(wy - wn mu) mu / (1 + x)^2``;
    * ``laa = d2 ll / d alpha2 = wn g(x) / alpha^3 + wy mu^2 / (1 + x)^2``,
      ``g(x) = x^2 / (1 + x)^2 - 2 f(x)``;
    * ``ha = dh / d alpha = mu (wy (1 + x) - 2 mu (wn + alpha wy)) / (1 + x)^3``.

    ``f`` and ``g`` use their power series below ``x = 0.01``, so that every term has a
    finite limit as ``alpha -> 0`` (the Poisson model).

    Returns
    -------
    NBTerms
        Named fields ``ll r h dh la lea laa ha`` (arrays of ``eta``'s shape).
    """
    eta = np.asarray(eta, dtype=float)
    ll, r, h, mu = nb_eta_terms(wy, wn, eta, alpha)
    a = float(alpha)
    x = a * mu
    opx = 1.0 + x
    dh = h * (1.0 - x) / opx
    la = wn * _nb_f(x) / a**2 - wy * mu / opx
    lea = -(wy - wn * mu) * mu / opx**2
    laa = wn * _nb_g(x) / a**3 + wy * mu**2 / opx**2
    ha = mu * (wy * opx - 2.0 * mu * (wn + a * wy)) / opx**3
    return NBTerms(ll, r, h, dh, la, lea, laa, ha)


NBTerms = namedtuple("NBTerms", "ll r h dh la lea laa ha")


def nb_eta_terms(wy, wn, eta, alpha):
    """``(ll, r, h, mu)`` of :func:`nb_draw_terms` only (what the conditional modes need)."""
    mu = np.exp(np.minimum(eta, POISSON_ETA_MAX))
    a = float(alpha)
    x = a * mu
    opx = 1.0 + x
    ll = wy * eta - (wy + wn / a) * np.log1p(x)
    r = (wy - wn * mu) / opx
    h = (wn + a * wy) * mu / opx**2
    return ll, r, h, mu

#: Counts up to this are summed exactly in :func:`nb_constant`; larger ones use lgamma.
NB_EXACT_SUM_MAX = 200


def nb_constant(y, w, alpha):
    """``sum w (lgamma(y + 1/alpha) - lgamma(1/alpha) + y log alpha)`` and its first two
    derivatives in ``alpha``.

    For a count ``y <= 200`` the term is the exact finite sum ``sum_{j<y} log(1 + j alpha)``
    (derivatives ``sum j / (1 + j alpha)`` and ``-sum j^2 / (1 + j alpha)^2``), which stays
    accurate as ``alpha -> 0``; larger counts use ``lgamma``, digamma and trigamma.  Together
    with :func:`nb_draw_terms` and ``-lgamma(y + 1)`` it is the NB2 log-density.

    Returns
    -------
    value, d1, d2 : float
    """
    y = np.asarray(y, dtype=float)
    w = np.broadcast_to(np.asarray(w, dtype=float), y.shape)
    a = float(alpha)
    small = y <= NB_EXACT_SUM_MAX
    val = d1 = d2 = 0.0
    ys, ws = y[small].astype(np.int64), w[small]
    top = int(ys.max(initial=0))
    if top > 1:
        # W[j] = sum of the weights of the counts y > j, for j = 1 .. top - 1
        W = np.cumsum(np.bincount(ys, weights=ws, minlength=top + 1)[::-1])[::-1]
        j = np.arange(1, top, dtype=float)
        Wj = W[2 : top + 1]
        opj = 1.0 + j * a
        val += float(Wj @ np.log1p(j * a))
        d1 += float(Wj @ (j / opj))
        d2 -= float(Wj @ (j * j / opj**2))
    yb, wb = y[~small], w[~small]
    if yb.size:
        th = 1.0 / a
        dg = digamma(yb + th) - digamma(th)
        tg = polygamma(1, yb + th) - polygamma(1, th)
        val += float(np.sum(wb * (gammaln(yb + th) - gammaln(th) + yb * np.log(a))))
        d1 += float(np.sum(wb * (-th * th * dg + yb / a)))
        d2 += float(np.sum(wb * (2.0 * th**3 * dg + th**4 * tg - yb / a**2)))
    return float(val), float(d1), float(d2)
