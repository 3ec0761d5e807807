"""One PNG per ``sr.pl`` plot on small simulated data, to compare the figures of two versions side by side.

python benchmarks/figures.py --out benchmarks/results/figures_after
PYTHONPATH=/path/to/old/src python benchmarks/figures.py --out benchmarks/results/figures_before

Data and training are the same whichever version runs (short training, fixed seeds): DA on
:func:`scratio.datasets.pbmc68k_da` grouped by Leiden cluster, a batch-effect score on
:func:`scratio.datasets.batch_effect_design` (measured and corrected embeddings) and on the PBMCs
with a random batch grouped by their long ``bulk_labels``, a combination effect on
:func:`scratio.datasets.combination_design` and a donor response on
:func:`scratio.datasets.donor_design` with two treatments, one of which a donor lacks (a NaN
cell in the heatmap). Versions before the rename call ``sr.pl.batch_effect``.
"""

import argparse
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc

import scratio as sr

TRAINING = {"n_steps": 200, "batch_size": 256}
DPI = 100


def save(fig, out: Path, name: str) -> None:
    fig.savefig(out / f"{name}.png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {out / name}.png")


def batch_plot():
    """``sr.pl.batch_effect_score``, or ``sr.pl.batch_effect`` in versions before the rename."""
    return getattr(sr.pl, "batch_effect_score", None) or sr.pl.batch_effect


def differential_abundance(out: Path) -> None:
    adata = sr.datasets.pbmc68k_da(delta=0.4)
    adata.obsm["X_pca_10"] = adata.obsm["X_pca"][:, :10].copy()
    # n_pcs=10 on X_pca: the 10 columns this figure always used; the default n_pcs="auto" would cut to 9
    sr.tl.differential_abundance(
        adata, "condition", "control", "treated", groupby="leiden", n_pcs=10, **TRAINING
    )
    save(sr.pl.ratio_embedding(adata, "scratio_da", return_fig=True), out, "ratio_embedding")
    # What the ratio_embedding docstring recommends for a plain scanpy call.
    sc.pl.umap(adata, color="scratio_da", cmap="RdBu_r", vcenter=0, show=False)
    save(plt.gcf(), out, "umap_scanpy")
    save(sr.pl.ratio_distributions(adata, "scratio_da", return_fig=True), out, "ratio_distributions")
    fig = sr.pl.ratio_distributions(adata, "scratio_da", kind="strip", return_fig=True)
    save(fig, out, "ratio_distributions_strip")

    # Long cell-type names: the tick labels of the batch plot.
    adata.obs["batch"] = pd.Categorical(np.random.default_rng(0).choice(["batch1", "batch2"], adata.n_obs))
    for rep, key in [("X_pca_10", "batch_pca"), ("X_pca", "batch_pca50")]:
        sr.tl.batch_effect_score(
            adata, "batch", "bulk_labels", use_rep=rep, key_added=key, min_cells=1, **TRAINING
        )
    fig = batch_plot()(adata, ["batch_pca", "batch_pca50"], labels=["10 PCs", "50 PCs"], return_fig=True)
    save(fig, out, "batch_effect_score_pbmc")


def batch_effect(out: Path) -> None:
    adata = sr.datasets.batch_effect_design()
    for rep, key in [("X_pca", "batch_measured"), ("X_corrected", "batch_corrected")]:
        sr.tl.batch_effect_score(adata, "batch", "cell_type", use_rep=rep, key_added=key, **TRAINING)
    fig = batch_plot()(
        adata, ["batch_measured", "batch_corrected"], labels=["measured", "corrected"], return_fig=True
    )
    save(fig, out, "batch_effect_score")
    fig = sr.pl.ratio_distributions(adata, "batch_measured", groupby="cell_type", return_fig=True)
    save(fig, out, "ratio_distributions_batch")


def combination_effect(out: Path) -> None:
    adata = sr.datasets.combination_design()
    sr.tl.combination_effect(adata, "drug1", "drug2", control="control", **TRAINING)
    save(sr.pl.combination_effect(adata, kind="bar", return_fig=True), out, "combination_effect_bar")
    save(sr.pl.combination_effect(adata, kind="heatmap", return_fig=True), out, "combination_effect_heatmap")


def donor_response(out: Path) -> None:
    adata = sr.datasets.donor_design(treatments=("control", "IFNg", "TNF"))
    # donor_5 has no TNF cells: a NaN cell in the heatmap.
    adata = adata[~((adata.obs["donor"] == "donor_5") & (adata.obs["treatment"] == "TNF"))].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the missing (donor, treatment) pair is intended
        sr.tl.donor_response(adata, "donor", "treatment", control="control", **TRAINING)
    save(sr.pl.donor_response(adata, return_fig=True), out, "donor_response")
    fig = sr.pl.ratio_distributions(adata, "scratio_donor", groupby="donor", return_fig=True)
    save(fig, out, "ratio_distributions_donor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sr.settings.verbosity = 0
    sc.settings.autoshow = False
    start = time.perf_counter()
    print(f"scratio {sr.__version__} from {sr.__file__}")
    for figures in (differential_abundance, batch_effect, combination_effect, donor_response):
        figures(args.out)
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
