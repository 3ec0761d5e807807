"""Known batch shifts in real cells: ``sr.tl.batch_effect_score`` against scib-metrics, before and after correction.

:func:`scanpy.datasets.pbmc68k_reduced` (700 cells; cell types from ``obs["bulk_labels"]``, the
types with fewer than ``MIN_TYPE_CELLS`` cells left out) is split into two batches at random.
The cells of ``batch_1`` in the affected types (``AFFECTED``) are moved in the first ``n_pcs``
columns of ``X_pca`` by ``strength x base`` along a random unit direction ``u``, where ``base``
is the pooled within-type standard deviation of ``X_pca @ u`` (a strength-1 shift is one
within-type sd). Strengths 0, 0.25, 0.5, 1 and 2.

Corrections of the same shifted cells (``--corrections``):

``uncorrected``
    the shifted ``X_pca``;
``combat``
    :func:`scanpy.pp.combat` on the genes: the shift lifted to the scaled expression
    ``adata.X`` along the PCA loadings (``X + c * PCs @ u``; projected back it is exactly the
    shift above), ComBat per batch, projected on the same loadings;
``harmony``
    ``harmonypy.run_harmony`` on the shifted ``X_pca``;
``scvi``
    ``scvi.model.SCVI`` (``n_latent = n_pcs``, ``batch_key="batch"``, ``--scvi-epochs``) on counts:
    ``.raw`` holds ``log1p(counts / n_counts * 1e4)``, so the counts are
    ``expm1(raw) * n_counts / 1e4`` (integers to within 0.08). The shift enters them as a gene-wise
    fold change ``exp(c * (PCs @ u)_g * sd_g)`` (``sd_g``: the gene's sd in ``.raw``), by Poisson
    addition (fold > 1) or binomial thinning (fold < 1) of the moved cells' counts.

Per embedding, strength and seed:

``scratio``
    ``uns[key]["score"]``, the mean ``|log p(x | type, batch) - log p(x | type)|`` over all cells
    (tool defaults), the per-cell ``|log r|`` and its per-type mean (from ``uns[key]["summary"]``);
scib-metrics
    ``ilisi_knn``, ``kbet_per_label``, ``graph_connectivity`` and ``silhouette_batch`` on the
    same embedding (90 pynndescent neighbours, as in scib-metrics' ``Benchmarker``). Higher means
    better mixed, so a growing batch effect should lower them (Spearman -1 is the ideal there,
    +1 for scratio). Per cell: the iLISI of :func:`scib_metrics.lisi_knn`; per type: kBET per
    label (``return_df=True``) and the mean iLISI;
``oracle``
    the residual shift the design knows how to measure: within each type, the squared
    Mahalanobis distance between the two batches' centroids (covariance pooled within all
    type-batch groups), less its sampling bias ``n_dims * (1 / n_0 + 1 / n_1)``, cell-weighted
    over types. It ranks the corrections ("the right order").

Reported: Spearman of each score with the strength; per strength > 0 the AUROC of the per-cell
score (``|log r|``; its mean over the cell's 15 nearest neighbours, a user's smoothing;
``-iLISI``) and of the per-type score (scratio's mean ``|log r|``, kBET rejection ``1 - kBET``,
``-mean iLISI``) for "the cell's (type's) type is affected", next to the per-cell AUROC an
estimator with a given per-cell noise could reach in a 1-D Gaussian model of the shift; the
Spearman, over the corrections, of each score with the oracle; wall times. ``--sensitivity-seeds``
adds seeds scored at strengths 0 and 0.25 only (uncorrected), for the paired change at the
smallest strength.

    python benchmarks/batch.py --quick   # seed 0
    python benchmarks/batch.py --full    # seeds 0-2, and 3-9 at strengths 0 and 0.25
    python benchmarks/batch.py --full --reuse benchmarks/results/batch_quick.json  # seed 0 from the quick run

scib-metrics (with jax, CPU), harmonypy and scvi-tools are benchmark dependencies only. Results
go to ``results/batch_{preset}.json``. Torch uses ``OMP_NUM_THREADS`` threads (1 if unset).
"""

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import add_preset_modes, add_tool_kwargs, start_tool_run, write_results
from anndata import AnnData
from scipy.stats import spearmanr

import scratio as sr

STRENGTHS = [0.0, 0.25, 0.5, 1.0, 2.0]
AFFECTED = ["CD14+ Monocyte", "CD19+ B", "CD8+ Cytotoxic T"]
MIN_TYPE_CELLS = 20
SCIB = ["ilisi_knn", "kbet_per_label", "graph_connectivity", "silhouette_batch"]
SCORES = ["scratio", *SCIB]
CORRECTIONS = ["uncorrected", "combat", "harmony", "scvi"]
# per-type scores: higher = more batch effect in that type
TYPE_SCORES = ["scratio", "kbet_rejection", "neg_ilisi"]
KNN_SMOOTHING = 15  # neighbours for the kNN-averaged per-cell |log r| (a user's post-processing)
NOISE_SDS = [0.0, 0.05, 0.1, 0.2]  # per-cell noise of the ideal estimator in the 1-D model
PACKAGES = (
    "scratio",
    "torch",
    "scib-metrics",
    "jax",
    "scanpy",
    "scikit-learn",
    "numpy",
    "harmonypy",
    "scvi-tools",
)

PRESETS = {
    "quick": {"seeds": [0], "strengths": STRENGTHS, "corrections": CORRECTIONS, "sensitivity_seeds": [],
              "n_pcs": 10, "n_neighbors": 90, "scvi_epochs": 400},
    "full": {"seeds": [0, 1, 2], "strengths": STRENGTHS, "corrections": CORRECTIONS,
             "sensitivity_seeds": [3, 4, 5, 6, 7, 8, 9], "n_pcs": 10, "n_neighbors": 90, "scvi_epochs": 400},
}  # fmt: skip


# ------------------------------------------------------------------------------------ data
def base_data(n_pcs: int) -> AnnData:
    """The kept cells with ``X_pca[:, :n_pcs]``, the PCA loadings, the recovered counts and gene sds."""
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()
    counts = adata.obs["bulk_labels"].value_counts()
    keep = adata.obs["bulk_labels"].isin(counts[counts >= MIN_TYPE_CELLS].index).to_numpy()
    log_norm = adata.raw.X.toarray().astype(np.float64)  # log1p(counts / n_counts * 1e4)
    adata = adata[keep].copy()
    log_norm = log_norm[keep]
    adata.obs["cell_type"] = adata.obs["bulk_labels"].cat.remove_unused_categories()
    adata.obsm["X_pca"] = np.ascontiguousarray(adata.obsm["X_pca"][:, :n_pcs], dtype=np.float32)
    # the PCA used the highly variable genes only; the others' loadings are NaN (no weight)
    adata.varm["loadings"] = np.nan_to_num(adata.varm["PCs"][:, :n_pcs])
    adata.layers["counts"] = np.rint(np.expm1(log_norm) * adata.obs["n_counts"].to_numpy()[:, None] / 1e4)
    adata.var["log_sd"] = log_norm.std(0, ddof=1)
    return adata


def shifted(base: AnnData, strength: float, seed: int):
    """The cells split into two batches at random, ``batch_1`` of the affected types shifted.

    Returns the AnnData, the shift's length (``strength x base``) and its direction in genes
    (``PCs @ u``, in units of the scaled expression).
    """
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
    moved = affected & (batch == 1)
    x = x + (strength * base_shift) * u * moved[:, None]
    adata.obsm["X_pca"] = x.astype(np.float32)
    adata.obs["batch"] = pd.Categorical([f"batch_{b}" for b in batch], categories=["batch_0", "batch_1"])
    adata.obs["affected"] = affected
    adata.obs["moved"] = moved
    return adata, base_shift, strength * base_shift * (adata.varm["loadings"] @ u)


# ------------------------------------------------------------------------------ corrections
def combat(adata: AnnData, gene_shift: np.ndarray) -> np.ndarray:
    """ComBat on the shifted scaled expression, projected on the PCA loadings."""
    import scanpy as sc

    moved = adata.obs["moved"].to_numpy()
    x = np.asarray(adata.X, dtype=np.float64) + moved[:, None] * gene_shift
    genes = AnnData(x.copy(), obs=adata.obs[["batch"]].copy())
    sc.pp.combat(genes, key="batch")
    # the shifted X_pca is the projection of x: add the projection of what ComBat changed
    return adata.obsm["X_pca"] + (np.asarray(genes.X, dtype=np.float64) - x) @ adata.varm["loadings"]


def harmony(adata: AnnData, seed: int) -> np.ndarray:
    import harmonypy

    result = harmonypy.run_harmony(
        adata.obsm["X_pca"].astype(np.float64),
        adata.obs[["batch"]],
        "batch",
        random_state=seed,
        verbose=False,
    )
    z = np.asarray(result.Z_corr)
    return z if z.shape[0] == adata.n_obs else z.T  # harmonypy < 2 returns dims x cells


def shifted_counts(adata: AnnData, gene_shift: np.ndarray, seed: int) -> np.ndarray:
    """The recovered counts with the shift as a gene-wise fold change on the moved cells."""
    rng = np.random.default_rng([seed, 1])
    counts = adata.layers["counts"].copy()
    moved = adata.obs["moved"].to_numpy()
    fold = np.exp(gene_shift * adata.var["log_sd"].to_numpy())
    sub = counts[moved]
    up = fold > 1
    sub[:, up] += rng.poisson(sub[:, up] * (fold[up] - 1))
    sub[:, ~up] = rng.binomial(sub[:, ~up].astype(np.int64), fold[~up])
    counts[moved] = sub
    return counts


def scvi_latent(adata: AnnData, counts: np.ndarray, seed: int, epochs: int) -> np.ndarray:
    import scvi

    scvi.settings.seed = seed
    scvi.settings.verbosity = logging.ERROR
    genes = AnnData(counts.astype(np.float32), obs=adata.obs[["batch"]].copy())
    scvi.model.SCVI.setup_anndata(genes, batch_key="batch")
    model = scvi.model.SCVI(genes, n_latent=adata.obsm["X_pca"].shape[1])
    model.train(max_epochs=epochs, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    return np.asarray(model.get_latent_representation(), dtype=np.float32)


def counts_pca(adata: AnnData, counts: np.ndarray) -> np.ndarray:
    """The shifted counts log-normalised, scaled like ``.raw`` and projected (no correction; oracle only)."""
    log_norm = np.log1p(counts / adata.obs["n_counts"].to_numpy()[:, None] * 1e4)
    reference = np.log1p(adata.layers["counts"] / adata.obs["n_counts"].to_numpy()[:, None] * 1e4)
    sd = adata.var["log_sd"].to_numpy()
    scaled = np.divide(log_norm - reference.mean(0), sd, out=np.zeros_like(log_norm), where=sd > 0)
    return scaled @ adata.varm["loadings"]


def embeddings(adata: AnnData, gene_shift: np.ndarray, seed: int, setting: dict) -> tuple[dict, dict, dict]:
    """``{correction: embedding}``, the seconds each correction took and the counts-PCA oracle."""
    out, seconds, extra = {}, {}, {}
    for name in setting["corrections"]:
        start = time.perf_counter()
        if name == "uncorrected":
            out[name] = adata.obsm["X_pca"]
        elif name == "combat":
            out[name] = combat(adata, gene_shift)
        elif name == "harmony":
            out[name] = harmony(adata, seed)
        elif name == "scvi":
            counts = shifted_counts(adata, gene_shift, seed)
            out[name] = scvi_latent(adata, counts, seed, setting["scvi_epochs"])
            extra["counts_pca_oracle"] = oracle(counts_pca(adata, counts), adata.obs)
        else:
            raise ValueError(f"unknown correction {name!r}")
        seconds[name] = round(time.perf_counter() - start, 1)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}, seconds, extra


# ---------------------------------------------------------------------------------- scores
def oracle(x: np.ndarray, obs: pd.DataFrame) -> float:
    """Cell-weighted mean over types of the bias-corrected squared Mahalanobis batch-centroid distance."""
    x = np.asarray(x, dtype=np.float64)
    groups = obs["cell_type"].astype(str) + "|" + obs["batch"].astype(str)
    centred = x - pd.DataFrame(x).groupby(groups.to_numpy()).transform("mean").to_numpy()
    cov = centred.T @ centred / (len(x) - groups.nunique())
    total, n_total = 0.0, 0
    for cell_type in obs["cell_type"].cat.categories:
        in_type = (obs["cell_type"] == cell_type).to_numpy()
        b = obs["batch"].to_numpy()[in_type]
        a, c = x[in_type][b == "batch_0"], x[in_type][b == "batch_1"]
        diff = c.mean(0) - a.mean(0)
        d2 = float(diff @ np.linalg.solve(cov, diff)) - x.shape[1] * (1 / len(a) + 1 / len(c))
        total += in_type.sum() * d2
        n_total += in_type.sum()
    return total / n_total


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    keep = ~np.isnan(score)
    return float(roc_auc_score(positive[keep], score[keep]))


def knn_mean(x: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Each cell's value averaged over its ``k`` nearest neighbours in ``x`` (itself included)."""
    from sklearn.neighbors import NearestNeighbors

    _, index = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    return values[index].mean(1)


def ideal_cell_auroc(strength: float, noise_sd: float, n: int = 50_000, seed: int = 0) -> float:
    """Per-cell AUROC (affected against unaffected) of ``|exact log r + noise|`` in the 1-D Gaussian model.

    Within a type the cells are Gaussian along ``u`` (unit sd); two equal batches, batch 1 moved
    by ``strength``. An affected cell's exact ``log p(x | type, batch) - log p(x | type)`` is
    ``log 2 - log(1 + exp(-+a))`` with ``a = strength * z - strength^2 / 2``; an unaffected
    cell's is 0. The estimator adds Gaussian noise of sd ``noise_sd`` to every cell.
    """
    rng = np.random.default_rng(seed)
    z = np.r_[rng.normal(size=n), rng.normal(strength, 1.0, size=n)]
    a = strength * z - strength**2 / 2
    exact = np.log(2) - np.r_[np.logaddexp(0, a[:n]), np.logaddexp(0, -a[n:])]
    moved = np.abs(exact + rng.normal(0, noise_sd, size=2 * n))
    still = np.abs(rng.normal(0, noise_sd, size=2 * n))
    return auroc(np.r_[moved, still], np.r_[np.ones(2 * n, bool), np.zeros(2 * n, bool)])


def run_scib(x: np.ndarray, obs: pd.DataFrame, n_neighbors: int) -> tuple[dict, np.ndarray, pd.Series]:
    """The four scib-metrics scores, the per-cell iLISI and kBET per label."""
    import scib_metrics
    from scib_metrics.nearest_neighbors import pynndescent

    batches = obs["batch"].cat.codes.to_numpy()
    labels = obs["cell_type"].cat.codes.to_numpy()
    neighbors = pynndescent(x, n_neighbors=n_neighbors, random_state=0)
    kbet, per_label = scib_metrics.kbet_per_label(neighbors, batches, labels, return_df=True)
    scores = {
        "ilisi_knn": float(scib_metrics.ilisi_knn(neighbors, batches)),
        "kbet_per_label": float(kbet),
        "graph_connectivity": float(scib_metrics.graph_connectivity(neighbors, labels)),
        "silhouette_batch": float(scib_metrics.silhouette_batch(x, labels, batches)),
    }
    per_cell_ilisi = np.asarray(scib_metrics.lisi_knn(neighbors, batches), dtype=np.float64)
    names = obs["cell_type"].cat.categories
    kbet_by_type = pd.Series(
        per_label.set_index("cluster")["kBET"].to_numpy(), index=names[per_label["cluster"]]
    )
    return scores, per_cell_ilisi, kbet_by_type.reindex(names)


def score_embedding(adata: AnnData, name: str, x: np.ndarray, seed: int, setting: dict) -> dict:
    key = f"scratio_{name}"
    adata.obsm[f"X_{name}"] = x
    start = time.perf_counter()
    sr.tl.batch_effect_score(adata, "batch", "cell_type", use_rep=f"X_{name}", key_added=key,
                             random_state=seed, **setting["tool_kwargs"])  # fmt: skip
    scratio_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scib, ilisi, kbet_by_type = run_scib(x, adata.obs, setting["n_neighbors"])
    scib_seconds = time.perf_counter() - start

    log_r = adata.obs[key].to_numpy(np.float64)
    per_cell = np.abs(log_r)
    affected = adata.obs["affected"].to_numpy()
    summary = adata.uns[key]["summary"]
    weighted = summary.assign(total=summary["mean_abs"] * summary["n_cells"]).groupby(
        "cell_type", observed=True
    )
    types = adata.obs["cell_type"].cat.categories
    by_type = pd.DataFrame({
        "scratio": (weighted["total"].sum() / weighted["n_cells"].sum()).reindex(types),
        "kbet_rejection": 1 - kbet_by_type,
        "neg_ilisi": -pd.Series(ilisi).groupby(adata.obs["cell_type"].to_numpy(), observed=True).mean().reindex(types),
    })  # fmt: skip
    type_affected = types.isin(AFFECTED)
    row = {
        "embedding": name, "scratio": float(adata.uns[key]["score"]), **scib,
        "oracle": oracle(x, adata.obs),
        "scratio_mean_abs_affected": float(per_cell[affected].mean()),
        "scratio_mean_abs_unaffected": float(per_cell[~affected].mean()),
        "scratio_rms": float(np.sqrt((log_r**2).mean())),
        "scratio_rms_unaffected": float(np.sqrt((log_r[~affected] ** 2).mean())),
        "by_type": {score: by_type[score].round(4).to_dict() for score in TYPE_SCORES},
        "scratio_seconds": round(scratio_seconds, 1), "scib_seconds": round(scib_seconds, 1),
    }  # fmt: skip
    if adata.obs["moved"].any():
        row["scratio_cell_auroc"] = auroc(per_cell, affected)
        row["scratio_knn_cell_auroc"] = auroc(knn_mean(x, per_cell, KNN_SMOOTHING), affected)
        row["ilisi_cell_auroc"] = auroc(-ilisi, affected)
        for score in TYPE_SCORES:
            values = by_type[score].to_numpy(np.float64)
            row[f"{score}_type_auroc"] = auroc(values, type_affected)
            top = set(types[np.argsort(-np.nan_to_num(values, nan=-np.inf))[: len(AFFECTED)]])
            row[f"{score}_type_top"] = top == set(AFFECTED)
    return row


def run_one(base: AnnData, strength: float, seed: int, setting: dict) -> list[dict]:
    adata, base_shift, gene_shift = shifted(base, strength, seed)
    embedded, correction_seconds, extra = embeddings(adata, gene_shift, seed, setting)
    rows = []
    for name, x in embedded.items():
        row = score_embedding(adata, name, x, seed, setting)
        rows.append({"seed": seed, "strength": strength, "base_shift": round(base_shift, 4), **row,
                     "correction_seconds": correction_seconds[name], **(extra if name == "scvi" else {})})  # fmt: skip
    return rows


# ------------------------------------------------------------------------------- summaries
def oriented(frame: pd.DataFrame, score: str) -> pd.Series:
    """Higher = more batch effect: scratio and the oracle as they are, scib-metrics negated."""
    return frame[score] if score in ("scratio", "oracle") else -frame[score]


def spearman(a, b) -> float | None:
    """None where either side is constant (Spearman undefined)."""
    if pd.Series(a).nunique() == 1 or pd.Series(b).nunique() == 1:
        return None
    return round(float(spearmanr(a, b).statistic), 3)


def summarise(runs: list[dict], setting: dict) -> dict:
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "by_type"} for r in runs])
    main = frame[frame["seed"].isin(setting["seeds"])]
    # Spearman with the strength, per embedding and seed (scores as they are: ideal +1 scratio, -1 scib)
    per_seed = []
    for (name, seed), group in main.groupby(["embedding", "seed"], sort=False):
        row = {"embedding": name, "seed": int(seed)}
        row |= {f"{s}_spearman": spearman(group[s], group["strength"]) for s in [*SCORES, "oracle"]}
        per_seed.append(row)
    # the corrections ranked: Spearman over the embeddings of each (oriented) score with the oracle
    ranking = []
    if main["embedding"].nunique() > 2:
        for (seed, strength), group in main.groupby(["seed", "strength"]):
            order = list(group.sort_values("oracle", ascending=False)["embedding"])
            row = {"seed": int(seed), "strength": float(strength), "oracle_order": order}
            for score in SCORES:
                row[f"{score}_spearman"] = spearman(oriented(group, score), group["oracle"])
                row[f"{score}_order"] = list(
                    group.assign(v=oriented(group, score)).sort_values("v", ascending=False)["embedding"]
                )
            ranking.append(row)
    columns = [*SCORES, "oracle", "scratio_mean_abs_affected", "scratio_mean_abs_unaffected",
               "scratio_rms", "scratio_rms_unaffected", "scratio_cell_auroc", "scratio_knn_cell_auroc", "ilisi_cell_auroc", *[f"{s}_type_auroc" for s in TYPE_SCORES],
               *[f"{s}_type_top" for s in TYPE_SCORES], "counts_pca_oracle",
               "scratio_seconds", "scib_seconds", "correction_seconds"]  # fmt: skip
    columns = [c for c in columns if c in main]
    means = main.groupby(["embedding", "strength"], sort=False)[columns].mean()
    return {
        "per_seed": per_seed,
        "ranking": ranking,
        "by_strength_mean_over_seeds": [
            {k: None if pd.isna(v) else v for k, v in r.items()}
            for r in means.astype(float).round(4).reset_index().to_dict("records")
        ],
        "sensitivity": sensitivity(frame),
        "noise_floor": noise_floor(main),
    }


def noise_floor(main: pd.DataFrame) -> dict:
    """The per-cell AUROC an estimator with a given per-cell noise could reach, next to scratio's.

    scratio's noise: the rms of its log r at strength 0 (the exact log r is 0 for every cell),
    uncorrected, mean over seeds.
    """
    plain = main[main["embedding"] == "uncorrected"]
    observed = float(plain.loc[plain["strength"] == 0, "scratio_rms"].mean())
    out = {"scratio_noise_sd": round(observed, 3), "by_strength": []}
    for strength in sorted(s for s in plain["strength"].unique() if s > 0):
        row = {"strength": float(strength)}
        row |= {f"ideal_noise_{sd:g}": round(ideal_cell_auroc(strength, sd), 3) for sd in NOISE_SDS}
        row["ideal_noise_scratio"] = round(ideal_cell_auroc(strength, observed), 3)
        row["scratio_measured"] = round(
            float(plain.loc[plain["strength"] == strength, "scratio_cell_auroc"].mean()), 3
        )
        out["by_strength"].append(row)
    return out


def sensitivity(frame: pd.DataFrame) -> dict:
    """Paired change of each (oriented) score from strength 0 to the smallest non-zero strength, uncorrected."""
    plain = frame[frame["embedding"] == "uncorrected"]
    smallest = min(s for s in plain["strength"].unique() if s > 0)
    wide = plain[plain["strength"].isin([0.0, smallest])]
    out = {"strength": float(smallest), "seeds": sorted(int(s) for s in wide["seed"].unique())}
    for score in SCORES:
        values = wide.assign(v=oriented(wide, score)).pivot(index="seed", columns="strength", values="v")
        change = (values[smallest] - values[0.0]).dropna()
        # the score's range over the strengths, on the seeds scored at every strength
        full = plain.groupby("seed")["strength"].transform("nunique") == plain["strength"].nunique()
        range_ = plain[full].assign(v=oriented(plain[full], score)).groupby("strength")["v"].mean()
        out[score] = {
            "n_right_direction": int((change > 0).sum()), "n_seeds": int(len(change)),
            "mean_change": round(float(change.mean()), 4),
            "paired_t": None if change.std(ddof=1) == 0 else round(float(change.mean() / change.std(ddof=1) * np.sqrt(len(change))), 2),
            "change_over_range": None if range_.iloc[-1] == range_.iloc[0]
            else round(float(change.mean() / (range_.iloc[-1] - range_.iloc[0])), 3),
        }  # fmt: skip
    return out


def print_tables(final: dict) -> None:
    s = final["summary"]
    print("\n| embedding | score | Spearman with strength (per seed) |")
    print("|---|---|---|")
    for name in dict.fromkeys(r["embedding"] for r in s["per_seed"]):
        rows = [r for r in s["per_seed"] if r["embedding"] == name]
        for score in [*SCORES, "oracle"]:
            values = ", ".join("constant" if r[f"{score}_spearman"] is None else f"{r[f'{score}_spearman']:g}"
                               for r in rows)  # fmt: skip
            print(f"| {name} | {score} | {values} |")
    print("\n| embedding | strength | oracle | " + " | ".join(SCORES)
          + " | scratio cell AUROC | iLISI cell AUROC | scratio type AUROC | kBET type AUROC | iLISI type AUROC |")  # fmt: skip
    print("|---" * (8 + len(SCORES)) + "|")
    for r in s["by_strength_mean_over_seeds"]:
        keys = ["oracle", *SCORES, "scratio_cell_auroc", "ilisi_cell_auroc",
                *[f"{t}_type_auroc" for t in TYPE_SCORES]]  # fmt: skip
        cells = " | ".join("-" if r.get(k) is None else f"{r[k]:.3f}" for k in keys)
        print(f"| {r['embedding']} | {r['strength']:g} | {cells} |")
    if s["ranking"]:
        print("\n| seed | strength | oracle order | " + " | ".join(f"{k} Spearman" for k in SCORES) + " |")
        print("|---" * (3 + len(SCORES)) + "|")
        for r in s["ranking"]:
            rhos = " | ".join(
                "-" if r[f"{k}_spearman"] is None else f"{r[f'{k}_spearman']:g}" for k in SCORES
            )
            print(f"| {r['seed']} | {r['strength']:g} | {' > '.join(r['oracle_order'])} | {rhos} |")
    print("\nsensitivity at the smallest strength:", json.dumps(s["sensitivity"], indent=1))
    print(
        "\nper-cell AUROC against per-cell noise (1-D Gaussian model):",
        json.dumps(s["noise_floor"], indent=1),
    )


def earlier_rows(path: str | None, setting: dict) -> dict:
    """``{(seed, strength, embedding): row}`` of an earlier run made with the same settings."""
    if path is None:
        return {}
    earlier = json.loads(Path(path).read_text())
    same = ("n_pcs", "n_neighbors", "scvi_epochs", "tool_kwargs")
    if any(earlier["setting"].get(k) != setting[k] for k in same):
        raise SystemExit(f"{path}: made with other settings ({', '.join(same)}); not reused")
    return {(r["seed"], r["strength"], r["embedding"]): r for r in earlier["runs"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_preset_modes(parser)
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--strengths", type=float, nargs="+")
    parser.add_argument("--corrections", nargs="+", choices=CORRECTIONS)
    parser.add_argument("--sensitivity-seeds", type=int, nargs="*")
    parser.add_argument("--n-pcs", type=int)
    parser.add_argument("--n-neighbors", type=int)
    parser.add_argument("--scvi-epochs", type=int)
    add_tool_kwargs(parser, "batch_effect_score", '{"n_steps": 2000}')
    parser.add_argument(
        "--reuse", help="JSON of an earlier run: its rows with the same settings are not recomputed"
    )
    parser.add_argument("--out")
    args = parser.parse_args()
    setting, out = start_tool_run(args, PRESETS, "batch")
    setting["tool_kwargs"] = args.tool_kwargs
    reused = earlier_rows(args.reuse, setting)
    if reused:
        setting["reused_from"] = Path(args.reuse).name
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    base = base_data(setting["n_pcs"])
    runs = []
    plan = [(seed, strength, setting) for seed in setting["seeds"] for strength in setting["strengths"]]
    extra = setting | {"corrections": ["uncorrected"]}
    plan += [
        (seed, strength, extra)
        for seed in setting["sensitivity_seeds"]
        for strength in (0.0, min(s for s in setting["strengths"] if s > 0))
    ]
    for seed, strength, chosen in plan:
        rows = [reused.get((seed, strength, name)) for name in chosen["corrections"]]
        if None in rows:
            rows = run_one(base, strength, seed, chosen)
        for row in rows:
            runs.append(row)
            print(f"seed {seed} strength {strength:g} {row['embedding']}: oracle {row['oracle']:.2f} "
                  f"scratio {row['scratio']:.3f} ({row['scratio_seconds']} s) "
                  + " ".join(f"{k} {row[k]:.3f}" for k in SCIB)
                  + f" ({row['scib_seconds']} s; correction {row['correction_seconds']} s)", flush=True)  # fmt: skip
    final = write_results(
        out,
        setting=setting | {"affected_types": AFFECTED, "min_type_cells": MIN_TYPE_CELLS},
        packages=PACKAGES,
        protocol={
            "data": f"pbmc68k_reduced, bulk_labels types with >= {MIN_TYPE_CELLS} cells, first n_pcs of X_pca",
            "shift": "batch_1 cells of the affected types moved by strength x (pooled within-type sd along u) x u",
            "corrections": "combat: scanpy.pp.combat on X + shift lifted along the PCA loadings, projected; "
            "harmony: harmonypy on the shifted X_pca; scvi: SCVI(n_latent=n_pcs, batch_key) on counts "
            "expm1(raw) * n_counts / 1e4 with the shift as a gene-wise fold change",
            "scratio": "uns[key]['score'] (mean |log r| over all cells), tool defaults unless tool_kwargs",
            "scib": "scib-metrics on the same embedding, pynndescent neighbours; higher = better mixed",
            "oracle": "cell-weighted mean over types of the bias-corrected squared Mahalanobis distance "
            "between the batch centroids (covariance pooled within type-batch groups)",
            "cell_auroc": "per-cell |log r| (scratio) or -iLISI (scib lisi_knn) against 'type is affected'",
            "type_auroc": "per-type mean |log r| (uns summary), 1 - kBET per label, -mean iLISI against 'affected'",
            "sensitivity": "paired change from strength 0 to the smallest strength, uncorrected, all seeds",
        },
        summary=summarise(runs, setting),
        runs=runs,
    )
    print_tables(final)


if __name__ == "__main__":
    main()
