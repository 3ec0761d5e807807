"""Combination effect: ``log p(x | first, second) - log p(x | first, control)``."""

from __future__ import annotations

from typing import Any

from anndata import AnnData

from scratio._docs import doc_params
from scratio._keys import COMBINATION_EFFECT, Uns
from scratio.model import RatioFlow

from ._contrast import against_control
from ._docs import COMMON, RETURNS
from ._runner import ToolOptions as Default
from ._runner import summarise


@doc_params(common=COMMON, returns=RETURNS)
def combination_effect(
    adata: AnnData,
    first_key: str,
    second_key: str,
    *,
    control: str = "control",
    use_rep: str = Default.use_rep,
    key_added: str = COMBINATION_EFFECT.key_added,
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
    options = Default.from_arguments(locals())
    run, scores = against_control(
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
    return run.write({key_added: scores}, {Uns.SUMMARY: summary}, params)
