"""Issue 11, goal 2: how well do density-ratio estimates rank section 3's semi-synthetic DA cells?

The truth of section 3's protocol is constant within clusters (pbmc68k's Leiden clusters; on
the 20,000 cells the Gaussian each cell was drawn from); MELD smooths the labels over a kNN
graph. scratio estimates a ratio of densities smoothed by a Gaussian in the Euclidean
representation. This script scores every cell by estimates of that ratio that need no training:
the log-ratio of two Gaussian kernel density estimates (treated over control cells, the cell's
own label left out) at each width of a grid, with the representation scaled per dimension (the
DA tool's default) or by one number (``scaling="global"``); the share of treated cells among its
``k`` nearest cells; and the log-ratio of two Gaussian mixtures that share their ``k``
components and differ in their weights (the structure of ``base="mixture"``). On the
20,000 cells, whose Gaussians are known, it also scores the exact ratio of the smoothed
densities. The width (or ``k``) with the highest mean PR-AUC is chosen with the truth: an oracle
no estimator has. The DA tool's default call (all 50 PCs) and MELD (all 50 PCs, as in section 3)
run on the same datasets. The estimates use the dimensions the DA tool chose (``n_pcs="auto"``)
and all 50 PCs.

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
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors

import scratio as sr

WIDTHS = [0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0]
NEIGHBOURS = [10, 30, 60, 100]
COMPONENTS = [2, 4, 8, 16]
#: Components of the mixtures of ``--mixture-forms``.
MORE_COMPONENTS = [2, 4, 8, 16, 32, 64]
#: ``--mixture-forms``: covariance type and number of fits of further shared-component mixtures.
MIXTURE_FORMS = [(covariance, n_fits) for covariance in ("full", "tied", "diag") for n_fits in (1, 8)]


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


def component_log_densities(mixture: GaussianMixture, z: np.ndarray) -> np.ndarray:
    """``(n, k)``: each cell's log-density under each component of a fitted mixture."""
    k = len(mixture.means_)
    covariances = {
        "full": lambda: mixture.covariances_,
        "tied": lambda: [mixture.covariances_] * k,
        "diag": lambda: [np.diag(c) for c in mixture.covariances_],
    }[mixture.covariance_type]()
    return np.stack(
        [multivariate_normal(m, c).logpdf(z) for m, c in zip(mixture.means_, covariances, strict=True)], 1
    )


def shared_component_log_ratio(log_densities, responsibilities, treated, cells, n_fits) -> np.ndarray:
    """Log-ratio of the treated and control mixtures, their weights from the ``cells`` (a mask) of each."""
    log_mixtures = []
    for group in (treated, ~treated):
        weights = responsibilities[cells & group].sum(0) + 0.5 / n_fits
        log_mixtures.append(logsumexp(log_densities + np.log(weights / weights.sum()), axis=1))
    return log_mixtures[0] - log_mixtures[1]


def mixture_log_ratios(
    z: torch.Tensor, treated: np.ndarray, ks, seed: int, covariance: str = "full", n_fits: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``(len(ks), n)``: log-ratio of two Gaussian mixtures that share ``k`` components; and their labels' gains.

    The components (``covariance``: full, tied or diagonal covariances) are fitted to all cells,
    as the union of ``n_fits`` mixtures from different starts (the mixture base's construction;
    one fit: two starts, the better kept). Each condition's weights are its cells' summed
    responsibilities, plus half a cell so that no weight is 0. The gains, ``(len(ks),)``, are the
    mean 5-fold cross-validated log-likelihood of the cells' labels (weights from the other
    folds) against the prior, in nats per cell: what the labels, without the truth, say of ``k``.
    """
    z = z.numpy()
    fold = np.random.default_rng(seed).permutation(len(z)) % 5
    log_prior_odds = np.log(treated.mean() / (1 - treated.mean()))
    sign = np.where(treated, 1.0, -1.0)
    out, gains = [], []
    for k in ks:
        fits = [GaussianMixture(k, covariance_type=covariance, reg_covar=1e-3, n_init=2 if n_fits == 1 else 1,
                                random_state=seed + i).fit(z) for i in range(n_fits)]  # fmt: skip
        responsibilities = np.concatenate([f.predict_proba(z) for f in fits], 1) / n_fits
        log_densities = np.concatenate([component_log_densities(f, z) for f in fits], 1)
        out.append(
            shared_component_log_ratio(
                log_densities, responsibilities, treated, np.ones(len(z), dtype=bool), n_fits
            )
        )
        logits = np.empty(len(z))
        for f in range(5):
            logits[fold == f] = (
                shared_component_log_ratio(log_densities, responsibilities, treated, fold != f, n_fits)[
                    fold == f
                ]
                + log_prior_odds
            )
        gains.append(np.mean(np.logaddexp(0, -sign * log_prior_odds) - np.logaddexp(0, -sign * logits)))
    return np.stack(out), np.array(gains)


def exact_log_ratios(adata, gaussians: pd.DataFrame, widths) -> np.ndarray:
    """``(len(widths), n)``: the exact log-ratio of the 20,000-cell set's conditions, both densities
    smoothed by a Gaussian of each width (in sd units of each PC, as the tool's default scales)."""
    p_treated = adata.uns["simulation"]["p_treated"]
    x = adata.obsm["X_pca"].astype(np.float64)
    variances = x.var(0)
    shares = gaussians["proportion"].to_numpy()
    q = np.array([p_treated[name] for name in gaussians.index])
    out = []
    for width in widths:
        log_densities = np.stack(
            [multivariate_normal(row["mean"], row["cov"] + width**2 * np.diag(variances)).logpdf(x)
             for _, row in gaussians.iterrows()], 1,
        )  # fmt: skip
        log_treated = logsumexp(log_densities + np.log(shares * q / (shares * q).sum()), axis=1)
        log_control = logsumexp(log_densities + np.log(shares * (1 - q) / (shares * (1 - q)).sum()), axis=1)
        out.append(log_treated - log_control)
    return np.stack(out)


def score_dataset(adata, seed, gaussians=None, mixture_forms=()):
    """Rows of PR-AUC and RMSE for the tool, MELD, every estimate here and (given the set's ``gaussians``) the exact ratio."""
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
        mixtures, _ = mixture_log_ratios(scaled(x, "per-dim"), treated, COMPONENTS, seed)
        for k, values in zip(COMPONENTS, mixtures, strict=True):
            add("shared-component mixture", n_dims, k, values)
        for covariance, n_fits in mixture_forms:
            name = f"shared-component mixture, {covariance}, {n_fits} fit{'s' * (n_fits > 1)}"
            mixtures, gains = mixture_log_ratios(
                scaled(x, "per-dim"), treated, MORE_COMPONENTS, seed, covariance, n_fits
            )
            for k, values in zip(MORE_COMPONENTS, mixtures, strict=True):
                add(name, n_dims, k, values)
            add(f"{name}, k chosen by the labels", n_dims, "cv", mixtures[np.argmax(gains)])
    if gaussians is not None:
        for width, values in zip(
            [0.0, *WIDTHS], exact_log_ratios(adata, gaussians, [0.0, *WIDTHS]), strict=True
        ):
            add("exact ratio", adata.obsm["X_pca"].shape[1], width, values)
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
        exact = runs[runs["method"] == "exact ratio"].astype({"setting": float})
        exact = exact[exact["setting"] > 0]
        if len(exact):  # the exact ratio at width 0 has no place on a log axis; the table gives it
            curve = exact.groupby("setting")["pr_auc"].mean()
            ax.plot(curve.index, curve.to_numpy(), color="k", ls=":", marker="s", ms=3,
                    label="exact ratio of the smoothed densities (known Gaussians)")  # fmt: skip
        mixtures = (
            runs[runs["method"] == "shared-component mixture"].groupby(["dims", "setting"])["pr_auc"].mean()
        )
        lines = {
            "scratio (default call)": (runs.loc[runs["method"] == "scratio", "pr_auc"].mean(), "-", "k"),
            "MELD": (runs.loc[runs["method"] == "meld", "pr_auc"].mean(), "--", "k"),
            "shared-component Gaussian mixture, best k": (mixtures.max(), "-.", "C4"),
        }
        for label, (value, style, colour) in lines.items():
            ax.axhline(value, color=colour, ls=style, lw=1, label=label)
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
    fig.suptitle("Ranking the DA cells: density-ratio estimates against MELD", fontsize=10)
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
    parser.add_argument("--mixture-forms", action="store_true",
                        help="also mixtures of 2-64 components with full, tied or diagonal covariances, of 1 or 8 fits")  # fmt: skip
    args = parser.parse_args()
    if args.plot:
        plot(args.plot, args.out)
        return
    sr.settings.verbosity = 0
    gaussians = None
    if args.large:
        from da_speed import cells
        from differential_abundance import cluster_gaussians, pbmc68k_base

        large = cells(50)
        gaussians = cluster_gaussians(pbmc68k_base())
    runs = []
    for delta in args.deltas:
        for seed in args.seeds:
            if args.large:
                adata = sr.datasets.semi_synthetic_da(
                    large, "leiden", delta=delta, random_state=seed, copy=True
                )
            else:
                adata = sr.datasets.pbmc68k_da(delta, random_state=seed)
            for row in score_dataset(adata, seed, gaussians, MIXTURE_FORMS if args.mixture_forms else ()):
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
