"""The scoring options every :class:`~scratio.RatioFlow` scoring method takes, stated once."""

from __future__ import annotations

import functools
import inspect
import mmap
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._deprecation import renamed_keywords
from ._docs import doc_params, parameters_section
from .core.ode import Solver
from .core.paths import GaussianPath
from .core.prediction import ScoringDevices

#: Scoring keywords and the :class:`~scratio.core.Solver` fields they set.
SOLVER_OPTIONS = {
    "solver_steps": "n_steps",
    "divergence": "divergence",
    "n_probes": "n_probes",
    "rtol": "rtol",
    "atol": "atol",
    "bandwidth": "start",  # converted to the time of that bandwidth on the model's path
    "precision": "precision",
    "condition_weight": "condition_weight",
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
    ``"hutchinson"``), ``rtol`` and ``atol`` (tolerances of adaptive methods), ``bandwidth``
    (score under both densities smoothed by a Gaussian kernel of this standard deviation, in
    units of each dimension's standard deviation; at least the model's ``s_min``, whose
    smoothing is the default ``None``), ``precision`` (``"32-true"``, the default, or
    ``"bf16-mixed"``: the network in bfloat16, the integration in float32),
    ``condition_weight`` (with a base: how much of the network's dependence on the conditions
    the scores keep, in ``[0, 1]``; default 1, the network as trained, 0 the base alone tells the
    conditions apart); see :class:`~scratio.core.Solver`."""

#: The device keywords (fields of :class:`~scratio.core.ScoringDevices`), documented once there.
DEVICES_DOC = parameters_section(ScoringDevices.__doc__)
DEVICE_TYPES = typing.get_type_hints(ScoringDevices)


def make_solver(
    solver: str | Solver, random_state: int, options: Mapping[str, Any], path: GaussianPath | None = None
) -> Solver:
    """The :class:`~scratio.core.Solver` of a scoring call; unknown or conflicting options are a :class:`TypeError`.

    A ``bandwidth`` becomes the solver's ``start``, the time of ``path`` with that bandwidth.
    """
    unknown = sorted(set(options) - set(SOLVER_OPTIONS))
    if unknown:
        raise TypeError(f"Unknown scoring options {unknown}; valid: {list(SOLVER_OPTIONS)}.")
    if isinstance(solver, Solver):
        if options:
            fields = sorted(SOLVER_OPTIONS[k] for k in options)
            hint = ", with `start=model.path.smoothing_time(bandwidth)`" if "bandwidth" in options else ""
            raise TypeError(
                f"Pass {sorted(options)} as fields of the `Solver` ({fields}{hint}), not beside it."
            )
        return solver
    fields = {SOLVER_OPTIONS[k]: v for k, v in options.items()}
    bandwidth = fields.pop("start", None)
    if bandwidth is not None:
        if path is None:
            raise TypeError("`bandwidth` is read on a model's path; pass the path.")
        fields["start"] = path.smoothing_time(bandwidth)
    return Solver(method=solver, seed=random_state, **fields)


def scoring_method(method: Callable) -> Callable:
    """Give a scoring method the keywords of its solver and of its devices.

    A method that takes ``solver: Solver`` gets ``solver``, ``random_state`` and
    ``**solver_options`` instead, made into a :class:`~scratio.core.Solver` by :func:`make_solver`
    before it runs (so a misspelt solver fails before any cell is scored); ``n_steps``, the 0.1
    name of ``solver_steps``, still works. A method that takes ``placement: ScoringDevices`` gets
    the fields of :class:`~scratio.core.ScoringDevices` (``accelerator``, ``devices``,
    ``strategy``, ``num_nodes``) instead, with their defaults. The docstring's ``{scoring}``
    line is filled in with the documentation of the keywords added.
    """
    own = inspect.signature(method)
    keyword = inspect.Parameter.KEYWORD_ONLY
    solves, places = "solver" in own.parameters, "placement" in own.parameters
    defaults = ScoringDevices()
    added = [
        *(
            [
                inspect.Parameter("solver", keyword, default="rk4", annotation=str | Solver),
                inspect.Parameter("random_state", keyword, default=0, annotation=int),
            ]
            if solves
            else []
        ),
        *(
            inspect.Parameter(name, keyword, default=getattr(defaults, name), annotation=DEVICE_TYPES[name])
            for name in (ScoringDevices.names() if places else ())
        ),
        *([inspect.Parameter("solver_options", inspect.Parameter.VAR_KEYWORD)] if solves else []),
    ]
    kept = [p for name, p in own.parameters.items() if name not in ("solver", "placement")]
    signature = own.replace(parameters=kept + added)

    @functools.wraps(method)
    def score(self, *args, **kwargs):
        if places:
            placed = {name: kwargs.pop(name) for name in ScoringDevices.names() if name in kwargs}
            kwargs["placement"] = ScoringDevices(**placed)
        if solves:
            solver, random_state = kwargs.pop("solver", "rk4"), kwargs.pop("random_state", 0)
            solver_options = {k: kwargs.pop(k) for k in list(kwargs) if k not in own.parameters}
            kwargs["solver"] = make_solver(solver, random_state, solver_options, self.path)
        return method(self, *args, **kwargs)

    hints = typing.get_type_hints(method)
    annotations = {
        **{k: v for k, v in hints.items() if k not in ("solver", "placement")},
        **{p.name: p.annotation for p in added if p.kind is keyword},
    }
    # Documentation tools that unwrap decorators stop here, at the public keywords.
    del score.__wrapped__
    score.__signature__ = signature.replace(
        parameters=[
            p.replace(annotation=annotations.get(p.name, p.annotation)) for p in signature.parameters.values()
        ],
        return_annotation=hints.get("return", signature.return_annotation),
    )
    score.__annotations__ = annotations
    public = renamed_keywords(n_steps="solver_steps")(score) if solves else score
    public.__signature__ = score.__signature__
    public.__annotations__ = annotations
    doc = "\n".join([SCORING_DOC] * solves + [DEVICES_DOC] * places)
    return doc_params(scoring=doc)(public)


@dataclass
class CellScorer:
    """Scores rows ``start:stop`` of the cells: read, standardise, key, encode, integrate.

    The one per-block step of every scoring method, on one device or in Lightning's processes
    (:func:`scratio.core.prediction.score_rows`); picklable, so that spawned processes get it.

    Parameters
    ----------
    cells
        The representation, one row per cell (not standardised).
    standardise
        ``(x - mean) / scale`` of the registration.
    codes
        Condition codes ``(n_cells, n_keys)`` of each field the integration takes, in its order.
    integrate
        ``integrate(network, x, codes, keys)`` on a standardised block with the block's codes.
    keyed
        Pass :func:`cell_keys` of the block as ``keys`` (Hutchinson divergences: a cell's probes
        depend on the cell, not on its position); else ``None``.
    """

    cells: SharedRows
    standardise: Callable[[np.ndarray], np.ndarray]
    codes: tuple[SharedRows, ...]
    integrate: Callable[..., torch.Tensor]
    keyed: bool

    def __call__(self, network: torch.nn.Module, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """The values of rows ``start:stop``, integrated with ``network`` on ``device``."""
        x = self.cells[start:stop]
        block = torch.from_numpy(self.standardise(x)).to(device)
        keys = cell_keys(x) if self.keyed else None
        codes = [torch.from_numpy(np.array(c[start:stop])).to(device) for c in self.codes]  # a writable copy
        return self.integrate(network, block, codes, keys)


class SharedRows:
    """Rows of a 2-D array, read in place here and never copied once per scoring process.

    A process started by spawning (``strategy="ddp_spawn"``) unpickles it as: the same file,
    memory-mapped again, for a memory-mapped array (``np.load(..., mmap_mode="r")``, an
    :class:`numpy.memmap` or a view of one); a zero-stride view (one condition for every cell) as
    such; anything else from one copy in shared memory, made once for all processes. Each process
    then reads only the rows of its share. Forked and relaunched processes read their own memory
    and never pickle it.
    """

    def __init__(self, array: np.ndarray):
        self.array = array
        self._shared: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.array[rows]

    def __reduce__(self):
        array = self.array
        if array.ndim == 2 and array.strides[0] == 0:
            return _broadcast_rows, (np.array(array[0]), len(array))
        mapped = _mapped_file(array)
        if mapped is not None:
            return _open_mapped, mapped
        if self._shared is None:
            dtype = torch.from_numpy(np.empty(0, dtype=array.dtype)).dtype
            self._shared = torch.empty(array.shape, dtype=dtype).share_memory_()
            target = self._shared.numpy()
            for start in range(0, len(array), 65536):
                target[start : start + 65536] = array[start : start + 65536]
        return _from_shared, (self._shared,)


def _broadcast_rows(row: np.ndarray, n: int) -> SharedRows:
    return SharedRows(np.broadcast_to(row, (n, len(row))))


def _from_shared(tensor: torch.Tensor) -> SharedRows:
    return SharedRows(tensor.numpy())


def _mapped_file(array: np.ndarray) -> tuple | None:
    """How to map ``array`` again from its file: the mapping's arguments and the view's place in it.

    The mapping is the :class:`numpy.memmap` that owns the :class:`mmap.mmap` (its ``offset`` is
    where its first element lies in the file; views of it, memmaps too, keep that ``offset``).
    """
    mapping = array
    while isinstance(mapping, np.ndarray) and not (
        isinstance(mapping, np.memmap) and isinstance(mapping.base, mmap.mmap) and mapping.filename
    ):
        mapping = mapping.base
    if not isinstance(mapping, np.memmap) or not mapping.flags.c_contiguous:
        return None
    offset = array.__array_interface__["data"][0] - mapping.__array_interface__["data"][0]
    file = (str(mapping.filename), mapping.dtype.str, mapping.offset, mapping.shape)
    return file, (array.dtype.str, array.shape, array.strides, offset)


def _open_mapped(file: tuple, view: tuple) -> SharedRows:
    filename, dtype, offset, shape = file
    mapping = np.memmap(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape)
    dtype, shape, strides, start = view
    return SharedRows(np.ndarray(shape, dtype=np.dtype(dtype), buffer=mapping, offset=start, strides=strides))


def cell_keys(x: np.ndarray) -> torch.Tensor:
    """A key per cell from the bits of its coordinates (a polynomial hash modulo ``2^31 - 1``)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.int64)
    keys = np.zeros(len(x), dtype=np.int64)
    for column in bits.T:
        keys = (keys * 1_000_003 + column) % 2_147_483_647
    return torch.from_numpy(keys)
