"""Issue 11: how much to smooth when scoring. One trained DA model, scored at several bandwidths.

``sr.tl.differential_abundance(..., bandwidth=h)`` scores the cells under both densities smoothed
by a Gaussian kernel of ``h`` standard deviations (the model's densities at the time of the flow
where they are the data's smoothed by ``h``; see "How it works"). The model is trained once, with
the tool's settings (``s_min = 0.4``, its steps, ``n_pcs="auto"``), and every bandwidth scores the
same model, so the rows of one dataset differ only in ``h``. ``h = 0.4`` is the tool before
``bandwidth`` (scoring at ``s_min``). The tool's default, ``bandwidth="auto"``, chooses one of
0.4-1.6 by the held-out gain below (``tool_chose``); the row at its choice is checked against the
tool's own output (``same_as_tool``).

Datasets: random labels on ``pbmc68k_reduced`` (no DA: every log-ratio is noise) and the
semi-synthetic labels of section 3 (``sr.datasets.pbmc68k_da``, delta 0.1, 0.2, 0.4), 3 seeds;
``--large`` the same on the 20,000-cell Gaussian set (all 50 PCs, or ``--n-dims``; random labels
and delta 0.1, 0.2; seeds ``--large-seeds``). MELD on all 50 PCs in the same run for reference. Reported per
bandwidth: noise sd and share beyond log 1.5, PR-AUC, NAR, CSP, RMSE against the true log-ratio
(``noise_floor.py``), and ``held_out_gain``: the mean log-likelihood of the labels of the cells
held out of training under ``logit P(treated | x) = log r + log(n_t / n_c)`` (the ratio as
written, no fitted scale) minus that of the prior odds alone, in nats per cell, a proper score
of the ratio that the training never saw. The row ``"averaged"`` is every width's ratios
weighted by ``softmax`` of their summed held-out gains (a posterior over the widths), instead
of the one best.

    OMP_NUM_THREADS=1 python benchmarks/bandwidth.py                        # pbmc68k, about 6 min
    OMP_NUM_THREADS=1 python benchmarks/bandwidth.py --large --no-pbmc      # 20,000 cells, about 12 min per dataset
    python benchmarks/bandwidth.py --rules   # other selection rules on the held-out gains of --out

Results: ``results/bandwidth.json`` (``--out``).
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import DA_MODEL, da_log_ratios, da_tool_model, machine, scoring_of
from noise_floor import da_row, meld_score, noise_row, random_labels
from scipy.special import softmax

import scratio as sr

BANDWIDTHS = [0.4, 0.5, 0.6, 0.8, 1.0, 1.3, 1.6]
METRICS = ["held_out_gain", "sd", "flagged", "pr_auc", "nar", "csp", "rmse"]


def held_out_gains(log_r, is_treated, held):
    """Per held-out cell, the nats that ``log r`` adds to the prior odds in predicting its label."""
    offset = np.log(is_treated.mean() / (1 - is_treated.mean()))
    sign = np.where(is_treated[held], 1.0, -1.0)
    return np.logaddexp(0, -sign * offset) - np.logaddexp(0, -sign * (log_r[held] + offset))


def score_dataset(adata, seed, bandwidths, is_da, validation_fraction=None):
    """The tool's model, trained once, scored at every bandwidth."""
    held = {} if validation_fraction is None else {"validation_fraction": validation_fraction}
    tool = sr.tl.differential_abundance(adata, "condition", reference="control", target="treated",
                                        use_rep="X_pca", random_state=seed, copy=True, train_kwargs=held)  # fmt: skip
    params = tool.uns["scratio_da"]["params"]
    model = da_tool_model(adata, params, seed, **held)
    is_treated = (adata.obs["condition"] == "treated").to_numpy()
    rows, log_rs, total_gains = [], [], []
    for h in bandwidths:
        log_r = da_log_ratios(model, h, **scoring_of(params))
        gains = held_out_gains(log_r, is_treated, model.held_out)
        log_rs.append(log_r)
        total_gains.append(gains.sum())
        row = {"bandwidth": h, "held_out_gain": round(float(gains.mean()), 5),
               **noise_row(log_r), **(da_row(log_r, adata) if is_da else {}),
               "held_out_cell_gains": np.round(gains, 5).tolist()}  # fmt: skip
        if h == params["bandwidth_used"]:  # the tool's choice: the same numbers
            row["same_as_tool"] = bool(np.allclose(log_r, tool.obs["scratio_da"], atol=1e-3))
        rows.append(row)
    # every width's ratios, weighted by its held-out likelihood (a posterior over the widths, flat prior)
    weights = softmax(total_gains)
    averaged = weights @ np.array(log_rs)
    rows.append({"bandwidth": "averaged", "weights": np.round(weights, 4).tolist(),
                 **noise_row(averaged), **(da_row(averaged, adata) if is_da else {})})  # fmt: skip
    meld, _ = meld_score(adata, adata.obsm["X_pca"].shape[1], seed)
    rows.append({"bandwidth": "meld", **noise_row(meld), **(da_row(meld, adata) if is_da else {})})
    for row in rows:
        row["tool_chose"] = params["bandwidth_used"]
    return rows, int(params["n_dims"])


def choose(rows, rule, widest):
    """The row a selection rule picks from one dataset's rows, using each held-out cell's gain.

    ``argmax``: the highest mean gain among widths up to ``widest`` (the tool's rule);
    ``one_se``, ``one_se_narrowest``, ``one_se_middle``: the widest, the narrowest or the middle
    (of an even number, the wider of the two in the middle) of the widths whose mean gain is
    within one paired standard error of the best; ``guard_k``: the argmax, unless the best mean gain is within ``k`` standard errors
    of 0 (the labels show no signal), then the widest.
    """
    rows = [r for r in rows if isinstance(r["bandwidth"], float) and r["bandwidth"] <= widest]
    gains = np.array([r["held_out_cell_gains"] for r in rows]).T
    mean = gains.mean(axis=0)
    best = int(np.argmax(mean))
    if rule.startswith("one_se"):
        difference = gains[:, [best]] - gains
        within = np.flatnonzero(
            difference.mean(axis=0) <= difference.std(axis=0, ddof=1) / np.sqrt(len(gains))
        )
        position = {"one_se": -1, "one_se_narrowest": 0, "one_se_middle": len(within) // 2}[rule]
        return rows[int(within[position])]
    if rule.startswith("guard_"):
        k = float(rule.removeprefix("guard_"))
        if mean[best] < k * gains[:, best].std(ddof=1) / np.sqrt(len(gains)):
            return rows[-1]
    return rows[best]


RULES = {"argmax up to 1.0": ("argmax", 1.0), "argmax up to 1.6 (the tool)": ("argmax", 1.6),
         "one standard error": ("one_se", 1.6), "one standard error, narrowest": ("one_se_narrowest", 1.6),
         "one standard error, middle": ("one_se_middle", 1.6),
         "guard, 1 s.e.": ("guard_1", 1.6), "guard, 2 s.e.": ("guard_2", 1.6)}  # fmt: skip


def compare_rules(runs):
    """Mean metrics per dataset and delta of the row each rule picks (``--rules``)."""
    datasets = {}
    for r in runs:
        datasets.setdefault((r["dataset"], r["delta"], r["seed"]), []).append(r)
    table = []
    for name, (rule, widest) in RULES.items():
        for key, rows in datasets.items():
            row = choose(rows, rule, widest)
            table.append({"rule": name, "dataset": key[0], "delta": key[1], "chose": row["bandwidth"],
                          **{m: row.get(m) for m in METRICS[1:]}})  # fmt: skip
    frame = pd.DataFrame(table)
    return frame.groupby(["rule", "dataset", "delta"], dropna=False, sort=False)[METRICS[1:]].mean().round(3)


def summarise(runs):
    """Mean per dataset, delta and bandwidth, with ``"auto"``: each dataset's row at the tool's choice."""
    chosen = [r | {"bandwidth": "auto"} for r in runs if r["bandwidth"] == r.get("tool_chose")]
    frame = pd.DataFrame(runs + chosen).astype({"bandwidth": str})
    summary = (frame.groupby(["dataset", "delta", "bandwidth"], dropna=False, sort=False)
               [[m for m in METRICS if m in frame]].mean().round(4).reset_index())  # fmt: skip
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in summary.to_dict("records")]  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bandwidths", type=float, nargs="+", default=BANDWIDTHS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--deltas", type=float, nargs="+", default=[0.1, 0.2, 0.4])
    parser.add_argument("--no-pbmc", action="store_true")
    parser.add_argument("--large", action="store_true", help="the 20,000-cell Gaussian set")
    parser.add_argument("--n-dims", type=int, default=50, help="leading PCs of the 20,000-cell set")
    parser.add_argument("--large-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--large-deltas", type=float, nargs="*", default=[0.1, 0.2])
    parser.add_argument(
        "--validation-fraction", type=float, help="cells held out of training (tool default: 0.1)"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bandwidth.json"))
    parser.add_argument("--summarise", action="store_true", help="rebuild the summary of --out from its runs")
    parser.add_argument("--rules", action="store_true", help="compare selection rules on the gains in --out")
    args = parser.parse_args()
    if args.rules:
        with pd.option_context("display.width", 200, "display.max_rows", 100, "display.max_columns", 20):
            print(compare_rules(json.loads(Path(args.out).read_text())["runs"]))
        return
    if args.summarise:
        final = json.loads(Path(args.out).read_text())
        final["summary"] = summarise(final["runs"])
        Path(args.out).write_text(json.dumps(final, indent=1))
        return
    sr.settings.verbosity = 0
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*cells per dimension")
    datasets = []
    if not args.no_pbmc:
        import scanpy as sc

        pbmc = sc.datasets.pbmc68k_reduced()
        datasets += [("pbmc68k", None, s, lambda s=s: random_labels(pbmc, s)) for s in args.seeds]
        datasets += [("pbmc68k", d, s, lambda d=d, s=s: sr.datasets.pbmc68k_da(d, random_state=s))
                     for d in args.deltas for s in args.seeds]  # fmt: skip
    if args.large:
        from da_speed import cells

        base = cells(args.n_dims)
        datasets += [("gaussian", None, s, lambda s=s: random_labels(base, s)) for s in args.large_seeds]
        datasets += [("gaussian", d, s, lambda d=d, s=s: sr.datasets.semi_synthetic_da(base, "leiden", delta=d,
                      random_state=s, copy=True)) for d in args.large_deltas for s in args.large_seeds]  # fmt: skip
    runs = []
    for name, delta, seed, make in datasets:
        start = time.perf_counter()
        rows, n_dims = score_dataset(
            make(), seed, args.bandwidths, delta is not None, args.validation_fraction
        )
        seconds = round(time.perf_counter() - start, 1)
        for row in rows:
            runs.append(
                {"dataset": name, "delta": delta, "seed": seed, "n_dims": n_dims, "seconds": seconds, **row}
            )
            print({k: v for k, v in runs[-1].items() if k != "held_out_cell_gains"}, flush=True)
        final = {"setting": {**vars(args), "s_min": DA_MODEL["s_min"],
                             "torch_threads": torch.get_num_threads(), "machine": machine()["machine"]},
                 "summary": summarise(runs), "runs": runs}  # fmt: skip
        Path(args.out).write_text(json.dumps(final, indent=1))
    for row in final["summary"]:
        print(row)


if __name__ == "__main__":
    main()
