"""Shared fixtures: the example models of ``models.py``, each built once per test module."""

from __future__ import annotations

import models
import numpy as np
import pandas as pd
import pytest

import glmm_sm


@pytest.fixture(scope="module")
def salamander_df():
    """The salamander data frame."""
    return glmm_sm.datasets.load("salamander")


@pytest.fixture(scope="module")
def salamander_model():
    """The salamander model, Bernoulli family."""
    return models.salamander()


@pytest.fixture(scope="module")
def boothhobert_model():
    """The BoothHobert model."""
    return models.boothhobert()


@pytest.fixture(scope="module")
def booth2_model():
    """The Booth2 model (second component at 0)."""
    return models.booth2()


@pytest.fixture(scope="module")
def radish2_model():
    """The radish2 Poisson model."""
    return models.radish2()


@pytest.fixture(scope="module")
def slope_data():
    """40 groups of 8 Bernoulli observations with a correlated intercept and slope."""
    rng = np.random.default_rng(11)
    L, per = 40, 8
    g = np.repeat(np.arange(L), per)
    x = rng.normal(size=L * per)
    b = rng.multivariate_normal([0, 0], [[1.0, 0.4], [0.4, 0.5]], size=L)
    eta = -0.3 + 0.8 * x + b[g, 0] + b[g, 1] * x
    y = (rng.random(L * per) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"y": y, "x": x, "g": g})
