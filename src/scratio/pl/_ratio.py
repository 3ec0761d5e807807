"""Per-cell log-ratios on an embedding and as distributions per group."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from scratio._keys import DIFFERENTIAL_ABUNDANCE, Uns
from scratio._validation import get_categorical
from scratio.pl._docs import doc_plot
from scratio.pl._utils import (
    RATIO_CMAP,
    find_params,
    fit_labels,
    get_ratio,
    group_width,
    new_axes,
    ratio_label,
    show_or_return,
    symmetric_limit,
    wrap_ratio,
)

#: Draw order of the cells: above the grid of scanpy's style (axes.axisbelow "line": 1.5).
CELLS_ZORDER = 2.0
#: Draw order of the line at zero: above the grid (at most 2.5) and the cells, below the medians (3).
ZERO_LINE_ZORDER = 2.6

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@doc_plot
def ratio_embedding(
    adata: AnnData,
    key: str = DIFFERENTIAL_ABUNDANCE.key_added,
    *,
    basis: str = "umap",
    vmax: float | None = None,
    cmap: str = RATIO_CMAP,
    mask_obs: np.ndarray | str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    **kwargs,
) -> Axes | Figure | None:
    """Per-cell log-ratio on an embedding, with a diverging colour scale centred at 0.

    Wraps :func:`scanpy.pl.embedding`. The colour limits are symmetric, ``[-vmax, vmax]``, so
    white means a ratio of one. Cells are drawn in order of increasing ``|log r|``, so the most
    extreme cells lie on top; cells without a score (NaN, e.g. controls of
    :func:`scratio.tl.donor_response`) are drawn underneath in grey. The title says what is
    shown and which condition is positive, e.g. ``"log p(x | treated) / p(x | control)"``, as
    recorded by the tool (the column's name for results of older versions); with a ``title``
    of your own, the colour bar says it instead.

    To draw the column with scanpy directly, give it the same diverging scale centred at
    zero, e.g. ``sc.pl.umap(adata, color="scratio_da", cmap="RdBu_r", vcenter=0)``, or
    symmetric limits ``vmin=-v, vmax=v`` so that equally strong colours mean equally large
    ratios either way. scanpy's defaults (``viridis`` from the lowest to the highest value, the
    highest values on top) put no particular colour at a ratio of one and hide the most
    negative cells under the others.

    Parameters
    ----------
    adata
        Annotated data scored by a :mod:`scratio.tl` tool.
    key
        Column of ``adata.obs`` with the log-ratio, e.g. the ``key_added`` of
        :func:`scratio.tl.differential_abundance` (``f"{key_added}_{target}"`` with several targets).
    basis
        Embedding in ``adata.obsm`` (``"umap"`` reads ``"X_umap"``).
    vmax
        Colour limit; defaults to the 99th percentile of ``|log r|``, so a few outliers do not
        wash out the scale.
    cmap
        Diverging colormap.
    mask_obs
        Cells to colour, as scanpy's ``mask_obs``: a boolean array, or a boolean column of
        ``adata.obs`` such as ``"scratio_da_significant"`` (written by
        :func:`scratio.tl.differential_abundance` with ``sample_key``) to colour only the cells
        called significant. The others are drawn underneath in grey, and the title says so.
    {plot_options}
    **kwargs
        Passed to :func:`scanpy.pl.embedding`, e.g. ``size`` (one value, or one per cell in the
        order of ``adata``) or ``title``.

    Returns
    -------
    {plot_returns}

    Examples
    --------
    >>> sr.tl.differential_abundance(adata, "condition", reference="control")
    >>> sr.pl.ratio_embedding(adata, "scratio_da")

    The same scale with scanpy alone:

    >>> sc.pl.umap(adata, color="scratio_da", cmap="RdBu_r", vcenter=0)
    """
    import scanpy as sc

    values = get_ratio(adata, key)
    limit = symmetric_limit(values, vmax, 99)
    mask = None if mask_obs is None else _mask(adata, mask_obs)
    # Unscored and masked cells first, then by increasing |log r|: scatter draws later points on top.
    shown = np.isfinite(values) if mask is None else np.isfinite(values) & mask
    order = np.argsort(np.where(shown, np.abs(values), -np.inf), kind="stable")
    ratio = ratio_label(adata, key)
    own_title = "title" in kwargs
    kwargs.setdefault(
        "title", wrap_ratio(ratio) + ("" if mask is None else f"\n{_grey_cells(adata, mask_obs)}")
    )
    if mask is not None:
        kwargs["mask_obs"] = mask[order]
    grow = ax is None
    size = kwargs.get("size")
    if size is not None and np.ndim(size) == 1 and len(size) == adata.n_obs:
        kwargs["size"] = np.asarray(size)[order]
    ax = sc.pl.embedding(
        _cells_in_order(adata, key, basis, order),
        basis,
        color=key,
        cmap=cmap,
        vmin=-limit,
        vmax=limit,
        sort_order=False,
        na_color="lightgray",
        ax=new_axes(ax, (4.5, 4)),
        show=False,
        **kwargs,
    )
    if own_title:
        for collection in ax.collections:
            if getattr(collection, "colorbar", None) is not None:
                colorbar = collection.colorbar
                colorbar.set_label(wrap_ratio(ratio))
                fit_labels(ax, along=[(colorbar.ax.yaxis.label, colorbar.ax)], grow=grow)
    return show_or_return(ax, show, return_fig)


def _mask(adata: AnnData, mask_obs: np.ndarray | str) -> np.ndarray:
    """``mask_obs`` as a boolean array over the cells of ``adata``."""
    if isinstance(mask_obs, str):
        if mask_obs not in adata.obs.columns:
            raise KeyError(
                f"`mask_obs` {mask_obs!r} is not a column of `adata.obs`. Pass a boolean column, e.g. the "
                "`{key_added}_significant` that `sr.tl.differential_abundance(..., sample_key=...)` writes."
            )
        mask_obs = adata.obs[mask_obs].to_numpy()
    mask = np.asarray(mask_obs)
    if mask.dtype != bool or mask.shape != (adata.n_obs,):
        raise ValueError(
            f"`mask_obs` must be boolean with one value per cell ({adata.n_obs}), got {mask.dtype} {mask.shape}."
        )
    return mask


def _grey_cells(adata: AnnData, mask_obs: np.ndarray | str) -> str:
    """The title's line on the grey cells: not significant at the test's level, or not in the mask."""
    if isinstance(mask_obs, str):
        for result in adata.uns.values():
            test = result.get(Uns.TEST) if isinstance(result, dict) else None
            if isinstance(test, dict) and any(mask_obs in c for c in dict(test.get("columns", {})).values()):
                threshold = float(test.get("min_log_ratio", 0.0))
                if threshold > 0:  # the test called only changes beyond a fold
                    return f"grey: no significant change beyond {np.exp(threshold):.3g}-fold (FDR ≥ {test['alpha']:g})"
                return f"grey: not significant (FDR ≥ {test['alpha']:g})"
        return f"grey: not {mask_obs}"
    return "grey: cells not in mask_obs"


def _cells_in_order(adata: AnnData, key: str, basis: str, order: np.ndarray) -> AnnData:
    """A new, small AnnData of the cells in ``order``: the ``key`` column and the embedding only.

    Not the view ``adata[order]``: scanpy turns string columns of a view into categories and so
    makes anndata copy it whole, with an ``ImplicitModificationWarning``.
    """
    basis_key = basis if basis in adata.obsm else f"X_{basis}"
    if basis_key not in adata.obsm:
        raise KeyError(f"No embedding {basis!r} in `adata.obsm` (looked for {basis!r} and {basis_key!r}).")
    # Names of their own: those of `adata` need not be unique.
    obs = pd.DataFrame({key: adata.obs[key].to_numpy()[order]}, index=np.arange(len(order)).astype(str))
    return AnnData(obs=obs, obsm={basis_key: np.asarray(adata.obsm[basis_key])[order]})


@doc_plot
def ratio_distributions(
    adata: AnnData,
    key: str = DIFFERENTIAL_ABUNDANCE.key_added,
    groupby: str | None = None,
    *,
    order: Sequence[str] | None = None,
    kind: Literal["violin", "strip"] = "violin",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Distribution of the per-cell log-ratio in each group, ordered by median, with a line at 0.

    Cells without a score (NaN) are left out. The median of each group is marked, and the tick
    labels give the number of scored cells of each group (``"n = 123"``). The y axis says what
    is shown and which condition is positive, e.g. ``"log p(x | treated) / p(x | control)"``,
    as recorded by the tool (the column's name for results of older versions).

    Parameters
    ----------
    adata
        Annotated data scored by a :mod:`scratio.tl` tool.
    key
        Column of ``adata.obs`` with the log-ratio.
    groupby
        Categorical column of ``adata.obs`` to group cells by; defaults to the ``groupby``, else
        the ``condition_key``, of the tool call that wrote ``key``.
    order
        Groups to show, in this order; defaults to all groups by decreasing median.
    kind
        ``"violin"`` (densities) or ``"strip"`` (one jittered point per cell).
    {plot_options}

    Returns
    -------
    {plot_returns}

    Examples
    --------
    >>> sr.tl.differential_abundance(adata, "condition", reference="control", groupby="leiden")
    >>> sr.pl.ratio_distributions(adata, "scratio_da")
    """
    if kind not in ("violin", "strip"):
        raise ValueError(f"`kind` must be 'violin' or 'strip', got {kind!r}.")
    values = get_ratio(adata, key)
    if groupby is None:
        params = find_params(adata, key)
        groupby = params.get("groupby") or params.get("condition_key")
        if groupby is None:
            raise ValueError(f"No `groupby` recorded for {key!r}; pass `groupby`, a column of `adata.obs`.")
    groups = pd.Series(values).groupby(get_categorical(adata, groupby), observed=True)
    by_group = {str(name): group.dropna().to_numpy() for name, group in groups}
    by_group = {name: group for name, group in by_group.items() if group.size}
    if order is None:
        order = sorted(by_group, key=lambda name: -np.median(by_group[name]))
    else:
        order = [str(name) for name in order]
        unknown = [name for name in order if name not in by_group]
        if unknown:
            raise ValueError(f"Groups {unknown} of `order` have no scored cells in `adata.obs[{groupby!r}]`.")
    data = [by_group[name] for name in order]
    positions = np.arange(len(order))
    ticks = [f"{name}\nn = {group.size:,}" for name, group in zip(order, data, strict=True)]

    grow = ax is None
    ax = new_axes(ax, (max(3.0, len(order) * group_width(ticks) + 1.5), 4))
    if kind == "violin":
        # A kernel density needs spread; groups whose cells share one value show only the median.
        spread = [i for i, group in enumerate(data) if np.ptp(group) > 0]
        if spread:
            violins = ax.violinplot([data[i] for i in spread], positions=positions[spread], showextrema=False)
            for body in violins["bodies"]:
                body.set_zorder(CELLS_ZORDER)
    else:
        rng = np.random.default_rng(0)
        for position, group in zip(positions, data, strict=True):
            jitter = rng.uniform(-0.3, 0.3, group.size)
            ax.scatter(
                position + jitter, group, s=4, alpha=0.5, linewidths=0, rasterized=True, zorder=CELLS_ZORDER
            )
    ax.scatter(positions, [np.median(group) for group in data], marker="_", s=300, color="k", zorder=3)
    # Over the grid (zorder up to 2.5) and the cells, under the medians.
    ax.axhline(0, color="0.2", linewidth=0.8, linestyle="--", zorder=ZERO_LINE_ZORDER)
    ax.set_xticks(positions, ticks)
    ax.set_xlabel(groupby)
    ax.set_ylabel(wrap_ratio(ratio_label(adata, key)))
    fit_labels(ax, along=[(ax.yaxis.label, ax)], grow=grow)
    return show_or_return(ax, show, return_fig)
