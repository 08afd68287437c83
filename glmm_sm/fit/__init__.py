"""Layer 4, the Monte Carlo maximum-likelihood fit: options and the fit log
(:mod:`~glmm_sm.fit.options`), the rounds driver (:mod:`~glmm_sm.fit.driver`), standard errors
and MCSEs from the observed information (:mod:`~glmm_sm.fit.information`), variance
components at zero (:mod:`~glmm_sm.fit.boundary`, :mod:`~glmm_sm.fit.boundary_refit`) and
separation (:mod:`~glmm_sm.fit.separation`).
"""
