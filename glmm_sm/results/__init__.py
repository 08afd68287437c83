"""Layer 6, the results classes: a Monte Carlo fit (:mod:`~glmm_sm.results.mcla`), a Laplace
fit (:mod:`~glmm_sm.results.laplace`), the summary table (:mod:`~glmm_sm.results.summary`) and
lme4's VarCorr table (:mod:`~glmm_sm.results.varcorr`).
"""

from glmm_sm.results.mcla import MonteCarloGLMMResults, MonteCarloGLMMResultsWrapper

__all__ = ["MonteCarloGLMMResults", "MonteCarloGLMMResultsWrapper"]
