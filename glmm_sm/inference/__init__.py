"""Layer 5, inference after a fit: likelihood-ratio tests (:mod:`~glmm_sm.inference.lrtest`),
profile likelihoods (:mod:`~glmm_sm.inference.profile`), predictions
(:mod:`~glmm_sm.inference.prediction`),
simulation and residuals (:mod:`~glmm_sm.inference.simulate`), comparison with other fits
(:mod:`~glmm_sm.inference.compare`) and figures (:mod:`~glmm_sm.inference.plots`).

The functions take a fitted results object; they never import :mod:`glmm_sm.results`.
"""
