"""The separation checks' relaxed programs on large data (issue 21, session 14).

:func:`~glmm_sm.fit.separation.separation_direction` and
:func:`~glmm_sm.fit.separation.within_group_separation` first solve their linear program
with the constraints of a subset of the rows (more than ``2 RELAX_ROWS`` rows): a
relaxation, whose maximum bounds the full one and whose infeasibility proves the full
program's.  The answers must be the full programs' answers, on data where the relaxation
decides (no separation) and where it cannot (separation: the full program is solved, as
before).  Each case is compared with the same function with the relaxation switched off.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from glmm_sm.fit import separation as sep

N = 20_000
RELAX = 2_000  # RELAX_ROWS for these tests: N is above 2 RELAX, so the relaxed programs run


def _data(kind, seed=3):
    """Crossed ``g`` (N / 10 levels) and ``h`` (20) like ``benchmarks/bench_scale.py``
    (for ``within``: ``g`` alone, 100 levels, so that the full program is small)."""
    rng = np.random.default_rng(seed)
    n_g = N // 10 if kind != "within" else 100
    g = rng.integers(0, n_g, N)
    h = rng.integers(0, 20, N)
    x1 = rng.normal(size=N)
    X = np.column_stack([np.ones(N), x1])
    if kind == "within":
        Z = sp.csr_matrix((np.ones(N), (np.arange(N), g)), shape=(N, n_g))
    else:
        Z = sp.csr_matrix((np.ones(2 * N), (np.r_[np.arange(N), np.arange(N)],
                                            np.r_[g, n_g + h])), shape=(N, n_g + 20))
    b = rng.normal(size=Z.shape[1])
    if kind == "none":
        eta = 0.5 * x1 + Z @ b
        y = (rng.random(N) < 1 / (1 + np.exp(-eta))).astype(float)
    elif kind == "complete":
        y = (x1 > 0.3).astype(float)
    else:  # within groups: x1 and the group effects together fit every response
        y = (x1 + Z @ b > 0).astype(float)
    return X, Z, y, np.ones(N), np.ones(N)


def _both(monkeypatch, fn):
    """``(relaxed answer, rows of each program it solved, full answer)``."""
    rows = []
    real = sep.linprog

    def counted(c, A_ub=None, **kw):
        rows.append(0 if A_ub is None else A_ub.shape[0])
        return real(c, A_ub=A_ub, **kw)

    with monkeypatch.context() as mp:
        mp.setattr(sep, "RELAX_ROWS", RELAX)
        mp.setattr(sep, "linprog", counted)
        relaxed = fn()
    with monkeypatch.context() as mp:
        mp.setattr(sep, "RELAX_ROWS", 10**12)
        full = fn()
    return relaxed, rows, full


@pytest.mark.parametrize("kind", ["none", "complete", "within"])
def test_the_relaxed_checks_give_the_full_programs_answers(monkeypatch, kind):
    X, Z, y, nt, w = _data(kind)
    d, d_rows, d_full = _both(monkeypatch, lambda: sep.separation_direction(X, y, nt, w, 0))
    found, f_rows, found_full = _both(
        monkeypatch, lambda: sep.within_group_separation(X, Z, y, nt, w, 0))
    if kind == "complete":
        # the relaxation cannot decide: the full program is solved after it
        assert d is not None and np.array_equal(d, d_full)
        assert d[1] > 0 and len(d_rows) == 2 and d_rows[1] > d_rows[0]
    else:
        # no separation: the relaxed program (every k-th row) decides alone
        assert d is None and d_full is None
        assert len(d_rows) == 1 and d_rows[0] <= RELAX
    if kind == "within":
        # random effects alone cannot fit (relaxed, infeasible); with x1 they can: the full
        # program finds the direction
        assert found is not None and found_full is not None
        assert np.array_equal(found.fixed, found_full.fixed)
        assert np.array_equal(found.columns, found_full.columns)
        assert found.fixed[1] != 0
        assert len(f_rows) == 3 and f_rows[0] == f_rows[1] < f_rows[2] == N
    elif kind == "none":
        # both relaxed programs infeasible: the answer without the full ones
        assert found is None and found_full is None
        assert len(f_rows) == 2 and max(f_rows) <= N // 2
    else:  # x1 alone separates, within groups too: the full program's answer, as above
        assert found is not None and found_full is not None
        assert np.array_equal(found.fixed, found_full.fixed)
        assert np.array_equal(found.columns, found_full.columns)


def test_the_relaxed_rows_are_whole_groups(monkeypatch):
    monkeypatch.setattr(sep, "RELAX_ROWS", RELAX)
    X, Z, y, nt, w = _data("none")
    rows = sep._group_rows(Z)
    k = -(-N // RELAX)
    cols = Z.indices.reshape(N, 2)  # one g and one h column per row, in that order
    on = (cols % k == 0).any(axis=1)
    assert np.array_equal(rows, np.flatnonzero(on))
    # every row of a chosen g level is in
    g_on = np.unique(cols[on & (cols[:, 0] % k == 0), 0])
    assert np.isin(np.flatnonzero(np.isin(cols[:, 0], g_on)), rows).all()
    assert rows.size <= N // 2
    assert sep._group_rows(Z[: 2 * RELAX]) is None
