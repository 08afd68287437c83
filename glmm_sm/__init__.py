"""glmm_sm: generalized linear mixed models by Monte Carlo likelihood approximation.

The likelihood of a GLMM is an integral over the random effects.  glmm_sm approximates it by
importance sampling (Geyer 1994; Sung and Geyer 2007; the R package glmm), block by block,
and maximizes the approximation, reporting Monte Carlo standard errors beside the usual ones.
"""

from glmm_sm import datasets
from glmm_sm.fit.driver import FitOptions
from glmm_sm.inference.compare import compare, plot_compare
from glmm_sm.inference.lrtest import lrtest
from glmm_sm.model import MonteCarloGLMM
from glmm_sm.results.laplace import LaplaceGLMMResults
from glmm_sm.results.mcla import MonteCarloGLMMResults

__version__ = "0.1.0"

__all__ = [
    "FitOptions",
    "LaplaceGLMMResults",
    "MonteCarloGLMM",
    "MonteCarloGLMMResults",
    "compare",
    "lrtest",
    "plot_compare",
    "datasets",
    "__version__",
]
