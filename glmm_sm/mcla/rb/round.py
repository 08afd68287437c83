"""The fitting driver's side of Rao-Blackwellization: whether a fit integrates, and one
round's draws and engine (:mod:`glmm_sm.mcla.rb.split`, :mod:`glmm_sm.mcla.rb.engine`)."""

from __future__ import annotations

import numpy as np

from glmm_sm.laplace.step import conditional_mode, family_system
from glmm_sm.mcla.draws import DrawSet
from glmm_sm.mcla.rb.deep import (
    DEEP_NODES,
    DeepQuadratureEngine,
    DeepQuadratureSampler,
    DeepTree,
    deep_tree_layout,
)
from glmm_sm.mcla.rb.engine import RBEngine
from glmm_sm.mcla.rb.split import (
    N_NODES,
    QuadratureSampler,
    RBSampler,
    RBStructure,
    choose_split,
    quadrature_layout,
    rb_eligible,
)
from glmm_sm.mcla.rb.vector import (
    M_START_PER_SAMPLED,
    N_NODES_VECTOR,
    PILOT_NODES_VECTOR,
    VectorQuadratureSampler,
    VectorRBEngine,
    VectorRBSampler,
    VectorRBStructure,
    choose_vector_split,
    round_nodes_vector,
    vector_quadrature_layout,
    vector_rb_eligible,
)

__all__ = ["rb_structure", "rb_round", "rb_record", "rb_m_start", "resolve_sampler",
           "PILOT_NODES"]

#: Gauss-Hermite nodes of the first (pilot) round.  Its quadrature error moves the estimate
#: by well under one MCSE (VerbAgg at m = 1000: 0.9 MCSE, 0.6% of an SE, against 0.003
#: MCSE with 12 nodes), far less than that round's distance from the MLE, and the round
#: costs half as much.  A deep tree's pilot takes it at every level, the top's included.
PILOT_NODES = 6


def resolve_sampler(model, opts):
    """The sampler ``sampler="auto"`` (the default) stands for, and why.

    ``"quadrature"`` (:class:`~glmm_sm.mcla.rb.split.QuadratureSampler`, a deterministic
    fit) where the structure allows it (:func:`~glmm_sm.mcla.rb.split.quadrature_layout`;
    with correlated terms :func:`~glmm_sm.mcla.rb.vector.vector_quadrature_layout`, the
    tensor rule of :class:`~glmm_sm.mcla.rb.vector.VectorQuadratureSampler` for one grouping
    factor) and nothing asks for draws; ``"laplace"`` (importance sampling) otherwise: an explicit
    ``m`` (a number of draws) or ``rao_blackwell=False`` asks for Monte Carlo.  A sampler
    given by name is used as given.

    Returns
    -------
    sampler : str
    reason : str
    """
    if opts.sampler != "auto":
        return opts.sampler, f"sampler={opts.sampler!r} given"
    if opts.m != "auto":
        return "laplace", (f"sampler='auto' with m={opts.m} (a number of draws): "
                           "importance sampling")
    if opts.rao_blackwell is False:
        return "laplace", "sampler='auto' with rao_blackwell=False: importance sampling"
    factorize = model.factorize if opts.factorize is None else bool(opts.factorize)
    data, names = model.layout_data(factorize), list(model.design.vcp_names)
    # correlated terms: the tensor rule where nothing is left to sample
    layout = vector_quadrature_layout if data.cov.has_vector else quadrature_layout
    ok, why = layout(data, names)
    if not ok and not data.cov.has_vector:
        # a nesting tree of depth 3 or more: the nested rule of every level
        # (glmm_sm.mcla.rb.deep)
        deep, deep_why = deep_tree_layout(data, names)
        if deep:
            ok, why = True, deep_why
        else:
            # what falls back: neither the two-level rule nor the nested rule of a tree
            why = f"{why}; {deep_why}: importance sampling"
    return ("quadrature" if ok else "laplace"), f"sampler='auto': {why}"


def rb_structure(model, opts, factorize, client, notes=None):
    """The :class:`RBStructure` a fit uses, or None.

    ``rao_blackwell="auto"`` integrates where a large block gains (:func:`rb_eligible`) and
    the default sampler is asked for; ``True`` wherever a block allows it.  With correlated
    terms a block is split by units (:mod:`glmm_sm.mcla.rb.vector`).  Neither applies with a
    Dask client (the plain estimator is used).  With a Dask
    client, a fit that ``"auto"`` would have Rao-Blackwellized says so: a note appended to
    ``notes`` (the fit log's warnings, issued as warnings at the end of the fit).
    """
    rb = opts.rao_blackwell
    if opts.sampler == "quadrature":
        if model.design.cov.has_vector:
            data = model.layout_data(factorize)
            ok, why = vector_quadrature_layout(data, list(model.design.vcp_names))
            if not ok:
                raise ValueError(f"sampler='quadrature' with correlated random-effect terms "
                                 f"integrates one grouping factor only: {why}; use "
                                 "sampler='laplace'")
        if client is not None and notes is not None:
            notes.append("sampler='quadrature': a deterministic fit has no Monte Carlo sums "
                         "to distribute, so the Dask client was not used (the fit is the "
                         "same as without it)")
        if model.design.cov.has_vector:
            return VectorRBStructure(data)
        data = model.layout_data(factorize)
        if not quadrature_layout(data)[0] and deep_tree_layout(data)[0]:
            return DeepTree(data)
        return RBStructure(data)
    if rb is False or not rb:
        return None
    if model.design.cov.has_vector and client is None:
        if getattr(model, "k_fam", 0):
            # The negative binomial: the vector (correlated-term) kernel has no alpha terms.
            if rb is True:
                raise NotImplementedError(
                    "rao_blackwell=True with correlated random-effect terms is not available "
                    "for the negative binomial family (the vector Rao-Blackwellized kernel "
                    "has no alpha terms); use rao_blackwell=False or 'auto'")
            return None
        return _vector_structure(model, opts, factorize, rb)
    why = None
    if client is not None:
        why = "Dask clusters"
    if why is not None:
        if rb is True:
            raise ValueError(f"rao_blackwell=True is not available for {why}; use "
                             "rao_blackwell=False")
        if client is not None and notes is not None and opts.sampler in ("laplace", "auto"):
            data = model.layout_data(factorize)
            if rb_eligible(data, choose_split(data)):
                notes.append("rao_blackwell='auto': this model would be Rao-Blackwellized "
                             "(one crossed factor integrated by quadrature), which is not "
                             "available on a Dask cluster; the plain importance-sampling "
                             "estimator is used, which needs more draws for the same MCSE. "
                             "Fit without client to integrate, or pass "
                             "rao_blackwell=False to silence this")
        return None
    data = model.layout_data(factorize)
    split = choose_split(data)
    # "auto" stands for "laplace" where it reaches here (a fit resolves it first)
    if rb == "auto" and (opts.sampler not in ("laplace", "auto")
                         or not rb_eligible(data, split)):
        return None
    if not np.any(split >= 0):
        if rb is True:
            raise ValueError("rao_blackwell=True: no block has a component whose levels each "
                             "observation loads on at most once (nothing to integrate)")
        return None
    return RBStructure(data, split)


def _vector_structure(model, opts, factorize, rb):
    """:func:`rb_structure` for a model with correlated terms
    (:mod:`glmm_sm.mcla.rb.vector`)."""
    data = model.layout_data(factorize)
    split = choose_vector_split(data)
    if rb == "auto" and (opts.sampler != "laplace" or not vector_rb_eligible(data, split)):
        return None
    if not np.any(split >= 0):
        if rb is True:
            raise ValueError("rao_blackwell=True: no block has a random-effect term whose "
                             "levels each observation loads on at most once (nothing to "
                             "integrate)")
        return None
    return VectorRBStructure(data, split)


def centre_system(model, factorize, centre):
    """The block system with the family's parameter of ``centre`` set (the negative
    binomial's alpha, after the variances)."""
    k = model.k_fe + model.k_vcp
    return family_system(model.block_system(factorize), centre[k] if model.k_fam else None)


def centre_mode(model, system, centre, u0=None):
    """The joint conditional modes at ``centre`` that a Rao-Blackwellized rule is placed
    with (:func:`~glmm_sm.laplace.step.conditional_mode` on ``system``, Newton's method from
    ``u0``, or from 0)."""
    p, k = model.k_fe, model.k_fe + model.k_vcp
    return conditional_mode(system, centre[:p], centre[p:k], u0=u0)


def rb_round(model, structure, centre, mode, factorize, m, seed, opts, n_jobs, pilot=False,
             reserve=0, outer_start=None):
    """``(draws, engine)`` of one Rao-Blackwellized round centred at ``centre``, the
    sampled effects drawn from :func:`~glmm_sm.mcla.rb.proposal.integrated_laplace`.  A
    ``pilot`` round (the first, centred at the Laplace fit: it only finds the next round's
    centre, and is never the final round) integrates with :data:`PILOT_NODES` nodes unless
    ``n_nodes`` is given.  ``reserve``: the bytes the evaluation needs beside stored draws
    (:attr:`MemoryPlan.reserve <glmm_sm.mcla.memory.MemoryPlan.reserve>`; the draws are
    stored only where they fit ``memory_budget`` with it).  ``outer_start``: where a
    two-level deterministic rule's outer modes start (``QuadratureSampler``'s
    ``outer_start``; not used by the other rules)."""
    system = centre_system(model, factorize, centre)
    if mode is None:
        mode = centre_mode(model, system, centre)
    options = {k: v for k, v in opts.sampler_options.items()
               if k in ("t_weight", "df", "n_nodes", "integrated")}
    if getattr(structure, "vector", False):
        if pilot:
            options.setdefault("n_nodes", PILOT_NODES_VECTOR)
        if opts.sampler == "quadrature":  # the tensor rule alone: one empty "draw"
            quad = {k: v for k, v in options.items() if k == "n_nodes"}
            smp = VectorQuadratureSampler(system, centre, mode, structure, **quad)
            draws = DrawSet.from_sampler(smp, 1, seed, opts.memory_budget, n_jobs=n_jobs)
            return draws, VectorRBEngine(draws, opts.chunk_size, n_jobs)
        options.setdefault("n_nodes", round_nodes_vector(structure))
        smp = VectorRBSampler(system, centre, mode, structure, **options)
        draws = DrawSet.from_sampler(smp, m, seed, opts.memory_budget, n_jobs=n_jobs,
                                     reserve=reserve)
        return draws, VectorRBEngine(draws, opts.chunk_size, n_jobs)
    if getattr(structure, "deep", False):  # a tree of depth >= 3: the nested rule
        quad = {k: v for k, v in opts.sampler_options.items()
                if k in ("n_nodes", "outer_nodes")}
        if pilot:
            # every level's, the top's included: the pilot's estimate only centres the
            # next rule (on sim-3level the fit's rounds take the same steps as with the
            # top level's DEEP_OUTER_NODES, at half the pilot's cost; benchmarks/README.md,
            # "The three-level fit's warm cost")
            quad.setdefault("n_nodes", PILOT_NODES)
            quad.setdefault("outer_nodes", PILOT_NODES)
        smp = DeepQuadratureSampler(system, centre, mode, structure, **quad)
        draws = DrawSet.from_sampler(smp, 1, seed, opts.memory_budget, n_jobs=n_jobs)
        return draws, DeepQuadratureEngine(draws, opts.chunk_size, n_jobs)
    if pilot:
        options.setdefault("n_nodes", PILOT_NODES)
    if opts.sampler == "quadrature":
        quad = {k: v for k, v in opts.sampler_options.items()
                if k in ("n_nodes", "outer_nodes", "recentre")}
        if pilot:
            quad.setdefault("n_nodes", PILOT_NODES)
        smp = QuadratureSampler(system, centre, mode, structure, outer_start=outer_start,
                                **quad)
        draws = DrawSet.from_sampler(smp, smp.outer, seed, opts.memory_budget, n_jobs=n_jobs)
        return draws, RBEngine(draws, opts.chunk_size, n_jobs)
    smp = RBSampler(system, centre, mode, structure, **options)
    draws = DrawSet.from_sampler(smp, m, seed, opts.memory_budget, n_jobs=n_jobs,
                                 reserve=reserve)
    return draws, RBEngine(draws, opts.chunk_size, n_jobs)


def rb_record(model, structure):
    """What the fit log keeps about the split."""
    data = structure.data
    if getattr(structure, "vector", False):
        return _vector_record(model, structure)
    if getattr(structure, "deep", False):
        names = list(model.design.vcp_names)
        return {"integrated": [names[t] for t in structure.comp], "depth": structure.depth,
                "n_levels": int(structure.n_levels), "largest_block": int(
                    np.diff(data.col_ptr).max()), "largest_block_sampled": 0,
                "nodes": DEEP_NODES}
    names = list(model.design.vcp_names)
    qb = np.diff(data.col_ptr)
    sampled = qb - np.array([data.qbt[b, t] if t >= 0 else 0.0
                             for b, t in enumerate(structure.split)])
    big = int(np.argmax(qb))
    return {"integrated": [names[t] if t >= 0 else None for t in structure.split],
            "n_levels": int(structure.n_levels), "largest_block": int(qb[big]),
            "largest_block_sampled": int(sampled[big]), "nodes": N_NODES}


def _vector_record(model, structure):
    """:func:`rb_record` of a :class:`~glmm_sm.mcla.rb.vector.VectorRBStructure`."""
    data, cov = structure.data, structure.data.cov
    names = list(model.design.vcp_names)
    unit_names = [names[cov.param_ptr[ui]].split(" Var(")[0] for ui in range(len(cov.units))]
    qb = np.diff(data.col_ptr)
    sampled = qb - np.array([data.qbt[b, list(cov.units[u])].sum() if u >= 0 else 0.0
                             for b, u in enumerate(structure.split)])
    big = int(np.argmax(qb))
    return {"integrated": [unit_names[u] if u >= 0 else None for u in structure.split],
            "n_levels": int(structure.n_levels), "largest_block": int(qb[big]),
            "largest_block_sampled": int(sampled[big]),
            # the rounds' rule; nothing sampled: a deterministic fit's (N_NODES_VECTOR)
            "nodes": round_nodes_vector(structure) if sampled.max() > 0 else N_NODES_VECTOR,
            "dimension": int(structure.r)}


def rb_m_start(structure, default):
    """The first round's m of a Rao-Blackwellized fit: ``default``, or with correlated
    terms at least ``M_START_PER_SAMPLED`` (:mod:`glmm_sm.mcla.rb.vector`) draws per sampled
    effect of the largest block (each round's ``l_m`` is trustworthy only where the draws'
    weights stay even: with 80 sampled effects, m = 400 let the first rounds' maxima jump
    to ESS 5 of 666 on the 60 x 40 maximal design; m = 2000 converged in 2 rounds)."""
    if not getattr(structure, "vector", False):
        return default
    data = structure.data
    qb = np.diff(data.col_ptr)
    sampled = qb - np.array([data.qbt[b, list(data.cov.units[u])].sum() if u >= 0 else 0.0
                             for b, u in enumerate(structure.split)])
    return int(max(default, M_START_PER_SAMPLED * sampled.max()))
