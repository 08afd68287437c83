"""Long-run reference answer for the salamander model (no exact MLE exists for it).

The salamander model (``Mate ~ 0 + Cross``, crossed random effects ``~0 + Female`` and
``~0 + Male``, Bernoulli) has a 120-dimensional random-effect integral that does not factor
into one-dimensional ones, so quadrature cannot give its MLE (MCLA_SPEC section 8.2).  The
reference below is a single large Monte Carlo MLE: ``m = 200000`` draws per round (fixed m,
50 times the default starting m), far more than the default fit uses, so that its own Monte
Carlo error (``MCSE`` below, 0.0014-0.0048) is about a tenth of a default fit's.  Tests
combine both errors: ``|default - reference| <= 3 sqrt(mcse_default^2 + mcse_reference^2)``.

Provenance
----------
* command (from the repository root)::

      python tests/results/salamander_reference.py

  which runs :func:`compute` below, i.e.
  ``MonteCarloGLMM.from_formula("Mate ~ 0 + Cross", {"F": "0 + C(Female)",
  "M": "0 + C(Male)"}, salamander, family=sm.families.Binomial()).fit(m=200000,
  random_state=12345, disp=False)``
* glmm_sm 0.1.0 (git commit 92f5006 plus uncommitted work in progress), statsmodels 0.15.0,
  numpy 2.4.6, scipy 1.17.1, numba 0.68.1, Python 3.11.7, patsy formula engine
* date: 2026-11-21; fit time 10.7 s on a 2-core machine; converged after 2 rounds, smallest
  block ESS 125113 (of 200000), largest MCSE/SE 0.0077
* output (printed by the command, copied verbatim into the constants below)::

      params [1.0184023712494248, 0.3230243123930257, -1.9416932185309272,
              0.9970126499452201, 1.3830515770532137, 1.23721186699395]
      bse    [0.4127817243134636, 0.39328282678392645, 0.47229538591400233,
              0.41047630980624233, 0.6244549447168696, 0.5779016845995557]
      mcse   [0.0015447061805618453, 0.0014218806562105988, 0.0021181497047075607,
              0.0015006328189602972, 0.004802277867681143, 0.004432808742612209]
      llf    -207.5988206042039  (MCSE 0.0034453733747566565)

It agrees with the other long-run answers in MCLA_SPEC 8.2: glmm with m = 10^6 for three
seeds (beta_RR 1.001-1.044, beta_RW 0.311-0.369, beta_WR -1.935 to -1.925, beta_WW
0.983-1.059, nu_F 1.315-1.398, nu_M 1.211-1.334) and Booth and Hobert's MCEM
(1.03, 0.32, -1.95, 0.99; 1.40, 1.25).
"""

from __future__ import annotations

NAMES = ["Cross[R/R]", "Cross[R/W]", "Cross[W/R]", "Cross[W/W]", "F", "M"]

PARAMS = [1.0184023712494248, 0.3230243123930257, -1.9416932185309272,
          0.9970126499452201, 1.3830515770532137, 1.23721186699395]
BSE = [0.4127817243134636, 0.39328282678392645, 0.47229538591400233,
       0.41047630980624233, 0.6244549447168696, 0.5779016845995557]
MCSE = [0.0015447061805618453, 0.0014218806562105988, 0.0021181497047075607,
        0.0015006328189602972, 0.004802277867681143, 0.004432808742612209]
LLF = -207.5988206042039
LLF_MCSE = 0.0034453733747566565

SETTINGS = {"m": 200000, "random_state": 12345}


def compute(m=SETTINGS["m"], random_state=SETTINGS["random_state"]):
    """Refit the reference; returns the results wrapper."""
    import statsmodels.api as sm

    import glmm_sm
    from glmm_sm import MonteCarloGLMM

    df = glmm_sm.datasets.load("salamander")
    model = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross",
                                        {"F": "0 + C(Female)", "M": "0 + C(Male)"}, df,
                                        family=sm.families.Binomial())
    return model.fit(m=m, random_state=random_state, disp=False)


def main():
    import time

    import numpy as np

    t0 = time.perf_counter()
    res = compute()
    seconds = time.perf_counter() - t0
    print(f"seconds {seconds:.1f} converged {res.converged} rounds {len(res.fit_log.rounds)} "
          f"m {res.m} min ess {np.min(res.ess):.0f} "
          f"max mcse/se {np.max(np.asarray(res.mcse()) / np.asarray(res.bse)):.4f}")
    print("params", np.asarray(res.params).tolist())
    print("bse", np.asarray(res.bse).tolist())
    print("mcse", np.asarray(res.mcse()).tolist())
    print("llf", res.llf, res.llf_mcse)


if __name__ == "__main__":
    main()
