"""Checks on user input that run before any training, with messages that say the fix."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse


def get_representation(adata: AnnData, use_rep: str) -> np.ndarray:
    """``adata.obsm[use_rep]`` (or ``adata.X`` for ``"X"``) as a finite float32 array."""
    if use_rep == "X":
        x = adata.X
    elif use_rep in adata.obsm:
        x = adata.obsm[use_rep]
    else:
        available = ", ".join(map(repr, adata.obsm.keys())) or "none"
        raise KeyError(
            f"Representation {use_rep!r} not found in `adata.obsm` (available: {available}). "
            "Compute it first, e.g. `sc.pp.pca(adata)` for 'X_pca', or pass another `use_rep`."
        )
    if sparse.issparse(x):
        x = x.toarray()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(
            f"Representation {use_rep!r} must be a 2-D array with at least one column, got shape {x.shape}."
        )
    rows = nonfinite_rows(x)
    if len(rows):
        raise ValueError(
            f"Representation {use_rep!r} has NaN or inf in {len(rows)} cells (first: {list(adata.obs_names[rows[:3]])}). "
            "Remove those cells or recompute the embedding."
        )
    return x


def nonfinite_rows(x: np.ndarray, block: int = 65536) -> np.ndarray:
    """Indices of the rows of ``x`` with NaN or inf, checked in blocks (a full mask costs a byte per entry)."""
    rows = [
        start + np.flatnonzero(~np.isfinite(x[start : start + block]).all(axis=1))
        for start in range(0, len(x), block)
    ]
    return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)


def check_variance(std: np.ndarray, n_cells: int, use_rep: str) -> None:
    """Reject a representation without any variance, given the standard deviation of each column."""
    if n_cells < 2 or not np.any(std > 0):
        raise ValueError(
            f"Representation {use_rep!r} has zero variance: every cell has the same coordinates. "
            "Pass an embedding that varies across cells."
        )


def is_whole_number(value) -> bool:
    """Whether ``value`` is a Python or numpy integer (``True`` and ``False`` are not)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_finite_number(value) -> bool:
    """Whether ``value`` is a finite Python or numpy real number (``True`` and ``False`` are not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and bool(np.isfinite(value))


def get_categorical(adata: AnnData, key: str) -> pd.Categorical:
    """``adata.obs[key]`` as a categorical without missing values; strings and numbers are accepted."""
    if key not in adata.obs.columns:
        raise KeyError(
            f"Key {key!r} not found in `adata.obs`. Available columns: {', '.join(map(repr, adata.obs.columns))}. "
            "Pass one of them or add the annotation to `adata.obs` first."
        )
    column = adata.obs[key]
    values = (
        column.values
        if isinstance(column.dtype, pd.CategoricalDtype)
        else pd.Categorical(column.astype(str) if column.dtype == bool else column)
    )
    if pd.isna(values).any():
        raise ValueError(
            f"`adata.obs[{key!r}]` has {int(pd.isna(values).sum())} missing values. Fill them or drop those cells."
        )
    return values.remove_unused_categories()


def check_categories(
    values: pd.Categorical, key: str, *, min_cells: int = 1, required: Sequence[str] = ()
) -> list[str]:
    """Categories of one condition key, checked for count and size; returns them as strings."""
    categories = [str(c) for c in values.categories]
    check_required(categories, key, required)
    if len(categories) < 2:
        raise ValueError(
            f"`adata.obs[{key!r}]` has a single category ({categories}); a ratio needs at least two conditions. "
            "Pass a column with two or more categories, or keep cells of several conditions."
        )
    counts = pd.Series(values).value_counts()
    small = {str(c): int(n) for c, n in counts.items() if n < min_cells}
    if small:
        raise ValueError(
            f"Categories of `adata.obs[{key!r}]` with fewer than {min_cells} cells: {small}. "
            "Merge or drop them, or lower `min_cells`."
        )
    return categories


def check_required(categories: Sequence[str], key: str, required: Sequence[str]) -> None:
    """Raise a :class:`ValueError` naming the first of ``required`` that is not among ``categories``."""
    for category in required:
        if str(category) not in categories:
            raise ValueError(
                f"Category {category!r} not found in `adata.obs[{key!r}]`. Categories: {list(categories)}. "
                "Pass one of these."
            )


#: A value this many robust standard deviations from its column's median is taken for a defect.
MAX_ROBUST_Z = 1e4


def column_moments(x: np.ndarray, block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each column in float64, in blocks (no full-size temporary)."""
    total = np.zeros(x.shape[1])
    for start in range(0, len(x), block):
        total += x[start : start + block].sum(axis=0, dtype=np.float64)
    mean = total / len(x)
    squares = np.zeros(x.shape[1])
    for start in range(0, len(x), block):
        squares += ((x[start : start + block] - mean) ** 2).sum(axis=0)
    return mean, np.sqrt(squares / len(x))


def check_extremes(x: np.ndarray, use_rep: str, obs_names: pd.Index, block: int = 65536) -> None:
    """Reject values that lie more than :data:`MAX_ROBUST_Z` robust standard deviations from their column's median.

    The median and the scaled median absolute deviation come from at most 10,000 evenly spaced
    cells; one such value (a ``1e30`` in an embedding, say) would otherwise dominate the
    column's standard deviation and make the standardisation meaningless.
    """
    sample = x[:: max(1, len(x) // 10_000)].astype(np.float64)
    median = np.median(sample, axis=0)
    scale = 1.4826 * np.median(np.abs(sample - median), axis=0)
    scale = np.where(scale > 0, scale, sample.std(axis=0))
    columns = np.flatnonzero(scale > 0)
    for start in range(0, len(x), block):
        z = np.abs(x[start : start + block, columns] - median[columns]) / scale[columns]
        rows, where = np.nonzero(z > MAX_ROBUST_Z)
        if len(rows):
            column, cells = int(columns[where[0]]), start + rows[where == where[0]]
            raise ValueError(
                f"Representation {use_rep!r} has extreme values: column {column} of cells "
                f"{[str(c) for c in obs_names[cells[:3]]]} lies {z[rows[0], where[0]]:.3g} robust standard "
                f"deviations from the column's median (at most {MAX_ROBUST_Z:g} are accepted). "
                "Remove those cells or fix the embedding."
            )
