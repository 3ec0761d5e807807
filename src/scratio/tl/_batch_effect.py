"""Batch effect: ``log p(x | label, batch) - log p(x | label)`` at each cell's own label and batch."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from scratio._keys import BATCH_EFFECT_SCORE, Uns

from ._runner import ToolOptions, ToolRun, summarise, tool_function


@tool_function(BATCH_EFFECT_SCORE)
def batch_effect_score(
    adata: AnnData,
    batch_key: str,
    label_key: str,
    *,
    options: ToolOptions,
) -> AnnData | None:
    """How much a cell's batch tells about its state beyond its label (e.g. cell type).

    Trains one conditional flow on ``label_key`` and ``batch_key`` and scores each cell
    with ``log p(x | label, batch) - log p(x | label)`` at its own label and batch. Near zero
    the batch carries no information beyond the label; large ``|log r|`` flags batch effects.
    Run it on an embedding before and after integration (e.g. ``"X_pca"`` and
    ``"X_scVI"``, with different ``key_added``) to compare.

    Parameters
    ----------
    adata
        Annotated data with an embedding in ``adata.obsm[use_rep]``.
    batch_key
        Column of ``adata.obs`` with the batches.
    label_key
        Column of ``adata.obs`` with the biological labels (cell types).
    {common}

    Returns
    -------
    {returns}

    ``adata.obs[key_added]``
        ``float32`` log-ratios for every cell.
    ``adata.uns[key_added]["params"]``
        Tool, ``batch_key``, ``label_key``, categories, representation, seed, schedule,
        training, solver, final loss, ``columns`` and package version.
    ``adata.uns[key_added]["summary"]``
        Long table with columns ``[label_key, batch_key, "n_cells", "mean", "mean_abs"]``.
    ``adata.uns[key_added]["score"]``
        Overall mean ``|log r|`` (a float).

    Examples
    --------
    >>> sr.tl.batch_effect_score(adata, "batch", "cell_type", use_rep="X_pca", key_added="batch_pca")
    >>> sr.tl.batch_effect_score(adata, "batch", "cell_type", use_rep="X_scVI", key_added="batch_scvi")
    """
    run = ToolRun.prepare(
        adata,
        BATCH_EFFECT_SCORE,
        options,
        keys=[label_key, batch_key],
        compared_key=batch_key,
        columns=[options.key_added],
    )
    model = run.fit()
    own = {label_key: run.labels(label_key), batch_key: run.labels(batch_key)}
    scores = model.log_ratio(run.x, numerator=own, denominator={label_key: own[label_key]}, **run.scoring)
    tables = {Uns.SUMMARY: summarise(scores, own), Uns.SCORE: float(np.abs(scores).mean())}
    params = {"batch_key": batch_key, "label_key": label_key, "categories": run.categories}
    ratio = f"log p(x | {label_key}, {batch_key}) / p(x | {label_key})"
    return run.write({options.key_added: scores}, tables, params, {options.key_added: ratio})
