"""The example models the tests share, built one way (fixtures in ``conftest.py``).

Each builder returns a fresh, unfitted :class:`~glmm_sm.MonteCarloGLMM`; keyword arguments
go to ``from_formula``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import statsmodels.api as sm

import glmm_sm
from glmm_sm import MonteCarloGLMM

RESULTS = Path(__file__).parent / "results"

SAL_FORMULA = "Mate ~ 0 + Cross"
SAL_VC = {"F": "0 + C(Female)", "M": "0 + C(Male)"}
RADISH_VC = {"Block": "0 + C(Site):C(Block)", "Pop": "0 + C(Pop)"}


def salamander(family="bernoulli", **kw):
    """Booth and Hobert's salamander mating model: crossed female and male effects."""
    return MonteCarloGLMM.from_formula(SAL_FORMULA, SAL_VC, glmm_sm.datasets.load("salamander"),
                                       family=family, **kw)


def salamander_binomial(**kw):
    """:func:`salamander` with ``sm.families.Binomial()`` given as the family."""
    return salamander(family=sm.families.Binomial(), **kw)


def radish2(**kw):
    """Poisson radish counts: blocks within sites and populations."""
    return MonteCarloGLMM.from_formula("resp ~ Site + Region", RADISH_VC,
                                       glmm_sm.datasets.load("radish2"),
                                       family=sm.families.Poisson(), **kw)


def boothhobert(**kw):
    """Booth and Hobert's simulated logit-normal data: one variance component."""
    return MonteCarloGLMM.from_formula("y ~ 0 + x1", {"z1": "0 + C(z1)"},
                                       glmm_sm.datasets.load("BoothHobert"),
                                       family="bernoulli", **kw)


def booth2(**kw):
    """Two variance components, the second estimated at 0."""
    return MonteCarloGLMM.from_formula("y ~ 0 + x1", {"z1": "0 + C(z1)", "z2": "0 + C(z2)"},
                                       glmm_sm.datasets.load("Booth2"), family="bernoulli",
                                       **kw)


def cbpp_aggregated():
    """cbpp2's 842 Bernoulli rows summed by herd and period: 56 binomial rows with trials."""
    df = glmm_sm.datasets.load("cbpp2")
    agg = (df.groupby(["herd", "period"], observed=True)["Y"].agg(["sum", "count"])
           .reset_index().rename(columns={"sum": "incidence", "count": "size"}))
    agg["healthy"] = agg["size"] - agg["incidence"]
    return agg


def cbpp(df=None, **kw):
    """Binomial with trials: incidence out of herd size, by period, herd effects."""
    return MonteCarloGLMM.from_formula("incidence + healthy ~ period", {"herd": "0 + C(herd)"},
                                       cbpp_aggregated() if df is None else df,
                                       family=sm.families.Binomial(), **kw)


def load_result(name):
    """The module ``tests/results/<name>.py`` (stored reference results), imported."""
    spec = importlib.util.spec_from_file_location(f"_glmm_sm_results_{name}",
                                                  RESULTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def crossed_data(n_subjects=100, n_items=8, seed=2026):
    """A subjects x items Bernoulli design (one block of ``n_subjects + n_items`` effects):
    a subject-level covariate ``x``, subject variance 1.8 and item variance 0.25, as in
    issue 11's simulated VerbAgg-shaped design but smaller."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    subj = np.repeat(np.arange(n_subjects), n_items)
    item = np.tile(np.arange(n_items), n_subjects)
    x = rng.normal(size=n_subjects)[subj]
    eta = (-0.3 + 0.5 * x + rng.normal(0.0, np.sqrt(1.8), n_subjects)[subj]
           + rng.normal(0.0, 0.5, n_items)[item])
    y = (rng.random(subj.size) < 1.0 / (1.0 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"y": y, "x": x, "subj": subj, "item": item})


def crossed(**kw):
    """The model ``y ~ x + (1 | subj) + (1 | item)`` on :func:`crossed_data`."""
    return MonteCarloGLMM.from_formula("y ~ x + (1 | subj) + (1 | item)", data=crossed_data(),
                                       family="bernoulli", **kw)
