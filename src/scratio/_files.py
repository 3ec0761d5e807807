"""The files of a saved model: ``config.json`` (with a checksum) and ``weights.pt`` (tensors only)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

CONFIG = "config.json"
WEIGHTS = "weights.pt"
CHECKSUM = "sha256"


def write_model_files(
    path: str | Path, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], *, overwrite: bool
) -> None:
    """Write ``state`` to ``weights.pt`` and ``config`` with the checksum of both to ``config.json``."""
    path = Path(path)
    if path.exists() and not overwrite and any(path.iterdir()):
        raise FileExistsError(f"{str(path)!r} exists and is not empty; pass `overwrite=True`.")
    path.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in state.items()}, path / WEIGHTS)
    config = {**config, CHECKSUM: _checksum(config, (path / WEIGHTS).read_bytes())}
    (path / CONFIG).write_text(json.dumps(config, indent=1))


def read_model_files(path: str | Path, *, device: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The configuration and the weights of a saved model, refused if they changed after saving.

    The weights are loaded as tensors only (``weights_only=True``): no code from the files runs.
    Models saved by 0.1 have no checksum.
    """
    path = Path(path)
    config = json.loads((path / CONFIG).read_text())
    weights = (path / WEIGHTS).read_bytes()
    expected = config.pop(CHECKSUM, None)
    if expected is not None and expected != _checksum(config, weights):
        raise ValueError(
            f"The model in {str(path)!r} changed after it was saved: its {CONFIG} or {WEIGHTS} does not "
            "match the checksum written with them. Restore the files as saved, or retrain."
        )
    return config, torch.load(io.BytesIO(weights), map_location=device, weights_only=True)


def _checksum(config: Mapping[str, Any], weights: bytes) -> str:
    """SHA-256 of the configuration (keys sorted) and the weights file."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    digest.update(weights)
    return digest.hexdigest()
