"""Independent reference MLE for the many-seed honesty test of tests/test_rao_blackwell.py.

The model is ``tests/models.py``'s ``crossed()`` (100 subjects x 8 items, Bernoulli,
``y ~ x + (1 | subj) + (1 | item)``).  The package Rao-Blackwellizes it (subjects by
12-node quadrature that moves with each item draw, items by its importance sampler), so a
reference made by the package at large m would share any bias of that estimator.  This one
is computed without glmm_sm (``tests/crossed_quadrature.py``, numpy/scipy only):

* each subject integral by a 20-node Gauss-Hermite rule placed once per subject (node study
  below: 15 and 30 nodes);
* the 8-dimensional item integral by randomized quasi-Monte Carlo importance sampling
  (2^10 scrambled Sobol points through a multivariate t_10 at the item mode);
* the MLE maximized on each of ``R = 8`` independent scrambles; the reference is their
  mean, its error ``SD / sqrt(R)`` (stored as ``mcse``), to which the quadrature error
  (the largest change of the MLE from 20 to 30 nodes, stored as ``quadrature_error``) is
  added in quadrature.

Run from the repository root (23 minutes on the shared 2-core machine, under load)::

    OPENBLAS_NUM_THREADS=1 python tests/results/crossed_reference.py

It writes ``crossed_reference.json`` beside this file.
"""

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402  (the data generator only)
from crossed_quadrature import (  # noqa: E402
    CrossedData,
    CrossedLikelihood,
    TProposal,
    loglike,
    mle,
)

N_NODES, STUDY_NODES = 20, (15, 30)
LOG2_POINTS, N_SCRAMBLES = 10, 8
NAMES = ["Intercept", "x", "subj", "item"]


def setup(data, theta, n_nodes, v0=None):
    """Likelihood with nodes placed at ``theta`` and the item mode there, and the t proposal
    at that mode."""
    lik = CrossedLikelihood(data, n_nodes)
    v = np.zeros(data.n_item) if v0 is None else v0
    for _ in range(2):  # nodes at the item mode, the item mode with those nodes
        lik.place_nodes(theta, v)
        v, H = lik.item_mode(theta, v)
    return lik, TProposal(v, np.linalg.inv(H)), v


def main():
    t0 = time.perf_counter()
    df = models.crossed_data()
    X = np.column_stack([np.ones(len(df)), df["x"].to_numpy()])
    data = CrossedData.from_codes(df["y"], X, df["subj"], df["item"])
    # Pilot: a rough start, one MLE on 2^9 points; then nodes and proposal at that MLE.
    theta = np.array([0.0, 0.0, 1.0, 0.25])
    lik, prop, v = setup(data, theta, N_NODES)
    V, lq = prop.draws(9, 0)
    theta, _, _ = mle(lik, V, lq, theta)
    lik, prop, v = setup(data, theta, N_NODES, v)
    pilot = theta.copy()

    est, grads, values, ess = [], [], [], []
    for r in range(N_SCRAMBLES):
        V, lq = prop.draws(LOG2_POINTS, 1000 + r)
        th, g, _ = mle(lik, V, lq, pilot)
        A, _ = lik.log_integrand(th, V)
        w = np.exp(A - lq - np.max(A - lq))
        est.append(th)
        grads.append(np.max(np.abs(g)))
        values.append(loglike(lik, th, V, lq))
        ess.append(w.sum() ** 2 / (w**2).sum())
        print(f"scramble {r}: {np.round(th, 6)}  |grad| {grads[-1]:.1e}  ESS {ess[-1]:.0f}",
              flush=True)
    est = np.array(est)
    mean = est.mean(axis=0)
    mcse = est.std(axis=0, ddof=1) / np.sqrt(N_SCRAMBLES)

    # Node study on scramble 0: the MLE with 15 and 30 nodes (same points, same placement).
    V, lq = prop.draws(LOG2_POINTS, 1000)
    study = {}
    for k in STUDY_NODES:
        lk, _, _ = setup(data, pilot, k, v)
        lk.place_nodes(pilot, v)
        study[k] = mle(lk, V, lq, est[0])[0]
    quad_err = np.abs(study[max(STUDY_NODES)] - est[0])

    out = {
        "names": NAMES, "params": mean.tolist(), "mcse": mcse.tolist(),
        "quadrature_error": quad_err.tolist(),
        "method": ("independent of glmm_sm (tests/crossed_quadrature.py): subject integrals "
                   f"by {N_NODES}-node Gauss-Hermite placed once per subject, the item "
                   f"integral by RQMC importance sampling (2^{LOG2_POINTS} scrambled Sobol "
                   "points, multivariate t_10 at the item mode); params = mean of the MLEs "
                   f"over {N_SCRAMBLES} independent scrambles, mcse = their SD / "
                   f"sqrt({N_SCRAMBLES}); quadrature_error = |MLE({max(STUDY_NODES)} nodes) - "
                   f"MLE({N_NODES} nodes)| on scramble 0"),
        "scrambles": est.tolist(), "loglike": values, "max_abs_gradient": grads, "ess": ess,
        "points": 2**LOG2_POINTS,
        "node_study": {str(k): v.tolist() for k, v in study.items()} | {
            str(N_NODES): est[0].tolist()},
        "seconds": round(time.perf_counter() - t0, 1),
        "provenance": {"script": "tests/results/crossed_reference.py", "numpy": np.__version__,
                       "scipy": scipy.__version__, "python": platform.python_version(),
                       "date": time.strftime("%Y-%m-%d")},
    }
    path = Path(__file__).with_name("crossed_reference.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("params", "mcse", "quadrature_error", "seconds")},
                     indent=1))


if __name__ == "__main__":
    main()
