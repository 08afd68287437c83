"""Exact MLE of lme4's standard Contraception model with a correlated random intercept and
urban slope per district, by adaptive Gauss-Hermite quadrature; writes
``contraception_aghq2d.json`` beside this file.

Model (lme4 syntax): ``use ~ age + I(age^2) + urban + livch + (1 + urban | district)``,
Bernoulli with the logit link, ``use == "Y"`` the success; data ``tests/data/contraception.csv``
(mlmRev's ``Contraception``, provenance in ``tests/data/README.md``).  The fixed-effect columns
and their names are patsy's for ``use ~ age + I(age**2) + urban + livch`` (R's factor levels,
first level the baseline); the random design per district is ``(Intercept, urban[T.Y])``.  15
of the 60 districts have no urban woman: their slope is informed by its prior only.

The likelihood is evaluated by ``tests/aghq2d.py`` (plain numpy/scipy, independent of
``glmm_sm``) with K = 15, 20 and 25 Gauss-Hermite nodes per dimension (K^2 per district),
each fit started from the GLM estimate and ``Sigma = I``.  The K = 25 fit is the reference;
the quadrature error of each estimate is ``max(|K25 - K20|, |K20 - K15|)``.  If
``contraception_lme4.csv`` (written by ``contraception_lme4.R``) is present, lme4's Laplace
estimates are copied into the JSON as a cross-check (close to the exact MLE, not equal).

Run from the repository root::

    OPENBLAS_NUM_THREADS=1 python tests/results/contraception_aghq2d.py
"""

from __future__ import annotations

import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import patsy
import scipy

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from aghq2d import VectorRandomEffectsGLMM  # noqa: E402

FORMULA = "use ~ age + I(age**2) + urban + livch"
RE_COLUMNS = ["Intercept", "urban[T.Y]"]
VC_NAMES = ["district Var(Intercept)", "district Cov(urban[T.Y], Intercept)",
            "district Var(urban[T.Y])"]
LEVELS = {"use": ["N", "Y"], "livch": ["0", "1", "2", "3+"], "urban": ["N", "Y"]}
NODES = (15, 20, 25)
JSON_PATH = HERE / "contraception_aghq2d.json"
LME4_CSV = HERE / "contraception_lme4.csv"
#: lme4's names -> ours.
LME4_NAMES = {"(Intercept)": "Intercept", "age": "age", "I(age^2)": "I(age ** 2)",
              "urbanY": "urban[T.Y]", "livch1": "livch[T.1]", "livch2": "livch[T.2]",
              "livch3+": "livch[T.3+]", "district Var(Intercept)": VC_NAMES[0],
              "district Cov(urbanY, Intercept)": VC_NAMES[1],
              "district Var(urbanY)": VC_NAMES[2]}


def contraception_data():
    """The Contraception data frame: R's factor levels, ``use`` as 0/1 (1 for "Y"),
    ``district`` as strings."""
    df = pd.read_csv(TESTS / "data" / "contraception.csv",
                     dtype={"use": str, "livch": str, "urban": str, "district": str})
    for col, levels in LEVELS.items():
        df[col] = pd.Categorical(df[col], categories=levels)
    df["use"] = (df["use"] == "Y").astype(np.int64)
    return df


def contraception_model(n_nodes=NODES[-1]):
    """The AGHQ model and the fixed-effect names.

    Returns
    -------
    model : aghq2d.VectorRandomEffectsGLMM
    fe_names : list of str
    """
    df = contraception_data()
    y, X = patsy.dmatrices(FORMULA, df, return_type="dataframe")
    Z = X[RE_COLUMNS].to_numpy()
    model = VectorRandomEffectsGLMM(y.iloc[:, 0], X, Z, df.loc[y.index, "district"],
                                    "bernoulli", n_nodes=n_nodes)
    return model, list(X.columns)


def read_lme4(path=LME4_CSV):
    """lme4's Laplace estimates from ``contraception_lme4.csv`` (None if absent)."""
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    table = pd.read_csv(path, comment="#")
    rows = table.set_index("name")
    return {"note": " ".join(line[2:] for line in lines if line.startswith("# ")),
            "script": "tests/results/contraception_lme4.R",
            "params": {LME4_NAMES[n]: float(rows.loc[n, "estimate"]) for n in LME4_NAMES},
            "bse": {LME4_NAMES[n]: float(rows.loc[n, "se"]) for n in LME4_NAMES
                    if np.isfinite(rows.loc[n, "se"])},
            "llf": float(rows.loc["logLik", "estimate"])}


def fit_all():
    """Fit with every node count of ``NODES``: ``{K: (result, seconds)}`` and the names."""
    fits = {}
    for K in NODES:
        model, fe_names = contraception_model(K)
        t0 = time.perf_counter()
        res = model.fit()
        fits[K] = (res, time.perf_counter() - t0)
        print(f"K = {K}: {fits[K][1]:.1f} s, success {res.success}, llf {res.llf:.10f}")
    return fits, fe_names + VC_NAMES


def reference(fits, names, seconds):
    """The JSON content: the K = 25 fit, the quadrature error and the provenance."""
    res = fits[NODES[-1]][0]
    diffs = {f"K{b}-K{a}": np.abs(fits[b][0].params - fits[a][0].params)
             for a, b in zip(NODES[:-1], NODES[1:], strict=True)}
    quad = np.max(np.stack(list(diffs.values())), axis=0)
    return {
        "model": "use ~ age + I(age^2) + urban + livch + (1 + urban | district), Bernoulli "
                 "(logit), use == 'Y'; tests/data/contraception.csv",
        "names": names,
        "params": res.params.tolist(),
        "bse": res.bse.tolist(),
        "cov": res.cov.tolist(),
        "llf": res.llf,
        "quadrature_error": quad.tolist(),
        "quadrature_differences": {k: v.tolist() for k, v in diffs.items()},
        "llf_by_nodes": {f"K{K}": fits[K][0].llf for K in NODES},
        "n_nodes": NODES[-1],
        "nodes_compared": list(NODES),
        "gradient": res.gradient.tolist(),
        "gradient_norm": float(np.linalg.norm(res.gradient)),
        "optimizer_gradient_norm": res.optimizer_gradient_norm,
        "newton_step": res.newton_step.tolist(),
        "success": res.success,
        "optimizer_message": res.message,
        "lme4_laplace": read_lme4(),
        "provenance": {
            "date": datetime.date.today().isoformat(),
            "script": "tests/results/contraception_aghq2d.py (likelihood: tests/aghq2d.py)",
            "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "pandas": pd.__version__,
            "patsy": patsy.__version__, "run_time_s": round(seconds, 1),
            "fit_time_s": {f"K{K}": round(fits[K][1], 2) for K in NODES},
        },
    }


def main():
    """Fit, print the reference and write ``contraception_aghq2d.json``."""
    t0 = time.perf_counter()
    fits, names = fit_all()
    out = reference(fits, names, time.perf_counter() - t0)
    for k, name in enumerate(names):
        print(f"{name:40s} {out['params'][k]: .10f}  se {out['bse'][k]:.8f}  "
              f"quad {out['quadrature_error'][k]:.1e}  step {out['newton_step'][k]: .1e}")
    JSON_PATH.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {JSON_PATH} in {out['provenance']['run_time_s']} s")


if __name__ == "__main__":
    main()
