"""Is a reported Monte Carlo standard error the seed-to-seed SD?  Acceptance bands from n.

Fits with seeds ``0..n-1`` are independent draws of the Monte Carlo MLE.  If a parameter's
estimate is approximately normal with SD ``sigma``, its sample SD ``s`` over the n fits
satisfies ``(n - 1) s^2 / sigma^2 ~ chi2(n - 1)`` (relative SE of ``s`` about
``1 / sqrt(2 (n - 1))``).  The reported MCSE estimates ``sigma``; ``sigma_hat`` below is the
root mean square of the n reported MCSEs (``m="auto"`` may pick a different m per fit, so
the variance of the estimate is the mean of the per-fit variances).

A test accepts ``ratio = s / sigma_hat`` in ``[lo, hi]``, the two-sided chi-square interval
with the false-alarm rate ``1 - level`` split evenly over the p parameters (Bonferroni): if
the MCSEs are right, all p ratios pass with probability at least ``level``.  If every MCSE
is off by a factor ``c`` (``sigma_hat = sigma / c``), ``ratio = c s / sigma`` and one
parameter fails with probability :func:`power` ``(n, p, c)``.

With ``level = 0.999`` (every probability from the chi-square distribution; the
uncertainty of ``sigma_hat`` itself, a few % / sqrt(n), is ignored):

====  ===  ===============  ====================  ====================
n     p    [lo, hi]         fails if c = 2         fails if c = 1/2
====  ===  ===============  ====================  ====================
10    6    [0.265, 1.949]   0.48                  0.02
24    4    [0.506, 1.566]   0.92                  0.57
40    4    [0.611, 1.431]   0.995                 0.975
40    6    [0.601, 1.444]   0.994                 0.965
48    4    [0.643, 1.391]   0.999                 0.997
====  ===  ===============  ====================  ====================

(per parameter; with p parameters all off by the same factor the chance that at least one
fails is higher).  Ten seeds cannot see an MCSE twice too large; about 40 seeds are needed
for both directions.  :func:`table` prints these numbers.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

LEVEL = 0.999


def band(n, p, level=LEVEL):
    """``(lo, hi)`` for ``s / sigma``: all p parameters inside with probability ``level``."""
    a = (1.0 - level) / p / 2.0
    return tuple(np.sqrt(stats.chi2.ppf([a, 1.0 - a], n - 1) / (n - 1)))


def power(n, p, factor, level=LEVEL):
    """Probability that one parameter fails when its MCSE is ``1 / factor`` times the truth
    (``factor = 2``: reported MCSE half the true SD)."""
    lo, hi = band(n, p, level)
    k = n - 1
    inside = (stats.chi2.cdf(k * (hi / factor) ** 2, k)
              - stats.chi2.cdf(k * (lo / factor) ** 2, k))
    return 1.0 - inside


def check_spread(estimates, mcses, names=None, level=LEVEL):
    """Assert that the seed-to-seed SD of each column of ``estimates`` (n x p) matches the
    root mean square of the reported ``mcses`` (n x p) within :func:`band`; returns the
    ratios."""
    est, mc = np.asarray(estimates, dtype=float), np.asarray(mcses, dtype=float)
    n, p = est.shape
    ratio = est.std(axis=0, ddof=1) / np.sqrt(np.mean(mc**2, axis=0))
    lo, hi = band(n, p, level)
    names = list(range(p)) if names is None else list(names)
    bad = {nm: round(float(r), 3) for nm, r in zip(names, ratio, strict=True)
           if not lo <= r <= hi}
    assert not bad, (f"seed SD / RMS MCSE outside [{lo:.3f}, {hi:.3f}] (n = {n}, "
                     f"{level:.1%} band): {bad}")
    return ratio


def table(rows=((10, 6), (24, 4), (40, 4), (40, 6), (48, 4))):
    """The docstring's table."""
    for n, p in rows:
        lo, hi = band(n, p)
        print(f"{n:4d} {p:3d}  [{lo:.3f}, {hi:.3f}]  {power(n, p, 2.0):.3f}  "
              f"{power(n, p, 0.5):.3f}")


if __name__ == "__main__":
    table()
