"""Issue 11: the noise Hutchinson's divergence adds to the DA tool's log-ratios over its mixture base.

The 20,000-cell Gaussian set of ``da_speed.py`` in all 50 PCs with random labels (as in
``da_variants.py --large``): the DA tool's model (a mixture base, 100 training steps) is
trained once, and 4,000 of the cells are scored at one width with the exact divergence and with
Hutchinson's at 1, 2, 4 and 8 probes. Reported: the sd of the log-ratios, the sd of their
difference to the exact ones, and the seconds of each scoring pass.

    OMP_NUM_THREADS=1 python benchmarks/probe_noise.py --seed 1 --width 0.8 --out benchmarks/results/probe_noise_seed1.json
    OMP_NUM_THREADS=1 python benchmarks/probe_noise.py --seed 2 --width 1.6 --out benchmarks/results/probe_noise_seed2.json

(the widths the tool chose on these seeds with one probe; about 3 min each on one core).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import machine
from da_speed import cells
from noise_floor import random_labels

import scratio as sr

PROBES = (1, 2, 4, 8)
N_SCORED = 4000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--width", type=float, default=0.8)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "probe_noise.json"))
    args = parser.parse_args()
    sr.settings.verbosity = 0
    adata = random_labels(cells(50), args.seed)
    model = sr.RatioFlow(adata, "X_pca", ["condition"], s_min=0.4, base="mixture", random_state=args.seed)
    model.train(100, batch_size=1024)
    scored = adata.obsm["X_pca"][np.random.default_rng(0).choice(adata.n_obs, N_SCORED, replace=False)]

    def log_ratios(**divergence):
        start = time.perf_counter()
        frame = model.category_log_ratios(
            scored, "condition", solver_steps=2, bandwidth=args.width, **divergence
        )
        return (frame["treated"] - frame["control"]).to_numpy(), time.perf_counter() - start

    exact, seconds = log_ratios(divergence="exact")
    rows = [{"divergence": "exact", "sd": float(exact.std()), "seconds": round(seconds, 2)}]
    for n_probes in PROBES:
        estimate, seconds = log_ratios(divergence="hutchinson", n_probes=n_probes)
        rows.append({"divergence": "hutchinson", "n_probes": n_probes, "sd": float(estimate.std()),
                     "sd_difference_to_exact": float(np.std(estimate - exact)), "seconds": round(seconds, 2)})  # fmt: skip
        print(rows[-1], flush=True)
    result = {
        "setting": {"seed": args.seed, "width": args.width, "n_scored": N_SCORED, **machine()},
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
