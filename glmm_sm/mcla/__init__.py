"""Layer 3, Monte Carlo likelihood approximation: the importance samplers
(:mod:`~glmm_sm.mcla.sampler`), frozen draw sets (:mod:`~glmm_sm.mcla.draws`), partial sums and
their reduction (:mod:`~glmm_sm.mcla.partials`), the engine that evaluates ``l_m`` and its
derivatives (:mod:`~glmm_sm.mcla.engine`), Dask (:mod:`~glmm_sm.mcla.distributed`), the weights'
tail diagnostics (:mod:`~glmm_sm.mcla.tails`), the compiled kernels (:mod:`glmm_sm.mcla.kernels`)
and the Rao-Blackwellized blocks (:mod:`glmm_sm.mcla.rb`).
"""
