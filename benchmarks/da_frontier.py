"""Issue 11, goal 6: accuracy against time for differential abundance on 20,000 cells x 20 dimensions.

The speed goal (``da_speed.py``: the default call takes about 58 s against 20 s) asks what the
accuracy costs at a lower budget. On the data of ``da_speed.py`` (the 20,000-cell Gaussian set,
first 20 PCs) with semi-synthetic labels at delta 0.1 and 0.2 (seeds 0-2), one ``RatioFlow`` is
trained per (training steps, delta, seed) as the DA tool trains it (``s_min = 0.4``, batches of
1,024 cells, the tool's 3,000 steps and fewer), and scored as the tool scores (one trajectory
for both conditions, rk4) with:

``exact, 2 steps``
    The tool's default (exact divergence, 20 tangents per field evaluation).
``exact, 1 step``
    Half the field evaluations.
``hutchinson, 1 probe, 2 steps``
    One random tangent per field evaluation instead of 20: unbiased, noisy per cell.

Reported per setting: precision-recall AUC of ``|log r|`` for the DA cells (``da_metrics``),
training and scoring wall time; MELD on the same labels and PCs for reference.

``--lrs`` trains each budget at these peak learning rates instead of the default 1e-3 (the
warm-up and cosine decay follow the budget), to see whether a shorter run at a higher rate keeps
the default's accuracy.

``--pbmc`` checks the one lever that came out ahead, one rk4 step instead of the tool's two, on
the 700 cells of ``pbmc68k_reduced`` with the tool's default call (``n_pcs="auto"``): random
labels (noise sd and share of cells beyond log 1.5, as ``noise_floor.py``) and the semi-synthetic
labels at delta 0.1, 0.2 and 0.4 (PR-AUC, NAR, CSP, RMSE against the true log-ratio), 3 seeds,
``solver_steps=2`` and ``solver_steps=1`` on the same trained model (the same seed).

    python benchmarks/da_frontier.py                           # results/da_frontier.json, about 30 min
    OMP_NUM_THREADS=1 python benchmarks/da_frontier.py --pbmc  # results/da_frontier_pbmc.json, about 6 min
    python benchmarks/da_frontier.py --n-dims 50 --steps 3000 --scorings "exact, 2 steps" "exact, 1 step" \
        --out benchmarks/results/da_frontier_50pcs.json   # all 50 PCs (issue 11, goal 2), about 20 min
    OMP_NUM_THREADS=1 python benchmarks/da_frontier.py --deltas 0.1 --steps 3000 1500 750 --lrs 1e-3 3e-3 \
        --scorings "exact, 2 steps" "exact, 1 step" --out benchmarks/results/da_frontier_lr.json  # about 40 min
"""

import argparse
import itertools
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import DA_MODEL, machine
from da_speed import N_DIMS, cells
from noise_floor import da_row, meld_score, noise_row, random_labels

import scratio as sr

STEPS = [3000, 1500, 750, 375]
LR = 1e-3  # TrainingOptions' default
DELTAS = [0.1, 0.2]
SEEDS = [0, 1, 2]
SCORINGS = {
    "exact, 2 steps": {"solver_steps": 2},
    "exact, 1 step": {"solver_steps": 1},
    "hutchinson, 1 probe, 2 steps": {"solver_steps": 2, "divergence": "hutchinson", "n_probes": 1},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=STEPS)
    parser.add_argument("--deltas", type=float, nargs="+", default=DELTAS)
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    parser.add_argument(
        "--n-dims", type=int, default=N_DIMS, help="leading PCs of the 50 (issue 11, goal 2: 50)"
    )
    parser.add_argument("--scorings", nargs="+", choices=list(SCORINGS), default=list(SCORINGS))
    parser.add_argument("--lrs", type=float, nargs="+", default=[LR], help="peak learning rates")
    parser.add_argument("--pbmc", action="store_true", help="solver steps 2 and 1 on pbmc68k instead")
    parser.add_argument("--out")
    args = parser.parse_args()
    sr.settings.verbosity = 0
    warnings.filterwarnings("ignore", category=FutureWarning)
    results = Path(__file__).parent / "results"
    if args.pbmc:
        pbmc_steps(Path(args.out or results / "da_frontier_pbmc.json"))
        return
    args.out = args.out or str(results / "da_frontier.json")
    base = cells(args.n_dims)
    runs = []
    for delta in args.deltas:
        for seed in args.seeds:
            adata = sr.datasets.semi_synthetic_da(base, "leiden", delta=delta, random_state=seed, copy=True)
            truth = (adata.obs["is_da"].to_numpy(), adata.obs["true_log_odds"].to_numpy())
            meld, meld_seconds = meld_score(adata, args.n_dims, seed)
            runs.append({"delta": delta, "seed": seed, "method": "meld", "seconds": round(meld_seconds, 2),
                         "pr_auc": sr.datasets.da_metrics(meld, *truth)["pr_auc"]})  # fmt: skip
            print(runs[-1], flush=True)
            for n_steps, lr in itertools.product(args.steps, args.lrs):
                model = sr.RatioFlow(adata, "X_pca", ["condition"], **DA_MODEL, random_state=seed)
                start = time.perf_counter()
                model.train(n_steps, batch_size=1024, lr=lr)
                training = time.perf_counter() - start
                for name in args.scorings:
                    scoring = SCORINGS[name]
                    start = time.perf_counter()
                    log_p = model.category_log_likelihoods(key="condition", **scoring)
                    seconds = time.perf_counter() - start
                    metrics = sr.datasets.da_metrics(log_p["treated"] - log_p["control"], *truth)
                    runs.append({"delta": delta, "seed": seed, "method": "scratio", "n_steps": n_steps, "lr": lr,
                                 "scoring": name, "training_seconds": round(training, 2),
                                 "scoring_seconds": round(seconds, 2), "seconds": round(training + seconds, 2),
                                 "pr_auc": round(metrics["pr_auc"], 4)})  # fmt: skip
                    print(runs[-1], flush=True)
    summary = summarise(runs)
    final = {
        "setting": {"n_cells": base.n_obs, "n_dims": base.obsm["X_pca"].shape[1], "deltas": args.deltas,
                    "seeds": args.seeds, "torch_threads": torch.get_num_threads(), "machine": machine()["machine"]},
        "summary": summary,
        "runs": runs,
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(final, indent=1))
    for row in summary:
        print(row)


def pbmc_steps(out):
    """The tool's default call on pbmc68k with one and two rk4 steps: noise floor and detection."""
    import scanpy as sc

    warnings.filterwarnings("ignore", message=".*cells per dimension")
    pbmc = sc.datasets.pbmc68k_reduced()
    datasets = [("noise", None, seed, random_labels(pbmc, seed)) for seed in SEEDS]
    datasets += [("da", delta, seed, sr.datasets.pbmc68k_da(delta, random_state=seed))
                 for delta in (0.1, 0.2, 0.4) for seed in SEEDS]  # fmt: skip
    runs = []
    for part, delta, seed, adata in datasets:
        for steps in (2, 1):
            result = sr.tl.differential_abundance(adata, "condition", reference="control", target="treated",
                                                  use_rep="X_pca", random_state=seed, solver_steps=steps, copy=True)  # fmt: skip
            scores = result.obs["scratio_da"].to_numpy(np.float64)
            metrics = noise_row(scores) if part == "noise" else da_row(scores, adata)
            runs.append({"part": part, "delta": delta, "seed": seed, "solver_steps": steps,
                         "n_dims": int(result.uns["scratio_da"]["params"]["n_dims"]), **metrics})  # fmt: skip
            print(runs[-1], flush=True)
    frame = pd.DataFrame(runs)
    metrics = ["sd", "flagged", "pr_auc", "nar", "csp", "rmse"]
    summary = (frame.groupby(["part", "delta", "solver_steps"], dropna=False)[[m for m in metrics if m in frame]]
               .mean().round(4).reset_index())  # fmt: skip
    summary = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
               for row in summary.to_dict("records")]  # fmt: skip
    final = {"setting": {"seeds": SEEDS, "torch_threads": torch.get_num_threads(), "machine": machine()["machine"]},
             "summary": summary, "runs": runs}  # fmt: skip
    out.write_text(json.dumps(final, indent=1))
    for row in summary:
        print(row)


def summarise(runs):
    """Per method, budget and scoring: mean PR-AUC per delta and median seconds over all runs."""
    groups = {}
    for run in runs:
        groups.setdefault((run["method"], run.get("n_steps"), run.get("lr"), run.get("scoring")), []).append(
            run
        )
    rows = []
    for (method, n_steps, lr, scoring), group in groups.items():
        row = {"method": method, "n_steps": n_steps, "lr": lr, "scoring": scoring,
               "seconds_median": round(float(np.median([r["seconds"] for r in group])), 1)}  # fmt: skip
        if method == "scratio":
            row["training_seconds_median"] = round(
                float(np.median([r["training_seconds"] for r in group])), 1
            )
            row["scoring_seconds_median"] = round(float(np.median([r["scoring_seconds"] for r in group])), 1)
        for delta in sorted({r["delta"] for r in group}):
            row[f"pr_auc_{delta:g}"] = round(
                float(np.mean([r["pr_auc"] for r in group if r["delta"] == delta])), 4
            )
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
