"""Graded donor responses: ``sr.tl.donor_response`` against pseudobulk and a per-donor classifier.

The design follows :func:`scratio.datasets.donor_design` (donor ``d``'s cells are
``N(mu_d, I)`` with baselines spread by ``donor_spread``; treated cells move along one direction
per treatment) and is built here from its parts so that each donor has its own response
strength: the treated cells of donor ``d`` move by ``SHIFTS[d]`` (4 non-responders at 0, weak
responders at 0.25 and 0.5, partial ones at 0.75, 1 and 1.5, a full one at 3, the simulator's
default shift).

Scores per donor, each compared with the true shift by Spearman over donors:

``scratio``
    mean ``log p(x | donor, stim) - log p(x | donor, control)`` of the donor's treated cells,
    ``uns["scratio_donor"]["summary"]`` (tool defaults);
``pseudobulk``
    distance between the donor's treated and control centroids in the same embedding;
``logreg_auc``
    cross-validated (5-fold) ROC AUC of a scikit-learn logistic regression separating the donor's
    treated from its control cells.

Weak-vs-non separation: per seed, the AUROC of the weak responders' scores against the
non-responders' and the gap ``(mean weak - mean non) / sd non`` (sd over the 4 non-responders).

    python benchmarks/donor.py --quick   # 3 seeds, 150 cells per donor and treatment
    python benchmarks/donor.py --full    # 3 seeds, 400 cells per donor and treatment

``--tool-kwargs '{"n_steps": 6000}'`` passes settings a user would choose to the tool (tool
defaults otherwise; recorded in the JSON's setting).

scikit-learn is a benchmark dependency only. Results go to ``results/donor_{preset}.json``.
Torch uses ``OMP_NUM_THREADS`` threads (1 if unset).
"""

import argparse
import time

import numpy as np
import pandas as pd
from _common import add_preset_modes, add_tool_kwargs, start_tool_run, write_results
from anndata import AnnData
from scipy.stats import spearmanr

import scratio as sr

SHIFTS = [0.0, 0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 3.0]
WEAK = (0.25, 0.5)
TREATMENTS = ["control", "stim"]
SCORES = ["scratio", "pseudobulk", "logreg_auc"]

PRESETS = {
    "quick": {"seeds": [0, 1, 2], "cells_per_group": 150, "n_dims": 10},
    "full": {"seeds": [0, 1, 2], "cells_per_group": 400, "n_dims": 10},
}
DESIGN = {"donor_spread": 1.0, "cv_folds": 5}


def graded_donors(per_group: int, n_dims: int, seed: int) -> AnnData:
    """``per_group`` cells per donor and treatment; treated cells of donor d move by ``SHIFTS[d]``."""
    rng = np.random.default_rng(seed)
    baselines = rng.normal(scale=DESIGN["donor_spread"], size=(len(SHIFTS), n_dims))
    direction = rng.normal(size=n_dims)
    direction /= np.linalg.norm(direction)
    blocks, donors, treatments = [], [], []
    for d, shift in enumerate(SHIFTS):
        for t in TREATMENTS:
            moved = shift if t != "control" else 0.0
            blocks.append(baselines[d] + moved * direction + rng.normal(size=(per_group, n_dims)))
            donors += [f"donor_{d}"] * per_group
            treatments += [t] * per_group
    order = rng.permutation(len(donors))
    obs = pd.DataFrame(
        {
            "donor": pd.Categorical(
                np.asarray(donors)[order], categories=[f"donor_{d}" for d in range(len(SHIFTS))]
            ),
            "treatment": pd.Categorical(np.asarray(treatments)[order], categories=TREATMENTS),
        },
        index=[f"cell_{i}" for i in range(len(donors))],
    )
    return AnnData(obs=obs, obsm={"X_pca": np.vstack(blocks)[order].astype(np.float32)})


def logreg_auc(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(DESIGN["cv_folds"], shuffle=True, random_state=seed)
    p = cross_val_predict(LogisticRegression(max_iter=1000), x, y, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def run_seed(setting: dict, seed: int) -> list[dict]:
    adata = graded_donors(setting["cells_per_group"], setting["n_dims"], seed)
    start = time.perf_counter()
    sr.tl.donor_response(adata, "donor", "treatment", control="control", use_rep="X_pca", random_state=seed,
                         **setting["tool_kwargs"])  # fmt: skip
    seconds = time.perf_counter() - start
    summary = adata.uns["scratio_donor"]["summary"]
    n_steps = adata.uns["scratio_donor"]["params"]["n_steps"]
    x = adata.obsm["X_pca"].astype(np.float64)
    rows = []
    for d, shift in enumerate(SHIFTS):
        donor = f"donor_{d}"
        treated = np.asarray((adata.obs["donor"] == donor) & (adata.obs["treatment"] == "stim"))
        control = np.asarray((adata.obs["donor"] == donor) & (adata.obs["treatment"] == "control"))
        y = np.r_[np.zeros(control.sum()), np.ones(treated.sum())]
        rows.append({
            "seed": seed, "donor": donor, "shift": shift, "true_mean_log_ratio": shift**2 / 2,
            "scratio": float(summary.loc[donor, "stim"]),
            "pseudobulk": float(np.linalg.norm(x[treated].mean(0) - x[control].mean(0))),
            "logreg_auc": logreg_auc(np.vstack([x[control], x[treated]]), y, seed),
            "scratio_seconds": round(seconds, 1), "n_steps": n_steps,
        })  # fmt: skip
    return rows


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a weak responder scores above a non-responder), ties count half."""
    diff = positive[:, None] - negative[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def summarise(runs: list[dict]) -> dict:
    frame = pd.DataFrame(runs)
    # Spearman over all donors cannot reach 1 with 4 tied non-responders and untied scores:
    ceiling = spearmanr(SHIFTS, np.arange(len(SHIFTS))).statistic
    per_seed = []
    for seed, group in frame.groupby("seed"):
        row = {"seed": int(seed)}
        non = group[group["shift"] == 0]
        weak = group[group["shift"].isin(WEAK)]
        responders = group[group["shift"] > 0]
        for score in SCORES:
            row[f"{score}_spearman_all"] = round(float(spearmanr(group[score], group["shift"]).statistic), 3)
            row[f"{score}_spearman_responders"] = round(
                float(spearmanr(responders[score], responders["shift"]).statistic), 3
            )
            row[f"{score}_weak_auroc"] = round(auroc(weak[score].to_numpy(), non[score].to_numpy()), 3)
            row[f"{score}_weak_gap_sd"] = round(
                float((weak[score].mean() - non[score].mean()) / non[score].std(ddof=1)), 2
            )
        per_seed.append(row)
    table = pd.DataFrame(per_seed)
    by_donor = frame.groupby(["donor", "shift"], sort=False)[SCORES].agg(["mean", "std"]).round(3)
    by_donor.columns = [f"{a}_{b}" for a, b in by_donor.columns]
    return {
        "spearman_all_ceiling": round(float(ceiling), 3),
        "per_seed": per_seed,
        "mean": {k: round(float(table[k].mean()), 3) for k in table.columns if k != "seed"},
        "min": {k: round(float(table[k].min()), 3) for k in table.columns if k != "seed"},
        "by_donor": by_donor.reset_index().to_dict("records"),
    }


def print_tables(final: dict) -> None:
    s = final["summary"]
    print(
        f"\nSpearman over all donors (ceiling with the 4 tied non-responders: {s['spearman_all_ceiling']})\n"
    )
    print("| score | Spearman, all donors (per seed) | Spearman, responders (per seed) | "
          "weak vs non AUROC (per seed) | weak vs non gap, non-responder sd (per seed) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for score in SCORES:
        cells = []
        for metric in ("spearman_all", "spearman_responders", "weak_auroc", "weak_gap_sd"):
            values = ", ".join(f"{r[f'{score}_{metric}']:g}" for r in s["per_seed"])
            cells.append(f"{values} (mean {s['mean'][f'{score}_{metric}']:g})")
        print(f"| {score} | " + " | ".join(cells) + " |")
    print("\n| donor | shift | scratio mean log r | pseudobulk distance | logreg AUC |")
    print("|---|---|---|---|---|")
    for r in s["by_donor"]:
        print(f"| {r['donor']} | {r['shift']:g} | {r['scratio_mean']:.3f} ± {r['scratio_std']:.3f} | "
              f"{r['pseudobulk_mean']:.3f} ± {r['pseudobulk_std']:.3f} | "
              f"{r['logreg_auc_mean']:.3f} ± {r['logreg_auc_std']:.3f} |")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_preset_modes(parser)
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--cells-per-group", type=int)
    parser.add_argument("--n-dims", type=int)
    add_tool_kwargs(parser, "donor_response", '{"n_steps": 6000}')
    parser.add_argument("--out")
    args = parser.parse_args()
    setting, out = start_tool_run(args, PRESETS, "donor")
    setting["tool_kwargs"] = args.tool_kwargs

    runs = []
    for seed in setting["seeds"]:
        rows = run_seed(setting, seed)
        runs += rows
        rho = spearmanr([r["scratio"] for r in rows], [r["shift"] for r in rows]).statistic
        print(f"seed {seed}: scratio {rows[0]['scratio_seconds']} s, Spearman scratio {rho:.3f}", flush=True)
    final = write_results(
        out,
        setting=setting | {"design": DESIGN, "shifts": SHIFTS, "weak": WEAK},
        packages=("scratio", "torch", "scikit-learn", "numpy", "anndata"),
        protocol={
            "truth": "per-donor shift length of the treated cells (the exact mean log r is shift^2 / 2)",
            "scratio": "uns['scratio_donor']['summary'] (mean log r of the donor's treated cells), tool defaults",
            "pseudobulk": "Euclidean distance of the donor's treated and control centroids",
            "logreg_auc": f"{DESIGN['cv_folds']}-fold stratified CV ROC AUC, donor's treated vs control cells",
            "weak_vs_non": f"weak = shifts {list(WEAK)}, non = shift 0; gap in units of the non-responders' sd",
        },
        summary=summarise(runs),
        runs=runs,
    )
    print_tables(final)


if __name__ == "__main__":
    main()
