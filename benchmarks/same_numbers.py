"""Outputs of the four tools and of ``RatioFlow``'s scoring methods on fixed seeds.

Run it once on the code before a refactoring (``--save``) and once after (``--compare``): every
array must agree to ``--atol`` (default 1e-6). Small data and short training keep it under
two minutes on two CPU cores; the numbers are machine-specific, so compare on one machine.

    python benchmarks/same_numbers.py --save /tmp/before.npz
    python benchmarks/same_numbers.py --compare /tmp/before.npz
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

import scratio as sr

sr.settings.verbosity = 0
TRAIN = {"n_steps": 150, "batch_size": 256}


def outputs() -> dict[str, np.ndarray]:
    out = {}
    adata = sr.datasets.shifted_gaussians(1200, 3, loc=1.5, random_state=0)
    model = sr.RatioFlow(adata, "X_pca", ["condition"], width=64, random_state=0)
    model.train(TRAIN["n_steps"], batch_size=TRAIN["batch_size"])
    num, den = {"condition": "shifted"}, {"condition": "reference"}
    cells = adata[:300]
    with warnings.catch_warnings():  # old keyword names may be deprecated aliases afterwards
        warnings.simplefilter("ignore", DeprecationWarning)
        for estimator in ("s1", "s2", "naive"):
            out[f"log_ratio_{estimator}"] = model.log_ratio(cells, num, den, method=estimator)
        out["log_ratio_hutchinson"] = model.log_ratio(cells, num, den, divergence="hutchinson", n_probes=2)
        out["log_ratio_dopri5"] = model.log_ratio(cells[:50], num, den, solver="dopri5")
        out["log_likelihood"] = model.log_likelihood(cells, num)
        out["category_log_likelihoods"] = model.category_log_likelihoods(cells).to_numpy()
        out["condition_probabilities"] = model.condition_probabilities(cells, prior="empirical").to_numpy()
        out["sample"] = model.sample(200, num, random_state=3)
    averaged = sr.RatioFlow(adata, "X_pca", ["condition"], width=64, random_state=0)
    averaged.train(TRAIN["n_steps"], batch_size=TRAIN["batch_size"], ema_decay=0.99)
    out["log_ratio_weight_average"] = averaged.log_ratio(cells, num, den)

    da = sr.datasets.shifted_gaussians(800, 4, loc=2.0, random_state=1)
    sr.tl.differential_abundance(da, "condition", "reference", n_steps=150, batch_size=256)
    out["tl_differential_abundance"] = da.obs["scratio_da"].to_numpy()
    da.obs["sample"] = [f"{c}_{i % 2}" for i, c in enumerate(da.obs["condition"])]
    sr.tl.differential_abundance(
        da, "condition", "reference", sample_key="sample", n_steps=150, batch_size=256, key_added="da_samples"
    )
    out["tl_differential_abundance_samples"] = da.obs["da_samples"].to_numpy()

    batch = sr.datasets.batch_effect_design(600, n_dims=4, random_state=0)
    sr.tl.batch_effect_score(batch, "batch", "cell_type", n_steps=150, batch_size=256)
    out["tl_batch_effect_score"] = batch.obs["scratio_batch"].to_numpy()

    combination = sr.datasets.combination_design(600, n_dims=4, random_state=0)
    sr.tl.combination_effect(combination, "drug1", "drug2", n_steps=150, batch_size=256)
    out["tl_combination_effect"] = combination.obs["scratio_combination"].to_numpy()

    donor = sr.datasets.donor_design(600, n_dims=4, n_donors=3, random_state=0)
    sr.tl.donor_response(donor, "donor", "treatment", n_steps=150, batch_size=256)
    out["tl_donor_response"] = donor.obs["scratio_donor"].to_numpy()
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--save", help="write the outputs to this .npz")
    action.add_argument("--compare", help="compare the outputs with this .npz")
    parser.add_argument("--atol", type=float, default=1e-6)
    args = parser.parse_args()
    current = outputs()
    if args.save:
        np.savez(args.save, **current)
        print(f"saved {len(current)} outputs to {args.save}")
        return
    before = np.load(args.compare)
    worst = 0.0
    for name in before.files:
        difference = float(np.nanmax(np.abs(current[name] - before[name])))
        same_nan = np.array_equal(np.isnan(current[name]), np.isnan(before[name]))
        worst = max(worst, difference)
        print(f"{name:36s} max |difference| {difference:.2e}{'' if same_nan else '  NaN pattern differs'}")
    status = "OK" if worst <= args.atol else "DIFFERENT"
    print(
        f"{status}: largest difference {worst:.2e} (tolerance {args.atol:g}) over {len(before.files)} outputs"
    )


if __name__ == "__main__":
    main()
