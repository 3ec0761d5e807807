"""Combination effect: ``log p(x | first, second) - log p(x | first, control)``."""

from __future__ import annotations

from typing import Any

from anndata import AnnData

from scratio.model import RatioFlow

from . import _common


@_common.doc_common
def combination_effect(
    adata: AnnData,
    first_key: str,
    second_key: str,
    *,
    control: str = "control",
    use_rep: str = "X_pca",
    key_added: str = "scratio_combination",
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
    """What a second perturbation adds on top of a first one, per cell.

    Trains one conditional flow on ``first_key`` and ``second_key`` and scores each cell that
    received a second perturbation with ``log p(x | first, second) - log p(x | first, control)``
    at its own first and second condition. Large ``|log r|``: the second drug shifts the
    state reached with the first one. Cells whose second condition is ``control`` get NaN.

    Parameters
    ----------
    adata
        Annotated data with an embedding in ``adata.obsm[use_rep]``.
    first_key
        Column of ``adata.obs`` with the first perturbation (e.g. drug 1).
    second_key
        Column of ``adata.obs`` with the second perturbation (e.g. drug 2).
    control
        The category of ``second_key`` meaning "no second perturbation".
    {common}

    Returns
    -------
    ``None``, or the AnnData when ``copy=True``, with

    ``adata.obs[key_added]``
        ``float32`` log-ratios, NaN for cells whose second condition is ``control``.
    ``adata.uns[key_added]["params"]``
        Tool, ``first_key``, ``second_key``, ``control``, categories, representation, seed,
        schedule, training, solver, final loss, ``columns`` and package version.
    ``adata.uns[key_added]["summary"]``
        One row per (first, second) pair with columns ``["first", "second", "n_cells", "mean",
        "mean_abs"]``, sorted by ``mean_abs`` (largest effect first).

    Examples
    --------
    >>> sr.tl.combination_effect(adata, "drug1", "drug2", control="DMSO")
    >>> adata.uns["scratio_combination"]["summary"].head()
    """
    keys = [first_key, second_key]
    categories = _common.check_inputs(
        adata, keys=keys, use_rep=use_rep, columns=[key_added], model=model,
        required={second_key: [control]}, min_cells=min_cells,
    )  # fmt: skip
    control = str(control)
    _common.warn_missing_denominator(adata, first_key, second_key, control)
    adata = _common.writable(adata, copy)
    model = _common.fit(
        adata, keys, use_rep=use_rep, model=model, n_steps=n_steps, batch_size=batch_size,
        min_cells=min_cells, random_state=random_state, train_kwargs=train_kwargs, model_kwargs=model_kwargs,
    )  # fmt: skip
    options = _common.scoring(solver, solver_steps, divergence, random_state)
    scores = _common.score_against_control(model, adata, first_key, second_key, control, options)
    first, second = _common.labels(adata, first_key), _common.labels(adata, second_key)
    summary = _common.summarise(scores, {"first": first, "second": second})
    summary = summary.sort_values("mean_abs", ascending=False, ignore_index=True)
    params = {"first_key": first_key, "second_key": second_key, "control": control, "categories": categories}
    return _common.finish(
        adata, tool="combination_effect", key_added=key_added, results={key_added: scores},
        tables={"summary": summary}, params=params, model=model, score_options=options, copy=copy,
    )  # fmt: skip
