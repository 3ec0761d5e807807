"""Could held-out labels choose ``n_pcs``? The held-out label likelihood against PR-AUC, per number of PCs.

For each semi-synthetic DA dataset (the protocol of ``differential_abundance.py``), one model is
trained per number of leading PCs with the DA tool's settings (``s_min = 0.4``, ``n_steps =
clip(n / 2, 400, 3000)`` of 1,024 cells, 10% held out), and every cell scored as the tool does
(``category_log_likelihoods``, treated minus control) but with the model's default solver (rk4
in 3 steps; the tool uses 2, so PR-AUCs differ from section 3's in the second decimal). Recorded
per model:

``pr_auc``
    Of the log-ratio against the true DA cells, as in section 3.
``held_out_gain``
    Mean log-likelihood of the held-out cells' labels under ``logit P(treated | x) = a log r +
    log(n_t / n_c)`` with ``a`` fitted on them (``scratio.core.fit_logit_scale``), minus that of the
    prior odds alone: nats per cell the model's ratio adds. A selection rule would keep the
    number of PCs with the largest gain.

    OMP_NUM_THREADS=1 python benchmarks/dimension_selection.py --datasets pbmc68k     # about 5 min
    OMP_NUM_THREADS=1 python benchmarks/dimension_selection.py --datasets gaussian    # about 15 min

Results: ``results/dimension_selection_{dataset}.json``.
"""

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import DA_MODEL, machine

import scratio as sr
from scratio.core import fit_logit_scale

PRESETS = {
    "pbmc68k": {"n_pcs": [5, 10, 20, 50], "deltas": [0.1, 0.2, 0.4], "seeds": [0, 1, 2]},
    "gaussian": {"n_pcs": [10, 20, 50], "deltas": [0.1], "seeds": [0, 1]},
}


def dataset(name, delta, seed, bases):
    """The semi-synthetic labels of ``differential_abundance.py`` on pbmc68k or its 20,000-cell Gaussian set."""
    if name == "pbmc68k":
        return sr.datasets.pbmc68k_da(delta, random_state=seed)
    if "gaussian" not in bases:
        from differential_abundance import gaussian_base, pbmc68k_base

        bases["gaussian"] = gaussian_base(pbmc68k_base(), 20_000)
    return sr.datasets.semi_synthetic_da(
        bases["gaussian"], "leiden", delta=delta, random_state=seed, copy=True
    )


def one_model(adata, n_pcs, seed):
    """PR-AUC and held-out label gain of the DA tool's model on the first ``n_pcs`` PCs."""
    start = time.perf_counter()
    model = sr.RatioFlow(adata, "X_pca", ["condition"], n_pcs=n_pcs, **DA_MODEL, random_state=seed)
    model.train(int(np.clip(adata.n_obs // 2, 400, 3000)), batch_size=1024, accelerator="cpu")
    log_p = model.category_log_likelihoods(key="condition")
    log_r = (log_p["treated"] - log_p["control"]).to_numpy(np.float64)
    held = model.held_out
    is_treated = (adata.obs["condition"] == "treated").to_numpy()
    offset = float(np.log(is_treated.mean() / (1 - is_treated.mean())))
    fit = fit_logit_scale(log_r[held], is_treated[held], offset, shrink=0.0)
    sign = np.where(is_treated[held], 1.0, -1.0)
    gain = np.mean(
        np.logaddexp(0, -sign * offset) - np.logaddexp(0, -sign * (fit.scale_mle * log_r[held] + offset))
    )
    metrics = sr.datasets.da_metrics(log_r, adata.obs["is_da"], adata.obs["true_log_odds"])
    return {
        "pr_auc": round(float(metrics["pr_auc"]), 4),
        "held_out_gain": round(float(gain), 5),
        "scale_mle": round(float(fit.scale_mle), 3),
        "n_held_out": len(held),
        "seconds": round(time.perf_counter() - start, 1),
    }


def summarise(runs):
    """Per dataset, delta and seed: the PCs the gain would choose, their PR-AUC and the best PR-AUC."""
    groups = {}
    for run in runs:
        groups.setdefault((run["dataset"], run["delta"], run["seed"]), []).append(run)
    summary = []
    for (name, delta, seed), group in groups.items():
        chosen = max(group, key=lambda r: r["held_out_gain"])
        best = max(group, key=lambda r: r["pr_auc"])
        summary.append({"dataset": name, "delta": delta, "seed": seed, "chosen_n_pcs": chosen["n_pcs"],
                        "chosen_pr_auc": chosen["pr_auc"], "best_n_pcs": best["n_pcs"], "best_pr_auc": best["pr_auc"]})  # fmt: skip
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=list(PRESETS), default=["pbmc68k"])
    parser.add_argument("--n-pcs", type=int, nargs="+")
    parser.add_argument("--deltas", type=float, nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--out", help="output JSON (default: results/dimension_selection_{dataset}.json)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sr.settings.verbosity = 0
    warnings.filterwarnings("ignore")  # the tool's dimension warning is the point here
    bases = {}
    for name in args.datasets:
        setting = {key: getattr(args, key) or value for key, value in PRESETS[name].items()}
        runs = []
        for delta in setting["deltas"]:
            for seed in setting["seeds"]:
                adata = dataset(name, delta, seed, bases)
                for n_pcs in setting["n_pcs"]:
                    run = {"dataset": name, "n_cells": adata.n_obs, "delta": delta, "seed": seed, "n_pcs": n_pcs,
                           **one_model(adata, n_pcs, seed)}  # fmt: skip
                    runs.append(run)
                    print(run, flush=True)
        out = Path(args.out or Path(__file__).parent / "results" / f"dimension_selection_{name}.json")
        final = {
            "setting": setting,
            "machine": machine()["machine"],
            "summary": summarise(runs),
            "runs": runs,
        }
        out.write_text(json.dumps(final, indent=1))
        for row in final["summary"]:
            print(row)


if __name__ == "__main__":
    main()
