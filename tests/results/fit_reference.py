"""Bit-identity reference: fits with fixed seeds, stored as exact float hex strings.

These are not correct answers from other software (see ``README.md``): they are this
package's own results, stored so that a refactoring that should not change any arithmetic
can be checked to change none.  ``tests/test_bit_identity.py`` refits every model below and
compares every number with the stored one to the cross-CPU tolerance measured by
``cpu_tolerance.py`` (the numba kernels are compiled for the host CPU, so the last bits
differ between machines), and checks within one run that threads change no bit.  A change
that is *meant* to change the numbers (a new algorithm, a different default) regenerates the
file, from the repository root::

    OPENBLAS_NUM_THREADS=1 python tests/results/fit_reference.py

and says so in its commit message.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

import glmm_sm
from glmm_sm import MonteCarloGLMM

PATH = Path(__file__).with_name("fit_reference.json")

#: name -> (formula, variance-component formulas, data set, family, random_state)
MODELS = {
    "salamander": ("Mate ~ 0 + Cross", {"F": "0 + C(Female)", "M": "0 + C(Male)"},
                   "salamander", "bernoulli", 0),
    "BoothHobert": ("y ~ 0 + x1", {"z1": "0 + C(z1)"}, "BoothHobert", "bernoulli", 0),
    "Booth2": ("y ~ 0 + x1", {"z1": "0 + C(z1)", "z2": "0 + C(z2)"}, "Booth2",
               "bernoulli", 0),
    "radish2": ("resp ~ Site + Region", {"Block": "0 + C(Site):C(Block)", "Pop": "0 + C(Pop)"},
                "radish2", "poisson", 0),
    "murder": ("y ~ race", {"black": "0 + C(black)", "white": "0 + C(white)"}, "murder",
               "poisson", 0),
}


def _hex(x):
    return [float(v).hex() for v in np.ravel(np.asarray(x, dtype=float))]


def fit(name, **options):
    """Fit model ``name`` of :data:`MODELS` (``options`` go to ``fit``; default
    ``n_jobs=1`` and ``sampler="laplace"``: the records check the Monte Carlo arithmetic,
    which ``sampler="auto"`` would replace by the deterministic quadrature for the
    one-factor and nested designs); its record of exact numbers."""
    formula, vc, data, family, seed = MODELS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MonteCarloGLMM.from_formula(formula, vc, glmm_sm.datasets.load(data),
                                            family=family)
        res = model.fit(random_state=seed, disp=False,
                        **({"n_jobs": 1, "sampler": "laplace"} | options))
    return {"params": _hex(res.params), "bse": _hex(res.bse), "mcse": _hex(res.mcse()),
            "llf": float(res.llf).hex(), "m": int(res.m), "rounds": len(res.fit_log.rounds),
            "boundary": {k: float(v).hex() for k, v in res.fit_log.boundary.items()}}


def compute():
    return {name: fit(name) for name in MODELS}


if __name__ == "__main__":
    PATH.write_text(json.dumps(compute(), indent=1) + "\n")
    print(f"wrote {PATH}")
