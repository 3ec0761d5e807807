"""Simulated embeddings with a known answer for each ``tl`` tool (batch, combination, donor).

Each simulator returns an AnnData without genes whose ``obsm["X_pca"]`` holds the simulated
embedding, with categorical condition columns in ``obs`` and the ground truth in ``obs``
and ``uns["simulation"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

#: The two conditions of the differential-abundance simulations, reference first.
CONDITIONS = ["control", "treated"]


def _unit_vectors(rng: np.random.Generator, n: int, n_dims: int) -> np.ndarray:
    v = rng.normal(size=(n, n_dims))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _categorical(names: Sequence[str], codes: np.ndarray) -> pd.Categorical:
    """Categories in the given order (e.g. ``"control"`` first)."""
    return pd.Categorical.from_codes(codes, categories=[str(n) for n in names])


def _anndata(x: np.ndarray, obs: dict, simulation: dict, **obsm) -> AnnData:
    frame = pd.DataFrame(obs, index=[f"cell_{i}" for i in range(len(x))])
    adata = AnnData(obs=frame, obsm={"X_pca": x.astype(np.float32), **obsm})
    adata.uns["simulation"] = simulation
    return adata


def batch_effect_design(
    n_cells: int = 2000,
    *,
    n_dims: int = 10,
    n_cell_types: int = 4,
    n_batches: int = 2,
    affected_cell_types: Sequence[int] | None = None,
    shift: float = 3.0,
    separation: float = 6.0,
    random_state: int = 0,
) -> AnnData:
    """Cell types as Gaussian clusters measured in batches, with a batch shift in some types only.

    Cells of type ``k`` are ``N(mu_k, I)`` with centres ``mu_k`` spread by ``separation``.
    Batch ``b >= 1`` moves the cells of the affected types by ``shift`` along a random
    direction of its own; batch 0 and unaffected types are not moved.

    Parameters
    ----------
    n_cells
        Number of cells, spread evenly over cell types and batches at random.
    n_dims
        Dimension of the embedding.
    n_cell_types
        Number of cell types (``"type_0"``, ...).
    n_batches
        Number of batches (``"batch_0"``, ...), at least two.
    affected_cell_types
        Indices of the cell types with a batch shift (default: the first half).
    shift
        Length of the batch shift.
    separation
        Standard deviation of the cluster centres.
    random_state
        Seed.

    Returns
    -------
    AnnData with ``obs["cell_type"]``, ``obs["batch"]`` (categorical), ``obs["batch_affected"]``
    (bool: the cell's type has a batch shift), ``obsm["X_pca"]`` (the measured embedding),
    ``obsm["X_corrected"]`` (the same cells with the shift removed) and
    ``uns["simulation"]`` (``name``, ``affected_cell_types``, ``shift``, ``centers``,
    ``batch_shifts``, ``random_state``).
    """
    if n_batches < 2:
        raise ValueError(f"`n_batches` must be at least 2, got {n_batches}.")
    rng = np.random.default_rng(random_state)
    if affected_cell_types is None:
        affected_cell_types = list(range(max(1, n_cell_types // 2)))
    centers = rng.normal(scale=separation, size=(n_cell_types, n_dims))
    shifts = np.vstack([np.zeros((1, n_dims)), shift * _unit_vectors(rng, n_batches - 1, n_dims)])
    cell_type = rng.integers(n_cell_types, size=n_cells)
    batch = rng.integers(n_batches, size=n_cells)
    corrected = centers[cell_type] + rng.normal(size=(n_cells, n_dims))
    affected = np.isin(cell_type, list(affected_cell_types))
    x = corrected + shifts[batch] * affected[:, None]
    types = np.array([f"type_{k}" for k in range(n_cell_types)])
    obs = {
        "cell_type": _categorical(types, cell_type),
        "batch": _categorical([f"batch_{b}" for b in range(n_batches)], batch),
        "batch_affected": affected,
    }
    simulation = {
        "name": "batch_effect_design",
        "affected_cell_types": [str(t) for t in types[list(affected_cell_types)]],
        "shift": float(shift),
        "centers": centers,
        "batch_shifts": shifts,
        "random_state": random_state,
    }
    return _anndata(x, obs, simulation, X_corrected=corrected.astype(np.float32))


def combination_design(
    n_cells: int = 2000,
    *,
    n_dims: int = 10,
    first: Sequence[str] = ("A", "B"),
    second: Sequence[str] = ("control", "X", "Y", "Z"),
    effects: Mapping[str, float] | None = None,
    control: str = "control",
    separation: float = 4.0,
    random_state: int = 0,
) -> AnnData:
    """Pairs of perturbations where some second drugs shift cells and others do nothing.

    Cells of first drug ``f`` are ``N(mu_f, I)``; a second drug ``s`` moves them by
    ``effects[s]`` along a random direction of its own (``0``: no effect).

    Parameters
    ----------
    n_cells
        Number of cells, spread evenly over the (first, second) pairs at random.
    n_dims
        Dimension of the embedding.
    first
        Names of the first drugs.
    second
        Names of the second drugs, including ``control``.
    effects
        Shift length per second drug (default: 3 for the first two non-control drugs, 0 for
        the rest).
    control
        The second condition meaning "no second drug".
    separation
        Standard deviation of the first drugs' centres.
    random_state
        Seed.

    Returns
    -------
    AnnData with categorical ``obs["drug1"]``, ``obs["drug2"]``, bool ``obs["effect"]`` (the
    cell was shifted) and ``uns["simulation"]`` (``name``, ``control``, ``random_state`` and
    ``truth``, a table with columns ``["first", "second", "shift", "effect"]`` per non-control
    pair).
    """
    if control not in second:
        raise ValueError(f"`second` must include the control {control!r}, got {list(second)}.")
    rng = np.random.default_rng(random_state)
    treatments = [s for s in second if s != control]
    if effects is None:
        effects = {s: (3.0 if i < 2 else 0.0) for i, s in enumerate(treatments)}
    size = np.array([float(effects.get(s, 0.0)) if s != control else 0.0 for s in second])
    centers = rng.normal(scale=separation, size=(len(first), n_dims))
    directions = _unit_vectors(rng, len(second), n_dims)
    i = rng.integers(len(first), size=n_cells)
    j = rng.integers(len(second), size=n_cells)
    x = centers[i] + size[j, None] * directions[j] + rng.normal(size=(n_cells, n_dims))
    truth = pd.DataFrame(
        [
            (f, s, float(size[k]), bool(size[k] > 0))
            for f in first
            for k, s in enumerate(second)
            if s != control
        ],
        columns=["first", "second", "shift", "effect"],
    )
    obs = {"drug1": _categorical(first, i), "drug2": _categorical(second, j), "effect": size[j] > 0}
    simulation = {
        "name": "combination_design",
        "control": control,
        "truth": truth,
        "random_state": random_state,
    }
    return _anndata(x, obs, simulation)


def donor_design(
    n_cells: int = 2000,
    *,
    n_dims: int = 10,
    n_donors: int = 6,
    n_responders: int = 3,
    treatments: Sequence[str] = ("control", "stim"),
    control: str = "control",
    shift: float = 3.0,
    donor_spread: float = 1.0,
    random_state: int = 0,
) -> AnnData:
    """Donors treated or not, where only responder donors' cells shift when treated.

    Cells of donor ``d`` are ``N(mu_d, I)`` with donor baselines ``mu_d`` spread by
    ``donor_spread``; treated cells of responders move by ``shift`` along one direction per
    treatment, treated cells of non-responders do not move.

    Parameters
    ----------
    n_cells
        Number of cells, spread evenly over donors and treatments at random.
    n_dims
        Dimension of the embedding.
    n_donors
        Number of donors (``"donor_0"``, ...).
    n_responders
        The first ``n_responders`` donors respond.
    treatments
        Treatment names, including ``control``.
    control
        The untreated condition.
    shift
        Length of the response.
    donor_spread
        Standard deviation of the donor baselines.
    random_state
        Seed.

    Returns
    -------
    AnnData with categorical ``obs["donor"]``, ``obs["treatment"]``, bool ``obs["responder"]``
    (the cell's donor responds) and ``uns["simulation"]`` (``name``, ``responders``, ``control``,
    ``shift``, ``random_state``).
    """
    if control not in treatments:
        raise ValueError(f"`treatments` must include the control {control!r}, got {list(treatments)}.")
    rng = np.random.default_rng(random_state)
    baselines = rng.normal(scale=donor_spread, size=(n_donors, n_dims))
    directions = _unit_vectors(rng, len(treatments), n_dims)
    d = rng.integers(n_donors, size=n_cells)
    t = rng.integers(len(treatments), size=n_cells)
    responder = d < n_responders
    moved = responder & (np.asarray(treatments)[t] != control)
    x = baselines[d] + shift * directions[t] * moved[:, None] + rng.normal(size=(n_cells, n_dims))
    donors = np.array([f"donor_{k}" for k in range(n_donors)])
    obs = {"donor": _categorical(donors, d), "treatment": _categorical(treatments, t), "responder": responder}
    simulation = {
        "name": "donor_design",
        "responders": [str(v) for v in donors[:n_responders]],
        "control": control,
        "shift": float(shift),
        "random_state": random_state,
    }
    return _anndata(x, obs, simulation)


def replicate_design(
    n_cells: int = 3000,
    *,
    n_dims: int = 10,
    n_states: int = 5,
    n_samples: int = 3,
    expanded_state: int | None = 0,
    fold_change: float = 3.0,
    concentration: float | None = 50.0,
    separation: float = 4.0,
    random_state: int = 0,
) -> AnnData:
    """Control and treated replicate samples of cell states, where one state expands when treated.

    Cells of state ``k`` are ``N(mu_k, I)`` with centres ``mu_k`` spread by ``separation``.
    The states' common proportions are equal; treatment multiplies the weight of
    ``expanded_state`` by ``fold_change`` (then renormalised, so every other state's share
    falls). Each sample draws its own proportions around its condition's from a Dirichlet
    distribution with ``concentration`` (sample-to-sample composition noise, as between
    donors; ``None`` for none), and its cells from those.

    Parameters
    ----------
    n_cells
        Number of cells, spread evenly over the samples.
    n_dims
        Dimension of the embedding.
    n_states
        Number of cell states (``"state_0"``, ...).
    n_samples
        Samples per condition (``"control_0"``, ..., ``"treated_0"``, ...).
    expanded_state
        The state that expands in treated samples; ``None`` for no effect.
    fold_change
        Factor on the expanded state's weight before renormalising.
    concentration
        Dirichlet concentration of the per-sample proportions (larger: less noise).
    separation
        Standard deviation of the state centres.
    random_state
        Seed.

    Returns
    -------
    AnnData with categorical ``obs["condition"]`` (``"control"``, ``"treated"``),
    ``obs["sample"]``, ``obs["state"]``; ``obs["true_log_ratio"]``, the exact
    ``log p(x | treated) / p(x | control)`` of the conditions' expected proportions;
    ``obs["is_da"]`` (bool: the cell is of the expanded state); and ``uns["simulation"]``
    (``name``, ``proportions`` per condition, ``sample_proportions``, ``expanded_state``,
    ``fold_change``, ``concentration``, ``random_state``).
    """
    if n_samples < 1:
        raise ValueError(f"`n_samples` must be at least 1, got {n_samples}.")
    if expanded_state is not None and not 0 <= expanded_state < n_states:
        raise ValueError(f"`expanded_state` must lie in [0, {n_states}), got {expanded_state}.")
    rng = np.random.default_rng(random_state)
    centers = rng.normal(scale=separation, size=(n_states, n_dims))
    control = np.full(n_states, 1 / n_states)
    treated = control.copy()
    if expanded_state is not None:
        treated[expanded_state] *= fold_change
    treated /= treated.sum()
    proportions = np.array([control, treated])
    samples, sample_proportions = [], []
    for condition in range(2):
        for _ in range(n_samples):
            p = proportions[condition]
            sample_proportions.append(
                p if concentration is None else rng.dirichlet(concentration * n_states * p)
            )
            samples.append(condition)
    sample = rng.permutation(np.arange(n_cells) % len(samples))
    state = np.empty(n_cells, dtype=np.int64)
    for s, p in enumerate(sample_proportions):
        state[sample == s] = rng.choice(n_states, size=int((sample == s).sum()), p=p)
    x = centers[state] + rng.normal(size=(n_cells, n_dims))
    condition = np.asarray(samples)[sample]
    # Exact log-ratio of the two conditions' mixtures (the shared normalising constants cancel).
    log_kernel = -0.5 * ((x[:, None, :] - centers[None]) ** 2).sum(axis=2)
    log_p = [np.logaddexp.reduce(log_kernel + np.log(p), axis=1) for p in proportions]
    names = [f"{c}_{i}" for c in CONDITIONS for i in range(n_samples)]
    obs = {
        "condition": _categorical(CONDITIONS, condition),
        "sample": _categorical(names, sample),
        "state": _categorical([f"state_{k}" for k in range(n_states)], state),
        "true_log_ratio": log_p[1] - log_p[0],
        "is_da": state == expanded_state if expanded_state is not None else np.zeros(n_cells, dtype=bool),
    }
    simulation = {
        "name": "replicate_design",
        "proportions": dict(zip(CONDITIONS, proportions, strict=True)),
        "sample_proportions": np.array(sample_proportions),
        "expanded_state": expanded_state,
        "fold_change": float(fold_change),
        "concentration": concentration,
        "random_state": random_state,
    }
    return _anndata(x, obs, simulation)
