"""Crossed blocks factored through a Schur complement (:class:`glmm_sm.laplace.step.SchurFactor`).

A crossed block (many levels of ``g``, few of ``h``, every ``g`` meeting several ``h``) has a
precision whose ``g`` part is diagonal.  The Laplace step factors such a block through the
Schur complement onto ``h``; a dense factor of the whole block is ``q^2`` memory and ``q^3``
flops per evaluation (800 MB at 10,020 effects).

* **The same numbers as the dense factor** on small designs (every block forced through the
  Schur path with ``schur_min_q=1``, against ``schur_min_q=None``): the conditional modes, the
  log-determinants, the Laplace log-likelihood, its score (with the third-derivative terms of
  a canonical and a non-canonical link) and ``du/dtheta``, to 1e-10 relative; the
  importance samplers' log densities at their own draws against the normal and t
  densities computed from the dense precision; the Rao-Blackwellized rules.  The designs
  have non-unit loadings and observations on no ``g`` level.
* **Memory**: on 100,000 rows with 10,000 x 20 levels the Laplace value, score, mode
  derivatives and the default sampler's set-up stay within 400 MB of traced allocations
  (the dense precision alone is 803 MB).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
import statsmodels.api as sm
from numpy.random import SeedSequence
from scipy.special import gammaln

from glmm_sm import MonteCarloGLMM
from glmm_sm.laplace.step import (
    BlockSystem,
    _precision_inverses,
    conditional_mode,
    laplace_loglike,
    laplace_score,
    mode_derivatives,
)
from glmm_sm.mcla.rb.split import RBSampler, RBStructure
from glmm_sm.mcla.sampler import GlmmSampler, LaplaceSampler

LINKS = sm.families.links


def crossed_model(n, n_g, n_h, family, seed=7, free_share=0.1):
    """A crossed design from the array constructor: ``(1 | g)`` with loadings ``0.5 + U(0, 1)``
    (a share ``free_share`` of the rows on no ``g`` level) and ``(0 + x2 | h)``."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_g, n)
    h = rng.integers(0, n_h, n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    has_g = rng.random(n) >= free_share
    za = 0.5 + rng.random(n)
    rows = np.concatenate([np.flatnonzero(has_g), np.arange(n)])
    cols = np.concatenate([g[has_g], n_g + h])
    vals = np.concatenate([za[has_g], x2])
    Z = sp.csr_matrix((vals, (rows, cols)), shape=(n, n_g + n_h))
    eta = (-0.3 + 0.5 * x1 + Z @ np.concatenate([rng.normal(0, 0.9, n_g),
                                                  rng.normal(0, 0.5, n_h)]))
    if isinstance(family, sm.families.Poisson):
        y = rng.poisson(np.exp(np.minimum(eta, 5.0))).astype(float)
    else:
        y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    X = np.column_stack([np.ones(n), x1])
    ident = np.r_[np.zeros(n_g, int), np.ones(n_h, int)]
    return MonteCarloGLMM(y, X, Z, ident, family=family, vcp_names=["g", "h"])


FAMILIES = {
    "logit": lambda: sm.families.Binomial(),
    "probit": lambda: sm.families.Binomial(link=LINKS.Probit()),
    "poisson": lambda: sm.families.Poisson(),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def pair(request):
    """(data, dense system, Schur system) of a 600-row, 60 x 8 crossed design."""
    model = crossed_model(600, 60, 8, FAMILIES[request.param]())
    data = model.layout_data()
    dense, schur = BlockSystem(data, schur_min_q=None), BlockSystem(data, schur_min_q=1)
    assert not dense.schur and len(schur.schur) == data.n_blocks == 1
    assert not schur.groups
    return data, dense, schur


def _close(a, b, rtol=1e-10):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = max(float(np.max(np.abs(b))), 1e-300)
    assert np.max(np.abs(a - b)) <= rtol * scale, (np.max(np.abs(a - b)), scale)


BETA, NU = np.array([-0.2, 0.4]), np.array([0.7, 0.3])


def test_schur_split_is_the_diagonal_component(pair):
    data, _, schur = pair
    sb = schur.schur[0]
    assert sb.component == 0 and sb.n_a == 60 and sb.v_cols.size == 8
    assert np.all(data.ident[sb.a_cols] == 0) and np.all(data.ident[sb.v_cols] == 1)
    # the observations on no g level are there, with no a entry
    assert 0 < np.sum(sb.a_of_row < 0) < data.Z.shape[0]


def test_laplace_pieces_match_the_dense_factor(pair):
    _, dense, schur = pair
    vd, md = laplace_loglike(dense, BETA, NU)
    vs, ms = laplace_loglike(schur, BETA, NU)
    assert md.converged and ms.converged
    _close(vs, vd)
    _close(ms.u, md.u)
    _close(ms.logdet_block, md.logdet_block)
    _close(laplace_score(schur, BETA, NU, ms), laplace_score(dense, BETA, NU, md))
    for a, b in zip(mode_derivatives(schur, BETA, NU, ms), mode_derivatives(dense, BETA, NU, md),
                    strict=True):
        _close(a, b)


def test_schur_factor_against_the_dense_precision(pair):
    data, dense, schur = pair
    md, ms = conditional_mode(dense, BETA, NU), conditional_mode(schur, BETA, NU)
    Pinv = _precision_inverses(md)[0][0]
    cols = dense.groups[0][2][0]
    pos = np.empty(data.q, dtype=int)
    pos[cols] = np.arange(cols.size)
    sb, fac = schur.schur[0], ms.schur[0]
    idx = pos[sb.cols]
    Pinv = Pinv[np.ix_(idx, idx)]
    _close(fac.inv_diag(), np.diag(Pinv))
    _close(fac.inv_vv(), Pinv[sb.n_a:, sb.n_a:])
    Zb = data.Z[:, sb.cols].toarray()
    _close(fac.leverage(sb), np.einsum("ij,jk,ik->i", Zb, Pinv, Zb))
    R = np.random.default_rng(1).normal(size=(sb.cols.size, 3))
    _close(fac.solve(R), Pinv @ R)
    _close(fac.solve(R[:, 0]), Pinv @ R[:, 0])
    _close(fac.whiten(fac.color(R)), R)
    P = np.linalg.inv(Pinv)
    X = fac.color(R)
    _close(np.einsum("ik,ij,jk->k", X, P, X), np.sum(R * R, axis=0), rtol=1e-9)


def _dense_precision(data, dense, md):
    P = np.zeros((data.q, data.q))
    cols = dense.groups[0][2][0]
    P[np.ix_(cols, cols)] = np.linalg.inv(_precision_inverses(md)[0][0])
    return P


def _log_t(d2, q, ldp, df):
    return (gammaln((df + q) / 2) - gammaln(df / 2) - 0.5 * q * np.log(df * np.pi) + 0.5 * ldp
            - 0.5 * (df + q) * np.log1p(d2 / df))


def test_laplace_sampler_density(pair):
    data, dense, schur = pair
    params = np.r_[BETA, NU]
    md, ms = conditional_mode(dense, BETA, NU), conditional_mode(schur, BETA, NU)
    P, ldp, q = _dense_precision(data, dense, md), md.logdet_block[0], data.q
    smp = LaplaceSampler(schur, params, ms)
    ch = smp.generate(SeedSequence(3), 40)
    dev = ch.U - ms.u[:, None]
    d2 = np.einsum("ik,ij,jk->k", dev, P, dev)
    log_n = -0.5 * q * np.log(2 * np.pi) + 0.5 * ldp - 0.5 * d2
    ref = np.logaddexp(np.log(0.9) + log_n, np.log(0.1) + _log_t(d2, q, ldp, 5.0))
    _close(ch.logf[0], ref, rtol=1e-11)
    S = np.stack([np.sum(ch.U[data.ident == t] ** 2, axis=0) for t in range(2)])
    _close(ch.S[0], S)
    # the t draws are the last tenth (stratified counts): the normal part has mean u_hat
    assert np.all(np.isfinite(ch.U))


def test_glmm_sampler_density(pair):
    data, dense, schur = pair
    params = np.r_[BETA, NU]
    md, ms = conditional_mode(dense, BETA, NU), conditional_mode(schur, BETA, NU)
    P, ldp, q = _dense_precision(data, dense, md), md.logdet_block[0], data.q
    smp = GlmmSampler(schur, params, ms)
    ch = smp.generate(SeedSequence(4), 30)
    D = NU[data.ident]
    U, dev = ch.U, ch.U - ms.u[:, None]
    ldd = -np.log(D).sum()
    lg1 = _log_t(np.sum(U * U / D[:, None], axis=0), q, ldd, 5.0)
    lg2 = -0.5 * q * np.log(2 * np.pi) + 0.5 * ldd - 0.5 * np.sum(dev * dev / D[:, None], axis=0)
    lg3 = -0.5 * q * np.log(2 * np.pi) + 0.5 * ldp - 0.5 * np.einsum("ik,ij,jk->k", dev, P, dev)
    ref = np.logaddexp.reduce(np.stack([lg1, lg2, lg3]) + np.log(1 / 3), axis=0)
    _close(ch.logf[0], ref, rtol=1e-11)


@pytest.mark.parametrize("split", [None, 1], ids=["default", "integrate-h"])
def test_rao_blackwell_rules_match(pair, split):
    """The default split integrates g, the Schur factor's diagonal part; a split given
    explicitly that integrates h takes the rules from the block's whole precision."""
    data, dense, schur = pair
    params = np.r_[BETA, NU]
    st = RBStructure(data, None if split is None else np.full(data.n_blocks, split))
    out = []
    for system in (dense, schur):
        smp = RBSampler(system, params, conditional_mode(system, BETA, NU), st)
        out.append((smp.m0, smp.s, smp.cptr, smp.cidx, smp.cval, smp.v_root[0], smp.u_hat,
                    smp.v_half_logdet[0], smp.du_dbeta, smp.v_cols[0]))
    for a, b in zip(*out, strict=True):
        _close(a, b)


def test_large_crossed_block_memory():
    """100,000 rows, 10,000 x 20 levels: the Laplace pieces and the default sampler's set-up
    within 400 MB of traced allocations (a dense precision of the block is 803 MB; the Schur
    path peaks at about 130 MB, mostly the integrated proposal's node arrays)."""
    model = crossed_model(100_000, 10_000, 20, sm.families.Binomial(), free_share=0.0)
    data = model.layout_data()
    assert data.n_blocks == 1 and data.q == 10_020
    params = np.r_[BETA, NU]
    tracemalloc.start()
    try:
        system = model.block_system()
        value, mode = laplace_loglike(system, BETA, NU)
        score = laplace_score(system, BETA, NU, mode)
        du_dbeta, du_dnu = mode_derivatives(system, BETA, NU, mode)
        smp = RBSampler(system, params, mode, RBStructure(data))
        chunk = LaplaceSampler(system, params, mode).generate(SeedSequence(0), 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400e6, f"peak traced memory {peak / 1e6:.0f} MB"
    assert len(system.schur) == 1
    assert mode.converged and np.isfinite(value) and np.all(np.isfinite(score))
    assert du_dbeta.shape == (10_020, 2) and du_dnu.shape == (10_020, 2)
    assert smp.v_root[0].shape == (20, 20) and np.all(np.isfinite(chunk.logf))


def test_laplace_fit_results_match_the_dense_factor():
    """``fit(method="laplace")`` with the crossed block Schur-factored: the estimate, its
    SEs, the conditional SDs and the whole conditional covariance (computed on access) as
    with the dense factor.  The optimizer's path sees gradients that differ by roundoff, so
    the estimates agree to its tolerance (1e-7 relative), not to the last bit."""
    out = []
    for min_q in (None, 1):
        model = crossed_model(600, 60, 8, sm.families.Binomial())
        data = model.layout_data()
        data._system = BlockSystem(data, schur_min_q=min_q)
        res = model.fit(method="laplace")
        assert len(model.block_system().schur) == (min_q is not None)
        out.append(res)
    dense, schur = out
    _close(schur.params, dense.params, rtol=1e-7)
    _close(schur.bse, dense.bse, rtol=1e-5)
    re_d, re_s = dense.random_effects(), schur.random_effects()
    _close(np.asarray(re_s, dtype=float), np.asarray(re_d, dtype=float), rtol=1e-6)
    Cd, Cs = dense.random_effects_cov.toarray(), schur.random_effects_cov.toarray()
    _close(Cs, Cd, rtol=1e-6)
    _close(np.diag(Cs), np.asarray(re_s["SD"], dtype=float) ** 2, rtol=1e-12)


def _bench_scale():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scale.py"
    spec = importlib.util.spec_from_file_location("bench_scale", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_laplace_fit_matches_glmmtmb_and_glmer_at_10000_rows():
    """``bench_scale.py``'s crossed data at n = 10,000 (1,000 x 20 levels: one block of
    1,020 effects, Schur-factored by default): the Laplace MLE against glmmTMB's and
    glmer's (``tests/results/crossed_scale_r.json``).  All three maximize the same Laplace
    log-likelihood; they stop where the objective changes by about 1e-10 relatively
    (glmmTMB's nlminb ``rel.tol``; our L-BFGS-B ``ftol`` 1e-13), i.e. a log-likelihood
    within ``1e-10 * 6230 ~ 6e-7`` of the maximum, which leaves the estimates within
    ``sqrt(2 * 6e-7) ~ 1.1e-3`` standard errors of it: 2e-3 SE against glmmTMB.  glmer
    stops earlier (its log-likelihood is 0.009 below glmmTMB's), so it is held to 0.05 SE."""
    import json
    from pathlib import Path

    bench = _bench_scale()
    df = bench.simulate("crossed", 10_000)
    model = MonteCarloGLMM.from_formula(bench.MODELS["crossed"]["formula"], data=df,
                                        family=sm.families.Binomial())
    assert len(model.block_system().schur) == 1
    res = model.fit(method="laplace")
    ref = json.loads((Path(__file__).parent / "results" / "crossed_scale_r.json").read_text())
    fits = {f["engine"]: f["r"] for f in ref["fits"] if f["n"] == 10_000}
    params, bse = np.asarray(res.params, dtype=float), np.asarray(res.bse, dtype=float)
    for engine, tol in (("glmmTMB", 2e-3), ("glmer", 0.05)):
        r = fits[engine]
        theirs = np.array([r["fixef"]["(Intercept)"], r["fixef"]["x1"], r["varcomp"]["g"],
                           r["varcomp"]["h"]])
        z = np.abs(params - theirs) / bse
        assert np.all(z < tol), (engine, z)
    assert abs(res.llf - fits["glmmTMB"]["llf"]) < 1e-4
