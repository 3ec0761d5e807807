"""Figures for the benchmarks whose scripts write JSON only.

    python benchmarks/plots.py                          # every figure
    python benchmarks/plots.py batch combination donor  # some: results/{name}.png

Reads ``results/*.json``: Gaussian ratios, mutual information, scale, and the batch,
combination and donor tools (their ``_full`` runs).
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from gaussians import REFERENCE_MSE
from matplotlib.ticker import NullFormatter

RESULTS = Path(__file__).parent / "results"
METHODS = {"s1": "S1", "s2": "S2", "naive": "naive"}


def gaussians(quick: dict, full: dict) -> None:
    locs = sorted({row["loc"] for row in quick["summary"]})
    fig, axes = plt.subplots(1, len(locs), figsize=(4.2 * len(locs), 3.6), layout="constrained", sharey=True)
    for ax, loc in zip(axes, locs, strict=True):
        for i, (method, label) in enumerate(METHODS.items()):
            runs = [r for r in quick["runs"] if r["loc"] == loc]
            dims = sorted({r["d"] for r in runs})
            per_d = [[r["estimators"][method]["mse"] for r in runs if r["d"] == d] for d in dims]
            mean = [np.mean(v) for v in per_d]
            ax.errorbar(
                dims, mean, yerr=[np.std(v) for v in per_d], fmt="o-", color=f"C{i}", capsize=3, label=label
            )
            if loc == 1.0:
                points = sorted((r["d"], r["estimators"][method]["mse"]) for r in full["runs"])
                ax.plot(
                    *zip(*points, strict=True), "s", mfc="none", color=f"C{i}", label=f"{label}, full budget"
                )
        reference = REFERENCE_MSE.get(loc)
        if reference:  # known for loc 2 (its ablation) and loc 4 only
            (line,) = ax.plot(
                list(reference), list(reference.values()), "k--", label="reference implementation"
            )
            ax.legend(handles=[line], fontsize=7, loc="lower right")
        ax.set(xscale="log", yscale="log", xlabel="d", title=f"loc {loc:g}")
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0].set_ylabel("MSE vs closed form (mean ± sd, 3 seeds)")
    axes[0].legend(fontsize=7)
    fig.savefig(RESULTS / "gaussians.png", dpi=120)


def mutual_information(results: dict) -> None:
    dims = sorted({r["d"] for r in results["runs"]})
    fig, ax = plt.subplots(figsize=(5, 3.8), layout="constrained")
    ax.plot(dims, [d / 4 for d in dims], "k--", label="true MI = d/4")
    for i, method in enumerate(("s1", "s2")):
        estimates = [
            [r["estimators"][method]["mi_estimate"] for r in results["runs"] if r["d"] == d] for d in dims
        ]
        ax.errorbar(dims, [np.mean(e) for e in estimates], yerr=[np.std(e) for e in estimates], fmt="o-",
                    color=f"C{i}", capsize=3, label=METHODS[method])  # fmt: skip
    ax.set(xlabel="d", ylabel="estimated MI (mean ± sd, 3 seeds)", xticks=dims, title="mutual information")
    ax.legend()
    fig.savefig(RESULTS / "mutual_information.png", dpi=120)


def scale(results: dict) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    for i, mode in enumerate(("fast", "exact")):
        runs = sorted((r for r in results["scoring"] if r["mode"] == mode), key=lambda r: r["n_cells"])
        n = [r["n_cells"] for r in runs]
        axes[0].plot(n, [r["cells_per_second"] for r in runs], "o-", color=f"C{i}", label=mode)
        axes[1].plot(n, [r["growth_mib"] for r in runs], "o-", color=f"C{i}", label=f"{mode}: scoring memory")
    outputs = sorted({(r["n_cells"], r["output_mib"]) for r in results["scoring"]})
    axes[1].plot(*zip(*outputs, strict=True), "k:", label="output array")
    axes[0].set(
        xscale="log", yscale="log", xlabel="cells scored", ylabel="cells/s (one thread)", title="throughput"
    )
    axes[1].set(xscale="log", xlabel="cells scored", ylabel="MiB", title="peak memory beyond the input")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.savefig(RESULTS / "scale.png", dpi=120)


# ---------------------------------------------------------------- batch, combination, donor
ACTS_ON = {
    "all": ("o", "every cell"),
    "state0": ("s", "state-0 cells only"),
    "first=A": ("^", "with first drug A only"),
}


def _per_seed_dots(
    ax, per_seed: list[dict], keys: dict, target: float | None, ylabel: str, title: str
) -> None:
    """One column per score: each seed a dot, the mean a black tick; the target as a dashed line."""
    for i, key in enumerate(keys):
        values = [r[key] for r in per_seed if r.get(key) is not None]
        ax.plot(i, np.mean(values), "_", color="k", ms=22, mew=2)
        ax.plot(
            np.full(len(values), i) + np.linspace(-0.12, 0.12, len(values)), values, "o", color=f"C{i}", ms=4
        )
    if target is not None:
        ax.axhline(target, color="k", ls="--", lw=1, label=f"goal {target:g}")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xticks(range(len(keys)), list(keys.values()), rotation=30, ha="right", fontsize=8)
    lowest = min(min(r[key] for r in per_seed if r.get(key) is not None) for key in keys)
    ax.set(ylabel=ylabel, title=title, ylim=(min(0.8, lowest - 0.05), 1.0))


def combination(results: dict) -> None:
    from matplotlib.lines import Line2D

    runs = pd.DataFrame(results["runs"])
    scores = ["true_mean_abs", "scratio", "logreg_auc", "hgb_auc"]
    pairs = runs.groupby(["first", "second", "acts_on"], sort=False)[scores].agg(["mean", "std"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), layout="constrained")
    panels = [{"scratio": "scratio"}, {"logreg_auc": "logistic regression", "hgb_auc": "gradient boosting"}]
    for ax, panel in zip(axes[:2], panels, strict=True):
        for i, score in enumerate(panel):
            for acts_on, (marker, _) in ACTS_ON.items():
                sub = pairs.xs(acts_on, level="acts_on")
                ax.errorbar(sub[("true_mean_abs", "mean")], sub[(score, "mean")], yerr=sub[(score, "std")],
                            fmt=marker, color=f"C{i}", mfc="none" if acts_on != "all" else None, capsize=2)  # fmt: skip
        ax.set_xlabel("true mean |log r| of the pair (nats)")
        shapes = [Line2D([], [], marker=m, ls="", color="0.3", mfc="none" if k != "all" else None,
                         label=f"second drug moves {where}") for k, (m, where) in ACTS_ON.items()]  # fmt: skip
        colours = [
            Line2D([], [], marker="o", ls="", color=f"C{i}", label=name)
            for i, name in enumerate(panel.values())
        ]
        ax.legend(handles=shapes + (colours if len(panel) > 1 else []), fontsize=7, loc="lower right")
    top = max(pairs[("true_mean_abs", "mean")].max(), pairs[("scratio", "mean")].max()) * 1.05
    axes[0].plot([0, top], [0, top], "k:", lw=1)
    axes[0].text(0.6 * top, 0.68 * top, "y = x", fontsize=8, rotation=35)
    rho = results["summary"]["mean"]
    axes[0].set(ylabel="scratio pair score: mean |log r| (nats)",
                title=f"scratio against the truth (Spearman {rho['scratio']:.3f})")  # fmt: skip
    axes[1].axhline(0.5, color="k", ls=":", lw=1)
    axes[1].set(ylabel="CV ROC AUC, pair vs first drug alone",
                title=f"classifiers (Spearman {rho['logreg_auc']:.3f}, {rho['hgb_auc']:.3f})")  # fmt: skip
    _per_seed_dots(axes[2], results["summary"]["per_seed"],
                   {"scratio": "scratio", "logreg_auc": "logreg AUC", "logreg_info": "logreg log-loss gain",
                    "hgb_auc": "boosting AUC"},
                   0.9, "Spearman with the true effect (16 pairs)", "rank agreement, per seed and mean")  # fmt: skip
    n = results["setting"]["cells_per_group"]
    fig.suptitle(
        f"Combination effects graded by size: 16 drug pairs, {n} cells per group, mean ± sd over 3 seeds"
    )
    fig.savefig(RESULTS / "combination.png", dpi=120)


def donor(results: dict) -> None:
    runs = pd.DataFrame(results["runs"])
    by_donor = runs.groupby("donor", sort=False)
    shifts = by_donor["shift"].first().to_numpy()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.9), layout="constrained")
    panels = {"scratio": "scratio mean log r of treated cells (nats)", "pseudobulk": "pseudobulk: centroid distance",
              "logreg_auc": "per-donor classifier: CV ROC AUC"}  # fmt: skip
    jitter = np.where(shifts == 0, np.linspace(-0.06, 0.06, len(shifts)), 0.0)
    for i, (ax, (score, label)) in enumerate(zip(axes[:3], panels.items(), strict=True)):
        for seed, group in runs.groupby("seed"):
            ax.plot(group["shift"].to_numpy() + jitter, group[score], "o", color=f"C{i}", alpha=0.45, ms=4,
                    label="one seed" if seed == 0 else None)  # fmt: skip
        ax.plot(
            shifts + jitter, by_donor[score].mean(), "_", color="k", ms=12, mew=2, label="mean of 3 seeds"
        )
        ax.set(xlabel="true response: shift of the donor's treated cells", ylabel=label, xscale="symlog",
               xticks=sorted(set(shifts)), xticklabels=[f"{s:g}" for s in sorted(set(shifts))])  # fmt: skip
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(label.split(":")[0])
    grid = np.linspace(0, 3, 600)
    axes[0].plot(grid, grid**2 / 2, "k:", lw=1, label="exact: shift² / 2")
    axes[0].set_yscale("symlog", linthresh=0.1)
    for ax in axes[:3]:
        ax.legend(fontsize=7, loc="upper left")
    per_seed = results["summary"]["per_seed"]
    ax = axes[3]
    names = {"scratio": "scratio", "pseudobulk": "pseudobulk", "logreg_auc": "classifier"}
    for j, metric in enumerate(["spearman_responders", "weak_auroc"]):
        for i, (score, name) in enumerate(names.items()):
            values = [r[f"{score}_{metric}"] for r in per_seed]
            x = j * (len(names) + 1) + i
            ax.plot(x, np.mean(values), "_", color="k", ms=18, mew=2)
            ax.plot(
                np.full(len(values), x) + np.linspace(-0.15, 0.15, len(values)),
                values,
                "o",
                color=f"C{i}",
                ms=5,
                label=name if j == 0 else None,
            )
    ax.axhline(1, color="k", ls="--", lw=1)
    ax.set_xticks(
        [1, len(names) + 2],
        ["Spearman with the shift,\n6 responders", "AUROC, 2 weak responders\nagainst 4 non-responders"],
        fontsize=8,
    )
    ax.set(ylim=(0.5, 1.05), ylabel="per seed (dots) and mean (black)", title="ranking and separation")
    ax.legend(fontsize=7, loc="lower left")
    n = results["setting"]["cells_per_group"]
    fig.suptitle(f"Donor responses graded by strength: 10 donors, {n} cells per donor and treatment, 3 seeds")
    fig.savefig(RESULTS / "donor.png", dpi=120)


EMBEDDINGS = {"uncorrected": "uncorrected", "combat": "ComBat", "harmony": "Harmony", "scvi": "scVI"}
SCIB_LABELS = {"ilisi_knn": "iLISI", "kbet_per_label": "kBET per label", "graph_connectivity": "graph connectivity",
               "silhouette_batch": "batch silhouette"}  # fmt: skip


def batch(results: dict) -> None:
    seeds = results["setting"]["seeds"]
    runs = pd.DataFrame(results["runs"]).drop(columns="by_type")
    runs = runs[runs["seed"].isin(seeds)]
    stats = runs.groupby(["embedding", "strength"], sort=False).agg(["mean", "std"])
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.1), layout="constrained")

    ax = axes[0]
    for i, (name, label) in enumerate(EMBEDDINGS.items()):
        if name in stats.index.get_level_values(0):
            sub = stats.loc[name]
            ax.errorbar(sub.index, sub[("scratio", "mean")], yerr=sub[("scratio", "std")], fmt="o-",
                        color=f"C{i}", capsize=3, label=label)  # fmt: skip
    ax.set(xlabel="strength of the added batch shift (within-type sd)",
           ylabel="scratio score: mean |log r| over cells", title="scratio, before and after correction")  # fmt: skip
    ax.legend(fontsize=8)

    ax = axes[1]
    sub = stats.loc["uncorrected"]
    for i, (score, label) in enumerate(SCIB_LABELS.items()):
        ax.errorbar(sub.index, sub[(score, "mean")], yerr=sub[(score, "std")], fmt="s-", color=f"C{i + 4}",
                    capsize=3, label=label)  # fmt: skip
    ax.set(xlabel="strength of the added batch shift (within-type sd)",
           ylabel="scib-metrics score (higher = better mixed)", title="scib-metrics, uncorrected")  # fmt: skip
    ax.legend(fontsize=8, loc="lower left")

    ax = axes[2]
    localise = {"scratio_cell_auroc": ("scratio per cell: |log r|", "C0", "o-"),
                "scratio_knn_cell_auroc": ("scratio per cell, mean over 15 neighbours", "C0", "o:"),
                "ilisi_cell_auroc": ("iLISI per cell", "C4", "o--"),
                "scratio_type_auroc": ("scratio per type: mean |log r|", "C0", "D-"),
                "kbet_rejection_type_auroc": ("kBET per label: 1 - acceptance", "C5", "D--"),
                "neg_ilisi_type_auroc": ("iLISI per type: mean", "C4", "D:")}  # fmt: skip
    sub = stats.loc["uncorrected"].drop(index=0.0)
    for key, (label, colour, style) in localise.items():
        ax.errorbar(sub.index, sub[(key, "mean")], yerr=sub[(key, "std")], fmt=style, color=colour,
                    mfc="none" if "type" in key else None, capsize=3, label=label)  # fmt: skip
    ax.axhline(0.9, color="k", ls="--", lw=1)
    ax.axhline(0.5, color="k", ls=":", lw=1)
    ax.set(xlabel="strength of the added batch shift (within-type sd)", ylim=(0.3, 1.03),
           ylabel="AUROC, affected types against the others", title="where is the batch effect? (uncorrected)")  # fmt: skip
    ax.legend(fontsize=7, loc="lower right")

    ax = axes[3]
    means = runs.groupby(["embedding", "strength"], sort=False)[["oracle", "scratio"]].mean().reset_index()
    for i, (name, label) in enumerate(EMBEDDINGS.items()):
        sub = means[means["embedding"] == name]
        ax.scatter(sub["oracle"], sub["scratio"], s=20 + 40 * sub["strength"], color=f"C{i}", label=label)
    ax.set_xscale("symlog", linthresh=0.3)
    ax.set_xticks([0, 0.3, 1, 3], ["0", "0.3", "1", "3"])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel="residual shift (oracle: squared Mahalanobis)", ylabel="scratio score: mean |log r|",
           title="corrections: scratio vs residual shift")  # fmt: skip
    ax.legend(fontsize=8, title="marker size: strength", title_fontsize=7)
    fig.suptitle(
        f"Known batch shifts in pbmc68k_reduced (3 of 7 cell types shifted in one batch), mean ± sd over {len(seeds)} seeds"
    )
    fig.savefig(RESULTS / "batch.png", dpi=120)


def main():
    def load(name):
        return json.loads((RESULTS / name).read_text())

    figures = {
        "gaussians": lambda: gaussians(
            load("gaussians_quick_3seeds.json"), load("gaussians_full_loc1_d20_30.json")
        ),
        "mutual_information": lambda: mutual_information(load("mutual_information_quick_3seeds.json")),
        "scale": lambda: scale(load("scale.json")),
        "batch": lambda: batch(load("batch_full.json")),
        "combination": lambda: combination(load("combination_full.json")),
        "donor": lambda: donor(load("donor_full.json")),
    }
    for name in sys.argv[1:] or figures:
        figures[name]()


if __name__ == "__main__":
    main()
