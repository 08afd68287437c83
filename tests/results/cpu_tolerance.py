"""How far do fits move when the numba kernels are compiled for another CPU?

numba compiles the kernels for the host CPU: with AVX2/FMA a fused multiply-add rounds once
where the generic x86-64 code rounds twice, and vector widths change the order of some
reductions, so the last bits of a fit differ from one CPU to another.  This script fits the
models of ``fit_reference.py`` three ways, each in a fresh process with its own empty numba
cache:

* ``host``: compiled for this machine's CPU (the default);
* ``generic``: ``NUMBA_CPU_NAME=generic`` (plain x86-64: SSE2, no FMA, no AVX), which
  emulates an old or different CPU;
* the stored ``fit_reference.json`` (made on another machine),

and writes the largest relative difference of every float (parameters, standard errors,
MCSEs, the log-likelihood, boundary derivatives) between each pair, with the CPU names, to
``cpu_tolerance.json``.  ``tests/test_bit_identity.py`` checks the stored reference to a
relative tolerance chosen from these numbers.  Run from the repository root (a few minutes:
three processes compile the kernels from scratch)::

    OPENBLAS_NUM_THREADS=1 python tests/results/cpu_tolerance.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from models import load_result
import llvmlite.binding as llvm
fr = load_result("fit_reference")
out = {{name: fr.fit(name) for name in sorted(fr.MODELS)}}
print(json.dumps({{"cpu": llvm.get_host_cpu_name(), "fits": out}}))
"""


def run(cpu_name=None):
    """The fit records (float hex) from a fresh process with an empty numba cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, OPENBLAS_NUM_THREADS="1",
                   PYTHONPATH=str(ROOT))
        env.pop("NUMBA_CPU_NAME", None)
        if cpu_name is not None:
            env["NUMBA_CPU_NAME"] = cpu_name
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD.format(tests=str(HERE.parent))],
                              env=env, check=True, capture_output=True, text=True, cwd=ROOT)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["seconds"] = round(time.perf_counter() - t0, 1)
        return out


def floats(record):
    """Every float of one model's record, by label."""
    out = {}
    for key in ("params", "bse", "mcse"):
        for i, h in enumerate(record[key]):
            out[f"{key}[{i}]"] = float.fromhex(h)
    out["llf"] = float.fromhex(record["llf"])
    for k, h in record["boundary"].items():
        out[f"boundary[{k}]"] = float.fromhex(h)
    return out


def compare(a, b):
    """Largest relative difference per model, and whether m and the rounds agree."""
    res = {}
    for name in a:
        fa, fb = floats(a[name]), floats(b[name])
        rel = 0.0
        for k, x in fa.items():
            y = fb[k]
            if x != x and y != y:  # both NaN
                continue
            scale = max(abs(x), abs(y))
            rel = max(rel, abs(x - y) / scale if scale > 0 else 0.0)
        res[name] = {"max_rel_diff": rel, "same_m": a[name]["m"] == b[name]["m"],
                     "same_rounds": a[name]["rounds"] == b[name]["rounds"],
                     "bit_identical": a[name] == b[name]}
    return res


def main():
    host, generic = run(), run("generic")
    stored = json.loads((HERE / "fit_reference.json").read_text())
    out = {
        "host_cpu": host["cpu"], "seconds": {"host": host["seconds"],
                                             "generic": generic["seconds"]},
        "host_vs_generic": compare(host["fits"], generic["fits"]),
        "host_vs_stored": compare(host["fits"], stored),
        "generic_vs_stored": compare(generic["fits"], stored),
        "provenance": {"script": "tests/results/cpu_tolerance.py",
                       "python": platform.python_version(), "machine": platform.machine(),
                       "date": time.strftime("%Y-%m-%d")},
    }
    (HERE / "cpu_tolerance.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
