"""
Side by side with statsmodels' BinomialBayesMixedGLM
====================================================

statsmodels fits the same salamander model by variational Bayes
(``BinomialBayesMixedGLM.fit_vb``).  :func:`glmm_sm.compare` puts the two fits in one table
and :func:`glmm_sm.plot_compare` draws it: estimates with -+ 1.96 SE intervals (posterior
mean -+ 1.96 posterior SD for the Bayesian fit; its variances are ``exp(2 m)`` of the
posterior mean ``m`` of the log SD, with delta-method SDs).
"""

# %%
import statsmodels.api as sm

import glmm_sm
from glmm_sm import MonteCarloGLMM

df = glmm_sm.datasets.load("salamander")
vc = {"F": "0 + C(Female)", "M": "0 + C(Male)"}
res = MonteCarloGLMM.from_formula("Mate ~ 0 + Cross", vc, df,
                                  family=sm.families.Binomial()).fit(random_state=0,
                                                                     disp=False)
vb = sm.BinomialBayesMixedGLM.from_formula("Mate ~ 0 + Cross", vc, df).fit_vb()
table = glmm_sm.compare(res, vb)
print(table.round(3))

# %%
# The variational estimates are pulled towards 0 (the priors, and the mean-field
# approximation, which also makes its SDs too small: it ignores the posterior correlations
# between the random effects and the variances).  The Monte Carlo fit maximizes the
# likelihood itself, up to a Monte Carlo error that it reports.
fig = glmm_sm.plot_compare(res, vb)
