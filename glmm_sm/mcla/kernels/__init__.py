"""The hot loops: the plain MCLA kernel (:mod:`~glmm_sm.mcla.kernels.plain`) and its numpy
reference (:mod:`~glmm_sm.mcla.kernels.reference`), the Rao-Blackwellized kernel
(:mod:`~glmm_sm.mcla.kernels.rb`), the moving-draw helpers (:mod:`~glmm_sm.mcla.kernels.shift`),
vectorisable elementary functions (:mod:`~glmm_sm.mcla.kernels.fastmath`) and the named records
they take and fill (:mod:`~glmm_sm.mcla.kernels.records`).
"""
