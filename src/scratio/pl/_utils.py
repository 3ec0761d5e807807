"""Reading what the tools wrote, and the scanpy conventions shared by every plot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from scratio._keys import TOOLS, Params, Uns

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _run_first(tool: str | None) -> str:
    known = TOOLS.get(tool)
    if known is None:  # no tool named, or one without a recorded default key
        named = "a `sr.tl` tool" if tool is None else f"`sr.tl.{tool}`"
        return f"Run {named} first, or pass the `key_added` you used."
    return f"Run `{known}` first, or pass the `key_added` you used (default {known.key_added!r})."


def get_result(adata: AnnData, key: str, tool: str) -> dict[str, Any]:
    """``adata.uns[key]`` as written by ``sr.tl.<tool>``."""
    result = adata.uns.get(key)
    if not isinstance(result, dict) or Uns.PARAMS not in result:
        raise KeyError(f"No scratio result {key!r} in `adata.uns`. {_run_first(tool)}")
    written_by = result[Uns.PARAMS].get(Params.TOOL)
    if written_by != tool:
        raise ValueError(
            f"`adata.uns[{key!r}]` was written by `sr.tl.{written_by}`, but this plot shows the result of "
            f"`sr.tl.{tool}`. Pass the `key_added` of that call."
        )
    return result


def get_ratio(adata: AnnData, key: str, tool: str | None = None) -> np.ndarray:
    """Per-cell log-ratio ``adata.obs[key]`` as float64 (NaN where a tool did not score a cell)."""
    if key not in adata.obs.columns:
        columns = find_params(adata, key).get(Params.COLUMNS)
        if columns:
            raise KeyError(
                f"`adata.obs` has no column {key!r}; that call wrote one column per target: {columns}. "
                "Pass one of them as `key`."
            )
        raise KeyError(f"No column {key!r} in `adata.obs`. {_run_first(tool)}")
    return adata.obs[key].to_numpy(dtype=np.float64, na_value=np.nan)


def find_params(adata: AnnData, column: str) -> dict[str, Any]:
    """Parameters of the tool call that wrote the obs column ``column``; empty if none is recorded."""
    for key, result in adata.uns.items():
        if not isinstance(result, dict) or not isinstance(result.get(Uns.PARAMS), dict):
            continue
        params = result[Uns.PARAMS]
        if key == column or column in params.get(Params.COLUMNS, ()):
            return params
    return {}


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """The given axes, or those of a new figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")  # room for outside legends
    return ax


def show_or_return(ax: Axes, show: bool | None, return_fig: bool) -> Axes | Figure | None:
    """Return like scanpy: the figure with ``return_fig``, nothing when shown, the axes otherwise."""
    import matplotlib.pyplot as plt
    import scanpy as sc

    if return_fig:
        return ax.figure
    if sc.settings.autoshow if show is None else show:
        plt.show()
        return None
    return ax


def symmetric_limit(values: np.ndarray, vmax: float | None, percentile: float) -> float:
    """Colour limit ``vmax`` for the range ``[-vmax, vmax]``; by default a percentile of ``|values|``."""
    if vmax is not None:
        if not vmax > 0:
            raise ValueError(f"`vmax` must be positive, got {vmax}.")
        return float(vmax)
    finite = np.abs(values[np.isfinite(values)])
    limit = float(np.percentile(finite, percentile)) if finite.size else 0.0
    # All-zero ratios still need a non-empty colour range.
    return limit if limit > 0 else 1.0


def heatmap(
    ax: Axes,
    table: pd.DataFrame,
    *,
    cmap: str,
    vmin: float,
    vmax: float,
    colorbar_label: str,
    annotate: bool,
    fmt: str,
) -> None:
    """Draw ``table`` as an annotated heatmap: rows on the y axis, columns on the x axis."""
    values = table.to_numpy(dtype=np.float64, na_value=np.nan)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    column_names = [str(c) for c in table.columns]
    ax.set_xticks(
        np.arange(table.shape[1]), column_names, rotation=90 if max(map(len, column_names)) > 4 else 0
    )
    ax.set_yticks(np.arange(table.shape[0]), [str(i) for i in table.index])
    ax.set_xlabel(str(table.columns.name or ""))
    ax.set_ylabel(str(table.index.name or ""))
    ax.figure.colorbar(image, ax=ax, label=colorbar_label)
    if annotate:
        for (row, column), value in np.ndenumerate(values):
            if np.isfinite(value):
                # Dark text on light cells, light text on dark cells.
                red, green, blue, _ = image.cmap(image.norm(value))
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                ax.text(column, row, format(value, fmt), ha="center", va="center", color="w" if dark else "k")


def label_rotation(labels) -> int:
    """Rotate category labels when side by side they would not fit under their groups."""
    labels = [str(label) for label in labels]
    return 90 if len(labels) > 6 or sum(map(len, labels)) > 6 * len(labels) else 0
