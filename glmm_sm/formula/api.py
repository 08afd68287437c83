"""Formula aliases, as ``statsmodels.formula.api`` has them."""

from glmm_sm.model import MonteCarloGLMM

mcglmm = MonteCarloGLMM.from_formula

__all__ = ["mcglmm"]
