"""Per-cell likelihood ratios between conditions from one conditional flow-matching model."""

from __future__ import annotations

import importlib

from ._settings import settings
from ._version import __version__

# torch, lightning and the plotting stack load on first use so that `import scratio` is quick.
_LAZY_MODULES = {
    "tl": "scratio.tl",
    "pl": "scratio.pl",
    "datasets": "scratio.datasets",
    "core": "scratio.core",
}
_LAZY_NAMES = {
    "RatioFlow": "scratio.model",
    "Registration": "scratio._registration",
    "Support": "scratio._support",
}
__all__ = ["RatioFlow", "Registration", "Support", "datasets", "pl", "settings", "tl", "__version__"]


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        return importlib.import_module(_LAZY_MODULES[name])
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module 'scratio' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
