"""Reproducibility: what is bit-identical, and what agrees to a stated tolerance.

The guarantee (``docs/performance.rst``, "Reproducibility"):

* On one machine, the same ``random_state`` gives the same fit bit for bit whatever the
  number of threads (``n_jobs``); chunks are combined in a fixed order.  A different
  ``chunk_size`` sums in another order: equal to rounding (relative 1e-12; measured
  <= 3e-14).
* On another CPU the numba kernels are compiled for that CPU (FMA, vector widths), so the
  last bits differ: every number agrees to a relative :data:`RTOL_CPU` = 1e-9, and the
  discrete outcomes (final m, number of rounds) are the same.  ``tests/results/
  cpu_tolerance.py`` measured the differences between kernels compiled for this machine
  (``znver3``), for a generic x86-64 (``NUMBA_CPU_NAME=generic``: no FMA, no AVX) and the
  stored reference (made on a third machine): at most 1.8e-10 (radish2's MCSEs, whose
  score variance is a ~1e4-fold cancellation), at most 3e-14 for everything else.  1e-9
  leaves a factor 5 over the worst case; a change of the arithmetic (a new algorithm, a
  different default) moves the numbers by far more (Monte Carlo error: ~1e-3 relative).

``tests/results/fit_reference.json`` holds the fits (``fit_reference.py``).
"""

from __future__ import annotations

import json
import math

import pytest
from models import load_result

fit_reference = load_result("fit_reference")
STORED = json.loads(fit_reference.PATH.read_text())

#: Relative agreement of a fit across CPUs (module docstring).
RTOL_CPU = 1e-9
#: Relative agreement of a fit across chunk sizes on one machine.
RTOL_CHUNK = 1e-12


def _floats(record):
    """Every float of a fit record, by label (``fit_reference.fit``'s float hex strings)."""
    out = {f"{key}[{i}]": float.fromhex(h)
           for key in ("params", "bse", "mcse") for i, h in enumerate(record[key])}
    out["llf"] = float.fromhex(record["llf"])
    out |= {f"boundary[{k}]": float.fromhex(h) for k, h in record["boundary"].items()}
    return out


def _assert_close(got, want, rtol):
    assert (got["m"], got["rounds"]) == (want["m"], want["rounds"])
    a, b = _floats(got), _floats(want)
    assert a.keys() == b.keys()
    bad = {k: (a[k], b[k]) for k in a
           if not (math.isnan(a[k]) and math.isnan(b[k]))
           and not abs(a[k] - b[k]) <= rtol * max(abs(a[k]), abs(b[k]))}
    assert not bad, bad


@pytest.fixture(scope="module")
def fits():
    """This machine's fits (``n_jobs=1``), once per model."""
    return {}


def _fit(fits, name):
    if name not in fits:
        fits[name] = fit_reference.fit(name)
    return fits[name]


@pytest.mark.parametrize("name", sorted(fit_reference.MODELS))
def test_fit_agrees_with_the_stored_reference_to_the_cross_cpu_tolerance(fits, name):
    _assert_close(_fit(fits, name), STORED[name], RTOL_CPU)


@pytest.mark.parametrize("name", ["salamander", "radish2", "Booth2"])
def test_threads_change_no_bit(fits, name):
    assert fit_reference.fit(name, n_jobs=2) == _fit(fits, name)


@pytest.mark.parametrize("name", ["salamander", "radish2"])
def test_chunk_size_changes_only_rounding(fits, name):
    _assert_close(fit_reference.fit(name, chunk_size=777), _fit(fits, name), RTOL_CHUNK)
