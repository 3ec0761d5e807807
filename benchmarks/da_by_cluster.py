"""Issue 11, goal 2: where the DA tool's ranking loses on 20,000 cells, cluster by cluster.

The 20,000-cell Gaussian set of ``da_speed.py`` (its first 20 PCs, goal 6's data, or
``--n-dims``) with the semi-synthetic labels of section 3 (``sr.datasets.semi_synthetic_da``:
Leiden cluster 1 enriched, cluster 2 depleted, clusters 0 and 3 unaffected). The DA tool with
every default; per cluster, the mean and sd of its log-ratios against the true log-ratio
(``true_log_odds - log(n_treated / n_control)``), and two PR-AUCs: of the scores, and of each
cell's cluster mean in place of its score. The second keeps every cluster's bias and removes the
spread within clusters, so the gap between the two is what the per-cell spread costs. MELD in
the same run. How mixed the clusters are: the share of each cell's 30 nearest cells (in the
standardised PCs) in its own cluster.

``--ensemble K``: also train ``K`` models as the tool trains its one (other seeds, so other
held-out cells, initial weights and batches), scored at the width the tool chose: how much of
the spread within clusters the models share (the correlation of their deviations from their
cluster means), and the PR-AUC of their mean.

    OMP_NUM_THREADS=1 python benchmarks/da_by_cluster.py    # 3 seeds, about 5 min on one core
    OMP_NUM_THREADS=1 python benchmarks/da_by_cluster.py --seeds 0 --ensemble 3 --out benchmarks/results/da_by_cluster_ensemble.json

Results: ``results/da_by_cluster.json`` (``--out``).
"""

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import da_log_ratios, da_tool_model, machine, scoring_of
from da_speed import cells
from noise_floor import meld_score
from sklearn.metrics import average_precision_score
from sklearn.neighbors import NearestNeighbors

import scratio as sr


def own_cluster_share(x, clusters, k=30):
    """Per cell, the share of its ``k`` nearest other cells in its own cluster."""
    x = (x - x.mean(0)) / x.std(0)
    _, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return (clusters[neighbours[:, 1:]] == clusters[:, None]).mean(1)


def cluster_rows(scores, clusters, truth, is_da):
    """Per cluster: cells, true log-ratio, mean and sd of the scores; PR-AUC of scores and cluster means."""
    frame = pd.DataFrame({"cluster": clusters, "score": scores, "truth": truth})
    means = frame.groupby("cluster")["score"].transform("mean").to_numpy()
    per_cluster = frame.groupby("cluster").agg(n_cells=("score", "size"), truth=("truth", "mean"),
                                               mean=("score", "mean"), sd=("score", "std"))  # fmt: skip
    summary = {"pr_auc": average_precision_score(is_da, np.abs(scores)),
               "pr_auc_cluster_means": average_precision_score(is_da, np.abs(means))}  # fmt: skip
    return per_cluster.round(4).reset_index().to_dict("records"), {k: round(v, 4) for k, v in summary.items()}


def ensemble(adata, params, clusters, is_da, n_models, seed):
    """``n_models`` models trained as the tool's, at its width: shared spread and the PR-AUC of their mean."""
    scores = []
    for k in range(n_models):
        model = da_tool_model(adata, params, seed + 1000 * (k + 1))
        scores.append(da_log_ratios(model, params["bandwidth_used"], **scoring_of(params)))
    scores = np.array(scores)
    deviations = np.array([s - pd.Series(s).groupby(clusters).transform("mean").to_numpy() for s in scores])
    correlation = np.atleast_2d(np.corrcoef(deviations))[np.triu_indices(n_models, 1)]  # none for one model
    mean = scores.mean(0)
    return {"n_models": n_models, "pr_auc_each": [round(average_precision_score(is_da, np.abs(s)), 4) for s in scores],
            "pr_auc_mean": round(average_precision_score(is_da, np.abs(mean)), 4),
            "spread_each": np.round(deviations.std(1), 4).tolist(),
            "spread_mean": round(float((mean - pd.Series(mean).groupby(clusters).transform("mean")).std()), 4),
            "deviation_correlations": np.round(correlation, 3).tolist()}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--n-dims", type=int, default=20)
    parser.add_argument("--ensemble", type=int, default=0, help="also train this many models as the tool's")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "da_by_cluster.json"))
    args = parser.parse_args()
    sr.settings.verbosity = 0
    warnings.filterwarnings("ignore", category=FutureWarning)
    base = cells(args.n_dims)
    clusters = base.obs["leiden"].astype(str).to_numpy()
    share = own_cluster_share(base.obsm["X_pca"], clusters)
    mixing = pd.Series(share).groupby(clusters).mean().round(3).to_dict()
    runs = []
    for seed in args.seeds:
        adata = sr.datasets.semi_synthetic_da(base, "leiden", delta=args.delta, random_state=seed, copy=True)
        is_da = adata.obs["is_da"].to_numpy()
        n = adata.obs["condition"].value_counts()
        truth = adata.obs["true_log_odds"].to_numpy() - np.log(n["treated"] / n["control"])
        result = sr.tl.differential_abundance(
            adata, "condition", "control", "treated", random_state=seed, copy=True
        )
        meld, _ = meld_score(adata, args.n_dims, seed)
        for method, scores in (("scratio", result.obs["scratio_da"].to_numpy(np.float64)), ("meld", meld)):
            per_cluster, summary = cluster_rows(scores, clusters, truth, is_da)
            width = result.uns["scratio_da"]["params"]["bandwidth_used"] if method == "scratio" else None
            runs.append(
                {"seed": seed, "method": method, "bandwidth_used": width, **summary, "clusters": per_cluster}
            )
            print(json.dumps(runs[-1]), flush=True)
        if args.ensemble:
            params = result.uns["scratio_da"]["params"]
            runs[-2]["ensemble"] = ensemble(adata, params, clusters, is_da, args.ensemble, seed)
            print(json.dumps(runs[-2]["ensemble"]), flush=True)
        Path(args.out).write_text(json.dumps({
            "setting": vars(args), "machine": machine(), "own_cluster_share_of_30_neighbours": mixing, "runs": runs,
        }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
