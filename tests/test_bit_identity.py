"""Fits are bit-identical to the stored reference (``tests/results/fit_reference.py``).

A refactoring must not change a single bit of a fit with a fixed seed: every parameter,
standard error, MCSE, the log-likelihood, the final m, the number of rounds and the boundary
derivatives are compared as exact float hex strings.
"""

from __future__ import annotations

import json

import pytest
from models import load_result

fit_reference = load_result("fit_reference")
STORED = json.loads(fit_reference.PATH.read_text())


@pytest.mark.parametrize("name", sorted(fit_reference.MODELS))
def test_fit_is_bit_identical_to_the_stored_reference(name):
    assert fit_reference.fit(name) == STORED[name]
