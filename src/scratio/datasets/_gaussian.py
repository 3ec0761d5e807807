"""Gaussian simulators with a closed-form log-likelihood ratio per cell (method.md, section 5)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from scratio._docs import doc_params

#: The end of the parameters and the start of the Returns section of the Gaussian simulators.
SIMULATED_RETURNS = """\
random_state
    Seed of the draw.

Returns
-------
AnnData without genes whose ``obsm["X_pca"]`` is the simulated embedding (not a PCA of
anything; the name makes it the default ``use_rep`` of :mod:`scratio.tl`), with"""


def _check_n_obs(n_obs: int) -> None:
    if n_obs < 2:
        raise ValueError(f"`n_obs` must be at least 2 (one cell per condition), got {n_obs}.")


def _half_mask(n_obs: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask selecting ``n_obs // 2`` cells at random positions."""
    half = np.arange(n_obs) < n_obs // 2
    # Shuffled so that slicing the first cells (e.g. for a train/test split) keeps both conditions.
    return rng.permutation(half)


def _simulated_adata(
    x: np.ndarray,
    in_first: np.ndarray,
    categories: Sequence[str],
    true_log_ratio: np.ndarray,
    simulation: dict,
) -> AnnData:
    """AnnData with the embedding in ``obsm["X_pca"]``; ``in_first`` marks the cells of ``categories[0]``."""
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(
                np.where(in_first, categories[0], categories[1]), categories=list(categories)
            ),
            "true_log_ratio": true_log_ratio,
        },
        index=pd.Index([f"cell_{i}" for i in range(len(x))]),
    )
    return AnnData(obs=obs, obsm={"X_pca": x.astype(np.float32)}, uns={"simulation": simulation})


@doc_params(simulated_returns=SIMULATED_RETURNS)
def shifted_gaussians(
    n_obs: int = 4000,
    n_dims: int = 10,
    *,
    loc: float = 1.0,
    direction: Sequence[float] | np.ndarray | None = None,
    random_state: int = 0,
) -> AnnData:
    """Two Gaussian conditions, one shifted, with the exact log-ratio per cell.

    Half of the cells are drawn from ``N(m, I)`` (condition ``"shifted"``), half from
    ``N(0, I)`` (condition ``"reference"``), with mean ``m = loc * direction``. For every cell

        ``log p(x | shifted) / p(x | reference) = m . x - |m|^2 / 2``,

    which is ``loc * sum(x) - n_dims * loc^2 / 2`` for the default direction ``1_d``.
    The mean of this log-ratio over the shifted cells is ``KL = |m|^2 / 2``.

    Parameters
    ----------
    n_obs
        Number of cells; ``n_obs // 2`` are shifted.
    n_dims
        Dimension of the embedding.
    loc
        Scale of the shift.
    direction
        Direction of the shift, a vector of length ``n_dims``; defaults to all ones. For example
        ``direction=np.full(30, 2 / np.sqrt(30))`` with ``n_dims=30`` gives ``|m| = 2``.
    {simulated_returns}

    ``obs["condition"]``
        Categorical, categories ``["reference", "shifted"]``.
    ``obs["true_log_ratio"]``
        ``log p(x | shifted) / p(x | reference)`` per cell.
    ``uns["simulation"]``
        ``name``, ``mean`` (the vector ``m``), ``loc``, ``kl`` and ``random_state``.

    Examples
    --------
    >>> adata = sr.datasets.shifted_gaussians(1000, 5, loc=2.0)
    >>> adata.obs.groupby("condition", observed=True)["true_log_ratio"].mean()
    """
    _check_n_obs(n_obs)
    if n_dims < 1:
        raise ValueError(f"`n_dims` must be at least 1, got {n_dims}.")
    if direction is None:
        direction = np.ones(n_dims)
    direction = np.asarray(direction, dtype=np.float64)
    if direction.shape != (n_dims,):
        raise ValueError(
            f"`direction` must be a vector of length `n_dims` = {n_dims}, got shape {direction.shape}."
        )
    mean = loc * direction
    rng = np.random.default_rng(random_state)
    is_shifted = _half_mask(n_obs, rng)
    x = rng.standard_normal((n_obs, n_dims)) + np.where(is_shifted[:, None], mean, 0.0)
    kl = float(mean @ mean / 2)
    simulation = {
        "name": "shifted_gaussians",
        "mean": mean,
        "loc": float(loc),
        "kl": kl,
        "random_state": random_state,
    }
    return _simulated_adata(x, ~is_shifted, ["reference", "shifted"], x @ mean - kl, simulation)


@doc_params(simulated_returns=SIMULATED_RETURNS)
def mutual_information_pair(
    n_obs: int = 4000,
    n_dims: int = 20,
    *,
    rho: float | None = None,
    random_state: int = 0,
) -> AnnData:
    """Correlated and independent Gaussians whose log-ratio has mean equal to a known mutual information.

    Half of the cells are drawn from ``p = N(0, Sigma)`` (condition ``"p"``), where ``Sigma`` has
    ``n_dims / 2`` diagonal blocks ``[[1, rho], [rho, 1]]`` over the coordinate pairs
    ``(0, 1), (2, 3), ...``; half from ``q = N(0, I)`` (condition ``"q"``). The mutual
    information between the two halves of each pair, summed over blocks, is
    ``KL(p || q) = -(n_dims / 4) log(1 - rho^2)``, which is ``n_dims / 4`` for the default
    ``rho = sqrt(1 - e^-1)``. Per block,

        ``log p/q = -(x1^2 + x2^2 - 2 rho x1 x2) / (2 (1 - rho^2)) + (x1^2 + x2^2) / 2 - log(1 - rho^2) / 2``.

    Parameters
    ----------
    n_obs
        Number of cells; ``n_obs // 2`` are drawn from ``p``.
    n_dims
        Dimension of the embedding, even.
    rho
        Correlation within each block, in ``(-1, 1)``; defaults to ``sqrt(1 - e^-1)``.
    {simulated_returns}

    ``obs["condition"]``
        Categorical, categories ``["p", "q"]``.
    ``obs["true_log_ratio"]``
        ``log p(x) / q(x)`` per cell; its mean over the ``"p"`` cells estimates the mutual information.
    ``uns["simulation"]``
        ``name``, ``rho``, ``mutual_information`` and ``random_state``.

    Examples
    --------
    >>> adata = sr.datasets.mutual_information_pair(2000, 40)
    >>> adata.uns["simulation"]["mutual_information"]
    10.0
    """
    _check_n_obs(n_obs)
    if n_dims < 2 or n_dims % 2:
        raise ValueError(f"`n_dims` must be a positive even number (pairs of coordinates), got {n_dims}.")
    if rho is None:
        rho = float(np.sqrt(1 - np.exp(-1)))
    if not -1 < rho < 1:
        raise ValueError(f"`rho` must lie strictly between -1 and 1, got {rho}.")
    rng = np.random.default_rng(random_state)
    is_p = _half_mask(n_obs, rng)
    x = rng.standard_normal((n_obs, n_dims))
    # Second coordinate of each pair: rho * first + sqrt(1 - rho^2) * independent noise.
    x[is_p, 1::2] = rho * x[is_p, 0::2] + np.sqrt(1 - rho**2) * x[is_p, 1::2]
    first, second = x[:, 0::2], x[:, 1::2]
    squares = first**2 + second**2
    log_det = np.log1p(-(rho**2))
    per_block = -(squares - 2 * rho * first * second) / (2 * (1 - rho**2)) + squares / 2 - log_det / 2
    simulation = {
        "name": "mutual_information_pair",
        "rho": float(rho),
        "mutual_information": float(-(n_dims / 4) * log_det),
        "random_state": random_state,
    }
    return _simulated_adata(x, is_p, ["p", "q"], per_block.sum(axis=1), simulation)
