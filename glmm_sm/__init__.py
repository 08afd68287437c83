"""glmm_sm: generalized linear mixed models by Monte Carlo likelihood approximation.

The likelihood of a GLMM is an integral over the random effects.  glmm_sm approximates it by
importance sampling (Geyer 1994; Sung and Geyer 2007; the R package glmm), block by block,
and maximizes the approximation, reporting Monte Carlo standard errors beside the usual ones.

The public names are imported on first use (PEP 562), so ``import glmm_sm`` costs a few
milliseconds; ``from glmm_sm import MonteCarloGLMM`` loads statsmodels, numba and the
pipeline.
"""

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


def __getattr__(name):
    """The public names, imported when first asked for."""
    if name == "MonteCarloGLMM":
        from glmm_sm.model import MonteCarloGLMM as value
    elif name == "MonteCarloGLMMResults":
        from glmm_sm.results.mcla import MonteCarloGLMMResults as value
    elif name == "LaplaceGLMMResults":
        from glmm_sm.results.laplace import LaplaceGLMMResults as value
    elif name == "FitOptions":
        from glmm_sm.fit.options import FitOptions as value
    elif name == "lrtest":
        from glmm_sm.inference.lrtest import lrtest as value
    elif name in ("compare", "plot_compare"):
        from glmm_sm.inference import compare as module

        value = getattr(module, name)
    elif name == "datasets":
        import glmm_sm.datasets as value
    else:
        raise AttributeError(f"module 'glmm_sm' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
