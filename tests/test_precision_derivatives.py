"""``CovStructure.precision_derivatives`` forms its CSR arrays directly (issue 24, session 14):
the same matrices, entry for entry and in the same storage order, as scipy's conversion
from coordinates (the form the Laplace score's products and traces were computed in), and
the derivatives of ``precision_matrix`` (central finite differences)."""

import numpy as np
import pytest
import scipy.sparse as sp

from glmm_sm.spec.covstruct import CovStructure, log_cholesky_map


def _case(seed, k_terms, n_levels):
    """A structure with correlated terms of sizes ``k_terms`` and one scalar component;
    each term's levels own shuffled columns (a level's effects need not be adjacent or in
    ascending order), and a valid ``theta``."""
    rng = np.random.default_rng(seed)
    terms, a = [], 0
    for k in k_terms:
        terms.append(tuple(range(a, a + k)))
        a += k
    cov = CovStructure(a + 1, terms)
    n_cols = [n_levels * k for k in k_terms] + [n_levels]
    q = sum(n_cols)
    perm = rng.permutation(q)
    pairs, var_of_col, start = [], np.empty(q, dtype=np.int64), 0
    for t, k in enumerate(k_terms):
        cols = perm[start : start + n_levels * k].reshape(n_levels, k)
        pairs.append(cols)
        for i in range(k):
            var_of_col[cols[:, i]] = terms[t][i]
        start += n_levels * k
    var_of_col[perm[start:]] = a
    theta = np.zeros(cov.k_vcp)
    for ui, u in enumerate(cov.units):
        sl = cov.unit_params(ui)
        if len(u) == 1:
            theta[sl] = 0.7
        else:
            theta[sl] = log_cholesky_map(rng.normal(scale=0.5, size=sl.stop - sl.start),
                                         len(u))[0]
    assert cov.valid(theta)
    return cov, theta, tuple(pairs), var_of_col


def _reference(cov, theta, pairs, q):
    """The derivatives built from coordinates by scipy (the entries ``-M[i, j]`` at
    ``(idx[:, i], idx[:, j])``), the vector terms' only."""
    out = []
    for ui, u in enumerate(cov.units):
        if len(u) == 1:
            continue
        _, _, Ms = cov._term_pieces(theta, ui)
        idx = pairs[cov.vector_index(ui)]
        for M in Ms:
            rows, cols, vals = [], [], []
            for i in range(len(u)):
                for j in range(len(u)):
                    rows.append(idx[:, i])
                    cols.append(idx[:, j])
                    vals.append(np.full(len(idx), -M[i, j]))
            out.append(sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows),
                                                             np.concatenate(cols))),
                                     shape=(q, q)))
    return out


@pytest.mark.parametrize("k_terms", [(2,), (2, 2), (3,), (2, 4)])
def test_same_storage_as_coordinates(k_terms):
    cov, theta, pairs, var_of_col = _case(1, k_terms, 7)
    q = len(var_of_col)
    got = cov.precision_derivatives(theta, pairs, var_of_col)
    assert len(got) == cov.k_vcp
    scalar_pos = [int(cov.param_ptr[ui]) for ui, u in enumerate(cov.units) if len(u) == 1]
    got_vec = [D for j, D in enumerate(got) if j not in scalar_pos]
    ref = _reference(cov, theta, pairs, q)
    assert len(got_vec) == len(ref) > 0
    for G, R in zip(got_vec, ref, strict=True):
        assert G.shape == R.shape
        assert np.array_equal(G.indptr, R.indptr)
        assert np.array_equal(G.indices, R.indices)
        assert np.array_equal(G.data, R.data)
        assert G.has_sorted_indices
        u = np.random.default_rng(2).normal(size=q)
        assert np.array_equal(G @ u, R @ u)


@pytest.mark.parametrize("k_terms", [(2, 2), (3,)])
def test_derivatives_of_the_precision(k_terms):
    cov, theta, pairs, var_of_col = _case(3, k_terms, 5)
    got = cov.precision_derivatives(theta, pairs, var_of_col)
    h = 1e-6
    for j in range(cov.k_vcp):
        e = np.zeros(cov.k_vcp)
        e[j] = h
        fd = (cov.precision_matrix(theta + e, pairs, var_of_col).toarray()
              - cov.precision_matrix(theta - e, pairs, var_of_col).toarray()) / (2 * h)
        # central differences: error O(h^2) times third derivatives (entries O(1-10)),
        # rounding about 1e-16 * |P| / h
        np.testing.assert_allclose(got[j].toarray(), fd, rtol=0, atol=1e-7)


def test_prior_off_diagonal_in_the_block_layout_is_formed_once():
    """``PriorPrecision.off_flat``: with ``h = 0`` the blocks' precisions are the prior's
    (the dense ``precision_matrix`` on each block's columns), exactly, on the first use
    and on the reuse; a second system gets its own."""
    import warnings

    from test_rb_correlated import simulate

    from glmm_sm.laplace.prior import PriorPrecision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = simulate(12, 8)
    system = mod.block_system()
    data = system.data
    nu = data.cov.start() * 0.8
    nu[1] = 0.3  # a covariance: off-diagonal entries
    pp = PriorPrecision(data, nu)
    dense = data.cov.precision_matrix(nu, data.pairs, data.ident).toarray()
    h = np.zeros(len(data.y))
    first = system.precision_flat(h, pp)
    again = system.precision_flat(h, pp)
    assert np.array_equal(first, again)
    for (_, _, cols), mats in zip(system.groups, system.split(first), strict=True):
        for g in range(len(mats)):
            np.testing.assert_array_equal(mats[g], dense[np.ix_(cols[g], cols[g])])
    other = mod.block_system()
    assert np.array_equal(other.precision_flat(h, pp), first)
    assert pp._flat_for is other
