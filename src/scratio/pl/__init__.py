"""Plots of what the :mod:`scratio.tl` tools write; matplotlib and scanpy load on first call."""

from ._ratio import ratio_distributions, ratio_embedding
from ._tables import batch_effect, batch_effect_score, combination_effect, donor_response

__all__ = [
    "batch_effect",  # deprecated name of batch_effect_score, removed in 0.3
    "batch_effect_score",
    "combination_effect",
    "donor_response",
    "ratio_distributions",
    "ratio_embedding",
]
