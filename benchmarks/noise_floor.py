"""Noise floor of ``sr.tl.differential_abundance``: log-ratios on random labels, against MELD.

Every cell of :func:`scanpy.datasets.pbmc68k_reduced` is labelled "treated" or "control" with
probability 0.5 (3 label seeds), so no cell is differentially abundant: every log-ratio is noise.
scratio is called as a user would, ``sr.tl.differential_abundance(adata, "condition",
reference="control", target="treated", use_rep="X_pca", random_state=seed)`` (defaults
otherwise: ``n_pcs="auto"`` keeps one leading PC per 30 cells of the smaller condition, 9-11 of
the 50 here), and again with ``n_pcs=10``. MELD runs in the same run on the same
labels and PCs (``meld.MELD().fit_transform(X, sample_labels=...)``, defaults ``beta=60, knn=5``,
densities normalised per cell, score ``log(p_treated / p_control)``, the logit of
``P(treated | x)``). The same on the 20,000-cell Gaussian set of ``differential_abundance.py``
(``--n-large`` cells; 5,000 in ``--quick``), random labels.

Reported per run: sd, mean and share of cells with ``|score| > log 1.5`` (flagged as 1.5-fold),
and wall time. Levers against the noise, each on the same trained model:

``calibrate``
    ``calibrate=True`` (the held-out scale, shrunk by one standard error), a second call.
``scale_mle``
    The unshrunk held-out scale (``uns[...]["calibration"]["scale_mle"]``) times the ratios it
    was fitted to: the same training scored at the calibrated call's width (0.6, where
    ``bandwidth="auto"`` chose another for the default: a third call).
``knn15``
    The default log-ratios averaged over each cell's 15 nearest neighbours (itself included) in
    the same PCs (scikit-learn), as MELD's graph smoothing does; post hoc, not a package option.

``--da`` adds the semi-synthetic protocol of ``differential_abundance.py`` on pbmc68k (deltas 0,
0.1, 0.2, 0.4; 3 seeds; 50 and 10 PCs), with PR-AUC, NAR, CSP and the RMSE of each score against
the true log-ratio (the cluster's log-odds minus the log prior odds), for the same levers and MELD.

    OMP_NUM_THREADS=1 python benchmarks/noise_floor.py --quick --da   # about 25 min on one core
    OMP_NUM_THREADS=1 python benchmarks/noise_floor.py --full         # 20,000 cells, 3 seeds

Results: ``results/noise_floor_{preset}.json`` (written after every run).
"""

import argparse
import json
import os
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import machine, meld_likelihoods, numpy_scalar, preset_setting
from sklearn.neighbors import NearestNeighbors

import scratio as sr

FLAG = float(np.log(1.5))
PRESETS = {
    "quick": {"seeds": [0, 1, 2], "n_pcs": [50, 10], "n_large": 5_000, "large_seeds": [0],
              "deltas": [0.0, 0.1, 0.2, 0.4]},
    "full": {"seeds": [0, 1, 2], "n_pcs": [50, 10], "n_large": 20_000, "large_seeds": [0, 1, 2],
             "deltas": [0.0, 0.1, 0.2, 0.4]},
}  # fmt: skip
METHODS = ["default", "calibrate", "scale_mle", "knn15", "meld"]
K_NEIGHBOURS = 15
SUMMARY_METRICS = ("sd", "mean", "flagged", "pr_auc", "nar", "csp", "rmse", "scale", "n_dims", "seconds")


def random_labels(adata, seed):
    """A copy with ``obs["condition"]`` treated/control, each with probability 0.5."""
    rng = np.random.default_rng(seed)
    out = adata.copy()
    out.obs["condition"] = pd.Categorical(np.where(rng.random(out.n_obs) < 0.5, "treated", "control"))
    return out


def scratio_scores(adata, n_pcs, seed, accelerator):
    """Per-cell scores of the default call, the calibrated call and the post-hoc levers."""
    call = {
        "use_rep": "X_pca",
        "random_state": seed,
        "copy": True,
        "train_kwargs": {"accelerator": accelerator},
    }
    if n_pcs != adata.obsm["X_pca"].shape[1]:
        call["n_pcs"] = n_pcs  # the 50-PC row is the default call, without n_pcs
    out, seconds, widths = {}, {}, {}
    for name, extra in (("default", {}), ("calibrate", {"calibrate": True})):
        start = time.perf_counter()
        result = sr.tl.differential_abundance(adata, "condition", reference="control", target="treated",
                                              **call, **extra)  # fmt: skip
        seconds[name] = time.perf_counter() - start
        out[name] = result.obs["scratio_da"].to_numpy(np.float64)
        widths[name] = result.uns["scratio_da"]["params"]["bandwidth_used"]
        if name == "calibrate":
            fit = result.uns["scratio_da"]["calibration"].loc["treated"].to_dict()
        n_dims = int(result.uns["scratio_da"]["params"]["n_dims"])  # the default n_pcs="auto" may keep fewer
    # the calibrated call scores at its fallback width, the default at the one "auto" chose: its
    # unscaled ratios are the same training scored at the calibrated call's width
    unscaled = out["default"]
    if widths["calibrate"] != widths["default"]:
        result = sr.tl.differential_abundance(adata, "condition", reference="control", target="treated",
                                              bandwidth=widths["calibrate"], **call)  # fmt: skip
        unscaled = result.obs["scratio_da"].to_numpy(np.float64)
    same = fit["scale"] == 0 or np.allclose(out["calibrate"] / fit["scale"], unscaled, atol=1e-4, rtol=1e-4)
    out["scale_mle"] = fit["scale_mle"] * unscaled
    x = adata.obsm["X_pca"][:, :n_dims]
    neighbours = NearestNeighbors(n_neighbors=K_NEIGHBOURS).fit(x).kneighbors(x, return_distance=False)
    out["knn15"] = out["default"][neighbours].mean(axis=1)
    info = {"scale": round(fit["scale"], 4), "scale_mle": round(fit["scale_mle"], 4),
            "standard_error": round(fit["standard_error"], 4), "n_held_out": int(fit["n_cells"]), "n_dims": n_dims,
            "bandwidth_used": widths["default"], "calibrate_bandwidth": widths["calibrate"],
            "same_training": bool(same)}  # fmt: skip
    return out, seconds, info


def meld_score(adata, n_pcs, seed):
    """MELD's ``log(p_treated / p_control)`` on the same PCs (normalised densities, clipped to 1e-6)."""
    start = time.perf_counter()
    labels = adata.obs["condition"].astype(str).to_numpy()
    likelihoods = meld_likelihoods(adata.obsm["X_pca"][:, :n_pcs], labels, {c: [c] for c in ("control", "treated")},
                                   beta=60, knn=5, seed=seed)  # fmt: skip
    p = np.clip(likelihoods["treated"].to_numpy(np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p), time.perf_counter() - start


def noise_row(values):
    return {"sd": round(float(values.std()), 4), "mean": round(float(values.mean()), 4),
            "flagged": round(float(np.mean(np.abs(values) > FLAG)), 4)}  # fmt: skip


def da_row(values, adata):
    true_log_odds = adata.obs["true_log_odds"].to_numpy(np.float64)
    prior = float(np.mean(adata.obs["condition"] == "treated"))
    truth = true_log_odds - np.log(prior / (1 - prior))
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = sr.datasets.da_metrics(values, adata.obs["is_da"], true_log_odds)
    row = {k: (round(v, 4) if np.isfinite(v) else None) for k, v in metrics.items()}
    return row | {
        "rmse": round(float(np.sqrt(np.mean((values - truth) ** 2))), 4),
        "all_zero": bool(np.all(values == 0)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="preset", const="quick")
    mode.add_argument("--full", action="store_const", dest="preset", const="full")
    parser.set_defaults(preset="quick")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--n-pcs", type=int, nargs="+")
    parser.add_argument("--n-large", type=int, help="cells of the Gaussian set (0: skip it)")
    parser.add_argument("--large-seeds", type=int, nargs="+")
    parser.add_argument("--deltas", type=float, nargs="+")
    parser.add_argument("--da", action="store_true", help="also the semi-synthetic DA protocol on pbmc68k")
    parser.add_argument("--no-pbmc", action="store_true", help="skip the random labels on pbmc68k")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in --out and skip them")
    parser.add_argument("--summarise", action="store_true", help="rebuild the summary of --out from its runs")
    parser.add_argument("--out")
    args = parser.parse_args()
    setting = preset_setting(args, PRESETS) | {"da": args.da, "accelerator": args.accelerator,
                                               "threads": int(os.environ.get("OMP_NUM_THREADS", "1"))}  # fmt: skip
    out = Path(args.out or Path(__file__).parent / "results" / f"noise_floor_{args.preset}.json")
    if args.summarise:
        old = json.loads(out.read_text())
        final = results(old["setting"], old["runs"])
        out.write_text(json.dumps(final, indent=1, default=numpy_scalar))
        print_tables(final)
        return
    torch.set_num_threads(setting["threads"])
    sr.settings.verbosity = 0
    warnings.filterwarnings("ignore", category=FutureWarning)
    import scanpy as sc

    pbmc = sc.datasets.pbmc68k_reduced()
    runs = json.loads(out.read_text())["runs"] if args.resume and out.exists() else []
    done = {(r["part"], r["dataset"], r["n_pcs"], r["seed"], r["delta"]) for r in runs}

    def record(part, dataset, n_cells, n_pcs, seed, scores, seconds, info, adata=None, delta=None):
        for method, values in scores.items():
            row = {"part": part, "dataset": dataset, "n_cells": n_cells, "n_pcs": n_pcs, "seed": seed,
                   "delta": delta, "method": method, **noise_row(values),
                   **(da_row(values, adata) if adata is not None else {}),
                   "seconds": round(seconds[method], 2) if method in seconds else None, **(info if method != "meld" else {})}  # fmt: skip
            runs.append(row)
            print({k: v for k, v in row.items() if k not in ("part", "n_cells")}, flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results(setting, runs), indent=1, default=numpy_scalar))

    def one(part, dataset, adata, n_pcs, seed, delta=None):
        if (part, dataset, n_pcs, seed, delta) in done:
            return
        scores, seconds, info = scratio_scores(adata, n_pcs, seed, setting["accelerator"])
        scores["meld"], seconds["meld"] = meld_score(adata, n_pcs, seed)
        record(
            part,
            dataset,
            adata.n_obs,
            n_pcs,
            seed,
            scores,
            seconds,
            info,
            adata if delta is not None else None,
            delta,
        )

    for n_pcs in [] if args.no_pbmc else setting["n_pcs"]:
        for seed in setting["seeds"]:
            one("noise", "pbmc68k", random_labels(pbmc, seed), n_pcs, seed)
    if setting["n_large"]:
        from differential_abundance import gaussian_base

        base = pbmc.copy()
        sr.datasets.leiden_clusters(base, 4, random_state=0)
        large = gaussian_base(base, setting["n_large"])
        for seed in setting["large_seeds"]:
            one("noise", "gaussian", random_labels(large, seed), large.obsm["X_pca"].shape[1], seed)
    if args.da:
        for n_pcs in setting["n_pcs"]:
            for delta in setting["deltas"]:
                for seed in setting["seeds"]:
                    one("da", "pbmc68k", sr.datasets.pbmc68k_da(delta, random_state=seed), n_pcs, seed, delta)
    final = results(setting, runs)
    out.write_text(json.dumps(final, indent=1, default=numpy_scalar))
    print_tables(final)


def results(setting, runs):
    frame = pd.DataFrame(runs)
    summary = []
    if runs:
        keys = ["part", "dataset", "n_cells", "n_pcs", "delta", "method"]
        for key, group in frame.groupby(keys, sort=False, dropna=False):
            row = dict(zip(keys, key, strict=True)) | {"n_runs": len(group)}
            for metric in SUMMARY_METRICS:
                if metric in group and group[metric].notna().any():
                    row[metric] = round(float(group[metric].mean()), 4)
            row["sd_max"] = round(float(group["sd"].max()), 4)
            row["n_all_zero"] = int(((group["sd"] == 0) & (group["mean"] == 0)).sum())  # every cell 0
            summary.append({k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()})
    return {
        "setting": setting,
        "environment": {
            "versions": {p: version(p) for p in ("scratio", "torch", "meld", "scanpy", "scikit-learn")},
            "machine": machine()["machine"],
        },  # fmt: skip
        "protocol": {
            "labels": "noise: each cell treated with probability 0.5; da: sr.datasets.pbmc68k_da(delta, seed)",
            "flagged": "share of cells with |score| > log 1.5",
            "rmse": "against true_log_odds - log(n_treated / n_control)",
            "methods": {
                "default": "sr.tl.differential_abundance defaults (n_pcs='auto', n_dims the PCs it kept; n_pcs=10 on the 10-PC rows)",
                "calibrate": "calibrate=True",
                "scale_mle": "unshrunk held-out scale x the same training scored at the calibrated call's width",
                "knn15": "default averaged over 15 nearest neighbours in the same PCs",
                "meld": "meld.MELD(beta=60, knn=5), log(p_treated / p_control) of normalised densities",
            },
        },  # fmt: skip
        "summary": summary,
        "runs": runs,
    }


def print_tables(final):
    for row in final["summary"]:
        delta = "" if row["delta"] is None else f" delta {row['delta']}"
        extra = (f" PR-AUC {row.get('pr_auc')} NAR {row.get('nar')} CSP {row.get('csp')} RMSE {row.get('rmse')}"
                 if row["part"] == "da" else "")  # fmt: skip
        print(f"{row['dataset']} {row['n_cells']} cells {row['n_pcs']} PCs{delta} {row['method']:10s} sd {row['sd']} "
              f"(max {row['sd_max']}) mean {row['mean']} flagged {row['flagged']}{extra} s {row.get('seconds')}")  # fmt: skip


if __name__ == "__main__":
    main()
