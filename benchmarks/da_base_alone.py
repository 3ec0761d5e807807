"""Issue 11, goal 2: does the network cost the DA tool ranking against its own mixture base?

The DA tool's default model is a mixture base (shared Gaussian components, weights per
condition) with a network trained briefly on top, scored at the condition weight the held-out
cells chose (``condition_weight="auto"``: 0, one correction for both conditions, or 1, the
network as trained). This script trains the tool's model once per dataset (as ``bandwidth.py``
does) and scores every cell at several widths three ways:

``tool``
    the tool's own scoring (its condition weight);
``weight 0``
    ``condition_weight=0``: the network's correction shared by both conditions;
``base alone``
    the network's correction set to zero (the last layers of its velocity and score heads), so
    that the flow is the mixture base's own and the log-ratio is that of its two mixtures,
    smoothed by the width.

Reported per dataset, variant and width: the held-out gain (nats per held-out cell, as in
``bandwidth.py``), random-label noise sd and share beyond log 1.5, and on semi-synthetic labels
PR-AUC, NAR, CSP and RMSE (``noise_floor.py``).

    OMP_NUM_THREADS=1 python benchmarks/da_base_alone.py --out benchmarks/results/da_base_alone_pbmc.json            # 6 min
    OMP_NUM_THREADS=1 python benchmarks/da_base_alone.py --large --out benchmarks/results/da_base_alone_large50.json  # 45 min
    OMP_NUM_THREADS=1 python benchmarks/da_base_alone.py --s-min 0.1 --widths 0.1 0.2 0.3 0.4 0.6 --variants tool \
        --out benchmarks/results/da_s_min_0.1_pbmc.json   # a model trained with another s_min; and --large

Datasets: random labels (seeds 0-2) and ``sr.datasets.pbmc68k_da`` at delta 0.1 and 0.2 (seeds
0-2); with ``--large`` random labels and delta 0.1 on the 20,000-cell Gaussian set of
``da_speed.py`` in all 50 PCs (seeds 0-2).
"""

import argparse
import copy
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import DA_MODEL, da_log_ratios, da_tool_model, machine, scoring_of
from bandwidth import held_out_gains
from noise_floor import da_row, noise_row, random_labels

import scratio as sr

WIDTHS = [0.4, 0.5, 0.6, 0.8, 1.0]
VARIANTS = ["tool", "weight 0", "base alone"]
SEEDS = [0, 1, 2]


def without_network(model: sr.RatioFlow) -> sr.RatioFlow:
    """A copy of ``model`` whose network adds nothing to its base (the heads' last layers zero)."""
    alone = copy.deepcopy(model)
    for head in (alone.network.velocity_head, alone.network.score_head):
        last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
    return alone


def score_dataset(adata, seed: int, delta: float | None, s_min: float, widths, names) -> list[dict]:
    """Rows per variant (of ``names``) and width for one dataset, the model trained with ``s_min``."""
    tool = sr.tl.differential_abundance(adata, "condition", reference="control", target="treated",
                                        use_rep="X_pca", random_state=seed, copy=True, s_min=s_min)  # fmt: skip
    params = tool.uns["scratio_da"]["params"]
    model = da_tool_model(adata, params, seed, s_min=s_min)
    is_treated = (adata.obs["condition"] == "treated").to_numpy()
    scoring = scoring_of(params)
    variants = {
        "tool": lambda: (model, scoring),
        "weight 0": lambda: (model, scoring | {"condition_weight": 0.0}),
        "base alone": lambda: (without_network(model), scoring | {"condition_weight": 0.0}),
    }
    rows = []
    for name in names:
        scored, options = variants[name]()
        for width in widths:
            log_r = da_log_ratios(scored, width, **options)
            gains = held_out_gains(log_r, is_treated, model.held_out)
            rows.append({"delta": delta, "seed": seed, "s_min": s_min, "variant": name, "width": width,
                         "chose": params["bandwidth_used"], "weight_used": params["condition_weight_used"],
                         "gain": float(gains.mean()), "gain_se": float(gains.std() / np.sqrt(len(gains))),
                         **noise_row(log_r), **(da_row(log_r, adata) if delta else {})})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="the 20,000-cell Gaussian set in 50 PCs")
    parser.add_argument(
        "--s-min", type=float, default=DA_MODEL["s_min"], help="the model's s_min (the tool's by default)"
    )
    parser.add_argument("--widths", type=float, nargs="+", default=WIDTHS, help="widths, none below --s-min")
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    sr.settings.verbosity = 0
    warnings.filterwarnings("ignore")
    if args.large:
        from da_speed import cells

        base = cells(50)
        datasets = [(None, s, lambda s=s: random_labels(base, s)) for s in SEEDS] + [
            (
                0.1,
                s,
                lambda s=s: sr.datasets.semi_synthetic_da(
                    base, "leiden", delta=0.1, random_state=s, copy=True
                ),
            )
            for s in SEEDS
        ]
    else:
        import scanpy as sc

        pbmc = sc.datasets.pbmc68k_reduced()
        datasets = [(None, s, lambda s=s: random_labels(pbmc, s)) for s in SEEDS] + [
            (d, s, lambda d=d, s=s: sr.datasets.pbmc68k_da(d, random_state=s))
            for d in (0.1, 0.2)
            for s in SEEDS
        ]
    rows = []
    for delta, seed, make in datasets:
        rows += score_dataset(make(), seed, delta, args.s_min, args.widths, args.variants)
        Path(args.out).write_text(
            json.dumps({"machine": machine(), "setting": vars(args), "runs": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
