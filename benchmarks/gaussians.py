"""Closed-form Gaussian ratios (paper Fig. 2): N(loc * 1_d, I) against N(0, I) over loc x d x seeds.

For each (loc, d, seed) one RatioFlow is trained on a training set and a held-out test set
(drawn with another seed) is scored with S1, S2 and naive (exact divergence, rk4). Reports the
MSE against the closed form ``loc * sum(x) - d loc^2 / 2`` (``obs["true_log_ratio"]`` of the
test cells), the wall time of each estimator and the training budget.

    python benchmarks/gaussians.py --quick     # 1 seed, loc 1 and 2, d 2/10/30, 4k+1k cells, CPU
    python benchmarks/gaussians.py --full      # 3 seeds, the whole grid, 20k cells (GPU or long CPU run)
"""

import json

import numpy as np
from _common import machine, parse_setting, score_estimators, train_timed

import scratio as sr

# The reference implementation's learned field + score, MSE by loc and d: at loc 2 its Gaussian
# ablation (90k training cells per distribution, 100k steps of 512, s_min = 0.001); at loc 4 the
# figures of its code reported with the accuracy issue (about). None are known for loc 1.
REFERENCE_MSE = {
    2.0: {2: 0.09, 5: 0.10, 10: 0.86, 20: 2.8, 30: 49.0},
    4.0: {2: 1.8, 5: 12.0, 10: 170.0, 20: 2000.0, 30: 7600.0},
}


def reference_mse(loc: float, d: int) -> float | None:
    """The reference implementation's MSE at ``loc`` and ``d``, if known."""
    return REFERENCE_MSE.get(float(loc), {}).get(d)


PRESETS = {
    "quick": {"seeds": [0], "locs": [1.0, 2.0], "dims": [2, 10, 30], "n_train": 4000, "n_test": 1000,
              "steps": 1500, "batch_size": 1024, "width": 128},
    "full": {"seeds": [0, 1, 2], "locs": [1.0, 2.0, 4.0], "dims": [2, 5, 10, 20, 30], "n_train": 20_000,
             "n_test": 5000, "steps": 3000, "batch_size": 2048, "width": 256},
}  # fmt: skip


def main():
    setting, out = parse_setting(__doc__.splitlines()[0], PRESETS, "gaussians", {"locs": float, "dims": int})
    sr.settings.verbosity = 0

    numerator, denominator = {"condition": "shifted"}, {"condition": "reference"}
    runs = []
    for loc in setting["locs"]:
        for d in setting["dims"]:
            for seed in setting["seeds"]:
                train = sr.datasets.shifted_gaussians(setting["n_train"], d, loc=loc, random_state=seed)
                test = sr.datasets.shifted_gaussians(
                    setting["n_test"], d, loc=loc, random_state=10_000 + seed
                )
                truth = test.obs["true_log_ratio"].to_numpy()
                model, training = train_timed(train, setting, seed)
                run = {
                    "loc": loc, "d": d, "seed": seed, **training,
                    "truth_variance": round(float(truth.var()), 3),
                    "estimators": {},
                }  # fmt: skip
                run["estimators"] = score_estimators(
                    model, test, numerator, denominator, setting,
                    lambda estimate, truth=truth: {"mse": round(float(((estimate - truth) ** 2).mean()), 4)},
                )  # fmt: skip
                runs.append(run)
                e = run["estimators"]
                print(
                    f"loc {loc:g} d {d:2d} seed {seed}: train {run['train_seconds']}s ({run['steps_trained']} steps, "
                    f"best {run['best_step']}) | MSE "
                    + " ".join(f"{m} {v['mse']} ({v['seconds']} s)" for m, v in e.items())
                    + f" | ref {reference_mse(loc, d)}",
                    flush=True,
                )
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(_results(setting, runs), indent=1))

    print("\nmean MSE over seeds (reference: learned field + score; loc 2: its ablation, loc 4: reported)")
    print("loc   d " + "".join(f"{m:>8s}" for m in setting["estimators"]) + "  reference")
    for row in _results(setting, runs)["summary"]:
        mses = "".join(f"{row[f'mse_{m}']:8.4f}" for m in setting["estimators"])
        print(f"{row['loc']:3g} {row['d']:3d} {mses}  {row['reference_mse']}")


def _results(setting, runs):
    summary = []
    for loc in setting["locs"]:
        for d in setting["dims"]:
            group = [r for r in runs if r["loc"] == loc and r["d"] == d]
            if not group:
                continue
            row = {"loc": loc, "d": d, "n_seeds": len(group)}
            for method in setting["estimators"]:
                row[f"mse_{method}"] = round(
                    float(np.mean([r["estimators"][method]["mse"] for r in group])), 4
                )
                row[f"seconds_{method}"] = round(
                    float(np.mean([r["estimators"][method]["seconds"] for r in group])), 2
                )
            row["train_seconds"] = round(float(np.mean([r["train_seconds"] for r in group])), 2)
            row["reference_mse"] = reference_mse(loc, d)
            summary.append(row)
    return {
        "setting": setting | machine(),
        "reference": {
            "mse_by_loc_and_d": {str(loc): by_d for loc, by_d in REFERENCE_MSE.items()},
            "note": "reference implementation, learned field + score; loc 2: Gaussian ablation (90k cells, "
            "100k steps, s_min 0.001); loc 4: figures reported with the accuracy issue",
        },  # fmt: skip
        "summary": summary,
        "runs": runs,
    }


if __name__ == "__main__":
    main()
