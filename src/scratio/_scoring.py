"""The scoring options every :class:`~scratio.RatioFlow` scoring method takes, stated once."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ._deprecation import renamed_keywords
from ._docs import doc_params
from ._settings import progress_bar
from .core.ode import Solver

#: Scoring keywords and the :class:`~scratio.core.Solver` fields they set.
SOLVER_OPTIONS = {
    "solver_steps": "n_steps",
    "divergence": "divergence",
    "n_probes": "n_probes",
    "rtol": "rtol",
    "atol": "atol",
}

SCORING_DOC = """\
solver
    A torchdiffeq method (fixed-step ones such as ``"rk4"`` are reproducible per cell), or a
    :class:`~scratio.core.Solver` that sets every option below.
random_state
    Seed of the Hutchinson probes.
solver_options
    ``solver_steps`` (steps of a fixed-step method, default 3), ``divergence`` (``"exact"``:
    the Jacobian trace, or ``"hutchinson"``), ``n_probes`` (Rademacher probes of
    ``"hutchinson"``), ``rtol`` and ``atol`` (tolerances of adaptive methods); see
    :class:`~scratio.core.Solver`."""


def make_solver(solver: str | Solver, random_state: int, options: Mapping[str, Any]) -> Solver:
    """The :class:`~scratio.core.Solver` of a scoring call; unknown or conflicting options are a :class:`TypeError`."""
    unknown = sorted(set(options) - set(SOLVER_OPTIONS))
    if unknown:
        raise TypeError(f"Unknown scoring options {unknown}; valid: {list(SOLVER_OPTIONS)}.")
    if isinstance(solver, Solver):
        if options:
            raise TypeError(f"Pass {sorted(options)} as fields of the `Solver`, not beside it.")
        return solver
    return Solver(method=solver, seed=random_state, **{SOLVER_OPTIONS[k]: v for k, v in options.items()})


def scoring_method(method: Callable) -> Callable:
    """Give a scoring method the keywords ``solver``, ``random_state`` and ``**solver_options``.

    The method itself takes ``solver: Solver``, made by :func:`make_solver` before it runs (so
    a misspelt solver fails before any cell is scored); its docstring's ``{scoring}`` line is
    filled in with :data:`SCORING_DOC`; ``n_steps``, the 0.1 name of ``solver_steps``, still works.
    """
    own = inspect.signature(method)
    keyword = inspect.Parameter.KEYWORD_ONLY
    added = [
        inspect.Parameter("solver", keyword, default="rk4", annotation="str | Solver"),
        inspect.Parameter("random_state", keyword, default=0, annotation="int"),
        inspect.Parameter("solver_options", inspect.Parameter.VAR_KEYWORD),
    ]
    signature = own.replace(parameters=[p for name, p in own.parameters.items() if name != "solver"] + added)

    @functools.wraps(method)
    def score(self, *args, solver: str | Solver = "rk4", random_state: int = 0, **kwargs):
        solver_options = {k: kwargs.pop(k) for k in list(kwargs) if k not in own.parameters}
        return method(self, *args, solver=make_solver(solver, random_state, solver_options), **kwargs)

    public = renamed_keywords(n_steps="solver_steps")(score)
    public.__signature__ = signature
    public.__annotations__ = {**method.__annotations__, "solver": "str | Solver", "random_state": "int"}
    return doc_params(scoring=SCORING_DOC)(public)


def stream_scores(
    x: np.ndarray,
    score: Callable[[torch.Tensor, slice, torch.Tensor | None], torch.Tensor],
    *,
    keyed: bool,
    standardise: Callable[[np.ndarray], np.ndarray],
    device: torch.device,
    batch_size: int,
    desc: str,
) -> np.ndarray:
    """Apply ``score(block, rows, keys)`` to standardised blocks of cells, memory flat in ``len(x)``.

    ``rows`` is the block's slice of ``x``. With ``keyed`` (Hutchinson divergences), ``keys`` are
    :func:`cell_keys` of the block, so that a cell's probes depend on the cell and not on its
    position among the cells passed; else ``None``. The results are written into one float32
    array, with a progress bar that follows :data:`scratio.settings`.
    """
    if len(x) == 0:
        raise ValueError("No cells to score: the data has 0 rows.")
    output = None
    bar = progress_bar(total=len(x), desc=desc, unit="cell")
    for start in range(0, len(x), batch_size):
        stop = min(start + batch_size, len(x))
        block = torch.from_numpy(standardise(x[start:stop])).to(device)
        keys = cell_keys(x[start:stop]) if keyed else None
        values = score(block, slice(start, stop), keys).cpu().numpy()
        if output is None:
            output = np.empty((len(x), *values.shape[1:]), dtype=np.float32)
        output[start:stop] = values
        bar.update(stop - start)
    bar.close()
    return output


def cell_keys(x: np.ndarray) -> torch.Tensor:
    """A key per cell from the bits of its coordinates (a polynomial hash modulo ``2^31 - 1``)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.int64)
    keys = np.zeros(len(x), dtype=np.int64)
    for column in bits.T:
        keys = (keys * 1_000_003 + column) % 2_147_483_647
    return torch.from_numpy(keys)
