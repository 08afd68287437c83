"""The error message for each kind of bad input, as a markdown table.

Run from the repository root, with this checkout's ``glmm_sm`` importable (an editable
install, or ``PYTHONPATH=.``)::

    python tests/results/error_messages.py > error_messages.md

Every row triggers one bad input through the public API (``MonteCarloGLMM(...)``,
``MonteCarloGLMM.from_formula(...)``, ``.fit(...)``) on the salamander data or a tiny
synthetic frame and prints the exception class and its exact message; where the input is
accepted with ``missing="drop"`` the row shows the warning instead.  The first line names
the ``glmm_sm`` that produced the table.  ``tests/test_validation.py`` holds the tests.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import statsmodels.api as sm

import glmm_sm
from glmm_sm import MonteCarloGLMM

VC = {"F": "0 + C(Female)", "M": "0 + C(Male)"}
FORMULA = "Mate ~ 0 + Cross + x"


def salamander():
    """Salamander mating data with a numeric covariate ``x`` and a float response."""
    df = glmm_sm.datasets.load("salamander")
    df["x"] = np.linspace(0.0, 1.0, len(df))
    df["Mate"] = df["Mate"].astype(float)
    return df


def changed(df, column, row, value):
    out = df.copy()
    out[column] = out[column].astype(object if isinstance(value, str) else float)
    out.loc[row, column] = value
    return out


def cases():
    """``(bad input, thunk)`` pairs; each thunk builds or fits one model."""
    sal = salamander()
    model = MonteCarloGLMM.from_formula(FORMULA, VC, sal, family="bernoulli")
    y, X = np.asarray(model.endog, dtype=float), np.asarray(model.exog, dtype=float)
    Z, ident = model.exog_vc, model.ident

    def arrays(y=y, X=X, Z=Z, ident=ident, **kw):
        kw.setdefault("vcp_names", ["F", "M"])
        kw.setdefault("family", "bernoulli")
        return MonteCarloGLMM(y, X, Z, ident, **kw)

    def formula(df=sal, f=FORMULA, vc=VC, **kw):
        kw.setdefault("family", "bernoulli")
        return MonteCarloGLMM.from_formula(f, vc, df, **kw)

    def fit(**kw):
        return model.fit(disp=False, **({"random_state": 1} | kw))

    bin_df = sal.assign(s=2.0 * sal["Mate"], f=3.0 - sal["Mate"])
    y_bad = y.copy()
    y_bad[3] = 0.5
    y_nan = y.copy()
    y_nan[3] = np.nan
    X_nan = X.copy()
    X_nan[5, 4] = np.nan
    w_neg = np.ones(len(y))
    w_neg[[0, 1]] = [-2.0, -0.5]
    off_inf = np.zeros(len(y))
    off_inf[9] = np.inf
    Z1 = sp.hstack([Z, sp.csr_matrix(np.ones((len(y), 1)))]).tocsr()
    one_level = sal.assign(g="only")
    yes_no = sal.assign(yn=np.where(sal["Mate"] > 0, "yes", "no"))
    aliased = sal.assign(x2=2.0 * sal["x"], x3=sal["x"] + 1.0)
    w_nan = sal.assign(w=1.0)
    w_nan.loc[11, "w"] = np.nan
    w_inf = sal.assign(w=1.0)
    w_inf.loc[11, "w"] = np.inf

    return [
        # response
        ("NaN in response, `missing=\"raise\"`",
         lambda: formula(changed(sal, "Mate", 7, np.nan), missing="raise")),
        ("NaN in response, `missing=\"drop\"` (default)",
         lambda: formula(changed(sal, "Mate", 7, np.nan))),
        ("inf in response (also with `missing=\"drop\"`)",
         lambda: formula(changed(sal, "Mate", 7, np.inf))),
        ("NaN in response, array constructor", lambda: arrays(y=y_nan)),
        ("NaN in response, array constructor, `missing=\"drop\"`",
         lambda: arrays(y=y_nan, missing="drop")),
        ("Bernoulli response 2", lambda: formula(changed(sal, "Mate", 3, 2.0))),
        ("Bernoulli response 0.5 (array)", lambda: arrays(y=y_bad)),
        ("Poisson count -1", lambda: formula(changed(sal, "Mate", 3, -1.0), family="poisson")),
        ("Poisson count 2.5", lambda: formula(changed(sal, "Mate", 3, 2.5), family="poisson")),
        ("binomial `s + f ~`: failures -1 (successes above trials)",
         lambda: formula(changed(bin_df, "f", 0, -1.0), f="s + f ~ 0 + Cross",
                         family="binomial")),
        ("binomial `s + f ~`: successes 1.5",
         lambda: formula(changed(bin_df, "s", 0, 1.5), f="s + f ~ 0 + Cross",
                         family="binomial")),
        ("binomial (successes, failures) array with failures -2 (successes 5 of 3 trials)",
         lambda: arrays(y=np.column_stack([np.r_[5.0, 2 * y[1:]], np.r_[-2.0, 3 - y[1:]]]),
                        family="binomial")),
        ("two-column response with the Poisson family",
         lambda: arrays(y=np.column_stack([y, 1 - y]), family="poisson")),
        ("string response `yn ~ ...` (levels no/yes)",
         lambda: formula(yes_no, f="yn ~ 0 + Cross")),
        ("non-numeric response (array)", lambda: arrays(y=np.array(["a"] * len(y)))),
        # covariates
        ("NaN in covariate, `missing=\"raise\"`",
         lambda: formula(changed(sal, "x", 5, np.nan), missing="raise")),
        ("NaN in covariate, `missing=\"drop\"`", lambda: formula(changed(sal, "x", 5, np.nan))),
        ("inf in covariate", lambda: formula(changed(sal, "x", 5, np.inf))),
        ("NaN in exog (array)", lambda: arrays(X=X_nan)),
        # weights and offset
        ("NaN in weights column, `missing=\"raise\"`",
         lambda: formula(w_nan, weights="w", missing="raise")),
        ("NaN in weights column, `missing=\"drop\"`", lambda: formula(w_nan, weights="w")),
        ("inf in weights column (also with `missing=\"drop\"`)",
         lambda: formula(w_inf, weights="w")),
        ("NaN in offset, `missing=\"drop\"`",
         lambda: formula(w_nan.rename(columns={"w": "o"}), offset="o")),
        ("inf in offset (array)", lambda: arrays(offset=off_inf)),
        ("negative weights", lambda: arrays(weights=w_neg)),
        ("weights of the wrong length", lambda: formula(weights=np.ones(359))),
        ("weights column not in data", lambda: formula(weights="nope")),
        ("non-numeric weights column", lambda: formula(one_level, weights="g")),
        ("unknown `missing` option", lambda: arrays(missing="skip")),
        # variance components
        ("variance-component formula with no columns (`\"0\"`)",
         lambda: formula(vc={"F": "0", "M": "0 + C(Male)"})),
        ("variance-component formula naming an unknown column",
         lambda: formula(vc={"F": "0 + C(Nope)"})),
        ("factor with a single level", lambda: formula(one_level, vc={"F": "0 + C(Female)",
                                                                      "G": "0 + C(g)"})),
        ("single random effect shared by every row (array)",
         lambda: arrays(Z=Z1, ident=np.r_[ident, 2], vcp_names=["F", "M", "G"])),
        ("two components with the same design (a factor nested with one sub-level)",
         lambda: formula(sal.assign(sub=sal["Female"].astype(str) + "/1"),
                         vc={"F": "0 + C(Female)", "S": "0 + C(sub)"})),
        ("duplicate component names",
         lambda: formula(vc=["0 + C(Female)", "0 + C(Male)"], varcomps_names=["F", "F"])),
        ("component named like a fixed effect",
         lambda: formula(vc={"x": "0 + C(Female)", "M": "0 + C(Male)"})),
        ("no variance components (`{}`)", lambda: formula(vc={})),
        # fixed-effects design
        ("rank-deficient exog (`x2 = 2 x`)", lambda: formula(aliased, f=FORMULA + " + x2")),
        ("rank-deficient exog (`x3 = x + 1`, with intercept)",
         lambda: formula(aliased, f="Mate ~ 1 + x + x3")),
        ("more fixed effects than observations", lambda: arrays(y=y[:4], X=X[:4], Z=Z[:4])),
        # family
        ("unknown family `\"gamma\"`", lambda: formula(family="gamma")),
        ("unsupported family `Gaussian()`", lambda: formula(family=sm.families.Gaussian())),
        ("unsupported link (binomial with the log link)",
         lambda: formula(family=sm.families.Binomial(link=sm.families.links.Log()))),
        # fit
        ("`fit(m=0)`", lambda: fit(m=0)),
        ("`fit(m=2.5)`", lambda: fit(m=2.5)),
        ("`fit(m=\"many\")`", lambda: fit(m="many")),
        ("`fit(m=None)`", lambda: fit(m=None)),
        ("`fit(max_m=0)`", lambda: fit(max_m=0)),
        ("`fit(max_m=2.5)`", lambda: fit(max_m=2.5)),
        ("`fit(target_ratio=0)`", lambda: fit(target_ratio=0)),
        ("`fit(target_ratio=10)`", lambda: fit(target_ratio=10)),
        ("`fit(target_ratio=nan)`", lambda: fit(target_ratio=float("nan"))),
        ("`fit(target_ratio=\"0.1\")`", lambda: fit(target_ratio="0.1")),
        ("`fit(sampler=\"metropolis\")`", lambda: fit(sampler="metropolis")),
        ("`fit(random_state=\"seed\")`", lambda: fit(random_state="seed")),
        ("`fit(random_state=1.5)`", lambda: fit(random_state=1.5)),
        ("`fit(random_state=-1)`", lambda: fit(random_state=-1)),
        ("`fit(nsim=10)` (unknown keyword)", lambda: fit(nsim=10)),
        # specifications that used to fit a different model silently (issue 9)
        ("misspelt keyword `from_formula(..., offest=...)`",
         lambda: formula(offest=np.zeros(len(sal)))),
        ("unknown keyword to the array constructor", lambda: arrays(offest=np.zeros(len(y)))),
        ("`exposure=` with a Bernoulli family", lambda: formula(exposure=np.ones(len(sal)))),
        ("`exposure=` with a zero (Poisson)",
         lambda: formula(changed(sal, "x", 0, 0.0), family="poisson", exposure="x")),
        ("nested correlated lme4 term `(1 + x | Female/Male)`",
         lambda: formula(f="Mate ~ 0 + Cross + (1 + x | Female/Male)", vc=None)),
        ("lme4 term naming a component also in vc_formulas",
         lambda: formula(f="Mate ~ 0 + Cross + (1|F)", vc={"F": "0 + C(Female)"})),
        ("vc formula with an intercept column (`\"C(Female)\"`)",
         lambda: formula(vc={"F": "C(Female)", "M": "0 + C(Male)"})),
        ("vc formula giving one numeric column (`\"0 + code\"` on integer codes)",
         lambda: formula(sal.assign(code=sal["Female"].cat.codes.astype(int)),
                         vc={"F": "0 + code", "M": "0 + C(Male)"})),
        ("vc formula in lme4 syntax (`\"1|Female\"`)",
         lambda: formula(vc={"F": "1|Female", "M": "0 + C(Male)"})),
        ("all-zero Bernoulli response (no finite MLE)",
         lambda: formula(sal.assign(Mate=0.0)).fit(random_state=1, disp=False)),
        ("perfectly separated covariate",
         lambda: formula(sal.assign(z=np.where(sal["Mate"] > 0, 1.0, -1.0)),
                         f="Mate ~ 0 + Cross + z").fit(random_state=1, disp=False)),
    ]


def outcome(thunk):
    """``(exception or warning class name, message)`` of one bad input."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            thunk()
        except Exception as exc:  # the point is to show whatever reaches the user
            return type(exc).__name__, str(exc)
    if caught:
        w = caught[0]
        return f"{w.category.__name__} (accepted)", str(w.message)
    return "(accepted, no message)", ""


def cell(text):
    return " ".join(str(text).split()).replace("|", "\\|")


def main():
    print(f"<!-- glmm_sm {glmm_sm.__version__} from {glmm_sm.__file__} -->")
    print("| bad input | exception | message |")
    print("|---|---|---|")
    for label, thunk in cases():
        kind, message = outcome(thunk)
        print(f"| {cell(label)} | {kind} | {cell(message)} |")


if __name__ == "__main__":
    main()
