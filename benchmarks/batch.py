"""Known batch shifts in real cells: ``sr.tl.batch_effect_score`` against scib-metrics.

:func:`scanpy.datasets.pbmc68k_reduced` (700 cells; cell types from ``obs["bulk_labels"]``, the
types with fewer than ``MIN_TYPE_CELLS`` cells left out) is split into two batches at random.
The cells of ``batch_1`` in the affected types (``AFFECTED``) are moved in the first ``n_pcs``
columns of ``X_pca`` by ``strength x base`` along a random unit direction ``u``, where ``base``
is the pooled within-type standard deviation of ``X_pca @ u`` (a strength-1 shift is one
within-type sd). Strengths 0, 0.25, 0.5, 1 and 2.

Per strength:

``scratio``
    ``uns["scratio_batch"]["score"]``, the mean ``|log p(x | type, batch) - log p(x | type)|``
    over all cells (tool defaults), and the per-cell ``|log r|``;
scib-metrics
    ``ilisi_knn``, ``kbet_per_label``, ``graph_connectivity`` and ``silhouette_batch`` on the
    same embedding (90 pynndescent neighbours, as in scib-metrics' ``Benchmarker``). These are
    integration scores: higher means better mixed, so a growing batch effect should lower them
    (Spearman -1 is the ideal there, +1 for scratio). Per cell: the iLISI of
    :func:`scib_metrics.lisi_knn` (lower: less mixed).

Reported: Spearman of each score with the strength, and per strength > 0 the AUROC of the
per-cell score (``|log r|``; ``-iLISI``) for "the cell's type is affected".

    python benchmarks/batch.py --quick   # 1 seed
    python benchmarks/batch.py --full    # 3 seeds

scib-metrics (with jax, CPU) is a benchmark dependency only. Results go to
``results/batch_{preset}.json``. Torch uses ``OMP_NUM_THREADS`` threads (1 if unset).
"""

import argparse
import time
import warnings

import numpy as np
import pandas as pd
from _common import add_preset_modes, start_tool_run, write_results
from scipy.stats import spearmanr

import scratio as sr

STRENGTHS = [0.0, 0.25, 0.5, 1.0, 2.0]
AFFECTED = ["CD14+ Monocyte", "CD19+ B", "CD8+ Cytotoxic T"]
MIN_TYPE_CELLS = 20
SCIB = ["ilisi_knn", "kbet_per_label", "graph_connectivity", "silhouette_batch"]
SCORES = ["scratio", *SCIB]

PRESETS = {
    "quick": {"seeds": [0], "strengths": STRENGTHS, "n_pcs": 10, "n_neighbors": 90},
    "full": {"seeds": [0, 1, 2], "strengths": STRENGTHS, "n_pcs": 10, "n_neighbors": 90},
}


def base_data(n_pcs: int):
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()
    counts = adata.obs["bulk_labels"].value_counts()
    keep = adata.obs["bulk_labels"].isin(counts[counts >= MIN_TYPE_CELLS].index).to_numpy()
    adata = adata[keep].copy()
    adata.obs["cell_type"] = adata.obs["bulk_labels"].cat.remove_unused_categories()
    adata.obsm["X_pca"] = np.ascontiguousarray(adata.obsm["X_pca"][:, :n_pcs], dtype=np.float32)
    return adata


def shifted(base, strength: float, seed: int):
    """The cells split into two batches at random, ``batch_1`` of the affected types shifted."""
    rng = np.random.default_rng(seed)
    adata = base.copy()
    x = adata.obsm["X_pca"].astype(np.float64)
    batch = rng.integers(2, size=adata.n_obs)
    u = rng.normal(size=x.shape[1])
    u /= np.linalg.norm(u)
    projection = pd.Series(x @ u)
    within = projection - projection.groupby(adata.obs["cell_type"].to_numpy()).transform("mean")
    base_shift = float(np.sqrt((within**2).mean()))
    affected = adata.obs["cell_type"].isin(AFFECTED).to_numpy()
    x = x + (strength * base_shift) * u * (affected & (batch == 1))[:, None]
    adata.obsm["X_pca"] = x.astype(np.float32)
    adata.obs["batch"] = pd.Categorical([f"batch_{b}" for b in batch], categories=["batch_0", "batch_1"])
    adata.obs["affected"] = affected
    return adata, base_shift


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, score))


def run_scib(adata, n_neighbors: int) -> tuple[dict, np.ndarray]:
    import scib_metrics
    from scib_metrics.nearest_neighbors import pynndescent

    x = adata.obsm["X_pca"]
    batches = adata.obs["batch"].cat.codes.to_numpy()
    labels = adata.obs["cell_type"].cat.codes.to_numpy()
    neighbors = pynndescent(x, n_neighbors=n_neighbors, random_state=0)
    scores = {
        "ilisi_knn": float(scib_metrics.ilisi_knn(neighbors, batches)),
        "kbet_per_label": float(scib_metrics.kbet_per_label(neighbors, batches, labels)),
        "graph_connectivity": float(scib_metrics.graph_connectivity(neighbors, labels)),
        "silhouette_batch": float(scib_metrics.silhouette_batch(x, labels, batches)),
    }
    per_cell_ilisi = np.asarray(scib_metrics.lisi_knn(neighbors, batches), dtype=np.float64)
    return scores, per_cell_ilisi


def run_one(base, strength: float, seed: int, setting: dict) -> dict:
    adata, base_shift = shifted(base, strength, seed)
    start = time.perf_counter()
    sr.tl.batch_effect_score(adata, "batch", "cell_type", use_rep="X_pca", random_state=seed)
    scratio_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scib, ilisi = run_scib(adata, setting["n_neighbors"])
    scib_seconds = time.perf_counter() - start
    per_cell = np.abs(adata.obs["scratio_batch"].to_numpy(np.float64))
    affected = adata.obs["affected"].to_numpy()
    row = {
        "seed": seed, "strength": strength, "base_shift": round(base_shift, 4),
        "scratio": float(adata.uns["scratio_batch"]["score"]), **scib,
        "scratio_mean_abs_affected": float(per_cell[affected].mean()),
        "scratio_mean_abs_unaffected": float(per_cell[~affected].mean()),
        "scratio_seconds": round(scratio_seconds, 1), "scib_seconds": round(scib_seconds, 1),
    }  # fmt: skip
    if strength > 0:
        row["scratio_cell_auroc"] = auroc(per_cell, affected)
        row["ilisi_cell_auroc"] = auroc(-ilisi, affected)
    return row


def summarise(runs: list[dict]) -> dict:
    frame = pd.DataFrame(runs)
    per_seed = []
    for seed, group in frame.groupby("seed"):
        row = {"seed": int(seed)}
        for score in SCORES:
            # None where the score does not change with the strength (Spearman undefined)
            constant = group[score].nunique() == 1
            rho = None if constant else spearmanr(group[score], group["strength"]).statistic
            row[f"{score}_spearman"] = None if rho is None else round(float(rho), 3)
        per_seed.append(row)
    by_strength = frame.groupby("strength")[
        [
            *SCORES,
            "scratio_mean_abs_affected",
            "scratio_mean_abs_unaffected",
            "scratio_cell_auroc",
            "ilisi_cell_auroc",
        ]
    ].mean()
    return {
        "per_seed": per_seed,
        "by_strength_mean_over_seeds": [
            {k: None if pd.isna(v) else v for k, v in r.items()}
            for r in by_strength.round(4).reset_index().to_dict("records")
        ],
    }


def print_tables(final: dict) -> None:
    s = final["summary"]
    print("\n| score | Spearman with strength (per seed) | ideal |")
    print("|---|---|---|")
    for score in SCORES:
        values = ", ".join("constant" if r[f"{score}_spearman"] is None else f"{r[f'{score}_spearman']:g}"
                           for r in s["per_seed"])  # fmt: skip
        print(f"| {score} | {values} | {'+1' if score == 'scratio' else '-1'} |")
    print(
        "\n| strength | scratio score | ilisi_knn | kbet_per_label | graph_connectivity | silhouette_batch "
        "| scratio per-cell AUROC | iLISI per-cell AUROC |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in s["by_strength_mean_over_seeds"]:
        cells = " | ".join(f"{r[k]:.3f}" for k in SCORES)
        aucs = " | ".join(
            "-" if pd.isna(r[k]) else f"{r[k]:.3f}" for k in ("scratio_cell_auroc", "ilisi_cell_auroc")
        )
        print(f"| {r['strength']:g} | {cells} | {aucs} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_preset_modes(parser)
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--strengths", type=float, nargs="+")
    parser.add_argument("--n-pcs", type=int)
    parser.add_argument("--n-neighbors", type=int)
    parser.add_argument("--out")
    args = parser.parse_args()
    setting, out = start_tool_run(args, PRESETS, "batch")
    warnings.filterwarnings("ignore", category=UserWarning)

    base = base_data(setting["n_pcs"])
    runs = []
    for seed in setting["seeds"]:
        for strength in setting["strengths"]:
            row = run_one(base, strength, seed, setting)
            runs.append(row)
            print(
                f"seed {seed} strength {strength:g}: scratio {row['scratio']:.3f} ({row['scratio_seconds']} s) "
                + " ".join(f"{k} {row[k]:.3f}" for k in SCIB)
                + f" ({row['scib_seconds']} s)",
                flush=True,
            )
    final = write_results(
        out,
        setting=setting | {"affected_types": AFFECTED, "min_type_cells": MIN_TYPE_CELLS},
        packages=("scratio", "torch", "scib-metrics", "jax", "scanpy", "scikit-learn", "numpy"),
        protocol={
            "data": f"pbmc68k_reduced, bulk_labels types with >= {MIN_TYPE_CELLS} cells, first n_pcs of X_pca",
            "shift": "batch_1 cells of the affected types moved by strength x (pooled within-type sd along u) x u",
            "scratio": "uns['scratio_batch']['score'] (mean |log r| over all cells), tool defaults",
            "scib": "scib-metrics on the same embedding, pynndescent neighbours; higher = better mixed",
            "cell_auroc": "per-cell |log r| (scratio) or -iLISI (scib lisi_knn) against 'type is affected'",
        },
        summary=summarise(runs),
        runs=runs,
    )
    print_tables(final)


if __name__ == "__main__":
    main()
