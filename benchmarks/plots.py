"""Figures for the benchmarks whose scripts write JSON only: Gaussian ratios, mutual information, scale.

python benchmarks/plots.py    # reads results/*.json, writes results/{gaussians,mutual_information,scale}.png
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
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


def main():
    def load(name):
        return json.loads((RESULTS / name).read_text())

    gaussians(load("gaussians_quick_3seeds.json"), load("gaussians_full_loc1_d20_30.json"))
    mutual_information(load("mutual_information_quick_3seeds.json"))
    scale(load("scale.json"))


if __name__ == "__main__":
    main()
