"""Scale: scoring throughput and memory up to 10^6 cells, training throughput, many conditions.

1. Scoring: one model (d = 30, issue-2 data) scores n cells in a fresh process each. The
   resident memory is read once the cells are in memory, the high-water mark is reset, and the
   peak while scoring is read after; the growth is compared with the output array (4 bytes a
   cell).
2. Training: marginal steps/s at batch 512 and 2048 (the difference of a 100- and a 400-step
   run, which removes Lightning's start-up).
3. Many conditions: one key with 32 categories; time to get K = 2, 8, 32 conditional
   log-likelihoods from one trajectory against K pairwise S1 runs (each category against the
   unconditional density), and how well the two agree.
4. Process speed: the scoring model of part 1 scores the same cells in one process (one
   thread, then two) and in two processes (``devices=2, strategy="ddp_spawn"``, one thread
   each), which gives the speed-up of two processes on this machine; the scores must be
   identical. Wall and CPU seconds are recorded: CPU seconds do not depend on what else runs on
   the machine.
5. Process memory: the peak memory of the calling process and of each started process (its
   ``VmHWM``, read every 0.2 s) with two processes, the cells in memory (copied once into shared
   memory for the started processes) or memory-mapped from an ``.npy`` file, against the same
   call on 1,000 cells (imports and start-up).

    python benchmarks/scale.py          # exact scoring up to 10^5 cells, fast up to 10^6
    python benchmarks/scale.py --full   # exact scoring at 10^6 cells too (hours on 2 CPU cores)
    python benchmarks/scale.py --parts process_speed process_memory --out benchmarks/results/scale_processes.json
"""

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import machine
from anndata import AnnData

import scratio as sr

D = 30
PARTS = ("scoring", "training", "many_conditions", "process_speed", "process_memory")
MODES = {"exact": {"divergence": "exact"}, "fast": {"divergence": "hutchinson"}}


def memory_mib() -> dict[str, float]:
    """Resident memory now and its high-water mark since the last :func:`reset_peak` (Linux)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # sets VmHWM to the current VmRSS


class StartedProcessPeaks(threading.Thread):
    """Polls the peak resident memory (``VmHWM``) of the processes a spawning strategy started (Linux).

    ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` would also count a process forked from this one,
    which starts with this one's whole resident set.
    """

    def __init__(self, every: float = 0.2):
        super().__init__(daemon=True)
        self.every, self.peaks, self.running = every, {}, True

    def run(self) -> None:
        me = str(os.getpid())
        while self.running:
            for status in Path("/proc").glob("[0-9]*/status"):
                with contextlib.suppress(OSError, KeyError, ValueError):
                    fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
                    started = (
                        b"spawn_main" in (status.parent / "cmdline").read_bytes()
                    )  # not a fork being exec'd
                    if fields["PPid"].strip() == me and started and "VmHWM" in fields:
                        peak = int(fields["VmHWM"].split()[0]) / 1024
                        self.peaks[status.parent.name] = max(peak, self.peaks.get(status.parent.name, 0))
            time.sleep(self.every)

    def stop(self) -> list[float]:
        """The peaks (MiB) of the started scoring processes."""
        self.running = False
        self.join()
        return sorted(round(peak, 1) for peak in self.peaks.values())


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def score_worker(model_dir: str, n_cells: int, mode: str, run: dict | None = None) -> dict:
    """Runs in its own process: draw ``n_cells`` cells, score them, report time and memory.

    ``run`` may hold scoring devices (``accelerator``, ``devices``, ``strategy``), ``"input":
    "memmap"`` (score the cells from an ``.npy`` file opened with ``mmap_mode="r"``) and
    ``"save"`` (write the scores there).
    """
    run = dict(run or {})
    model = sr.RatioFlow.load(model_dir)
    rng = np.random.default_rng(1)
    cells = rng.standard_normal((n_cells, D), dtype=np.float32)
    input_mib, save, memmap = (
        cells.nbytes / 2**20,
        run.pop("save", None),
        run.pop("input", "memory") == "memmap",
    )
    with tempfile.TemporaryDirectory() as folder:
        if memmap:
            np.save(Path(folder) / "cells.npy", cells)
            del cells
            cells = np.load(Path(folder) / "cells.npy", mmap_mode="r")
        reset_peak()
        before = memory_mib()["VmRSS"]
        cpu = cpu_seconds(resource.RUSAGE_SELF)
        started = StartedProcessPeaks()
        started.start()
        start = time.perf_counter()
        ratios = model.log_ratio(cells, numerator={"condition": "shifted"}, denominator={"condition": "reference"},
                                 solver_steps=2, **MODES[mode], **run)  # fmt: skip
        seconds = time.perf_counter() - start
        peak = memory_mib()["VmHWM"]
        started_peaks = started.stop()
    if save:
        np.save(save, ratios)
    return {
        "mode": mode, "n_cells": n_cells, **run, "input": "memmap" if memmap else "memory",
        "seconds": round(seconds, 2), "cells_per_second": round(n_cells / seconds, 1),
        "cpu_seconds": round(cpu_seconds(resource.RUSAGE_SELF) - cpu, 2),
        "cpu_seconds_started_processes": round(cpu_seconds(resource.RUSAGE_CHILDREN), 2),
        "rss_before_scoring_mib": round(before, 1), "peak_rss_while_scoring_mib": round(peak, 1),
        "growth_mib": round(peak - before, 1), "peak_rss_started_processes_mib": started_peaks,
        "output_mib": round(ratios.nbytes / 2**20, 2), "input_mib": round(input_mib, 1),
        "finite": bool(np.isfinite(ratios).all()), "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def worker(model_dir: str, n: int, mode: str, run: dict | None = None, threads: int | None = None) -> dict:
    """:func:`score_worker` in a fresh process (with ``threads`` torch threads, else the caller's setting)."""
    env = dict(os.environ) | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    command = [sys.executable, __file__, "--worker", model_dir, str(n), mode, json.dumps(run or {})]
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def scoring(model_dir: str, sizes: dict[str, list[int]]) -> list[dict]:
    runs = []
    for mode, ns in sizes.items():
        for n in ns:
            runs.append(worker(model_dir, n, mode))
            print(f"  scoring {runs[-1]}", flush=True)
    return runs


TWO_PROCESSES = {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"}


def process_speed(model_dir: str, n_speed: int, rounds: int = 1) -> dict:
    """Two processes against one: exact scoring, the same numbers; ``rounds`` alternating rounds, medians."""
    settings = [
        ("one process, 1 thread", {}, 1),
        ("one process, 2 threads", {}, 2),
        ("two processes (ddp_spawn), 1 thread each", TWO_PROCESSES, 1),
    ]
    runs, identical = [], True
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(rounds):  # alternate, so that what else runs on the machine hits all settings
            scores = []
            for name, run, threads in settings:
                save = f"{folder}/{len(scores)}.npy"
                runs.append(
                    {
                        "setting": name,
                        "round": round_,
                        **worker(model_dir, n_speed, "exact", {**run, "save": save}, threads),
                    }
                )
                scores.append(np.load(save))
                print(f"  process speed {runs[-1]}", flush=True)
            identical &= all(np.array_equal(scores[0], other) for other in scores[1:])
    for row in runs:
        first = next(r for r in runs if r["round"] == row["round"])
        row["speed_up"] = round(first["seconds"] / row["seconds"], 2)
    median = {
        name: {
            "seconds": float(np.median([r["seconds"] for r in runs if r["setting"] == name])),
            "speed_up": float(np.median([r["speed_up"] for r in runs if r["setting"] == name])),
        }
        for name, _, _ in settings
    }
    return {"runs": runs, "median": median, "identical_scores": bool(identical)}


def process_memory(model_dir: str, n_memory: int) -> list[dict]:
    """Peak memory per process with two processes, the cells in memory or memory-mapped."""
    memory = []
    for n in (1000, n_memory):
        for source in ("memory", "memmap"):
            memory.append(worker(model_dir, n, "fast", {**TWO_PROCESSES, "input": source}, 1))
            print(f"  process memory {memory[-1]}", flush=True)
    return memory


def training_throughput(adata: AnnData, batch_sizes: list[int]) -> list[dict]:
    rows = []
    for batch_size in batch_sizes:
        seconds = {}
        for steps in (100, 400):
            model = sr.RatioFlow(adata, condition_keys="condition", width=256, random_state=0)
            start = time.perf_counter()
            model.train(steps, batch_size=batch_size, patience=None)
            seconds[steps] = time.perf_counter() - start
        rows.append({
            "batch_size": batch_size, "seconds_100_steps": round(seconds[100], 2),
            "seconds_400_steps": round(seconds[400], 2),
            "steps_per_second": round(300 / (seconds[400] - seconds[100]), 1),
        })  # fmt: skip
        print(f"  training {rows[-1]}", flush=True)
    return rows


def many_conditions(n_categories: int, ks: list[int], n_cells: int, steps: int) -> list[dict]:
    """Gaussian clusters at random unit directions x 2, one per category."""
    rng = np.random.default_rng(0)
    directions = rng.standard_normal((n_categories, D))
    means = 2 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_categories), 300)
    adata = AnnData(
        obs=pd.DataFrame(
            {"group": pd.Categorical([f"g{k:02d}" for k in labels])},
            index=[f"cell{i}" for i in range(len(labels))],
        ),
        obsm={"X_pca": (means[labels] + rng.standard_normal((len(labels), D))).astype(np.float32)},
    )
    model = sr.RatioFlow(adata, condition_keys="group", width=256, random_state=0)
    model.train(steps, batch_size=1024)
    cells = adata.obsm["X_pca"][rng.choice(len(labels), n_cells, replace=False)]
    rows = []
    for k in ks:
        categories = model.categories["group"][:k]
        start = time.perf_counter()
        one = model.category_log_likelihoods(cells, "group", categories=categories, solver_steps=2)
        one_seconds = time.perf_counter() - start
        start = time.perf_counter()
        pairwise = np.stack([model.log_ratio(cells, numerator={"group": c}, denominator={}, solver_steps=2)
                             for c in categories], axis=1)  # fmt: skip
        pairwise_seconds = time.perf_counter() - start
        # Both give log p(x | k) up to a per-cell constant: compare contrasts to the first category.
        one_contrast = one.to_numpy() - one.to_numpy()[:, :1]
        pairwise_contrast = pairwise - pairwise[:, :1]
        rows.append({
            "k": k, "n_cells": n_cells, "one_trajectory_seconds": round(one_seconds, 2),
            "pairwise_s1_seconds": round(pairwise_seconds, 2),
            "speed_up": round(pairwise_seconds / one_seconds, 2),
            "contrast_mean_abs_difference": round(float(np.abs(one_contrast - pairwise_contrast)[:, 1:].mean()), 4)
            if k > 1 else None,
            "contrast_sd": round(float(pairwise_contrast[:, 1:].std()), 4) if k > 1 else None,
        })  # fmt: skip
        print(f"  many conditions {rows[-1]}", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="exact scoring at 10^6 cells too")
    parser.add_argument("--fast-sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
    parser.add_argument("--exact-sizes", type=int, nargs="+", default=[10**4, 10**5])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--many-cells", type=int, default=500)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--speed-cells", type=int, default=20_000, help="exact scoring, process_speed")
    parser.add_argument("--speed-rounds", type=int, default=1, help="alternating rounds, process_speed")
    parser.add_argument("--memory-cells", type=int, default=10**6, help="fast scoring, process_memory")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "scale.json"))
    args = parser.parse_args()
    if args.full:
        args.exact_sizes = sorted({*args.exact_sizes, 10**6})
    sr.settings.verbosity = 0

    adata = sr.datasets.shifted_gaussians(10_000, D, direction=np.full(D, 2 / np.sqrt(D)), random_state=0)
    out = Path(args.out)
    # A run of some parts replaces those parts of an earlier results file and keeps the others.
    results = json.loads(out.read_text()) if out.exists() and len(args.parts) < len(PARTS) else {}
    results.setdefault("setting", {})
    results["setting"] |= machine()
    out.parent.mkdir(parents=True, exist_ok=True)
    model_dir = tempfile.TemporaryDirectory()
    if {"scoring", "process_speed", "process_memory"} & set(args.parts):
        model = sr.RatioFlow(adata, condition_keys="condition", width=256, random_state=0)
        model.train(args.steps, batch_size=1024)
        model.save(model_dir.name, overwrite=True)
    for part in args.parts:
        results["setting"][part] = vars(args)
        if part == "scoring":
            results[part] = scoring(model_dir.name, {"fast": args.fast_sizes, "exact": args.exact_sizes})
        elif part == "process_speed":
            results[part] = process_speed(model_dir.name, args.speed_cells, args.speed_rounds)
        elif part == "process_memory":
            results[part] = process_memory(model_dir.name, args.memory_cells)
        elif part == "training":
            results[part] = training_throughput(adata, args.batch_sizes)
        else:
            results[part] = many_conditions(max(args.ks), args.ks, args.many_cells, args.steps)
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    if len(sys.argv) in (5, 6) and sys.argv[1] == "--worker":
        sr.settings.verbosity = 0
        run = json.loads(sys.argv[5]) if len(sys.argv) == 6 else None
        print(json.dumps(score_worker(sys.argv[2], int(sys.argv[3]), sys.argv[4], run)))
    else:
        main()
