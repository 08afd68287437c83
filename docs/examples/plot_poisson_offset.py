"""
Counts with exposure: a Poisson model with an offset
====================================================

Counts of events in 40 clinics, each observed over six periods of different lengths.  The
rate per unit of exposure depends on a treatment given to half of the clinics, and each
clinic has its own baseline rate, a random effect.  With ``log(exposure)`` as an offset
the coefficients are log rate ratios.  The data are simulated here, so the estimates can be
compared with the truth.
"""

# %%
# Simulated data
# --------------
# True values: log baseline rate 0.5, treatment log rate ratio -0.4, clinic variance 0.3.
import numpy as np
import pandas as pd
import statsmodels.api as sm

from glmm_sm import MonteCarloGLMM

rng = np.random.default_rng(2024)
n_clinics, n_periods = 40, 6
clinic = np.repeat(np.arange(n_clinics), n_periods)
treated = (clinic % 2).astype(float)
exposure = rng.uniform(0.5, 3.0, size=clinic.size)
u = rng.normal(0.0, np.sqrt(0.3), size=n_clinics)
rate = np.exp(0.5 - 0.4 * treated + u[clinic])
df = pd.DataFrame({"events": rng.poisson(exposure * rate), "treated": treated,
                   "clinic": clinic, "log_exposure": np.log(exposure)})
df.head()

# %%
# The fit
# -------
# ``offset`` takes an array or the name of a column.  Each clinic is its own block, so the
# 40-dimensional integral is 40 one-dimensional ones.
model = MonteCarloGLMM.from_formula("events ~ treated", {"clinic": "0 + C(clinic)"}, df,
                                    family=sm.families.Poisson(), offset="log_exposure")
res = model.fit(random_state=0, disp=False)
print(res.summary())

# %%
# Rate ratios with 95% intervals (exponentiated Wald intervals of the fixed effects).
fe = res.fe_params.index
ratios = np.exp(res.conf_int().loc[fe]).set_axis(["2.5%", "97.5%"], axis=1)
print(ratios.assign(estimate=np.exp(res.fe_params), truth=np.exp([0.5, -0.4])).round(3))

# %%
# Predictions for new clinics
# ---------------------------
# Expected counts over two units of exposure for an untreated and a treated clinic not in
# the data (random effect at its mean, 0); the offset of the new rows is given explicitly.
new = pd.DataFrame({"treated": [0.0, 1.0]})
print(res.predict(new, offset=np.log([2.0, 2.0])))

# %%
# Quantile residuals
# ------------------
# Randomized quantile residuals are uniform on (0, 1) when the model is right: the QQ plot
# follows the diagonal and the residuals show no trend against the fitted values.
fig = res.plot_residuals(random_state=1)

# %%
# Random effects and diagnostics
# ------------------------------
fig = res.plot_random_effects("clinic")

# %%
fig = res.plot_diagnostics()
