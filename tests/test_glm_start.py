"""The GLM start's damped Newton (:func:`glmm_sm.laplace.step.glm_newton`) stops at the
precision the log-likelihood's rounding allows.  On a crossed design of 10^5 Bernoulli rows
(one block) the value is about -6.6e4 and carries rounding of ~1e-11; the old loop never met
the Newton decrement's absolute bound (1e-12) there and ran all 50 iterations, each halving its
step ~27 times: 1,371 calls of the summed terms, 12 of the Laplace fit's 19 s of CPU."""
import numpy as np
import pandas as pd
import statsmodels.api as sm

import glmm_sm.laplace.step as step
from glmm_sm import MonteCarloGLMM


def test_the_glm_start_stops_at_rounding_on_a_large_crossed_design(monkeypatch):
    rng = np.random.default_rng(2026)
    n = 100_000
    g, h, x = rng.integers(0, n // 10, n), rng.integers(0, 20, n), rng.normal(size=n)
    eta = (-0.2 + 0.6 * x + rng.normal(0, 0.8**0.5, n // 10)[g]
           + rng.normal(0, 0.3**0.5, 20)[h])
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    data = pd.DataFrame({"y": y, "x1": x, "g": g, "h": h})
    model = MonteCarloGLMM.from_formula("y ~ x1 + (1 | g) + (1 | h)", data=data,
                                        family="binomial")
    layout = model.layout_data()
    assert layout.n_blocks == 1  # the premise: one crossed block of all rows
    calls = []
    newton = step.glm_newton

    def counted(terms, T, maxiter=50):
        return newton(lambda beta: (calls.append(1), terms(beta))[1], T, maxiter)

    monkeypatch.setattr(step, "glm_newton", counted)
    beta = step.glm_start(layout)
    ref = sm.GLM(y, sm.add_constant(x), family=sm.families.Binomial()).fit(tol=1e-14)
    # a start for the Laplace optimizer: statsmodels' IRLS to 1e-4 SE (both the old loop
    # and this one are 5e-6 SE from it: the two sums' rounding)
    assert np.max(np.abs(beta - ref.params) / ref.bse) < 1e-4
    assert len(calls) < 60, len(calls)
