"""Analysis tools: one thin function per use case, each composing :class:`~scratio.RatioFlow`.

Each tool trains one conditional flow (or reuses ``model=``), scores cells and writes a
per-cell log-ratio to ``adata.obs[key_added]`` and params and summaries to
``adata.uns[key_added]``, like ``scanpy.tl``.
"""

from ._batch_effect import batch_effect_score
from ._combination_effect import combination_effect
from ._differential_abundance import differential_abundance
from ._donor_response import donor_response

__all__ = ["batch_effect_score", "combination_effect", "differential_abundance", "donor_response"]
