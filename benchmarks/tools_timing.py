"""Wall time of each analysis tool with its defaults on 10,000 cells x 30 dimensions (issue 3).

Each tool trains its own model (default training length and network) and scores every cell
on the package's simulators, which also give the answer each result is checked against. The
differential-abundance tool runs three times: with its defaults, with ``base=None`` and with
``condition_weight=1``.

    python benchmarks/tools_timing.py            # writes results/tools_timing.json
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import r2_score

import scratio as sr


def timed(tool, adata, *args, **kwargs):
    start = time.perf_counter()
    tool(adata, *args, **kwargs)
    return round(time.perf_counter() - start, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=10_000)
    parser.add_argument("--n-dims", type=int, default=30)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "tools_timing.json"))
    args = parser.parse_args()
    sr.settings.verbosity, sr.settings.progress_bar = "info", False  # log lines, no bars
    n, d = args.n_cells, args.n_dims
    results = {"setting": vars(args), "tools": {}}

    adata = sr.datasets.shifted_gaussians(n, d, direction=np.full(d, 2 / np.sqrt(d)))
    # the default, the network alone (the default before 2026-12-07) and the network's dependence on the
    # condition kept whole (the default before condition_weight="auto", later that day) in the same run
    for name, kwargs in (
        ("differential_abundance", {}),
        ("differential_abundance, base=None", {"base": None}),
        ("differential_abundance, condition_weight=1", {"condition_weight": 1}),
    ):
        seconds = timed(sr.tl.differential_abundance, adata, "condition", "reference", "shifted", **kwargs)
        truth, estimate = adata.obs["true_log_ratio"], adata.obs["scratio_da"]
        results["tools"][name] = {
            "seconds": seconds,
            "pearson_r_vs_truth": round(float(np.corrcoef(estimate, truth)[0, 1]), 4),
            "r2_vs_truth": round(float(r2_score(truth, estimate)), 4),
        }

    adata = sr.datasets.batch_effect_design(n, n_dims=d)
    seconds = timed(sr.tl.batch_effect_score, adata, "batch", "cell_type")
    affected = adata.obs["batch_affected"].to_numpy(bool)
    scores = adata.obs["scratio_batch"].abs()
    results["tools"]["batch_effect_score"] = {
        "seconds": seconds,
        "mean_abs_affected": round(float(scores[affected].mean()), 3),
        "mean_abs_unaffected": round(float(scores[~affected].mean()), 3),
    }

    adata = sr.datasets.combination_design(n, n_dims=d)
    seconds = timed(sr.tl.combination_effect, adata, "drug1", "drug2")
    table = adata.uns["scratio_combination"]["summary"]
    truth = adata.uns["simulation"]["truth"].set_index(["first", "second"])["effect"]
    effect = [bool(truth.loc[(f, s)]) for f, s in zip(table["first"], table["second"], strict=True)]
    results["tools"]["combination_effect"] = {
        "seconds": seconds,
        "ranking_by_mean_abs": [
            f"{f}+{s}{' (effect)' if e else ''}"
            for f, s, e in zip(table["first"], table["second"], effect, strict=True)
        ],
    }

    adata = sr.datasets.donor_design(n, n_dims=d)
    seconds = timed(sr.tl.donor_response, adata, "donor", "treatment")
    summary = adata.uns["scratio_donor"]["summary"].iloc[:, 0]
    responder = adata.obs.groupby("donor", observed=True)["responder"].first()
    results["tools"]["donor_response"] = {
        "seconds": seconds,
        "mean_log_ratio_responders": round(float(summary[responder[summary.index].to_numpy(bool)].mean()), 3),
        "mean_log_ratio_non_responders": round(
            float(summary[~responder[summary.index].to_numpy(bool)].mean()), 3
        ),
    }
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps(results["tools"], indent=1))


if __name__ == "__main__":
    main()
