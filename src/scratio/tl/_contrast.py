"""The contrast of the combination and donor tools: each cell against its group's control."""

from __future__ import annotations

import warnings

import numpy as np
from anndata import AnnData

from scratio._keys import Tool

from ._runner import ToolOptions, ToolRun


def against_control(
    adata: AnnData, tool: Tool, options: ToolOptions, *, group_key: str, condition_key: str, control: str
) -> tuple[ToolRun, np.ndarray, np.ndarray]:
    """``log p(x | group, condition) - log p(x | group, control)`` at each cell's own group and condition.

    Trains (or reuses) one flow on ``group_key`` and ``condition_key``. Cells of ``control``
    get NaN; only the others are integrated. Returns the run, the scores and the mask of the
    scored cells.
    """
    run = ToolRun.prepare(
        adata, tool, options, keys=[group_key, condition_key], compared_key=condition_key,
        required={condition_key: [control]}, columns=[options.key_added],
    )  # fmt: skip
    control = str(control)
    group, condition = run.labels(group_key), run.labels(condition_key)
    treated = condition != control
    without_control = sorted(map(str, set(group) - set(group[~treated])))
    if without_control:
        warnings.warn(
            f"Categories {without_control} of `adata.obs[{group_key!r}]` have no {control!r} cells in "
            f"`adata.obs[{condition_key!r}]`; their denominator p(x | {group_key}, {control}) is "
            "extrapolated by the model. Interpret their scores with care.",
            UserWarning,
            stacklevel=4,  # the user, the public tool, its body, here
        )
    model = run.fit()
    scores = np.full(adata.n_obs, np.nan, dtype=np.float32)
    if treated.any():
        scores[treated] = model.log_ratio(
            run.x[treated],
            numerator={group_key: group[treated], condition_key: condition[treated]},
            denominator={group_key: group[treated], condition_key: control},
            **run.scoring,
        )
    return run, scores, treated
