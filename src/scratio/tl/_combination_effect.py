"""Combination effect: ``log p(x | first, second) - log p(x | first, control)``."""

from __future__ import annotations

from anndata import AnnData

from scratio._keys import COMBINATION_EFFECT, Uns

from ._contrast import against_control
from ._runner import ToolOptions, summarise, tool_function


@tool_function(COMBINATION_EFFECT)
def combination_effect(
    adata: AnnData,
    first_key: str,
    second_key: str,
    *,
    control: str = "control",
    options: ToolOptions,
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
    {returns}

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
    run, scores, scored = against_control(
        adata, COMBINATION_EFFECT, options, group_key=first_key, condition_key=second_key, control=control
    )
    by = {"first": run.labels(first_key), "second": run.labels(second_key)}
    summary = summarise(scores, by).sort_values("mean_abs", ascending=False, ignore_index=True)
    params = {
        "first_key": first_key,
        "second_key": second_key,
        "control": str(control),
        "categories": run.categories,
    }
    ratio = f"log p(x | {first_key}, {second_key}) / p(x | {first_key}, {control})"
    return run.write(
        {options.key_added: scores}, {Uns.SUMMARY: summary}, params, {options.key_added: ratio}, scored
    )
