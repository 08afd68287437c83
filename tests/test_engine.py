"""The MCLA engine: kernels, chunking, threads, reproducibility, blocks and ESS.

Roundoff scales.  ``value`` is compared relative to ``|value|``; ``score_var`` and ``ess``
relative to their own size (sums of non-negative terms: no cancellation).  The gradient
``g = sum_k v_k G_k`` and the Hessian ``sum_k v_k H_k + sum_k v_k (G_k - g)(G_k - g)'`` are
results of cancellation, so their roundoff is relative to the size of what is summed:
entry ``j`` of the gradient against ``sum_k v_k |G_kj|`` and the Hessian against
``max(||H||, ||sum_k v_k (G_k - g)(G_k - g)'||)`` (Frobenius), both computed by the
independent numpy reference in ``mcla_reference.py``.  For salamander these scales are
within a factor ~10 of the results themselves; for radish2 (Poisson counts up to 4685) the
per-draw scores are ~300 while the gradient at the Laplace estimate is ~6, and the two
kernels differ by up to ~2e-10 of ``max |g|`` (~1e-12 of the score scale), which is roundoff
(the numba kernel's ``exp`` has ~1e-15 relative error, log weights are sums of ~7e5).
"""

from __future__ import annotations

import numpy as np
import pytest
from mcla_reference import model_reference
from models import boothhobert, radish2, salamander  # noqa: E402
from scipy.special import logsumexp

import glmm_sm
from glmm_sm import MonteCarloGLMM


@pytest.fixture(scope="module")
def sal(salamander_model):
    model = salamander_model
    params, _, _ = model._laplace_estimate()
    return model, params


def _near(params, k_fe, delta=0.05):
    theta = params.copy()
    theta[:k_fe] += delta * np.linspace(-1.0, 1.0, k_fe)
    theta[k_fe:] *= 1.0 + delta
    return theta


def _assert_close(ev, ref_ev, ref, rtol, what=""):
    """Compare two Evaluations at relative ``rtol`` on the scales of the module docstring."""
    assert abs(ev.value - ref_ev.value) <= rtol * abs(ref_ev.value), what
    assert np.all(np.abs(ev.gradient - ref_ev.gradient) <= rtol * ref["abs_score"]), what
    h_scale = max(np.linalg.norm(ref_ev.hessian), np.linalg.norm(ref["score_cov"]))
    assert np.max(np.abs(ev.hessian - ref_ev.hessian)) <= rtol * h_scale, what
    assert (np.max(np.abs(ev.score_var - ref_ev.score_var))
            <= rtol * max(np.linalg.norm(ref_ev.score_var),
                              np.linalg.norm(ref["abs_score_var"]))), what
    np.testing.assert_allclose(ev.ess, ref_ev.ess, rtol=rtol, atol=0, err_msg=what)
    np.testing.assert_allclose(ev.block_values, ref_ev.block_values, rtol=rtol, atol=0,
                               err_msg=what)


# ---------------------------------------------------------------- kernels

@pytest.mark.parametrize("name", ["salamander", "radish2"])
def test_numba_and_numpy_kernels_agree(name):
    model = salamander() if name == "salamander" else radish2()
    params, _, _ = model._laplace_estimate()
    # salamander: a point near the Laplace estimate; radish2: the estimate itself (its
    # posterior is so concentrated that a 5% shift leaves ESS ~ 2).
    theta = _near(params, model.k_fe) if name == "salamander" else params
    evs = {}
    for kernel in ("numba", "numpy"):
        draws = model.sample_draws(3000, random_state=17, kernel=kernel)
        evs[kernel] = model.evaluate(theta)
    ref = model_reference(model, theta, draws)
    _assert_close(evs["numba"], evs["numpy"], ref, 1e-10, name)
    # Both kernels also agree with the independent numpy reference.
    for kernel, ev in evs.items():
        assert ev.value == pytest.approx(ref["value"], rel=1e-10), kernel
        np.testing.assert_allclose(ev.ess, ref["ess"], rtol=1e-10, err_msg=kernel)
        np.testing.assert_allclose(ev.block_values, ref["block_values"], rtol=1e-10,
                                   err_msg=kernel)
        assert np.all(np.abs(ev.gradient - ref["gradient"]) <= 1e-10 * ref["abs_score"])
        h_scale = max(np.linalg.norm(ref["hessian"]), np.linalg.norm(ref["score_cov"]))
        assert np.max(np.abs(ev.hessian - ref["hessian"])) <= 1e-10 * h_scale, kernel
        assert (np.max(np.abs(ev.score_var - ref["score_var"]))
                <= 1e-10 * max(np.linalg.norm(ref["score_var"]),
                           np.linalg.norm(ref["abs_score_var"]))), kernel


def test_kernels_agree_with_reference_one_joint_block(sal):
    """factorize=False: one block; ESS = 1/sum v_k^2 with v from hand-made log weights."""
    model, params = sal
    theta = _near(params, model.k_fe)
    draws = model.sample_draws(2000, random_state=3, params=params, factorize=False,
                               kernel="numpy")
    ev = model.evaluate(theta)
    assert ev.ess.shape == (1,) and draws.all_draws().U.shape == (120, 2000)
    ref = model_reference(model, theta, draws)
    assert ev.ess[0] == pytest.approx(ref["ess"][0], rel=1e-10)
    assert ev.value == pytest.approx(ref["value"], rel=1e-12)
    model.sample_draws(2000, random_state=3, params=params, factorize=False, kernel="numba")
    ev2 = model.evaluate(theta)
    _assert_close(ev2, ev, ref, 1e-10, "numba vs numpy, one block")


# ---------------------------------------------------------------- chunks and threads

def test_chunk_size_and_n_jobs_do_not_change_results(sal):
    model, params = sal
    theta = _near(params, model.k_fe)
    m = 5000
    base_draws = model.sample_draws(m, random_state=5)
    base = model.evaluate(theta)
    ref = model_reference(model, theta, base_draws)
    for chunk_size in (100, 1000, 4096, m):
        by_jobs = {}
        for n_jobs in (1, 2):
            draws = model.sample_draws(m, random_state=5, chunk_size=chunk_size,
                                       n_jobs=n_jobs)
            assert np.array_equal(draws.all_draws().U, base_draws.all_draws().U)
            by_jobs[n_jobs] = ev = model.evaluate(theta)
            _assert_close(ev, base, ref, 1e-12, f"chunk_size={chunk_size}, n_jobs={n_jobs}")
        # Chunks are combined in a fixed order: the number of threads changes nothing.
        a, b = by_jobs[1], by_jobs[2]
        assert a.value == b.value
        for field in ("gradient", "hessian", "score_var", "ess", "block_values"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), field


# ---------------------------------------------------------------- reproducibility

def test_same_seed_gives_identical_draws_and_values(sal):
    model, params = sal
    d1 = model.sample_draws(1500, random_state=123)
    v1 = model.evaluate(params)
    d2 = model.sample_draws(1500, random_state=123)
    v2 = model.evaluate(params)
    c1, c2 = d1.all_draws(), d2.all_draws()
    assert np.array_equal(c1.U, c2.U)
    assert np.array_equal(c1.logf, c2.logf) and np.array_equal(c1.S, c2.S)
    assert v1.value == v2.value and np.array_equal(v1.hessian, v2.hessian)
    # A SeedSequence with the same entropy is the same random_state.
    d3 = model.sample_draws(1500, random_state=np.random.SeedSequence(123))
    assert np.array_equal(d3.all_draws().U, c1.U)
    d4 = model.sample_draws(1500, random_state=124)
    c4 = d4.all_draws()
    assert not np.array_equal(c4.U, c1.U)
    assert np.all(c4.U != c1.U)  # continuous draws: no coordinate coincides
    assert model.evaluate(params).value != v1.value


def test_stored_and_regenerated_draws_agree(sal):
    model, params = sal
    theta = _near(params, model.k_fe)
    m = 3000  # three generation chunks, the last one partial
    stored = model.sample_draws(m, random_state=9)
    ev_s = model.evaluate(theta)
    regen = model.sample_draws(m, random_state=9, memory_budget=0)
    ev_r = model.evaluate(theta)
    assert stored.stored and not regen.stored
    assert stored.m == regen.m == m
    assert np.array_equal(regen.all_draws().U, stored.all_draws().U)
    ref = model_reference(model, theta, stored)
    _assert_close(ev_r, ev_s, ref, 1e-12, "regenerated vs stored")


# ---------------------------------------------------------------- blocks

def test_salamander_blocks(sal):
    model, _ = sal
    blocks = model.blocks
    assert len(blocks) == 6
    for blk in blocks:
        assert blk.q == 20 and blk.nobs == 60
        np.testing.assert_array_equal(blk.q_per_component, [10, 10])
        # Every observation of the block loads only on the block's columns.
        Z = model.exog_vc[blk.obs]
        assert set(Z.nonzero()[1]) == set(blk.columns)
    np.testing.assert_array_equal(np.sort(np.concatenate([b.obs for b in blocks])),
                                  np.arange(360))
    np.testing.assert_array_equal(np.sort(np.concatenate([b.columns for b in blocks])),
                                  np.arange(120))


def test_bacteria_blocks():
    model = MonteCarloGLMM.from_formula("y2 ~ trt + I(week > 2)", {"ID": "0 + C(ID)"},
                                        glmm_sm.datasets.load("bacteria"), family="bernoulli")
    blocks = model.blocks
    assert len(blocks) == 50
    assert all(b.q == 1 for b in blocks)
    assert sum(b.nobs for b in blocks) == 220


def test_factorize_false_is_one_block(sal):
    joint = salamander(factorize=False)
    assert len(joint.blocks) == 1
    assert joint.blocks[0].q == 120 and joint.blocks[0].nobs == 360
    model, params = sal
    model.sample_draws(200, random_state=1, params=params, factorize=False)
    ev = model.evaluate(params)
    assert ev.ess.shape == (1,) and ev.block_values.shape == (1,)


# ---------------------------------------------------------------- ESS

def test_ess_laplace_sampler_vs_glmm_sampler(sal):
    """Per-block Laplace sampler: every block keeps ESS >= 1000 of 10^4 at the Laplace MLE.

    glmm's estimator (one joint block, glmm's three-part mixture) needs one weight for all
    120 effects and has a much smaller ESS (glmm itself: 1.93 of 10^4, MCLA_SPEC 8.2).
    """
    model, params = sal
    m = 10_000
    model.sample_draws(m, random_state=2)  # sampler built at the Laplace estimate
    ev = model.evaluate(params)
    assert ev.ess.shape == (6,)
    assert ev.ess.min() >= 1000
    # Built at the same (factorized) Laplace estimate; a joint Laplace refit agrees to ~5e-6.
    model.sample_draws(m, random_state=2, params=params, sampler="glmm", factorize=False)
    ev_glmm = model.evaluate(params)
    assert ev_glmm.ess.shape == (1,)
    assert ev_glmm.ess[0] < ev.ess.min()


# ---------------------------------------------------------------- exact likelihood

def _exact_boothhobert_loglik(beta, nu, nodes=80):
    """Gauss-Hermite log-likelihood of y ~ 0 + x1 + (1|z1), Bernoulli (10 clusters of 15)."""
    df = glmm_sm.datasets.load("BoothHobert")
    x, w = np.polynomial.hermite.hermgauss(nodes)
    u = np.sqrt(2.0 * nu) * x
    total = 0.0
    for level in df["z1"].cat.categories:
        rows = df["z1"] == level
        eta = beta * df.loc[rows, "x1"].to_numpy()[:, None] + u[None, :]
        lf = (df.loc[rows, "y"].to_numpy()[:, None] * eta - np.logaddexp(0.0, eta)).sum(axis=0)
        total += logsumexp(lf, b=w / np.sqrt(np.pi))
    return total


def test_boothhobert_mc_loglik_matches_exact_at_mle():
    """l_m at the exact MLE agrees with the exact log-likelihood within 4 MCSE.

    BoothHobert's ten blocks are one-dimensional integrals; MCLA_SPEC 8.1 gives the exact
    MLE (6.132163, 1.766462) and log-likelihood -44.056256 (reproduced below by 80-node
    Gauss-Hermite quadrature).

    MCSE of l_m (delta method).  Block b's value is ``l_b = log(W_b)``,
    ``W_b = (1/m) sum_k w_k``, ``w_k = e^{b_k}`` i.i.d. with mean ``mu`` (the block's
    likelihood) under the sampler.  ``Var(log W_b) ~ Var(W_b) / mu^2 = Var(w) / (m mu^2)``.
    With sample moments, ``Var(w) / mu^2 ~ (mean(w^2) - mean(w)^2) / mean(w)^2
    = m sum w_k^2 / (sum w_k)^2 - 1 = m / ESS_b - 1``, so ``Var(l_b) ~ 1/ESS_b - 1/m``.
    Blocks are drawn independently, so ``MCSE(l_m) = sqrt(sum_b (1/ESS_b - 1/m))``.  The
    bias of the log, ``-Var/2 = O(1/m)``, is far below the MCSE; 4 MCSE leaves a normal tail
    probability of 6e-5.
    """
    beta, nu, exact = 6.132163, 1.766462, -44.056256
    assert _exact_boothhobert_loglik(beta, nu) == pytest.approx(exact, abs=1e-6)
    model = boothhobert()
    assert len(model.blocks) == 10 and all(b.q == 1 for b in model.blocks)
    m = 100_000
    model.sample_draws(m, random_state=20240601)
    ev = model.evaluate(np.array([beta, nu]))
    mcse = np.sqrt(np.sum(1.0 / ev.ess - 1.0 / m))
    assert 0 < mcse < 0.01
    assert abs(ev.value - exact) <= 4.0 * mcse, (ev.value, exact, mcse)


def test_evaluation_cache_gives_the_same_bits_as_no_cache():
    """score(p) then hessian(p) (and loglike) evaluate once; the result is bit for bit what a
    fresh evaluation gives, with or without derivatives."""
    model = salamander()
    params, _, _ = model._laplace_estimate()
    theta = _near(params, model.k_fe)
    model.sample_draws(2000, random_state=3)
    eng = model.engine
    g = model.score(theta)
    assert model.hessian(theta) is eng.evaluate(theta).hessian  # the cached evaluation
    value = model.loglike(theta)
    eng._last = None
    fresh = eng.evaluate(theta)
    np.testing.assert_array_equal(fresh.gradient, g)
    assert fresh.value == value
    eng._last = None
    assert eng.evaluate(theta, derivs=False).value == value
