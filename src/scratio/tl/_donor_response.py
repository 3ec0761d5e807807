"""Donor response: ``log p(x | donor, treatment) - log p(x | donor, control)`` for treated cells."""

from __future__ import annotations

from typing import Any

from anndata import AnnData

from scratio.model import RatioFlow

from . import _common


@_common.doc_common
def donor_response(
    adata: AnnData,
    donor_key: str,
    treatment_key: str,
    *,
    control: str = "control",
    use_rep: str = "X_pca",
    key_added: str = "scratio_donor",
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
    """How strongly each donor's cells respond to each treatment, against the donor's own control.

    Trains one conditional flow on ``donor_key`` and ``treatment_key`` and scores each treated
    cell with ``log p(x | donor, treatment) - log p(x | donor, control)`` at its own donor and
    treatment. Donor-specific baselines cancel; responders have large scores. Control cells
    get NaN.

    Parameters
    ----------
    adata
        Annotated data with an embedding in ``adata.obsm[use_rep]``.
    donor_key
        Column of ``adata.obs`` with the donors (or any unit of replication).
    treatment_key
        Column of ``adata.obs`` with the treatments.
    control
        The untreated category of ``treatment_key``.
    {common}

    Returns
    -------
    ``None``, or the AnnData when ``copy=True``, with

    ``adata.obs[key_added]``
        ``float32`` log-ratios, NaN for control cells.
    ``adata.uns[key_added]["params"]``
        Tool, ``donor_key``, ``treatment_key``, ``control``, categories, representation, seed,
        schedule, training, solver, final loss, ``columns`` and package version.
    ``adata.uns[key_added]["summary"]``
        Donors x treatments table (index donors, columns treatments other than ``control``)
        of mean log-ratios; NaN where a donor has no cells of a treatment.

    Examples
    --------
    >>> sr.tl.donor_response(adata, "donor", "stimulation", control="unstimulated")
    >>> adata.uns["scratio_donor"]["summary"]
    """
    keys = [donor_key, treatment_key]
    categories = _common.check_inputs(
        adata, keys=keys, use_rep=use_rep, columns=[key_added], model=model,
        required={treatment_key: [control]}, min_cells=min_cells,
    )  # fmt: skip
    control = str(control)
    _common.warn_missing_denominator(adata, donor_key, treatment_key, control)
    adata = _common.writable(adata, copy)
    model = _common.fit(
        adata, keys, use_rep=use_rep, model=model, n_steps=n_steps, batch_size=batch_size,
        min_cells=min_cells, random_state=random_state, train_kwargs=train_kwargs, model_kwargs=model_kwargs,
    )  # fmt: skip
    options = _common.scoring(solver, solver_steps, divergence, random_state)
    scores = _common.score_against_control(model, adata, donor_key, treatment_key, control, options)
    donor, treatment = _common.labels(adata, donor_key), _common.labels(adata, treatment_key)
    long = _common.summarise(scores, {"donor": donor, "treatment": treatment}, ("mean",))
    donors = [d for d in categories[donor_key] if d in set(donor)]
    treatments = [t for t in categories[treatment_key] if t != control and t in set(treatment)]
    summary = long.pivot(index="donor", columns="treatment", values="mean").reindex(
        index=donors, columns=treatments
    )
    summary.index.name, summary.columns.name = donor_key, None
    params = {
        "donor_key": donor_key, "treatment_key": treatment_key, "control": control, "categories": categories,
    }  # fmt: skip
    return _common.finish(
        adata, tool="donor_response", key_added=key_added, results={key_added: scores},
        tables={"summary": summary}, params=params, model=model, score_options=options, copy=copy,
    )  # fmt: skip
