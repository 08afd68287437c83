"""The nested rule of a tree of depth 3 or more (:mod:`glmm_sm.mcla.rb.deep`), set up and
measured with less work (issue 20, session 15):

* :class:`~glmm_sm.mcla.rb.deep.DeepQuadratureSampler` eliminates the levels of the joint
  Laplace precision from the leaves up on per-level arrays (each effect's entries with its
  ancestors) instead of sparse Schur complements: the same conditional means, coefficients
  and SDs as the dense elimination here, to rounding;
* :meth:`~glmm_sm.mcla.rb.deep.DeepQuadratureEngine.evaluate_score` (the value and
  gradient without the Hessian, which the quadrature error measurement does not use) gives
  the full evaluation's value and gradient to the bit, and the fit's measured quadrature
  error is the same to the bit as with the full evaluation (fails on the code before it:
  no ``evaluate_score``);
* the leaves' nodes are formed in the leaf kernel from the rule's centres and scales; the
  sampler forms them only where asked (``level_nodes``), the same numbers as
  ``centre + scale z``.
"""

from __future__ import annotations

import numpy as np
from test_nested_deep import FORMULA, _data3, _engine, _quiet, four_level_frame

from glmm_sm import MonteCarloGLMM
from glmm_sm.fit import driver
from glmm_sm.mcla.rb.deep import DeepQuadratureEngine
from glmm_sm.mcla.rb.round import centre_mode, centre_system


def _dense_conditionals(smp, h, nu, u):
    """The levels' modes, coefficients on their ancestors and conditional SDs by the dense
    Schur complements of ``P = Z' diag(h) Z + D^{-1}`` (the layout's columns of each
    level; the elimination the sampler did with sparse matrices before)."""
    data, st = smp.data, smp.structure
    Z = data.Z.toarray()
    P = Z.T @ (h[:, None] * Z) + np.diag(1.0 / nu[data.ident])
    D = st.depth
    keep = np.concatenate(st.cols)
    offs = np.r_[0, np.cumsum([c.size for c in st.cols])]
    Pk = P[np.ix_(keep, keep)]
    coef, sd = [None] * D, [None] * D
    for lev in range(D - 1, -1, -1):
        L = np.arange(offs[lev], offs[lev + 1])
        R = np.arange(0, offs[lev])
        PLL = Pk[np.ix_(L, L)]
        d = np.diag(PLL)
        assert np.all(PLL - np.diag(d) == 0.0)  # a tree: no links within a level
        sd[lev] = 1.0 / np.sqrt(d)
        if not lev:
            break
        PLR = Pk[np.ix_(L, R)]
        coef[lev] = np.column_stack([-PLR[np.arange(L.size), offs[j] + st.anc[lev][:, j]] / d
                                     for j in range(lev)])
        Pk = Pk[np.ix_(R, R)] - PLR.T @ (PLR / d[:, None])
    return [u[c] for c in st.cols], coef, sd


def _four_levels(seed=11):
    """Answers in pupils in classes in schools in districts (``test_nested_deep``'s four
    levels), the schools' effects as slopes on a positive covariate ``w`` (no intercept):
    coefficients other than 1."""
    rng = np.random.default_rng(seed)
    d = four_level_frame(rng, (3, 2, 2, 3, 3))
    d["w"] = 0.5 + rng.random(len(d))
    return MonteCarloGLMM.from_formula(
        "y ~ x + (1 | dist) + (0 + w | dist:school) + (1 | dist:school:klass) + "
        "(1 | dist:school:klass:pupil)", data=d, family="bernoulli")


def test_the_tree_elimination_is_the_dense_schur_complements():
    """Three and four levels, at two centres each: modes equal, coefficients and SDs
    within 1e-12 (relative) of the dense elimination (rounding: the sums are taken in
    another order)."""
    three = MonteCarloGLMM.from_formula(FORMULA, data=_data3(), family="bernoulli")
    cases = [(three, [0.1, 0.6, 0.5, 0.3, 1.2]), (three, [-0.3, 0.5, 1.4, 0.05, 0.4]),
             (_four_levels(), [0.1, 0.5, 0.5, 0.3, 0.4, 0.9]),
             (_four_levels(), [0.0, 0.4, 2.0, 0.1, 1.5, 0.2])]
    for mod, theta in cases:
        theta = np.asarray(theta)
        smp = _engine(mod, theta).sampler
        data = smp.data
        p = data.k_fe
        nu = theta[p:]
        mode = centre_mode(mod, centre_system(mod, mod.factorize, theta), theta)
        u = np.asarray(mode.u, dtype=float)
        eta = data.linear_fixed(theta[:p]) + data.Z @ u
        h = data.family.obs_terms(eta, data.wy, data.wn)[2]
        got = smp._conditionals(h, nu, u)
        ref = _dense_conditionals(smp, h, nu, u)
        for lev in range(smp.structure.depth):
            np.testing.assert_array_equal(got[0][lev], ref[0][lev])
            np.testing.assert_allclose(got[2][lev], ref[2][lev], rtol=1e-12)
            if lev:
                np.testing.assert_allclose(got[1][lev], ref[1][lev], rtol=1e-12,
                                           atol=1e-15)


def test_the_score_without_the_hessian_is_the_same_bits():
    d = _data3()
    mod = MonteCarloGLMM.from_formula(FORMULA, data=d, family="bernoulli")
    theta = np.array([0.1, 0.6, 0.5, 0.3, 1.2])
    eng = _engine(mod, theta + 0.05)
    full = _engine(mod, theta + 0.05).evaluate(theta)
    got = eng.evaluate_score(theta)
    assert got.hessian is None and full.hessian is not None
    assert got.value == full.value
    np.testing.assert_array_equal(got.gradient, full.gradient)
    np.testing.assert_array_equal(got.block_values, full.block_values)
    # not kept as the engine's last (full) evaluation
    assert eng.evaluate(theta).hessian is not None
    # outside the parameter space: as evaluate
    bad = eng.evaluate_score(np.array([0.1, 0.6, -0.5, 0.3, 1.2]))
    assert bad.value == -np.inf and bad.gradient is None


def test_the_measured_quadrature_error_is_the_same_bits(monkeypatch):
    """The fit's quadrature error measurement takes the finer rule's gradient from
    ``evaluate_score``; with the full evaluation instead (the code before), the same
    record to the bit."""
    d = _data3()
    mod = MonteCarloGLMM.from_formula(FORMULA, data=d, family="bernoulli")
    calls = []
    orig = DeepQuadratureEngine.evaluate_score

    def counted(self, params):
        calls.append(1)
        return orig(self, params)

    monkeypatch.setattr(DeepQuadratureEngine, "evaluate_score", counted)
    res = _quiet(mod.fit, random_state=0, disp=False)
    assert calls  # the measurement used it
    monkeypatch.setattr(DeepQuadratureEngine, "evaluate_score", None)
    before = _quiet(MonteCarloGLMM.from_formula(FORMULA, data=d, family="bernoulli").fit,
                    random_state=0, disp=False)
    assert res.fit_log.quadrature == before.fit_log.quadrature
    np.testing.assert_array_equal(res.params, before.params)
    assert driver.QUADRATURE_TOL_SE > res.fit_log.quadrature["max_step_in_se"]


def test_the_leaves_nodes_are_formed_where_asked():
    """The sampler keeps the nodes of the levels above the leaves; the leaves' are formed
    by ``level_nodes`` (and kept), ``centre + scale z`` at every path, node fastest."""
    d = _data3()
    mod = MonteCarloGLMM.from_formula(FORMULA, data=d, family="bernoulli")
    smp = _engine(mod, [0.1, 0.6, 0.5, 0.3, 1.2]).sampler
    D = smp.structure.depth
    assert len(smp.nodes) == D - 1
    leaf = smp.level_nodes(D - 1)
    assert len(smp.nodes) == D and smp.level_nodes(D - 1) is leaf
    ref = (smp.centres[-1][:, :, None]
           + smp.scales[-1][:, None, None] * smp.std_nodes[-1][None, None, :])
    np.testing.assert_array_equal(leaf, ref.reshape(leaf.shape))
