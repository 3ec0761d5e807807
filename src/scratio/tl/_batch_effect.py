"""Batch effect: ``log p(x | label, batch) - log p(x | label)`` at each cell's own label and batch."""

from __future__ import annotations

from typing import Any

import numpy as np
from anndata import AnnData

from scratio._docs import doc_params
from scratio._keys import BATCH_EFFECT_SCORE, Uns
from scratio.model import RatioFlow

from ._docs import COMMON, RETURNS
from ._runner import ToolOptions as Default
from ._runner import ToolRun, summarise


@doc_params(common=COMMON, returns=RETURNS)
def batch_effect_score(
    adata: AnnData,
    batch_key: str,
    label_key: str,
    *,
    use_rep: str = Default.use_rep,
    key_added: str = BATCH_EFFECT_SCORE.key_added,
    model: RatioFlow | None = None,
    n_steps: int | None = None,
    batch_size: int = Default.batch_size,
    solver: str = Default.solver,
    solver_steps: int = Default.solver_steps,
    divergence: str = Default.divergence,
    min_cells: int = Default.min_cells,
    train_kwargs: dict[str, Any] | None = None,
    copy: bool = False,
    random_state: int = 0,
    **model_kwargs,
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
    options = Default.from_arguments(locals())
    run = ToolRun.prepare(
        adata, BATCH_EFFECT_SCORE, options, keys=[label_key, batch_key], columns=[key_added]
    )
    model = run.fit()
    own = {label_key: run.labels(label_key), batch_key: run.labels(batch_key)}
    scores = model.log_ratio(run.x, numerator=own, denominator={label_key: own[label_key]}, **options.scoring)
    tables = {Uns.SUMMARY: summarise(scores, own), Uns.SCORE: float(np.abs(scores).mean())}
    params = {"batch_key": batch_key, "label_key": label_key, "categories": run.categories}
    return run.write({key_added: scores}, tables, params)
