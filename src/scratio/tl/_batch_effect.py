"""Batch effect: ``log p(x | label, batch) - log p(x | label)`` at each cell's own label and batch."""

from __future__ import annotations

from typing import Any

import numpy as np
from anndata import AnnData

from scratio.model import RatioFlow

from . import _common


@_common.doc_common
def batch_effect_score(
    adata: AnnData,
    batch_key: str,
    label_key: str,
    *,
    use_rep: str = "X_pca",
    key_added: str = "scratio_batch",
    model: RatioFlow | None = None,
    n_steps: int | None = None,
    batch_size: int = 1024,
    solver: str = "rk4",
    solver_steps: int = 2,
    divergence: str = "exact",
    min_cells: int = 10,
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
    ``None``, or the AnnData when ``copy=True``, with

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
    keys = [label_key, batch_key]
    categories = _common.check_inputs(
        adata, keys=keys, use_rep=use_rep, columns=[key_added], model=model, min_cells=min_cells
    )
    adata = _common.writable(adata, copy)
    model = _common.fit(
        adata, keys, use_rep=use_rep, model=model, n_steps=n_steps, batch_size=batch_size,
        min_cells=min_cells, random_state=random_state, train_kwargs=train_kwargs, model_kwargs=model_kwargs,
    )  # fmt: skip
    options = _common.scoring(solver, solver_steps, divergence, random_state)
    label, batch = _common.labels(adata, label_key), _common.labels(adata, batch_key)
    scores = model.log_ratio(
        adata, numerator={label_key: label, batch_key: batch}, denominator={label_key: label}, **options
    )
    tables = {
        "summary": _common.summarise(scores, {label_key: label, batch_key: batch}),
        "score": float(np.abs(scores).mean()),
    }
    params = {"batch_key": batch_key, "label_key": label_key, "categories": categories}
    return _common.finish(
        adata, tool="batch_effect_score", key_added=key_added, results={key_added: scores}, tables=tables,
        params=params, model=model, score_options=options, copy=copy,
    )  # fmt: skip
