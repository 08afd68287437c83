"""Shared fixtures: the example models of ``models.py``, each built once per test module."""

from __future__ import annotations

import models
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
