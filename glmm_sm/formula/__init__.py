"""Formula interface (``glmm_sm.formula.api``)."""
