"""Simulated and semi-synthetic data with a known ground truth, and the metrics that score against it."""

from ._gaussian import mutual_information_pair, shifted_gaussians
from ._semisynthetic import da_metrics, leiden_clusters, pbmc68k_da, semi_synthetic_da

__all__ = [
    "da_metrics",
    "leiden_clusters",
    "mutual_information_pair",
    "pbmc68k_da",
    "semi_synthetic_da",
    "shifted_gaussians",
]
