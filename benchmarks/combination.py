"""Combination effects graded by size: ``sr.tl.combination_effect`` against a per-pair classifier.

The graded design follows :func:`scratio.datasets.combination_design` (first drug ``f`` puts
cells at ``mu_f``, a second drug ``s`` moves them along a random direction of its own, unit
noise) and is built here from its parts so that a second drug can act on only some cell states:
each first drug's cells fall in two states, ``mu_f +- state_offset * u_f`` (half the cells
each), and the second drugs are

``none``
    no effect;
``g0.5``, ``g1``, ``g2``, ``g3``
    a shift of 0.5, 1, 2, 3 on every cell;
``s1``, ``s3``
    a shift of 1 or 3 on the cells in state 0 only (half of each first drug's cells);
``a2``
    a shift of 2 with first drug ``A`` only (none with ``B``).

The true effect size of a (first, second) pair is the quantity scratio estimates: the mean
``|log p(x | f, s) - log p(x | f, control)|`` over the cells of that pair, in closed form
(mixtures of unit Gaussians), averaged over ``--truth-samples`` fresh draws.

Scores per pair, each compared with the truth by Spearman over the 16 pairs:

``scratio``
    mean ``|log r|`` of the pair's cells from ``sr.tl.combination_effect``
    (``uns[...]["summary"]["mean_abs"]``);
``logreg_auc`` / ``logreg_info``
    scikit-learn logistic regression separating "first alone" (second = control) from
    "first + second" cells of the pair on the same embedding, 5-fold stratified cross-validation:
    ROC AUC and the log-loss gain over the class prior (nats);
``hgb_auc``
    the same with ``HistGradientBoostingClassifier``.

    python benchmarks/combination.py --quick   # 3 seeds, 200 cells per (first, second) group
    python benchmarks/combination.py --full    # 3 seeds, 500 cells per group

scikit-learn is a benchmark dependency only. Results go to ``results/combination_{preset}.json``.
Torch uses ``OMP_NUM_THREADS`` threads (1 if unset).
"""

import argparse
import time

import numpy as np
import pandas as pd
from _common import add_preset_modes, start_tool_run, write_results
from anndata import AnnData
from scipy.special import logsumexp
from scipy.stats import spearmanr

import scratio as sr

FIRST = ["A", "B"]
# second drug: (shift length, which cells it moves: "all", "state0" or "first=A")
SECOND = {
    "none": (0.0, "all"),
    "g0.5": (0.5, "all"),
    "g1": (1.0, "all"),
    "g2": (2.0, "all"),
    "g3": (3.0, "all"),
    "s1": (1.0, "state0"),
    "s3": (3.0, "state0"),
    "a2": (2.0, "first=A"),
}
CONTROL = "control"
SCORES = ["scratio", "logreg_auc", "logreg_info", "hgb_auc"]

PRESETS = {
    "quick": {"seeds": [0, 1, 2], "cells_per_group": 200, "n_dims": 10, "truth_samples": 20_000},
    "full": {"seeds": [0, 1, 2], "cells_per_group": 500, "n_dims": 10, "truth_samples": 50_000},
}
DESIGN = {"separation": 4.0, "state_offset": 1.5, "cv_folds": 5}


# ------------------------------------------------------------------------------------ data
class Design:
    """The graded combination design of one seed: parameters, sampling and exact log-ratios."""

    def __init__(self, n_dims: int, seed: int):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.n_dims = n_dims
        self.centers = rng.normal(scale=DESIGN["separation"], size=(len(FIRST), n_dims))
        u = rng.normal(size=(len(FIRST), n_dims))
        self.state_axes = u / np.linalg.norm(u, axis=1, keepdims=True)
        v = rng.normal(size=(len(SECOND), n_dims))
        self.directions = dict(zip(SECOND, v / np.linalg.norm(v, axis=1, keepdims=True), strict=True))

    def state_means(self, first: str, second: str) -> np.ndarray:
        """The two state means (rows) of the cells given ``first`` and ``second``."""
        i = FIRST.index(first)
        offset = DESIGN["state_offset"] * self.state_axes[i]
        means = np.vstack([self.centers[i] + offset, self.centers[i] - offset])
        if second == CONTROL:
            return means
        size, where = SECOND[second]
        moved = {"all": [True, True], "state0": [True, False], "first=A": [first == "A"] * 2}[where]
        return means + size * self.directions[second] * np.asarray(moved, float)[:, None]

    def sample(self, first: str, second: str, n: int) -> np.ndarray:
        means = self.state_means(first, second)
        state = self.rng.integers(2, size=n)
        return means[state] + self.rng.normal(size=(n, self.n_dims))

    def log_ratio(self, x: np.ndarray, first: str, second: str) -> np.ndarray:
        """Exact ``log p(x | first, second) - log p(x | first, control)`` (equal-weight mixtures)."""

        def log_mix(means):
            sq = ((x[:, None, :] - means[None]) ** 2).sum(-1)
            return logsumexp(-0.5 * sq, axis=1)

        return log_mix(self.state_means(first, second)) - log_mix(self.state_means(first, CONTROL))

    def anndata(self, per_group: int) -> AnnData:
        blocks, drug1, drug2 = [], [], []
        for first in FIRST:
            for second in [CONTROL, *SECOND]:
                blocks.append(self.sample(first, second, per_group))
                drug1 += [first] * per_group
                drug2 += [second] * per_group
        obs = pd.DataFrame(
            {
                "drug1": pd.Categorical(drug1, categories=FIRST),
                "drug2": pd.Categorical(drug2, categories=[CONTROL, *SECOND]),
            },
            index=[f"cell_{i}" for i in range(len(drug1))],
        )
        return AnnData(obs=obs, obsm={"X_pca": np.vstack(blocks).astype(np.float32)})


# ------------------------------------------------------------------------------- baselines
def classifier_scores(x: np.ndarray, y: np.ndarray, seed: int) -> dict:
    """Cross-validated ROC AUC (and log-loss gain for logistic regression) of 'second vs control'."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(DESIGN["cv_folds"], shuffle=True, random_state=seed)
    prior = y.mean()
    prior_loss = -(prior * np.log(prior) + (1 - prior) * np.log(1 - prior))
    lr = cross_val_predict(LogisticRegression(max_iter=1000), x, y, cv=folds, method="predict_proba")[:, 1]
    hgb = cross_val_predict(
        HistGradientBoostingClassifier(random_state=seed), x, y, cv=folds, method="predict_proba"
    )[:, 1]
    return {
        "logreg_auc": float(roc_auc_score(y, lr)),
        "logreg_info": float(prior_loss - log_loss(y, lr)),
        "hgb_auc": float(roc_auc_score(y, hgb)),
    }


# ----------------------------------------------------------------------------- the driver
def run_seed(setting: dict, seed: int) -> list[dict]:
    design = Design(setting["n_dims"], seed)
    adata = design.anndata(setting["cells_per_group"])
    start = time.perf_counter()
    sr.tl.combination_effect(adata, "drug1", "drug2", control=CONTROL, use_rep="X_pca", random_state=seed)
    seconds = time.perf_counter() - start
    summary = adata.uns["scratio_combination"]["summary"].set_index(["first", "second"])
    params = adata.uns["scratio_combination"]["params"]
    x = adata.obsm["X_pca"].astype(np.float64)
    rows = []
    start = time.perf_counter()
    for first in FIRST:
        for second in SECOND:
            pair = np.asarray((adata.obs["drug1"] == first) & (adata.obs["drug2"] == second))
            alone = np.asarray((adata.obs["drug1"] == first) & (adata.obs["drug2"] == CONTROL))
            # the truth on fresh draws of the pair (population mean |log r|) and on the pair's own cells
            fresh = design.sample(first, second, setting["truth_samples"])
            size, where = SECOND[second]
            row = {
                "seed": seed, "first": first, "second": second, "shift": size, "acts_on": where,
                "true_mean_abs": float(np.abs(design.log_ratio(fresh, first, second)).mean()),
                "true_mean_abs_cells": float(np.abs(design.log_ratio(x[pair], first, second)).mean()),
                "scratio": float(summary.loc[(first, second), "mean_abs"]),
                "scratio_mean": float(summary.loc[(first, second), "mean"]),
            }  # fmt: skip
            y = np.r_[np.zeros(alone.sum()), np.ones(pair.sum())]
            row |= classifier_scores(np.vstack([x[alone], x[pair]]), y, seed)
            rows.append(row)
    baseline_seconds = time.perf_counter() - start
    for row in rows:
        row |= {"scratio_seconds": round(seconds, 1), "baseline_seconds": round(baseline_seconds, 1),
                "n_steps": params["n_steps"]}  # fmt: skip
    return rows


def summarise(runs: list[dict]) -> dict:
    frame = pd.DataFrame(runs)
    per_seed = []
    for seed, group in frame.groupby("seed"):
        row = {"seed": int(seed)}
        for score in SCORES:
            row[score] = round(float(spearmanr(group[score], group["true_mean_abs"]).statistic), 3)
        graded = group[group["acts_on"] == "all"]
        for score in SCORES:
            row[f"{score}_graded_all_cells"] = round(
                float(spearmanr(graded[score], graded["shift"]).statistic), 3
            )
        per_seed.append(row)
    table = pd.DataFrame(per_seed)
    mean = {k: round(float(table[k].mean()), 3) for k in table.columns if k != "seed"}
    minimum = {k: round(float(table[k].min()), 3) for k in table.columns if k != "seed"}
    by_pair = (
        frame.groupby(["first", "second"], sort=False)[["shift", "true_mean_abs", *SCORES]].mean().round(3)
    )
    return {"per_seed": per_seed, "mean": mean, "min": minimum,
            "by_pair_mean_over_seeds": by_pair.reset_index().to_dict("records")}  # fmt: skip


def print_tables(final: dict) -> None:
    summary = final["summary"]
    print(
        "\n| score | Spearman with true mean abs log r, per seed | mean | Spearman with shift, all-cell pairs, mean |"
    )
    print("|---|---|---|---|")
    for score in SCORES:
        seeds = ", ".join(f"{r[score]:.3f}" for r in summary["per_seed"])
        print(f"| {score} | {seeds} | {summary['mean'][score]:.3f} | "
              f"{summary['mean'][f'{score}_graded_all_cells']:.3f} |")  # fmt: skip
    print("\n| first | second | shift | true mean abs log r | scratio | logreg AUC | logreg info | HGB AUC |")
    print("|---|---|---|---|---|---|---|---|")
    for r in summary["by_pair_mean_over_seeds"]:
        print(f"| {r['first']} | {r['second']} | {r['shift']:g} | {r['true_mean_abs']:.3f} | {r['scratio']:.3f} | "
              f"{r['logreg_auc']:.3f} | {r['logreg_info']:.3f} | {r['hgb_auc']:.3f} |")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_preset_modes(parser)
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--cells-per-group", type=int)
    parser.add_argument("--n-dims", type=int)
    parser.add_argument("--truth-samples", type=int)
    parser.add_argument("--out")
    args = parser.parse_args()
    setting, out = start_tool_run(args, PRESETS, "combination")

    runs = []
    for seed in setting["seeds"]:
        rows = run_seed(setting, seed)
        runs += rows
        rho = spearmanr([r["scratio"] for r in rows], [r["true_mean_abs"] for r in rows]).statistic
        print(f"seed {seed}: scratio {rows[0]['scratio_seconds']} s, classifiers {rows[0]['baseline_seconds']} s, "
              f"Spearman scratio {rho:.3f}", flush=True)  # fmt: skip
    final = write_results(
        out,
        setting=setting | {"design": DESIGN, "second_drugs": SECOND, "first_drugs": FIRST},
        packages=("scratio", "torch", "scikit-learn", "numpy", "anndata"),
        protocol={
            "truth": "population mean |log p(x|f,s) - log p(x|f,control)| of the pair, closed form, fresh draws",
            "scratio": "uns['scratio_combination']['summary']['mean_abs'], tool defaults",
            "classifiers": f"{DESIGN['cv_folds']}-fold stratified CV, pair cells vs the first drug's control cells",
            "spearman": "per seed over the 16 (first, second) pairs; *_graded_all_cells: over the pairs whose "
            "second drug moves every cell, against the shift length",
        },
        summary=summarise(runs),
        runs=runs,
    )
    print_tables(final)


if __name__ == "__main__":
    main()
