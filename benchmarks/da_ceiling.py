"""Issue 11, goal 2: how well can a density ratio rank section 3's semi-synthetic DA cells at all?

The truth of section 3's protocol is constant within clusters (pbmc68k's Leiden clusters; on
the 20,000 cells the Gaussian each cell was drawn from); MELD smooths the labels over a kNN
graph. scratio estimates a ratio of densities smoothed by a Gaussian in the Euclidean
representation. This script asks where kernel estimates of that same ratio stand: for every
cell, the log-ratio of two Gaussian kernel density estimates (treated over control cells, the
cell's own label left out) at each width of a grid, with the representation scaled per
dimension (the DA tool's default) or by one number (``scaling="global"``), and the share of
treated cells among its ``k`` nearest cells. The width (or ``k``) with the highest mean PR-AUC
is chosen with the truth: an oracle no estimator has, so its PR-AUC is a ceiling for kernel
estimates of the ratio. The DA tool's default call (all 50 PCs) and MELD (all 50 PCs, as in
section 3) run on the same datasets. Kernel estimates use the dimensions the DA tool chose
(``n_pcs="auto"``) and all 50 PCs.

    OMP_NUM_THREADS=1 python benchmarks/da_ceiling.py --out benchmarks/results/da_ceiling.json
    OMP_NUM_THREADS=1 python benchmarks/da_ceiling.py --large --out benchmarks/results/da_ceiling_large.json
    python benchmarks/da_ceiling.py --plot benchmarks/results/da_ceiling.json benchmarks/results/da_ceiling_large.json \
        --out benchmarks/results/da_ceiling.png

Datasets: ``sr.datasets.pbmc68k_da`` (700 cells) or, with ``--large``, the 20,000-cell Gaussian
set of ``da_speed.py`` in all 50 PCs with ``sr.datasets.semi_synthetic_da``; deltas 0.1 and 0.2,
seeds 0-2. Results: ``--out``, written after every dataset.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import machine
from noise_floor import da_row, meld_score
from sklearn.neighbors import NearestNeighbors

import scratio as sr

WIDTHS = [0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0]
NEIGHBOURS = [10, 30, 60, 100]


def scaled(x: np.ndarray, scaling: str) -> torch.Tensor:
    """``x`` centred and divided by each column's sd (``"per-dim"``) or by the root mean variance (``"global"``)."""
    scale = x.std(0) if scaling == "per-dim" else np.sqrt(x.var(0).mean())
    return torch.from_numpy((x - x.mean(0)) / scale)


def kde_log_ratios(z: torch.Tensor, treated: np.ndarray, widths, block: int = 1024) -> np.ndarray:
    """``(len(widths), n)``: leave-one-out log-ratio of the treated and control Gaussian KDEs of width ``w``."""
    is_treated = torch.from_numpy(treated)
    n_treated, n_control = int(is_treated.sum()), int((~is_treated).sum())
    out = np.empty((len(widths), len(z)))
    for start in range(0, len(z), block):
        d2 = torch.cdist(z[start : start + block], z).pow(2)
        rows = torch.arange(len(d2))
        d2[rows, rows + start] = torch.inf  # the cell's own label left out
        for i, width in enumerate(widths):
            k = -d2 / (2 * width**2)
            log_treated = torch.logsumexp(k[:, is_treated], 1) - np.log(n_treated)
            log_control = torch.logsumexp(k[:, ~is_treated], 1) - np.log(n_control)
            out[i, start : start + block] = (log_treated - log_control).numpy()
    return out


def neighbour_shares(z: torch.Tensor, treated: np.ndarray, ks) -> np.ndarray:
    """``(len(ks), n)``: share of treated cells among each cell's ``k`` nearest other cells."""
    _, index = NearestNeighbors(n_neighbors=max(ks) + 1).fit(z.numpy()).kneighbors(z.numpy())
    labels = treated[index[:, 1:]]
    return np.stack([labels[:, :k].mean(1) for k in ks])


def score_dataset(adata, seed):
    """Rows of PR-AUC and RMSE for the tool, MELD and every kernel estimate."""
    treated = (adata.obs["condition"] == "treated").to_numpy()
    rows = []

    def add(method, dims, setting, values, seconds=None):
        row = da_row(np.nan_to_num(values, posinf=50, neginf=-50), adata)
        rows.append({"method": method, "dims": dims, "setting": setting, "pr_auc": row["pr_auc"],
                     "rmse": row["rmse"], "seconds": seconds})  # fmt: skip

    start = time.perf_counter()
    out = sr.tl.differential_abundance(adata, "condition", reference="control", target="treated",
                                       use_rep="X_pca", random_state=seed, copy=True)  # fmt: skip
    n_tool = out.uns["scratio_da"]["params"]["n_dims"]
    add("scratio", n_tool, "default", out.obs["scratio_da"].to_numpy(float), time.perf_counter() - start)
    meld, seconds = meld_score(adata, adata.obsm["X_pca"].shape[1], seed)
    add("meld", adata.obsm["X_pca"].shape[1], "default", meld, seconds)
    for n_dims in sorted({n_tool, adata.obsm["X_pca"].shape[1]}):
        x = adata.obsm["X_pca"][:, :n_dims].astype(np.float64)
        for scaling in ("per-dim", "global"):
            for width, values in zip(
                WIDTHS, kde_log_ratios(scaled(x, scaling), treated, WIDTHS), strict=True
            ):
                add(f"kde {scaling}", n_dims, width, values)
        shares = neighbour_shares(scaled(x, "per-dim"), treated, NEIGHBOURS)
        for k, share in zip(NEIGHBOURS, shares, strict=True):
            add("knn share", n_dims, k, share)
    return rows


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, delta, method and dims: the mean PR-AUC of the best setting (chosen with the truth)."""
    frame = frame.assign(dims=np.where(frame["dims"] == frame["n_pcs_all"], "all", "tool's"))
    means = frame.groupby(["dataset", "delta", "method", "dims", "setting"], sort=False)["pr_auc"].mean()
    best = means.groupby(level=[0, 1, 2, 3], sort=False).agg(["max", "idxmax"])
    best["setting"] = [index[-1] for index in best.pop("idxmax")]
    return best.rename(columns={"max": "pr_auc"}).round(4).reset_index()


def plot(paths, out) -> None:
    """PR-AUC against the kernel width, one panel per dataset and delta, the tool and MELD as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.concat([pd.DataFrame(json.loads(Path(p).read_text())["runs"]) for p in paths])
    frame["dims"] = np.where(frame["dims"] == frame["n_pcs_all"], "all PCs", "the tool's PCs")
    panels = frame[["dataset", "n_cells", "delta"]].drop_duplicates().to_numpy()
    colours = {(m, d): f"C{i}" for i, (m, d) in enumerate(
        (m, d) for m in ("kde per-dim", "kde global") for d in ("the tool's PCs", "all PCs"))}  # fmt: skip
    names = {"pbmc68k": "pbmc68k", "gaussian": "simulated"}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), sharey=True, squeeze=False)
    for ax, (dataset, n_cells, delta) in zip(axes[0], panels, strict=True):
        runs = frame[(frame["dataset"] == dataset) & (frame["delta"] == delta)]
        kernels = runs[runs["method"].str.startswith("kde")]
        means = kernels.groupby(["method", "dims", "setting"])["pr_auc"].mean()
        for (method, dims), curve in means.groupby(level=[0, 1]):
            widths = curve.index.get_level_values("setting").astype(float)
            ax.plot(widths, curve.to_numpy(), marker="o", ms=3, color=colours[method, dims],
                    label=f"kernel ratio, {method.removeprefix('kde ')} scaling, {dims}")  # fmt: skip
        for method, style in (("scratio", "-"), ("meld", "--")):
            value = runs.loc[runs["method"] == method, "pr_auc"].mean()
            ax.axhline(
                value,
                color="k",
                ls=style,
                lw=1,
                label=f"{'scratio (default call)' if method == 'scratio' else 'MELD'}",
            )
        ax.set_xscale("log")
        ax.set_xticks(WIDTHS[::2], [f"{w:g}" for w in WIDTHS[::2]])
        ax.minorticks_off()
        ax.set_xlabel("kernel width (sd units of the scaled PCs)")
        ax.set_title(f"{names[dataset]}, {n_cells:,} cells, delta {delta:g}", fontsize=9)
    axes[0, 0].set_ylabel("PR-AUC of the DA cells (mean of 3 seeds)")
    legend = {
        label: handle for ax in axes[0] for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)
    }
    handles, labels = list(legend.values()), list(legend)
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Ranking the DA cells: kernel density ratios at every width, scratio and MELD", fontsize=10)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(out, dpi=150)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", nargs="+", help="results to plot into --out (a PNG) instead of running")
    parser.add_argument(
        "--large", action="store_true", help="the 20,000-cell Gaussian set instead of pbmc68k"
    )
    parser.add_argument("--deltas", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.plot:
        plot(args.plot, args.out)
        return
    sr.settings.verbosity = 0
    if args.large:
        from da_speed import cells

        large = cells(50)
    runs = []
    for delta in args.deltas:
        for seed in args.seeds:
            if args.large:
                adata = sr.datasets.semi_synthetic_da(
                    large, "leiden", delta=delta, random_state=seed, copy=True
                )
            else:
                adata = sr.datasets.pbmc68k_da(delta, random_state=seed)
            for row in score_dataset(adata, seed):
                runs.append({"dataset": "gaussian" if args.large else "pbmc68k", "n_cells": adata.n_obs,
                             "delta": delta, "seed": seed, "n_pcs_all": adata.obsm["X_pca"].shape[1], **row})  # fmt: skip
            summary = summarise(pd.DataFrame(runs))
            Path(args.out).write_text(json.dumps({
                "machine": machine(), "widths": WIDTHS, "neighbours": NEIGHBOURS, "runs": runs,
                "summary": json.loads(summary.to_json(orient="records")),
            }, indent=1))  # fmt: skip
            print(summary.to_string(), flush=True)


if __name__ == "__main__":
    main()
