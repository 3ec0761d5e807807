"""Issue 11, goal 6: where one evaluation of the DA tool's fields spends its time, and what chunks save.

The model of the default DA call on ``da_speed.py``'s data (20,000 cells, 20 PCs, delta 0.4,
seed 0; a mixture base of 128 components, 100 training steps) is trained once. Then, in
milliseconds (median of ``--repeats`` evaluations, random points, the machine's threads):

``training_batch``
    The mixture base's velocity and score for a training batch of 1,024 cells, each at its own
    time, formed in chunks of ``scratio.core.base.ROWS_PER_CHUNK`` cells and in one piece
    (``ROWS_PER_CHUNK`` set past the batch), alternating; ``identical`` says whether both give
    the same values to the bit.
``scoring_evaluation``
    One evaluation of the fields for a scoring block of 170 cells under the three conditions
    the DA pass integrates (two compared and the null one), with two Hutchinson probes as
    ``divergence="auto"`` takes in 20 dimensions: the whole, the base alone and the network's
    correction alone.

    python benchmarks/base_timing.py --out benchmarks/results/base_timing.json   # about 1 min

Results: ``--out``.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import da_tool_model, machine
from da_speed import data

import scratio as sr
from scratio.core import base as base_module

TRAINING_BATCH = 1024
SCORING_BLOCK = 170  # the DA pass's block: 512 rows through the network over 3 conditions
N_PROBES = 2


def median_ms(function, repeats: int) -> float:
    """Median wall milliseconds of ``function()`` over ``repeats`` calls, after a few unmeasured ones."""
    for _ in range(5):
        function()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return round(float(np.median(seconds)) * 1e3, 3)


def training_batch(base, n_dims: int, repeats: int) -> dict:
    """The base's fields for a training batch, in chunks and in one piece."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(TRAINING_BATCH, n_dims, generator=generator)
    t = torch.rand(TRAINING_BATCH, generator=generator)
    codes = torch.randint(0, 3, (TRAINING_BATCH, 1), generator=generator)
    chunk = base_module.ROWS_PER_CHUNK
    times, fields = {"chunked": [], "one_piece": []}, {}
    for _ in range(3):  # alternating, against the machine's drift
        for name, rows in (("chunked", chunk), ("one_piece", TRAINING_BATCH)):
            base_module.ROWS_PER_CHUNK = rows
            times[name].append(median_ms(lambda: base(x, t, codes), repeats))
            fields[name] = base(x, t, codes)
    base_module.ROWS_PER_CHUNK = chunk
    identical = all(torch.equal(a, b) for a, b in zip(fields["chunked"], fields["one_piece"], strict=True))
    return {"rows_per_chunk": chunk, **{f"{k}_ms": v for k, v in times.items()}, "identical": identical}


def scoring_evaluation(network, n_dims: int, repeats: int) -> dict:
    """One evaluation for a scoring block under three conditions: whole, base, network."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(SCORING_BLOCK, n_dims, generator=generator)
    t = torch.tensor(0.3)
    codes = [torch.full((SCORING_BLOCK, 1), c) for c in (0, 1, 2)]
    probes = torch.randn(N_PROBES, SCORING_BLOCK, n_dims, generator=generator).sign() / N_PROBES**0.5
    return {
        "whole_ms": median_ms(lambda: network.forward_under_conditions(x, t, codes, probes), repeats),
        "base_ms": median_ms(lambda: network.base.under_conditions(x, t, codes, divergence=True), repeats),
        "network_ms": median_ms(
            lambda: network._correction_with_divergence(
                x.repeat(3, 1), t, torch.cat(codes), probes.repeat(1, 3, 1)
            ),
            repeats,
        ),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    sr.settings.verbosity = 0
    adata = data()
    result = sr.tl.differential_abundance(
        adata, "condition", reference="control", target="treated", copy=True
    )
    network = da_tool_model(adata, result.uns["scratio_da"]["params"], random_state=0).network
    n_dims = adata.obsm["X_pca"].shape[1]
    with torch.no_grad():
        out = {
            "setting": {"machine": machine(), "n_gaussians": len(network.base.means), "n_dims": n_dims},
            "training_batch": training_batch(network.base, n_dims, args.repeats),
            "scoring_evaluation": scoring_evaluation(network, n_dims, args.repeats),
        }
    print(json.dumps(out, indent=1))
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
