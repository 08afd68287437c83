"""Cold start: what a fresh process imports, and the warm-up command (issue 21, item 5).

``import glmm_sm`` and its public names (``from glmm_sm import MonteCarloGLMM``, every name
of ``glmm_sm.__all__``) must not import numba (and llvmlite), Dask, matplotlib or tqdm:
those are imported when a fit, a distributed run, a plot or a progress bar needs them.
Checked on ``sys.modules`` of a fresh interpreter, not on timings (which depend on the
machine and its load).
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
            "top = {m.split('.')[0] for m in sys.modules}\n"
            f"print(json.dumps(sorted(top & {set(HEAVY)!r})))")
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


def test_warmup_compiles_every_kernel_a_fit_calls():
    # ``python -m glmm_sm warmup`` fits its small models; afterwards every kernel that the
    # engines call from Python has a compiled (or cache-loaded) specialization in this
    # process, so a later fit of the same kinds finds them in numba's cache.
    from glmm_sm.__main__ import WARMUP_MODELS, main
    from glmm_sm.mcla.kernels import plain, rb, rb_vector, shift

    seconds = main(["warmup", "--quiet"])
    assert list(seconds) == [model[0] for model in WARMUP_MODELS]
    kernels = {"plain.chunk_sums": plain.chunk_sums, "plain.block_xhx": plain.block_xhx,
               "shift.add_offset": shift.add_offset, "shift.csr_times": shift.csr_times,
               "rb.rb_chunk_sums": rb.rb_chunk_sums,
               "rb_vector.rbv_chunk_sums": rb_vector.rbv_chunk_sums}
    missing = [name for name, fn in kernels.items() if not fn.signatures]
    assert not missing, f"warmup did not compile {missing}"


def test_the_command_is_optional():
    # ``python -m glmm_sm --seed 1`` is still the salamander analysis
    from glmm_sm.__main__ import _parser

    assert _parser().parse_args(["--seed", "1"]).command == "salamander"
    args = _parser().parse_args(["warmup", "--quiet"])
    assert (args.command, args.quiet) == ("warmup", True)
