"""Lightning pieces: whole-batch sampling, flow matching, weight averaging, block prediction, teardown."""

from __future__ import annotations

import atexit
import functools
import logging
from typing import TYPE_CHECKING

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import Dataset

from scratio._settings import progress_bar, settings

from .network import ConditionalFlowNet
from .paths import GaussianPath

#: Output elements summed across processes at a time (moved to the device for the sum).
REDUCE_CHUNK = 1 << 22

if TYPE_CHECKING:
    from .training import TrainingOptions


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _rank() -> int:
    return torch.distributed.get_rank() if _distributed() else 0


def _destroy_process_group() -> None:
    if _distributed():
        torch.distributed.destroy_process_group()


@functools.cache
def _destroy_process_group_at_exit() -> None:
    atexit.register(_destroy_process_group)


class RandomBatches(Dataset):
    """``n_batches`` random mini-batches drawn with replacement, one whole batch per item.

    Indexing a tensor once per batch avoids the per-sample collation of a standard
    DataLoader (1.5-2x slower here). Batch ``i`` of rank ``r`` depends only on
    ``(seed, r, i)``, so training is reproducible and each distributed rank sees its own data.
    Batches are drawn from the rows ``cells`` of ``x`` without copying them.
    """

    def __init__(
        self,
        x: torch.Tensor,
        codes: torch.Tensor,
        cells: torch.Tensor,
        *,
        batch_size: int,
        n_batches: int,
        seed: int,
    ):
        self.x, self.codes, self.cells = x, codes, cells
        self.batch_size, self.n_batches, self.seed = batch_size, n_batches, seed

    def __len__(self) -> int:
        return self.n_batches

    def __getitem__(self, i: int):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + _rank() * 7_919 + i)
        rows = self.cells[torch.randint(len(self.cells), (self.batch_size,), generator=generator)]
        return self.x[rows], self.codes[rows]


#: Held-out rows whose loss is computed together.
VALIDATION_CHUNK = 2048


class FixedValidationBatch(Dataset):
    """Held-out cells with noise, times and condition dropout drawn once, so the loss is comparable.

    Each cell appears ``n_draws`` times with independent draws; the single item is the whole set.
    """

    def __init__(self, x: torch.Tensor, codes: torch.Tensor, *, null_codes: torch.Tensor, p_drop: float,
                 n_draws: int = 8, seed: int = 0):  # fmt: skip
        generator = torch.Generator().manual_seed(seed + 7)
        self.x1 = x.repeat(n_draws, 1)
        codes = codes.repeat(n_draws, 1)
        dropped = torch.rand(codes.shape, generator=generator) < p_drop
        self.codes = torch.where(dropped, null_codes.expand_as(codes), codes)
        self.x0 = torch.randn(self.x1.shape, generator=generator)
        self.t = torch.rand(len(self.x1), generator=generator)

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int):
        return self.x1, self.codes, self.x0, self.t


class FlowMatchingModule(L.LightningModule):
    """Velocity and score regression on a Gaussian path, with per-key condition dropout.

    The loss is ``|v - u_t|^2 + score_weight * |sigma_t s + x0|^2`` (per dimension): the
    score term is the ``sigma_t^2``-weighted denoising loss, which never divides by
    ``sigma_t``.

    Parameters
    ----------
    network
        The conditional network.
    path
        The Gaussian probability path.
    options
        Learning rate and its schedule, condition dropout, score weight, weight averaging.
    max_steps
        Total optimisation steps (sets the cosine decay).
    seed
        Seed of the noise, times and condition dropout (offset by the distributed rank).
    record_every
        Steps between two entries of the loss history.
    """

    def __init__(
        self,
        network: ConditionalFlowNet,
        path: GaussianPath,
        options: TrainingOptions,
        *,
        max_steps: int,
        seed: int = 0,
        record_every: int = 10,
    ):
        super().__init__()
        self.network, self.path, self.options = network, path, options
        self.max_steps, self.seed, self.record_every = max_steps, seed, record_every
        # Buffers travel back from distributed workers with the weights.
        self.register_buffer("loss_history", torch.full((max_steps // record_every + 1,), float("nan")))
        self.register_buffer("smoothed_loss", torch.tensor(float("nan")))
        self.register_buffer("best_validation_loss", torch.tensor(float("inf")))
        self.register_buffer("best_step", torch.tensor(-1))
        self._best_state: dict[str, torch.Tensor] | None = None
        self._generator: torch.Generator | None = None

    # A t drawn too close to 1 makes the noise-on-path velocity target blow up.
    T_MARGIN = 1e-4

    def on_fit_start(self) -> None:  # noqa: D102
        self._generator = torch.Generator(device=self.device).manual_seed(self.seed + 104_729 * (1 + _rank()))

    def loss(
        self,
        x1: torch.Tensor,
        codes: torch.Tensor,
        x0: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
    ):
        """Flow-matching loss of one batch (conditions already dropped or not); draws ``x0``, ``t`` if not given."""
        g = self._generator
        if x0 is None:
            x0 = torch.randn(x1.shape, generator=g, device=x1.device, dtype=x1.dtype)
            t = torch.rand(len(x1), generator=g, device=x1.device, dtype=x1.dtype)
        t = self.T_MARGIN + (1 - 2 * self.T_MARGIN) * t
        x_t, target_velocity, sigma = self.path.sample(x1, x0, t)
        velocity, score = self.network(x_t, t, codes)
        velocity_loss = (velocity - target_velocity).pow(2).mean()
        score_loss = (sigma * score + x0).pow(2).mean()
        return velocity_loss + self.options.score_weight * score_loss

    def training_step(self, batch, batch_idx):  # noqa: D102
        x1, codes = batch
        codes = self.network.conditions.drop(codes, self.options.p_drop, generator=self._generator)
        loss = self.loss(x1, codes)
        detached = loss.detach()
        smoothed = torch.where(
            self.smoothed_loss.isnan(), detached, 0.98 * self.smoothed_loss + 0.02 * detached
        )
        self.smoothed_loss.copy_(smoothed)
        if self.global_step % self.record_every == 0:
            self.loss_history[self.global_step // self.record_every] = smoothed
            # Lightning's logging costs about a millisecond: once per record, not per step.
            self.log("loss", smoothed, prog_bar=True, logger=False)
        return loss

    def validation_step(self, batch, batch_idx):  # noqa: D102
        # In chunks: a base's fields for thousands of rows at once outgrow the caches (2-4 times slower).
        chunks = zip(*(part.split(VALIDATION_CHUNK) for part in batch), strict=True)
        loss = sum(self.loss(*chunk) * len(chunk[0]) for chunk in chunks) / len(batch[0])
        self.log("val_loss", loss, prog_bar=True, logger=False, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """Keep the weights with the lowest held-out loss (restored at the end of training)."""
        loss = self.trainer.callback_metrics.get("val_loss")
        if loss is not None and loss < self.best_validation_loss:
            self.best_validation_loss.fill_(float(loss))
            self.best_step.fill_(self.global_step)
            self._best_state = {k: v.detach().clone() for k, v in self.network.state_dict().items()}

    def on_train_end(self) -> None:
        """Restore the weights with the lowest held-out loss (unless a weight average replaces them)."""
        if self._best_state is not None and self.options.ema_decay is None:
            self.network.load_state_dict(self._best_state)
        self._best_state = None

    def configure_optimizers(self):  # noqa: D102
        options = self.options
        optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=options.lr, weight_decay=options.weight_decay, foreach=True
        )
        warmup = min(options.warmup_steps, self.max_steps // 2)
        decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(self.max_steps - warmup, 1))
        scheduler = decay
        if warmup:
            # (step + 1) / warmup over the first `warmup` steps, then the cosine decay to zero
            ramp = torch.optim.lr_scheduler.LinearLR(
                optimizer, start_factor=1 / warmup, end_factor=1.0, total_iters=max(warmup - 1, 1)
            )
            scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, decay], milestones=[warmup])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class WeightAverage(L.Callback):
    """Exponential moving average of the network's weights, which replace them at the end of training.

    The decay after ``k`` steps is ``min(decay, (1 + k) / (10 + k))``: the warm-up lets the
    average forget the random initial weights, which a constant 0.999 would keep at
    0.999^2000 = 13% of it after 2,000 steps.

    Parameters
    ----------
    decay
        The decay once warmed up, e.g. ``0.999``.
    """

    def __init__(self, decay: float):
        self.decay = decay
        self._average: AveragedModel | None = None

    def decay_at(self, step: int) -> float:
        """Decay of the update after ``step`` steps."""
        return min(self.decay, (1 + step) / (10 + step))

    def _update(
        self, averaged: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor
    ) -> torch.Tensor:
        return torch.lerp(averaged, current, 1 - self.decay_at(int(n_averaged)))

    def on_fit_start(self, trainer, pl_module) -> None:  # noqa: D102
        self._average = AveragedModel(pl_module.network, avg_fn=self._update)
        self._average.update_parameters(pl_module.network)  # the first update copies the initial weights

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        self._average.update_parameters(pl_module.network)

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: D102
        with torch.no_grad():
            for weight, averaged in zip(
                pl_module.network.parameters(), self._average.module.parameters(), strict=True
            ):
                weight.copy_(averaged)
        self._average = None


class ProcessGroupTeardown(L.Callback):
    """Tears the process group down when the process exits, while the interpreter is still whole.

    Lightning does so for NCCL only. A gloo group (CPU processes) left to the interpreter's
    finalisation can abort a process that has finished its work ("terminate called without an
    active exception"): its worker threads outlive the objects they hold. Registered once per
    process, in every process of a distributed run.
    """

    def setup(self, trainer, pl_module, stage: str) -> None:  # noqa: D102
        if _distributed():
            _destroy_process_group_at_exit()


class StepProgressBar(ProgressBar):
    """One bar over the training steps, with the smoothed loss, on stderr; none for validation.

    Lightning's own bars count "epochs" (here one epoch holds every step), print to stdout and
    nest a bar per validation check.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._bar = None

    def disable(self) -> None:  # noqa: D102
        self._enabled = False

    def enable(self) -> None:  # noqa: D102
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: D102
        if self._enabled and trainer.is_global_zero:
            self._bar = progress_bar(total=trainer.max_steps, desc="training", unit="step")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        if self._bar is not None:
            if trainer.global_step % pl_module.record_every == 0:
                self._bar.set_postfix(loss=f"{float(pl_module.smoothed_loss):.4f}", refresh=False)
            self._bar.update(1)

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: D102
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class BlockPrediction(L.LightningModule):
    """Scores this process's share of the row blocks and sums the shares into ``output`` in row order.

    Each process fills its rows of a zero array of the output's size; after the loop the arrays
    are summed across processes (each row is non-zero in one of them only, so the sum is exact)
    and copied into ``output``, which a spawning strategy shares with the calling process.

    Parameters
    ----------
    network
        The network, moved to each process's device by Lightning.
    score
        ``score(network, start, stop, device)``: the values of rows ``start:stop``
        (:data:`~scratio.core.prediction.BlockScorer`).
    output
        The ``(n_rows, ...)`` result, written by every process.
    block_size
        Rows per block.
    desc
        Label of the progress bar (drawn by the first process over its share).
    """

    def __init__(
        self, network: ConditionalFlowNet, score, output: torch.Tensor, *, block_size: int, desc: str
    ):
        super().__init__()
        self.network, self.score, self.output = network, score, output
        self.block_size, self.desc = block_size, desc
        # the caller's settings, for the processes it starts
        self.verbosity, self.show_bar = settings.level, settings.shows_progress_bars
        self._part: torch.Tensor | None = None
        self._bar = None

    def __setstate__(self, state) -> None:
        """Unpickled in a process that a spawning strategy started: as quiet as the calling process."""
        from .training import LIGHTNING_BANNERS, ignore_lightning_warnings

        super().__setstate__(state)
        settings.verbosity, settings.progress_bar = self.verbosity, self.show_bar
        ignore_lightning_warnings()
        for name in LIGHTNING_BANNERS:
            logging.getLogger(name).setLevel(logging.WARNING)

    def predict_dataloader(self):  # noqa: D102
        from .prediction import RowBlocks

        blocks = RowBlocks(
            len(self.output), self.block_size, rank=self.global_rank, world_size=self.trainer.world_size
        )
        return torch.utils.data.DataLoader(blocks, batch_size=None, shuffle=False)

    def on_predict_start(self) -> None:  # noqa: D102
        self._part = torch.zeros_like(self.output)
        if self.global_rank == 0 and self.show_bar:
            share = self.trainer.predict_dataloaders.dataset.n_cells
            world = self.trainer.world_size
            self._bar = progress_bar(
                total=share,
                desc=f"{self.desc}, 1 of {world} processes" if world > 1 else self.desc,
                unit="cell",
            )

    def predict_step(self, batch, batch_idx):  # noqa: D102
        start, stop = (int(b) for b in batch)
        if stop > start:
            self._part[start:stop] = self.score(self.network, start, stop, self.device).cpu()
            if self._bar is not None:
                self._bar.update(stop - start)

    def on_predict_epoch_end(self) -> None:  # noqa: D102
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        part, strategy = self._part.view(-1), self.trainer.strategy
        output = self.output.view(-1)
        for start in range(0, len(part), REDUCE_CHUNK):
            chunk = part[start : start + REDUCE_CHUNK].to(self.device)
            output[start : start + REDUCE_CHUNK] = strategy.reduce(chunk, reduce_op="sum").cpu()
        self._part = None
        # no process tears its process group down while another still reads from it
        strategy.barrier("scratio scores reduced")
