"""Layer 1, the model specification: what is fitted, before anything is computed.

Families and links (:mod:`~glmm_sm.spec.families`), formula checks and lme4 terms
(:mod:`~glmm_sm.spec.formula_checks`, :mod:`~glmm_sm.spec.lme4_terms`), the missing-data policy
(:mod:`~glmm_sm.spec.missing`), sparse random-effect columns straight from the level codes
(:mod:`~glmm_sm.spec.sparse_formula`), argument validation (:mod:`~glmm_sm.spec.validation`), the
random-effects design and its blocks (:mod:`~glmm_sm.spec.design`), the covariance structure
(:mod:`~glmm_sm.spec.covstruct`), the validated arrays (:mod:`~glmm_sm.spec.arrays`) and the
parameters with their unconstrained coordinates (:mod:`~glmm_sm.spec.params`).
"""
