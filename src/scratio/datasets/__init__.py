"""Simulated and semi-synthetic data with a known ground truth, and the metrics that score against it."""

from ._designs import batch_effect_design, combination_design, donor_design, replicate_design
from ._gaussian import mutual_information_pair, shifted_gaussians
from ._semisynthetic import da_metrics, leiden_clusters, pbmc68k_da, semi_synthetic_da

__all__ = [
    "batch_effect_design",
    "combination_design",
    "da_metrics",
    "donor_design",
    "leiden_clusters",
    "mutual_information_pair",
    "pbmc68k_da",
    "replicate_design",
    "semi_synthetic_da",
    "shifted_gaussians",
]
