"""Semi-synthetic differential abundance (paper Tab. 2 protocol): scratio against MELD, MrVI and Milo.

Real cells get control/treated labels with a known effect per cluster (method.md, section 5):
``P(treated)`` is 0.5 in Leiden clusters 0 and 3, ``0.5 + delta`` in cluster 1 and ``0.5 - delta``
in cluster 2. Every method gives a per-cell treated-vs-control score, scored with
:func:`scratio.datasets.da_metrics` (PR-AUC of ``|score|`` against "cell in cluster 1 or 2", NAR,
CSP). Two datasets:

``pbmc68k``
    :func:`scanpy.datasets.pbmc68k_reduced` (700 cells, bundled with scanpy), 4 Leiden clusters as
    in :func:`scratio.datasets.pbmc68k_da`.
``gaussian``
    ``--n-large`` cells (20,000 by default) drawn from one Gaussian per Leiden cluster, fitted to
    the real 50-PC ``X_pca`` of pbmc68k (mean and covariance), with the real cluster proportions.

scratio, MELD and Milo see the same embedding: the first ``--n-pcs`` columns of ``X_pca``. MrVI
models counts: on pbmc68k it gets the integer UMI counts of the 765 genes, recovered from
``.raw.X`` as ``expm1(raw.X) * n_counts / 1e4``; the Gaussian set has no counts, so MrVI is not
run there.

    python benchmarks/differential_abundance.py --quick   # 8 deltas x 3 seeds on pbmc68k, x 1 seed on 20k cells
    python benchmarks/differential_abundance.py --full    # 8 deltas x 3 seeds on both datasets
    python benchmarks/differential_abundance.py --full --accelerator gpu   # the same on a GPU

Results go to ``results/differential_abundance_{preset}.json`` after every run (``--resume``
skips runs already there) and a plot to ``results/differential_abundance_{preset}.png``.
Torch uses ``OMP_NUM_THREADS`` threads (1 if unset), and pydeseq2 one process.
"""

import argparse
import json
import os
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from _common import (
    add_preset_modes,
    add_tool_kwargs,
    machine,
    meld_likelihoods,
    milo_cell_mean,
    milo_neighbourhoods,
    preset_setting,
)
from anndata import AnnData
from scipy.stats import spearmanr

import scratio as sr

DELTAS = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5]
METHODS = ["scratio", "meld", "mrvi", "milo"]
METRICS = ["pr_auc", "nar", "csp"]
# Paper Tab. 2, mean over delta >= 0.4 (AUC, NAR, CSP); Milo is not in the table.
PAPER = {
    "scratio": {"pr_auc": 0.95, "nar": 9.6, "csp": 0.98},
    "meld": {"pr_auc": 0.93, "nar": 6.45, "csp": 0.99},
    "mrvi": {"pr_auc": 0.89, "nar": 7.33, "csp": 0.97},
}

PRESETS = {
    "quick": {"datasets": ["pbmc68k", "gaussian"], "methods": METHODS, "deltas": DELTAS, "seeds": [0, 1, 2],
              "large_deltas": DELTAS, "large_seeds": [0], "n_large": 20_000},
    "full": {"datasets": ["pbmc68k", "gaussian"], "methods": METHODS, "deltas": DELTAS, "seeds": [0, 1, 2],
             "large_deltas": DELTAS, "large_seeds": [0, 1, 2], "n_large": 20_000},
}  # fmt: skip

# Method settings shared by both presets. Milo's k follows its authors' advice of k >= 5 x the
# number of samples (6 pseudo-replicates here); prop is the share of cells sampled as
# neighbourhood indices (0.1 for small data, 0.05 above ~10,000 cells).
METHOD_SETTINGS = {
    "n_pcs": 10,
    "meld": {"beta": 60, "knn": 5, "likelihood_clip": 1e-6},
    "mrvi": {"max_epochs": 100, "early_stopping": True, "sample_key": "condition (2 samples)"},
    "milo": {"n_neighbors": 30, "prop_small": 0.1, "prop_large": 0.05, "replicates_per_label": 3,
             "design": "~condition", "solver": "pydeseq2"},
}  # fmt: skip


# ------------------------------------------------------------------------------------ data
def pbmc68k_base() -> AnnData:
    """pbmc68k_reduced with 4 Leiden clusters (seed 0, as in ``sr.datasets.pbmc68k_da``) and counts."""
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()
    sr.datasets.leiden_clusters(adata, 4, random_state=0)
    # .X is scaled; .raw.X is log1p of counts normalised to 1e4 per cell, so the counts come back
    # as integers (to the 3 decimals stored) from the per-cell totals in obs["n_counts"].
    raw = adata.raw.X.toarray() if sp.issparse(adata.raw.X) else np.asarray(adata.raw.X)
    counts = np.expm1(raw.astype(np.float64)) * adata.obs["n_counts"].to_numpy()[:, None] / 1e4
    assert np.abs(counts - np.round(counts)).max() < 0.2, "raw.X is not log1p of counts per 1e4"
    adata.layers["counts"] = sp.csr_matrix(np.round(counts).astype(np.float32))
    return adata


def cluster_gaussians(pbmc: AnnData, key: str = "leiden") -> pd.DataFrame:
    """Per cluster of ``obs[key]`` (rows, in category order): its share of the cells, and the mean
    and covariance of pbmc68k's 50-PC ``X_pca`` in it, the Gaussians :func:`gaussian_base` draws from."""
    x = pbmc.obsm["X_pca"].astype(np.float64)
    clusters = pbmc.obs[key]
    names = list(clusters.cat.categories)
    rows = []
    for name in names:
        xc = x[np.asarray(clusters == name)]
        # A small ridge keeps the covariance positive definite for clusters with few cells.
        rows.append({"mean": xc.mean(axis=0), "cov": np.cov(xc, rowvar=False) + 1e-6 * np.eye(x.shape[1])})
    gaussians = pd.DataFrame(rows, index=names)
    gaussians.insert(0, "proportion", clusters.value_counts(normalize=True)[names].to_numpy())
    return gaussians


def gaussian_base(pbmc: AnnData, n_cells: int, random_state: int = 0, key: str = "leiden") -> AnnData:
    """``n_cells`` cells from one Gaussian per cluster of ``obs[key]`` fitted to pbmc68k's 50-PC ``X_pca``."""
    rng = np.random.default_rng(random_state)
    gaussians = cluster_gaussians(pbmc, key)
    names = list(gaussians.index)
    sizes = rng.multinomial(n_cells, gaussians["proportion"].to_numpy())
    blocks, labels = [], []
    for name, size in zip(names, sizes, strict=True):
        blocks.append(
            rng.multivariate_normal(gaussians.at[name, "mean"], gaussians.at[name, "cov"], size=size)
        )
        labels += [name] * size
    order = rng.permutation(n_cells)
    obs = pd.DataFrame(
        {key: pd.Categorical(np.asarray(labels)[order], categories=names)},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    return AnnData(obs=obs, obsm={"X_pca": np.vstack(blocks)[order].astype(np.float32)})


# --------------------------------------------------------------------------------- methods
def installed_version(package: str) -> str | None:
    """The package's version, or ``None`` where it is not installed."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def run_scratio(adata, setting, seed):
    """Per-cell ``log p(x | treated) - log p(x | control)`` from ``sr.tl.differential_abundance``."""
    result = sr.tl.differential_abundance(
        adata, "condition", reference="control", target="treated", use_rep="X_pca",
        n_pcs=setting["n_pcs"], random_state=seed, train_kwargs={"accelerator": setting["accelerator"]},
        copy=True, **setting["tool_kwargs"],
    )  # fmt: skip
    params = result.uns["scratio_da"]["params"]
    info = {"n_steps": params["n_steps"], "best_step": params["training"].get("best_step"),
            "s_min": params["schedule"]["s_min"], "bandwidth_used": params.get("bandwidth_used"),
            "condition_weight_used": params.get("condition_weight_used")}  # fmt: skip
    return result.obs["scratio_da"].to_numpy(np.float64), info


def run_meld(adata, setting, seed):
    """log(p_treated / p_control) of MELD's per-cell sample likelihoods (normalised densities)."""
    options = METHOD_SETTINGS["meld"]
    x = adata.obsm["X_pca"][:, : setting["n_pcs"]]
    labels = adata.obs["condition"].astype(str).to_numpy()
    # sample_normalize=True (the default) divides each label's indicator by its cell count, so
    # the two densities are per-condition densities and their ratio a density ratio.
    likelihoods = meld_likelihoods(x, labels, {c: [c] for c in ("control", "treated")},
                                   beta=options["beta"], knn=options["knn"], seed=seed)  # fmt: skip
    likelihood = likelihoods["treated"].to_numpy()
    # The Chebyshev filter can give densities at or below 0: clip before the log.
    clip = options["likelihood_clip"]
    p_treated = np.clip(likelihood, clip, 1 - clip)
    return np.log(p_treated) - np.log1p(-p_treated), {"n_clipped": int(np.sum(p_treated != likelihood))}


def run_mrvi(adata, setting, seed):
    """log p(u | treated) - log p(u | control) under MrVI's aggregated posteriors (torch backend)."""
    import scvi
    from scvi.external import TorchMRVI

    options = METHOD_SETTINGS["mrvi"]
    scvi.settings.seed = seed
    torch.set_num_threads(setting["threads"])  # seeding scvi does not touch threads; be explicit
    data = AnnData(X=adata.layers["counts"].copy(), obs=adata.obs[["condition"]].copy())
    TorchMRVI.setup_anndata(data, sample_key="condition")
    model = TorchMRVI(data)
    model.train(
        max_epochs=options["max_epochs"], early_stopping=options["early_stopping"],
        accelerator=setting["accelerator"], enable_progress_bar=False,
    )  # fmt: skip
    log_probs = model.differential_abundance(data)["log_probs"]
    score = (log_probs.sel(sample="treated") - log_probs.sel(sample="control")).to_numpy()
    history = model.history.get("elbo_train")
    return score.astype(np.float64), {"epochs": None if history is None else len(history)}


def run_milo(adata, setting, seed):
    """Mean Milo log2 fold change (pydeseq2) of the neighbourhoods containing each cell."""
    options = METHOD_SETTINGS["milo"]
    rng = np.random.default_rng(seed)
    obs = adata.obs[["condition"]].copy()
    # Milo tests counts across replicate samples: split each label into pseudo-replicates.
    replicate = rng.integers(options["replicates_per_label"], size=adata.n_obs)
    obs["sample"] = obs["condition"].astype(str) + "_" + replicate.astype(str)
    prop = options["prop_small"] if adata.n_obs < 10_000 else options["prop_large"]
    membership, nhoods = milo_neighbourhoods(
        adata.obsm["X_pca"][:, : setting["n_pcs"]], obs, sample_key="sample", design=options["design"],
        n_neighbors=options["n_neighbors"], prop=prop, seed=seed, solver=options["solver"],
    )  # fmt: skip
    log_fc = nhoods["logFC"].to_numpy(np.float64)  # treated vs control, log2
    score, n_nhoods = milo_cell_mean(membership, log_fc)
    info = {
        "n_nhoods": int(log_fc.size),
        "n_tested": int(np.isfinite(log_fc).sum()),
        "cells_without_nhood": int((n_nhoods == 0).sum()),
    }
    return score, info


RUNNERS = {"scratio": run_scratio, "meld": run_meld, "mrvi": run_mrvi, "milo": run_milo}


# ----------------------------------------------------------------------------- the driver
def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_preset_modes(parser)
    parser.add_argument("--datasets", nargs="+", choices=["pbmc68k", "gaussian"])
    parser.add_argument("--methods", nargs="+", choices=METHODS)
    parser.add_argument("--deltas", type=float, nargs="+", help="pbmc68k deltas")
    parser.add_argument("--seeds", type=int, nargs="+", help="pbmc68k label seeds")
    parser.add_argument("--large-deltas", type=float, nargs="+", help="deltas of the Gaussian set")
    parser.add_argument("--large-seeds", type=int, nargs="+", help="label seeds of the Gaussian set")
    parser.add_argument("--n-large", type=int, help="cells in the Gaussian set")
    parser.add_argument("--n-pcs", type=int, default=METHOD_SETTINGS["n_pcs"])
    parser.add_argument("--accelerator", default="cpu", help="scratio and MrVI: cpu, gpu or auto")
    add_tool_kwargs(parser, "differential_abundance", '{"scaling": "global"}')
    parser.add_argument("--resume", action="store_true", help="keep the runs already in --out")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from --out")
    parser.add_argument("--out")
    args = parser.parse_args()
    setting = preset_setting(args, PRESETS)
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    setting |= {
        "n_pcs": args.n_pcs,
        "accelerator": args.accelerator,
        "threads": threads,
        "tool_kwargs": args.tool_kwargs,
    }
    out = Path(args.out or Path(__file__).parent / "results" / f"differential_abundance_{args.preset}.json")
    return setting, out, args


def main():
    setting, out, args = parse_args()
    if args.plot_only:
        plot(json.loads(out.read_text()), out.with_suffix(".png"))
        return
    torch.set_num_threads(setting["threads"])
    sr.settings.verbosity = 0
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import logging

    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)

    runs = json.loads(out.read_text())["runs"] if args.resume and out.exists() else []
    done = {(r["dataset"], r["method"], r["delta"], r["seed"]) for r in runs}
    pbmc = pbmc68k_base()
    bases = {"pbmc68k": pbmc}
    grids = {
        "pbmc68k": (setting["deltas"], setting["seeds"]),
        "gaussian": (setting["large_deltas"], setting["large_seeds"]),
    }
    for dataset in setting["datasets"]:
        if dataset == "gaussian":
            bases["gaussian"] = gaussian_base(pbmc, setting["n_large"])
        base = bases[dataset]
        methods = [m for m in setting["methods"] if not (m == "mrvi" and "counts" not in base.layers)]
        deltas, seeds = grids[dataset]
        for delta in deltas:
            for seed in seeds:
                adata = sr.datasets.semi_synthetic_da(
                    base, "leiden", delta=delta, random_state=seed, copy=True
                )
                for method in methods:
                    if (dataset, method, delta, seed) in done:
                        continue
                    start = time.perf_counter()
                    scores, info = RUNNERS[method](adata, setting, seed)
                    seconds = time.perf_counter() - start
                    metrics = sr.datasets.da_metrics(scores, adata.obs["is_da"], adata.obs["true_log_odds"])
                    runs.append({
                        "dataset": dataset, "n_cells": adata.n_obs, "method": method, "delta": delta, "seed": seed,
                        **{k: round(v, 4) for k, v in metrics.items()}, "seconds": round(seconds, 2), **info,
                    })  # fmt: skip
                    print(
                        f"{dataset} n={adata.n_obs} delta {delta:.2f} seed {seed} {method:8s} "
                        f"AUC {metrics['pr_auc']:.3f} NAR {metrics['nar']:6.2f} CSP {metrics['csp']:.3f} "
                        f"| {seconds:6.1f} s {info}",
                        flush=True,
                    )
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps(results(setting, runs, bases), indent=1))
    final = results(setting, runs, bases)
    out.write_text(json.dumps(final, indent=1))
    print_tables(final)
    plot(final, out.with_suffix(".png"))


def results(setting, runs, bases):
    """Everything the JSON holds: setting, versions, summaries per dataset and method, raw runs."""
    summary = []
    frame = pd.DataFrame(runs)
    for (dataset, method), group in frame.groupby(["dataset", "method"], sort=False) if runs else []:
        per_delta = group.groupby("delta")[[*METRICS, "seconds"]].mean()
        high = group[group["delta"] >= 0.4]
        row = {"dataset": dataset, "n_cells": int(group["n_cells"].iloc[0]), "method": method,
               "n_runs": len(group), "deltas": per_delta.index.tolist(),
               "seeds": sorted(group["seed"].unique().tolist())}  # fmt: skip
        for metric in METRICS:
            row[f"{metric}_delta_ge_0.4"] = round(float(high[metric].mean()), 4) if len(high) else None
            # Spearman over deltas of the seed-averaged metric.
            rho = spearmanr(per_delta.index, per_delta[metric]).statistic if len(per_delta) > 2 else np.nan
            row[f"{metric}_spearman_delta"] = None if np.isnan(rho) else round(float(rho), 3)
            row[f"{metric}_by_delta"] = {f"{d:g}": round(float(v), 4) for d, v in per_delta[metric].items()}
        # The first run of each method also pays for imports and numba compilation: report the median too.
        row["seconds_mean"] = round(float(group["seconds"].mean()), 2)
        row["seconds_median"] = round(float(group["seconds"].median()), 2)
        row["seconds_total"] = round(float(group["seconds"].sum()), 1)
        summary.append(row)
    cluster_sizes = {
        name: {k: int(v) for k, v in base.obs["leiden"].value_counts().sort_index().items()}
        for name, base in bases.items()
    }
    return {
        "setting": setting | {"methods_settings": METHOD_SETTINGS},
        "environment": {
            "versions": {  # None: not installed (a method that needs it was not run)
                p: installed_version(p)
                for p in (
                    "scratio",
                    "torch",
                    "meld",
                    "scvi-tools",
                    "pertpy",
                    "pydeseq2",
                    "scanpy",
                    "anndata",
                    "graphtools",
                    "numpy",
                )
            },
            "machine": machine()["machine"],
            "timing": f"wall time per method and run, {setting['threads']} torch thread(s), pydeseq2 one "
            "process; the quick run was pinned to one CPU core (taskset -c 1)",
        },  # fmt: skip
        "protocol": {
            "labels": "P(treated) = 0.5 in clusters 0 and 3, 0.5 + delta in 1, 0.5 - delta in 2",
            "clusters": cluster_sizes,
            "spearman": "over deltas, of the metric averaged over seeds",
            "embedding": f"first {setting['n_pcs']} columns of X_pca for scratio, MELD and Milo",
            "mrvi_input": "pbmc68k only: integer UMI counts round(expm1(raw.X) * n_counts / 1e4), 765 genes",
        },
        "paper_delta_ge_0.4": PAPER,
        "summary": summary,
        "runs": runs,
    }


def print_tables(final):
    """Markdown tables, one per dataset, as pasted into the README."""
    for dataset in dict.fromkeys(r["dataset"] for r in final["summary"]):
        rows = [r for r in final["summary"] if r["dataset"] == dataset]
        print(f"\n{dataset} ({rows[0]['n_cells']} cells)\n")
        print(
            "| method | runs | PR-AUC | NAR | CSP | Spearman AUC / NAR / CSP | s per run (median) | paper AUC / NAR / CSP |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            paper = PAPER.get(r["method"])
            ref = " / ".join(f"{paper[m]:g}" for m in METRICS) if paper else "-"
            spear = " / ".join(f"{r[f'{m}_spearman_delta']}" for m in METRICS)
            pr_auc, nar, csp = (
                _number(r[f"{m}_delta_ge_0.4"], digits) for m, digits in zip(METRICS, (3, 2, 3), strict=True)
            )
            print(f"| {r['method']} | {r['n_runs']} | {pr_auc} | {nar} | {csp} | {spear} | "
                  f"{r['seconds_median']:.1f} | {ref} |")  # fmt: skip


def _number(value, digits):
    """``value`` rounded for a table; "-" when the runs had no delta >= 0.4."""
    return "-" if value is None else f"{value:.{digits}f}"


def plot(final, path):
    """PR-AUC and NAR against delta, mean and range over seeds, per method and dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(final["runs"])
    datasets = list(dict.fromkeys(frame["dataset"]))
    fig, axes = plt.subplots(2, len(datasets), figsize=(5 * len(datasets), 7), squeeze=False)
    for column, dataset in enumerate(datasets):
        subset = frame[frame["dataset"] == dataset]
        for row, (metric, label) in enumerate([("pr_auc", "PR-AUC"), ("nar", "NAR")]):
            ax = axes[row, column]
            for method, group in subset.groupby("method", sort=False):
                stats = group.groupby("delta")[metric].agg(["mean", "min", "max"])
                color = f"C{METHODS.index(method)}"  # the same colour for a method in every panel
                ax.plot(stats.index, stats["mean"], marker="o", label=method, color=color)
                ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.2, color=color)
            if metric == "pr_auc":
                share = None  # chance level: share of DA cells
                clusters = final["protocol"]["clusters"].get(dataset)
                if clusters:
                    share = (clusters["1"] + clusters["2"]) / sum(clusters.values())
                    ax.axhline(share, color="grey", linestyle=":", linewidth=1, label="chance")
            else:
                ax.set_yscale("log")
            ax.set_xlabel("delta")
            ax.set_ylabel(label)
            ax.set_title(f"{dataset} ({int(subset['n_cells'].iloc[0])} cells)")
        axes[0, column].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
