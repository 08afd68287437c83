"""Per-observation terms of the non-canonical binomial links for the numba kernels.

With ``F`` the inverse link, an observation with weighted successes ``wy`` and trials ``wn``
contributes ``l = wy log F(eta) + (wn - wy) log(1 - F(eta))``; :func:`link_obs_terms` returns
``(l, dl/deta, -d^2 l/deta^2)``, the numba twin of
:func:`glmm_sm.spec.families.link_terms` (the formulas are written out there):

* probit, ``F = Phi``: ``log Phi`` and the ratio ``phi / Phi`` from ``erfc`` down to
  ``eta = -30`` and from the asymptotic series of ``Phi`` below it (the first omitted term is
  below ``1e-16`` there; ``erfc`` stays normal far past it);
* complementary log-log, ``F = 1 - exp(-e^eta)``: ``log(1 - e^-mu)`` and the information's
  difference ``mu - (1 - e^-mu)`` by its series for small ``mu``.

The codes are :data:`glmm_sm.spec.families.LINK_CODES`; ``tests/test_links.py`` checks these
against scipy for ``|eta|`` up to 40 and beyond.
"""

from __future__ import annotations

import math

import numba

from glmm_sm.core.constants import HALF_LOG2PI, POISSON_ETA_MAX

#: Kernel codes (:data:`glmm_sm.spec.families.LINK_CODES`).
PROBIT, CLOGLOG = 10, 11
#: Below this ``x``, ``log Phi(x)`` and ``phi(x) / Phi(x)`` come from the asymptotic series.
_TAIL = -30.0
_SQRT1_2 = 0.7071067811865476
_LN2 = 0.6931471805599453

_JIT = dict(inline="always", error_model="numpy")


@numba.njit(**_JIT)
def _tail_series(x):
    """``Phi(x) |x| / phi(x)`` for ``x <= -30``: ``1 - 1/x^2 + 3/x^4 - ...`` (seven terms)."""
    z = 1.0 / (x * x)
    return 1.0 - z * (1.0 - 3.0 * z * (1.0 - 5.0 * z * (1.0 - 7.0 * z * (1.0 - 9.0 * z * (
        1.0 - 11.0 * z)))))


@numba.njit(**_JIT)
def log_ndtr(x):
    """``log Phi(x)``."""
    if x > 0.0:
        return math.log1p(-0.5 * math.erfc(x * _SQRT1_2))
    if x > _TAIL:
        return math.log(0.5 * math.erfc(-x * _SQRT1_2))
    return -0.5 * x * x - HALF_LOG2PI - math.log(-x) + math.log(_tail_series(x))


@numba.njit(**_JIT)
def mills(x):
    """``phi(x) / Phi(x)``."""
    if x > _TAIL:
        return math.exp(-0.5 * x * x - HALF_LOG2PI) / (0.5 * math.erfc(-x * _SQRT1_2))
    return -x / _tail_series(x)


@numba.njit(**_JIT)
def _probit(e, wyi, wni):
    wf = wni - wyi
    m1 = mills(e)
    m0 = mills(-e)
    ll = 0.0
    if wyi != 0.0:
        ll += wyi * log_ndtr(e)
    if wf != 0.0:
        ll += wf * log_ndtr(-e)
    return ll, wyi * m1 - wf * m0, wyi * m1 * (e + m1) + wf * m0 * (m0 - e)


@numba.njit(**_JIT)
def _cloglog(e, wyi, wni):
    wf = wni - wyi
    mu = math.exp(min(e, POISSON_ETA_MAX))
    q = math.exp(-mu)
    om = -math.expm1(-mu)
    if mu < 1e-3:
        D = mu * mu * (0.5 - mu * (1 / 6 - mu * (1 / 24 - mu * (1 / 120 - mu * (
            1 / 720 - mu / 5040)))))
    else:
        D = mu - om
    g = mu * q / om
    lp = math.log(om) if mu < _LN2 else math.log1p(-q)
    ll = -wf * mu
    if wyi != 0.0:
        ll += wyi * lp
    return ll, wyi * g - wf * mu, wyi * g * D / om + wf * mu


@numba.njit(**_JIT)
def link_obs_terms(code, e, wyi, wni):
    """``(l, dl/deta, -d^2 l/deta^2)`` of one observation for link ``code``."""
    if code == PROBIT:
        return _probit(e, wyi, wni)
    return _cloglog(e, wyi, wni)


@numba.njit(cache=True, error_model="numpy")
def _terms_array(code, eta, wy, wn, out):  # pragma: no cover - exercised through tests
    for i in range(eta.shape[0]):
        out[0, i], out[1, i], out[2, i] = link_obs_terms(code, eta[i], wy[i], wn[i])
