"""End-to-end check of issue 2: train + score 10,000 cells in 30 dimensions on a CPU.

Two conditions N(m, I) vs N(0, I) with m_i = 2 / sqrt(30) (|m| = 2). Measures training
time, exact scoring (S1, rk4) time and R^2 against the closed form, the fast Hutchinson
mode's throughput and R^2, and MSE against wall time for S1, S2 and naive on the same
trained model.

    python benchmarks/end_to_end.py                      # defaults, writes results/end_to_end.json
    python benchmarks/end_to_end.py --steps 3000 --batch-size 2048 --width 256
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import machine

import scratio as sr


def r_squared(estimate, truth):
    return float(1 - ((estimate - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-obs", type=int, default=10_000)
    parser.add_argument("--n-dims", type=int, default=30)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--solver-steps", type=int, default=3)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "end_to_end.json"))
    args = parser.parse_args()
    sr.settings.verbosity, sr.settings.progress_bar = "info", False  # log lines, no bars

    d = args.n_dims
    adata = sr.datasets.shifted_gaussians(args.n_obs, d, direction=np.full(d, 2 / np.sqrt(d)), random_state=0)
    truth = adata.obs["true_log_ratio"].to_numpy()
    numerator, denominator = {"condition": "shifted"}, {"condition": "reference"}

    start = time.perf_counter()
    model = sr.RatioFlow(adata, condition_keys="condition", width=args.width, random_state=0)
    model.train(args.steps, batch_size=args.batch_size, lr=args.lr, accelerator=args.accelerator)
    train_seconds = time.perf_counter() - start

    def timed(**options):
        start = time.perf_counter()
        estimate = model.log_ratio(numerator=numerator, denominator=denominator, **options)
        seconds = time.perf_counter() - start
        return {
            **options,
            "seconds": round(seconds, 2),
            "cells_per_second": round(len(truth) / seconds, 1),
            "r2": round(r_squared(estimate, truth), 4),
            "mse": round(float(((estimate - truth) ** 2).mean()), 4),
            "finite": bool(np.isfinite(estimate).all()),
        }

    print(f"train {train_seconds:.1f}s", flush=True)
    default = timed(estimator="s1", solver_steps=args.solver_steps)
    print(f"S1 exact: {default}", flush=True)
    fast = timed(estimator="s1", solver_steps=args.solver_steps, divergence="hutchinson")
    print(f"S1 Hutchinson: {fast}", flush=True)
    # MSE against wall time on the same model; the full cost/accuracy frontier is benchmarks section 4.
    frontier = []
    for method, steps, divergence in [
        ("s1", 1, "exact"),
        ("s1", 2, "exact"),
        ("naive", 1, "exact"),
        ("naive", 2, "exact"),
        ("naive", 3, "exact"),
        ("s2", 3, "exact"),
        ("s1", 1, "hutchinson"),
        ("naive", 3, "hutchinson"),
    ]:
        frontier.append(timed(estimator=method, solver_steps=steps, divergence=divergence))
        print(f"  {frontier[-1]}", flush=True)
    frontier += [default, fast]
    results = {
        "setting": vars(args) | machine(),
        "train_seconds": round(train_seconds, 2),
        "final_loss": model.training_record["final_loss"],
        "default_scoring": default,
        "train_plus_score_seconds": round(train_seconds + default["seconds"], 2),
        "fast_scoring": fast,
        "frontier": frontier,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(
        f"train {train_seconds:.1f}s | S1 exact {default['seconds']}s R2 {default['r2']} | "
        f"total {results['train_plus_score_seconds']}s | fast {fast['cells_per_second']} cells/s R2 {fast['r2']}"
    )


if __name__ == "__main__":
    main()
