"""Simulated datasets with known answers for tests, tutorials and benchmarks."""

from ._designs import batch_effect_design, combination_design, donor_design

__all__ = ["batch_effect_design", "combination_design", "donor_design"]
