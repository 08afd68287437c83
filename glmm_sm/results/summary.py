"""The summary table of a Monte Carlo GLMM fit."""

from __future__ import annotations

import numpy as np
from scipy import stats
from statsmodels.iolib.summary import Summary
from statsmodels.iolib.table import SimpleTable

__all__ = ["build_summary"]


def _fmt(x, digits=4):
    if not np.isfinite(x):
        return "nan" if np.isnan(x) else ("inf" if x > 0 else "-inf")
    if x != 0 and abs(x) < 10 ** (-digits):
        return f"{x:.2e}"
    return f"{x:.{digits}f}"


def _pfmt(p):
    return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


def _max_ratio(mcse, bse):
    ok = np.isfinite(bse) & (bse > 0)
    return float(np.max(mcse[ok] / bse[ok])) if ok.any() else np.nan


def build_summary(res, alpha=0.05, title=None, yname=None, xname=None):
    """A statsmodels ``Summary`` of a MCLA or a Laplace fit (``res.method``).

    One layout for both: the header, the fixed effects (two-sided p-values), the
    covariance parameters (one-sided p-values for variances, H1: variance > 0; two-sided
    for covariances), lme4's VarCorr table for correlated terms, and the notes.  A MCLA fit
    adds its Monte Carlo columns (MCSE, ESS, Pareto k); a Laplace fit has none.  ``yname``
    and ``xname`` replace the response's and the parameters' names (statsmodels' meaning).
    """
    k = res.model.k_fe
    names = res.param_names
    labels = names
    if xname is not None:
        labels = [str(x) for x in xname]
        if len(labels) != len(names):
            raise ValueError(f"xname must name all {len(names)} parameters (fixed effects, "
                             f"then {names[k:]}); got {len(labels)} names")
    params = np.asarray(res.params)
    bse = np.asarray(res.bse)
    laplace = getattr(res, "method", "mcla") == "laplace"
    mcse = None if laplace else np.asarray(res.mcse())
    smry = Summary()
    gleft, gright = _header(res, mcse, bse, yname)
    default = ("Generalized Linear Mixed Model Results (Laplace)" if laplace
               else "Generalized Linear Mixed Model Results (MCLA)")
    smry.add_table_2cols(res, gleft=gleft, gright=gright, title=title or default)
    est = (params, bse, mcse)
    smry.tables.append(_param_table(est, slice(0, k), names, alpha, "coef", "P>|z|",
                                    "Fixed effects", labels))
    kc = k + res.model.k_vcp
    smry.tables.append(_param_table(est, slice(k, kc), names, alpha, "variance",
                                    "P>z (1-sided)", "Variance components", labels))
    if kc < len(params):  # the negative binomial's alpha, and theta = 1/alpha
        smry.tables.append(_param_table(est, slice(kc, len(params)), names, alpha, "estimate",
                                        "P>z (1-sided)", "Dispersion (NB2: var = mu + "
                                        "alpha mu^2)", labels))
        smry.tables.append(_theta_table(params[kc], bse[kc],
                                        None if mcse is None else mcse[kc]))
    if res.model.design.cov.has_vector:
        smry.tables.append(_varcorr_table(res, monte_carlo=not laplace))
    smry.add_extra_txt(_notes(res, bse, names, k))
    return smry


def _theta_table(a, se, mc):
    """``theta = 1/alpha`` (lme4's and glmmTMB's negative binomial parameter) with its
    delta-method SE (and MCSE): ``se(theta) = se(alpha) / alpha^2``."""
    row = [_fmt(1.0 / a), _fmt(se / a**2)] + ([] if mc is None else [_fmt(mc / a**2)])
    head = ["estimate", "std err"] + ([] if mc is None else ["MCSE"])
    return SimpleTable([row], head, ["theta = 1/alpha"],
                       title="NB2 size parameter (lme4, glmmTMB)", txt_fmt=_txt_fmt())


def _varcorr_table(res, monte_carlo=True):
    """lme4's VarCorr: SDs and correlations with delta-method SEs (and MCSEs)."""
    from glmm_sm.results.varcorr import varcorr_frame

    vc = varcorr_frame(res)
    rows, stubs = [], []
    for r in vc.itertuples():
        stubs.append(f"{r.group} {'SD(' + r.name + ')' if not r.name2 else 'Corr('}"
                     + (f"{r.name}, {r.name2})" if r.name2 else ""))
        rows.append([_fmt(r.estimate), _fmt(r.se)] + ([_fmt(r.mcse)] if monte_carlo else []))
    head = ["estimate", "std err"] + (["MCSE"] if monte_carlo else [])
    return SimpleTable(rows, head, stubs,
                       title="Random effects: SDs and correlations (VarCorr)",
                       txt_fmt=_txt_fmt())


def _header(res, mcse, bse, yname=None):
    """The two columns of the header table: the model (left) and the fit (right)."""
    mod = res.model
    # The levels that occur (a Categorical's unused categories are not groups).
    levels = getattr(mod.design, "levels_occurring", None)
    if levels is None:  # a design pickled before it was recorded
        levels = np.bincount(mod.ident, minlength=mod.design.k_vc)
    cov = mod.design.cov
    unit_names = [mod.vcp_names[cov.unit_params(ui).start].split(" Var(")[0]
                  for ui in range(len(cov.units))]
    laplace = mcse is None
    gleft = [
        ("Dep. Variable:", [res.response_label if yname is None else yname]),
        ("Family:", [mod.family_kind.name.capitalize() + (
            "" if mod.family_kind.canonical else f" ({mod.family_kind.link_name})")]),
        ("Method:", [_method_label(res, laplace)]),
        ("No. Observations:", [f"{int(res.nobs)}"]),
        ("Levels per component:",
         [", ".join(f"{n} {levels[u[0]]}" for n, u in zip(unit_names, cov.units,
                                                           strict=True))]),
        ("Independent blocks:", [f"{res.n_blocks}"]),
    ]
    if laplace:
        return gleft, [("Log-Likelihood:", [f"{res.llf:.4f}"]),
                       ("AIC:", [f"{res.aic:.4f}"]),
                       ("Converged:", [str(bool(res.converged))])]
    if getattr(res, "deterministic", False):
        q = getattr(getattr(res, "fit_log", None), "quadrature", None) or {}
        nodes = " x ".join(str(n) for n in q["nodes"]) if q.get("nodes") else "n/a"
        err = f"{q['llf_change']:.1g}" if "llf_change" in q else "not measured"
        return gleft, [("Quadrature nodes:", [nodes]),
                       ("Log-Likelihood:", [f"{res.llf:.4f}"]),
                       ("  its quadrature error:", [err]),
                       ("Monte Carlo error:", ["none (MCSE 0)"]),
                       ("Converged:", [str(bool(res.converged))])]
    gright = [
        ("Monte Carlo draws m:", [_draws(res)]),
        ("Smallest block ESS:", [f"{np.min(res.ess):.0f}" if len(res.ess) else "n/a"]),
        ("Log-Likelihood:", [f"{res.llf:.4f}"]),
        ("  its MCSE:", [f"{res.llf_mcse:.4f}"]),
        ("Max MCSE/SE:", [_fmt(_max_ratio(mcse, bse), 3)]),
        ("Max Pareto k:", [_pareto(res)]),
        ("Converged:", [str(bool(res.converged))]),
    ]
    return gleft, gright


def _draws(res):
    """m, or with per-block draw counts their range and median (``res.block_m``)."""
    if not res.m:
        return "none (exact GLM)"
    bm = getattr(res, "block_m", None)
    if bm is None or len(bm) == 0 or bm.min() == bm.max():
        return f"{res.m}"
    return f"{int(bm.min())}-{int(bm.max())} per block (median {np.median(bm):.0f})"


def _pareto(res):
    """The largest per-block Pareto k of the weights (PSIS: < 0.5 good, > 0.7 unreliable)."""
    k = np.asarray(getattr(res, "pareto_k", []), dtype=float)
    k = k[np.isfinite(k)]
    return f"{k.max():.2f}" if k.size else "n/a"


def two_sided(name, fixed):
    """Whether a parameter's Wald p-value is two-sided: fixed effects and covariances
    (either sign is possible); variances get one-sided ones (H1: variance > 0)."""
    return fixed or " Cov(" in str(name)


def _param_table(est, rows_of, names, alpha, what, p_head, title, labels=None):
    """Estimates, Wald z and p-values, intervals (and MCSEs, unless ``est[2]`` is None) of
    the parameters ``rows_of``: p-values as :func:`two_sided` says; rows named by
    ``labels`` (default ``names``)."""
    params, bse, mcse = est
    with np.errstate(divide="ignore", invalid="ignore"):
        z = params / bse
    q = stats.norm.ppf(1 - alpha / 2)
    head = [what, "std err", "z", p_head, f"[{alpha / 2:g}", f"{1 - alpha / 2:g}]"]
    head += ["MCSE"] if mcse is not None else []
    rows = []
    for j in range(rows_of.start, rows_of.stop):
        two = two_sided(names[j], what == "coef")
        p = 2 * stats.norm.sf(abs(z[j])) if two else stats.norm.sf(z[j])
        rows.append([_fmt(params[j]), _fmt(bse[j]), f"{z[j]:.3f}", _pfmt(p),
                     _fmt(params[j] - q * bse[j]), _fmt(params[j] + q * bse[j])]
                    + ([_fmt(mcse[j])] if mcse is not None else []))
    stubs = (names if labels is None else labels)[rows_of]
    return SimpleTable(rows, head, stubs, title=title, txt_fmt=_txt_fmt())


def _quadrature_note(log):
    """The measured quadrature error of a deterministic fit (fit log's ``quadrature``)."""
    q = getattr(log, "quadrature", None) or {}
    if not q:
        return ("the quadrature error is not measured here (more nodes: "
                "sampler_options={'n_nodes': ..., 'outer_nodes': ...}).")
    (ni, no), (fi, fo) = q["nodes"], q["finer_nodes"]
    n_ref = len(q.get("refinements", []))
    refit = (f" (refit {n_ref} time(s) with finer rules, the error being larger)"
             if n_ref else "")
    return (f"quadrature error, measured against a finer rule ({fi} x {fo} nodes against "
            f"{ni} x {no}){refit}: the estimate moves by at most {q['max_step_in_se']:.1g} "
            f"standard errors, the log-likelihood by {q['llf_change']:.1g}.")


def _method_label(res, laplace):
    """The header's method: what approximates the likelihood of this fit."""
    if laplace:
        return "Laplace approximation"
    if getattr(res, "deterministic", False):
        return "Adaptive Gauss-Hermite quadrature"
    if not res.m:
        return "Exact GLM (every variance 0)"
    return "Monte Carlo likelihood approx."


def _notes(res, bse, names, k):
    """The notes under the tables: what the errors mean, and any problem with the fit."""
    from glmm_sm.fit.boundary import BOUNDARY_NU

    laplace = getattr(res, "method", "mcla") == "laplace"
    boundary = list(getattr(res, "boundary", []))
    if laplace:
        first = ("Laplace approximation of the likelihood (as lme4's glmer with nAGQ = 1). "
                 "Standard errors: inverse of minus the Hessian of the Laplace "
                 "log-likelihood (central differences of its analytic gradient). There is no "
                 "Monte Carlo error (no MCSE column); the approximation's bias is not "
                 "measured: compare with the MCLA fit (glmm_sm.compare).")
    elif getattr(res, "deterministic", False):
        log = getattr(res, "fit_log", None)
        how = ("sampler='quadrature', chosen by sampler='auto' from the design's structure"
               if getattr(log, "sampler", {}).get("reason", "").startswith("sampler='auto'")
               else "sampler='quadrature'")
        first = (f"Deterministic fit ({how}): every random effect integrated "
                 "by adaptive Gauss-Hermite quadrature, nested within each block, so there is "
                 "no Monte Carlo error (MCSE 0) and no ESS; " + _quadrature_note(log)
                 + " Standard errors: inverse observed information.")
    else:
        first = ("Standard errors: inverse Monte Carlo observed information. MCSE: Monte "
                 "Carlo standard error of each estimate (Sung and Geyer 2007); it shrinks as "
                 "m grows. It holds while the Pareto k of the importance weights is below "
                 "0.5 (and is optimistic up to 0.7; PSIS, Vehtari et al. 2024).")
    notes = [
        first,
        "Variance components: one-sided Wald p-values for H1: variance > 0 (two-sided for "
        "covariances). At the zero boundary Wald inference is conservative and intervals "
        "may cross zero.",
    ]
    singular = list(getattr(res, "singular", []))
    if singular:
        notes.append(f"BOUNDARY (singular fit): the covariance of {singular} is singular at "
                     "the estimate (a variance at 0 or a correlation at +-1); Wald standard "
                     "errors and the VarCorr table's delta-method errors are not reliable "
                     "there.")
        if res.model.design.cov.has_vector:
            from glmm_sm.inference.singular import degenerate_directions

            for d in degenerate_directions(res):
                notes.append(f"SINGULAR TERM {d.describe()}. res.reduced_fits("
                             f"{d.term!r}) refits the reduced models (not done "
                             "automatically) with likelihood-ratio tests.")
    if not res.converged:
        notes.append("WARNING: " + res.fit_log.message if laplace else
                     "WARNING: the Monte Carlo MLE did not converge: " + res.fit_log.message)
    if res.llf > 0:
        notes.append(f"The log-likelihood estimate {res.llf:.4g} is above 0, which a "
                     "log-probability cannot be"
                     + ("" if laplace else f" ({res.llf / res.llf_mcse:.2g} MCSE above 0)"
                        if res.llf_mcse > 0 else "")
                     + ": the data are fitted almost perfectly (separation?); it is "
                     "reported as estimated, and AIC/BIC from it.")
    if np.any(np.isnan(bse[k:][~np.isin(names[k:], boundary)])) or np.any(np.isnan(bse[:k])):
        notes.append("nan standard errors: the Hessian is not negative definite in the "
                     "directions of those parameters (see the fit's ConvergenceWarning).")
    if boundary and laplace:
        notes.append(f"BOUNDARY: variance component(s) {boundary} are at the lower bound "
                     f"of the optimizer (below {BOUNDARY_NU:g}); their standard errors are "
                     "undefined (nan).")
    elif boundary:
        scores = ", ".join(f"{n}: {res.fit_log.boundary.get(n, np.nan):.4g}" for n in boundary)
        notes.append(
            f"BOUNDARY: variance component(s) {boundary} are estimated at 0, the edge of the "
            "parameter space; their effects are dropped and the estimates above are those of "
            "the model without them. A standard error is undefined there (nan). One-sided "
            f"derivative of the log-likelihood at 0 ({scores}): negative means 0 is a "
            "maximum. Test variance = 0 by a likelihood-ratio test against the 50:50 "
            "mixture of chi2(0) and chi2(1).")
    events = [w for w in getattr(res.fit_log, "warnings", [])
              if not w.startswith("boundary (singular) fit") and w not in res.fit_log.message]
    if events:
        notes.append("Recorded during the fit (fit_log.warnings): " + " | ".join(events))
    return notes


def _txt_fmt():
    from statsmodels.iolib.tableformatting import fmt_params

    return dict(fmt_params)
