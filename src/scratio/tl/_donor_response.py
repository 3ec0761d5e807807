"""Donor response: ``log p(x | donor, treatment) - log p(x | donor, control)`` for treated cells."""

from __future__ import annotations

from anndata import AnnData

from scratio._keys import DONOR_RESPONSE, Uns

from ._contrast import against_control
from ._runner import ToolOptions, summarise, tool_function


@tool_function(DONOR_RESPONSE)
def donor_response(
    adata: AnnData,
    donor_key: str,
    treatment_key: str,
    *,
    control: str = "control",
    options: ToolOptions,
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
    {returns}

    ``adata.obs[key_added]``
        ``float32`` log-ratios, NaN for control cells.
    ``adata.uns[key_added]["params"]``
        Tool, ``donor_key``, ``treatment_key``, ``control``, categories, representation, seed,
        schedule, training, solver, final loss, ``columns`` and package version.
    ``adata.uns[key_added]["summary"]``
        Donors x treatments table (index donors, columns treatments other than ``control``)
        of mean log-ratios; NaN where a donor has no cells of a treatment.

    Notes
    -----
    The scores have no q-values: a donor's response is measured against that donor's own
    control, and one donor x treatment sample has no replicate to test it against. Whether a
    treatment shifts cells consistently across donors is a question with donors as replicates,
    which :func:`scratio.tl.differential_abundance` answers with ``sample_key`` (one sample per
    donor and treatment) and ``batch_key=donor_key``: the test then swaps treatment labels only
    within each donor (a paired design; 64 assignments for 6 donors).

    Examples
    --------
    >>> sr.tl.donor_response(adata, "donor", "stimulation", control="unstimulated")
    >>> adata.uns["scratio_donor"]["summary"]
    """
    run, scores, scored = against_control(
        adata, DONOR_RESPONSE, options, group_key=donor_key, condition_key=treatment_key, control=control
    )
    control = str(control)
    donor, treatment = run.labels(donor_key), run.labels(treatment_key)
    long = summarise(scores, {"donor": donor, "treatment": treatment}, ("mean",))
    donors = [d for d in run.categories[donor_key] if d in set(donor)]
    treatments = [t for t in run.categories[treatment_key] if t != control and t in set(treatment)]
    summary = long.pivot(index="donor", columns="treatment", values="mean").reindex(
        index=donors, columns=treatments
    )
    summary.index.name, summary.columns.name = donor_key, None
    params = {
        "donor_key": donor_key,
        "treatment_key": treatment_key,
        "control": control,
        "categories": run.categories,
    }
    ratio = f"log p(x | {donor_key}, {treatment_key}) / p(x | {donor_key}, {control})"
    return run.write(
        {options.key_added: scores}, {Uns.SUMMARY: summary}, params, {options.key_added: ratio}, scored
    )
