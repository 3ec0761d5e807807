"""Summaries of the batch-effect, combination and donor-response tools."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from scratio._deprecation import deprecated_alias
from scratio._keys import BATCH_EFFECT_SCORE, COMBINATION_EFFECT, DONOR_RESPONSE, Uns
from scratio._validation import get_categorical
from scratio.pl._docs import doc_plot
from scratio.pl._utils import (
    MAGNITUDE_CMAP,
    RATIO_CMAP,
    fit_labels,
    get_ratio,
    get_result,
    group_width,
    heatmap,
    heatmap_size,
    new_axes,
    ratio_label,
    show_or_return,
    symmetric_limit,
    text_width,
    wrap_ratio,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@doc_plot
def batch_effect_score(
    adata: AnnData,
    keys: Sequence[str],
    *,
    labels: Sequence[str] | None = None,
    groupby: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Compare batch-effect scores, e.g. before and after batch correction, per cell label.

    For each result of :func:`scratio.tl.batch_effect_score`, draws one bar per group with the
    mean ``|log r|`` of its cells, bars of the same group side by side. Lower is better: a
    ratio near one means the batch tells nothing about a cell beyond its label. The legend
    gives each result's overall score, the tick labels the number of cells of each group
    (``"n = 123"``) and the y axis the ratio the tool recorded, e.g.
    ``"mean |log p(x | cell_type, batch) / p(x | cell_type)|"``.

    Parameters
    ----------
    adata
        Annotated data scored by :func:`scratio.tl.batch_effect_score` under several ``key_added``.
    keys
        The ``key_added`` of each call, e.g. ``["batch_pca", "batch_scvi"]``.
    labels
        Names of the results in the legend; defaults to ``keys``.
    groupby
        Categorical column of ``adata.obs`` to group cells by; defaults to the ``label_key`` of
        the calls.
    {plot_options}

    Returns
    -------
    {plot_returns}

    Examples
    --------
    >>> sr.tl.batch_effect_score(adata, "batch", "cell_type", use_rep="X_pca", key_added="before")
    >>> sr.tl.batch_effect_score(adata, "batch", "cell_type", use_rep="X_scVI", key_added="after")
    >>> sr.pl.batch_effect_score(adata, ["before", "after"], labels=["PCA", "scVI"])
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    labels = keys if labels is None else list(labels)
    if len(labels) != len(keys):
        raise ValueError(f"`labels` must name each of the {len(keys)} keys, got {len(labels)} labels.")
    results = [get_result(adata, key, BATCH_EFFECT_SCORE.name) for key in keys]
    if groupby is None:
        label_keys = {result[Uns.PARAMS]["label_key"] for result in results}
        if len(label_keys) > 1:
            raise ValueError(f"The results use different label keys {sorted(label_keys)}; pass `groupby`.")
        (groupby,) = label_keys
    groups = get_categorical(adata, groupby)
    scores = pd.DataFrame({key: np.abs(get_ratio(adata, key)) for key in keys})
    table = scores.groupby(groups, observed=True).mean()
    # Cells with a score in any of the results.
    n_cells = scores.notna().any(axis=1).groupby(groups, observed=True).sum()
    ratios = {ratio_label(adata, key, "log r") for key in keys}
    ratio = ratios.pop() if len(ratios) == 1 else "log r"

    ticks = [f"{name}\nn = {n_cells[name]:,}" for name in table.index]
    entries = [
        f"{label} (score {result[Uns.SCORE]:.3g})" for label, result in zip(labels, results, strict=True)
    ]

    grow = ax is None
    # Groups, the y axis and the legend on the right.
    width = len(table) * max(group_width(ticks), 0.3 * len(keys)) + 1.5 + text_width(entries) + 0.6
    ax = new_axes(ax, (max(4.0, width), 4))
    bar_width = 0.8 / len(keys)
    positions = np.arange(len(table))
    for i, (key, entry) in enumerate(zip(keys, entries, strict=True)):
        offset = (i - (len(keys) - 1) / 2) * bar_width
        ax.bar(positions + offset, table[key], bar_width, label=entry)
    ax.set_xticks(positions, ticks)
    ax.set_xlabel(groupby)
    ax.set_ylabel(wrap_ratio(f"mean |{ratio}|"))
    ax.legend(title="batch effect", loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    fit_labels(ax, along=[(ax.yaxis.label, ax)], grow=grow)
    return show_or_return(ax, show, return_fig)


batch_effect = deprecated_alias(
    batch_effect_score, old_name="scratio.pl.batch_effect", new_name="scratio.pl.batch_effect_score"
)


@doc_plot
def combination_effect(
    adata: AnnData,
    key: str = COMBINATION_EFFECT.key_added,
    *,
    kind: Literal["bar", "heatmap"] = "bar",
    n_top: int | None = None,
    cmap: str = MAGNITUDE_CMAP,
    annotate: bool = True,
    fmt: str = ".2f",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """How much the second condition shifts cells, per combination, from :func:`scratio.tl.combination_effect`.

    The axis or colour bar gives the ratio the tool recorded, e.g.
    ``"mean |log p(x | drug1, drug2) / p(x | drug1, control)|"``; a pair without cells is a
    grey hatched cell of the heatmap.

    Parameters
    ----------
    adata
        Annotated data scored by :func:`scratio.tl.combination_effect`.
    key
        The ``key_added`` of that call.
    kind
        ``"bar"``: one bar per (first, second) pair with its mean ``|log r|``, largest on top;
        ``"heatmap"``: the first x second table of mean ``|log r|``.
    n_top
        Number of pairs to show with ``kind="bar"``; all by default.
    cmap
        Colormap of the heatmap, sequential from 0.
    {heatmap_options}
    {plot_options}

    Returns
    -------
    {plot_returns}

    Examples
    --------
    >>> sr.tl.combination_effect(adata, "drug1", "drug2", control="control")
    >>> sr.pl.combination_effect(adata, kind="heatmap")
    """
    if kind not in ("bar", "heatmap"):
        raise ValueError(f"`kind` must be 'bar' or 'heatmap', got {kind!r}.")
    result = get_result(adata, key, COMBINATION_EFFECT.name)
    summary = result[Uns.SUMMARY].sort_values("mean_abs", ascending=False)
    params = result[Uns.PARAMS]
    magnitude = f"mean |{ratio_label(adata, key, 'log r')}|"
    title = f"{params['second_key']} vs {params['control']}, given {params['first_key']}"
    if kind == "bar":
        ranked = summary if n_top is None else summary.head(n_top)
        ax = new_axes(ax, (5, 0.3 * len(ranked) + 1.2))
        names = [
            f"{first} + {second}" for first, second in zip(ranked["first"], ranked["second"], strict=True)
        ]
        positions = np.arange(len(ranked))
        ax.barh(positions, ranked["mean_abs"], color="tab:blue")
        ax.set_yticks(positions, names)
        ax.invert_yaxis()  # largest effect at the top
        ax.set_xlabel(wrap_ratio(magnitude))
        ax.set_ylabel(f"{params['first_key']} + {params['second_key']}")
        ax.set_title(title)
    else:
        table = summary.pivot(index="first", columns="second", values="mean_abs")
        table.index.name, table.columns.name = params["first_key"], params["second_key"]
        grow = ax is None
        ax = new_axes(ax, heatmap_size(table, title))
        heatmap(
            ax,
            table,
            cmap=cmap,
            vmin=0.0,
            vmax=float(np.nanmax(table.to_numpy(dtype=np.float64))),
            colorbar_label=magnitude,
            title=title,
            annotate=annotate,
            fmt=fmt,
            grow=grow,
        )
    return show_or_return(ax, show, return_fig)


@doc_plot
def donor_response(
    adata: AnnData,
    key: str = DONOR_RESPONSE.key_added,
    *,
    vmax: float | None = None,
    cmap: str = RATIO_CMAP,
    annotate: bool = True,
    fmt: str = ".2f",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Donor x treatment heatmap of the mean log-ratio from :func:`scratio.tl.donor_response`.

    The colour scale is diverging and symmetric about 0: red cells are donors whose treated
    cells move towards states typical of treatment, relative to their own controls. The colour
    bar gives the ratio the tool recorded, e.g.
    ``"mean log p(x | donor, treatment) / p(x | donor, control)"``; a donor without cells of a
    treatment is a grey hatched cell marked ``"n/a"``, not a ratio of one.

    Parameters
    ----------
    adata
        Annotated data scored by :func:`scratio.tl.donor_response`.
    key
        The ``key_added`` of that call.
    vmax
        Colour limit, the scale spans ``[-vmax, vmax]``; defaults to the largest ``|mean log r|``.
    cmap
        Diverging colormap.
    {heatmap_options}
    {plot_options}

    Returns
    -------
    {plot_returns}

    Examples
    --------
    >>> sr.tl.donor_response(adata, "donor", "treatment", control="control")
    >>> sr.pl.donor_response(adata)
    """
    result = get_result(adata, key, DONOR_RESPONSE.name)
    params = result[Uns.PARAMS]
    table = result[Uns.SUMMARY].copy()
    table.index.name = params["donor_key"]
    table.columns.name = params["treatment_key"]
    limit = symmetric_limit(table.to_numpy(dtype=np.float64).ravel(), vmax, 100)
    title = f"{params['treatment_key']} vs {params['control']}, per {params['donor_key']}"
    grow = ax is None
    ax = new_axes(ax, heatmap_size(table, title))
    heatmap(
        ax,
        table,
        cmap=cmap,
        vmin=-limit,
        vmax=limit,
        colorbar_label=f"mean {ratio_label(adata, key, 'log r')}",
        title=title,
        annotate=annotate,
        fmt=fmt,
        grow=grow,
    )
    return show_or_return(ax, show, return_fig)
