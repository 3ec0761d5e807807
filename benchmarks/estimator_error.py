"""Where the error of S1 and naive comes from, on the issue-2 data (d = 30, ``|m| = 2``).

Section 4 found S1 no better than naive at equal wall time, with the MSE flat in the solver.
This script splits the error of the trained model into its parts and sets it against what the
data allow:

1. **Decomposition.** Each trained model scores held-out cells (exact divergence, rk4 with
   2 steps) with its own fields, with its velocity and the closed-form score, with the
   closed-form velocity and its score, and with both closed-form. Naive uses velocities only.
2. **Statistical floor.** The plug-in ratio of Gaussians fitted by maximum likelihood to the
   same training cells (the true model family, so no estimator without further assumptions does
   better by much): per-condition means and covariances, a pooled covariance, or the means alone
   (the covariance known). Repeated at 4x and 16x the cells.
3. **Training settings.** With ``--variants``, the decomposition for other training settings
   (condition dropout, embedding size, separate heads, EMA, weight decay, learning rate, batch).
4. **Cheap solvers.** Integration error on the closed-form fields for Euler, midpoint and rk4
   with 1-8 steps.

    python benchmarks/estimator_error.py                       # writes results/estimator_error.json
    python benchmarks/estimator_error.py --steps 2000 --seeds 0
    python benchmarks/estimator_error.py --steps 2000 --variants all --seeds 0 --out benchmarks/results/estimator_error_variants_seed0.json
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine
from cost_frontier import analytic_frontier, gaussian_pair
from scipy.stats import multivariate_normal

import scratio as sr
from scratio.core import GaussianConditionalField, Solver, ode

ESTIMATORS = ("s1", "s2", "naive")
# Training settings tried against the default: (RatioFlow keywords, train keywords).
VARIANTS = {
    "default": ({}, {}),
    "p_drop=0.5": ({}, {"p_drop": 0.5}),
    "condition_dim=4": ({"condition_dim": 4}, {}),
    "head_layers=1": ({"head_layers": 1}, {}),
    "ema_decay=0.999": ({}, {"ema_decay": 0.999}),
    "weight_decay=0.01": ({}, {"weight_decay": 1e-2}),
    "lr=0.002": ({}, {"lr": 2e-3}),
    "batch_size=2048": ({}, {"batch_size": 2048}),
}


class MixedField(torch.nn.Module):
    """The velocity of one field with the score of another."""

    def __init__(self, velocity_from, score_from):
        super().__init__()
        self.velocity_from, self.score_from = velocity_from, score_from

    def forward(self, x, t, codes):
        return self.velocity_from(x, t, codes)[0], self.score_from(x, t, codes)[1]


def closed_form_in_model_units(model, mean: np.ndarray) -> GaussianConditionalField:
    """The exact fields of ``N(0, I)`` (code 0, reference) and ``N(mean, I)`` (code 1) after the
    model's per-feature standardisation, so they can stand in for its network."""
    centre, scale = model.registration.mean.astype(np.float64), model.registration.scale.astype(np.float64)
    means = np.stack([-centre / scale, (mean - centre) / scale])
    covariances = np.stack([np.diag(1 / scale**2)] * 2)
    return GaussianConditionalField(means, covariances, model.path).float()


def decomposition(model, cells, mean, options):
    """MSE of each estimator for each mix of learned and closed-form velocity and score."""
    exact = closed_form_in_model_units(model, mean)
    z = torch.as_tensor(model.registration.standardise(cells), dtype=torch.float32)
    truth = exact.log_prob(z.double(), 1) - exact.log_prob(z.double(), 0)
    n = len(z)
    numerator, denominator, null = (torch.full((n, 1), k) for k in (1, 0, 2))
    fields = {
        "learned": model.network,
        "learned velocity, exact score": MixedField(model.network, exact),
        "exact velocity, learned score": MixedField(exact, model.network),
        "exact": exact,
    }
    rows = []
    for name, field in fields.items():
        # Naive uses no score: the mixed fields would repeat the learned or exact row.
        for estimator in ESTIMATORS if name in ("learned", "exact") else ("s1", "s2"):
            estimate = ode.log_ratio(
                field, z, numerator, denominator, estimator=estimator, base=null, solver=options
            )
            mse = float(((estimate.double() - truth) ** 2).mean())
            rows.append({"fields": name, "estimator": estimator, "mse": round(mse, 5)})
            print(f"  {name:32s} {estimator:5s} MSE {mse:.4f}", flush=True)
    return rows


def gaussian_fit_floor(n_obs: int, mean: np.ndarray, cells: np.ndarray, s_min: float, seed: int = 0):
    """MSE of plug-in Gaussian log-ratios fitted to ``n_obs`` training cells (half per condition)."""
    d = len(mean)
    adata = gaussian_pair(n_obs, np.eye(d), mean, seed=seed)
    x = adata.obsm["X_pca"].astype(np.float64)
    shifted = (adata.obs["condition"] == "shifted").to_numpy()
    smoothing = s_min**2 * np.eye(d)  # the model targets the s_min-smoothed densities

    def log_ratio(mean_a, cov_a, mean_b, cov_b):
        return multivariate_normal(mean_a, cov_a + smoothing).logpdf(cells) - multivariate_normal(
            mean_b, cov_b + smoothing
        ).logpdf(cells)

    truth = log_ratio(mean, np.eye(d), np.zeros(d), np.eye(d))
    a, b = x[shifted], x[~shifted]
    pooled = np.cov(np.concatenate([a - a.mean(0), b - b.mean(0)]).T)
    fits = {
        "means and covariances": log_ratio(a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T)),
        "means, pooled covariance": log_ratio(a.mean(0), pooled, b.mean(0), pooled),
        "means only (covariance known)": log_ratio(a.mean(0), np.eye(d), b.mean(0), np.eye(d)),
    }
    return {name: round(float(((fit - truth) ** 2).mean()), 5) for name, fit in fits.items()}


def cheap_solvers(mean, cells, path, steps=(1, 2, 4, 8)):
    """Integration error alone: every estimator on the closed-form fields (float64), with
    section 4's grid runner. Code 0 is the shifted condition there."""
    d = len(mean)
    field = GaussianConditionalField(np.stack([mean, np.zeros(d)]), np.stack([np.eye(d)] * 2), path)
    grid = [
        (f"{solver} {n}", {"solver": solver, "n_steps": n})
        for solver in ("euler", "midpoint", "rk4")
        for n in steps
    ]
    return analytic_frontier(field, cells, grid)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-obs", type=int, default=10_000)
    parser.add_argument("--n-eval", type=int, default=1000)
    parser.add_argument("--steps", type=int, nargs="+", default=[2000, 6000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--solver-steps", type=int, default=2)
    parser.add_argument(
        "--variants", nargs="+", default=["default"], help=f"training settings, or all: {list(VARIANTS)}"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "estimator_error.json"))
    args = parser.parse_args()
    sr.settings.verbosity = 0

    d = 30
    mean = np.full(d, 2 / np.sqrt(d))
    adata = gaussian_pair(args.n_obs, np.eye(d), mean, seed=0)
    cells = gaussian_pair(args.n_eval, np.eye(d), mean, seed=1).obsm["X_pca"]
    options = Solver(method="rk4", n_steps=args.solver_steps)

    variants = list(VARIANTS) if args.variants == ["all"] else args.variants
    models = []
    for variant in variants:
        model_options, train_options = VARIANTS[variant]
        for steps in args.steps:
            for seed in args.seeds:
                print(f"training {variant}, {steps} steps, seed {seed}", flush=True)
                start = time.perf_counter()
                model = sr.RatioFlow(
                    adata, condition_keys="condition", width=256, random_state=seed, **model_options
                )
                model.train(steps, **({"batch_size": 1024} | train_options))
                models.append({
                    "variant": variant, "steps": steps, "seed": seed,
                    "train_seconds": round(time.perf_counter() - start, 1),
                    "runs": decomposition(model, cells, mean, options),
                })  # fmt: skip
    path = model.path  # every model shares the default path
    floor = {}
    for factor in (1, 4, 16):
        floor[args.n_obs * factor] = gaussian_fit_floor(args.n_obs * factor, mean, cells, path.s_min)
        print(f"Gaussian fits on {args.n_obs * factor} cells: {floor[args.n_obs * factor]}", flush=True)
    results = {
        "setting": vars(args) | machine(),
        "models": models,
        "gaussian_fit_floor": floor,
        "cheap_solvers": cheap_solvers(mean, cells[:200], path),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
