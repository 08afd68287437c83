"""
Overdispersed counts: observation-level effect or negative binomial
===================================================================

Counts are often more variable than a Poisson model allows, even after a random effect
for the cluster.  Two standard remedies are an observation-level random effect
(``(1 | obs)``: a lognormal-Poisson mixture) and the negative binomial (NB2: a
gamma-Poisson mixture, variance ``mu + alpha mu^2``).  Here the three models are fitted to
the same simulated counts (nests observed on several nights, with the number of chicks as
exposure, in the spirit of glmmTMB's Owls example) and compared by a likelihood-ratio
test and by AIC.
"""

# %%
# Simulated data
# --------------
# 30 nests, 8 nights each; the counts are negative binomial with ``alpha = 0.8`` around a
# nest effect (variance 0.2) and a treatment effect (log rate ratio -0.6), per chick.
import numpy as np
import pandas as pd
import statsmodels.api as sm

from glmm_sm import MonteCarloGLMM

rng = np.random.default_rng(7)
n_nests, n_nights = 30, 8
nest = np.repeat(np.arange(n_nests), n_nights)
treated = rng.integers(0, 2, nest.size).astype(float)
chicks = rng.integers(1, 7, nest.size).astype(float)
u = rng.normal(0.0, np.sqrt(0.2), n_nests)
mu = chicks * np.exp(0.3 - 0.6 * treated + u[nest])
alpha = 0.8
counts = rng.poisson(mu * rng.gamma(1 / alpha, alpha, nest.size))
df = pd.DataFrame({"calls": counts, "treated": treated, "nest": nest,
                   "obs": np.arange(nest.size), "log_chicks": np.log(chicks)})
print(df.describe().round(2))

# %%
# Three fits
# ----------
# The same fixed effects and offset throughout; the negative binomial is passed as
# statsmodels' own family, whose ``alpha`` is only the start value of the estimate.
vc = {"nest": "0 + C(nest)"}
poisson = MonteCarloGLMM.from_formula("calls ~ treated", vc, df, family=sm.families.Poisson(),
                                      offset="log_chicks").fit(random_state=1, disp=False)
olre = MonteCarloGLMM.from_formula("calls ~ treated", {**vc, "obs": "0 + C(obs)"}, df,
                                   family=sm.families.Poisson(),
                                   offset="log_chicks").fit(random_state=1, disp=False)
negbin = MonteCarloGLMM.from_formula("calls ~ treated", vc, df,
                                     family=sm.families.NegativeBinomial(alpha=1.0),
                                     offset="log_chicks").fit(random_state=1, disp=False)
print(negbin.summary())

# %%
# ``alpha`` comes after the variance components in ``params``; ``theta = 1/alpha`` is the
# size parameter lme4's ``glmer.nb`` and glmmTMB's ``nbinom2`` report.
print(negbin.params.round(3))
print(negbin.theta.round(4))

# %%
# Likelihood-ratio tests and AIC
# ------------------------------
# The Poisson model is the negative binomial at ``alpha = 0``, and the model without the
# observation-level effect is the one with its variance at 0: both nulls are on the
# boundary, so each statistic is referred to ``0.5 chi2(0) + 0.5 chi2(1)``.  The
# observation-level model and the negative binomial are not nested: AIC compares them.
print("NB vs Poisson:", negbin.compare_lr_test(poisson))
print("(1|obs) vs Poisson:", olre.compare_lr_test(poisson))
aic = pd.Series({"Poisson": poisson.aic, "Poisson + (1|obs)": olre.aic,
                 "negative binomial": negbin.aic})
print(aic.round(1))

# %%
# Quantile residuals of the Poisson model and of the negative binomial: the Poisson
# residuals pile up at 0 and 1 (too many small and large counts), the negative binomial's
# follow the diagonal.
fig = poisson.plot_residuals(random_state=2)

# %%
fig = negbin.plot_residuals(random_state=2)
