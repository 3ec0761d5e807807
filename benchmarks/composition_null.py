"""Issue 12: where the default test calls cells in the composition-noise nulls, and why.

The composition-noise nulls of ``significance.py`` (``--preset full``: 10 on pbmc68k, 3 on the
20,000-cell Gaussian set) draw each sample's population weights from a Dirichlet around the
common proportions, so no condition is DA, but with 3 samples per condition a population's
samples can by chance all be more abundant in one condition than in the other. For every
population this script reports its size, the log fold change of its mean share of a sample's
cells between the ``treated`` and the ``control`` samples, whether the two groups of samples are
perfectly separated (every sample of one above every sample of the other), and how many of its
cells the default call (``significance.run_scratio``, the same datasets and seeds) calls.

    OMP_NUM_THREADS=1 python composition_null.py   # results/composition_null.json, about 10 min

Results: ``results/composition_null.json``.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import significance as sig
from _common import machine, numpy_scalar

import scratio as sr


def population_table(adata, call: np.ndarray) -> pd.DataFrame:
    """Per population: cells, log fold change of the samples' mean share, separation, cells called."""
    populations = adata.obs[sig.POP_KEY].astype(str)
    counts = pd.crosstab(populations, adata.obs["sample"].astype(str))
    share = counts / counts.sum(axis=0)
    condition = adata.obs.groupby("sample", observed=True)["condition"].first()
    is_treated = (condition.reindex(share.columns) == "treated").to_numpy()
    treated, control = share.loc[:, is_treated], share.loc[:, ~is_treated]
    separated = (treated.min(axis=1) > control.max(axis=1)) | (treated.max(axis=1) < control.min(axis=1))
    called = populations[call != 0].value_counts().reindex(counts.index, fill_value=0)
    return pd.DataFrame({
        "population": counts.index,
        "n_cells": counts.sum(axis=1).to_numpy(),
        "log_fold_change": np.log(treated.mean(axis=1) / control.mean(axis=1)).round(3).to_numpy(),
        "separated": separated.to_numpy(),
        "n_called": called.to_numpy(),
    })  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["pbmc68k", "gaussian"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "composition_null.json"))
    args = parser.parse_args()
    sr.settings.verbosity = 0
    setting = dict(sig.PRESETS["full"])
    specs = [
        s for s in sig.dataset_specs(setting) if s["kind"] == "noisy_null" and s["dataset"] in args.datasets
    ]
    bases = sig.bases_for(setting, specs)
    runs = []
    for spec in specs:
        adata = sig.make_dataset(bases, spec, setting["concentration"])
        start = time.perf_counter()
        _, call, _ = sig.run_scratio(adata, spec["seed"])
        table = population_table(adata, call)
        # a population absent from one condition's samples has an infinite fold change: None in the file
        records = table.replace([np.inf, -np.inf], np.nan).astype(object)
        records = records.where(records.notna(), None).to_dict(orient="records")
        runs.append({"dataset": spec["dataset"], "seed": spec["seed"], "seconds": round(time.perf_counter() - start, 1),
                     "n_called": int((call != 0).sum()), "populations": records})  # fmt: skip
        print(spec["dataset"], spec["seed"], "called", runs[-1]["n_called"], flush=True)
        print(table.to_string(index=False), flush=True)
        Path(args.out).write_text(json.dumps(summary(runs), indent=1, default=numpy_scalar))


def summary(runs):
    """Runs, and over all populations: how many are separated, and how many of each kind have calls."""
    rows = pd.DataFrame([{"dataset": r["dataset"], **p} for r in runs for p in r["populations"]])
    by = rows.assign(with_calls=rows["n_called"] > 0).groupby(["dataset", "separated"])
    overview = by.agg(populations=("n_cells", "size"), with_calls=("with_calls", "sum"),
                      cells=("n_cells", "sum"), called=("n_called", "sum")).reset_index()  # fmt: skip
    print(overview.to_string(index=False))
    return {"machine": machine(), "setting": "significance.py --preset full, composition-noise nulls",
            "overview": overview.to_dict(orient="records"), "runs": runs}  # fmt: skip


if __name__ == "__main__":
    main()
