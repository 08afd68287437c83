"""The named records the kernels take and fill.

They are plain ``collections.namedtuple`` classes of arrays (and, for the spans, of
integers): numba compiles a field access by name to the same static index as a positional
one, so naming costs nothing in the hot loops, and a record passed to an inlined helper is
free.  The numpy reference kernel takes the same records.

Plain kernel (:mod:`glmm_sm.mcla.kernels.plain`): :class:`Design`, :class:`Draws`,
:class:`Prior` in, :class:`Sums` out, :class:`Work` and :class:`Span` inside.

Rao-Blackwellized kernel (:mod:`glmm_sm.mcla.kernels.rb`): :class:`RBBlocks`,
:class:`RBRule`, :class:`RBInputs`, :class:`Draws` in, :class:`RBSums` out, :class:`RBState`
(one per thread) and :class:`RBSpan` inside.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

__all__ = ["Design", "Draws", "Prior", "Sums", "Work", "Span", "RBBlocks", "RBRule",
           "RBInputs", "RBSums", "RBState", "RBSpan"]

#: The data in a block layout: block pointers into the observations (``obs_ptr``) and the
#: effects (``col_ptr``), ``X beta + offset`` (``xb``), weighted responses and trials
#: (``wy``, ``wn``), the fixed-effects design ``X`` (or the shifted ``X + Z M``) and ``Z`` as
#: CSR (``zptr``, ``zidx``, ``zval``).
#: ``fpar`` holds the family's own parameters (``[alpha]`` for the negative binomial, empty
#: otherwise).
Design = namedtuple("Design", "obs_ptr col_ptr xb wy wn X zptr zidx zval fpar",
                    defaults=(np.zeros(0),))

#: A chunk of draws: effects x draws ``U``, their log importance densities ``logf``
#: (blocks x draws) and sums of squares ``S`` (blocks x components x draws; cross sums of
#: correlated terms after the ``T`` components).  ``kend`` (int64, per block; empty: every
#: block uses every draw of the chunk) is where each block's draws end in the chunk's
#: columns, for per-block draw counts (:mod:`glmm_sm.mcla.block_m`): block ``b`` uses
#: columns ``k0:min(k1, kend[b])`` only (the plain kernels; the Rao-Blackwellized ones
#: leave it empty).
Draws = namedtuple("Draws", "U logf S kend", defaults=(np.zeros(0, dtype=np.int64),))

#: The prior at ``nu``: each component's kernel variance ``nu`` and its log ``lognu``, the
#: cross sums' coefficients ``pc`` (empty without correlated terms) and the columns per
#: block and component ``qbt``.
Prior = namedtuple("Prior", "lognu nu pc qbt")

#: The plain kernel's partial sums per block (see :mod:`glmm_sm.mcla.kernels.plain`):
#: ``a`` (max log weight), ``s0``/``s0sq`` (sums of the rescaled weights and of their
#: squares), ``s1``/``s1sq`` (weighted scores), ``s2``/``s2sq`` (weighted outer products),
#: ``sS`` (weighted sums of squares), ``hc`` (per observation, weighted ``w c''``), ``sU`` /
#: ``sUU`` (weighted sums of the effects and their squares; ``sUU`` empty unless moments are
#: asked for) and ``lw`` (the draws' log weights; empty unless kept).
#: For the negative binomial also ``hca`` (per observation, weighted ``d2 log f / d eta
#: d alpha``) and ``saa`` (per block, weighted ``d2 log f / d alpha2``); empty otherwise.
Sums = namedtuple("Sums", "a s0 s0sq s1 s1sq s2 s2sq sS hc sU sUU lw hca saa",
                  defaults=(np.zeros(0), np.zeros(0)))

#: The plain kernel's work arrays for one tile of draws: linear predictors ``eta``, data
#: log-likelihoods ``lfy``, residuals ``rr``, log weights ``base``, rescaled weights ``ew``,
#: beta scores ``G`` (p x tile), per-observation ``w c''`` rows ``cpp``, one draw's full
#: score ``gk`` and the running products ``pr`` of ``1 + exp(-|eta|)``.
#: For the negative binomial also, per draw, the alpha score ``ga`` and ``d2 log f / d
#: alpha2`` (``gaa``), and per observation ``d2 log f / d eta d alpha`` rows ``cpa``.
Work = namedtuple("Work", "eta lfy rr base ew G cpp gk pr ga gaa cpa")

#: One block: its index ``b``, observations ``o0:o1`` and effects ``c0:c1``.
Span = namedtuple("Span", "b o0 o1 c0 c1")

#: A Rao-Blackwellized layout's blocks: integrated levels per block (``lev_bptr``),
#: observations on no integrated level (``free_bptr``, ``free_obs``), the layout's column
#: pointers (``col_ptr``), each block's prior constant of the sampled effects at ``nu``
#: (``const_b``) and the columns per block and component ``qbt``.
RBBlocks = namedtuple("RBBlocks", "lev_bptr free_bptr free_obs col_ptr const_b qbt")

#: The quadrature rule of the integrated levels: observations per level (``lev_ptr`` into
#: ``ro``/``za``: layout rows and their coefficients), each level's component
#: (``lev_comp``), node centres ``m0 + c' v`` (``m0``; ``c`` as CSR ``cptr``/``cidx``/
#: ``cval``) and scales ``s``, the standard nodes ``xs`` and log weights ``logw``, and the
#: levels' moving-draw rows ``malpha``.  A re-centred rule (nested adaptive quadrature,
#: :mod:`glmm_sm.mcla.kernels.rb_nested`) adds per level and draw the centre's offset ``dmu``
#: (L, m: added to ``m0 + c' v``) and the scale ``sk`` (L, m: in place of ``s``); both have no
#: columns otherwise.
RBRule = namedtuple("RBRule", "lev_ptr lev_comp ro za m0 s cptr cidx cval xs logw malpha "
                               "dmu sk", defaults=(np.zeros((0, 0)), np.zeros((0, 0))))

#: What the RB kernel reads at ``theta``: ``xb``, ``wy``, ``wn``, ``X``, ``Z`` as CSR, which
#: columns are integrated (``is_a``), ``nu`` and ``lognu``, and the prior's beta scores of the
#: moved draws ``gp`` (blocks x p x draws; empty for frozen draws).
#: ``fpar`` holds the family's own parameters (``[alpha]`` for the negative binomial, empty
#: otherwise).
RBInputs = namedtuple("RBInputs", "xb wy wn X zptr zidx zval is_a nu lognu gp fpar",
                      defaults=(np.zeros(0),))

#: The RB kernel's sums per block: as :class:`Sums`, plus the node covariances ``sC``, the
#: levels' weighted node moments ``mA`` and the weighted sums of the draws ``sU``/``sUU``.
#: For the negative binomial also ``hca`` (per observation, in ``hc``'s order, the weighted
#: node means of ``d2 log f / d eta d alpha``) and ``saa`` (per block, the weighted node
#: means of ``d2 log f / d alpha2``); empty otherwise.  The scalar kernel
#: (:func:`glmm_sm.mcla.kernels.rb.rb_chunk_sums`) leaves ``hc`` and ``hca`` empty and
#: writes their products with the design instead, per block: ``hxx`` (the lower triangle,
#: row by row, of ``X_b' diag(hc) X_b``) and ``hxa`` (``X_b' hca``, negative binomial).
RBSums = namedtuple("RBSums", "a s0 s0sq s1 s1sq s2 s2sq sS hc sC mA sU sUU hca saa hxx hxa",
                    defaults=(np.zeros(0), np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0))))

#: The RB kernel's work arrays (one set per thread): per draw of the tile its log weight
#: ``lw``, score ``G``, node covariance ``Cw``, node sums of squares ``SA``, the lower
#: triangle of ``sum_i h_i x_i x_i'`` over its observations (``hx``, one column per draw;
#: ``h_i`` the ``w c''`` node mean) and level moments ``mAk``; per draw or (node, draw) pair
#: ``e0``, ``mu``, ``alpha``, ``lq`` (node log weights), ``rr``, ``gb`` (node beta scores),
#: ``cij``, ``ze``, ``pr``, ``eb``, ``ec`` and the accumulators ``acc``.  For the negative
#: binomial (empty otherwise) the node alpha scores ``ga`` and node sums of ``d2 log f /
#: d alpha2`` ``gaa`` per (node, draw) pair, per observation and pair ``d2 log f / d eta
#: d alpha`` (``cea``), and per draw its node means times ``x_i`` summed over the
#: observations (``hxa``, one column per draw) and the
#: draw's expected ``d2 log f / d alpha2`` (``saak``).  For the levels whose node covariance
#: goes through their observations' residuals (``glmm_sm.mcla.kernels.rb._low_rank``):
#: the residual of each observation of the level at each pair (``rrs``) and the scratch of
#: their covariance (``sig``), and each level's covariance per draw of the tile (``sgl``,
#: empty where not kept).
RBState = namedtuple("RBState", "lw G Cw SA hx mAk e0 mu alpha lq rr gb cij ze pr eb ec acc "
                                "ga gaa cea hxa saak rrs sig sgl")

#: One block ``b`` of a Rao-Blackwellized layout: its levels ``lev0:lev1``, their
#: observations ``r0:r1`` (in ``ro`` order), free observations ``f0:f1``, effects ``c0:c1``
#: and the number of integrated observations ``n_int`` (where the free ones start in
#: ``hc``).
RBSpan = namedtuple("RBSpan", "b lev0 lev1 r0 r1 f0 f1 c0 c1 n_int")

#: The integrated levels of a deterministic fit, for re-centring their rules
#: (:mod:`glmm_sm.mcla.kernels.rb_nested`): observations per level (``lev_ptr`` into the
#: arrays below, in ``RBRule.ro`` order), their coefficients on the level (``za``) and on
#: their block's sampled effect (``zv``; 0 where none), weighted responses and trials
#: (``wy``, ``wn``), and each level's prior variance ``nu`` (L,).
RBLevels = namedtuple("RBLevels", "lev_ptr za zv wy wn nu")

#: The quadrature rule of integrated *vector* levels (:mod:`glmm_sm.mcla.kernels.rb_vector`):
#: ``r`` effects per level.  Observations per level (``lev_ptr`` into ``ro``, with their
#: coefficients ``za`` (n, r) on the level's effects), each level's sub-components
#: (``lev_sub`` (L, r)) and the row of ``S`` of each pair of its effects (``lev_srow``
#: (L, r, r): the sub-component on the diagonal, the cross sum off it), node centres
#: ``m0 + C v`` (``m0`` (L, r); ``C`` as CSR over the rows ``a r + i``: ``cptr``/``cidx``/
#: ``cval``), node scales ``R`` (L, r, r; lower triangular, ``R R'`` the conditional
#: covariance) and ``log|R|`` (``logdet``), the standard tensor nodes ``zs`` (K, r) with log
#: weights ``logw`` (K,), and the levels' moving-draw rows ``malpha`` (L, r, p).
RBVRule = namedtuple("RBVRule", "lev_ptr lev_sub lev_srow ro za m0 cptr cidx cval R logdet zs "
                                "logw malpha")

#: The prior of a vector Rao-Blackwellized layout at ``theta``: the cross sums'
#: coefficients ``pc`` (the sampled effects' prior), and per integrated level its
#: precision ``P`` (L, r, r) and ``-1/2 log|Sigma| - r/2 log 2 pi`` (``lnorm``, (L,)).
RBVPrior = namedtuple("RBVPrior", "pc P lnorm")

#: The vector RB kernel's work arrays, for a tile of up to ``TILE`` draws
#: (:data:`glmm_sm.mcla.kernels.rb_vector.TILE`) that share each observation's set-up: per
#: draw of the tile its score ``G`` (kernel coordinates), effective sums of squares
#: ``Seff``, node covariance ``Cw``, per-observation ``w c''`` node means ``hloc``, level
#: moments ``mAk`` (L, r + r r), node centre ``mu`` and log weight ``lw``; per level and
#: (draw, node) pair (draw-major, ``t K + j``) the nodes ``alpha`` (r, TILE K), node log
#: weights ``lq``, node scores ``hd`` (p + r(r+1)/2, TILE K) and their slots ``slot`` in
#: ``G``, per-observation node curvatures ``cij``, and one observation's node linear
#: predictors ``ze`` and residuals ``rr``, its linear predictor without the level's effects
#: per draw (``e0``); ``derivs``: whether to form the derivatives at all (False: the log
#: weights and the sums ``a``, ``s0``, ``s0sq`` of ``RBSums`` only, for trial points);
#: ``pr`` (TILE K,): the running product over a level's unit-weight logit observations of
#: ``1 / (1 + exp(-|eta|))`` at each pair (its log is added to ``lq`` once per level, not
#: one ``log1p`` per observation and node).
RBVWork = namedtuple("RBVWork",
                     "G Seff Cw hloc mAk mu alpha lq hd slot cij ze rr derivs pr e0 lw",
                     defaults=(np.zeros(0), np.zeros(0)))

__all__ += ["RBVRule", "RBVPrior", "RBVWork", "RBLevels"]
