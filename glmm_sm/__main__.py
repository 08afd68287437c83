"""``python -m glmm_sm``: the salamander analysis end to end.

Fits ``Mate ~ 0 + Cross`` with crossed Female and Male effects by Monte Carlo likelihood
approximation, prints the summary and the R/R - W/W contrast, and compares the fit with
statsmodels' variational ``BinomialBayesMixedGLM``.
"""

from __future__ import annotations

import argparse
import time
import warnings


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m glmm_sm", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=2024, help="random_state of the fit")
    parser.add_argument("--m", default="auto", help='draws per round, or "auto"')
    args = parser.parse_args(argv)

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
