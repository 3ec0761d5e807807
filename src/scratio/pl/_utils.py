"""Reading what the tools wrote, and the scanpy conventions shared by every plot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from scratio._keys import TOOLS, Params, Uns

#: Colormap of the log-ratios (diverging, drawn from ``-vmax`` to ``vmax``, white at a ratio of one).
RATIO_CMAP = "RdBu_r"
#: Colormap of magnitudes such as the mean ``|log r|`` (sequential, from 0).
MAGNITUDE_CMAP = "Reds"
#: Fill of the heatmap cells without a value, hatched so it differs from any colour of the maps.
MISSING_COLOR = "0.9"
#: The smallest font that labels are shrunk to when they do not fit.
MIN_FONT_SIZE = 6.0

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Text


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


def ratio_label(adata: AnnData, column: str, default: str | None = None) -> str:
    """What the obs ``column`` holds, e.g. ``"log p(x | treated) / p(x | control)"``.

    Read from the ``params["ratios"]`` of the tool call that wrote it; ``default`` (the column's
    name if not given) when nothing is recorded, e.g. for results of older versions.
    """
    params = find_params(adata, column)
    columns, ratios = list(params.get(Params.COLUMNS) or ()), list(params.get(Params.RATIOS) or ())
    if column in columns and len(ratios) == len(columns):
        return str(ratios[columns.index(column)])
    return column if default is None else default


def wrap_ratio(text: str, width: int = 30) -> str:
    """Break a ratio longer than ``width`` characters before its ``/``, numerator over denominator.

    So that it fits along a colour bar, a short axis or above a panel, also in scanpy's 14 pt.
    """
    if len(text) <= width or " / " not in text:
        return text
    numerator, denominator = text.split(" / ", 1)
    return f"{numerator}\n/ {denominator}"


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


def heatmap_size(table: pd.DataFrame, title: str) -> tuple[float, float]:
    """Size of a new figure for :func:`heatmap`: room for the cells, the colour bar and the title."""
    return max(0.6 * table.shape[1] + 2.5, text_width([title]) + 1.0), 0.45 * table.shape[0] + 1.5


def heatmap(
    ax: Axes,
    table: pd.DataFrame,
    *,
    cmap: str,
    vmin: float,
    vmax: float,
    colorbar_label: str,
    title: str,
    annotate: bool,
    fmt: str,
    grow: bool = False,
) -> None:
    """Draw ``table`` as an annotated heatmap: rows on the y axis, columns on the x axis.

    ``grow``: the plot made the figure, which may grow to fit the labels.

    Missing values (NaN: e.g. a donor without cells of a treatment) are drawn as light grey
    hatched cells, marked ``"n/a"`` with ``annotate``, so that they cannot be read as zero.
    """
    from matplotlib.patches import Rectangle

    values = table.to_numpy(dtype=np.float64, na_value=np.nan)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(np.arange(table.shape[1]), [str(c) for c in table.columns])
    ax.set_yticks(np.arange(table.shape[0]), [str(i) for i in table.index])
    ax.set_xlabel(str(table.columns.name or ""))
    ax.set_ylabel(str(table.index.name or ""))
    ax.set_title(title)
    ax.grid(False)  # no grid lines across the cells (scanpy's style draws them)
    # As long as the heatmap: the bar is at most 15% as wide as the heatmap and `aspect` times as long
    # as wide, so a tall narrow heatmap (many donors, one treatment) needs a larger aspect.
    box = ax.get_position()
    width, height = box.width * ax.figure.get_figwidth(), box.height * ax.figure.get_figheight()
    aspect = max(20.0, height / (0.15 * 0.8 * width))
    colorbar = ax.figure.colorbar(image, ax=ax, aspect=aspect, label=wrap_ratio(colorbar_label))
    for (row, column), value in np.ndenumerate(values):
        if not np.isfinite(value):
            ax.add_patch(
                Rectangle(
                    (column - 0.5, row - 0.5), 1, 1, facecolor=MISSING_COLOR, edgecolor="0.6",
                    hatch="///", linewidth=0, label="n/a",
                )
            )  # fmt: skip
            if annotate:
                ax.text(column, row, "n/a", ha="center", va="center", color="0.3")
        elif annotate:
            # Dark text on light cells, light text on dark cells.
            red, green, blue, _ = image.cmap(image.norm(value))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(column, row, format(value, fmt), ha="center", va="center", color="w" if dark else "k")
    fit_labels(ax, along=[(colorbar.ax.yaxis.label, colorbar.ax)], grow=grow)


def fit_labels(ax: Axes, *, along: Sequence[tuple[Text, Axes]] = (), grow: bool = False) -> None:
    """Make the labels of ``ax`` fit: ratios along their axes, x tick labels side by side.

    Measured on the laid-out figure rather than guessed from the number of characters.

    * ``along``: labels written along an axes (a y label, a colour bar's label) that are
      longer than it, in scanpy's 14 pt say: with ``grow`` (a figure the plot made itself) the
      figure grows taller, else they are set in a smaller font.
    * The x tick labels stay upright if they fit side by side, else turn by 90 degrees; with
      ``grow`` the figure then grows taller rather than the axes shorter. Labels that overlap
      even when turned (many groups on a narrow axis) are set in a smaller font.
    """
    figure = ax.figure
    figure.draw_without_rendering()  # runs the layout engine and places the labels
    along = [(text, length) for text, length in along if text.get_text()]
    if grow and along:
        missing = max(_excess(text, length, figure) for text, length in along)
        if missing > 0:
            figure.set_figheight(figure.get_figheight() + 1.05 * missing / figure.dpi)
            figure.draw_without_rendering()
    if any(_excess(text, length, figure) > 0 for text, length in along):
        renderer = figure.canvas.get_renderer()
        for text, length in along:
            needed, room = text.get_window_extent(renderer).height, length.get_window_extent(renderer).height
            if needed > room > 0:
                text.set_fontsize(max(MIN_FONT_SIZE, 0.95 * text.get_fontsize() * room / needed))
        figure.draw_without_rendering()
    labels = [label for label in ax.get_xticklabels() if label.get_text()]
    if len(labels) < 2:
        return
    if not _overlapping(labels, figure):
        return
    upright = _label_height(labels, figure)
    # Rotated, the end of each line meets the tick; "n = ..." lines stay right-aligned to the name.
    for label in labels:
        label.set(rotation=90, ha="center", va="top", multialignment="right")
    if grow:
        figure.set_figheight(figure.get_figheight() + (_label_height(labels, figure) - upright) / figure.dpi)
    figure.draw_without_rendering()
    while _overlapping(labels, figure) and labels[0].get_fontsize() > MIN_FONT_SIZE:
        for label in labels:
            label.set_fontsize(max(MIN_FONT_SIZE, 0.85 * label.get_fontsize()))
        figure.draw_without_rendering()


def text_width(texts) -> float:
    """About how many inches the longest line of ``texts`` takes in the current font size."""
    import matplotlib as mpl

    longest = max((len(line) for text in texts for line in str(text).split("\n")), default=1)
    return 0.085 * longest * mpl.rcParams["font.size"] / 10


def group_width(labels, minimum: float = 0.5) -> float:
    """Inches per group for upright tick labels ``labels``, or ``minimum`` if they need turning anyway.

    For the size of a new figure, in the current font size (scanpy's style sets 14 pt).
    """
    upright = text_width(labels) + 0.15
    return max(minimum, upright) if upright * len(labels) <= 9 else minimum


def _excess(text: Text, length: Axes, figure: Figure) -> float:
    """By how many pixels ``text`` is longer than ``length`` is tall."""
    renderer = figure.canvas.get_renderer()
    return text.get_window_extent(renderer).height - length.get_window_extent(renderer).height


def _label_height(labels, figure) -> float:
    renderer = figure.canvas.get_renderer()
    return max(label.get_window_extent(renderer).height for label in labels)


def _overlapping(labels, figure) -> bool:
    """Whether neighbouring labels touch, with a gap of a third of the font size between them."""
    renderer = figure.canvas.get_renderer()
    boxes = sorted((label.get_window_extent(renderer) for label in labels), key=lambda box: box.x0)
    gap = labels[0].get_fontsize() * figure.dpi / 72 / 3
    return any(left.x1 + gap > right.x0 for left, right in zip(boxes, boxes[1:], strict=False))
