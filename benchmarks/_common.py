"""Shared by the benchmark scripts: the --quick/--full command line, machine facts, timed runs."""

import argparse
import contextlib
import inspect
import json
import os
import platform
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

import scratio as sr
from scratio.core.training import cpu_has_bf16_matrix_units

_DA_DEFAULTS = inspect.signature(sr.tl.differential_abundance).parameters
#: The DA tool's own model options at their defaults (its smoothing), for scripts that train the
#: tool's model outside it.
DA_MODEL = {"s_min": _DA_DEFAULTS["s_min"].default}


def da_tool_model(
    adata, params: dict, random_state: int, s_min: float = DA_MODEL["s_min"], **train_kwargs
) -> sr.RatioFlow:
    """The model of a DA tool call on ``obs["condition"]``, trained again outside it.

    ``params`` is the call's ``uns["scratio_da"]["params"]`` (its dimensions, scaling, base, steps
    and batch size); with the call's ``random_state`` (and ``s_min``) the model is the call's.
    """
    model = sr.RatioFlow(adata, "X_pca", ["condition"], n_pcs=params["n_dims"], scaling=params["scaling"],
                         min_cells=_DA_DEFAULTS["min_cells"].default, s_min=s_min,
                         base=params.get("base_used"), random_state=random_state)  # fmt: skip
    return model.train(params["n_steps"], batch_size=params["batch_size"], **train_kwargs)


def da_log_ratios(model: sr.RatioFlow, bandwidth: float, **scoring) -> np.ndarray:
    """``log p(x | treated) - log p(x | control)`` of every cell at ``bandwidth``, with the DA tool's solver steps.

    ``scoring``: the call's options (:func:`scoring_of`).
    """
    log_p = model.category_log_likelihoods(
        key="condition", solver_steps=_DA_DEFAULTS["solver_steps"].default, bandwidth=bandwidth, **scoring
    )
    return (log_p["treated"] - log_p["control"]).to_numpy(np.float64)


def scoring_of(params: dict) -> dict:
    """The scoring options a tool call used besides the width, from its params.

    ``divergence`` and any ``n_probes``, and the DA tool's ``condition_weight`` (calls made before
    it existed scored with 1).
    """
    scoring = params["scoring"]
    used = {name: scoring[f"{name}_used"] for name in ("divergence", "n_probes") if f"{name}_used" in scoring}
    return used | {"condition_weight": params.get("condition_weight_used", 1.0)}


def numpy_scalar(value):
    """``json.dumps(..., default=numpy_scalar)``: numpy scalars as Python numbers."""
    return value.item()


def add_preset_modes(parser: argparse.ArgumentParser) -> None:
    """``--quick`` (the default) or ``--full``, stored as ``args.preset``."""
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="preset", const="quick")
    mode.add_argument("--full", action="store_const", dest="preset", const="full")
    parser.set_defaults(preset="quick")


def add_tool_kwargs(parser: argparse.ArgumentParser, tool: str, example: str) -> None:
    """``--tool-kwargs``: JSON of keywords passed to ``sr.tl.<tool>`` (default none), as ``args.tool_kwargs``."""
    parser.add_argument("--tool-kwargs", type=json.loads, default={},
                        help=f"JSON of keywords for sr.tl.{tool}, e.g. '{example}' (default: none)")  # fmt: skip


def preset_setting(args: argparse.Namespace, presets: dict) -> dict:
    """The chosen preset, with every key given on the command line replacing the preset's value."""
    setting = dict(presets[args.preset])
    for key in setting:
        if getattr(args, key, None) is not None:
            setting[key] = getattr(args, key)
    return setting | {"preset": args.preset}


def start_tool_run(args: argparse.Namespace, presets: dict, name: str) -> tuple[dict, Path]:
    """The setting of a tool benchmark and its JSON path; torch threads from OMP_NUM_THREADS, scratio quiet."""
    setting = preset_setting(args, presets)
    setting["threads"] = int(os.environ.get("OMP_NUM_THREADS", "1"))
    out = Path(args.out or Path(__file__).parent / "results" / f"{name}_{args.preset}.json")
    torch.set_num_threads(setting["threads"])
    sr.settings.verbosity = 0
    warnings.filterwarnings("ignore", category=FutureWarning)
    return setting, out


def installed_version(package: str) -> str | None:
    """The installed version of ``package``; ``None`` where this environment lacks it (its method not run)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def write_results(out: Path, *, setting: dict, packages, protocol: dict, summary: dict, runs: list) -> dict:
    """Write a benchmark's setting, package versions and machine, protocol, summary and runs as JSON."""
    final = {
        "setting": setting,
        "environment": {"versions": {p: installed_version(p) for p in packages}, **machine()},
        "protocol": protocol,
        "summary": summary,
        "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(final, indent=1))
    return final


def parse_setting(
    description: str, presets: dict, name: str, grids: dict[str, type], estimators=("s1", "s2", "naive")
):
    """Parse the command line into ``(setting, output path)``.

    ``grids`` names the preset's list-valued keys (with their element type) besides ``seeds``;
    every other preset key is a single integer that may be overridden. ``estimators``: those the
    script scores with, all by default, fewer with ``--estimators``.
    """
    parser = argparse.ArgumentParser(description=description)
    add_preset_modes(parser)
    parser.add_argument("--seeds", type=int, nargs="+")
    for key, kind in grids.items():
        parser.add_argument(f"--{key}", type=kind, nargs="+")
    for key in ("n_train", "n_test", "steps", "batch_size", "width"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int)
    parser.add_argument("--solver-steps", type=int, default=2)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--base", choices=["gaussian"], help="the network's base field (default none)")
    parser.add_argument("--s-min", type=float, help="noise at the data (default RatioFlow's)")
    parser.add_argument("--precision", choices=sr.core.ode.PRECISIONS, default=sr.core.Solver.precision,
                        help="the network's arithmetic in training and scoring")  # fmt: skip
    parser.add_argument("--estimators", nargs="+", choices=estimators, default=list(estimators),
                        help="score with these only (each exact estimator costs a scoring pass)")  # fmt: skip
    parser.add_argument("--out")
    args = parser.parse_args()
    setting = preset_setting(args, presets)
    setting |= {"solver": "rk4", "solver_steps": args.solver_steps, "divergence": "exact",
                "validation_fraction": args.validation_fraction, "accelerator": args.accelerator,
                "base": args.base, "s_min": args.s_min, "precision": args.precision,
                "estimators": args.estimators}  # fmt: skip
    out = Path(args.out or Path(__file__).parent / "results" / f"{name}_{args.preset}.json")
    return setting, out


def machine() -> dict:
    """The CPU model, whether it has bfloat16 matrix units (AMX), and the torch threads.

    Recorded with every result.
    """
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
                break
    return {"torch_threads": torch.get_num_threads(), "machine": cpu, "amx_bf16": cpu_has_bf16_matrix_units()}


def train_timed(adata, setting: dict, seed: int):
    """A ``RatioFlow`` on ``obs["condition"]`` trained with the preset's budget, and its training facts."""
    start = time.perf_counter()
    model = sr.RatioFlow(
        adata,
        use_rep="X_pca",
        condition_keys="condition",
        width=setting["width"],
        base=setting["base"],
        s_min=setting["s_min"],
        random_state=seed,
    )
    model.train(setting["steps"], batch_size=setting["batch_size"],
                validation_fraction=setting["validation_fraction"], accelerator=setting["accelerator"],
                precision=setting["precision"])  # fmt: skip
    record = model.training_record
    return model, {
        "train_seconds": round(time.perf_counter() - start, 2), "steps_trained": record["steps_trained"],
        "best_step": record["best_step"], "final_loss": round(record["final_loss"], 4),
    }  # fmt: skip


def timed_log_ratio(model, data, numerator: dict, denominator: dict, method: str, setting: dict):
    """``(estimate, seconds)`` of one estimator with the preset's solver (exact divergence, rk4)."""
    start = time.perf_counter()
    estimate = model.log_ratio(data, numerator=numerator, denominator=denominator, estimator=method,
                               solver_steps=setting["solver_steps"], divergence=setting["divergence"],
                               precision=setting["precision"])  # fmt: skip
    return estimate, time.perf_counter() - start


def score_estimators(model, data, numerator: dict, denominator: dict, setting: dict, metrics):
    """Per estimator of ``setting["estimators"]``: ``metrics(estimate)``, wall time, all scores finite."""
    scored = {}
    for method in setting["estimators"]:
        estimate, seconds = timed_log_ratio(model, data, numerator, denominator, method, setting)
        scored[method] = {
            **metrics(estimate),
            "seconds": round(seconds, 2),
            "finite": bool(np.isfinite(estimate).all()),
        }
    return scored


# ------------------------------------------------------------------ baselines (benchmark env only)
@contextlib.contextmanager
def keep_torch_threads():
    """Restore torch's thread count on exit: after ``sc.pp.neighbors`` (scanpy 1.11.5, in the
    benchmark env) torch runs one thread per CPU, whatever ``OMP_NUM_THREADS`` and
    ``torch.set_num_threads`` said, so every later scratio run would use them all."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def meld_likelihoods(x, sample_labels, groups: dict, *, beta: float, knn: int, seed: int):
    """MELD's per-cell likelihood of each group of samples (a DataFrame, one column per group).

    One density per sample (``sample_labels``; each sample's indicator normalised by its cell
    count), averaged over the samples of each group (``{group: [sample, ...]}``), then normalised
    per cell (``meld.utils.normalize_densities``), as in Milo's benchmark (``run_meld.py``).
    With one sample per group this is MELD's plain two-label likelihood.
    """
    import meld
    import pandas as pd
    from meld.utils import normalize_densities

    operator = meld.MELD(beta=beta, knn=knn, random_state=seed, n_jobs=1, verbose=0)
    with keep_torch_threads():
        densities = operator.fit_transform(x, sample_labels=sample_labels)
    mean = pd.DataFrame({g: densities[list(s)].mean(axis=1) for g, s in groups.items()})
    return normalize_densities(mean)


def milo_neighbourhoods(x, obs, *, sample_key: str, design: str, n_neighbors: int, prop: float,
                        seed: int, solver: str = "pydeseq2"):  # fmt: skip
    """Milo through pertpy on the embedding ``x``: ``(membership, nhoods)``.

    ``membership`` is the cells x neighbourhoods 0/1 matrix (CSR) and ``nhoods`` pertpy's
    neighbourhood table (``logFC``: log2 fold change of the design's last coefficient,
    ``SpatialFDR``, ...). ``obs`` holds the design's columns and ``sample_key``. The kNN graph is
    ``sc.pp.neighbors(n_neighbors)`` on ``x``; pydeseq2 runs in one process.
    """
    import contextlib
    import io

    import pertpy as pt
    import pydeseq2.default_inference
    import scanpy as sc
    import scipy.sparse as sp
    from anndata import AnnData

    # pertpy does not pass n_cpus to pydeseq2, which would start one process per CPU.
    pydeseq2.default_inference.utils.get_num_processes = lambda n_cpus=None: 1
    data = AnnData(obs=obs.copy(), obsm={"X_pca": x})
    with keep_torch_threads():
        sc.pp.neighbors(data, use_rep="X_pca", n_neighbors=n_neighbors, random_state=seed)
    milo = pt.tl.Milo()
    mdata = milo.load(data)
    # pydeseq2 reports every fitting step; keep the benchmark log to one line per run.
    with (
        keep_torch_threads(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        milo.make_nhoods(mdata["rna"], prop=prop, seed=seed)
        mdata = milo.count_nhoods(mdata, sample_col=sample_key)
        milo.da_nhoods(mdata, design=design, solver=solver)
    return sp.csr_matrix(mdata["rna"].obsm["nhoods"]), mdata["milo"].var.copy()


def milo_cell_mean(membership, values):
    """Per cell, the mean of ``values`` over the neighbourhoods that contain it and hold a finite
    value, and the number of those neighbourhoods (0 for cells in none; their mean is 0)."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    kept = membership[:, finite].astype(np.float64)
    count = np.asarray(kept.sum(axis=1)).ravel()
    total = kept @ values[finite]
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0), count
