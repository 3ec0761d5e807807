"""How a model reads an AnnData: registered once, then the single reader, encoder and compatibility check.

In the spirit of scvi-tools' ``AnnDataManager``: :meth:`Registration.register` reads and checks
the representation and the condition columns once; afterwards every read of cells, every
encoding of conditions and every check of another AnnData goes through the registration,
which is saved with the model. Its messages speak of "the model" and take the caller's
``fix``, so they never assume who is calling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ._validation import (
    MAX_ROBUST_Z,
    check_categories,
    check_extremes,
    check_variance,
    column_moments,
    get_categorical,
    get_representation,
    nonfinite_rows,
)

#: A condition: each registered key maps to one category, to a per-cell sequence of categories, or to
#: ``None`` (null, marginalised); keys left out are null.
Condition = Mapping[str, Any]

#: How the representation is scaled before training (see :class:`Registration`).
SCALINGS = ("per_dimension", "global")


@dataclass(frozen=True)
class RegisteredCells:
    """The cells of the registered AnnData, read once: representation and per-cell condition codes."""

    x: np.ndarray
    codes: np.ndarray


@dataclass(frozen=True, eq=False)
class Registration:
    """The representation, its standardisation and the categories of each condition key.

    Parameters
    ----------
    use_rep
        Key of the representation in ``adata.obsm`` (``"X"``: ``adata.X``).
    n_pcs
        Only the first ``n_pcs`` columns are used (``None``: all).
    categories
        The categories (strings) of each condition key, in the network's order.
    mean, scale
        Standardisation, ``(x - mean) / scale``, one entry per dimension.
    scaling
        How ``scale`` was set (one of :data:`SCALINGS`): ``"per_dimension"``, each
        dimension's standard deviation; ``"global"``, one number for all, the root mean
        variance, which keeps the representation's geometry.
    """

    use_rep: str
    n_pcs: int | None
    categories: dict[str, list[str]]
    mean: np.ndarray
    scale: np.ndarray
    scaling: str = "per_dimension"

    @classmethod
    def register(
        cls,
        adata: AnnData,
        use_rep: str,
        condition_keys: Sequence[str],
        *,
        n_pcs: int | None = None,
        min_cells: int = 1,
        scaling: str = "per_dimension",
    ) -> tuple[Registration, RegisteredCells]:
        """Read and check ``adata`` once; return the registration and the cells it read.

        Raises a :class:`KeyError` or :class:`ValueError` naming the key and the fix for a
        missing representation or column, NaN or inf, zero variance, a single category or
        categories with fewer than ``min_cells`` cells, or an unknown ``scaling``.
        """
        if scaling not in SCALINGS:
            raise ValueError(f"Unknown scaling {scaling!r}; choose one of {list(SCALINGS)}.")
        x = get_representation(adata, use_rep)
        if n_pcs is not None:
            if not 1 <= n_pcs <= x.shape[1]:
                raise ValueError(f"`n_pcs` must lie in [1, {x.shape[1]}] for {use_rep!r}, got {n_pcs}.")
            x = x[:, :n_pcs]
        mean, std = column_moments(x)
        check_variance(std, len(x), use_rep)
        check_extremes(x, use_rep, adata.obs_names)
        values = {key: get_categorical(adata, key) for key in condition_keys}
        categories = {key: check_categories(v, key, min_cells=min_cells) for key, v in values.items()}
        if scaling == "global":
            std = np.full_like(std, np.sqrt(np.mean(np.square(std, dtype=np.float64))))
        registration = cls(
            use_rep=use_rep,
            n_pcs=n_pcs,
            categories=categories,
            mean=mean.astype(np.float32),
            scale=np.where(std > 0, std, 1.0).astype(np.float32),
            scaling=scaling,
        )
        codes = np.zeros((len(x), len(values)), dtype=np.int64)
        for j, column in enumerate(values.values()):
            codes[:, j] = column.codes
        return registration, RegisteredCells(x, codes)

    # ---------------------------------------------------------------- what was registered
    @property
    def condition_keys(self) -> list[str]:
        """The registered condition keys, in the network's order."""
        return list(self.categories)

    @property
    def n_dims(self) -> int:
        """Dimension of the (cut) representation."""
        return len(self.mean)

    @property
    def log_scale(self) -> float:
        """``sum(log scale)``: a density in the original units is ``p(z) / prod(scale)``."""
        return float(np.log(self.scale.astype(np.float64)).sum())

    def key(self, key: str | None) -> str:
        """``key``, checked to be registered; ``None`` names the only key."""
        if key is None:
            if len(self.categories) != 1:
                raise ValueError(f"Name the condition key; the model has {self.condition_keys}.")
            return self.condition_keys[0]
        if key not in self.categories:
            raise KeyError(f"Condition key {key!r} is not registered; the model knows {self.condition_keys}.")
        return key

    # ---------------------------------------------------------------- reading cells
    def representation(self, data: AnnData | np.ndarray) -> np.ndarray:
        """The registered representation of ``data`` (an AnnData or a cells x dims array), float32."""
        if isinstance(data, AnnData):
            x = get_representation(data, self.use_rep)
        else:
            x = np.asarray(data, dtype=np.float32)
            if x.ndim != 2 or len(nonfinite_rows(x)):
                raise ValueError("Pass a finite 2-D array of cells x dimensions, or an AnnData.")
        if self.n_pcs is not None and x.shape[1] >= self.n_pcs:
            x = x[:, : self.n_pcs]
        if x.shape[1] != self.n_dims:
            raise ValueError(
                f"Representation has {x.shape[1]} dimensions but the model was trained on {self.n_dims} "
                f"({self.use_rep!r})."
            )
        self._check_range(x)
        return x

    def _check_range(self, x: np.ndarray, block: int = 65536) -> None:
        """Refuse cells so far from the training cells that the network would overflow."""
        for start in range(0, len(x), block):
            z = np.abs(self.standardise(x[start : start + block])).max(axis=1)
            far = np.flatnonzero(z > MAX_ROBUST_Z)
            if len(far):
                raise ValueError(
                    f"{len(far)}+ cells lie more than {MAX_ROBUST_Z:g} standard deviations from the training "
                    f"cells (first: row {start + far[0]}, {z[far[0]]:.3g}); their scores would not be finite. "
                    "Remove them or fix the representation."
                )

    def standardise(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / scale``, float32, in one new array."""
        z = x - self.mean
        z /= self.scale
        return z

    # ---------------------------------------------------------------- conditions
    def encode(self, condition: Condition | None, n: int) -> np.ndarray:
        """Integer codes ``(n, n_keys)`` of a condition; unnamed keys are null.

        ``condition`` maps a registered key to one category (every cell), to ``None`` (null),
        or to a per-cell sequence of categories of length ``n``. One category for every cell
        is a read-only view, with no memory per cell.
        """
        constant = np.array([len(c) for c in self.categories.values()], dtype=np.int64)
        per_cell = {}
        for key, value in (condition or {}).items():
            self.key(key)
            if value is None:
                continue
            j = self.condition_keys.index(key)
            known = self.categories[key]
            if np.ndim(value) == 0:
                if str(value) not in known:
                    raise ValueError(f"Unknown category {str(value)!r} for key {key!r}. Categories: {known}.")
                constant[j] = known.index(str(value))
                continue
            values = np.asarray(value).astype(str)
            if len(values) != n:
                raise ValueError(f"Per-cell condition for {key!r} has {len(values)} entries for {n} cells.")
            lookup = pd.Index(known).get_indexer(values)
            if (lookup < 0).any():
                unknown = sorted({str(v) for v in values[lookup < 0]})
                raise ValueError(f"Unknown categories {unknown} for key {key!r}. Categories: {known}.")
            per_cell[j] = lookup
        if not per_cell:
            return np.broadcast_to(constant, (n, len(constant)))
        codes = np.tile(constant, (n, 1))
        for j, lookup in per_cell.items():
            codes[:, j] = lookup
        return codes

    # ---------------------------------------------------------------- other data
    def cells(
        self,
        adata: AnnData,
        keys: Sequence[str] | None = None,
        *,
        use_rep: str | None = None,
        fix: str = "retrain the model on this data",
    ) -> RegisteredCells:
        """Check ``adata`` against the registration and read its representation and codes once.

        ``adata`` must have the representation (``use_rep``, when given, must be the registered
        one) with the registered dimension; every key in ``keys`` (default: all) must be
        registered and present, and its column may only hold known categories. Registered keys
        not in ``keys`` are null (marginalised) in the codes. A :class:`KeyError` or
        :class:`ValueError` otherwise, ending with ``fix``.
        """
        if use_rep is not None and use_rep != self.use_rep:
            raise ValueError(
                f"The model was trained on use_rep={self.use_rep!r}, not {use_rep!r}. "
                f"Pass use_rep={self.use_rep!r}, or {fix}."
            )
        keys = self.condition_keys if keys is None else list(keys)
        missing = [k for k in keys if k not in self.categories]
        if missing:
            raise ValueError(
                f"The model was trained on condition keys {self.condition_keys}, not on {missing}. "
                f"Pass a model trained on these keys, or {fix}."
            )
        x = self.representation(adata)
        columns = {}
        for key in keys:
            if key not in adata.obs.columns:
                raise KeyError(f"Condition key {key!r} of the model is missing from `adata.obs`.")
            values = get_categorical(adata, key)
            known = self.categories[key]
            unknown = sorted(set(map(str, values.categories)) - set(known))
            if unknown:
                raise ValueError(
                    f"`adata.obs[{key!r}]` has categories {unknown} the model was not trained on "
                    f"(it knows {known}). Subset the AnnData to known categories, or {fix}."
                )
            columns[key] = np.asarray(values).astype(str)
        return RegisteredCells(x, self.encode(columns, len(x)))

    # ---------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (the registration part of a saved model's ``config.json``)."""
        return {
            "use_rep": self.use_rep,
            "n_pcs": self.n_pcs,
            "categories": self.categories,
            "n_dims": self.n_dims,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "scaling": self.scaling,
        }

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Registration:
        """Inverse of :meth:`to_dict`, with the shapes and values checked."""
        registration = cls(
            use_rep=str(config["use_rep"]),
            n_pcs=config.get("n_pcs"),
            categories={str(k): [str(c) for c in v] for k, v in config["categories"].items()},
            mean=np.asarray(config["mean"], dtype=np.float32),
            scale=np.asarray(config["scale"], dtype=np.float32),
            scaling=str(config.get("scaling", "per_dimension")),  # models saved before the option
        )
        n_dims = int(config["n_dims"])
        problems = []
        if registration.mean.shape != (n_dims,) or registration.scale.shape != (n_dims,):
            problems.append(f"`mean` and `scale` must have {n_dims} entries")
        if not (np.isfinite(registration.mean).all() and np.isfinite(registration.scale).all()):
            problems.append("`mean` and `scale` must be finite")
        if not (registration.scale > 0).all():
            problems.append("`scale` must be positive")
        for key, known in registration.categories.items():
            if len(known) < 2 or len(set(known)) != len(known):
                problems.append(f"the categories of {key!r} must be two or more distinct names")
        if problems:
            raise ValueError(f"The saved model's configuration is invalid: {'; '.join(problems)}.")
        return registration
