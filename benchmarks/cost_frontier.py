"""Cost against accuracy: one trajectory (S1, S2) against two likelihoods (naive), d = 30.

Two conditions ``N(m, C)`` (shifted) and ``N(0, C)`` (reference), Mahalanobis separation 2.
With ``--covariance identity`` this is the issue-2 data (``m_i = 2 / sqrt(30)``); with
``--covariance blocks`` both conditions share the correlated 2x2 blocks of the
mutual-information benchmark (``rho = sqrt(1 - 1/e)``), as treatment and control share the
correlations of a cell embedding. Every estimator is run with exact and Hutchinson
divergences, fixed-step rk4 with 2-50 steps and dopri5 at two tolerances, on the same held-out
cells; each run's MSE against the closed form (of the ``s_min``-smoothed densities the model
targets) and wall time are recorded. The same grid is repeated on the closed-form fields of the
two Gaussians (no learning, float64), which isolates the integration error of each estimator.

    python benchmarks/cost_frontier.py                          # writes results/cost_frontier.json + .png
    python benchmarks/cost_frontier.py --covariance blocks --out benchmarks/results/cost_frontier_blocks.json
    python benchmarks/cost_frontier.py --full                   # all 10,000 cells scored, 3000 training steps
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import machine
from anndata import AnnData

import scratio as sr
from scratio.core import GaussianConditionalField, Solver, ode

METHODS = ("s1", "s2", "naive")
NUMERATOR, DENOMINATOR = {"condition": "shifted"}, {"condition": "reference"}


def solver_grid(rk4_steps, tolerances):
    """``(label, solver options)`` for every fixed-step and adaptive setting of the frontier."""
    grid = [(f"rk4 {n}", {"solver": "rk4", "solver_steps": n}) for n in rk4_steps]
    grid += [(f"dopri5 {tol:g}", {"solver": "dopri5", "rtol": tol, "atol": tol}) for tol in tolerances]
    return grid


def gaussian_pair(n_obs: int, covariance: np.ndarray, mean: np.ndarray, seed: int) -> AnnData:
    """Half the cells from ``N(mean, covariance)`` (shifted), half from ``N(0, covariance)``."""
    rng = np.random.default_rng(seed)
    shifted = np.arange(n_obs) < n_obs // 2
    x = rng.standard_normal((n_obs, len(mean))) @ np.linalg.cholesky(covariance).T + np.outer(shifted, mean)
    condition = pd.Categorical(np.where(shifted, "shifted", "reference"), categories=["reference", "shifted"])
    obs = pd.DataFrame({"condition": condition}, index=[f"cell{i}" for i in range(n_obs)])
    return AnnData(obs=obs, obsm={"X_pca": x.astype(np.float32)})


def learned_frontier(model, cells, truth, grid, divergences):
    runs = []
    for divergence in divergences:
        for label, solver in grid:
            for method in METHODS:
                start = time.perf_counter()
                estimate = model.log_ratio(cells, numerator=NUMERATOR, denominator=DENOMINATOR,
                                           estimator=method, divergence=divergence, **solver)  # fmt: skip
                runs.append({
                    "divergence": divergence, "solver": label, "method": method,
                    "seconds": round(time.perf_counter() - start, 3),
                    "mse": round(float(((estimate - truth) ** 2).mean()), 5),
                })  # fmt: skip
                print(f"  learned {runs[-1]}", flush=True)
    return runs


class CountingField(torch.nn.Module):
    """Wraps a field and counts the rows it evaluates (estimators batch several fields per call)."""

    def __init__(self, field):
        super().__init__()
        self.field, self.rows = field, 0

    def forward(self, x, t, codes):
        self.rows += len(x)
        return self.field(x, t, codes)


def analytic_frontier(field, cells, grid):
    """The same grid on the exact fields: what remains is the integration error alone."""
    field = CountingField(field)
    x = torch.as_tensor(cells, dtype=torch.float64)
    truth = field.field.log_prob(x, 0) - field.field.log_prob(x, 1)
    codes = [torch.full((len(x), 1), k) for k in range(3)]  # numerator, denominator, null
    runs = []
    for label, solver in grid:
        options = Solver(method=solver["solver"], n_steps=solver.get("solver_steps", 3),
                                rtol=solver.get("rtol", 1e-5), atol=solver.get("atol", 1e-5))  # fmt: skip
        for method in METHODS:
            field.rows = 0
            start = time.perf_counter()
            estimate = ode.log_ratio(
                field, x, codes[0], codes[1], estimator=method, base=codes[2], solver=options
            )
            runs.append({
                "solver": label, "method": method, "field_evaluations_per_cell": field.rows / len(x),
                "seconds": round(time.perf_counter() - start, 3),
                "mse": float(((estimate - truth) ** 2).mean()),
            })  # fmt: skip
            print(f"  analytic {runs[-1]}", flush=True)
    return runs


def equal_time_ratios(runs):
    """For each S1 run: its MSE over the best naive MSE reached in at most the same wall time."""
    ratios = []
    for divergence in sorted({r["divergence"] for r in runs}):
        naive = [r for r in runs if r["method"] == "naive" and r["divergence"] == divergence]
        for s1 in (r for r in runs if r["method"] == "s1" and r["divergence"] == divergence):
            affordable = [r["mse"] for r in naive if r["seconds"] <= s1["seconds"]]
            ratios.append({
                "divergence": divergence, "s1_solver": s1["solver"], "s1_seconds": s1["seconds"],
                "s1_mse": s1["mse"], "best_naive_mse_within_time": min(affordable) if affordable else None,
                "ratio": round(s1["mse"] / min(affordable), 3) if affordable else None,
            })  # fmt: skip
    return ratios


def plot(runs, analytic, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    colours = dict(zip(METHODS, ("C0", "C1", "C2"), strict=True))

    def draw(ax, rows, x_key):
        # rk4 points joined in order of steps; each dopri5 tolerance as an open square.
        for method in METHODS:
            mine = [r for r in rows if r["method"] == method]
            fixed = sorted((r[x_key], r["mse"]) for r in mine if r["solver"].startswith("rk4"))
            adaptive = [(r[x_key], r["mse"]) for r in mine if r["solver"].startswith("dopri5")]
            ax.plot(*zip(*fixed, strict=True), "o-", color=colours[method], label=f"{method.upper()} rk4")
            if adaptive:
                ax.plot(
                    *zip(*adaptive, strict=True),
                    "s",
                    mfc="none",
                    color=colours[method],
                    label=f"{method.upper()} dopri5",
                )

    for ax, divergence in zip(axes[:2], ("exact", "hutchinson"), strict=True):
        draw(ax, [r for r in runs if r["divergence"] == divergence], "seconds")
        ax.set(xscale="log", xlabel="wall time (s)", ylabel="MSE vs closed form",
               title=f"trained model, {divergence} divergence")  # fmt: skip
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    draw(axes[2], analytic, "field_evaluations_per_cell")
    axes[2].set(xscale="log", yscale="log", xlabel="field evaluations per cell", ylabel="MSE vs closed form",
                title="closed-form fields (integration error only)")  # fmt: skip
    axes[2].legend(fontsize=7, ncols=2)
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="score all cells and train 3000 steps")
    parser.add_argument("--n-obs", type=int, default=10_000)
    parser.add_argument("--n-dims", type=int, default=30)
    parser.add_argument("--covariance", choices=["identity", "blocks"], default="identity")
    parser.add_argument(
        "--n-eval", type=int, default=1000, help="cells scored (the first of a held-out draw)"
    )
    parser.add_argument(
        "--n-analytic", type=int, default=200, help="cells for the closed-form fields (float64, slow)"
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rk4-steps", type=int, nargs="+", default=[2, 5, 10, 20, 50])
    parser.add_argument("--tolerances", type=float, nargs="+", default=[1e-3, 1e-5])
    parser.add_argument("--divergences", nargs="+", default=["exact", "hutchinson"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cost_frontier.json"))
    parser.add_argument("--plot-only", action="store_true", help="redraw the figure from --out")
    args = parser.parse_args()
    if args.plot_only:
        results = json.loads(Path(args.out).read_text())
        plot(results["learned"], results["analytic"], Path(args.out).with_suffix(".png"))
        return
    if args.full:
        args.n_eval, args.steps = args.n_obs, 3000
    sr.settings.verbosity = 0

    d = args.n_dims
    covariance = np.eye(d)
    if args.covariance == "blocks":
        rho = np.sqrt(1 - np.exp(-1))
        covariance = np.kron(np.eye(d // 2), [[1, rho], [rho, 1]])
    # Mahalanobis distance 2 between the means, |m| = 2 for the identity.
    mean = 2 * np.linalg.cholesky(covariance) @ np.full(d, 1 / np.sqrt(d))
    adata = gaussian_pair(args.n_obs, covariance, mean, seed=0)
    cells = gaussian_pair(args.n_eval, covariance, mean, seed=1).obsm["X_pca"]

    start = time.perf_counter()
    model = sr.RatioFlow(adata, condition_keys="condition", width=256, random_state=0)
    model.train(args.steps, batch_size=1024)
    train_seconds = time.perf_counter() - start
    print(f"trained in {train_seconds:.1f}s", flush=True)

    exact_fields = GaussianConditionalField(
        np.stack([mean, np.zeros(d)]), np.stack([covariance] * 2), model.path
    )
    x = torch.as_tensor(cells, dtype=torch.float64)
    truth = (exact_fields.log_prob(x, 0) - exact_fields.log_prob(x, 1)).numpy()
    grid = solver_grid(args.rk4_steps, args.tolerances)
    runs = learned_frontier(model, cells, truth, grid, args.divergences)
    analytic = analytic_frontier(
        exact_fields, cells[: args.n_analytic], solver_grid([1, *args.rk4_steps], args.tolerances)
    )
    results = {
        "setting": vars(args) | machine(),
        "train_seconds": round(train_seconds, 1),
        "training": model.training_record,
        "learned": runs,
        "equal_time_s1_over_naive": equal_time_ratios(runs),
        "analytic": analytic,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    plot(runs, analytic, out.with_suffix(".png"))
    for row in results["equal_time_s1_over_naive"]:
        print(row)


if __name__ == "__main__":
    main()
