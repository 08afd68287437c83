"""
Salamander mating: a contrast, a likelihood-ratio test and profile intervals
============================================================================

McCullagh and Nelder's salamander experiment: 360 matings between females and males of two
populations, Rough Butt (R) and White Side (W).  ``Mate`` is 1 when the pair mated;
``Cross`` gives the female's and the male's population.  Each of the 60 females and 60
males took part in six matings, so the model has crossed random effects for the female
(variance ``F``) and the male (variance ``M``) on the logit scale.
"""

# %%
# The fit
# -------
# ``m`` (the number of importance-sampling draws) is chosen automatically: it grows until
# every Monte Carlo standard error (MCSE) is at most a tenth of the statistical standard
# error.  The summary reports both.
import statsmodels.api as sm

import glmm_sm
from glmm_sm import MonteCarloGLMM

df = glmm_sm.datasets.load("salamander")
vc = {"F": "0 + C(Female)", "M": "0 + C(Male)"}
model = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross", vc, df,
                                    family=sm.families.Binomial())
res = model.fit(random_state=0, disp=False)
print(res.summary())

# %%
# A contrast: do R/R pairs mate as often as W/W pairs?
# -----------------------------------------------------
# ``t_test`` takes statsmodels' parameter names (R-style names such as ``CrossR/R`` work
# too).  The difference of the two log-odds is small next to its standard error.
print(res.t_test("Cross[R/R] - Cross[W/W] = 0"))

# %%
# Likelihood-ratio test of the male variance component
# ----------------------------------------------------
# The reduced model has no male effect.  ``nu_M = 0`` is on the boundary of the parameter
# space, so the statistic is referred to the mixture ``0.5 chi2_0 + 0.5 chi2_1``; the Monte
# Carlo error of both log-likelihoods carries over to the statistic.
reduced = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross", {"F": "0 + C(Female)"}, df,
                                      family=sm.families.Binomial())
res_f = reduced.fit(random_state=1, disp=False)
print(glmm_sm.lrtest(res, res_f))

# %%
# Profile intervals
# -----------------
# A variance's likelihood is skewed: the Wald interval (estimate -+ 1.96 SE) is symmetric
# and can reach below 0, the profile interval is not and cannot.  The profile maximizes
# the Monte Carlo log-likelihood of the final round's draws over the other parameters;
# each end has its own Monte Carlo standard error.
wald = res.conf_int().set_axis(["Wald lower", "Wald upper"], axis=1)
profile = res.profile_conf_int()
print(wald.join(profile.drop(columns="note")).round(3).to_string())

# %%
# The zeta plot (lme4's profile plot) shows the skew: the profile (solid) bends away from
# the straight Wald line (dotted); the interval is where it crosses -+ 1.96.
prof_f = res.profile("F")
fig = res.plot_profile("F", profile=prof_f)

# %%
# Random effects
# --------------
# Conditional means of the female effects given the data, with intervals of -+ 1.96
# conditional SDs.
fig = res.plot_random_effects("F")

# %%
# Monte Carlo diagnostics
# -----------------------
# The effective sample size of each of the six independent blocks, the largest MCSE/SE of
# each round, and the distribution of the importance weights in the worst block: a
# well-behaved sampler spreads the weight over many draws near 0 on this scale.
fig = res.plot_diagnostics()
