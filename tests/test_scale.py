"""Cost by design: requests no fit can afford are refused up front, and the set-up steps
are linear in the rows.

* ``fit(m=10**12)`` used to grow to 8 GB building its chunk ranges before anything said no;
  it is now refused at once, with the largest ``m`` the budgets allow
  (:func:`glmm_sm.fit.options.check_draw_budget`).
* The Rao-Blackwell split search scanned every row once per block (blocks x rows: minutes at
  50,000 groups); it is one pass over the rows, and gives the split a brute-force search
  gives.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

import glmm_sm
from glmm_sm import MonteCarloGLMM
from glmm_sm.fit.options import FitOptions, check_draw_budget
from glmm_sm.mcla.rb.split import choose_split


@pytest.fixture(scope="module")
def salamander():
    df = glmm_sm.datasets.load("salamander")
    return MonteCarloGLMM.from_formula("Mate ~ 0 + Cross + (1 | Female) + (1 | Male)",
                                       data=df, family=sm.families.Binomial())


@pytest.mark.parametrize("name", ["m", "m_start"])
def test_a_number_of_draws_beyond_the_budgets_is_refused_at_once(salamander, name):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=rf"{name}=1,000,000,000,000 cannot fit the fit's "
                                         r"budgets: one evaluation .* at least 360,000 s .*"
                                         rf"at most {name}=1,666,666,666 fits it; .* at most "
                                         rf"{name}=17,179,869,184"):
        salamander.fit(**{name: 10**12}, random_state=0, disp=False)
    assert time.perf_counter() - t0 < 5.0  # before any draw (it used to run out of memory)


def test_the_budget_check_follows_the_budgets():
    check_draw_budget(FitOptions(m=4000), 360)  # an ordinary fit passes
    check_draw_budget(FitOptions(m=10**9, time_budget=None,
                                 memory_budget=2**40), 360)  # no time limit, a big memory
    with pytest.raises(ValueError, match="time_budget=1 s: at most m=2,777,777 fits it"):
        check_draw_budget(FitOptions(m=3_000_000, time_budget=1.0), 360)
    with pytest.raises(ValueError, match="memory_budget=640: at most m=10,240"):
        check_draw_budget(FitOptions(m=20_000, memory_budget=640, time_budget=None), 360)


def _brute_split(data):
    """The split by the definition: per block, among the components of which every
    observation loads on at most one column, the one with the most columns."""
    Z = data.Z.tocsr()
    out = np.full(data.n_blocks, -1)
    for b in range(data.n_blocks):
        ok = []
        for t in range(data.k_vc):
            if data.qbt[b, t] == 0:
                continue
            most = max(int(np.sum(data.ident[Z.indices[Z.indptr[i]:Z.indptr[i + 1]]] == t))
                       for i in range(data.obs_ptr[b], data.obs_ptr[b + 1]))
            if most <= 1:
                ok.append(t)
        if ok:
            out[b] = max(ok, key=lambda t: (data.qbt[b, t], -t))
    return out


@pytest.mark.parametrize("formula", ["y ~ x + (1 | g) + (1 | h)",
                                     "y ~ x + (1 | g) + (1 | g:k)",
                                     "y ~ x + (1 | g) + (0 + x | g) + (1 | h)"])
def test_the_split_search_gives_the_split_of_its_definition(formula):
    rng = np.random.default_rng(3)
    n = 600
    d = pd.DataFrame({"g": rng.integers(0, 30, n), "h": rng.integers(0, 4, n),
                      "k": rng.integers(0, 3, n), "x": rng.normal(size=n)})
    d["y"] = rng.integers(0, 2, n)
    mod = MonteCarloGLMM.from_formula(formula, data=d, family="bernoulli")
    data = mod.layout_data(True)
    np.testing.assert_array_equal(choose_split(data), _brute_split(data))


def test_importing_the_package_loads_nothing_heavy():
    """``import glmm_sm`` took 3 s (statsmodels, numba, scipy.stats, pandas); the public
    names now load on first use."""
    import subprocess
    import sys

    code = ("import sys, glmm_sm; heavy = [m for m in ('statsmodels', 'numba', 'pandas', "
            "'scipy') if m in sys.modules]; print(heavy); "
            "from glmm_sm import MonteCarloGLMM, lrtest, datasets; "
            "print(MonteCarloGLMM.__module__, lrtest.__module__, datasets.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["[]", "glmm_sm.model glmm_sm.inference.lrtest glmm_sm.datasets"]
