"""Issue 11: the DA tool's default call against variants of it, side by side with MELD.

``sr.tl.differential_abundance(adata, "condition", reference="control", target="treated",
use_rep="X_pca", random_state=seed)`` with its defaults, and the same call with one option changed
(``--variants``): ``scaling="global"`` (the representation scaled by one number, its root mean
variance, instead of each dimension to unit sd), ``base="gaussian"`` (the network learns the residual around
the exact fields of a Gaussian per condition, shrunk towards the pooled Gaussian by the held-out
label log-likelihood), ``base="mixture"`` (around a Gaussian mixture whose components the conditions share;
also with a weight decay of 1, 3 or 10, or with ``condition_dim=0``, "shared residual": the network does not
see the condition, also trained for 50, 100 or 200 steps), ``solver_steps=1`` (one rk4 step instead of two), ``precision="bf16-mixed"``
(the network in bfloat16 when training and scoring; ``"bf16 fast"`` also trains 1,500 steps at a
peak learning rate of 3e-3 and scores with one rk4 step, ``"bf16 6000 steps"`` trains twice the
default's steps), or a training or network
option (weight decay, peak learning rate, condition embedding size, network width). Datasets: random labels on
``pbmc68k_reduced`` (no DA: every log-ratio is noise) and the semi-synthetic labels of section 3
(``sr.datasets.pbmc68k_da``, delta 0.1 and 0.2, or ``--deltas``), seeds 0-2; ``--large``: the 20,000-cell Gaussian
set of ``da_speed.py`` in all 50 PCs (or its first ``--n-dims``), random labels and ``sr.datasets.semi_synthetic_da`` at the
same deltas. MELD on all 50 PCs in the same run.
Reported per call: noise sd and share beyond log 1.5, PR-AUC, NAR, CSP, RMSE (``noise_floor.py``),
the base's shrinkage, the width ``bandwidth="auto"`` chose, and the wall time.

    OMP_NUM_THREADS=1 python benchmarks/da_variants.py --deltas 0.1 0.2 0.4 --variants default "global scaling" \
        --out benchmarks/results/scaling.json           # about 5 min on one core
    OMP_NUM_THREADS=1 python benchmarks/da_variants.py --variants default "gaussian base" \
        --out benchmarks/results/gaussian_base.json     # about 20 min on one core
    OMP_NUM_THREADS=1 python benchmarks/da_variants.py --large --seeds 0 --variants default \
        --out benchmarks/results/gaussian_base_large_default.json  # 20,000 cells; one variant per core
    OMP_NUM_THREADS=1 python benchmarks/da_variants.py --deltas 0.1 0.2 0.4 --variants default "mixture base" \
        "mixture base, shared residual" "mixture base, shared residual, 50 steps" \
        --out benchmarks/results/mixture_base_bagged.json  # about 13 min on one core
    OMP_NUM_THREADS=1 python benchmarks/da_variants.py --deltas 0.1 0.2 0.4 --variants default "one rk4 step" \
        --out benchmarks/results/one_step.json          # about 6 min on one core
    OMP_NUM_THREADS=1 python benchmarks/da_variants.py --deltas 0.1 0.2 0.4 --variants default bf16 \
        --out benchmarks/results/bf16.json              # about 6 min on one core
    OMP_NUM_THREADS=1 python benchmarks/da_variants.py --large --n-dims 20 --variants default "bf16 fast" \
        --out benchmarks/results/bf16_fast_large20.json  # 20,000 cells x 20 PCs (goal 6); one variant per core

Results: ``--out`` (written after every dataset).
"""

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from _common import machine
from noise_floor import da_row, meld_score, noise_row, random_labels

import scratio as sr

VARIANTS = {
    "default": {},
    "global scaling": {"scaling": "global"},
    "gaussian base": {"base": "gaussian"},
    "mixture base": {"base": "mixture"},
    **{
        f"mixture base, weight decay {w:g}": {"base": "mixture", "train_kwargs": {"weight_decay": w}}
        for w in (1, 3, 10)
    },
    "mixture base, shared residual": {"base": "mixture", "condition_dim": 0},
    **{
        f"mixture base, shared residual, {n} steps": {"base": "mixture", "condition_dim": 0, "n_steps": n}
        for n in (50, 100, 200)
    },
    "one rk4 step": {"solver_steps": 1},
    "weight decay 0.3": {"train_kwargs": {"weight_decay": 0.3}},
    "weight decay 1": {"train_kwargs": {"weight_decay": 1.0}},
    "weight decay 3": {"train_kwargs": {"weight_decay": 3.0}},
    "lr 3e-3": {"train_kwargs": {"lr": 3e-3}},
    "condition_dim 4": {"condition_dim": 4},
    "width 128": {"width": 128},
    "width 64": {"width": 64},
    "bf16": {"precision": "bf16-mixed"},
    "bf16 6000 steps": {"precision": "bf16-mixed", "n_steps": 6000},
    "bf16 fast": {
        "precision": "bf16-mixed",
        "n_steps": 1500,
        "train_kwargs": {"lr": 3e-3},
        "solver_steps": 1,
    },
}
METRICS = ["sd", "flagged", "pr_auc", "nar", "csp", "rmse", "seconds"]


def score_dataset(adata, seed, is_da, variants):
    """One row per variant and one for MELD."""
    rows = []
    for name in variants:
        options = VARIANTS[name]
        start = time.perf_counter()
        out = sr.tl.differential_abundance(adata, "condition", reference="control", target="treated",
                                           use_rep="X_pca", random_state=seed, copy=True, **options)  # fmt: skip
        seconds = time.perf_counter() - start
        values = out.obs["scratio_da"].to_numpy(float)
        params = out.uns["scratio_da"]["params"]
        rows.append({"method": name, **noise_row(values), **(da_row(values, adata) if is_da else {}),
                     "seconds": round(seconds, 2), "bandwidth_used": params["bandwidth_used"],
                     "n_dims": params["n_dims"], "shrinkage": params["training"].get("base_shrinkage")})  # fmt: skip
    meld, seconds = meld_score(adata, adata.obsm["X_pca"].shape[1], seed)
    rows.append({"method": "meld", **noise_row(meld), **(da_row(meld, adata) if is_da else {}),
                 "seconds": round(seconds, 2)})  # fmt: skip
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--deltas", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument(
        "--large", action="store_true", help="the 20,000-cell Gaussian set (all 50 PCs) instead"
    )
    parser.add_argument("--n-dims", type=int, default=50, help="with --large: its leading PCs (goal 6: 20)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["default"])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    sr.settings.verbosity = 0
    if args.large:
        from da_speed import cells

        large = cells(args.n_dims)
    else:
        import scanpy as sc

        pbmc = sc.datasets.pbmc68k_reduced()
    runs = []
    datasets = [("noise", None, seed) for seed in args.seeds]
    datasets += [("da", delta, seed) for delta in args.deltas for seed in args.seeds]
    for part, delta, seed in datasets:
        if part == "noise":
            adata = random_labels(large if args.large else pbmc, seed)
        elif args.large:
            adata = sr.datasets.semi_synthetic_da(large, "leiden", delta=delta, random_state=seed, copy=True)
        else:
            adata = sr.datasets.pbmc68k_da(delta, random_state=seed)
        for row in score_dataset(adata, seed, part == "da", args.variants):
            runs.append(
                {
                    "part": part,
                    "delta": delta,
                    "seed": seed,
                    "dataset": "gaussian" if args.large else "pbmc68k",
                    **row,
                }
            )
            print(runs[-1], flush=True)
        frame = pd.DataFrame(runs)
        summary = (frame.groupby(["part", "delta", "method"], dropna=False, sort=False)
                   [[m for m in METRICS if m in frame]].mean().round(4).reset_index())  # fmt: skip
        Path(args.out).write_text(json.dumps({
            "machine": machine(), "variants": VARIANTS, "runs": runs,
            "summary": json.loads(summary.to_json(orient="records")),
        }, indent=1))  # fmt: skip
    print(summary.to_string())


if __name__ == "__main__":
    main()
