"""Cold start: what a fresh process imports (issue 21, item 5).

``import glmm_sm`` and its public names (``from glmm_sm import MonteCarloGLMM``, every name
of ``glmm_sm.__all__``) must not import numba (and llvmlite), Dask, matplotlib or tqdm:
those are imported when a fit, a distributed run, a plot or a progress bar needs them.  Checked on ``sys.modules`` of a fresh interpreter, not
on timings (which depend on the machine and its load).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("numba", "llvmlite", "dask", "distributed", "matplotlib", "tqdm")


def _imported_after(statement):
    """The top-level packages among :data:`HEAVY` in ``sys.modules`` of a fresh interpreter
    after ``statement``."""
    code = (f"import sys, json\n{statement}\n"
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))")
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("statement", [
    "import glmm_sm",
    "from glmm_sm import MonteCarloGLMM",
    "from glmm_sm import LaplaceGLMMResults",
    "import glmm_sm\nfor name in glmm_sm.__all__:\n    getattr(glmm_sm, name)",
])
def test_import_loads_no_heavy_package(statement):
    assert _imported_after(statement) == []


def test_the_check_sees_a_heavy_import():
    # the check itself: a statement that does import numba is seen
    assert _imported_after("import glmm_sm.mcla.kernels.plain") == ["llvmlite", "numba"]
