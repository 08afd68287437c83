"""``python -m glmm_sm``: the salamander analysis end to end; ``python -m glmm_sm warmup``:
compile the numba kernels into numba's cache.

Without a command: fits ``Mate ~ 0 + Cross`` with crossed Female and Male effects by Monte
Carlo likelihood approximation, prints the summary and the R/R - W/W contrast, and compares
the fit with statsmodels' variational ``BinomialBayesMixedGLM``.

``warmup``: numba compiles a kernel the first time a process calls it and keeps the machine
code in its on-disk cache (next to the package when that directory is writable, else in the
user's cache directory, or in ``NUMBA_CACHE_DIR`` when set), so only the first fit in a new
environment pays for compiling (tens of seconds of CPU).  ``warmup`` pays it once, up front
(after ``pip install``, in a CI image or a container build), by fitting small simulated
models that call every kernel (:func:`warmup`).  numba keys the cache by the kernels' source
(a hash of each file's contents and its directory) and by the CPU: a new version of glmm_sm,
another install location or another processor compiles again (see ``docs/performance.rst``,
"Cold start").
"""

from __future__ import annotations

import argparse
import time
import warnings

#: The models :func:`warmup` fits: (label, formula, family, groups of ``g`` used, fit
#: options).  Between them they call every numba kernel with the argument types a fit
#: passes: the plain kernel with draws that move with the fixed effects
#: (``plain.chunk_sums``, ``plain.block_xhx``, ``shift.add_offset``, ``shift.csr_times``),
#: its negative binomial records, the Rao-Blackwellized kernel (``rb.rb_chunk_sums``), the
#: deterministic quadrature of a single grouping factor (``rb.rb_chunk_sums``) and the
#: correlated Rao-Blackwellized kernel (``rb_vector.rbv_chunk_sums``).  The family is a
#: run-time argument of every kernel, so one family per record type suffices.
WARMUP_MODELS = (
    ("plain", "y ~ x + (1 | g) + (1 | h)", "bernoulli", 40,
     {"rao_blackwell": False, "sampler": "laplace"}),
    ("negative binomial", "c ~ x + (1 | g)", "negbin", 40, {"sampler": "laplace"}),
    ("Rao-Blackwellized", "y ~ x + (1 | g) + (1 | h)", "bernoulli", 40,
     {"rao_blackwell": True}),
    ("quadrature", "y ~ x + (1 | g)", "bernoulli", 40, {"sampler": "quadrature"}),
    ("correlated, Rao-Blackwellized", "y ~ x + (1 + x | g) + (1 | h)", "bernoulli", 10,
     {"rao_blackwell": True}),
)


def _warmup_data():
    """A small crossed data set (``Generator(0)``): 40 groups ``g`` x 6 levels ``h``, two
    observations per cell, a Bernoulli ``y`` and a count ``c``."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(40), 12)
    h = np.tile(np.repeat(np.arange(6), 2), 40)
    x = rng.standard_normal(g.size)
    eta = -0.3 + 0.8 * x + rng.normal(0, 1, 40)[g] + rng.normal(0, 0.5, 6)[h]
    y = (rng.random(g.size) < 1 / (1 + np.exp(-eta))).astype(float)
    c = rng.poisson(np.exp(0.5 + 0.3 * x + rng.normal(0, 0.5, 40)[g])).astype(float)
    return pd.DataFrame({"y": y, "c": c, "x": x, "g": g.astype(str), "h": h.astype(str)})


def warmup(quiet=False):
    """Compile every numba kernel into numba's on-disk cache (``python -m glmm_sm warmup``).

    Fits each of :data:`WARMUP_MODELS` for one short round (``m=200``, one thread); the
    estimates are discarded.  With a warm cache this takes a few seconds; with an empty one
    it is the compile time the first fits would otherwise pay.

    Parameters
    ----------
    quiet : bool
        Print nothing (else one line per model: its CPU seconds).

    Returns
    -------
    dict
        Per model label, the process CPU seconds its fit took.
    """
    import statsmodels.api as sm

    from glmm_sm import MonteCarloGLMM

    data = _warmup_data()
    families = {"bernoulli": "bernoulli", "negbin": sm.families.NegativeBinomial(alpha=1.0)}
    seconds = {}
    for label, formula, family, groups, options in WARMUP_MODELS:
        t0 = time.process_time()
        model = MonteCarloGLMM.from_formula(formula, data=data[data["g"].astype(int) < groups],
                                            family=families[family])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(m=200, max_rounds=1, random_state=0, disp=False, n_jobs=1, **options)
        seconds[label] = time.process_time() - t0
        if not quiet:
            print(f"{label} ({formula}): {seconds[label]:.1f} s CPU", flush=True)
    return seconds


def _parser():
    parser = argparse.ArgumentParser(prog="python -m glmm_sm", description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="?", choices=("salamander", "warmup"),
                        default="salamander",
                        help="salamander (default): the analysis; warmup: compile the kernels "
                             "into numba's cache")
    parser.add_argument("--seed", type=int, default=2024, help="random_state of the fit")
    parser.add_argument("--m", default="auto", help='draws per round, or "auto"')
    parser.add_argument("--quiet", action="store_true", help="warmup: print nothing")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.command == "warmup":
        return warmup(args.quiet)

    import pandas as pd
    import statsmodels.api as sm

    import glmm_sm
    from glmm_sm import MonteCarloGLMM

    pd.set_option("display.width", 120)
    df = glmm_sm.datasets.load("salamander")
    vc = {"F": "0 + C(Female)", "M": "0 + C(Male)"}
    model = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross", vc, df,
                                        family=sm.families.Binomial())
    m = args.m if args.m == "auto" else int(args.m)
    t0 = time.perf_counter()
    res = model.fit(m=m, random_state=args.seed)
    seconds = time.perf_counter() - t0
    print(res.summary())
    print(f"\nFit time: {seconds:.1f} s (Laplace start, {len(res.fit_log.rounds)} Monte Carlo "
          f"rounds, final m = {res.m})\n")
    print("Contrast R/R - W/W (female and male both Rough Butt vs both White Side):")
    print(res.t_test("Cross[R/R] - Cross[W/W] = 0"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vb = sm.BinomialBayesMixedGLM.from_formula("Mate ~ 0 + Cross", vc, df).fit_vb()
    print("\nComparison with statsmodels' BinomialBayesMixedGLM.fit_vb() "
          "(variances on the variance scale):")
    print(glmm_sm.compare(res, vb).round(4).to_string())
    return res


if __name__ == "__main__":
    main()
