"""The conditional covariance of every random effect after a Rao-Blackwellized fit
(``glmm_sm.mcla.rb.moments``) against the plain importance-sampling estimate from many joint
draws, at the same parameters (moved draws included), and through the results API."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from models import crossed

from glmm_sm import MonteCarloGLMM
from glmm_sm.core.random import as_seed_sequence
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.rb.engine import RBEngine
from glmm_sm.mcla.rb.moments import rb_effect_cov
from glmm_sm.mcla.rb.split import RBSampler, RBStructure


def _small():
    rng = np.random.default_rng(11)
    ns, ni = 24, 4
    subj, item = np.repeat(np.arange(ns), ni), np.tile(np.arange(ni), ns)
    x = rng.normal(size=subj.size)
    eta = 0.2 + 0.5 * x + rng.normal(0, 1.2, ns)[subj] + rng.normal(0, 0.6, ni)[item]
    d = pd.DataFrame({"x": x, "subj": subj, "item": item,
                      "y": (rng.random(subj.size) < 1 / (1 + np.exp(-eta))).astype(int)})
    return MonteCarloGLMM.from_formula("y ~ x + (1 | subj) + (1 | item)", data=d,
                                       family="bernoulli")


@pytest.mark.slow
def test_rao_blackwellized_covariance_matches_joint_draws():
    mod = _small()
    params, _, mode = mod._laplace_estimate()
    theta = params.copy()
    theta[0] += 0.05  # off the sampler's centre: the draws and nodes move with beta
    mod.sample_draws(200_000, random_state=3, params=params, n_jobs=2)
    plain = mod.engine
    system = mod.block_system()
    st = RBStructure(system.data)
    assert st.split[0] >= 0
    rb = RBEngine(DrawSet.from_sampler(RBSampler(system, params, mode, st), 4000,
                                       as_seed_sequence(4)), n_jobs=2)
    cov_rb = rb_effect_cov(rb, theta, max_elems=5000)[0]  # several chunks
    s0, s1, s2, q = 0.0, 0.0, 0.0, 0.0
    for U, _, w, sc in plain.weighted_draws(theta):
        w, sc = w[0], sc[0]
        s0, q = s0 * sc + w.sum(), q * sc * sc + np.sum(w * w)
        s1, s2 = s1 * sc + U @ w, s2 * sc + (U * w) @ U.T
    mean = s1 / s0
    cov_pl = s2 / s0 - np.outer(mean, mean)
    ess_pl = s0 * s0 / q
    ess_rb = float(rb.evaluate(theta).ess[0])
    sd = np.sqrt(np.diag(cov_pl))
    # Monte Carlo SE of each element of a covariance estimated from ESS effective draws:
    # about sd_i sd_j sqrt((1 + rho^2) / ESS) <= sd_i sd_j sqrt(2 / ESS).
    se = np.outer(sd, sd) * (np.sqrt(2 / ess_pl) + np.sqrt(2 / ess_rb))
    assert ess_pl > 5000 and ess_rb > 2000
    assert np.max(np.abs(cov_rb - cov_pl) / se) < 5.0
    # The integrated levels are correlated with each other through the sampled effects.
    n_a = int(st.is_a.sum())
    off = cov_rb[:n_a, :n_a] - np.diag(np.diag(cov_rb[:n_a, :n_a]))
    assert np.abs(off).max() > 0


def test_results_api_after_a_rao_blackwellized_fit():
    res = crossed().fit(random_state=0, disp=False, n_jobs=2)
    assert res.fit_log.rao_blackwell is not None
    C = res.random_effects_cov
    sd = np.concatenate([res.random_effects(n)["SD"].to_numpy() for n in ("subj", "item")])
    np.testing.assert_allclose(C.diagonal(), sd**2, rtol=1e-10)
    assert np.all(np.linalg.eigvalsh(C.toarray()) > -1e-12)
    pred = res.get_prediction(conditional=True).summary_frame()
    assert np.all(np.isfinite(pred["mean_se"])) and np.all(pred["mean_se"] > 0)
