"""The names that ``tl`` writes and ``pl`` reads: each tool, its default ``key_added`` and the ``uns`` layout.

One module holds the contract, so a tool and its plots cannot drift apart (as cellrank's
``Key`` class does for its results).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tool:
    """A :mod:`scratio.tl` tool as the results see it.

    Parameters
    ----------
    name
        The function's name in :mod:`scratio.tl`, recorded as ``params["tool"]``.
    key_added
        Its default ``key_added``.
    n_pcs
        Its default ``n_pcs``: ``None`` (every column of the representation) or
        :data:`AUTO_N_PCS` (as many leading components as the compared cells support).
    """

    name: str
    key_added: str
    n_pcs: str | None = None

    def __str__(self) -> str:
        return f"sr.tl.{self.name}"


#: ``n_pcs`` chosen from the number of cells (:meth:`scratio.tl._runner.ToolRun.prepare`).
AUTO_N_PCS = "auto"

DIFFERENTIAL_ABUNDANCE = Tool("differential_abundance", "scratio_da", n_pcs=AUTO_N_PCS)
BATCH_EFFECT_SCORE = Tool("batch_effect_score", "scratio_batch")
COMBINATION_EFFECT = Tool("combination_effect", "scratio_combination")
DONOR_RESPONSE = Tool("donor_response", "scratio_donor")
TOOLS = {
    tool.name: tool
    for tool in (DIFFERENTIAL_ABUNDANCE, BATCH_EFFECT_SCORE, COMBINATION_EFFECT, DONOR_RESPONSE)
}


class Uns:
    """Entries of ``adata.uns[key_added]``."""

    #: What reproduces the call: the tool, its keys and categories, the model, training and scoring.
    PARAMS = "params"
    #: The tool's main table.
    SUMMARY = "summary"
    #: Differential abundance per ``groupby`` group.
    GROUPBY_SUMMARY = "groupby_summary"
    #: Batch effect: the overall mean ``|log r|``.
    SCORE = "score"
    #: Differential abundance with replicates: the test over samples and its columns.
    TEST = "test"
    #: Differential abundance with ``calibrate=True``: the held-out scale of each target's log-ratios.
    CALIBRATION = "calibration"
    #: Differential abundance with ``bandwidth="auto"``: the held-out score of each bandwidth.
    BANDWIDTH_SELECTION = "bandwidth_selection"


class Params:
    """Entries of ``adata.uns[key_added]["params"]`` that plots and users read."""

    TOOL = "tool"
    #: The ``adata.obs`` columns written, one per target.
    COLUMNS = "columns"
    #: What each of the columns holds, in their order, for titles and colour bars, e.g.
    #: ``"log p(x | treated) / p(x | control)"``.
    RATIOS = "ratios"
    #: Other per-cell columns written besides the log-ratios (q-values, calls).
    OTHER_COLUMNS = "other_columns"
    #: Cells outside the training data: ``{"column", "n_cells", "threshold"}``.
    OUTSIDE = "outside"
