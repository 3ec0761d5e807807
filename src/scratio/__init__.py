"""Per-cell likelihood ratios between conditions from one conditional flow-matching model."""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from ._settings import settings

try:
    __version__ = version("scratio")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

# torch, lightning and the plotting stack load on first use so that `import scratio` is quick.
_LAZY = {"tl": "scratio.tl", "pl": "scratio.pl", "datasets": "scratio.datasets", "core": "scratio.core"}
__all__ = ["RatioFlow", "datasets", "pl", "settings", "tl", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(_LAZY[name])
    if name == "RatioFlow":
        from .model import RatioFlow

        return RatioFlow
    raise AttributeError(f"module 'scratio' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
