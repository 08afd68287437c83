"""Example data sets for generalized linear mixed models.

The seven data sets shipped by the R package ``glmm`` (version 1.4.5) are bundled
with ``glmm_sm`` as package data.  Factor columns are restored as
:class:`pandas.Categorical` with R's level order, so that treatment-contrast
baselines and design-matrix column order agree with R.

Examples
--------
>>> import glmm_sm.datasets as ds
>>> ds.names()
['Booth2', 'BoothHobert', 'bacteria', 'cbpp2', 'murder', 'radish2', 'salamander']
>>> df = ds.load("salamander")
>>> df.shape
(360, 4)
>>> list(df["Cross"].cat.categories)
['R/R', 'R/W', 'W/R', 'W/W']
"""

from __future__ import annotations

import io
import json
from importlib import resources

import numpy as np
import pandas as pd

__all__ = ["load", "names", "describe"]

_DATA_DIR = "data"
_LEVELS_FILE = "factor_levels.json"

_DESCRIPTIONS = {
    "salamander": (
        "Salamander mating experiment (McCullagh and Nelder 1989, section 14.5): 360 "
        "matings between Rough Butt (R) and White Side (W) salamanders. Mate is the 0/1 "
        "response, Cross (R/R, R/W, W/R, W/W; female type first) the fixed effect, and "
        "Female and Male (60 animals each) crossed random effects. The 120-dimensional "
        "random-effect integral factors into 6 independent blocks of 10 females and 10 "
        "males (60 rows each). Typical model: Bernoulli, Mate ~ 0 + Cross, random "
        "~0 + Female and ~0 + Male."
    ),
    "BoothHobert": (
        "Simulated logit-normal data from Booth and Hobert (1999): 150 rows in 10 "
        "clusters (z1) of 15 observations. y is a 0/1 response, x1 a covariate equal to "
        "j/15 within each cluster. Typical model: Bernoulli, y ~ 0 + x1 with one random "
        "intercept per cluster (~0 + z1); the exact maximum-likelihood estimate is known "
        "from quadrature, which makes it a standard accuracy check."
    ),
    "Booth2": (
        "The BoothHobert data (150 rows, 10 clusters z1) with an additional integer "
        "column z2 (1 to 5). It is used to illustrate several random-effect terms that "
        "share one variance component."
    ),
    "bacteria": (
        "Presence of H. influenzae in 220 tests on 50 children with otitis media (from "
        "the R package MASS). y2 is the 0/1 response (y holds the same information as "
        "n/y labels), trt the treatment (placebo, drug, drug+), week the week of the "
        "test and ID the child. Typical model: Bernoulli, y2 ~ trt + I(week > 2) with a "
        "random intercept per child (~0 + ID)."
    ),
    "cbpp2": (
        "Contagious bovine pleuropneumonia in 15 zebu herds, expanded to one row per "
        "animal and period (842 rows). Y is the 0/1 infection indicator, period (1 to 4) "
        "the fixed effect and herd the random effect. Aggregated by herd and period it "
        "gives the binomial cbpp data of lme4."
    ),
    "murder": (
        "Survey answers (Agresti 2002) to how many homicide victims the respondent knew "
        "personally, 1308 respondents; y is that count plus one (1 to 7). race "
        "(Black, White) is the fixed effect and the indicator factors black and white "
        "carry race-specific random effects. Typical model: Poisson, y ~ race with "
        "random ~0 + black and ~0 + white; both variance components are close to zero, "
        "a boundary case."
    ),
    "radish2": (
        "Wild radish life-history data (Ridley and Ellstrand 2010), 233 rows. resp is a "
        "flower count (4 to 4685), Site and Region are fixed effects, Block (nested in "
        "Site) and Pop (nested in Region) random effects. Typical model: Poisson; the "
        "large counts make it numerically demanding."
    ),
}


def _data_root():
    return resources.files(__name__).joinpath(_DATA_DIR)


def names():
    """List the names of the bundled data sets.

    Returns
    -------
    list of str
        The data-set names (the CSV file stems), sorted.

    Examples
    --------
    >>> import glmm_sm.datasets as ds
    >>> ds.names()
    ['Booth2', 'BoothHobert', 'bacteria', 'cbpp2', 'murder', 'radish2', 'salamander']
    """
    stems = [
        entry.name[: -len(".csv")]
        for entry in _data_root().iterdir()
        if entry.is_file() and entry.name.endswith(".csv")
    ]
    return sorted(stems)


def _resolve(name):
    """Map a user-supplied name to the canonical data-set name (case-insensitive)."""
    if not isinstance(name, str):
        raise TypeError(f"data-set name must be a str, got {type(name).__name__}")
    available = names()
    lookup = {n.lower(): n for n in available}
    try:
        return lookup[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown data set {name!r}; valid names are: {', '.join(available)}"
        ) from None


def _read_levels():
    text = _data_root().joinpath(_LEVELS_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def _corrupt(name, message):
    return ValueError(f"bundled data set {name!r} appears to be corrupted: {message}")


def _to_numeric(name, column, values, rtype):
    """Convert one non-factor column according to its R type."""
    if rtype == "integer":
        if values.isna().any():
            raise _corrupt(name, f"integer column {column!r} has missing values")
        out = pd.to_numeric(values, errors="coerce")
        if out.isna().any() or not np.all(np.mod(out.to_numpy(dtype=float), 1) == 0):
            raise _corrupt(name, f"integer column {column!r} has non-integer values")
        return out.astype(np.int64)
    # R "numeric" (double): whole-number columns such as 0/1 responses and counts
    # become int64, everything else float64.
    out = pd.to_numeric(values, errors="coerce")
    if out.isna().sum() != values.isna().sum():
        raise _corrupt(name, f"numeric column {column!r} has non-numeric values")
    arr = out.to_numpy(dtype=np.float64)
    if not np.isnan(arr).any() and np.all(np.mod(arr, 1) == 0):
        return out.astype(np.int64)
    return out.astype(np.float64)


def load(name):
    """Load a bundled data set as a new DataFrame.

    Parameters
    ----------
    name : str
        Name of the data set, one of :func:`names`. The lookup is
        case-insensitive (``"boothhobert"`` finds ``"BoothHobert"``).

    Returns
    -------
    pandas.DataFrame
        A freshly read DataFrame; modifying it does not affect later calls.
        Factor columns are :class:`pandas.Categorical` with the categories in R's
        level order (e.g. ``"1", "2", ..., "10"``, not string order). R integer
        columns are ``int64``; R double columns are ``int64`` when every value is a
        whole number (0/1 responses, counts) and ``float64`` otherwise. Any other
        column is left as strings.

    Raises
    ------
    TypeError
        If `name` is not a string.
    ValueError
        If `name` is not a known data set, or if the bundled file is corrupted
        (e.g. a factor value outside the recorded levels).

    Examples
    --------
    >>> import glmm_sm.datasets as ds
    >>> df = ds.load("BoothHobert")
    >>> df.dtypes.astype(str).to_dict()
    {'y': 'int64', 'x1': 'float64', 'z1': 'category'}
    >>> list(df["z1"].cat.categories)
    ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10']
    """
    canonical = _resolve(name)
    meta = _read_levels().get(canonical)
    if meta is None:
        raise _corrupt(canonical, f"no entry in {_LEVELS_FILE}")
    factors = meta.get("factors", {})
    column_types = meta.get("column_types", [])

    text = _data_root().joinpath(f"{canonical}.csv").read_text(encoding="utf-8")
    header = pd.read_csv(io.StringIO(text), nrows=0).columns.tolist()
    if len(header) != len(column_types):
        raise _corrupt(
            canonical,
            f"{len(header)} columns in the CSV but {len(column_types)} column types "
            f"in {_LEVELS_FILE}",
        )
    missing = [f for f in factors if f not in header]
    if missing:
        raise _corrupt(canonical, f"factor columns {missing} are not in the CSV")
    types = dict(zip(header, column_types, strict=True))
    for column, rtype in types.items():
        if (rtype == "factor") != (column in factors):
            raise _corrupt(
                canonical,
                f"column {column!r} has type {rtype!r}, which disagrees with the factor "
                f"entries in {_LEVELS_FILE}",
            )

    str_columns = [c for c, t in types.items() if t not in ("integer", "numeric")]
    frame = pd.read_csv(io.StringIO(text), dtype=dict.fromkeys(str_columns, str))

    for column, rtype in types.items():
        values = frame[column]
        if rtype == "factor":
            spec = factors[column]
            levels = [str(level) for level in spec["levels"]]
            present = values.dropna()
            bad = sorted(set(present) - set(levels))
            if bad:
                raise _corrupt(
                    canonical,
                    f"column {column!r} has values {bad[:5]} outside its levels {levels}",
                )
            frame[column] = pd.Categorical(
                values, categories=levels, ordered=bool(spec.get("ordered", False))
            )
        elif rtype in ("integer", "numeric"):
            frame[column] = _to_numeric(canonical, column, values, rtype)
    return frame


def describe(name):
    """Describe a bundled data set.

    Parameters
    ----------
    name : str
        Name of the data set, one of :func:`names` (case-insensitive).

    Returns
    -------
    str
        A one-paragraph description: size, variables and the model it is
        usually fitted with.

    Raises
    ------
    TypeError
        If `name` is not a string.
    ValueError
        If `name` is not a known data set.

    Examples
    --------
    >>> import glmm_sm.datasets as ds
    >>> "360" in ds.describe("salamander")
    True
    """
    return _DESCRIPTIONS[_resolve(name)]
