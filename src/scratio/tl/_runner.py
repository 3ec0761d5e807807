"""The lifecycle every tool shares, once: check -> fit -> score -> write.

A tool declares its condition keys, the categories it requires and the columns it writes
(:meth:`ToolRun.prepare`, which checks everything before any training and never modifies the
AnnData), gets its model (:meth:`ToolRun.fit`), scores, and hands its per-cell columns, tables
and parameters to :meth:`ToolRun.write`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData, ImplicitModificationWarning

from scratio._docs import doc_params
from scratio._keys import AUTO_N_PCS, TOOLS, Params, Tool, Uns
from scratio._registration import RegisteredCells
from scratio._scoring import make_solver
from scratio._settings import logger
from scratio._support import Support
from scratio._validation import (
    check_categories,
    check_required,
    column_moments,
    get_categorical,
    is_whole_number,
)
from scratio._version import __version__
from scratio.core.ode import DIVERGENCES
from scratio.core.prediction import ScoringDevices
from scratio.core.training import TrainingOptions
from scratio.model import NETWORK_OPTIONS, RatioFlow

from . import _docs as docs

#: Options of RatioFlow(...) a tool forwards besides the network's.
MODEL_OPTIONS = ("scaling", "schedule", "s_min", "s_path", *NETWORK_OPTIONS)
#: The tools' default ``divergence``, chosen for the model by :func:`divergence_for`.
AUTO_DIVERGENCE = "auto"
#: Dimensions per Hutchinson probe of ``divergence="auto"``; in fewer, it takes the exact divergence.
DIMENSIONS_PER_PROBE = 16


def divergence_for(model: RatioFlow, divergence: str) -> dict[str, Any]:
    """The divergence options a tool scores with (``divergence`` and, for ``"auto"``, ``n_probes``).

    ``"auto"``: over a closed-form base in more than 16 dimensions, Hutchinson's estimate with a
    probe per 16 dimensions, else the exact trace. A base keeps its own divergence exact, so the
    estimate only concerns the network's correction, whose exact trace costs a network pass per
    dimension; its variance grows with the dimensions, and so do the probes.
    """
    if divergence != AUTO_DIVERGENCE:
        return {"divergence": divergence}
    if model.network.fitted_base is None or model.n_dims <= DIMENSIONS_PER_PROBE:
        return {"divergence": "exact"}
    return {"divergence": "hutchinson", "n_probes": math.ceil(model.n_dims / DIMENSIONS_PER_PROBE)}


def _check_options(tool: Tool, options: ToolOptions) -> None:
    """Name the tool and the right place for a mistyped option, before anything is read."""
    unknown = sorted(set(options.model_kwargs) - set(MODEL_OPTIONS))
    if unknown:
        raise TypeError(
            f"{tool}() got unknown options {unknown}. Model options are {list(MODEL_OPTIONS)}; "
            "pass training options (lr, p_drop, accelerator, ...) in `train_kwargs`."
        )
    scoring = options.scoring
    for name in ScoringDevices.names():
        del scoring[name]
    if scoring["divergence"] not in (*DIVERGENCES, AUTO_DIVERGENCE):
        raise ValueError(
            f"Unknown divergence {scoring['divergence']!r}; choose one of {[*DIVERGENCES, AUTO_DIVERGENCE]} "
            f"({AUTO_DIVERGENCE!r}, the default: Hutchinson's over a base in more than 16 dimensions, else exact)."
        )
    if scoring["divergence"] == AUTO_DIVERGENCE:
        scoring["divergence"] = "exact"  # either choice checks the other options alike
    make_solver(scoring.pop("solver"), scoring.pop("random_state"), scoring)
    options.placement.check()  # e.g. no GPU: said now, not after training
    n_pcs = options.n_pcs
    if not (n_pcs is None or n_pcs == AUTO_N_PCS or (is_whole_number(n_pcs) and n_pcs >= 1)):
        raise ValueError(f"`n_pcs` must be 'auto', None (every column) or a positive integer, got {n_pcs!r}.")
    try:
        TrainingOptions.from_kwargs(n_steps=options.n_steps, **options.training)
    except TypeError as error:
        raise TypeError(f"{tool}(train_kwargs=...): {error}") from None


#: Fewest cells per dimension of the representation, in the smallest category of the tool's
#: condition: ``n_pcs="auto"`` keeps no more leading components than this allows, and a chosen
#: ``n_pcs`` beyond it warns (benchmarks README, "Noise floor": fixed numbers of PCs).
CELLS_PER_DIMENSION = 30


def ordered_by_variance(sd: np.ndarray) -> bool:
    """Whether columns with these standard deviations look like principal components.

    Each column's sd at most 10% above the previous one's (neighbouring components may swap
    on a subset of the cells), and the last at most half the first.
    """
    return bool(np.all(sd[1:] <= 1.1 * sd[:-1]) and sd[-1] <= 0.5 * sd[0])


def _new_model(adata: AnnData, options: ToolOptions, model_keys: Sequence[str], *, n_pcs: int | str | None):
    """An untrained model of ``adata`` with the call's options, on the first ``n_pcs`` columns."""
    return RatioFlow(
        adata, options.use_rep, model_keys, n_pcs=None if n_pcs == AUTO_N_PCS else n_pcs, min_cells=options.min_cells,
        random_state=options.random_state, **options.model_kwargs,
    )  # fmt: skip


#: Fix appended to every message about a passed ``model`` that cannot be used.
NEW_MODEL = "pass `model=None` to train a new one"


@dataclass(frozen=True)
class ToolOptions:
    """The options every tool takes, with their defaults stated once (the tools' signatures read them)."""

    use_rep: str = "X_pca"
    n_pcs: int | str | None = None
    key_added: str | None = None
    model: RatioFlow | None = None
    n_steps: int | None = None
    batch_size: int = 1024
    solver: str = "rk4"
    solver_steps: int = 2
    divergence: str = AUTO_DIVERGENCE
    precision: str = TrainingOptions.precision
    accelerator: str | None = ScoringDevices.accelerator
    devices: int | str | Sequence[int] = ScoringDevices.devices
    strategy: Any = ScoringDevices.strategy
    num_nodes: int = ScoringDevices.num_nodes
    min_cells: int = 10
    train_kwargs: Mapping[str, Any] | None = None
    copy: bool = False
    overwrite: bool = False
    random_state: int = 0
    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def placement(self) -> ScoringDevices:
        """Where the cells are scored."""
        return ScoringDevices(**{name: getattr(self, name) for name in ScoringDevices.names()})

    @property
    def training(self) -> dict[str, Any]:
        """Keywords of :meth:`~scratio.RatioFlow.train` (``train_kwargs`` override the call's ``precision``)."""
        return {"batch_size": self.batch_size, "precision": self.precision, **(self.train_kwargs or {})}

    @property
    def scoring(self) -> dict[str, Any]:
        """Keywords of the model's scoring methods."""
        return {
            "solver": self.solver,
            "solver_steps": self.solver_steps,
            "divergence": self.divergence,
            "precision": self.precision,
            "random_state": self.random_state,
            **self.placement.keywords(),
        }


def tool_function(tool: Tool) -> Callable[[Callable], Callable]:
    """Make ``body(adata, ..., *, own options, options: ToolOptions)`` the public tool.

    The public function takes the body's own parameters, then every :class:`ToolOptions` field
    as a keyword-only parameter (``key_added`` defaulting to the tool's key) and
    ``**model_kwargs``; it gathers those into one :class:`ToolOptions` for the body. Its
    docstring's ``{common}`` and ``{returns}`` lines are filled in from :mod:`._docs`. So each
    option, its default and its documentation are written once for all tools.
    """
    option_types = typing.get_type_hints(ToolOptions)
    common = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default={"key_added": tool.key_added, "n_pcs": tool.n_pcs}.get(f.name, f.default),
            annotation=str if f.name == "key_added" else option_types[f.name],
        )
        for f in dataclasses.fields(ToolOptions)
        if f.name != "model_kwargs"
    ]
    model_kwargs = inspect.Parameter("model_kwargs", inspect.Parameter.VAR_KEYWORD)

    def decorate(body: Callable) -> Callable:
        own = inspect.signature(body)
        parameters = [p for name, p in own.parameters.items() if name != "options"]
        signature = own.replace(parameters=[*parameters, *common, model_kwargs])

        @functools.wraps(body)
        def run(*args, **kwargs):
            arguments = signature.bind(*args, **kwargs)
            arguments.apply_defaults()
            values = arguments.arguments
            options = ToolOptions(
                **{p.name: values.pop(p.name) for p in common}, model_kwargs=values.pop("model_kwargs")
            )
            return body(**values, options=options)

        # Documentation tools that unwrap decorators stop here, at the public keywords.
        del run.__wrapped__
        run.__signature__ = signature
        hints = typing.get_type_hints(body)
        run.__annotations__ = {
            **{name: hints[name] for name in own.parameters if name in hints and name != "options"},
            **{p.name: p.annotation for p in common},
            "return": hints.get("return"),
        }
        return doc_params(common=docs.COMMON, returns=docs.RETURNS)(run)

    return decorate


#: What the model's own check of the training data's support measures.
UNCONDITIONAL = "log p(x), every condition key null"


@dataclass(frozen=True)
class MeasuredSupport:
    """Log-likelihoods that a tool measured while scoring, and the support they are judged by.

    Parameters
    ----------
    support
        Threshold from the held-out cells' likelihoods, measured the same way.
    log_likelihood
        One per cell of the AnnData.
    likelihood
        What was measured, for ``params["outside"]``.
    """

    support: Support
    log_likelihood: np.ndarray
    likelihood: str


@dataclass
class ToolRun:
    """One tool call, checked and ready to fit. Made by :meth:`prepare`."""

    adata: AnnData
    tool: Tool
    options: ToolOptions
    model: RatioFlow
    model_keys: list[str]
    cells: RegisteredCells
    categories: dict[str, list[str]]
    _labels: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @classmethod
    def prepare(
        cls,
        adata: AnnData,
        tool: Tool,
        options: ToolOptions,
        *,
        keys: Sequence[str],
        compared_key: str,
        model_keys: Sequence[str] | None = None,
        required: Mapping[str, Sequence[Any]] | None = None,
        columns: Sequence[str] = (),
    ) -> ToolRun:
        """Check everything the tool needs before any training; never modifies ``adata``.

        The AnnData is read once: the representation and the model's condition columns
        through the model's registration, other columns here.

        Parameters
        ----------
        adata
            The user's AnnData (possibly a view).
        tool
            The tool.
        options
            The common options of the call.
        keys
            Condition columns of ``adata.obs`` the tool reads.
        compared_key
            The key whose categories the tool's log-ratios compare: the cells of its smallest
            category bound the dimensions of the representation (``n_pcs="auto"``).
        model_keys
            The keys the model conditions on (default: ``keys``).
        required
            Categories that must exist, per key (a reference, a control, targets).
        columns
            ``adata.obs`` columns the tool will write, if known now (else call :meth:`check_columns`).
        """
        if len(set(keys)) != len(keys):
            raise ValueError(f"The condition keys must be different columns, got {list(keys)}.")
        model_keys = list(keys if model_keys is None else model_keys)
        required = {key: [str(c) for c in values] for key, values in (required or {}).items()}
        _check_options(tool, options)
        model = options.model
        if model is None:
            model = _new_model(adata, options, model_keys, n_pcs=options.n_pcs)
            cells = model.cells
        else:
            if not isinstance(model, RatioFlow):
                raise TypeError(f"`model` must be a scratio.RatioFlow, got {type(model).__name__}.")
            if not model.is_trained:
                raise ValueError("`model` is not trained; call `model.train()` first or pass `model=None`.")
            cells = model.registration.cells(adata, model_keys, use_rep=options.use_rep, fix=NEW_MODEL)
        run = cls(adata, tool, options, model, model_keys, cells, {})
        for key in keys:
            if key in model_keys:
                known = model.categories[key]
                missing = [c for c in required.get(key, ()) if c not in known]
                if missing and options.model is not None:
                    raise ValueError(
                        f"Category {missing[0]!r} of {key!r} is unknown to `model`. Categories: {known}. "
                        f"Pass one of these, or {NEW_MODEL}."
                    )
                check_required(known, key, missing)
                run.categories[key] = list(known)
            else:
                values = get_categorical(adata, key)
                run.categories[key] = check_categories(values, key, required=required.get(key, ()))
                run._labels[key] = np.asarray(values).astype(str)
        if columns:
            run.check_columns(columns)
        if options.model is None:
            run._choose_dimensions(compared_key)
        return run

    def _choose_dimensions(self, key: str) -> None:
        """Keep as many leading components as the smallest category of ``key`` supports (``n_pcs="auto"``).

        With fewer than :data:`CELLS_PER_DIMENSION` cells per dimension in that category, the
        model is rebuilt on the leading ``fewest // CELLS_PER_DIMENSION`` columns when the
        columns are principal components (:func:`ordered_by_variance`); otherwise, or when the
        user chose ``n_pcs``, the tool warns.
        """
        n_dims = self.x.shape[1]
        categories, counts = np.unique(self.labels(key), return_counts=True)
        fewest = int(counts.min())
        smallest = str(categories[counts.argmin()])
        supported = max(1, fewest // CELLS_PER_DIMENSION)
        if supported >= n_dims:
            return
        if self.options.n_pcs == AUTO_N_PCS and ordered_by_variance(column_moments(self.x)[1]):
            self.model = _new_model(self.adata, self.options, self.model_keys, n_pcs=supported)
            self.cells = self.model.cells
            logger.info(
                f"{self.tool.name}: using the first {supported} of {n_dims} components of {self.options.use_rep!r} "
                f"({fewest} cells in {smallest!r} of {key!r}, {CELLS_PER_DIMENSION} per dimension); "
                "pass `n_pcs` to choose"
            )
            return
        warnings.warn(
            f"{self.tool.name}: {n_dims} dimensions for {fewest} cells in {smallest!r} of "
            f"{key!r}. With fewer than {CELLS_PER_DIMENSION} cells per dimension the log-ratios are noisy (on "
            "700 PBMCs, differential abundance found semi-synthetic effects at a PR-AUC of 0.82 with 50 PCs "
            "against 0.95 with 10-11, and its log-ratios on random labels spread by an sd of 0.093 against 0.048). "
            f"Pass `n_pcs` (at most {supported}) to use the leading principal "
            "components only, or a lower-dimensional `use_rep`.",
            UserWarning,
            stacklevel=5,  # the user, the public tool, its body, prepare, here
        )

    def check_columns(self, columns: Sequence[str]) -> None:
        """Refuse to replace a user's ``adata.obs`` column or ``adata.uns[key_added]`` entry.

        What scratio wrote itself (an ``uns`` entry with its params, and the columns they list)
        is replaced with a log line, as scanpy does; anything else needs ``overwrite=True``.
        """
        if self.options.overwrite:
            return
        ours = _written_by_scratio(self.adata)
        obs, uns = self.adata.obs, self.adata.uns
        columns = [*columns, self.outside_column]
        for column in columns:
            if column in obs.columns and column not in ours:
                raise ValueError(
                    f"`adata.obs[{column!r}]` already exists ({obs[column].dtype}) and was not written by "
                    "scratio; the result would overwrite it. Pass another `key_added`, or `overwrite=True`."
                )
        if self.key_added in uns and self.key_added not in ours:
            raise ValueError(
                f"`adata.uns[{self.key_added!r}]` already exists and was not written by scratio; the result "
                "would overwrite it. Pass another `key_added`, or `overwrite=True`."
            )
        replaced = [f"adata.obs[{c!r}]" for c in columns if c in ours and c in obs.columns]
        if self.key_added in ours and self.key_added in uns:
            replaced.append(f"adata.uns[{self.key_added!r}]")
        if replaced:
            logger.info(f"{self.tool.name}: replacing the earlier scratio results {', '.join(replaced)}")

    @property
    def key_added(self) -> str:
        """Where the results go."""
        return self.options.key_added

    @property
    def outside_column(self) -> str:
        """The ``adata.obs`` column marking the cells outside the training data."""
        return f"{self.key_added}_outside"

    @property
    def scoring(self) -> dict[str, Any]:
        """Keywords of the model's scoring methods, with ``divergence="auto"`` chosen for the model (:func:`divergence_for`)."""
        scoring = self.options.scoring
        scoring.update(divergence_for(self.model, scoring["divergence"]))
        return scoring

    @property
    def x(self) -> np.ndarray:
        """The representation of the cells, as read once."""
        return self.cells.x

    def labels(self, key: str) -> np.ndarray:
        """Per-cell categories of ``adata.obs[key]`` as strings (the model's encoding), read once."""
        if key not in self._labels:
            if key in self.model_keys:  # decoded from the codes the registration read
                codes = self.cells.codes[:, self.model.condition_keys.index(key)]
                self._labels[key] = np.asarray(self.model.categories[key])[codes]
            else:
                self._labels[key] = np.asarray(get_categorical(self.adata, key)).astype(str)
        return self._labels[key]

    def fit(self) -> RatioFlow:
        """The passed model, or the registered one trained with the call's options."""
        if self.options.model is None:
            options = self.options
            self.model.train(options.n_steps, **options.training)
        return self.model

    def write(
        self,
        results: Mapping[str, np.ndarray],
        tables: Mapping[str, Any],
        params: Mapping[str, Any],
        ratios: Mapping[str, str],
        scored: np.ndarray | None = None,
        other: Mapping[str, np.ndarray] | None = None,
        support: MeasuredSupport | None = None,
    ) -> AnnData | None:
        """Write ``results`` to ``adata.obs`` and ``{"params", **tables}`` to ``adata.uns[key_added]``.

        ``ratios`` says what each column holds (``"log p(x | treated) / p(x | control)"``), for
        the plots' titles. ``scored`` marks the cells the tool scored (default: all; the others
        hold NaN); a scored cell without a finite score is an error, and nothing is written.
        ``other`` per-cell columns (a test's q-values and calls) are written as they are.
        Scored cells are flagged outside the training data by the likelihoods in ``support``, if
        the tool measured them while scoring, else by the model's own check.
        ``params`` (the tool's keys and categories) is completed with the model's record
        (representation, schedule, network, training, final loss), the scoring options (with
        where the cells were scored), the written ``columns`` and ``other_columns`` and the
        package version; no entry is written twice.
        """
        results = {column: np.asarray(values, dtype=np.float32) for column, values in results.items()}
        for column, values in results.items():
            bad = ~np.isfinite(values) if scored is None else scored & ~np.isfinite(values)
            if bad.any():
                raise RuntimeError(
                    f"{int(bad.sum())} cells got non-finite scores for `adata.obs[{column!r}]`; nothing was written. "
                    "Train longer, use more `solver_steps`, or check the representation of those cells."
                )
        outside = self._outside(np.ones(self.adata.n_obs, dtype=bool) if scored is None else scored, support)
        adata = self.adata.copy() if self.options.copy else self.adata
        with warnings.catch_warnings():
            # Writing into a view makes it an actual AnnData, as scanpy's tools do.
            warnings.simplefilter("ignore", ImplicitModificationWarning)
            for column, values in {**results, **(other or {})}.items():
                adata.obs[column] = values
            if outside is not None:
                adata.obs[self.outside_column] = outside
            params = {
                **self._params(params, list(results), ratios),
                Params.OTHER_COLUMNS: list(other or {}),
                Params.OUTSIDE: self._outside_record(outside, support),
            }
            adata.uns[self.key_added] = {Uns.PARAMS: params, **tables}
        added_other = (
            f"    {', '.join(map(repr, other))}, per-cell q-values and calls (adata.obs)\n" if other else ""
        )
        logger.info(
            f"{self.tool.name}: added\n    {', '.join(map(repr, results))}, per-cell log-ratios (adata.obs)\n"
            f"{added_other}"
            f"    {self.key_added!r}, params and {', '.join(map(repr, tables))} (adata.uns)"
        )
        return adata if self.options.copy else None

    def _outside(self, scored: np.ndarray, support: MeasuredSupport | None) -> np.ndarray | None:
        """Which scored cells lie outside the training data (None for a model without a recorded support)."""
        if support is None and self.model.support is None:
            logger.info(
                f"{self.tool.name}: the model records no support (scratio 0.1); cells are not flagged"
            )
            return None
        outside = np.zeros(len(scored), dtype=bool)
        if scored.any() and support is not None:
            outside[scored] = support.support.outside(support.log_likelihood[scored])
        elif scored.any():
            cells = self.x if scored.all() else self.x[scored]  # no copy of every cell
            outside[scored] = self.model.outside_training_data(cells, **self.options.placement.keywords())
        if outside.any():
            warnings.warn(
                f"{int(outside.sum())} of {int(scored.sum())} scored cells lie outside the training data (their "
                "unconditional likelihood is far below that of every held-out cell): their log-ratios extrapolate "
                f"the model. They are marked in `adata.obs[{self.outside_column!r}]`.",
                UserWarning,
                stacklevel=5,  # the user, the public tool, its body, write, here
            )
        return outside

    def _outside_record(
        self, outside: np.ndarray | None, support: MeasuredSupport | None
    ) -> dict[str, Any] | None:
        if outside is None:
            return None
        return {
            "column": self.outside_column,
            "n_cells": int(outside.sum()),
            "threshold": (self.model.support if support is None else support.support).threshold,
            "likelihood": UNCONDITIONAL if support is None else support.likelihood,
        }

    def _params(
        self, params: Mapping[str, Any], columns: list[str], ratios: Mapping[str, str]
    ) -> dict[str, Any]:
        record = self.model.record
        top = ("n_steps", "batch_size", "final_loss")
        scoring = {
            **self.options.scoring,
            **{
                f"{name}_used": value
                for name, value in divergence_for(self.model, self.options.divergence).items()
            },
            **self.options.placement.record(self.model.device),
        }
        return {
            Params.TOOL: self.tool.name,
            **params,
            Params.COLUMNS: columns,
            Params.RATIOS: [ratios[column] for column in columns],
            "use_rep": record.pop("use_rep"),
            "n_pcs": _n_pcs_record(self.options.n_pcs if self.options.model is None else self.model.n_pcs),
            "n_dims": record.pop("n_dims"),
            "scaling": record.pop("scaling"),
            "random_state": record.pop("random_state"),
            "model_condition_keys": record.pop("condition_keys"),
            "schedule": record.pop("schedule"),
            "network": record.pop("network"),
            **{k: record.pop(k, None) for k in top},
            "training": record,
            "solver": scoring.pop("solver"),
            "scoring": scoring,
            "scratio_version": __version__,
        }


def _n_pcs_record(n_pcs: int | str | None) -> int | str:
    """``n_pcs`` as asked for, writable to ``.h5ad`` (``"all"`` for ``None``)."""
    return "all" if n_pcs is None else n_pcs if n_pcs == AUTO_N_PCS else int(n_pcs)


def _written_by_scratio(adata: AnnData) -> set[str]:
    """The ``uns`` keys and ``obs`` columns that a scratio tool wrote (recorded in its params)."""
    names = set()
    for key, result in adata.uns.items():
        params = result.get(Uns.PARAMS) if isinstance(result, Mapping) else None
        if isinstance(params, Mapping) and params.get(Params.TOOL) in TOOLS:
            names.add(key)
            names.update(params.get(Params.COLUMNS, ()))
            names.update(params.get(Params.OTHER_COLUMNS, ()))
            if isinstance(params.get(Params.OUTSIDE), Mapping):
                names.add(params[Params.OUTSIDE]["column"])
    return names


def summarise(
    values: np.ndarray, by: Mapping[str, np.ndarray], stats: Sequence[str] = ("n_cells", "mean", "mean_abs")
) -> pd.DataFrame:
    """Long table of ``stats`` of ``values`` per combination of ``by`` (NaN cells skipped).

    ``stats`` are among ``"n_cells"``, ``"mean"``, ``"median"``, ``"mean_abs"``. Group columns
    hold strings so that the table writes to ``.h5ad``.
    """
    frame = pd.DataFrame({name: np.asarray(v).astype(str) for name, v in by.items()})
    frame["value"] = np.asarray(values, dtype=np.float64)
    frame = frame[np.isfinite(frame["value"])]
    frame["abs"] = frame["value"].abs()
    grouped = frame.groupby(list(by), sort=True)
    functions = {
        "n_cells": lambda: grouped["value"].size(),
        "mean": lambda: grouped["value"].mean(),
        "median": lambda: grouped["value"].median(),
        "mean_abs": lambda: grouped["abs"].mean(),
    }
    table = pd.DataFrame({stat: functions[stat]() for stat in stats}).reset_index()
    table.columns = [str(c) for c in table.columns]
    if "n_cells" in table:
        table["n_cells"] = table["n_cells"].astype(np.int64)
    return table
