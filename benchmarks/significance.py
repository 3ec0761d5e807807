"""Per-cell significance across replicates (issue 12): scratio's test against Milo and MELD.

Labels follow Milo's published simulation (Dann et al. 2022, ``add_synthetic_labels_pop`` in
MarioniLab/milo_analysis_2020, ``benchmark/benchmark_utils.R``), re-written here:

1. fuzzy c-means membership of every cell to every population centroid in the embedding,
   ``w_ik = 1 / sum_j (d_ik / d_ij)^(2 / (m - 1))`` with ``m = 2``;
2. each population's memberships standardised over cells (z-score) and passed through a
   logistic with slope ``a = 0.5``;
3. the chosen population's column rescaled to ``[0.5, enrichment]``: each cell's probability of
   condition 1 (``treated``); enrichment 0.5 gives 0.5 everywhere;
4. each cell's condition drawn from it, and the cells of each condition spread at random over 3
   replicate samples (``treated_R1``, ..., ``control_R3``);
5. true DA cells: probability of ``treated`` above 0.6 (the issue's threshold; Milo's own
   scripts use 90% of the enrichment).

Nulls: ``null`` is enrichment 0.5 (every cell ``treated`` with probability 0.5);
``noisy_null`` adds sample-level composition noise: each of the 6 samples draws its
population weights ``q_s ~ Dirichlet(concentration x pi)`` around the common proportions
``pi``, and every cell of population ``k`` goes to sample ``s`` with probability
``q_s[k] / sum_t q_t[k]`` (no cell is dropped; samples 1-3 are ``treated``, 4-6 ``control``).
The conditions differ in composition only through which samples they drew, so nothing is DA
at the level of conditions, while the pooled cells of the two conditions do differ.

Datasets: ``pbmc68k`` is :func:`scanpy.datasets.pbmc68k_reduced` (700 cells; populations are
its 11 ``louvain`` clusters); ``gaussian`` is ``--n-large`` cells (20,000) from one Gaussian per
``louvain`` cluster, fitted to pbmc68k's 50-PC ``X_pca`` (``differential_abundance.gaussian_base``).
Every method and the simulation see the first ``n_pcs`` (10) columns of ``X_pca``.

Methods, each giving a per-cell call (enriched in ``treated``, in ``control``, or none) and a
continuous score:

``scratio``
    ``sr.tl.differential_abundance(..., sample_key="sample", alpha=0.1)`` (its defaults
    ``sample_normalization="median"``: calls relative to most cells, as Milo normalises; and
    ``min_log_ratio=None``: a call also needs a change beyond 1.5-fold relative to the typical
    cell): ``obs["scratio_da_significant"]`` with the sign of ``obs["scratio_da"]``; score
    ``obs["scratio_da"]``.
``scratio_unfiltered``
    The same with ``min_log_ratio=0``: every change the test resolves (the default until
    2026-12-07's threshold).
``scratio_none``
    The same with ``sample_normalization="none"`` (calls where the density differs, the
    states diluted by an expanding one included).
``scratio_treat``
    The default call with ``treat=True``: the test asks whether a change exceeds 1.5-fold
    relative to the typical cell (TREAT) rather than whether a cell past 1.5-fold changed at
    all; 1.5-fold is where the simulation's truth starts (``P(treated) = 0.6`` against the
    typical 0.5 is a log-odds of ``log 1.5``).
``scratio_global``
    The default call with the model option ``scaling="global"`` (the representation scaled by
    one number, so the smoothing is isotropic in PCA space).
``scratio_one_step``
    The default call with ``solver_steps=1`` (one rk4 step instead of two).
``scratio_bf16``
    The default call with ``precision="bf16-mixed"`` (the network in bfloat16).
``scratio_mixture``, ``scratio_mixture_wd10``, ``scratio_mixture_shared``, ``scratio_mixture_dim1``, ``scratio_mixture_100``
    The default call with ``base="mixture"`` (the network corrects a Gaussian mixture whose
    components the conditions share), the same with ``train_kwargs={"weight_decay": 10}``, and
    with ``condition_dim=0`` (the network does not see the sample: samples differ only through
    the mixture's weights), with ``condition_dim=1`` (it sees the sample through one number) or
    trained for 100 steps instead of the default's.
``milo``
    pertpy's Milo with ``solver="pydeseq2"`` on the 6 samples (``design="~condition"``); a
    neighbourhood is DA where ``SpatialFDR < alpha``, with the sign of its ``logFC``; a cell
    takes the label held by most of the neighbourhoods that contain it (Milo's benchmark,
    ``milo2output``; ties go to "not DA", and cells in no neighbourhood are not DA); score: the
    mean ``logFC`` of those neighbourhoods.
``meld``
    MELD densities per sample, averaged per condition and normalised per cell (Milo's
    ``run_meld.py``); a cell is called where a condition's likelihood exceeds 0.6 (Milo's
    ``meld2output``); score ``logit(p_treated)``.

Reported per dataset and method: fraction of cells called; FDR (calls that are not true DA
cells enriched in ``treated``, over all calls; 0 without calls) and TPR; AUROC of the score
for true DA cells; wall time.

Relabelled nulls (scratio): in a null dataset the conditions are exchangeable between samples,
so every assignment of the 6 samples to the two conditions (20 with 3 per condition) is an
equally likely null dataset with the same cells and the same per-sample densities. For each
scratio run the test is repeated with each assignment as the observed one (``relabelled``:
how many assignments call any cell, and their mean fraction of cells called). Over a null's
datasets this estimates how often a null dataset gets calls from 20 labellings per dataset
instead of one; it reuses the model, whose bandwidth the observed labels chose.

    python benchmarks/significance.py --quick   # 3 pbmc68k datasets (a smoke run)
    python benchmarks/significance.py --full    # 9 DA + 2 x 10 nulls on pbmc68k, 3 DA + 2 x 3 nulls on 20,000 cells

Results go to ``results/significance_{preset}.json`` after every run (``--resume`` keeps the
runs already there) and the figure to ``results/significance.png`` (``--full``; else next to
the JSON). Torch uses ``OMP_NUM_THREADS`` threads (1 if unset), pydeseq2 one process.
"""

import argparse
import inspect
import json
import logging
import time
import warnings

import numpy as np
import pandas as pd
from _common import (
    add_preset_modes,
    meld_likelihoods,
    milo_cell_mean,
    milo_neighbourhoods,
    start_tool_run,
    write_results,
)
from anndata import AnnData
from differential_abundance import METHOD_SETTINGS, gaussian_base
from scipy.spatial.distance import cdist

import scratio as sr

METHODS = ["scratio", "scratio_none", "scratio_treat", "scratio_global", "milo", "meld", "scratio_one_step",
           "scratio_bf16", "scratio_mixture", "scratio_mixture_wd10", "scratio_mixture_shared",
           "scratio_mixture_dim1", "scratio_mixture_100", "scratio_unfiltered"]  # fmt: skip
LABELS = {"scratio": "scratio (default, median)", "scratio_unfiltered": "scratio, min_log_ratio=0",
          "scratio_none": "scratio, sample_normalization='none'",
          "scratio_treat": "scratio, treat=True (log 1.5)", "scratio_global": "scratio, scaling='global'",
          "scratio_one_step": "scratio, solver_steps=1", "scratio_bf16": "scratio, precision='bf16-mixed'",
          "scratio_mixture": "scratio, base='mixture'",
          "scratio_mixture_wd10": "scratio, base='mixture', weight_decay=10",
          "scratio_mixture_shared": "scratio, base='mixture', condition_dim=0",
          "scratio_mixture_dim1": "scratio, base='mixture', condition_dim=1",
          "scratio_mixture_100": "scratio, base='mixture', n_steps=100", "milo": "Milo", "meld": "MELD"}  # fmt: skip
KINDS = ["da", "null", "noisy_null"]
ALPHA = 0.1
POP_KEY = "louvain"

PRESETS = {
    "quick": {
        "pbmc_populations": ["0"], "enrichments": [0.95], "pbmc_null_seeds": [0], "da_seeds": [0],
        "large_populations": [], "large_enrichments": [], "large_null_seeds": [], "n_large": 20_000,
        "concentration": 30.0, "methods": METHODS, "null_kinds": ["null", "noisy_null"],
        "rename_samples": False,
    },
    "full": {
        "pbmc_populations": ["0", "3", "6"], "enrichments": [0.75, 0.85, 0.95],
        "pbmc_null_seeds": list(range(10)), "da_seeds": [0],
        "large_populations": ["3"], "large_enrichments": [0.75, 0.85, 0.95], "large_null_seeds": [0, 1, 2],
        "n_large": 20_000, "concentration": 30.0, "methods": METHODS, "null_kinds": ["null", "noisy_null"],
        "rename_samples": False,
    },
}  # fmt: skip

SIMULATION = {"m": 2.0, "a_logit": 0.5, "n_replicates": 3, "da_threshold": 0.6}
MILO = METHOD_SETTINGS["milo"] | {"alpha": ALPHA}
MELD = METHOD_SETTINGS["meld"] | {"likelihood_cutoff": 0.6}
N_PCS = METHOD_SETTINGS["n_pcs"]


# ------------------------------------------------------------------------------- simulation
def condition_probability(x, populations, population, enrichment, *, m=2.0, a_logit=0.5):
    """Milo's per-cell probability of condition 1 from fuzzy membership to ``population``'s centroid."""
    if enrichment == 0.5:
        return np.full(len(x), 0.5)
    names = list(pd.unique(populations))
    centroids = np.stack([x[populations == name].mean(axis=0) for name in names])
    distance = np.maximum(cdist(x, centroids), 1e-12)
    # w_ik = 1 / sum_j (d_ik / d_ij)^(2 / (m - 1)): fuzzy c-means membership (rows sum to 1)
    ratio = distance[:, :, None] / distance[:, None, :]
    membership = 1.0 / (ratio ** (2.0 / (m - 1.0))).sum(axis=2)
    w = membership[:, names.index(population)]
    w = 1.0 / (1.0 + np.exp(-a_logit * (w - w.mean()) / w.std(ddof=1)))  # R's scale(), then logistic
    return 0.5 + (w - w.min()) / np.ptp(w) * (enrichment - 0.5)


def _label(adata, condition, sample, probability):
    adata.obs["condition"] = pd.Categorical(condition, categories=["control", "treated"])
    adata.obs["sample"] = pd.Categorical(sample)
    adata.obs["p_treated"] = probability
    adata.obs["is_da"] = probability > SIMULATION["da_threshold"]
    return adata


def synthetic_labels_pop(base, population, enrichment, seed):
    """``add_synthetic_labels_pop``: conditions drawn per cell, 3 random replicates per condition."""
    rng = np.random.default_rng(seed)
    x = base.obsm["X_pca"][:, :N_PCS].astype(np.float64)
    p = condition_probability(x, base.obs[POP_KEY].to_numpy(), population, enrichment,
                              m=SIMULATION["m"], a_logit=SIMULATION["a_logit"])  # fmt: skip
    condition = np.where(rng.random(base.n_obs) < p, "treated", "control")
    replicate = rng.integers(SIMULATION["n_replicates"], size=base.n_obs) + 1
    sample = np.char.add(np.char.add(condition, "_R"), replicate.astype(str))
    return _label(base.copy(), condition, sample, p)


def composition_noise_null(base, concentration, seed):
    """Null with sample-level composition noise: per-sample population weights from a Dirichlet."""
    rng = np.random.default_rng(seed)
    populations = base.obs[POP_KEY].astype(str).to_numpy()
    names, codes = np.unique(populations, return_inverse=True)
    share = np.bincount(codes) / len(codes)
    n_samples = 2 * SIMULATION["n_replicates"]
    weights = rng.dirichlet(concentration * share, size=n_samples)  # samples x populations
    p_sample = (weights / weights.sum(axis=0)).T[codes]  # per cell: P(sample | population)
    sample_index = (rng.random(len(codes))[:, None] > np.cumsum(p_sample, axis=1)).sum(axis=1)
    sample_index = np.minimum(sample_index, n_samples - 1)
    treated = sample_index < SIMULATION["n_replicates"]
    condition = np.where(treated, "treated", "control")
    replicate = sample_index % SIMULATION["n_replicates"] + 1
    sample = np.char.add(np.char.add(condition, "_R"), replicate.astype(str))
    return _label(base.copy(), condition, sample, np.full(len(codes), 0.5))


#: ``--rename-samples``: names whose sorted order interleaves the conditions (treated: s2, s3, s5).
INTERLEAVED_SAMPLE_NAMES = {"control_R1": "s4", "control_R2": "s1", "control_R3": "s6",
                            "treated_R1": "s2", "treated_R2": "s5", "treated_R3": "s3"}  # fmt: skip


def make_dataset(bases, spec, concentration, rename_samples=False):
    """The dataset of ``spec``; with ``rename_samples`` the samples renamed by :data:`INTERLEAVED_SAMPLE_NAMES`,
    so that the treated ones are not a block of the model's sorted categories."""
    base = bases[spec["dataset"]]
    if spec["kind"] == "noisy_null":
        adata = composition_noise_null(base, concentration, spec["seed"])
    else:
        adata = synthetic_labels_pop(base, spec["population"], spec["enrichment"], spec["seed"])
    if rename_samples:
        adata.obs["sample"] = pd.Categorical(adata.obs["sample"].astype(str).map(INTERLEAVED_SAMPLE_NAMES))
    return adata


def dataset_specs(setting):
    """Every dataset of the preset: DA settings first, then the nulls, pbmc68k before the large set."""
    specs = []
    for dataset, populations, enrichments, null_seeds in (
        ("pbmc68k", setting["pbmc_populations"], setting["enrichments"], setting["pbmc_null_seeds"]),
        ("gaussian", setting["large_populations"], setting["large_enrichments"], setting["large_null_seeds"]),
    ):
        for population in populations:
            for enrichment in enrichments:
                for seed in setting["da_seeds"]:
                    specs.append({"dataset": dataset, "kind": "da", "population": population,
                                  "enrichment": enrichment, "seed": seed})  # fmt: skip
        for kind in setting["null_kinds"]:
            for seed in null_seeds:
                # The plain null's population does not matter (enrichment 0.5 is flat).
                specs.append({"dataset": dataset, "kind": kind, "population": None,
                              "enrichment": 0.5, "seed": 1000 + seed})  # fmt: skip
    return specs


def bases_for(setting, specs):
    import scanpy as sc

    pbmc = sc.datasets.pbmc68k_reduced()
    pbmc = AnnData(obs=pbmc.obs[[POP_KEY]].copy(), obsm={"X_pca": pbmc.obsm["X_pca"]})
    bases = {"pbmc68k": pbmc}
    if any(s["dataset"] == "gaussian" for s in specs):
        bases["gaussian"] = gaussian_base(pbmc, setting["n_large"], key=POP_KEY)
    for base in bases.values():
        base.obs[POP_KEY] = base.obs[POP_KEY].astype(str).astype("category")
    return bases


# --------------------------------------------------------------------------------- methods
def scratio_has_test() -> bool:
    return "alpha" in inspect.signature(sr.tl.differential_abundance).parameters


def run_scratio(adata, seed, **options):
    """Calls from ``obs["scratio_da_significant"]`` with the sign of ``obs["scratio_da"]``."""
    if not scratio_has_test():
        raise RuntimeError("sr.tl.differential_abundance has no significance test (no `alpha`) yet")
    from scratio.tl import _differential_abundance as tool

    # Time the test itself (the permutations over samples, after training and scoring), then
    # repeat it with every relabelling of the samples (not timed).
    test, test_seconds, relabelled = tool.sample_permutation_test, [], {}

    def timed_test(*args, **kwargs):
        start = time.perf_counter()
        result = test(*args, **kwargs)
        test_seconds.append(time.perf_counter() - start)
        relabelled.update(relabelled_calls(test, *args, **kwargs))
        return result

    tool.sample_permutation_test = timed_test
    train_kwargs = {"accelerator": "cpu", **options.pop("train_kwargs", {})}
    try:
        result = sr.tl.differential_abundance(
            adata, "condition", reference="control", target="treated", sample_key="sample", alpha=ALPHA,
            n_pcs=N_PCS, random_state=seed, train_kwargs=train_kwargs, copy=True, **options,
        )  # fmt: skip
    finally:
        tool.sample_permutation_test = test
    score = result.obs["scratio_da"].to_numpy(np.float64)
    significant = result.obs["scratio_da_significant"].to_numpy(bool)
    fdr = result.obs["scratio_da_fdr"].to_numpy(np.float64)
    record = result.uns["scratio_da"]
    info = {"min_fdr": float(fdr.min()), "n_steps": record["params"]["n_steps"],
            "bandwidth_used": record["params"].get("bandwidth_used"),
            "test_seconds": round(sum(test_seconds), 3), "test": _jsonable(record.get("test", {})),
            "relabelled": relabelled}  # fmt: skip
    return score, np.sign(score) * significant, info


def relabelled_calls(test, log_p, design, **options):
    """The test with every assignment of ``design``'s samples to the conditions as the observed one.

    Returns how many assignments were evaluated, how many call any cell at ``ALPHA`` and their
    mean fraction of cells called (see the module's "Relabelled nulls").
    """
    masks = design.assignments(options["n_permutations"], np.random.default_rng(0))
    fractions = [fraction_called_as_observed(test, log_p, design, mask, **options) for mask in masks]
    return {"n_assignments": len(masks), "with_calls": int(np.count_nonzero(fractions)),
            "mean_fraction_called": round(float(np.mean(fractions)), 6)}  # fmt: skip


def fraction_called_as_observed(test, log_p, design, mask, **options) -> float:
    """Fraction of cells ``test`` calls at ``ALPHA`` when ``mask`` marks the target samples.

    ``log_p`` has one column per sample of ``design.samples``, in that order, as the DA tool
    passes it; ``options`` are the tool's other arguments of the test (``min_log_ratio`` and
    ``treat`` included).
    """
    from scratio.tl._significance import SampleDesign

    samples = np.array(design.samples)
    columns = np.r_[np.flatnonzero(~mask), np.flatnonzero(mask)]
    relabelled = SampleDesign(list(samples[~mask]), list(samples[mask]), design.strata)
    q = test(log_p[:, columns], relabelled, **(options | {"rng": np.random.default_rng(0)})).q
    return float((q.astype(np.float32) < ALPHA).mean())


def _jsonable(value):
    """The test's record without arrays and tables (numbers, strings and short lists only)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if _jsonable(v) is not None}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value] if len(value) <= 20 else None
    if isinstance(value, (np.generic, int, float, str, bool)) or value is None:
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, np.ndarray) and value.size <= 20:
        return value.tolist()
    return None


def run_milo(adata, seed):
    """Milo's neighbourhood calls (SpatialFDR < alpha) projected to cells by majority vote."""
    prop = MILO["prop_small"] if adata.n_obs < 10_000 else MILO["prop_large"]
    membership, nhoods = milo_neighbourhoods(
        adata.obsm["X_pca"][:, :N_PCS], adata.obs[["condition", "sample"]], sample_key="sample",
        design=MILO["design"], n_neighbors=MILO["n_neighbors"], prop=prop, seed=seed, solver=MILO["solver"],
    )  # fmt: skip
    log_fc = nhoods["logFC"].to_numpy(np.float64)  # treated vs control, log2
    spatial_fdr = nhoods["SpatialFDR"].to_numpy(np.float64)
    significant = np.nan_to_num(spatial_fdr, nan=1.0) < MILO["alpha"]
    label = np.where(significant, np.sign(np.nan_to_num(log_fc)), 0)
    # votes per cell for (not DA, enriched in treated, enriched in control); ties go to not DA
    votes = np.column_stack([np.asarray(membership @ (label == v).astype(float)).ravel() for v in (0, 1, -1)])
    call = np.array([0, 1, -1])[votes.argmax(axis=1)]
    score, n_nhoods = milo_cell_mean(membership, log_fc)
    info = {"n_nhoods": int(log_fc.size), "n_nhoods_significant": int(significant.sum()),
            "min_spatial_fdr": float(np.nanmin(spatial_fdr)) if np.isfinite(spatial_fdr).any() else None,
            "cells_without_nhood": int((n_nhoods == 0).sum())}  # fmt: skip
    return score, call, info


def run_meld(adata, seed):
    """MELD likelihoods per condition from per-sample densities; called above 0.6."""
    samples = adata.obs["sample"].astype(str).to_numpy()
    conditions = adata.obs["condition"].astype(str).to_numpy()
    groups = {c: sorted(set(samples[conditions == c])) for c in ("control", "treated")}
    likelihoods = meld_likelihoods(adata.obsm["X_pca"][:, :N_PCS], samples, groups,
                                   beta=MELD["beta"], knn=MELD["knn"], seed=seed)  # fmt: skip
    p = likelihoods["treated"].to_numpy(np.float64)
    call = np.where(p > MELD["likelihood_cutoff"], 1, 0) - np.where(1 - p > MELD["likelihood_cutoff"], 1, 0)
    clip = MELD["likelihood_clip"]
    p = np.clip(p, clip, 1 - clip)
    return np.log(p) - np.log1p(-p), call, {"max_likelihood": float(max(p.max(), 1 - p.min()))}


RUNNERS = {
    "scratio": run_scratio,
    "scratio_none": lambda adata, seed: run_scratio(adata, seed, sample_normalization="none"),
    "scratio_unfiltered": lambda adata, seed: run_scratio(adata, seed, min_log_ratio=0.0),
    "scratio_treat": lambda adata, seed: run_scratio(adata, seed, treat=True),
    "scratio_global": lambda adata, seed: run_scratio(adata, seed, scaling="global"),
    "scratio_one_step": lambda adata, seed: run_scratio(adata, seed, solver_steps=1),
    "scratio_bf16": lambda adata, seed: run_scratio(adata, seed, precision="bf16-mixed"),
    "scratio_mixture": lambda adata, seed: run_scratio(adata, seed, base="mixture"),
    "scratio_mixture_shared": lambda adata, seed: run_scratio(adata, seed, base="mixture", condition_dim=0),
    "scratio_mixture_dim1": lambda adata, seed: run_scratio(adata, seed, base="mixture", condition_dim=1),
    "scratio_mixture_100": lambda adata, seed: run_scratio(adata, seed, base="mixture", n_steps=100),
    "scratio_mixture_wd10": lambda adata, seed: run_scratio(
        adata, seed, base="mixture", train_kwargs={"weight_decay": 10.0}
    ),
    "milo": run_milo,
    "meld": run_meld,
}


# --------------------------------------------------------------------------------- metrics
def call_metrics(score, call, is_da):
    """Fraction called, FDR, TPR (a true positive is a DA cell called enriched in treated), AUROC.

    ``fdr_up`` is the FDR among the calls of enrichment only: the protocol has no depleted cells,
    but a test of densities calls cells whose share fell because another state expanded.
    """
    from sklearn.metrics import roc_auc_score

    called = call != 0
    true_positive = (call > 0) & is_da
    n_called, n_da, n_up = int(called.sum()), int(is_da.sum()), int((call > 0).sum())
    return {
        "n_called": n_called,
        "n_called_up": n_up,
        "n_called_down": n_called - n_up,
        "fraction_called": n_called / len(call),
        "fdr": float((n_called - true_positive.sum()) / max(n_called, 1)),
        # among calls of enrichment in treated only (depletion calls left out)
        "fdr_up": float((n_up - true_positive.sum()) / max(n_up, 1)),
        "tpr": float(true_positive.sum() / n_da) if n_da else None,
        "auroc": float(roc_auc_score(is_da, score)) if 0 < n_da < len(call) else None,
        "n_da": n_da,
    }


def spec_key(spec, method):
    return (spec["dataset"], spec["kind"], spec["population"], spec["enrichment"], spec["seed"], method)


def setting_name(run):
    if run["kind"] == "da":
        return f"pop {run['population']}, enr {run['enrichment']:g}"
    return run["kind"]


def summarise(runs):
    """Per dataset, setting (DA: population x enrichment; each null) and method: means over seeds."""
    frame = pd.DataFrame(runs)
    rows = []
    if frame.empty:
        return rows
    frame["setting"] = [setting_name(r) for r in runs]
    for (dataset, setting, method), group in frame.groupby(["dataset", "setting", "method"], sort=False):
        row = {
            "dataset": dataset, "n_cells": int(group["n_cells"].iloc[0]), "kind": group["kind"].iloc[0],
            "setting": setting, "method": method, "n_datasets": len(group),
            "fraction_called": round(float(group["fraction_called"].mean()), 4),
            "fraction_called_max": round(float(group["fraction_called"].max()), 4),
            "share_datasets_with_calls": round(float((group["n_called"] > 0).mean()), 3),
            "seconds_median": round(float(group["seconds"].median()), 2),
            "cpu_seconds_median": round(float(group["cpu_seconds"].median()), 2),
        }  # fmt: skip
        if row["kind"] != "da" and "relabelled" in group and group["relabelled"].notna().all():
            relabelled = pd.DataFrame(list(group["relabelled"]))
            row["relabelled_share_with_calls"] = round(
                float(relabelled["with_calls"].sum() / relabelled["n_assignments"].sum()), 3
            )
            row["relabelled_fraction_called"] = round(float(relabelled["mean_fraction_called"].mean()), 4)
        if row["kind"] == "da":
            row["fraction_called_down"] = round(float((group["n_called_down"] / group["n_cells"]).mean()), 4)
            for metric in ("fdr", "tpr", "auroc", "fdr_up"):
                row[metric] = round(float(group[metric].mean()), 4)
            row["n_da"] = int(group["n_da"].mean())
        rows.append(row)
    return rows


def goals(summary):
    """The issue's goals, per dataset, for scratio (and the same checks for every method)."""
    out = {}
    frame = pd.DataFrame(summary)
    if frame.empty:
        return out
    for (dataset, method), group in frame.groupby(["dataset", "method"], sort=False):
        nulls, da = group[group["kind"] != "da"], group[group["kind"] == "da"]
        milo = frame[(frame["dataset"] == dataset) & (frame["method"] == "milo") & (frame["kind"] == "da")]
        tpr_vs_milo = None
        if len(da) and len(milo):
            merged = da.merge(milo[["setting", "tpr"]], on="setting", suffixes=("", "_milo"))
            tpr_vs_milo = bool((merged["tpr"] >= merged["tpr_milo"]).all())
        out[f"{dataset}/{method}"] = {
            "null_fraction_called_le_0.01": bool((nulls["fraction_called"] <= 0.01).all()) if len(nulls) else None,
            "null_share_datasets_with_calls_le_0.1": (
                bool((nulls["share_datasets_with_calls"] <= 0.1).all()) if len(nulls) else None
            ),
            "fdr_le_alpha_every_da_setting": bool((da["fdr"] <= ALPHA).all()) if len(da) else None,
            "tpr_ge_milo_every_da_setting": tpr_vs_milo,
        }  # fmt: skip
    return out


def print_tables(summary):
    for dataset in dict.fromkeys(r["dataset"] for r in summary):
        rows = [r for r in summary if r["dataset"] == dataset]
        print(f"\n{dataset} ({rows[0]['n_cells']} cells)\n")
        print(
            "| setting | method | datasets | fraction called | datasets with calls | FDR | TPR | AUROC | FDR of enrichment calls | s (median) | CPU s (median) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            fdr, tpr, auroc, up = (
                f"{r[k]:.3f}" if r["kind"] == "da" else "-" for k in ("fdr", "tpr", "auroc", "fdr_up")
            )
            print(f"| {r['setting']} | {r['method']} | {r['n_datasets']} | {r['fraction_called']:.4f} | "
                  f"{r['share_datasets_with_calls']:.2f} | {fdr} | {tpr} | {auroc} | {up} | {r['seconds_median']:.1f} | "
                  f"{r['cpu_seconds_median']:.1f} |")  # fmt: skip
        relabelled = [r for r in rows if "relabelled_share_with_calls" in r]
        if relabelled:
            print(
                "\n| null | method | datasets | relabellings with calls | mean fraction called over relabellings |"
            )
            print("|---|---|---|---|---|")
            for r in relabelled:
                print(f"| {r['setting']} | {r['method']} | {r['n_datasets']} | {r['relabelled_share_with_calls']:.3f} | "
                      f"{r['relabelled_fraction_called']:.4f} |")  # fmt: skip


def plot(final, path):
    """Per dataset: TPR and FDR per DA setting and method (alpha line); fraction called under nulls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = pd.DataFrame(final["runs"])
    runs["setting"] = [setting_name(r) for r in final["runs"]]
    datasets = list(dict.fromkeys(runs["dataset"]))
    methods = [m for m in METHODS if m in set(runs["method"])]
    fig, axes = plt.subplots(len(datasets), 3, figsize=(15, 3.8 * len(datasets)), squeeze=False)
    width = 0.8 / len(methods)
    for row, dataset in enumerate(datasets):
        subset = runs[runs["dataset"] == dataset]
        n_cells = int(subset["n_cells"].iloc[0])
        da = subset[subset["kind"] == "da"]
        settings = list(dict.fromkeys(da["setting"]))
        for column, (metric, label) in enumerate([("tpr", "TPR"), ("fdr", "empirical FDR")]):
            ax = axes[row, column]
            for i, method in enumerate(methods):
                values = da[da["method"] == method].groupby("setting", sort=False)[metric].mean()
                values = values.reindex(settings)
                ax.bar(np.arange(len(settings)) + (i - (len(methods) - 1) / 2) * width, values.to_numpy(),
                       width, label=LABELS[method], color=f"C{METHODS.index(method)}")  # fmt: skip
            if metric == "fdr":
                ax.axhline(ALPHA, color="black", linestyle="--", linewidth=1, label=f"alpha = {ALPHA:g}")
            ax.set_xticks(np.arange(len(settings)), settings, rotation=45, ha="right", fontsize=8)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel(label)
            ax.set_title(f"{dataset} ({n_cells:,} cells): {label} at alpha {ALPHA:g}")
        ax = axes[row, 2]
        nulls = subset[subset["kind"] != "da"]
        for j, kind in enumerate(["null", "noisy_null"]):
            for i, method in enumerate(methods):
                values = nulls[(nulls["kind"] == kind) & (nulls["method"] == method)]["fraction_called"]
                if values.empty:
                    continue
                x = j + (i - (len(methods) - 1) / 2) * width
                ax.bar(x, values.mean(), width, color=f"C{METHODS.index(method)}", alpha=0.6)
                ax.scatter(np.full(len(values), x), values, color="black", s=8, zorder=3)
                share = f"{int((values > 0).sum())}/{len(values)}"  # datasets with any call
                ax.annotate(share, (x, values.mean()), textcoords="offset points", xytext=(0, 3),
                            ha="center", fontsize=7)  # fmt: skip
        ax.axhline(0.01, color="black", linestyle="--", linewidth=1, label="goal: 1% of cells")
        ax.set_yscale("symlog", linthresh=1e-3)  # MELD's 30% and 1% on one axis
        ax.set_ylim(0, 1)
        ax.set_xticks([0, 1], ["null (enr 0.5)", "null + composition noise"])
        ax.set_ylabel("fraction of cells called")
        ax.set_title(f"{dataset}: nulls (bar: mean, dots: datasets, n/N: datasets with calls)", fontsize=9)
    # one legend for every panel, below them, so that no bar is hidden behind it
    handles = [matplotlib.patches.Patch(color=f"C{METHODS.index(m)}", label=LABELS[m]) for m in methods]
    handles.append(
        matplotlib.lines.Line2D(
            [], [], color="black", linestyle="--", label=f"alpha = {ALPHA:g} (FDR); 1% of cells (nulls)"
        )
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------ the driver
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_preset_modes(parser)
    parser.add_argument("--methods", nargs="+", choices=METHODS)
    parser.add_argument("--pbmc-populations", nargs="*", help="louvain clusters made DA in pbmc68k")
    parser.add_argument("--enrichments", type=float, nargs="*", help="pbmc68k enrichments")
    parser.add_argument("--pbmc-null-seeds", type=int, nargs="*", help="pbmc68k datasets per null type")
    parser.add_argument("--da-seeds", type=int, nargs="+", help="label seeds per DA setting")
    parser.add_argument("--large-populations", nargs="*", help="clusters made DA in the large set")
    parser.add_argument("--large-enrichments", type=float, nargs="*")
    parser.add_argument("--large-null-seeds", type=int, nargs="*", help="(empty: no large set)")
    parser.add_argument("--concentration", type=float, help="Dirichlet concentration of the noisy null")
    parser.add_argument("--null-kinds", nargs="+", choices=KINDS[1:], help="which nulls (both by default)")
    parser.add_argument("--rename-samples", action="store_true", default=None,
                        help="samples renamed so that the treated ones are not a block of the sorted names")  # fmt: skip
    parser.add_argument("--n-large", type=int)
    parser.add_argument("--resume", action="store_true", help="keep the runs already in --out")
    parser.add_argument("--plot-only", action="store_true", help="redraw the figure from --out")
    parser.add_argument("--out")
    args = parser.parse_args()
    setting, out = start_tool_run(args, PRESETS, "significance")
    # the full run's figure is the README's; others sit next to their JSON
    figure = (
        out.parent / "significance.png" if args.preset == "full" and not args.out else out.with_suffix(".png")
    )
    if args.plot_only:
        plot(json.loads(out.read_text()), figure)
        return
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if not scratio_has_test():
        print("sr.tl.differential_abundance has no `alpha` yet: scratio is left out of this run")
        setting["methods"] = [m for m in setting["methods"] if not m.startswith("scratio")]

    previous = json.loads(out.read_text()) if args.resume and out.exists() else {}
    runs = previous.get("runs", [])
    invocations = previous.get("protocol", {}).get("invocations", [])
    done = {spec_key(r, r["method"]) for r in runs}
    specs = dataset_specs(setting)
    bases = bases_for(setting, specs)
    started = time.perf_counter()
    for spec in specs:
        adata = make_dataset(bases, spec, setting["concentration"], setting["rename_samples"])
        is_da = adata.obs["is_da"].to_numpy(bool)
        counts = adata.obs["sample"].value_counts().sort_index()
        for method in setting["methods"]:
            if spec_key(spec, method) in done:
                continue
            start, cpu_start = time.perf_counter(), time.process_time()
            score, call, info = RUNNERS[method](adata, spec["seed"])
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
            metrics = call_metrics(score, call, is_da)
            runs.append({**spec, "n_cells": adata.n_obs, "method": method,
                         **{k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()},
                         "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2), "cells_per_sample": counts.to_dict(), **info})  # fmt: skip
            print(f"{spec['dataset']} {spec['kind']:10s} pop {spec['population']} enr {spec['enrichment']:.2f} "
                  f"seed {spec['seed']} {method:14s} called {metrics['fraction_called']:.4f} "
                  f"FDR {metrics['fdr']:.3f} TPR {metrics['tpr'] if metrics['tpr'] is None else round(metrics['tpr'], 3)} "
                  f"AUROC {metrics['auroc'] if metrics['auroc'] is None else round(metrics['auroc'], 3)} "
                  f"| {seconds:6.1f} s", flush=True)  # fmt: skip
            final = finish(out, setting, runs, bases, invocations)
    order = {spec_key(spec, method): i for i, spec in enumerate(specs) for method in METHODS}
    runs.sort(key=lambda r: order.get(spec_key(r, r["method"]), len(order)))
    n_new = len(runs) - len(done)
    invocations = [*invocations, {"new_runs": n_new, "wall_seconds": round(time.perf_counter() - started, 1)}]
    final = finish(out, setting, runs, bases, invocations)
    print_tables(final["summary"]["settings"])
    print(json.dumps(final["summary"]["goals"], indent=1))
    plot(final, figure)


def finish(out, setting, runs, bases, invocations):
    summary = summarise(runs)
    protocol = {
        "simulation": SIMULATION | {"populations": f"obs[{POP_KEY!r}]", "embedding": f"first {N_PCS} PCs"},
        "noisy_null": f"q_s ~ Dirichlet({setting['concentration']:g} x pi) per sample; a cell of population k "
        "goes to sample s with probability q_s[k] / sum_t q_t[k]",
        "population_sizes": {name: base.obs[POP_KEY].value_counts().sort_index().to_dict()
                             for name, base in bases.items()},
        "milo": MILO, "meld": MELD, "alpha": ALPHA,
        "invocations": invocations,
    }  # fmt: skip
    packages = ("scratio", "torch", "pertpy", "pydeseq2", "meld", "scanpy", "numpy")
    return write_results(out, setting=setting, packages=packages, protocol=protocol,
                         summary={"settings": summary, "goals": goals(summary)}, runs=runs)  # fmt: skip


if __name__ == "__main__":
    main()
