"""Gaussian mixtures with an exact log-ratio (issue 11, goal 5: R² >= 0.95 at d = 10 and 30).

Two conditions share four unit-variance Gaussian components whose centres lie 3 apart from the
origin in random directions (seeded). ``control`` weighs them 0.4, 0.3, 0.2, 0.1 and
``treated`` 0.1, 0.2, 0.3, 0.4, and in ``treated`` the last component is also moved by 1.5 along
another random direction: an abundance change in every state and a state that shifts. The exact
per-cell log-ratio is ``log p(x | treated) - log p(x | control)`` of the two mixtures
(``scipy.special.logsumexp``). For each (d, seed) one RatioFlow is trained on ``n_train`` cells
(half per condition) and a test set drawn with another seed is scored with S1, S2 and naive
(exact divergence, rk4), as ``gaussians.py`` does; reported: R² = 1 - MSE / var(exact) over the
test cells, MSE, and the wall time of each estimator.

    python benchmarks/mixtures.py --quick     # 1 seed, d 10 and 30, 4k+1k cells, 1,500 steps of 1,024
    python benchmarks/mixtures.py --full      # 3 seeds, 20k+5k cells, 3,000 steps of 2,048 (width 256)
"""

import json

import numpy as np
import pandas as pd
from _common import machine, parse_setting, score_estimators, train_timed
from anndata import AnnData
from scipy.special import logsumexp

import scratio as sr

PRESETS = {
    "quick": {"seeds": [0], "dims": [10, 30], "n_train": 4000, "n_test": 1000,
              "steps": 1500, "batch_size": 1024, "width": 128},
    "full": {"seeds": [0, 1, 2], "dims": [10, 30], "n_train": 20_000, "n_test": 5000,
             "steps": 3000, "batch_size": 2048, "width": 256},
}  # fmt: skip

WEIGHTS = {"control": np.array([0.4, 0.3, 0.2, 0.1]), "treated": np.array([0.1, 0.2, 0.3, 0.4])}
RADIUS, SHIFT = 3.0, 1.5
GOAL_R2 = 0.95


def _unit(rng, n, d):
    v = rng.normal(size=(n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def mixture_means(d: int, seed: int) -> dict[str, np.ndarray]:
    """The component centres of each condition (the geometry depends on ``seed`` only)."""
    rng = np.random.default_rng(seed)
    control = RADIUS * _unit(rng, len(WEIGHTS["control"]), d)
    treated = control.copy()
    treated[-1] += SHIFT * _unit(rng, 1, d)[0]
    return {"control": control, "treated": treated}


def log_density(x: np.ndarray, means: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``log sum_k w_k N(x; m_k, I)``."""
    d = x.shape[1]
    squared = ((x[:, None, :] - means[None]) ** 2).sum(axis=2)
    return logsumexp(np.log(weights) - 0.5 * squared - 0.5 * d * np.log(2 * np.pi), axis=1)


def draw(n: int, means: dict[str, np.ndarray], seed: int) -> AnnData:
    """``n`` cells, half per condition, with the exact log-ratio in ``obs["true_log_ratio"]``."""
    rng = np.random.default_rng(seed)
    condition = np.where(np.arange(n) < n // 2, "control", "treated")
    x = np.empty((n, means["control"].shape[1]))
    for name in ("control", "treated"):
        rows = np.flatnonzero(condition == name)
        component = rng.choice(len(WEIGHTS[name]), size=len(rows), p=WEIGHTS[name])
        x[rows] = means[name][component] + rng.normal(size=(len(rows), x.shape[1]))
    truth = log_density(x, means["treated"], WEIGHTS["treated"]) - log_density(
        x, means["control"], WEIGHTS["control"]
    )
    obs = pd.DataFrame({"condition": pd.Categorical(condition), "true_log_ratio": truth})
    return AnnData(obs=obs, obsm={"X_pca": x.astype(np.float32)})


def main():
    setting, out = parse_setting(__doc__.splitlines()[0], PRESETS, "mixtures", {"dims": int})
    sr.settings.verbosity = 0
    numerator, denominator = {"condition": "treated"}, {"condition": "control"}
    runs = []
    for d in setting["dims"]:
        for seed in setting["seeds"]:
            means = mixture_means(d, seed)
            train = draw(setting["n_train"], means, seed)
            test = draw(setting["n_test"], means, 10_000 + seed)
            truth = test.obs["true_log_ratio"].to_numpy()
            model, training = train_timed(train, setting, seed)
            run = {
                "d": d,
                "seed": seed,
                **training,
                "truth_variance": round(float(truth.var()), 3),
            }

            def metrics(estimate, truth=truth):
                mse = float(((estimate - truth) ** 2).mean())
                return {"r2": round(1 - mse / float(truth.var()), 4), "mse": round(mse, 4)}

            run["estimators"] = score_estimators(model, test, numerator, denominator, setting, metrics)
            runs.append(run)
            e = run["estimators"]
            print(
                f"d {d:2d} seed {seed}: train {run['train_seconds']} s | R² "
                + " ".join(f"{m} {v['r2']}" for m, v in e.items())
                + f" (var {run['truth_variance']})",
                flush=True,
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(_results(setting, runs), indent=1))
    print("\nmean R² over seeds (goal >= 0.95)")
    for row in _results(setting, runs)["summary"]:
        print(f"d {row['d']:2d}: " + "  ".join(f"{m} {row[f'r2_{m}']:.3f}" for m in setting["estimators"]))


def _results(setting, runs):
    summary = []
    for d in setting["dims"]:
        group = [r for r in runs if r["d"] == d]
        if not group:
            continue
        row = {
            "d": d,
            "n_seeds": len(group),
            "truth_variance": round(float(np.mean([r["truth_variance"] for r in group])), 3),
        }
        for method in setting["estimators"]:
            values = [r["estimators"][method]["r2"] for r in group]
            row[f"r2_{method}"] = round(float(np.mean(values)), 4)
            row[f"r2_{method}_min"] = round(float(np.min(values)), 4)
            row[f"seconds_{method}"] = round(
                float(np.mean([r["estimators"][method]["seconds"] for r in group])), 2
            )
        row["train_seconds"] = round(float(np.mean([r["train_seconds"] for r in group])), 2)
        summary.append(row)
    return {
        "setting": setting | machine(),
        "design": {"weights": {k: v.tolist() for k, v in WEIGHTS.items()}, "radius": RADIUS, "shift": SHIFT},
        "goal_r2": GOAL_R2,
        "summary": summary,
        "runs": runs,
    }


if __name__ == "__main__":
    main()
