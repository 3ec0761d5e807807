"""Semi-synthetic differential abundance on real cells, and the metrics that score it (method.md, section 5)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from scratio._validation import get_categorical

from ._designs import CONDITIONS


def semi_synthetic_da(
    adata: AnnData,
    cluster_key: str,
    *,
    delta: float,
    da_clusters: Sequence[str] | None = None,
    condition_key: str = "condition",
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Draw a control/treated label per cell with known differential abundance per cluster.

    Each cell is ``"treated"`` with probability 0.5 in unaffected clusters, ``0.5 + delta`` in
    the first DA cluster (enriched in treated cells) and ``0.5 - delta`` in the second
    (depleted). A per-cell log-ratio between treated and control should therefore be positive
    in the first DA cluster, negative in the second and near zero elsewhere.

    Parameters
    ----------
    adata
        Annotated data with a clustering in ``adata.obs[cluster_key]``.
    cluster_key
        Column of ``adata.obs`` with at least three clusters, e.g. from :func:`leiden_clusters`.
    delta
        Strength of the effect, in ``[0, 0.5]``.
    da_clusters
        The enriched and the depleted cluster, in this order; defaults to the second and third
        category of ``cluster_key`` (``"1"`` and ``"2"`` for Leiden clusters).
    condition_key
        Column of ``adata.obs`` to write the labels to.
    random_state
        Seed of the label draw.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy of ``adata`` when ``copy=True``, with

    ``obs[condition_key]``
        Categorical, categories ``["control", "treated"]``.
    ``obs["true_log_odds"]``
        ``log(p / (1 - p))`` of the cell's cluster, where ``p`` is its probability of being
        treated (``±inf`` in the DA clusters when ``delta = 0.5``).
    ``obs["is_da"]``
        Whether the cell is in a DA cluster.
    ``uns["simulation"]``
        ``name``, ``cluster_key``, ``delta``, ``da_clusters``, ``p_treated`` (per cluster) and
        ``random_state``.

    Examples
    --------
    >>> sr.datasets.leiden_clusters(adata, 4)
    >>> sr.datasets.semi_synthetic_da(adata, "leiden", delta=0.3)
    """
    if not 0 <= delta <= 0.5:
        raise ValueError(f"`delta` must lie in [0, 0.5] so that probabilities stay in [0, 1], got {delta}.")
    clusters = get_categorical(adata, cluster_key)
    categories = [str(c) for c in clusters.categories]
    if len(categories) < 3:
        raise ValueError(
            f"`adata.obs[{cluster_key!r}]` has {len(categories)} clusters ({categories}); "
            "semi-synthetic DA needs at least 3 (an enriched, a depleted and an unaffected one)."
        )
    da_clusters = categories[1:3] if da_clusters is None else [str(c) for c in da_clusters]
    if len(da_clusters) != 2 or da_clusters[0] == da_clusters[1]:
        raise ValueError(f"`da_clusters` must name two different clusters, got {da_clusters}.")
    unknown = [c for c in da_clusters if c not in categories]
    if unknown:
        raise ValueError(f"`da_clusters` {unknown} not found in `adata.obs[{cluster_key!r}]`: {categories}.")

    p_treated = dict.fromkeys(categories, 0.5)
    p_treated[da_clusters[0]] = 0.5 + delta
    p_treated[da_clusters[1]] = 0.5 - delta
    p_cell = np.array([p_treated[c] for c in clusters.astype(str)])
    rng = np.random.default_rng(random_state)
    treated = rng.random(len(p_cell)) < p_cell
    with np.errstate(divide="ignore"):  # delta = 0.5 gives log-odds of +-inf, the true value
        true_log_odds = np.log(p_cell) - np.log1p(-p_cell)

    adata = adata.copy() if copy else adata
    adata.obs[condition_key] = pd.Categorical(
        np.where(treated, CONDITIONS[1], CONDITIONS[0]), categories=CONDITIONS
    )
    adata.obs["true_log_odds"] = true_log_odds
    adata.obs["is_da"] = np.isin(np.asarray(clusters.astype(str)), da_clusters)
    adata.uns["simulation"] = {
        "name": "semi_synthetic_da",
        "cluster_key": cluster_key,
        "delta": float(delta),
        "da_clusters": da_clusters,
        "p_treated": p_treated,
        "random_state": random_state,
    }
    return adata if copy else None


def leiden_clusters(
    adata: AnnData,
    n_clusters: int = 4,
    *,
    use_rep: str = "X_pca",
    key_added: str = "leiden",
    random_state: int = 0,
    max_steps: int = 30,
) -> None:
    """Leiden clustering with exactly ``n_clusters`` clusters, by bisection of the resolution.

    Computes a kNN graph with :func:`scanpy.pp.neighbors` on ``use_rep`` unless
    ``adata.uns["neighbors"]`` already holds one (which is then used as is), and runs
    :func:`scanpy.tl.leiden` (``flavor="igraph"``, ``n_iterations=2``, undirected) at a
    resolution found by doubling and bisection.

    Parameters
    ----------
    adata
        Annotated data.
    n_clusters
        Number of clusters wanted.
    use_rep
        Representation for the kNN graph when one has to be computed.
    key_added
        Column of ``adata.obs`` for the clusters; ``uns[key_added]["params"]`` records the
        resolution.
    random_state
        Seed of the graph and of Leiden.
    max_steps
        Most Leiden runs before giving up.

    Returns
    -------
    ``None``; writes ``adata.obs[key_added]`` (categories ``"0"``, ``"1"``, ...).

    Examples
    --------
    >>> sr.datasets.leiden_clusters(adata, 4)
    >>> adata.obs["leiden"].cat.categories.tolist()
    ['0', '1', '2', '3']
    """
    import scanpy as sc

    if not 1 <= n_clusters <= adata.n_obs:
        raise ValueError(
            f"`n_clusters` must lie between 1 and the number of cells ({adata.n_obs}), got {n_clusters}."
        )
    if "neighbors" not in adata.uns:
        sc.pp.neighbors(adata, use_rep=use_rep, random_state=random_state)

    low, high, resolution = 0.0, None, 1.0
    counts = {}
    for _ in range(max_steps):
        sc.tl.leiden(
            adata,
            resolution=resolution,
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=random_state,
            key_added=key_added,
        )
        found = adata.obs[key_added].cat.categories.size
        counts[resolution] = found
        if found == n_clusters:
            return None
        if found > n_clusters:
            high = resolution
        else:
            low = resolution
        resolution = 2 * resolution if high is None else (low + high) / 2
    del adata.obs[key_added], adata.uns[key_added]
    tried = ", ".join(f"{r:.4g}: {n}" for r, n in sorted(counts.items()))
    raise ValueError(
        f"No Leiden resolution gave exactly {n_clusters} clusters after {max_steps} runs "
        f"(resolution: clusters = {tried}). Ask for a neighbouring `n_clusters` or raise `max_steps`."
    )


def pbmc68k_da(delta: float = 0.4, *, random_state: int = 0) -> AnnData:
    """700 PBMCs with a semi-synthetic differential abundance between control and treated cells.

    Loads :func:`scanpy.datasets.pbmc68k_reduced` (shipped with scanpy; ``obsm["X_pca"]`` with
    50 PCs and ``obsm["X_umap"]``), splits it into four Leiden clusters with
    :func:`leiden_clusters` (always with seed 0, so the DA clusters are the same for every
    ``delta`` and ``random_state``) and draws labels with :func:`semi_synthetic_da`: cluster
    ``"1"`` enriched, ``"2"`` depleted in treated cells.

    Parameters
    ----------
    delta
        Strength of the effect, in ``[0, 0.5]``.
    random_state
        Seed of the label draw.

    Returns
    -------
    AnnData with ``obs["leiden"]``, ``obs["condition"]``, ``obs["true_log_odds"]``,
    ``obs["is_da"]`` and ``uns["simulation"]``, see :func:`semi_synthetic_da`.

    Examples
    --------
    >>> adata = sr.datasets.pbmc68k_da(0.4)
    >>> sr.tl.differential_abundance(adata, "condition", reference="control", n_pcs=10)
    """
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()
    leiden_clusters(adata, 4, random_state=0)
    semi_synthetic_da(adata, "leiden", delta=delta, random_state=random_state)
    return adata


def da_metrics(
    scores: Sequence[float] | np.ndarray,
    is_da: Sequence[bool] | np.ndarray,
    true_log_odds: Sequence[float] | np.ndarray,
) -> dict[str, float]:
    """Score per-cell log-ratios against a semi-synthetic differential abundance truth.

    Parameters
    ----------
    scores
        Estimated log-ratio (treated vs control) per cell, finite.
    is_da
        Whether each cell is in a DA cluster, e.g. ``adata.obs["is_da"]``.
    true_log_odds
        True log-odds of being treated per cell, e.g. ``adata.obs["true_log_odds"]``.

    Returns
    -------
    Dictionary with

    ``"pr_auc"``
        Average precision (area under the precision-recall curve,
        ``sklearn.metrics.average_precision_score``) of ``|scores|`` as a detector of DA cells;
        equal to the share of DA cells for an uninformative score.
    ``"nar"``
        Mean ``|scores|`` in DA cells divided by mean ``|scores|`` in the other cells
        (``inf`` if the other cells all score 0).
    ``"csp"``
        Share of DA cells whose score has the sign of their true log-odds.

    Examples
    --------
    >>> da_metrics(adata.obs["scratio_da"], adata.obs["is_da"], adata.obs["true_log_odds"])
    {'pr_auc': 0.93, 'nar': 4.1, 'csp': 0.97}
    """
    from sklearn.metrics import average_precision_score

    scores = np.asarray(scores, dtype=np.float64)
    is_da = np.asarray(is_da, dtype=bool)
    true_log_odds = np.asarray(true_log_odds, dtype=np.float64)
    if not scores.ndim == 1 or not scores.shape == is_da.shape == true_log_odds.shape:
        raise ValueError(
            "`scores`, `is_da` and `true_log_odds` must be 1-D with one value per cell, got shapes "
            f"{scores.shape}, {is_da.shape} and {true_log_odds.shape}."
        )
    if not np.isfinite(scores).all():
        raise ValueError(f"`scores` has {int((~np.isfinite(scores)).sum())} NaN or inf values.")
    if is_da.all() or not is_da.any():
        raise ValueError("`is_da` must mark some cells as DA and some as not; the metrics compare the two.")
    magnitude = np.abs(scores)
    return {
        "pr_auc": float(average_precision_score(is_da, magnitude)),
        "nar": float(magnitude[is_da].mean() / magnitude[~is_da].mean()),
        "csp": float(np.mean(np.sign(scores[is_da]) == np.sign(true_log_odds[is_da]))),
    }
