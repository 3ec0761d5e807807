"""Shared steps of the ``tl`` tools: check inputs, get or train the model, score, write results.

Every tool runs the same sequence, so it lives here once:

1. :func:`check_inputs` validates keys, categories, the representation, a passed ``model``
   and the output columns, all before any training, without touching the AnnData;
2. :func:`writable` returns the AnnData to write into (a copy, or a view made actual);
3. :func:`fit` returns the passed model or trains one on the tool's condition keys;
4. :func:`finish` writes float32 columns to ``obs`` and ``{"params": ..., **tables}`` to
   ``uns[key_added]``, logs what was added and returns the copy (or ``None``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from scratio import __version__
from scratio._settings import logger
from scratio._validation import check_categories, check_variance, get_categorical, get_representation
from scratio.model import RatioFlow

#: Options shared by all tools, substituted into their docstrings as ``{common}``.
COMMON_DOC = """\
use_rep
    Key of the embedding in ``adata.obsm`` (e.g. ``"X_pca"``, ``"X_scVI"``).
key_added
    Name of the ``adata.obs`` column and ``adata.uns`` entry written.
model
    A trained :class:`~scratio.RatioFlow` to reuse instead of training one. It must have
    been trained on ``use_rep`` with the tool's condition keys registered, and know every
    category those ``adata.obs`` columns hold; other registered keys are marginalised.
n_steps
    Training steps of a new model; by default half the number of cells, between 400 and 3000
    (longer training on few cells memorises them).
batch_size
    Cells per training step.
solver
    ODE solver for scoring (a torchdiffeq method; fixed-step ones are reproducible per cell).
solver_steps
    Steps of a fixed-step solver from the cell (``t = 1``) to noise (``t = 0``).
divergence
    ``"exact"`` (Jacobian trace; fine up to ~64 dimensions) or ``"hutchinson"``.
min_cells
    Fewest cells a category of a condition key may have.
train_kwargs
    Further options of :meth:`scratio.RatioFlow.train` (``lr``, ``p_drop``, ``accelerator``, ...).
copy
    Return a copy with the results instead of writing into ``adata``.
random_state
    Seed of the network, of training and of any Hutchinson probes.
model_kwargs
    Options of :class:`~scratio.RatioFlow` (``schedule``, ``width``, ``n_layers``, ...)."""


def doc_common(func: Callable) -> Callable:
    """Fill the ``{common}`` placeholder of a tool's docstring with :data:`COMMON_DOC`."""
    indent = " " * 4
    func.__doc__ = func.__doc__.replace("{common}", COMMON_DOC.replace("\n", "\n" + indent))
    return func


# ---------------------------------------------------------------------------- input checks
def labels(adata: AnnData, key: str) -> np.ndarray:
    """Per-cell categories of ``adata.obs[key]`` as strings (the model's encoding)."""
    return np.asarray(get_categorical(adata, key)).astype(str)


def check_inputs(
    adata: AnnData,
    *,
    keys: Sequence[str],
    use_rep: str,
    columns: Sequence[str],
    model: RatioFlow | None = None,
    model_keys: Sequence[str] | None = None,
    required: Mapping[str, Sequence[Any]] | None = None,
    min_cells: int = 10,
) -> dict[str, list[str]]:
    """Validate everything a tool needs before training; never modifies ``adata``.

    Parameters
    ----------
    adata
        The user's AnnData (possibly a view).
    keys
        Condition columns of ``adata.obs`` the tool reads.
    use_rep
        The representation.
    columns
        ``adata.obs`` columns the tool will write.
    model
        A model to reuse, or ``None`` to train one.
    model_keys
        The keys the model conditions on (default: ``keys``).
    required
        Categories that must exist, per key (a reference, a control, targets).
    min_cells
        Fewest cells per category when a new model is trained.

    Returns
    -------
    The categories (strings) of each key present in ``adata``.
    """
    if len(set(keys)) != len(keys):
        raise ValueError(f"The condition keys must be different columns, got {list(keys)}.")
    model_keys = list(keys if model_keys is None else model_keys)
    required = {key: [str(c) for c in values] for key, values in (required or {}).items()}
    values = {key: get_categorical(adata, key) for key in keys}  # missing keys fail here
    x = get_representation(adata, use_rep)
    if model is None:
        check_variance(x, use_rep)
    else:
        if not isinstance(model, RatioFlow):
            raise TypeError(f"`model` must be a scratio.RatioFlow, got {type(model).__name__}.")
        model.check_compatible(adata, model_keys, use_rep=use_rep)
    categories = {}
    for key in keys:
        if model is not None and key in model_keys:
            # a reused model may score any subset (one batch, new cells): it must know the categories
            known = model.categories[key]
            unknown = [c for c in required.get(key, ()) if c not in known]
            if unknown:
                raise ValueError(
                    f"Category {unknown[0]!r} of {key!r} is unknown to `model`. Categories: {known}. "
                    "Pass one of these, or `model=None` to train a new model."
                )
            categories[key] = list(known)
        else:
            categories[key] = check_categories(
                values[key],
                key,
                min_cells=min_cells if key in model_keys else 1,
                required=required.get(key, ()),
            )
    check_columns(adata, columns)
    return categories


def check_columns(adata: AnnData, columns: Sequence[str]) -> None:
    """Refuse to overwrite ``adata.obs`` columns that do not hold floats (earlier scores)."""
    for column in columns:
        if column in adata.obs.columns and not pd.api.types.is_float_dtype(adata.obs[column]):
            raise ValueError(
                f"`adata.obs[{column!r}]` already exists and holds {adata.obs[column].dtype} values; "
                "the result would overwrite it. Pass another `key_added`."
            )


def writable(adata: AnnData, copy: bool) -> AnnData:
    """The AnnData to write into: a copy, or ``adata`` itself with a view made actual."""
    if copy:
        return adata.copy()
    if adata.is_view:  # as scanpy's view_to_actual: write without an ImplicitModificationWarning
        adata._init_as_actual(adata.copy())
    return adata


def warn_missing_denominator(adata: AnnData, group_key: str, condition_key: str, control: str) -> None:
    """Warn about groups with no ``control`` cells: their denominator is extrapolated."""
    has_control = pd.Series(labels(adata, condition_key) == str(control)).groupby(labels(adata, group_key))
    missing = [g for g, any_control in has_control.any().items() if not any_control]
    if missing:
        warnings.warn(
            f"Categories {missing} of `adata.obs[{group_key!r}]` have no {control!r} cells in "
            f"`adata.obs[{condition_key!r}]`; their denominator p(x | {group_key}, {control}) is "
            "extrapolated by the model. Interpret their scores with care.",
            UserWarning,
            stacklevel=3,
        )


# ---------------------------------------------------------------------------- model
def fit(
    adata: AnnData,
    keys: Sequence[str],
    *,
    use_rep: str,
    model: RatioFlow | None,
    n_steps: int | None,
    batch_size: int,
    min_cells: int,
    random_state: int,
    train_kwargs: Mapping[str, Any] | None,
    model_kwargs: Mapping[str, Any],
) -> RatioFlow:
    """Return ``model`` if given, else a :class:`RatioFlow` on ``keys`` trained on ``adata``."""
    if model is not None:
        return model
    flow = RatioFlow(
        adata, use_rep, list(keys), min_cells=min_cells, random_state=random_state, **model_kwargs
    )
    return flow.train(n_steps, batch_size=batch_size, **(train_kwargs or {}))


def scoring(solver: str, solver_steps: int, divergence: str, random_state: int) -> dict[str, Any]:
    """Keyword arguments of the model's scoring methods."""
    return {"solver": solver, "n_steps": solver_steps, "divergence": divergence, "random_state": random_state}


def score_against_control(
    model: RatioFlow,
    adata: AnnData,
    group_key: str,
    condition_key: str,
    control: str,
    options: Mapping[str, Any],
) -> np.ndarray:
    """``log p(x | group, condition) - log p(x | group, control)`` at each cell's own group and condition.

    Used by the combination (group: first drug) and donor (group: donor) tools. Cells of
    ``control`` get NaN; only the others are integrated.
    """
    group, condition = labels(adata, group_key), labels(adata, condition_key)
    treated = condition != control
    scores = np.full(adata.n_obs, np.nan, dtype=np.float32)
    if treated.any():
        scores[treated] = model.log_ratio(
            get_representation(adata, model.use_rep)[treated],
            numerator={group_key: group[treated], condition_key: condition[treated]},
            denominator={group_key: group[treated], condition_key: control},
            **options,
        )
    return scores


def logsumexp_groups(values: pd.DataFrame, groups: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Per group, ``log mean_k exp(values[k])`` over its columns: an equal-weight mixture density."""
    out = {}
    for name, members in groups.items():
        block = values[list(members)].to_numpy(np.float64)
        top = block.max(axis=1, keepdims=True)
        out[name] = top[:, 0] + np.log(np.exp(block - top).mean(axis=1))
    return pd.DataFrame(out, index=values.index)


# ---------------------------------------------------------------------------- tables
def summarise(
    values: np.ndarray, by: Mapping[str, np.ndarray], stats: Sequence[str] = ("n_cells", "mean", "mean_abs")
) -> pd.DataFrame:
    """Long table of ``stats`` of ``values`` per combination of ``by`` (NaN cells skipped).

    ``stats`` are among ``"n_cells"``, ``"mean"``, ``"median"``, ``"mean_abs"``. Group columns
    hold strings so that the table writes to ``.h5ad``.
    """
    frame = pd.DataFrame({name: np.asarray(v).astype(str) for name, v in by.items()})
    frame["value"] = np.asarray(values, dtype=np.float64)
    frame = frame[np.isfinite(frame["value"])]
    frame["abs"] = frame["value"].abs()
    grouped = frame.groupby(list(by), sort=True)
    functions = {
        "n_cells": lambda: grouped["value"].size(),
        "mean": lambda: grouped["value"].mean(),
        "median": lambda: grouped["value"].median(),
        "mean_abs": lambda: grouped["abs"].mean(),
    }
    table = pd.DataFrame({stat: functions[stat]() for stat in stats}).reset_index()
    table.columns = [str(c) for c in table.columns]
    if "n_cells" in table:
        table["n_cells"] = table["n_cells"].astype(np.int64)
    return table


# ---------------------------------------------------------------------------- results
def finish(
    adata: AnnData,
    *,
    tool: str,
    key_added: str,
    results: Mapping[str, np.ndarray],
    tables: Mapping[str, Any],
    params: Mapping[str, Any],
    model: RatioFlow,
    score_options: Mapping[str, Any],
    copy: bool,
) -> AnnData | None:
    """Write ``results`` to ``adata.obs`` and ``{"params", **tables}`` to ``adata.uns[key_added]``.

    ``params`` (the tool's keys and categories) is completed with the model's record
    (representation, schedule, training, final loss), the scoring solver, the written
    ``columns`` and the package version.
    """
    for column, values in results.items():
        values = np.asarray(values, dtype=np.float32)
        scored = ~np.isnan(values)
        if not np.isfinite(values[scored]).all():
            warnings.warn(
                f"`adata.obs[{column!r}]` has non-finite scores; train longer or use more `solver_steps`.",
                RuntimeWarning,
                stacklevel=3,
            )
        adata.obs[column] = values
    record = model.record
    adata.uns[key_added] = {
        "params": {
            "tool": tool,
            **params,
            "columns": list(results),
            "use_rep": model.use_rep,
            "random_state": record.pop("random_state"),
            "model_condition_keys": record.pop("condition_keys"),
            "schedule": record.pop("schedule"),
            "network": record.pop("network"),
            "training": {k: v for k, v in record.items() if k != "use_rep"},
            "n_steps": record.get("n_steps"),
            "batch_size": record.get("batch_size"),
            "final_loss": record.get("final_loss"),
            "scoring": dict(score_options),
            "solver": score_options["solver"],
            "scratio_version": __version__,
        },
        **tables,
    }
    added = ", ".join(map(repr, results))
    logger.info(
        f"{tool}: added\n    {added}, per-cell log-ratios (adata.obs)\n"
        f"    {key_added!r}, params and {', '.join(map(repr, tables))} (adata.uns)"
    )
    return adata if copy else None
