"""Threads and Dask: the same ``random_state`` gives the same fit, bit for bit.

The Dask tests start a real ``dask.distributed.LocalCluster`` with two worker processes; they
are skipped when Dask is not installed (``pip install ".[test,distributed]"`` installs it).
"""

import os
import pickle
import signal
import sys
import warnings

import numpy as np
import pytest

from glmm_sm.mcla.distributed import DaskBackend
from glmm_sm.mcla.engine import MCLAEngine, ThreadBackend, effective_n_jobs

VC = {"F": "0 + C(Female)", "M": "0 + C(Male)"}
THETA = np.array([1.0, 0.3, -1.9, 1.0, 1.4, 1.2])
# Chunks of 1024 draws so that a default fit (m about 4000-7000) has several partitions and
# both workers get some.
FIT = dict(random_state=11, disp=False, chunk_size=1024)


@pytest.fixture(scope="module")
def model(salamander_model):
    return salamander_model


@pytest.fixture(scope="module")
def reference(model):
    return model.fit(n_jobs=1, **FIT)


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=50)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _same_fit(res, ref):
    np.testing.assert_allclose(res.params, ref.params, rtol=1e-12, atol=0)
    np.testing.assert_allclose(res.bse, ref.bse, rtol=1e-12, atol=0)
    np.testing.assert_allclose(res.mcse(), ref.mcse(), rtol=1e-12, atol=0)
    assert res.llf_mc == pytest.approx(ref.llf_mc, rel=1e-12, abs=0)
    assert [r["m"] for r in res.fit_log.rounds] == [r["m"] for r in ref.fit_log.rounds]


def test_n_jobs_default_is_all_cores():
    assert effective_n_jobs(None) == effective_n_jobs(-1) == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match="n_jobs must be at least 1"):
        effective_n_jobs(0)
    with pytest.raises(TypeError, match="n_jobs must be an integer"):
        effective_n_jobs(1.5)


@pytest.mark.parametrize("n_jobs", [2, 3, None])
def test_threads_give_the_same_fit_bit_for_bit(model, reference, n_jobs):
    res = model.fit(n_jobs=n_jobs, **FIT)
    assert np.array_equal(res.params, reference.params)
    assert np.array_equal(res.cov_params(), reference.cov_params())
    assert np.array_equal(res.mcse_cov, reference.mcse_cov)


@pytest.mark.parametrize("build", ["salamander_binomial", "radish2"])
def test_repeated_threaded_evaluations_give_the_same_bits(build):
    """Evaluating one point again, on one thread or two (whose work arrays lie at other
    addresses), gives the same bits (a kernel sum the compiler may regroup by alignment
    would not)."""
    import models

    mod = getattr(models, build)()
    params, _, _ = mod._laplace_estimate()
    mod.sample_draws(10000, random_state=3, n_jobs=2)
    eng = mod.engine
    seen = set()
    for r in range(12):
        eng.n_jobs = 1 + r % 2
        eng.backend = ThreadBackend(eng.n_jobs)
        eng.__dict__.pop("_last", None)
        ev = eng.evaluate(params)
        seen.add(np.concatenate([[ev.value], ev.gradient, ev.hessian.ravel()]).tobytes())
    assert len(seen) == 1


def test_dask_fit_equals_single_process_fit(model, reference, client):
    res = model.fit(client=client, **FIT)
    _same_fit(res, reference)
    # Nothing in the results refers to the cluster: they pickle.
    back = pickle.loads(pickle.dumps(res))
    np.testing.assert_array_equal(back.params, res.params)


def test_dask_fit_survives_a_killed_worker(model, reference, client, monkeypatch):
    """SIGKILL a worker process in the middle of the first round; its draws are regenerated."""
    calls = {"n": 0, "killed": None}
    original = DaskBackend.run

    def run(self, engine, params, derivs):
        calls["n"] += 1
        if calls["n"] == 3:
            pids = client.run(os.getpid)
            addr = sorted(self._home.values())[0]
            os.kill(pids[addr], signal.SIGKILL)
            calls["killed"] = addr
        return original(self, engine, params, derivs)

    monkeypatch.setattr(DaskBackend, "run", run)
    res = model.fit(client=client, **FIT)
    assert calls["killed"] is not None and calls["n"] > 3
    _same_fit(res, reference)
    client.wait_for_workers(2, timeout=60)


def _engine(model, m, client):
    from glmm_sm.core.random import as_seed_sequence
    from glmm_sm.mcla.draws import DrawSet

    smp = model.make_sampler(THETA)
    draws = DrawSet.from_sampler(smp, m, as_seed_sequence(5), materialize=client is None)
    return MCLAEngine(draws, client=client)


def test_dask_evaluation_is_bit_identical_and_bytes_do_not_grow_with_m(model, client):
    sizes = {}
    for m in (2**16, 2**18):
        local = _engine(model, m, None).evaluate(THETA)
        eng = _engine(model, m, client)
        for _ in range(2):  # the second evaluation uses the draws kept on the workers
            ev = eng.evaluate(THETA)
            assert ev.value == local.value
            assert np.array_equal(ev.gradient, local.gradient)
            assert np.array_equal(ev.hessian, local.hessian)
            assert np.array_equal(ev.score_var, local.score_var)
        kept = client.run(_cached, eng.backend.token)
        assert sorted(i for ids in kept.values() for i in ids) == list(range(len(eng.parts)))
        sizes[m] = eng.backend.last_bytes
    assert sizes[2**16] == sizes[2**18]
    assert sizes[2**16]["received"] < 100_000 and sizes[2**16]["sent"] < 2_000


def _cached(token):
    from glmm_sm.mcla.distributed import _worker_cached_partitions

    return _worker_cached_partitions(token)


def test_client_errors(model, monkeypatch):
    with pytest.raises(TypeError, match="client must be a dask.distributed.Client"):
        model.fit(client="tcp://127.0.0.1:8786", disp=False)
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r'pip install "glmm_sm\[distributed\]"'):
        model.fit(client=object(), disp=False)


def test_client_needs_draws_from_a_sampler(model, client):
    rng = np.random.default_rng(0)
    q = model.design.q
    u = rng.standard_normal((50, q))
    draws = model.set_draws(u, -0.5 * (u**2).sum(axis=1) - 0.5 * q * np.log(2 * np.pi))
    with pytest.raises(ValueError, match="set_draws"):
        MCLAEngine(draws, client=client)


def test_a_client_closed_mid_fit_is_a_clear_error(model):
    """Closing the client during the fit (here from the callback after round 0) gave
    ``AttributeError: 'NoneType' object has no attribute 'scatter'``; a closed client given
    to fit() the same."""
    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                           dashboard_address=None, silence_logs=50)
    c = distributed.Client(cluster)
    try:
        with pytest.raises(RuntimeError, match="client: the Dask client was closed during"):
            model.fit(client=c, callback=lambda info: c.close(), sampler="laplace", **FIT)
        with pytest.raises(RuntimeError, match="client: the Dask client was closed before"):
            model.fit(client=c, sampler="laplace", **FIT)
    finally:
        c.close()
        cluster.close()
