"""Partitioned data (issue 21, item 4): each worker keeps its partitions, the fit is the
single machine's, bit for bit.

``MonteCarloGLMM.from_formula(formula, data=<dask DataFrame or list of partitions>)`` builds
each partition's design where the partition is (:mod:`glmm_sm.fit.partitioned`); its draws
are that partition's share of the single machine's draw stream and every sum over the data
is per-block sums folded in block order (:mod:`glmm_sm.spec.folds`), so the fit equals
``fit()`` of the concatenated data, bit for bit, in this process and on a Dask cluster,
also when a worker is killed in the middle of it.
"""

import os
import signal
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from glmm_sm.core.random import as_seed_sequence
from glmm_sm.fit.partitioned import PartitionedGLMM, PartitionedResults
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.engine import MCLAEngine
from glmm_sm.mcla.partitioned import PartitionedEngine, Pieces, draw_plans, piece_sampler
from glmm_sm.model import MonteCarloGLMM

N_PARTS = 4
BERNOULLI = "y ~ x1 + x2 + c + (1 | g)"
POISSON = "y ~ x1 + (1 | a) + (1 | b)"
FIT = dict(sampler="laplace", m=2000, random_state=11)


def bernoulli_partition(i, groups=40, per=6):
    """Partition ``i``: its own levels of ``g`` (a block is one level), a categorical
    fixed effect whose levels differ between partitions (coded by their union)."""
    r = np.random.default_rng(1000 + i)
    n = groups * per
    gi = np.repeat(np.arange(groups), per)
    x1, x2 = r.standard_normal(n), r.standard_normal(n)
    c = r.choice(["lo", "mid", "hi"] if i % 2 else ["lo", "mid", "hi", "top"], n)
    eta = -0.4 + 0.8 * x1 - 0.5 * x2 + 0.3 * (c == "hi") + r.normal(0, 1.1, groups)[gi]
    y = (r.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "c": c,
                         "g": [f"p{i}g{k:03d}" for k in gi]})


def poisson_partition(i, sites=6, a_per=4, b_per=3, per=4):
    """Partition ``i``: ``sites`` sites, each with crossed factors ``a`` and ``b`` (every
    level of a site's ``a`` meets every level of its ``b``): a block is a site."""
    r = np.random.default_rng(2000 + i)
    rows = []
    for s in range(sites):
        ua, ub = r.normal(0, 0.5, a_per), r.normal(0, 0.4, b_per)
        for ia in range(a_per):
            for ib in range(b_per):
                x1 = r.standard_normal(per)
                mu = np.exp(0.5 + 0.3 * x1 + ua[ia] + ub[ib])
                for k in range(per):
                    rows.append((r.poisson(mu[k]), x1[k], f"p{i}s{s}a{ia}", f"p{i}s{s}b{ib}"))
    return pd.DataFrame(rows, columns=["y", "x1", "a", "b"])


def _same_fit(res, ref):
    assert isinstance(res, PartitionedResults)
    assert np.array_equal(res.params.values, ref.params.values)
    assert np.array_equal(res.bse.values, ref.bse.values)
    assert np.array_equal(res.mcse.values, ref.mcse())
    assert res.llf_mc == ref.llf_mc
    assert list(res.params.index) == list(ref.params.index)
    assert [r["m"] for r in res.fit_log.rounds] == [r["m"] for r in ref.fit_log.rounds]
    assert np.array_equal(res.laplace_params, ref.fit_log.laplace["params"])


@pytest.fixture(scope="module")
def bernoulli_parts():
    return [bernoulli_partition(i) for i in range(N_PARTS)]


@pytest.fixture(scope="module")
def bernoulli_local(bernoulli_parts):
    full = pd.concat(bernoulli_parts, ignore_index=True)
    mod = MonteCarloGLMM.from_formula(BERNOULLI, data=full, family="binomial")
    return mod, mod.fit(disp=False, **FIT)


def test_partitions_in_this_process_give_the_local_fit(bernoulli_parts, bernoulli_local):
    pm = MonteCarloGLMM.from_formula(BERNOULLI, data=bernoulli_parts, family="binomial")
    assert isinstance(pm, PartitionedGLMM)
    res = pm.fit(**FIT)
    _same_fit(res, bernoulli_local[1])
    assert res.converged == bernoulli_local[1].converged


def test_poisson_crossed_partitions_give_the_local_fit():
    parts = [poisson_partition(i) for i in range(3)]
    full = pd.concat(parts, ignore_index=True)
    mod = MonteCarloGLMM.from_formula(POISSON, data=full, family="poisson")
    ref = mod.fit(disp=False, rao_blackwell=False, **FIT)
    assert mod.layout_data().n_blocks == 18  # the sites: a and b crossed within each
    res = MonteCarloGLMM.from_formula(POISSON, data=parts, family="poisson").fit(**FIT)
    _same_fit(res, ref)


@pytest.mark.parametrize("budget", [2**30, 50_000])
def test_evaluations_equal_the_single_machine_engine(bernoulli_parts, bernoulli_local, budget):
    """At a point away from the estimate, stored (resident) and regenerated draws: the
    pieces' per-block sums give the single machine's value and derivatives, bit for bit."""
    mod = bernoulli_local[0]
    theta = np.array([-0.3, 0.1, 0.2, -0.1, 0.7, -0.4, 0.9])
    seed = as_seed_sequence(5)
    draws = DrawSet.from_sampler(mod.make_sampler(theta), 3000, seed, memory_budget=budget)
    local = MCLAEngine(draws, n_jobs=1).evaluate(theta)
    pm = MonteCarloGLMM.from_formula(BERNOULLI, data=bernoulli_parts, family="binomial")
    pieces, metas = pm._prepare(None)
    from glmm_sm.fit.partitioned import _ModelView

    view = _ModelView(metas)
    samplers = pieces.keep(piece_sampler, [None] * len(pieces), params=theta, options={})
    offsets = np.cumsum([0] + [m.n_blocks for m in metas])[:-1]
    eng = PartitionedEngine(pieces, samplers, draw_plans(metas), view.blocks, 3000, seed,
                            memory_budget=budget, block_offsets=offsets)
    assert eng.spec.resident == draws.resident == (budget == 2**30)
    ev = eng.evaluate(theta)
    assert ev.value == local.value
    for f in ("gradient", "hessian", "score_var", "ess"):
        assert np.array_equal(getattr(ev, f), getattr(local, f)), f


def test_empty_partitions_are_left_out(bernoulli_parts, bernoulli_local):
    parts = [bernoulli_parts[0].iloc[:0], *bernoulli_parts[:2], bernoulli_parts[2].iloc[:0],
             *bernoulli_parts[2:]]
    res = MonteCarloGLMM.from_formula(BERNOULLI, data=parts, family="binomial").fit(**FIT)
    _same_fit(res, bernoulli_local[1])


def test_a_level_in_two_partitions_is_refused(bernoulli_parts):
    parts = [p.copy() for p in bernoulli_parts[:2]]
    parts[1].loc[parts[1].index[:3], "g"] = parts[0]["g"].iloc[0]
    pm = MonteCarloGLMM.from_formula(BERNOULLI, data=parts, family="binomial")
    with pytest.raises(ValueError, match=r"partitions 0 and 1.*shuffle\(on='g'\)"):
        pm.fit(**FIT)


def test_bad_partitioned_arguments(bernoulli_parts):
    with pytest.raises(ValueError, match="weights: with partitioned data give the name"):
        MonteCarloGLMM.from_formula(BERNOULLI, data=bernoulli_parts, family="binomial",
                                    weights=np.ones(10))
    pm = MonteCarloGLMM.from_formula(BERNOULLI, data=bernoulli_parts, family="binomial")
    with pytest.raises(ValueError, match="sampler='laplace'"):
        pm.fit(sampler="quadrature")


# ---------------------------------------------------------------------- Dask


def _cluster(processes):
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("dask.dataframe")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                           processes=processes, dashboard_address=None,
                                           silence_logs=50)
    return cluster, distributed.Client(cluster)


def _ddf(make):
    import dask.dataframe as dd

    return dd.from_map(make, list(range(N_PARTS)))


def _piece_sizes(pieces):
    """Rows of each piece, computed where it is."""
    return pieces.gather(lambda p: p.data.X.shape[0])


def test_dask_fit_on_two_workers_equals_the_local_fit(bernoulli_local, monkeypatch):
    from glmm_sm.spec import folds

    # Chunks of 16 blocks: every partition (40 blocks) shares chunks with its neighbours,
    # and the fit is still the local one (in-process workers see the same FOLD_CHUNK).
    monkeypatch.setattr(folds, "FOLD_CHUNK", 16)
    bernoulli_local = (bernoulli_local[0], bernoulli_local[0].fit(disp=False, **FIT))
    cluster, client = _cluster(processes=False)
    try:
        ddf = _ddf(bernoulli_partition)
        pm = MonteCarloGLMM.from_formula(BERNOULLI, data=ddf, family="binomial")
        res = pm.fit(client=client, **FIT)
        _same_fit(res, bernoulli_local[1])
        # each worker holds partitions, their rows never came here: the model keeps futures
        # and metadata (levels, per-block counts and X_b'X_b), no array of the rows
        homes = client.who_has(pm.pieces.items)
        assert len({w for ws in homes.values() for w in ws}) == 2
        n = int(bernoulli_local[0].nobs)
        rows = _piece_sizes(pm.pieces)
        assert sum(rows) == n
        assert all(type(f).__name__ == "Future" for f in pm.pieces.items)
        for meta, r in zip(pm.metas, rows, strict=True):
            assert meta.n_blocks < r
            assert all(v.shape[0] <= meta.n_blocks for v in vars(meta).values()
                       if isinstance(v, np.ndarray))
        assert res.nobs == n
    finally:
        client.close()
        cluster.close()


def test_dask_partitioned_fit_survives_a_killed_worker(bernoulli_local):
    """SIGKILL the worker process that holds the first partition in the middle of the first
    round: Dask rebuilds its partitions, samplers and draws from their lineage elsewhere,
    with the same numbers."""
    cluster, client = _cluster(processes=True)
    calls = {"n": 0, "killed": None}
    original = PartitionedEngine.partial_sums

    def partial_sums(self, params, derivs=True):
        calls["n"] += 1
        if calls["n"] == 3:
            home = sorted(client.who_has([self.pieces.items[0]]).values())[0][0]
            pids = client.run(os.getpid)
            os.kill(pids[home], signal.SIGKILL)
            calls["killed"] = home
        return original(self, params, derivs)

    try:
        PartitionedEngine.partial_sums = partial_sums
        pm = MonteCarloGLMM.from_formula(BERNOULLI, data=_ddf(bernoulli_partition),
                                         family="binomial")
        res = pm.fit(client=client, **FIT)
        assert calls["killed"] is not None and calls["n"] > 3
        _same_fit(res, bernoulli_local[1])
    finally:
        PartitionedEngine.partial_sums = original
        client.close()
        cluster.close()


def test_pieces_map_in_partition_order():
    got = Pieces([1, 2, 3]).gather(lambda p, a, b=0: p * 10 + a + b, [4, 5, 6], b=100)
    assert got == [114, 125, 136]


@pytest.mark.parametrize("chunk", [1, 3, 16, 1024])
def test_folds_of_pieces_equal_the_fold_of_the_whole(monkeypatch, chunk):
    """Any split of the blocks into pieces, chunk boundaries inside pieces or not, folds to
    the bits of the whole (and differently from numpy's pairwise sum, which a piece could
    not reproduce)."""
    from glmm_sm.spec import folds

    monkeypatch.setattr(folds, "FOLD_CHUNK", chunk)
    rng = np.random.default_rng(3)
    c = rng.standard_normal((101, 2, 3)) * 10.0 ** rng.integers(-8, 8, (101, 1, 1))
    whole = folds.fold(c)
    for cuts in ([0, 101], [0, 1, 2, 50, 101], [0, 16, 32, 33, 101], [0, 40, 80, 101]):
        parts = [folds.partial_fold(c[a:b], a, 101)
                 for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        assert np.array_equal(folds.merge_folds(parts, 101), whole)
    assert np.allclose(whole, c.sum(axis=0))
