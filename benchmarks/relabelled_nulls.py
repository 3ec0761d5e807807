"""Issue 12: how often a null dataset gets calls, from every labelling of its samples.

In a null dataset of ``significance.py`` the conditions are exchangeable between samples: every
assignment of the 6 samples to ``treated`` and ``control`` (20 with 3 per condition) is an
equally likely null dataset with the same cells. The DA tool's only use of the conditions before
its test is the choice of the bandwidth (``bandwidth="auto"``: the width whose log-ratios best
predict the held-out cells' conditions). So this script runs the tool's default call once per
dataset, keeps every cell's per-sample log-densities at every candidate width and the held-out
cells, and then replays the tool for every assignment: the width its held-out cells would choose
(the tool's rule) and the test at that width. The share of assignments with any call is the
rate at which null datasets get calls, estimated from 20 labellings per dataset instead of one;
``significance.py`` records the same at the observed labels' width (``relabelled``).

    OMP_NUM_THREADS=1 python benchmarks/relabelled_nulls.py --dataset gaussian --seeds 0 1 2 3 4 \\
        --out benchmarks/results/relabelled_nulls_a.json     # about 4.5 min per 20,000-cell dataset

Datasets and seeds are ``significance.py``'s composition-noise nulls (``--kind noisy_null``, its
seeds ``1000 + seed``) or plain nulls (``--kind null``).
"""

import argparse
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import significance
from _common import machine
from scipy.special import logsumexp

import scratio as sr
from scratio.tl import _differential_abundance as tool
from scratio.tl._significance import N_PERMUTATIONS, SampleDesign, sample_permutation_test


def capture(adata, seed) -> dict:
    """The default call's per-sample log-densities of every cell at every candidate width, and its held-out cells."""
    original, saved = tool._select_bandwidth, {}

    def select(condition_log_densities, x, labels, held_out, compared, s_min):
        widths = [s_min, *(h for h in tool.BANDWIDTH_CANDIDATES if h > s_min)]
        frames = [condition_log_densities(x, width)[1] for width in widths]
        saved.update(widths=widths, columns=list(frames[0].columns), held_out=np.asarray(held_out),
                     frames=np.stack([f.to_numpy(np.float64) for f in frames]))  # fmt: skip
        return original(condition_log_densities, x, labels, held_out, compared, s_min)

    tool._select_bandwidth = select
    try:
        score, call, info = significance.run_scratio(adata, seed)
    finally:
        tool._select_bandwidth = original
    return saved | {"call": call, "info": info}


def chosen_width(saved: dict, samples: np.ndarray, target: list[str]) -> int:
    """Index of the candidate width the tool's ``bandwidth="auto"`` picks when ``target`` are the target samples.

    The tool's own choice (``_select_bandwidth``), fed the captured per-sample log-densities of
    the held-out cells, each condition's the equal-weight mixture of its samples' as in the tool.
    """
    columns, widths, held = saved["columns"], saved["widths"], saved["held_out"]
    groups = {
        "control": [i for i, s in enumerate(columns) if s not in target],
        "treated": [columns.index(s) for s in target],
    }

    def condition_log_densities(x, width):
        frame = saved["frames"][widths.index(width)][held]
        return {c: logsumexp(frame[:, g], axis=1, b=1 / len(g)) for c, g in groups.items()}, None

    conditions = np.where(np.isin(samples, target), "treated", "control")
    width, _, _ = tool._select_bandwidth(
        condition_log_densities,
        np.empty((len(samples), 0)),
        conditions,
        held,
        ["control", "treated"],
        widths[0],
    )
    return widths.index(width)


def replay(saved: dict, samples: np.ndarray, observed_target: list[str]) -> dict:
    """Every assignment of the samples as the observed one: its width and the fraction of cells its test calls."""
    columns, frames = saved["columns"], saved["frames"]
    design = SampleDesign([c for c in columns if c not in observed_target], observed_target)
    in_design_order = [columns.index(s) for s in design.samples]
    observed_width = chosen_width(saved, samples, observed_target)
    rows = []
    for mask in design.assignments(N_PERMUTATIONS, np.random.default_rng(0)):
        target = [s for s, m in zip(design.samples, mask, strict=True) if m]
        own_width = chosen_width(saved, samples, target)
        fractions = {
            name: significance.fraction_called_as_observed(
                sample_permutation_test, frames[width][:, in_design_order], design, mask,
                n_permutations=N_PERMUTATIONS, normalization="median",
                min_log_ratio=saved["info"]["test"]["min_log_ratio"], treat=saved["info"]["test"]["treat"],
            )
            for name, width in (("own_width", own_width), ("observed_width", observed_width))
        }  # fmt: skip
        rows.append({"target": target, "width": saved["widths"][own_width], **fractions})
    return {"observed_width": saved["widths"][observed_width], "assignments": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["pbmc68k", "gaussian"], default="gaussian")
    parser.add_argument("--kind", choices=["noisy_null", "null"], default="noisy_null")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    sr.settings.verbosity = 0
    setting = dict(significance.PRESETS["full"])
    specs = [{"dataset": args.dataset, "kind": args.kind, "population": None, "enrichment": 0.5, "seed": 1000 + s}
             for s in args.seeds]  # fmt: skip
    bases = significance.bases_for(setting, specs)
    datasets = []
    for spec in specs:
        adata = significance.make_dataset(bases, spec, setting["concentration"])
        samples = adata.obs["sample"].astype(str).to_numpy()
        saved = capture(adata, spec["seed"])
        observed_target = sorted(
            {s for s, c in zip(samples, adata.obs["condition"], strict=True) if c == "treated"}
        )
        result = replay(saved, samples, observed_target)
        observed = result["assignments"][0]  # the observed assignment comes first
        assert observed["own_width"] == float((saved["call"] != 0).mean()), (
            "the replay differs from the tool's call"
        )
        own = np.array([a["own_width"] for a in result["assignments"]])
        fixed = np.array([a["observed_width"] for a in result["assignments"]])
        datasets.append({**spec, "tool_width": saved["info"]["bandwidth_used"], **result,
                         "observed_fraction_called": observed["own_width"],
                         "assignments_with_calls": int(np.count_nonzero(own)),
                         "assignments_with_calls_at_observed_width": int(np.count_nonzero(fixed)),
                         "mean_fraction_called": float(own.mean())})  # fmt: skip
        print(f"{spec['dataset']} {spec['kind']} seed {spec['seed']}: width {result['observed_width']}, observed "
              f"{observed['own_width']:.4f} called; assignments with calls {np.count_nonzero(own)} of {len(own)} "
              f"({np.count_nonzero(fixed)} at the observed width), mean fraction {own.mean():.4f}", flush=True)  # fmt: skip
        n = sum(len(d["assignments"]) for d in datasets)
        summary = {
            "datasets": len(datasets),
            "observed_datasets_with_calls": sum(d["observed_fraction_called"] > 0 for d in datasets),
            "observed_mean_fraction_called": float(
                np.mean([d["observed_fraction_called"] for d in datasets])
            ),
            "share_of_assignments_with_calls": sum(d["assignments_with_calls"] for d in datasets) / n,
            "share_at_observed_width": sum(d["assignments_with_calls_at_observed_width"] for d in datasets)
            / n,
            "mean_fraction_called_over_assignments": float(
                np.mean([d["mean_fraction_called"] for d in datasets])
            ),
        }
        Path(args.out).write_text(json.dumps({"machine": machine(), "args": vars(args), "summary": summary,
                                              "datasets": datasets}, indent=1))  # fmt: skip
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
