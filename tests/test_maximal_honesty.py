"""The MCSE of the maximal crossed model is a claim: many seeds against an exact answer
(issue 24).

A simulated 30 subjects x 4 items design, every subject seeing every item twice in each of
two conditions (Bernoulli, 480 rows), ``y ~ cond + (1 + cond | subject) + (1 + cond | item)``,
is fitted by the default Monte Carlo fit: the correlated Rao-Blackwellized crossed engine
(:mod:`glmm_sm.mcla.rb.vector`: the items' eight effects sampled, each subject's 2-vector
integrated by the tensor rule given each draw).  With 30 subjects the block has 68 < 100
effects, so ``rao_blackwell="auto"`` would importance-sample all of them jointly:
``rao_blackwell=True`` asks for the engine under test (and the test checks the fit log says
so).  Its exact MLE comes from nested adaptive Gauss-Hermite quadrature over all eight item
effects jointly and each subject's 2-vector (``tests/aghq_crossed_vector.py``, plain numpy,
no glmm_sm code), computed with a node study by ``tests/results/maximal_aghq_reference.py``
and stored in ``tests/results/maximal_aghq_reference.json``.

* Calibration: for each parameter, the spread of the estimates over the seeds divided by
  the RMS reported MCSE within :func:`calibration.band` (``check_spread``).
* Accuracy: the mean over the seeds is within 3.5 standard errors of the exact MLE, the
  standard error combining the mean's own (spread / sqrt(N)) with the reference's
  quadrature error from the node study (its change from the rules one node coarser), which
  must be below half the former so that the comparison can see a bias.  (With 8
  parameters a correct fit fails with probability about 0.01; the Monte Carlo MLE's bias,
  O(1/m), is far smaller than the mean's standard error.)
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from calibration import check_spread

from glmm_sm import MonteCarloGLMM

MAXIMAL = "y ~ cond + (1 + cond | subject) + (1 + cond | item)"
REFERENCE = Path(__file__).resolve().parent / "results" / "maximal_aghq_reference.json"
N_SEEDS = 30


def design_frame(seed=6, n_subj=30, n_item=4, reps=2):
    """Bernoulli subjects x items x conditions (-1/2, +1/2), ``reps`` rows per cell, with
    correlated intercepts and slopes on both factors (the data seed 6 gives an interior
    Laplace estimate: correlations 0.67 and -0.49, every variance above 0.4)."""
    rng = np.random.default_rng(seed)
    subj = np.repeat(np.arange(n_subj), n_item * 2 * reps)
    item = np.tile(np.repeat(np.arange(n_item), 2 * reps), n_subj)
    cond = np.tile(np.repeat([-0.5, 0.5], reps), n_subj * n_item)
    bs = rng.multivariate_normal([0, 0], [[1.0, 0.3], [0.3, 0.6]], n_subj)
    bi = rng.multivariate_normal([0, 0], [[0.8, -0.2], [-0.2, 1.0]], n_item)
    eta = (-0.2 + 0.6 * cond + bs[subj, 0] + bs[subj, 1] * cond + bi[item, 0]
           + bi[item, 1] * cond)
    y = (rng.random(eta.size) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"y": y, "cond": cond, "subject": subj, "item": item})


@pytest.fixture(scope="module")
def model():
    return MonteCarloGLMM.from_formula(MAXIMAL, data=design_frame(), family="bernoulli")


@pytest.fixture(scope="module")
def reference():
    ref = json.loads(REFERENCE.read_text())
    return {k: np.asarray(ref[k]) if k in ("params", "bse") else ref[k] for k in ref}


def _fit(model, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(random_state=seed, disp=False, n_jobs=1, rao_blackwell=True)


def test_the_fit_uses_the_correlated_rao_blackwellized_engine(model):
    r = _fit(model, 0)
    rb = r.fit_log.rao_blackwell
    assert rb["integrated"] == ["subject"] and rb["dimension"] == 2
    assert rb["largest_block_sampled"] == 8  # the items' intercepts and slopes
    assert r.fit_log.sampler["used"] == "laplace"  # importance sampling, not the tensor rule
    assert r.converged and np.all(np.asarray(r.mcse()) > 0)


def _study(reference):
    """The node study's MLEs, Newton steps from the (3, 7) MLE, in SEs, by rule."""
    return {(st["outer_nodes"], st["inner_nodes"]): np.asarray(st["newton_shift_se"])
            for st in reference["node_study"]}


def _quadrature_error(reference):
    """A conservative estimate of the reference's (4, 10) quadrature error, per parameter
    (natural units): the outer rule's, its difference from the rule with 3 instead of 4
    nodes per item dimension (the change shrinks about 14-fold per node, 2 -> 3 -> 4), plus
    the inner rule's, the change from 10 to 14 nodes per subject dimension."""
    study = _study(reference)
    outer = np.abs(study[(4, 10)] - study[(3, 10)])
    inner = np.abs(study[(3, 14)] - study[(3, 10)])
    return (outer + inner) * reference["bse"]


def test_the_reference_is_converged_in_its_nodes(reference):
    """Node study of the reference (stored by ``tests/results/maximal_aghq_reference.py``):
    the (3, 7) Newton iteration converged, and each added node shrinks the change of the MLE
    geometrically (outer rule 2 -> 3 -> 4, inner 7 -> 10 -> 14 nodes per dimension)."""
    assert list(reference["names"]) == _names()
    assert reference["base_last_step_se"] < 1e-6
    study = _study(reference)
    step = {k: float(np.max(np.abs(v))) for k, v in study.items()}
    assert step[(2, 7)] > 4 * step[(4, 7)]  # outer: 2 -> 3 nodes, then 3 -> 4
    assert step[(3, 10)] > 4 * np.max(np.abs(study[(3, 14)] - study[(3, 10)]))  # inner
    # the inner rule's change from 7 to 10 nodes is the same with 3 or 4 outer nodes
    d3, d4 = study[(3, 10)] - study[(3, 7)], study[(4, 10)] - study[(4, 7)]
    assert np.max(np.abs(d4 - d3)) < 0.1 * np.max(np.abs(d3))


def _names():
    return ["Intercept", "cond", "subject Var(Intercept)", "subject Cov(cond, Intercept)",
            "subject Var(cond)", "item Var(Intercept)", "item Cov(cond, Intercept)",
            "item Var(cond)"]


@pytest.mark.slow
def test_many_seeds_mcse_is_honest_and_the_mean_is_the_exact_mle(model, reference):
    est, mcse = [], []
    for seed in range(N_SEEDS):
        r = _fit(model, seed)
        assert r.converged and list(r.params.index) == _names()
        est.append(r.params.to_numpy())
        mcse.append(r.mcse().to_numpy())
    est, mcse = np.array(est), np.array(mcse)
    check_spread(est, mcse, _names())
    sem = est.std(axis=0, ddof=1) / np.sqrt(N_SEEDS)
    qerr = _quadrature_error(reference)
    # the reference is precise enough for the comparison to bite
    assert np.all(qerr < 0.5 * sem), dict(zip(_names(), (qerr / sem).round(3), strict=True))
    z = (est.mean(axis=0) - reference["params"]) / np.hypot(sem, qerr)
    assert np.all(np.abs(z) < 3.5), dict(zip(_names(), z.round(2), strict=True))
