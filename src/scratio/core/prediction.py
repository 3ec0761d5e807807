"""Scoring blocks of rows on one device in this process, or through Lightning's prediction loop.

A *block scorer* is any picklable callable ``score(network, start, stop, device) -> Tensor``
that returns the values of rows ``start:stop`` (one row per cell, on any device). The rows are
cut into the same blocks whatever the number of processes: each process scores a contiguous
share of the blocks, and the shares are summed into one output in the original order (every row
is written by exactly one process, the others hold zeros there), so the numbers do not depend on
how many processes scored them.

Lightning loads only when the prediction loop is asked for, not for the default one-device call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from scratio._settings import logger, progress_bar

from .training import quiet_lightning, quiet_trainer

#: ``score(network, start, stop, device)``: the values of rows ``start:stop``.
BlockScorer = Callable[[torch.nn.Module, int, int, torch.device], torch.Tensor]


@dataclass(frozen=True)
class ScoringDevices:
    """Where cells are scored, each default stated once.

    Parameters
    ----------
    accelerator
        ``None`` (default): on the device the network is on (see :meth:`scratio.RatioFlow.to`),
        in this process, without Lightning. Else a :class:`lightning.pytorch.Trainer` accelerator
        (``"cpu"``, ``"gpu"``, ``"auto"``, ...), and the cells are scored by Lightning's prediction
        loop. With ``devices``, ``strategy`` or ``num_nodes`` set and no accelerator, that of the
        network's device.
    devices
        Devices (processes) per node that share the cells, as in
        :class:`~lightning.pytorch.Trainer`: a number, a list of device indices, or ``"auto"``.
        Each scores a contiguous share of the blocks of ``batch_size`` cells; the results come
        back in the original order, the same numbers as on one device.
    strategy
        Lightning's strategy for several devices: ``"ddp"`` (a script, relaunched once per
        device), ``"ddp_spawn"`` (started processes; works from a script or a notebook on CPU),
        ``"ddp_fork"`` / ``"ddp_notebook"`` (forked processes; no copy of the cells), or a
        strategy object.
    num_nodes
        Machines, each with ``devices`` devices (a cluster launcher such as SLURM starts them).
    """

    accelerator: str | None = None
    devices: int | str | Sequence[int] = 1
    strategy: Any = "auto"
    num_nodes: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.num_nodes, int) or self.num_nodes < 1:
            raise ValueError(f"`num_nodes` must be a positive integer, got {self.num_nodes!r}.")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The keywords, in order."""
        return tuple(f.name for f in fields(cls))

    def keywords(self) -> dict[str, Any]:
        """The options as keywords of a scoring method."""
        return {name: getattr(self, name) for name in self.names()}

    @property
    def in_process(self) -> bool:
        """Whether every block is scored in this process on the network's device (the defaults)."""
        return self == ScoringDevices()

    def check(self) -> None:
        """Raise Lightning's error for options it would refuse (e.g. no GPU), before any work.

        Builds and drops a :class:`~lightning.pytorch.Trainer`; nothing to check in process.
        """
        if not self.in_process:
            with quiet_lightning():
                _trainer(self, torch.device("cpu"))

    def record(self, network_device: torch.device) -> dict[str, Any]:
        """The options as written to an ``.h5ad`` (no ``None``, the strategy by name)."""
        strategy = self.strategy if isinstance(self.strategy, str) else type(self.strategy).__name__
        devices = self.devices if isinstance(self.devices, int | str) else [int(d) for d in self.devices]
        return {
            "accelerator": self.accelerator or network_device.type,
            "devices": devices,
            "strategy": strategy,
            "num_nodes": self.num_nodes,
        }


class RowBlocks(Dataset):
    """The blocks ``(start, stop)`` of ``block_size`` rows out of ``n_rows``, or one share of them.

    With ``world_size`` shares, share ``rank`` holds a contiguous run of about
    ``n_blocks / world_size`` blocks, the same blocks as in one share. A share without any block
    holds one empty block ``(n_rows, n_rows)``, so that every process reaches the end of the loop.

    Parameters
    ----------
    n_rows
        Rows to cover.
    block_size
        Rows per block (the last block may hold fewer).
    rank
        Which share (the process's rank).
    world_size
        Number of shares (processes).
    """

    def __init__(self, n_rows: int, block_size: int, *, rank: int = 0, world_size: int = 1):
        if block_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {block_size}.")
        self.n_rows, self.block_size = n_rows, block_size
        n_blocks = -(-n_rows // block_size)
        self.blocks = range(rank * n_blocks // world_size, (rank + 1) * n_blocks // world_size)

    def __len__(self) -> int:
        return max(len(self.blocks), 1)

    def __getitem__(self, i: int) -> tuple[int, int]:
        if not self.blocks:
            if i != 0:
                raise IndexError(i)
            return self.n_rows, self.n_rows
        start = self.blocks[i] * self.block_size  # an IndexError past the last block
        return start, min(start + self.block_size, self.n_rows)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return (self[i] for i in range(len(self)))

    @property
    def n_cells(self) -> int:
        """Rows in this share."""
        return sum(stop - start for start, stop in self)


def score_rows(
    network: torch.nn.Module,
    score: BlockScorer,
    n_rows: int,
    *,
    block_size: int,
    width: int | None = None,
    devices: ScoringDevices = ScoringDevices(),
    desc: str = "scoring",
) -> np.ndarray:
    """Values of every row, in row order, block after block.

    With the default ``devices``, block after block on the network's device in this process;
    else through Lightning's prediction loop with those devices (:class:`ScoringDevices`),
    each process scoring its share of the same blocks (:class:`RowBlocks`).

    Parameters
    ----------
    network
        The network the scores come from (moved to each process's device).
    score
        ``score(network, start, stop, device)``: the values of rows ``start:stop`` as a tensor.
    n_rows
        Number of rows.
    block_size
        Rows per call of ``score``.
    width
        Values per row; ``None`` for one.
    devices
        Where to score.
    desc
        Label of the progress bar.

    Returns
    -------
    ``float32`` array of shape ``(n_rows,)`` or ``(n_rows, width)``.
    """
    if n_rows == 0:
        raise ValueError("No cells to score: the data has 0 rows.")
    shape = (n_rows,) if width is None else (n_rows, width)
    if devices.in_process:
        device = next(network.parameters()).device
        blocks = RowBlocks(n_rows, block_size)
        output = np.empty(shape, dtype=np.float32)
        bar = progress_bar(total=n_rows, desc=desc, unit="cell")
        for start, stop in blocks:
            output[start:stop] = score(network, start, stop, device).cpu().numpy()
            bar.update(stop - start)
        bar.close()
        return output
    return _predict(network, score, shape, block_size=block_size, devices=devices, desc=desc)


def _predict(network, score, shape, *, block_size, devices, desc) -> np.ndarray:
    """Lightning's prediction loop over shares of the blocks; the output comes back in row order."""
    from .flow_matching import BlockPrediction

    home = next(network.parameters()).device
    # Shared memory: processes started by the strategy write their results where this one reads them.
    output = torch.zeros(shape, dtype=torch.float32).share_memory_()
    module = BlockPrediction(network, score, output, block_size=block_size, desc=desc)
    try:
        with quiet_lightning():
            trainer = _trainer(devices, home)
            kind = type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()
            logger.info(
                f"Scoring {shape[0]} cells on {trainer.world_size} {kind} process(es), blocks of {block_size}."
            )
            trainer.predict(module, return_predictions=False)
    finally:
        network.to(home).eval()  # a single-device or relaunched strategy moved it
    return output.numpy()


def _trainer(devices: ScoringDevices, home: torch.device):
    accelerator = devices.accelerator or {"cuda": "gpu"}.get(home.type, home.type)
    return quiet_trainer(
        accelerator=accelerator,
        devices=devices.devices,
        strategy=devices.strategy,
        num_nodes=devices.num_nodes,
        inference_mode=False,
        enable_progress_bar=False,  # the module draws its own bar over the cells
    )
