"""Layer 2, the Laplace approximation: conditional modes, the Laplace log-likelihood and its
maximizer (:mod:`~glmm_sm.laplace.step`), and the random effects' prior precision
(:mod:`~glmm_sm.laplace.prior`).  It gives the start values and the samplers' centres.
"""
