"""Issue 11: the bandwidth chosen on the held-out cells of several models, and their average.

On 700 cells the DA tool's ``bandwidth="auto"`` chooses from 70 held-out cells, and the choice
is noisy ("Smoothing when scoring"). Here each dataset gets ``--n-models`` models trained as the
tool trains its one (its ``n_pcs``, steps and batch size), each with its own random held-out
10%, so that together they hold out several times as many cells without training on fewer.
Every model scores every cell at every width. Compared, per dataset:

``one model``
    Model 0 alone, the width chosen by its own held-out cells: the tool's default.
``one model, pooled choice``
    Model 0's ratios at the width chosen by the held-out gains of all the models (each
    held-out cell judged by the models that did not train on it): what the choice alone buys.
``average of k``
    The mean of the first ``k`` models' log-ratios at the width their pooled held-out gains
    choose: what cross-fitting buys, at ``k`` times the training.

MELD on all 50 PCs in the same run. Datasets as ``bandwidth.py``: random labels on
``pbmc68k_reduced`` and the semi-synthetic labels at ``--deltas``, seeds 0-2.

    OMP_NUM_THREADS=1 python benchmarks/cross_fitting.py --deltas --out benchmarks/results/cross_fitting_noise.json
    OMP_NUM_THREADS=1 python benchmarks/cross_fitting.py --no-noise --out benchmarks/results/cross_fitting_da.json

Results: ``--out`` (written after every dataset).
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import DA_MODEL, da_log_ratios, da_tool_model, machine, scoring_of
from bandwidth import BANDWIDTHS, held_out_gains
from noise_floor import da_row, meld_score, noise_row, random_labels

import scratio as sr

#: Seeds of the models after the first, which is the tool's own (``random_state=seed``).
MODEL_SEED_STRIDE = 1000
METRICS = ["sd", "flagged", "pr_auc", "nar", "csp", "rmse", "bandwidth"]


def scored_models(adata, seed, n_models):
    """Per model: log-ratios ``(n_widths, n_cells)`` and held-out cells; the tool's params."""
    tool = sr.tl.differential_abundance(adata, "condition", reference="control", target="treated",
                                        use_rep="X_pca", random_state=seed, copy=True)  # fmt: skip
    params = tool.uns["scratio_da"]["params"]
    models = []
    for k in range(n_models):
        model = da_tool_model(adata, params, seed + MODEL_SEED_STRIDE * k)
        models.append(
            (
                np.array([da_log_ratios(model, h, **scoring_of(params)) for h in BANDWIDTHS]),
                model.held_out,
            )
        )
    first = models[0][0][BANDWIDTHS.index(params["bandwidth_used"])]
    same_as_tool = bool(np.allclose(first, tool.obs["scratio_da"], atol=1e-3))
    return models, params, same_as_tool


def pooled_choice(models, is_treated):
    """The width whose held-out gain, pooled over the models' held-out cells, is highest."""
    gains = np.concatenate(
        [[held_out_gains(r, is_treated, held) for r in log_r] for log_r, held in models], axis=1
    )
    return int(np.argmax(gains.mean(axis=1)))


def rows_for(models, adata, is_da, n_models_compared):
    """One row per compared output: model 0 alone, with the pooled choice, and the averages."""
    is_treated = (adata.obs["condition"] == "treated").to_numpy()

    def metrics(values):
        return {**noise_row(values), **(da_row(values, adata) if is_da else {})}

    rows = []
    own = pooled_choice(models[:1], is_treated)
    rows.append({"method": "one model", "bandwidth": BANDWIDTHS[own], **metrics(models[0][0][own])})
    for k in n_models_compared:
        chosen = pooled_choice(models[:k], is_treated)
        rows.append({"method": f"one model, pooled choice of {k}", "bandwidth": BANDWIDTHS[chosen],
                     **metrics(models[0][0][chosen])})  # fmt: skip
        average = np.mean([log_r[chosen] for log_r, _ in models[:k]], axis=0)
        rows.append({"method": f"average of {k}", "bandwidth": BANDWIDTHS[chosen], **metrics(average)})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--deltas", type=float, nargs="*", default=[0.1, 0.2, 0.4])
    parser.add_argument("--no-noise", action="store_true", help="skip the random-label datasets")
    parser.add_argument("--n-models", type=int, default=5)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    sr.settings.verbosity = 0
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*cells per dimension")
    import scanpy as sc

    pbmc = sc.datasets.pbmc68k_reduced()
    datasets = [] if args.no_noise else [(None, s, lambda s=s: random_labels(pbmc, s)) for s in args.seeds]
    datasets += [(d, s, lambda d=d, s=s: sr.datasets.pbmc68k_da(d, random_state=s))
                 for d in args.deltas for s in args.seeds]  # fmt: skip
    compared = sorted({k for k in (2, 3, args.n_models) if k <= args.n_models})
    runs = []
    for delta, seed, make in datasets:
        adata = make()
        start = time.perf_counter()
        models, params, same_as_tool = scored_models(adata, seed, args.n_models)
        seconds = round(time.perf_counter() - start, 1)
        rows = rows_for(models, adata, delta is not None, compared)
        meld, _ = meld_score(adata, adata.obsm["X_pca"].shape[1], seed)
        rows.append(
            {"method": "meld", **noise_row(meld), **(da_row(meld, adata) if delta is not None else {})}
        )
        for row in rows:
            runs.append({"delta": delta, "seed": seed, "n_dims": params["n_dims"], "seconds": seconds,
                         "tool_chose": params["bandwidth_used"], "same_as_tool": same_as_tool, **row})  # fmt: skip
            print(runs[-1], flush=True)
        frame = pd.DataFrame(runs)
        summary = (frame.groupby(["delta", "method"], dropna=False, sort=False)
                   [[m for m in METRICS if m in frame]].mean().round(4).reset_index())  # fmt: skip
        Path(args.out).write_text(json.dumps({
            "setting": {**vars(args), "bandwidths": BANDWIDTHS, "s_min": DA_MODEL["s_min"]},
            "machine": machine(), "runs": runs, "summary": json.loads(summary.to_json(orient="records")),
        }, indent=1))  # fmt: skip
    with pd.option_context("display.width", 200):
        print(summary.to_string())


if __name__ == "__main__":
    main()
