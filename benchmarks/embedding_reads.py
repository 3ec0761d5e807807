"""How often one tool call reads and copies the embedding, and how long it takes, before and after a change.

Counts, for ``sr.tl.donor_response`` on a simulated donor x treatment design:

- reads: calls of the function that reads ``adata.obsm[use_rep]`` (``get_representation``),
  from a cProfile of the call;
- copies: allocations of at least half the embedding's size during the call, from a memray
  trace, that hold whole float32 rows of cells and are made by scratio's code outside the
  per-block network, path, loss and ODE evaluation (copies of the whole embedding, of the
  training cells, of the scored cells, standardised versions, held-out repeats);
- wall time: the median of ``--repeats`` calls without tracing.

With ``--before DIR`` (a checkout of an older commit) the same measurement runs on that code
in a subprocess first, so both rows come from one run on one machine:

    git worktree add /tmp/scratio_before fc8ebd1
    python benchmarks/embedding_reads.py --before /tmp/scratio_before --out benchmarks/results/embedding_reads.json

memray is a benchmark dependency only (``pip install memray``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Per-block network, path and loss temporaries, and module imports, are not copies of the cells.
EXCLUDED_FILES = ("core/network.py", "core/ode.py", "core/paths.py")
EXCLUDED_FUNCTIONS = {"loss", "training_step", "validation_step", "<module>"}


def _copies_cells(record, row_bytes: int) -> bool:
    """Whether an allocation holds whole rows of cells, made by scratio outside per-block code."""
    if record.size % row_bytes:
        return False
    for function, filename, _ in record.stack_trace():
        if "importlib" in filename:
            return False
        if "scratio" in filename:
            return not filename.endswith(EXCLUDED_FILES) and function not in EXCLUDED_FUNCTIONS
    return False


def measure(n_cells: int, n_dims: int, n_steps: int, repeats: int) -> dict:
    import memray

    import scratio as sr

    sr.settings.verbosity = 0
    adata = sr.datasets.donor_design(n_cells, n_dims=n_dims, n_donors=4, random_state=0)
    embedding_bytes = adata.obsm["X_pca"].nbytes
    # Hutchinson divergences keep the scoring short; reads and copies do not depend on them.
    options = {"n_steps": n_steps, "key_added": "score", "divergence": "hutchinson"}

    profile = cProfile.Profile()
    profile.enable()
    sr.tl.donor_response(adata, "donor", "treatment", **options)
    profile.disable()
    reads = sum(
        calls
        for (_, _, name), (_, calls, *_) in pstats.Stats(profile).stats.items()
        if name == "get_representation"
    )

    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "trace.bin"
        with memray.Tracker(trace):
            sr.tl.donor_response(adata, "donor", "treatment", **options)
        records = memray.FileReader(trace).get_allocation_records()
        sizes = [r.size for r in records if r.size >= embedding_bytes / 2 and _copies_cells(r, 4 * n_dims)]

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sr.tl.donor_response(adata, "donor", "treatment", **options)
        times.append(time.perf_counter() - start)
    return {
        "scratio_version": sr.__version__,
        "source": str(Path(sr.__file__).parent),
        "n_cells": n_cells,
        "n_dims": n_dims,
        "n_steps": n_steps,
        "embedding_mib": embedding_bytes / 2**20,
        "reads": reads,
        "large_allocations": len(sizes),
        "large_allocations_in_embeddings": float(np.sum(sizes) / embedding_bytes),
        "wall_s": times,
        "wall_s_median": float(np.median(times)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=100_000)
    parser.add_argument("--n-dims", type=int, default=20)
    parser.add_argument("--n-steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="checkout of the older code (its src/ is imported)")
    parser.add_argument("--out", type=Path, help="write both rows to this JSON file")
    parser.add_argument("--json", action="store_true", help="print one row as JSON (used for --before)")
    args = parser.parse_args()
    sizes = ["--n-cells", str(args.n_cells), "--n-dims", str(args.n_dims), "--n-steps", str(args.n_steps)]
    rows = {}
    if args.before:
        environment = {**os.environ, "PYTHONPATH": str(args.before / "src")}
        command = [sys.executable, __file__, *sizes, "--repeats", str(args.repeats), "--json"]
        output = subprocess.run(command, env=environment, check=True, capture_output=True, text=True).stdout
        rows["before"] = json.loads(output.strip().splitlines()[-1])
    row = measure(args.n_cells, args.n_dims, args.n_steps, args.repeats)
    if args.json:
        print(json.dumps(row))
        return
    rows["after"] = row
    print(
        f"{'code':8s} {'reads':>5s} {'copies >= 1/2 embedding':>24s} {'their size (embeddings)':>24s} {'wall s (median)':>16s}"
    )
    for name, r in rows.items():
        print(
            f"{name:8s} {r['reads']:5d} {r['large_allocations']:24d} {r['large_allocations_in_embeddings']:24.2f} "
            f"{r['wall_s_median']:16.2f}"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
