"""Formula aliases, as ``statsmodels.formula.api`` has them."""

from ..model import MonteCarloGLMM

mcglmm = MonteCarloGLMM.from_formula

__all__ = ["mcglmm"]
