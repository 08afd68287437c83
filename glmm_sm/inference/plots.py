"""Figures for a Monte Carlo GLMM fit: diagnostics, random effects, profiles, residuals.

matplotlib is an optional dependency (``pip install "glmm_sm[plots]"``); it is imported only
when a figure is drawn.  Every function returns a ``matplotlib.figure.Figure`` created with
``pyplot`` (so that notebooks and sphinx-gallery show it); close it with
``matplotlib.pyplot.close(fig)`` when drawing many.

The results methods ``plot_diagnostics``, ``plot_random_effects``, ``plot_profile`` and
``plot_residuals`` of :class:`~glmm_sm.MonteCarloGLMMResults` call these functions, and
:func:`glmm_sm.plot_compare` draws the table of :func:`glmm_sm.compare`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from glmm_sm.mcla.engine import weight_chunks

__all__ = [
    "plot_compare_table",
    "plot_diagnostics",
    "plot_profile",
    "plot_random_effects",
    "plot_residuals",
    "profile_ends",
    "weight_histogram",
]

_INSTALL = 'plots need matplotlib, an optional dependency: pip install "glmm_sm[plots]"'


def _pyplot():
    """``matplotlib.pyplot``, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(_INSTALL) from err
    return plt


def _inner(res):
    """The results object behind a statsmodels wrapper."""
    return getattr(res, "_results", res)


def _z(alpha):
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number in (0, 1); got {alpha!r}")
    return float(stats.norm.isf(alpha / 2))


# ----------------------------------------------------------------------- importance weights
def _engine_params(res):
    """``(engine, theta)``: the final engine and the estimate in its own parametrization
    (without the variance components estimated at 0, which the engine does not have)."""
    res = _inner(res)
    if getattr(res, "engine", None) is None:
        return None, None
    view = res._boundary_view()
    return view.engine, view.theta


def _log_normalizers(engine, theta):
    """Per block, ``log sum_k exp(b_k) - A_0`` with ``A_0`` the largest log weight of the
    first chunk (a second pass over the same chunks recovers ``b_k - A_0`` the same way)."""
    s0 = shift = None
    for v, sc in weight_chunks(engine, theta):
        if s0 is None:
            s0, shift = v.sum(axis=1), np.zeros(v.shape[0])
        else:
            with np.errstate(divide="ignore"):
                shift = shift - np.log(sc)
            s0 = s0 * sc + v.sum(axis=1)
    with np.errstate(divide="ignore"):
        return np.log(s0) + shift


def weight_histogram(res, edges=None):
    """Distribution of each block's normalized importance weights at the estimate.

    Two passes over the final round's draws (:func:`~glmm_sm.mcla.engine.weight_chunks`): the first
    finds each block's normalizing sum, the second bins ``log10(m w_k)``, where ``w_k`` is a
    draw's normalized weight (0 is the weight every draw would have if all were equal).
    Memory grows with the number of blocks and bins, never with ``m``.

    Parameters
    ----------
    res : MonteCarloGLMMResults
    edges : array_like, optional
        Increasing bin edges of ``log10(m w)``; values outside are counted in the first or
        last bin.  Default: bins of width 0.02 from -8 to ``log10(m)`` (the largest
        possible value).

    Returns
    -------
    dict or None
        ``edges``; ``counts`` (n_blocks, n_bins) draws per bin; ``mass`` (n_blocks, n_bins)
        share of the block's total weight per bin (rows sum to 1); ``max_weight`` and ``ess``
        (``1 / sum_k w_k^2``) per block.  None for a fit without random effects (exact GLM).
    """
    engine, theta = _engine_params(res)
    if engine is None:
        return None
    m = engine.m
    top = np.log10(m)
    edges = (np.linspace(-8.0, top, int(np.ceil((top + 8.0) / 0.02)) + 1) if edges is None
             else np.asarray(edges, dtype=float))
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("edges must be an increasing 1-d array of at least two bin edges")
    log_z = _log_normalizers(engine, theta)
    nb, nbins = log_z.size, edges.size - 1
    counts = np.zeros(nb * nbins)
    mass = np.zeros(nb * nbins)
    wmax, w2 = np.zeros(nb), np.zeros(nb)
    shift = np.zeros(nb)
    for j, (v, sc) in enumerate(weight_chunks(engine, theta)):
        with np.errstate(divide="ignore"):
            if j:
                shift = shift - np.log(sc)
            log_w = np.log(v) + (shift - log_z)[:, None]
        w = np.exp(log_w)
        x = np.log10(m) + log_w / np.log(10.0)
        k = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, nbins - 1)
        flat = (np.arange(nb)[:, None] * nbins + k).ravel()
        counts += np.bincount(flat, minlength=nb * nbins)
        mass += np.bincount(flat, weights=w.ravel(), minlength=nb * nbins)
        wmax = np.maximum(wmax, w.max(axis=1))
        w2 += (w * w).sum(axis=1)
    return {"edges": edges, "counts": counts.reshape(nb, nbins),
            "mass": mass.reshape(nb, nbins), "max_weight": wmax, "ess": 1.0 / w2}


# ----------------------------------------------------------------------- diagnostics
def plot_diagnostics(res, figsize=None):
    """Monte Carlo diagnostics of a fit in four panels.

    Effective sample size of each block at the estimate; the largest MCSE/SE ratio of each
    round against the target; ``m`` and the smallest block ESS of each round; and the
    distribution of the importance weights of the block with the smallest ESS (the share of
    draws and the share of total weight in bins of ``log10(m w)``: weight concentrated in a
    few draws far right of 0 means the MCSE rests on few effective draws).

    Parameters
    ----------
    res : MonteCarloGLMMResults
    figsize : tuple of float, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    res = _inner(res)
    if getattr(res, "method", None) == "laplace":
        raise ValueError("plot_diagnostics: a Laplace fit (method='laplace') has no Monte "
                         "Carlo draws to diagnose")
    fig, axes = plt.subplots(2, 2, figsize=figsize or (10, 7), layout="constrained")
    opts = getattr(res, "fit_options", None)
    _ess_panel(axes[0, 0], res, opts)
    rounds = pd.DataFrame(res.fit_log.rounds)
    _ratio_panel(axes[0, 1], rounds, opts)
    _rounds_panel(axes[1, 0], rounds, opts)
    _weights_panel(axes[1, 1], res)
    fig.suptitle("Monte Carlo diagnostics")
    return fig


def _no_data(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _ess_panel(ax, res, opts):
    ess = np.asarray(res.ess, dtype=float)
    if ess.size == 0:
        _no_data(ax, "no importance sampling\n(exact GLM fit)")
        ax.set_title("ESS per block")
        return
    ax.plot(np.arange(ess.size), ess, "o", ms=4, label="ESS")
    ax.axhline(res.m, color="0.4", ls="--", lw=1, label=f"m = {res.m}")
    if opts is not None:
        ax.axhline(opts.min_ess, color="C3", ls=":", lw=1, label=f"min_ess = {opts.min_ess:g}")
    ax.set_ylim(0, 1.08 * res.m)
    ax.set_xlim(-0.5, ess.size - 0.5)
    if ess.size <= 10:
        ax.set_xticks(np.arange(ess.size))
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("block")
    ax.set_ylabel("effective sample size")
    ax.set_title("ESS per block at the estimate")
    ax.legend(fontsize="small", loc="lower right")


def _ratio_panel(ax, rounds, opts):
    ax.set_title("largest MCSE/SE per round")
    if rounds.empty:
        _no_data(ax, "no Monte Carlo rounds")
        return
    ax.plot(np.arange(len(rounds)), rounds["max_ratio"], "o-", label="max MCSE/SE")
    if opts is not None:
        ax.axhline(opts.target_ratio, color="C3", ls=":", lw=1,
                   label=f"target_ratio = {opts.target_ratio:g}")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("round")
    ax.set_ylabel("MCSE / SE")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize="small")


def _rounds_panel(ax, rounds, opts):
    ax.set_title("draws and smallest ESS per round")
    if rounds.empty:
        _no_data(ax, "no Monte Carlo rounds")
        return
    x = np.arange(len(rounds))  # in fit order (a boundary refit's rounds come after)
    ax.plot(x, rounds["m"], "s-", label="m")
    ax.plot(x, rounds["min_ess"], "o-", label="smallest block ESS")
    if opts is not None:
        ax.axhline(opts.min_ess, color="C3", ls=":", lw=1, label=f"min_ess = {opts.min_ess:g}")
    lo, hi = np.nanmin(rounds["min_ess"]), np.nanmax(rounds["m"])
    if lo > 0 and hi / lo > 30:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.set_xlabel("round")
    ax.set_ylabel("draws")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize="small")


def _weights_panel(ax, res):
    hist = weight_histogram(res)
    if hist is None:
        _no_data(ax, "no importance weights\n(exact GLM fit)")
        ax.set_title("importance weights")
        return
    b = int(np.argmin(hist["ess"]))
    edges, share, mass, below = _display_bins(hist["edges"], hist["counts"][b],
                                              hist["mass"][b])
    ax.stairs(share, edges, fill=True, alpha=0.4, label="share of draws")
    ax.stairs(mass, edges, color="C3", lw=1.5, label="share of weight")
    ax.axvline(0.0, color="0.4", ls="--", lw=1)
    ax.set_xlabel("log10(m x normalized weight)   (0: equal weights)")
    ax.set_ylabel("share per bin")
    ax.set_ylim(0, 1.3 * max(share.max(), mass.max()))
    ax.set_title(f"importance weights, block {b} (smallest ESS)")
    note = f"ESS/m = {hist['ess'][b] / res.m:.2f}\nlargest weight = {hist['max_weight'][b]:.2g}"
    if below > 0:
        note += f"\n{100 * below:.2g}% of draws left of the axis"
    elif hist["counts"][b][0] > 0:
        note += f"\nleftmost bin: every draw below {edges[1]:.3g}"
    ax.text(0.02, 0.97, note, transform=ax.transAxes, va="top", fontsize="small")
    ax.legend(fontsize="small", loc="upper right")


def _display_bins(edges, counts, mass, n_bins=40):
    """Merge fine bins into about ``n_bins`` over the occupied range (from the bin where
    0.1% of the draws lie to its left, to the last occupied one); also the share of draws
    left of that range (weights too small to matter)."""
    share = counts / counts.sum()
    cum = np.cumsum(share)
    lo = int(np.searchsorted(cum, 1e-3))
    hi = int(np.flatnonzero(counts)[-1]) + 1
    step = max(1, int(np.ceil((hi - lo) / n_bins)))
    starts = np.arange(lo, hi, step)
    new_edges = np.append(edges[starts], edges[hi])
    below = float(cum[lo - 1]) if lo > 0 else 0.0
    return (new_edges, np.add.reduceat(share[:hi], starts), np.add.reduceat(mass[:hi], starts),
            below)


# ----------------------------------------------------------------------- random effects
def plot_random_effects(res, term=None, alpha=0.05, sort=True, figsize=None):
    """Caterpillar plot: conditional means of the random effects with intervals.

    Parameters
    ----------
    res : MonteCarloGLMMResults
    term : str, optional
        A variance-component name; by default one panel per component.
    alpha : float
        The intervals are ``Mean -+ z_{1-alpha/2} SD`` from ``res.random_effects(term)``
        (normal approximation to the conditional distribution given the data).
    sort : bool
        Order the effects by their conditional mean.
    figsize : tuple of float, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    res = _inner(res)
    z = _z(alpha)
    names = res._effect_terms()  # scalar components and correlated terms
    if term is not None and term not in names:
        raise ValueError(f"term: unknown variance component {term!r}; use one of {names}")
    panels = []  # a correlated term gets a panel per column
    for t in (list(names) if term is None else [term]):
        frame = res.random_effects(t)
        if isinstance(frame.columns, pd.MultiIndex):
            panels += [(f"{t} {lab}", frame.xs(lab, axis=1, level=1))
                       for lab in frame["Mean"].columns]
        else:
            panels.append((t, frame))
    terms = [t for t, _ in panels]
    frames = [f for _, f in panels]
    rows = max(len(f) for f in frames)
    size = figsize or (4.5 * len(terms) + 0.5, min(max(3.0, 0.14 * rows + 1.2), 14.0))
    fig, axes = plt.subplots(1, len(terms), figsize=size, layout="constrained", squeeze=False)
    for ax, t, frame in zip(axes[0], terms, frames, strict=True):
        _caterpillar(ax, frame.sort_values("Mean") if sort else frame, z)
        ax.set_title(f"{t}: conditional means, {100 * (1 - alpha):g}% intervals",
                     fontsize="medium")
    return fig


def _caterpillar(ax, frame, z):
    y = np.arange(len(frame))
    mean, sd = frame["Mean"].to_numpy(), frame["SD"].to_numpy()
    ax.errorbar(mean, y, xerr=z * sd, fmt="o", ms=3, lw=1, capsize=0)
    ax.axvline(0.0, color="0.4", ls="--", lw=1)
    if len(frame) <= 80:
        ax.set_yticks(y, [str(i) for i in frame.index], fontsize=6 if len(frame) > 30 else 8)
    else:
        ax.set_yticks([])
    ax.set_ylim(-1, len(frame))
    ax.set_xlabel("random effect (linear-predictor scale)")


# ----------------------------------------------------------------------- profile
def plot_profile(res, name, alpha=0.05, profile=None, ax=None, **kwargs):
    """Profile zeta plot (lme4's): signed root deviance against the parameter value.

    ``zeta(psi) = sign(psi - psi_hat) sqrt(2 (l_m(hat) - l_p(psi)))`` is a straight line
    through the MLE with slope ``1/SE`` when the log-likelihood is quadratic (dotted: the
    Wald line); the profile interval is where zeta crosses ``-+ z_{1-alpha/2}``.

    Parameters
    ----------
    res : MonteCarloGLMMResults
    name : str
        A parameter name (``res.model.data.param_names``), or a correlated term's
        correlation (``g Corr(x, Intercept)``).
    alpha : float
        Level of the interval marked (``1 - alpha``).
    profile : DataFrame, optional
        ``res.profile(name, **kwargs)`` computed earlier (columns ``value`` and ``zeta``);
        computed here when not given.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes; default: a new figure.
    **kwargs
        Passed to ``res.profile``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    inner = _inner(res)
    z = _z(alpha)
    names = list(inner.model.data.param_names)
    corrs = []
    if inner.model.design.cov.has_vector:  # a correlated term's correlations too
        from glmm_sm.inference.profile_cov import profile_targets

        corrs = [t.name for t in profile_targets(inner.model) if t.kind == "corr"]
    if name not in names + corrs:
        raise ValueError(f"name: unknown parameter {name!r}; use one of {names + corrs}")
    frame = res.profile(name, **kwargs) if profile is None else profile
    missing = {"value", "zeta"} - set(getattr(frame, "columns", ()))
    if missing:
        raise ValueError(f"profile must be a DataFrame with columns 'value' and 'zeta'; "
                         f"missing {sorted(missing)}")
    frame = frame.sort_values("value")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4), layout="constrained")
    if name in names:
        k = names.index(name)
        est, se = float(np.asarray(inner.params)[k]), float(np.asarray(inner.bse)[k])
    else:  # a correlation: its estimate from the profile, no Wald line
        est, se = float(frame.attrs.get("estimate", np.nan)), np.nan
    ax.plot(frame["value"], frame["zeta"], "-", color="C0", label="profile")
    if np.isfinite(se) and se > 0:
        ax.plot(frame["value"], (frame["value"] - est) / se, ":", color="0.4", label="Wald")
    for level in (-z, z):
        ax.axhline(level, color="C3", ls="--", lw=1)
    for end in profile_ends(frame, z):
        ax.axvline(end, color="C3", lw=0.8, alpha=0.6)
    ax.plot([est], [0.0], "o", color="k", label="MLE")
    ax.set_xlabel(name)
    ax.set_ylabel("zeta")
    ax.set_title(f"profile of {name}; {100 * (1 - alpha):g}% interval")
    ax.legend(fontsize="small")
    return ax.figure


def profile_ends(frame, z):
    """Where a profile's zeta crosses ``-z`` and ``+z`` (linear interpolation).

    Parameters
    ----------
    frame : DataFrame
        Columns ``value`` and ``zeta``, ``zeta`` increasing in ``value``.
    z : float

    Returns
    -------
    list of float
        The crossings inside the profiled range (none for a side the profile does not reach,
        e.g. the lower side of a variance whose zeta at 0 is above ``-z``).
    """
    frame = frame.sort_values("value")
    x, y = frame["value"].to_numpy(float), frame["zeta"].to_numpy(float)
    ends = []
    for level in (-z, z):
        d = y - level
        hit = np.flatnonzero((d[:-1] <= 0) & (d[1:] > 0) | (d[:-1] < 0) & (d[1:] >= 0))
        if hit.size:
            i = hit[0] if level > 0 else hit[-1]
            ends.append(float(x[i] + (x[i + 1] - x[i]) * (-d[i]) / (d[i + 1] - d[i])))
    return ends


# ----------------------------------------------------------------------- residuals
def plot_residuals(res, nsim=250, random_state=None, resid=None, figsize=None):
    """Randomized quantile residuals: a uniform QQ plot and residuals against fitted values.

    Under the model the residuals are independent Uniform(0, 1) (Dunn and Smyth 1996): the
    QQ plot should follow the diagonal (grey: pointwise 95% band of uniform order
    statistics; title: Kolmogorov-Smirnov p-value), and the residuals should spread evenly
    over (0, 1) at every fitted value, with no trend in their quartiles.

    Parameters
    ----------
    res : MonteCarloGLMMResults
    nsim : int
        Simulations per observation, passed to ``res.resid_quantile``.
    random_state : None, int, SeedSequence or Generator
        Passed to ``res.resid_quantile``.
    resid : array_like, optional
        Residuals computed earlier (then ``nsim`` and ``random_state`` are not used).
    figsize : tuple of float, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    if resid is None:
        resid = res.resid_quantile(nsim=nsim, random_state=random_state)
    r = np.asarray(resid, dtype=float).ravel()
    fitted = getattr(_inner(res), "fittedvalues", None)
    fitted = np.asarray(res.predict() if fitted is None else fitted, dtype=float).ravel()
    if r.size != fitted.size:
        raise ValueError(f"resid has {r.size} values; the model has {fitted.size} observations")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=figsize or (10, 4.2), layout="constrained")
    _qq_uniform(ax1, r)
    ax2.plot(fitted, r, "o", ms=3, alpha=0.5)
    for q in (0.25, 0.5, 0.75):
        ax2.axhline(q, color="C3", ls="--", lw=1)
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("fitted value")
    ax2.set_ylabel("quantile residual")
    ax2.set_title("residuals against fitted values")
    return fig


def _qq_uniform(ax, r):
    n = r.size
    i = np.arange(1, n + 1)
    expected = (i - 0.5) / n
    lo, hi = stats.beta.ppf([[0.025], [0.975]], i, n - i + 1)
    ax.fill_between(expected, lo, hi, color="0.85", label="95% band")
    ax.plot(expected, np.sort(r), "o", ms=2.5)
    ax.plot([0, 1], [0, 1], color="C3", lw=1)
    ks = stats.kstest(r, "uniform")
    ax.set_xlabel("expected (uniform)")
    ax.set_ylabel("observed quantile residual")
    ax.set_title(f"uniform QQ plot (KS p = {ks.pvalue:.3g})")
    ax.set_aspect("equal")


# ----------------------------------------------------------------------- comparison
def plot_compare_table(table, vc_names, alpha=0.05, figsize=None):
    """Estimates with ``± z_{1-alpha/2}`` SE intervals, fit beside fit.

    Parameters
    ----------
    table : DataFrame
        :func:`glmm_sm.compare`'s table: a two-level column index (fit, quantity) with
        ``estimate`` and ``se`` for each fit.
    vc_names : list of str
        The rows that are variance components (drawn in their own panel).
    alpha : float
    figsize : tuple of float, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    z = _z(alpha)
    fits = [f for f in table.columns.get_level_values(0).unique()
            if (f, "estimate") in table.columns and (f, "se") in table.columns]
    vc = [n for n in table.index if n in set(vc_names)]
    fe = [n for n in table.index if n not in set(vc_names)]
    panels = [(rows, title) for rows, title in ((fe, "fixed effects"),
              (vc, "variance components")) if rows]
    heights = [max(len(rows), 1) + 1 for rows, _ in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=figsize or (6, 1.2 + 0.45 * sum(heights)),
                             layout="constrained", squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (rows, title) in zip(axes[:, 0], panels, strict=True):
        _interval_rows(ax, table.loc[rows], fits, z)
        ax.set_title(f"{title}: estimate ± {z:.2f} SE")
    axes[0, 0].legend(fontsize="small", loc="best")
    return fig


def _interval_rows(ax, table, fits, z):
    y = np.arange(len(table))[::-1].astype(float)
    width = 0.5 / max(len(fits), 1)
    for i, fit in enumerate(fits):
        est = table[(fit, "estimate")].to_numpy(float)
        se = table[(fit, "se")].to_numpy(float)
        off = (i - (len(fits) - 1) / 2) * width
        ax.errorbar(est, y - off, xerr=z * se, fmt="o", ms=4, capsize=2, label=fit,
                    color=f"C{i}")
    ax.axvline(0.0, color="0.4", ls="--", lw=1)
    ax.set_yticks(y, list(table.index))
    ax.set_ylim(-0.7, len(table) - 0.3)
