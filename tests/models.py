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
