"""Flow-matching training: whole-batch sampling and the Lightning module."""

from __future__ import annotations

import math

import lightning as L
import torch
from torch.utils.data import Dataset

from .network import ConditionalFlowNet
from .paths import GaussianPath


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


class RandomBatches(Dataset):
    """``n_batches`` random mini-batches drawn with replacement, one whole batch per item.

    Indexing a tensor once per batch avoids the per-sample collation of a standard
    DataLoader (1.5-2x slower here). Batch ``i`` of rank ``r`` depends only on
    ``(seed, r, i)``, so training is reproducible and each distributed rank sees its own data.
    """

    def __init__(self, x: torch.Tensor, codes: torch.Tensor, *, batch_size: int, n_batches: int, seed: int):
        self.x, self.codes = x, codes
        self.batch_size, self.n_batches, self.seed = batch_size, n_batches, seed

    def __len__(self) -> int:
        return self.n_batches

    def __getitem__(self, i: int):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + _rank() * 7_919 + i)
        index = torch.randint(len(self.x), (self.batch_size,), generator=generator)
        return self.x[index], self.codes[index]


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
    max_steps
        Total optimisation steps (sets the cosine decay).
    lr, weight_decay
        AdamW settings; the learning rate warms up linearly over ``warmup_steps`` and then
        follows a cosine decay to zero.
    p_drop
        Probability of replacing each condition key of each sample by null.
    ema_decay
        If given, an exponential moving average of the weights replaces them at the end. Its
        decay warms up as ``min(ema_decay, (1 + step) / (10 + step))``.
    score_weight
        Weight of the score loss.
    seed
        Seed of the noise, times and condition dropout (offset by the distributed rank).
    """

    def __init__(
        self,
        network: ConditionalFlowNet,
        path: GaussianPath,
        *,
        max_steps: int,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        p_drop: float = 0.25,
        ema_decay: float | None = None,
        score_weight: float = 1.0,
        seed: int = 0,
        record_every: int = 10,
    ):
        super().__init__()
        self.network, self.path = network, path
        self.max_steps, self.lr, self.weight_decay = max_steps, lr, weight_decay
        self.warmup_steps = min(warmup_steps, max_steps // 2)
        self.p_drop, self.ema_decay, self.score_weight = p_drop, ema_decay, score_weight
        self.seed, self.record_every = seed, record_every
        # Buffers travel back from distributed workers with the weights.
        self.register_buffer("loss_history", torch.full((max_steps // record_every + 1,), float("nan")))
        self.register_buffer("smoothed_loss", torch.tensor(float("nan")))
        self.register_buffer("best_validation_loss", torch.tensor(float("inf")))
        self.register_buffer("best_step", torch.tensor(-1))
        self._best_state: dict[str, torch.Tensor] | None = None
        self._generator: torch.Generator | None = None
        self._ema: list[torch.Tensor] | None = None

    # A t drawn too close to 1 makes the noise-on-path velocity target blow up.
    T_MARGIN = 1e-4

    def on_fit_start(self) -> None:  # noqa: D102
        self._generator = torch.Generator(device=self.device).manual_seed(self.seed + 104_729 * (1 + _rank()))
        if self.ema_decay is not None:
            self._ema = [p.detach().clone() for p in self.network.parameters()]

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
        return velocity_loss + self.score_weight * score_loss

    def training_step(self, batch, batch_idx):  # noqa: D102
        x1, codes = batch
        codes = self.network.conditions.drop(codes, self.p_drop, generator=self._generator)
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
        x1, codes, x0, t = batch
        self.log("val_loss", self.loss(x1, codes, x0, t), prog_bar=True, logger=False, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """Keep the weights with the lowest held-out loss (restored at the end of training)."""
        loss = self.trainer.callback_metrics.get("val_loss")
        if loss is not None and loss < self.best_validation_loss:
            self.best_validation_loss.fill_(float(loss))
            self.best_step.fill_(self.global_step)
            self._best_state = {k: v.detach().clone() for k, v in self.network.state_dict().items()}

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:  # noqa: D102
        if self._ema is not None:
            torch._foreach_lerp_(
                self._ema,
                [p.detach() for p in self.network.parameters()],
                1 - self.ema_decay_at(self.global_step),
            )

    def ema_decay_at(self, step: int) -> float:
        """Decay of the weight average after ``step`` steps: ``min(ema_decay, (1 + step) / (10 + step))``.

        The warm-up lets the average forget the random initial weights, which a constant 0.999
        would keep at 0.999^2000 = 13% of it after 2,000 steps.
        """
        return min(self.ema_decay, (1 + step) / (10 + step))

    def on_train_end(self) -> None:
        """Use the averaged weights (with ``ema_decay``), else the best validated ones if any."""
        if self._ema is not None:
            with torch.no_grad():
                for p, averaged in zip(self.network.parameters(), self._ema, strict=True):
                    p.copy_(averaged)
            self._ema = None
        elif self._best_state is not None:
            self.network.load_state_dict(self._best_state)
            self._best_state = None

    def configure_optimizers(self):  # noqa: D102
        optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=self.lr, weight_decay=self.weight_decay, foreach=True
        )
        warmup, total = self.warmup_steps, max(self.max_steps, 1)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) / max(total - warmup, 1)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
