"""Numerical constants shared by the numpy code and the numba kernels (one definition each)."""

from __future__ import annotations

import math

__all__ = ["LOG2PI", "HALF_LOG2PI", "POISSON_ETA_MAX"]

#: ``log(2 pi)``, for normal log-densities.
LOG2PI = math.log(2.0 * math.pi)
#: ``log(2 pi) / 2``.
HALF_LOG2PI = 0.5 * LOG2PI
#: Poisson linear predictors are clipped here before ``exp``: beyond it ``e^eta`` times any
#: reasonable weight would overflow, and such draws carry zero importance weight anyway.
POISSON_ETA_MAX = 690.0
