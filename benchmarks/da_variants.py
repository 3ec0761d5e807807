"""Issue 11: the DA tool's default call against variants of it, side by side with MELD.

``sr.tl.differential_abundance(adata, "condition", reference="control", target="treated",
use_rep="X_pca", random_state=seed)`` with its defaults (since 2026-12-07 a mixture base and 100 training
steps, and later that day ``condition_weight="auto"``; results written before these call "default" what is now
``"no base"``, ``base=None``, or ``"condition weight 1"``), and the same call with one option changed
(``--variants``): ``condition_weight=1`` or ``0`` (the network's dependence on the condition kept whole or
dropped, instead of chosen on the held-out cells), every column of ``X_pca`` (``n_pcs=None``, "all PCs"), ``scaling="global"`` (the representation scaled by one number, its root mean
variance, instead of each dimension to unit sd), ``base="gaussian"`` (the network learns the residual around
the exact fields of a Gaussian per condition, shrunk towards the pooled Gaussian by the held-out
label log-likelihood), ``base="mixture"`` (around a Gaussian mixture whose components the conditions share;
also with a weight decay of 1, 3 or 10, or with ``condition_dim=0``, "shared residual": the network does not
see the condition, also trained for 50, 100 or 200 steps, and with 50 steps on 20 or all PCs or with
``scaling="global"``; or with the network seeing the condition through an embedding of size 1, trained for
100 steps, or with conditions dropped in 75% of the training cells instead of 25%), ``solver_steps=1`` (one rk4 step instead of two),
``divergence="hutchinson"`` (one probe per cell for the network's divergence; a base's stays exact), ``precision="bf16-mixed"``
(the network in bfloat16 when training and scoring; ``"bf16 fast"`` also trains 1,500 steps at a
peak learning rate of 3e-3 and scores with one rk4 step, ``"bf16 6000 steps"`` trains twice the
default's steps), or a training or network
option (weight decay, peak learning rate, share of cells held out to choose the width, condition
embedding size, network width), or the default call with the widest width wherever the chosen one's held-out
gain lies within one or two standard errors of 0 (``"width guard 1 SE"``, ``"width guard 2 SE"``). Datasets: random labels on
``pbmc68k_reduced`` (no DA: every log-ratio is noise) and the semi-synthetic labels of section 3
(``sr.datasets.pbmc68k_da``, delta 0.1 and 0.2, or ``--deltas``), seeds 0-2; ``--large``: the 20,000-cell Gaussian
set of ``da_speed.py`` in all 50 PCs (or its first ``--n-dims``), random labels and ``sr.datasets.semi_synthetic_da`` at the
same deltas; ``--shifted``: ``sr.datasets.shifted_gaussians`` (``--n-obs`` cells in ``--n-dims``, 10 by default,
half of them shifted by ``--locs`` along the diagonal, written as ``delta``), a DA that is a continuous shift rather than a change in
the shares of states, with the exact per-cell log-ratio. MELD on all PCs in the same run.
Reported per call: noise sd and share beyond log 1.5, PR-AUC, NAR, CSP, RMSE (``noise_floor.py``), on
shifted Gaussians R² and Pearson correlation against the exact log-ratio (MELD: its logit, the log-ratio for
conditions of equal size), the base's shrinkage, the width ``bandwidth="auto"`` chose (and the held-out gain of every width it scored, per condition weight;
runs before the weight was chosen have one weight, 1, and record the widths alone), the condition weight chosen,
and the wall time.

    OMP_NUM_THREADS=1 python benchmarks/da_variants.py --deltas 0.1 0.2 0.4 --variants default "global scaling" \
        --out benchmarks/results/scaling.json           # about 5 min on one core
    OMP_NUM_THREADS=1 python benchmarks/da_variants.py --variants default "gaussian base" \
        --out benchmarks/results/gaussian_base.json     # about 20 min on one core
    OMP_NUM_THREADS=1 python benchmarks/da_variants.py --large --seeds 0 --variants default \
        --out benchmarks/results/gaussian_base_large_default.json  # 20,000 cells; one variant per core
    OMP_NUM_THREADS=1 python benchmarks/da_variants.py --deltas 0.1 0.2 0.4 --variants default "mixture base" \
        "mixture base, shared residual" "mixture base, shared residual, 50 steps" \
        --out benchmarks/results/mixture_base_bagged.json  # about 13 min on one core
    OMP_NUM_THREADS=1 python benchmarks/da_variants.py --shifted --variants default "mixture base" \
        "mixture base, shared residual, 50 steps" --out benchmarks/results/mixture_base_shifted.json
    OMP_NUM_THREADS=1 python benchmarks/da_variants.py --deltas 0.1 0.2 0.4 --variants default "one rk4 step" \
        --out benchmarks/results/one_step.json          # about 6 min on one core
    OMP_NUM_THREADS=1 python benchmarks/da_variants.py --deltas 0.1 0.2 0.4 --variants default bf16 \
        --out benchmarks/results/bf16.json              # about 6 min on one core
    OMP_NUM_THREADS=1 python benchmarks/da_variants.py --large --n-dims 20 --variants default "bf16 fast" \
        --out benchmarks/results/bf16_fast_large20.json  # 20,000 cells x 20 PCs (goal 6); one variant per core
    OMP_NUM_THREADS=1 python benchmarks/da_variants.py --deltas 0.1 0.2 0.4 --variants default "all PCs" --n-fits 4 \
        --out benchmarks/results/mixture_fits4_pbmc.json  # a mixture base of four fits instead of eight

Results: ``--out`` (written after every dataset).
"""

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from _common import machine
from noise_floor import da_row, meld_score, noise_row, random_labels

import scratio as sr

VARIANTS = {
    "default": {},
    "no base": {"base": None},
    "condition weight 1": {"condition_weight": 1},
    "condition weight 0": {"condition_weight": 0},
    "all PCs, condition weight 1": {"n_pcs": None, "condition_weight": 1},
    "all PCs": {"n_pcs": None},
    "no base, all PCs": {"base": None, "n_pcs": None},
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
    **{
        f"mixture base, shared residual, 50 steps, {label}": {
            "base": "mixture",
            "condition_dim": 0,
            "n_steps": 50,
            **option,
        }
        for label, option in (
            ("20 PCs", {"n_pcs": 20}),
            ("all PCs", {"n_pcs": None}),
            ("global scaling", {"scaling": "global"}),
        )
    },  # fmt: skip
    "mixture base, condition_dim 1": {"base": "mixture", "condition_dim": 1},
    **{f"mixture base, {n} steps": {"base": "mixture", "n_steps": n} for n in (100, 200)},
    "mixture base, p_drop 0.75": {"base": "mixture", "train_kwargs": {"p_drop": 0.75}},
    "one rk4 step": {"solver_steps": 1},
    "all PCs, one rk4 step": {"n_pcs": None, "solver_steps": 1},
    "hutchinson": {"divergence": "hutchinson"},
    "exact": {"divergence": "exact"},
    "all PCs, exact": {"n_pcs": None, "divergence": "exact"},
    "all PCs, hutchinson": {"n_pcs": None, "divergence": "hutchinson"},
    "weight decay 0.3": {"train_kwargs": {"weight_decay": 0.3}},
    "weight decay 1": {"train_kwargs": {"weight_decay": 1.0}},
    "weight decay 3": {"train_kwargs": {"weight_decay": 3.0}},
    "lr 3e-3": {"train_kwargs": {"lr": 3e-3}},
    "validation 0.2": {"train_kwargs": {"validation_fraction": 0.2}},
    "validation 0.3": {"train_kwargs": {"validation_fraction": 0.3}},
    "width guard 1 SE": {},  # the default call with a rule of WIDTH_GUARDS on the width
    "width guard 2 SE": {},
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
METRICS = ["sd", "flagged", "pr_auc", "nar", "csp", "rmse", "r2", "pearson", "seconds"]
#: Variants whose width is the widest candidate when the chosen one's held-out gain lies within this
#: many standard errors of 0 (the held-out labels see no signal): a rule the tool does not have.
WIDTH_GUARDS = {"width guard 1 SE": 1.0, "width guard 2 SE": 2.0}


@contextmanager
def width_guard(n_se: float | None):
    """Within it, the DA tool's ``bandwidth="auto"`` follows :data:`WIDTH_GUARDS`' rule (``None``: unchanged)."""
    from scratio.tl import _differential_abundance as tool

    original = tool._select_bandwidth

    def guarded(condition_log_densities, x, labels, held_out, conditions, s_min):
        width, table, scored = original(condition_log_densities, x, labels, held_out, conditions, s_min)
        if scored is None:
            return width, table, scored
        truth = pd.Categorical(labels, categories=conditions).codes[scored.rows]
        gains = tool._held_out_gains(scored.log_p, truth, tool._log_shares(labels, conditions), conditions)
        if gains.mean() >= n_se * gains.std(ddof=1) / np.sqrt(len(gains)):
            return width, table, scored
        widest = tool.BANDWIDTH_CANDIDATES[-1]
        rescored = tool.ScoredRows(scored.rows, widest, *condition_log_densities(x[scored.rows], widest))
        return widest, table, rescored

    if n_se is not None:
        tool._select_bandwidth = guarded
    try:
        yield
    finally:
        tool._select_bandwidth = original


def shift_row(values, adata) -> dict:
    """Against the exact per-cell log-ratio of shifted Gaussians: R² and Pearson correlation."""
    from sklearn.metrics import r2_score

    truth = adata.obs["true_log_ratio"].to_numpy(float)
    return {
        "r2": round(r2_score(truth, values), 4),
        "pearson": round(float(np.corrcoef(values, truth)[0, 1]), 4),
    }


def score_dataset(adata, seed, part, variants):
    """One row per variant and one for MELD."""
    metrics = {"noise": lambda v, a: {}, "da": da_row, "shift": shift_row}[part]
    rows = []
    for name in variants:
        options = VARIANTS[name]
        start = time.perf_counter()
        with width_guard(WIDTH_GUARDS.get(name)):
            out = sr.tl.differential_abundance(adata, "condition", reference="control", target="treated",
                                               use_rep="X_pca", random_state=seed, copy=True, **options)  # fmt: skip
        seconds = time.perf_counter() - start
        values = out.obs["scratio_da"].to_numpy(float)
        params = out.uns["scratio_da"]["params"]
        selection = out.uns["scratio_da"].get("bandwidth_selection")
        gains = (  # per condition weight scored, per width
            None
            if selection is None
            else {
                weight: dict(zip(table["bandwidth"], table["held_out_gain"].round(6), strict=True))
                for weight, table in selection.groupby("condition_weight")
            }
        )
        rows.append({"method": name, **noise_row(values), **metrics(values, adata),
                     "seconds": round(seconds, 2), "bandwidth_used": params["bandwidth_used"], "held_out_gains": gains,
                     "n_dims": params["n_dims"], "shrinkage": params["training"].get("base_shrinkage"),
                     "condition_weight_used": params.get("condition_weight_used")})  # fmt: skip
    meld, seconds = meld_score(adata, adata.obsm["X_pca"].shape[1], seed)
    rows.append({"method": "meld", **noise_row(meld), **metrics(meld, adata),
                 "seconds": round(seconds, 2)})  # fmt: skip
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--deltas", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument(
        "--large", action="store_true", help="the 20,000-cell Gaussian set (all 50 PCs) instead"
    )
    parser.add_argument("--shifted", action="store_true", help="shifted Gaussians instead")
    parser.add_argument("--n-obs", type=int, default=2000, help="with --shifted: cells")
    parser.add_argument("--locs", type=float, nargs="+", default=[0.5, 1.0], help="with --shifted: shifts")
    parser.add_argument(
        "--n-dims",
        type=int,
        help="with --large: its leading PCs (50; goal 6: 20); with --shifted: dimensions (10)",
    )
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["default"])
    parser.add_argument(
        "--n-fits", type=int, help="Gaussian mixtures fitted for a mixture base (scratio.core.base.N_FITS, 8)"
    )
    parser.add_argument(
        "--dimensions-per-probe",
        type=int,
        help='dimensions per Hutchinson probe of divergence="auto" (scratio.tl._runner.DIMENSIONS_PER_PROBE, 16)',
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    sr.settings.verbosity = 0
    if args.n_fits is not None:
        sr.core.base.N_FITS = args.n_fits  # read by every fit of a mixture base
    if args.dimensions_per_probe is not None:
        sr.tl._runner.DIMENSIONS_PER_PROBE = args.dimensions_per_probe  # read by every scoring call
    if args.large:
        from da_speed import cells

        large = cells(args.n_dims or 50)
    elif not args.shifted:
        import scanpy as sc

        pbmc = sc.datasets.pbmc68k_reduced()
    runs = []
    if args.shifted:
        datasets = [("shift", loc, seed) for loc in args.locs for seed in args.seeds]
    else:
        datasets = [("noise", None, seed) for seed in args.seeds]
        datasets += [("da", delta, seed) for delta in args.deltas for seed in args.seeds]
    for part, delta, seed in datasets:
        if part == "shift":
            adata = sr.datasets.shifted_gaussians(args.n_obs, args.n_dims or 10, loc=delta, random_state=seed)
            names = {"shifted": "treated", "reference": "control"}
            adata.obs["condition"] = adata.obs["condition"].map(names).astype("category")
        elif part == "noise":
            adata = random_labels(large if args.large else pbmc, seed)
        elif args.large:
            adata = sr.datasets.semi_synthetic_da(large, "leiden", delta=delta, random_state=seed, copy=True)
        else:
            adata = sr.datasets.pbmc68k_da(delta, random_state=seed)
        for row in score_dataset(adata, seed, part, args.variants):
            runs.append(
                {
                    "part": part,
                    "delta": delta,
                    "seed": seed,
                    "dataset": "shifted" if args.shifted else "gaussian" if args.large else "pbmc68k",
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
