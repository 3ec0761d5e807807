"""Where scratio's calls that miss Milo's truth lie (issue 12): one 20,000-cell dataset of ``significance.py``.

Milo's protocol counts a cell as DA when its probability of ``treated`` exceeds 0.6. This script
reruns one DA setting of the full preset (20,000 Gaussian cells, louvain 3, enrichment 0.85,
label seed 0) with the tool's defaults and reports, for the calls that miss that truth, their
``P(treated)``, and the FDR and TPR against lower thresholds.

    OMP_NUM_THREADS=1 python benchmarks/significance_edges.py   # results/significance_edges.json, about 3 min
"""

import json
from pathlib import Path

import numpy as np
import significance

import scratio as sr

OUT = Path(__file__).parent / "results" / "significance_edges.json"


def main():
    sr.settings.verbosity = 0
    setting = significance.PRESETS["full"]
    spec = {"dataset": "gaussian", "kind": "da", "population": "3", "enrichment": 0.85, "seed": 0}
    bases = significance.bases_for(setting, [spec])
    adata = significance.make_dataset(bases, spec, setting["concentration"])
    _, call, info = significance.run_scratio(adata, spec["seed"])
    p = adata.obs["p_treated"].to_numpy()
    called, is_da = call != 0, adata.obs["is_da"].to_numpy(bool)
    missed = called & ~is_da
    result = {
        "dataset": spec,
        "sample_normalization": info["test"]["sample_normalization"],
        "n_cells": int(adata.n_obs),
        "n_called": int(called.sum()),
        "n_called_depleted": int((call < 0).sum()),
        "n_missing_the_truth": int(missed.sum()),
        "p_treated_of_those_quantiles": dict(
            zip(
                ["0", "0.1", "0.5", "0.9", "1"],
                np.quantile(p[missed], [0, 0.1, 0.5, 0.9, 1]).round(3).tolist(),
                strict=True,
            )
        ),
        "share_of_those_above": {
            str(t): round(float((p[missed] > t).mean()), 3) for t in (0.5, 0.52, 0.55, 0.58)
        },
        "against_truth_p_above": {
            str(t): {
                "fdr": round(float((p[called] <= t).mean()), 3),
                "tpr": round(float(called[p > t].mean()), 3),
            }
            for t in (0.52, 0.55, 0.6)
        },
    }
    OUT.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
