"""Per-block draw counts (issue 21 item 3; :mod:`glmm_sm.mcla.block_m`).

Block ``b`` uses the first ``m_b`` of the draw set's draws: ``l_b = log((1/m_b) sum_{k<m_b}
e^{b_k})``, its derivatives the same self-normalized sums over its own draws, and the MCSE
middle the sum of the blocks' terms.  Checked here:

* all ``m_b = m``: the same bits as without per-block counts (and a per-block count
  changes nothing in the other blocks);
* unequal ``m_b``: value, score, Hessian, MCSE middle and ESS equal the independent numpy
  reference (``mcla_reference.block_reference``, from the specification) applied to each
  block's own first ``m_b`` draws, to the roundoff scales of ``test_engine.py``, for both
  kernels; the gradient and Hessian equal finite differences of the value;
* honesty: over many seeds, the seed-to-seed SD of the score at a fixed ``theta`` and of the
  fitted estimates (``per_block_m=True``) match the reported MCSE within the bands of
  ``calibration.py``, on a random intercept with heterogeneous group sizes;
* work: on that design, the draws x rows needed for the same MCSE/SE ratio are several
  times fewer than with one m for every block (the factor is printed).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from calibration import check_spread
from mcla_reference import block_reference

from glmm_sm import MonteCarloGLMM
from glmm_sm.fit.information import information_errors
from glmm_sm.mcla.block_m import allocate_block_m, block_contributions
from glmm_sm.mcla.draws import GEN_SIZE


def hetero(n_groups=60, big=150, small=3, every=6, seed=1, sd=1.0):
    """Bernoulli random intercept: every ``every``-th group has ``big`` rows, the rest
    ``small`` (large groups: peaked posteriors, small ESS; small groups: large ESS)."""
    rng = np.random.default_rng(seed)
    sizes = np.where(np.arange(n_groups) % every == 0, big, small)
    g = np.repeat(np.arange(n_groups), sizes)
    n = len(g)
    x = rng.standard_normal(n)
    eta = -0.3 + 0.5 * x + rng.normal(0.0, sd, n_groups)[g]
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    X = np.column_stack([np.ones(n), x])
    Z = sp.csr_matrix((np.ones(n), (np.arange(n), g)), shape=(n, n_groups))
    return MonteCarloGLMM(y, X, Z, np.zeros(n_groups, dtype=int), family="bernoulli")


@pytest.fixture(scope="module")
def small():
    model = hetero(n_groups=12, big=60, small=3, every=4)
    params, _, _ = model._laplace_estimate()
    return model, params


def _unequal(n_blocks, m):
    """Counts 1024, 2048, m, ... by block (whole generation chunks, or m)."""
    ladder = np.array([GEN_SIZE, 2 * GEN_SIZE, m])
    return ladder[np.arange(n_blocks) % 3].astype(np.int64)


def _reference(model, theta, draws, block_m):
    """``block_reference`` on each block's own first ``m_b`` draws, summed."""
    chunk = draws.all_draws()
    endog = np.asarray(model.endog, dtype=float)
    X = np.asarray(model.exog, dtype=float)
    Z = model.exog_vc.toarray()
    T = len(model.vcp_names)
    smp = draws.sampler
    out = {"value": 0.0, "gradient": 0.0, "hessian": 0.0, "score_var": 0.0, "abs_score": 0.0,
           "score_cov": 0.0, "block_values": [], "ess": []}
    start = 0
    for b, blk in enumerate(model.blocks):
        obs, cols = blk.obs, blk.columns
        mb = int(block_m[b])
        Ub = chunk.U[start : start + len(cols), :mb].T
        Mb = smp.du_dbeta[start : start + len(cols)]
        start += len(cols)
        r = block_reference("bernoulli", endog[obs], np.ones(len(obs)), X[obs],
                            Z[np.ix_(obs, cols)], np.asarray(model.ident)[cols], T, Ub,
                            chunk.logf[b, :mb], theta, offset=np.asarray(model.offset)[obs],
                            M=Mb, beta0=smp.beta0)
        for key in ("value", "gradient", "hessian", "score_var"):
            out[key] = out[key] + r[key]
        Gc = r["G"] - r["gradient"]
        out["abs_score"] = out["abs_score"] + r["v"] @ r["Gabs"]
        out["score_cov"] = out["score_cov"] + (Gc * r["v"][:, None]).T @ Gc
        out["block_values"].append(r["value"])
        out["ess"].append(r["ess"])
    return out


def test_equal_counts_give_the_same_bits_as_one_m(small):
    model, params = small
    m = 3 * GEN_SIZE + 100  # not whole chunks: a count equal to m is allowed
    draws = model.sample_draws(m, random_state=4)
    ev0 = model.evaluate(params)
    model.engine.set_block_m(np.full(draws.data.n_blocks, m, dtype=np.int64))
    ev1 = model.evaluate(params)
    assert ev1.value == ev0.value
    for key in ("gradient", "hessian", "score_var", "ess", "block_values"):
        np.testing.assert_array_equal(getattr(ev1, key), getattr(ev0, key), err_msg=key)
    # one block's count changes that block's terms only
    bm = np.full(draws.data.n_blocks, m, dtype=np.int64)
    bm[1] = GEN_SIZE
    model.engine.set_block_m(bm)
    ev2 = model.evaluate(params)
    keep = np.arange(len(bm)) != 1
    np.testing.assert_array_equal(ev2.block_values[keep], ev0.block_values[keep])
    np.testing.assert_array_equal(ev2.ess[keep], ev0.ess[keep])
    assert ev2.block_values[1] != ev0.block_values[1]
    assert ev2.ess[1] < ev0.ess[1]


@pytest.mark.parametrize("kernel", ["numba", "numpy"])
def test_unequal_counts_equal_the_numpy_reference(small, kernel):
    model, params = small
    m = 3 * GEN_SIZE
    theta = params.copy()
    theta[: model.k_fe] += 0.05  # off the sampler's centre: the draws move with beta
    theta[model.k_fe :] *= 1.05
    draws = model.sample_draws(m, random_state=9, kernel=kernel, chunk_size=700)
    bm = _unequal(draws.data.n_blocks, m)
    model.engine.set_block_m(bm)
    ev = model.evaluate(theta)
    ref = _reference(model, theta, draws, bm)
    rtol = 1e-10
    assert ev.value == pytest.approx(ref["value"], rel=rtol)
    np.testing.assert_allclose(ev.block_values, ref["block_values"], rtol=rtol)
    np.testing.assert_allclose(ev.ess, ref["ess"], rtol=rtol)
    assert np.all(np.abs(ev.gradient - ref["gradient"]) <= rtol * ref["abs_score"])
    h_scale = max(np.linalg.norm(ref["hessian"]), np.linalg.norm(ref["score_cov"]))
    assert np.max(np.abs(ev.hessian - ref["hessian"])) <= rtol * h_scale
    np.testing.assert_allclose(ev.score_var, ref["score_var"], rtol=1e-9)
    # the unequal counts matter: all draws in every block give another value
    ref_all = _reference(model, theta, draws, np.full(len(bm), m))
    assert abs(ref_all["value"] - ref["value"]) > 1e3 * rtol * abs(ref["value"])
    # the draws' log weights beyond a block's count weigh nothing
    lw = np.concatenate(list(model.engine.iter_log_weights(theta)), axis=1)
    for b, mb in enumerate(bm):
        assert np.all(np.isneginf(lw[b, mb:])) and np.all(np.isfinite(lw[b, :mb]))


def test_derivatives_are_those_of_the_value(small):
    """Central differences of ``l_m`` (frozen draws, unequal counts): the gradient to
    O(h^2) and the Hessian from differences of the gradient."""
    model, params = small
    draws = model.sample_draws(3 * GEN_SIZE, random_state=2)
    model.engine.set_block_m(_unequal(draws.data.n_blocks, draws.m))
    ev = model.evaluate(params)
    d = len(params)
    h = 1e-5 * np.maximum(1.0, np.abs(params))
    g_fd = np.empty(d)
    H_fd = np.empty((d, d))
    for j in range(d):
        e = np.zeros(d)
        e[j] = h[j]
        g_fd[j] = (model.evaluate(params + e, derivs=False).value
                   - model.evaluate(params - e, derivs=False).value) / (2 * h[j])
        H_fd[:, j] = (model.evaluate(params + e).gradient
                      - model.evaluate(params - e).gradient) / (2 * h[j])
    # truncation O(h^2 l''') ~ 1e-8 relative; roundoff of the value ~1e-13 * |l| / h
    scale = np.abs(ev.hessian).max()
    np.testing.assert_allclose(ev.gradient, g_fd, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(ev.hessian, H_fd, rtol=0, atol=1e-5 * scale)


def test_score_mcse_is_honest_over_seeds_with_unequal_counts():
    """The seed-to-seed SD of the score at a fixed theta (per-block counts) against the
    root mean square of ``sqrt(diag(score_var))`` (the summed per-block terms)."""
    model = hetero(n_groups=24, big=80, small=3, every=4)
    params, _, _ = model._laplace_estimate()
    theta = params * np.array([1.0, 1.0, 1.2])  # not the sampler's centre
    n = 40
    grads, mcses = [], []
    for seed in range(n):
        draws = model.sample_draws(4 * GEN_SIZE, random_state=100 + seed, params=params)
        model.engine.set_block_m(np.where(np.arange(draws.data.n_blocks) % 4 == 0,
                                          GEN_SIZE, 4 * GEN_SIZE).astype(np.int64))
        ev = model.evaluate(theta)
        grads.append(ev.gradient)
        mcses.append(np.sqrt(np.diag(ev.score_var)))
    check_spread(np.array(grads), np.array(mcses), names=["b0", "b1", "nu"])


@pytest.fixture(scope="module")
def fits():
    """40 fits with per-block counts of a random intercept with heterogeneous groups."""
    model = hetero(n_groups=40, big=120, small=3, every=5, seed=7)
    out = [model.fit(random_state=s, sampler="laplace", per_block_m=True, disp=False,
                     target_ratio=0.05) for s in range(40)]
    return model, out


def test_fitted_mcse_is_honest_over_seeds(fits):
    _, res = fits
    assert all(r.converged for r in res)
    # the counts differed between blocks in the final round of every fit
    assert all(r.block_m is not None and r.block_m.min() < r.block_m.max() for r in res)
    check_spread(np.array([r.params for r in res]), np.array([r.mcse() for r in res]),
                 names=["b0", "b1", "nu"])


def test_round_log_and_summary_show_the_counts(fits):
    _, res = fits
    r = res[0]
    last = r.fit_log.rounds[-1]
    bm = r.block_m
    assert last["draws_total"] == bm.sum() and last["m_block_max"] == bm.max() == r.m
    assert last["m_block_min"] == bm.min()
    assert last["draw_rows"] == float(np.sum(bm * np.diff(r.model.layout_data(True).obs_ptr)))
    assert "per block" in str(r.summary())
    # llf_mcse from each block's own count
    assert r.llf_mcse == pytest.approx(np.sqrt(np.sum(1 / r.ess - 1 / bm)), rel=1e-12)


def test_per_block_counts_need_fewer_draws_x_rows_for_the_same_mcse():
    """At a fixed theta: a pilot of one m gives each block's per-draw contribution; the
    uniform m and the per-block counts for the same target ratio are then each evaluated
    on fresh draws, and the work (draws x rows) compared at equal measured MCSE/SE
    (work scales as 1 / ratio^2)."""
    model = hetero(n_groups=120, big=300, small=4, every=10, seed=3)
    params, _, _ = model._laplace_estimate()
    rows = np.diff(model.layout_data(True).obs_ptr).astype(float)
    target = 0.02  # counts well above the floor of one generation chunk

    def ratio(ev):
        err = information_errors(ev.hessian, ev.score_var)
        se2 = np.diag(err.cov)
        return float(np.sqrt(np.max(np.diag(err.mcse_cov) / se2))), err

    pilot_m = 4 * GEN_SIZE
    model.sample_draws(pilot_m, random_state=1)
    model.engine.keep_block_var = True
    ev = model.evaluate(params)
    _, err = ratio(ev)
    w = block_contributions(ev.block_score_var, err.cov, pilot_m)
    # uniform: sum_b w_b / m = target^2 / 1.2 (the allocation's margin)
    m_uniform = int(np.ceil(1.2 * w.sum() / target**2))
    alloc = allocate_block_m(w, rows, target, m_min=GEN_SIZE, m_max=10**6)
    model.sample_draws(m_uniform, random_state=2)
    r_u, _ = ratio(model.evaluate(params))
    model.sample_draws(alloc.m, random_state=2)
    model.engine.set_block_m(alloc.block_m)
    r_b, _ = ratio(model.evaluate(params))
    work_u = m_uniform * rows.sum()
    work_b = float(np.sum(alloc.block_m * rows))
    factor = (work_u * r_u**2) / (work_b * r_b**2)
    # the optimum without bounds or rounding (Cauchy-Schwarz): sum w sum c / (sum sqrt(w c))^2
    ideal = w.sum() * rows.sum() / np.sum(np.sqrt(w * rows)) ** 2
    print(f"\nuniform m = {m_uniform}: work {work_u:.3g}, ratio {r_u:.4f}; per-block "
          f"{alloc.block_m.min()}-{alloc.block_m.max()}: work {work_b:.3g}, ratio "
          f"{r_b:.4f}; work at equal MCSE reduced {factor:.2f}-fold (unbounded optimum "
          f"{ideal:.2f})")
    # both near the target (MCSE estimates of their own draws)
    assert r_u <= target and r_b <= target
    assert factor >= 2.0


def test_same_seed_same_fit_for_any_number_of_threads():
    model = hetero(n_groups=30, big=100, small=3, every=5, seed=11)
    kw = dict(random_state=5, sampler="laplace", per_block_m=True, disp=False,
              target_ratio=0.05)
    a = model.fit(n_jobs=1, **kw)
    b = model.fit(n_jobs=2, **kw)
    assert a.block_m is not None
    np.testing.assert_array_equal(a.block_m, b.block_m)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.mcse(), b.mcse())
    assert a.llf == b.llf


@pytest.mark.filterwarnings("ignore:Monte Carlo MLE did not converge")
def test_per_block_m_where_it_cannot_apply_is_reported_not_silent():
    model = hetero(n_groups=12, big=40, small=3, every=4)
    with pytest.warns(Warning, match="per_block_m=True is not used: m is fixed"):
        res = model.fit(m=2000, random_state=0, sampler="laplace", per_block_m=True,
                        disp=False, max_rounds=1)
    assert res.block_m is None
    assert any("per_block_m" in w for w in res.fit_log.warnings)


def test_bad_counts_and_options_are_refused(small):
    model, _ = small
    draws = model.sample_draws(2 * GEN_SIZE + 10, random_state=0)
    B = draws.data.n_blocks
    with pytest.raises(ValueError, match=r"block_m\[0\] = 1000: .*multiple of 1024"):
        model.engine.set_block_m(np.full(B, 1000))
    with pytest.raises(ValueError, match=r"block_m\[0\] = 4096"):
        model.engine.set_block_m(np.full(B, 4096))
    with pytest.raises(ValueError, match="one per block"):
        model.engine.set_block_m(np.full(B + 1, GEN_SIZE))
    with pytest.raises(ValueError, match="one per block"):
        model.engine.set_block_m(np.full(B, 1024.0))
    with pytest.raises(TypeError, match="per_block_m must be True or False"):
        model.fit(per_block_m="yes", disp=False)


def test_allocation_follows_the_rule():
    """The Lagrange solution ``m_b = lambda sqrt(w_b / c_b)`` where no bound binds, the
    constraint met, bounds and whole chunks respected, and a block of no weight (w = inf)
    at its upper bound."""
    w = np.array([4.0, 1.0, 0.25, 1e-6, np.inf]) * 10
    c = np.array([100.0, 1.0, 1.0, 1.0, 10.0])
    a = allocate_block_m(w, c, 0.05, m_min=GEN_SIZE, m_max=10**6,
                         upper=np.full(5, 2.0e5))
    bm = a.block_m
    assert np.all(bm % GEN_SIZE == 0) and bm.max() == a.m
    assert bm[3] == GEN_SIZE  # at the floor
    assert bm[4] == a.m and 2.0e5 <= bm[4] < 2.0e5 + GEN_SIZE  # no weight: the most draws
    assert a.work == np.sum(c * bm)
    fin = np.isfinite(w)
    assert np.sum(w[fin] / bm[fin]) <= 0.05**2 / 1.2 * (1 + 1e-9)
    # free blocks 0-2: in proportion to sqrt(w / c) up to the rounding to whole chunks
    ratio = bm[:3] / np.sqrt(w[:3] / c[:3])
    assert ratio.max() / ratio.min() < 1 + GEN_SIZE / bm[:3].min()


def test_growth_cap_wins_over_the_ess_target():
    """A block whose ESS target asks for more than the growth cap gets the cap (one m
    grows at most MAX_M_GROWTH-fold a round, too)."""
    a = allocate_block_m(np.array([1.0, 1.0]), np.array([1.0, 1.0]), 0.1,
                         lower=np.array([5e5, 1.0]), upper=np.array([4e4, 4e4]))
    assert a.block_m[0] == 40960 and a.block_m[1] == GEN_SIZE


def test_weighted_draws_use_each_blocks_own_draws(small):
    """The draws' weights streamed for diagnostics and predictions
    (:func:`~glmm_sm.mcla.engine.weight_chunks`, numpy) give each block's ESS over its own
    draws: the kernel's."""
    from glmm_sm.mcla.engine import weight_chunks

    model, params = small
    draws = model.sample_draws(3 * GEN_SIZE, random_state=6)
    model.engine.set_block_m(_unequal(draws.data.n_blocks, draws.m))
    ev = model.evaluate(params, derivs=False)
    s0 = s0sq = 0.0
    for v, sc in weight_chunks(model.engine, params):
        s0 = sc * s0 + v.sum(axis=1)
        s0sq = sc**2 * s0sq + (v**2).sum(axis=1)
    np.testing.assert_allclose(s0**2 / s0sq, ev.ess, rtol=1e-10)


def test_a_dask_client_gives_the_local_fit_bit_for_bit():
    """The workers get the counts with the round's draw definition (and again when they
    change): the same fit as on local threads."""
    import warnings

    distributed = pytest.importorskip("distributed")
    model = hetero(n_groups=30, big=100, small=3, every=5, seed=11)
    kw = dict(random_state=5, sampler="laplace", per_block_m=True, disp=False,
              target_ratio=0.05)
    local = model.fit(**kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                           dashboard_address=None, silence_logs=50)
    client = distributed.Client(cluster)
    try:
        remote = model.fit(client=client, **kw)
    finally:
        client.close()
        cluster.close()
    assert local.block_m is not None and local.block_m.min() < local.block_m.max()
    np.testing.assert_array_equal(remote.block_m, local.block_m)
    np.testing.assert_array_equal(remote.params, local.params)
    np.testing.assert_array_equal(remote.mcse(), local.mcse())
    assert remote.llf == local.llf
