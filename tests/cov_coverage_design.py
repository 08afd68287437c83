"""The data sets of the profile-coverage design (``benchmarks/bench_profile_coverage.py``):
Bernoulli ``y ~ x + (1 + x | g)``, 50 groups of 12, ``beta = (-0.3, 0.8)``,
``Sigma = [[1, 0.3], [0.3, 0.5]]``, data set ``seed`` from ``default_rng([2024, seed])``."""

from __future__ import annotations

import numpy as np
import pandas as pd


def coverage_data(seed, groups=50, per=12):
    """Data set ``seed`` of the profile-coverage design (as the benchmark simulates it)."""
    rng = np.random.default_rng([2024, seed])
    g = np.repeat(np.arange(groups), per)
    x = rng.normal(size=groups * per)
    S = np.array([[1.0, 0.3], [0.3, 0.5]])
    b = rng.multivariate_normal([0.0, 0.0], S, size=groups)
    eta = -0.3 + 0.8 * x + b[g, 0] + b[g, 1] * x
    y = (rng.random(groups * per) < 1.0 / (1.0 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"y": y, "x": x, "g": g})
