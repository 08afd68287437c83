"""Rao-Blackwellized MCLA: sample some effects, integrate the others by quadrature given them.

The split of a block (:mod:`~glmm_sm.mcla.rb.split`), the sampled effects' proposal
(:mod:`~glmm_sm.mcla.rb.proposal`), the engine (:mod:`~glmm_sm.mcla.rb.engine`), one round's
draws and engine (:mod:`~glmm_sm.mcla.rb.round`) and the conditional moments of every effect
after the fit (:mod:`~glmm_sm.mcla.rb.moments`).
"""
