"""The package's shape: layers that import only downwards, and no import cycle.

Every ``import`` statement in every module of ``glmm_sm`` (module level, inside functions and
under ``if TYPE_CHECKING``, so lazy imports count) is read from the source with :mod:`ast`; an
edge ``a -> b`` means module ``a`` imports package module ``b``.

* The subpackages are the stages of the pipeline, in :data:`LAYERS` order: a module never
  imports a module of a higher layer.
* The graph is acyclic, inside a layer too.
* No package attribute hides a submodule of the same name (``glmm_sm.inference.lrtest`` is the
  module, ``glmm_sm.lrtest`` the public function, and nothing is both).
"""

from __future__ import annotations

import ast
from pathlib import Path

import glmm_sm

ROOT = Path(glmm_sm.__file__).parent


def _module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _targets(node, name, is_package, modules):
    """Package modules imported by the import statement ``node`` of module ``name``."""
    if isinstance(node, ast.Import):
        found = [alias.name for alias in node.names]
    else:
        package = name if is_package else name.rpartition(".")[0]
        if node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        # ``from . import engine`` imports the module ``engine``; ``from .engine import x``
        # the module ``engine`` (whose attribute ``x`` is).
        found = [f"{base}.{alias.name}" for alias in node.names]
        if not all(f in modules for f in found):
            found = [base]
    out = set()
    for target in found:
        while target and target not in modules:  # a name from a module: the module
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def import_graph():
    """``{module: set of package modules it imports}`` for every module of ``glmm_sm``."""
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        graph[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[name] |= _targets(node, name, is_package, paths)
    return graph


def _cycle(graph):
    """One cycle of ``graph`` as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


#: Edges known to close a cycle, exempted until their owners remove them (none now).
KNOWN = set()


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "glmm_sm.mcla.engine" in graph["glmm_sm.fit.driver"]  # module level
    assert "glmm_sm.mcla.distributed" in graph["glmm_sm.mcla.engine"]  # inside a method
    assert graph["glmm_sm.mcla.partials"] >= {"glmm_sm.mcla.kernels.plain",
                                              "glmm_sm.mcla.kernels.reference"}
    assert "glmm_sm" not in graph["glmm_sm.mcla.partials"]  # imports of modules
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_package_modules():
    graph = import_graph()
    for a, b in KNOWN:
        assert b in graph[a], f"{a} no longer imports {b}: remove it from KNOWN"
        graph[a].discard(b)
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


#: The layers, lowest first.  A module belongs to the longest prefix listed here.
LAYERS = {
    "glmm_sm.core": 0,        # constants, randomness
    "glmm_sm.datasets": 0,    # the data sets glmm ships
    "glmm_sm.spec": 1,        # families, formulas, design, covariance structure, parameters
    "glmm_sm.laplace": 2,     # conditional modes and the Laplace likelihood
    "glmm_sm.mcla": 3,        # samplers, draws, engine, kernels, Rao-Blackwellization, Dask
    "glmm_sm.fit": 4,         # options and log, driver, information, boundary, separation
    "glmm_sm.inference": 5,   # LR tests, profiles, predictions, simulation, comparison, plots
    "glmm_sm.results": 6,     # the results classes and their tables
    "glmm_sm.model": 7,       # MonteCarloGLMM: the glue
    "glmm_sm.formula": 8,     # formula aliases
    "glmm_sm": 9,             # the public namespace
    "glmm_sm.__main__": 10,   # the demo
}


def layer_of(module):
    """The layer of ``module``: that of the longest prefix in :data:`LAYERS`."""
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        prefix = ".".join(parts[:k])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(module)


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_no_module_imports_a_higher_layer():
    upward = sorted(f"{a} (layer {layer_of(a)}) -> {b} (layer {layer_of(b)})"
                    for a, targets in import_graph().items() for b in targets
                    if layer_of(b) > layer_of(a))
    assert not upward, "\n".join(upward)


def test_the_layer_check_catches_an_upward_import():
    graph = {"glmm_sm.mcla.engine": {"glmm_sm.fit.driver"}}
    assert [(a, b) for a, t in graph.items() for b in t if layer_of(b) > layer_of(a)]


def test_no_package_attribute_hides_a_submodule():
    """``glmm_sm.lrtest`` was the function and hid the module (``glmm_sm.lrtest.chibar_weights``
    raised AttributeError): every submodule is reachable as its package's attribute."""
    import importlib
    import pkgutil

    hidden = []
    for info in pkgutil.walk_packages(glmm_sm.__path__, "glmm_sm."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        parent, _, leaf = info.name.rpartition(".")
        if getattr(importlib.import_module(parent), leaf) is not module:
            hidden.append(info.name)
    assert not hidden, hidden
    from glmm_sm.inference import lrtest

    assert callable(lrtest.chibar_weights) and callable(glmm_sm.lrtest)


def test_k_vcp_is_the_number_of_variance_parameters(salamander_model):
    """statsmodels' name (``BinomialBayesMixedGLM.k_vcp``) next to this package's ``k_vc``."""
    import pytest

    assert salamander_model.k_vcp == 2
    with pytest.warns(DeprecationWarning, match="use k_vcp"):
        assert salamander_model.k_vc == 2
    assert salamander_model.exog_vc.shape[1] == 120
