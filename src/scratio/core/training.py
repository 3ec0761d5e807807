"""The training run: every training default in :class:`TrainingOptions`, the Lightning run in :func:`train_flow`.

Lightning loads inside :func:`train_flow`, not at import: scoring a saved model does not need it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import signal
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scratio._settings import logger, settings

from .network import ConditionalFlowNet
from .ode import PRECISIONS, Solver
from .paths import GaussianPath

#: Held-out cells are capped: the validation loss is computed on all of them at every check.
MAX_VALIDATION_CELLS = 4096
#: Fewer held-out cells than this cannot tell memorising from learning: train on all cells.
MIN_VALIDATION_CELLS = 16


@dataclass(frozen=True)
class TrainingOptions:
    """Every option of a training run, each default stated once.

    Parameters
    ----------
    n_steps
        Optimisation steps (per device). By default half the number of cells, between 400
        and 3000: a density ratio between a few hundred cells per condition degrades with
        long training as each condition's density starts to memorise its own cells.
    batch_size
        Cells per step and device, drawn with replacement.
    lr
        Peak learning rate of AdamW, reached after a linear warm-up and followed by a cosine
        decay to zero.
    weight_decay
        AdamW's weight decay.
    warmup_steps
        Steps of the linear warm-up (at most half of ``n_steps``).
    p_drop
        Probability of dropping each condition key of each cell to null, which teaches
        the marginal fields (``p(x | label)``, ``p(x)``) used as denominators.
    ema_decay
        Keep an exponential moving average of the weights (e.g. ``0.999``) and use it
        instead of the best validated weights. The decay warms up as
        ``min(ema_decay, (1 + step) / (10 + step))`` so that the random initial weights
        leave the average.
    score_weight
        Weight of the score loss against the velocity loss.
    validation_fraction
        Share of cells held out (at most 4096) to measure the flow-matching loss every
        ``check_every`` steps with fixed noise. The weights with the lowest held-out loss are
        kept, which stops a small dataset from being memorised (its cells would then score
        as typical of their own condition only). ``0`` trains on every cell for ``n_steps``.
    check_every
        Steps between two validation checks.
    patience
        Stop after this many checks without improvement (``None``: never stop early).
    precision
        ``"32-true"`` or ``"bf16-mixed"``, passed to :class:`lightning.pytorch.Trainer`:
        ``"bf16-mixed"`` takes the network's matrix products in bfloat16 (with float32 weights),
        faster on processors with bfloat16 matrix units.
    accelerator, devices, strategy
        Passed to :class:`lightning.pytorch.Trainer`; e.g. ``devices=4, strategy="ddp"``.
    trainer_kwargs
        Further :class:`~lightning.pytorch.Trainer` arguments.
    """

    n_steps: int | None = None
    batch_size: int = 2048
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    p_drop: float = 0.25
    ema_decay: float | None = None
    score_weight: float = 1.0
    validation_fraction: float = 0.1
    check_every: int = 100
    patience: int | None = 10
    precision: str = Solver.precision  # scoring's default, so that a model is scored as it was trained
    accelerator: str = "auto"
    devices: int | str | Sequence[int] = "auto"
    strategy: Any = "auto"
    trainer_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = {
            "n_steps": self.n_steps is None or self.n_steps >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "p_drop": 0 <= self.p_drop < 1,
            "ema_decay": self.ema_decay is None or 0 < self.ema_decay < 1,
            "validation_fraction": 0 <= self.validation_fraction < 1,
            "check_every": self.check_every >= 1,
            "precision": self.precision in PRECISIONS,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(f"Invalid training options: {values}. See `scratio.core.TrainingOptions`.")

    @classmethod
    def from_kwargs(cls, **kwargs) -> TrainingOptions:
        """Options from keywords: this class's fields, and any other :class:`~lightning.pytorch.Trainer` argument.

        A keyword that is neither is a :class:`TypeError` naming the valid ones, before any
        training starts.
        """
        own = {f.name for f in fields(cls)} - {"trainer_kwargs"}
        trainer_kwargs = {k: v for k, v in kwargs.items() if k not in own}
        if trainer_kwargs:
            import lightning as L

            known = set(inspect.signature(L.Trainer).parameters) - {"self"}
            unknown = sorted(set(trainer_kwargs) - known)
            if unknown:
                raise TypeError(
                    f"Unknown training options {unknown}. Valid: {sorted(own)}, "
                    "or any argument of `lightning.pytorch.Trainer`."
                )
        return cls(**{k: v for k, v in kwargs.items() if k in own}, trainer_kwargs=trainer_kwargs)

    def steps_for(self, n_cells: int) -> int:
        """``n_steps``, or its default for ``n_cells`` cells: half of them, between 400 and 3000."""
        return self.n_steps if self.n_steps is not None else int(np.clip(n_cells // 2, 400, 3000))

    def validation_size(self, n_cells: int) -> int:
        """Cells held out of ``n_cells``: ``validation_fraction`` of them, at most 4096, 0 below 16."""
        n = min(int(round(self.validation_fraction * n_cells)), MAX_VALIDATION_CELLS)
        return n if n >= MIN_VALIDATION_CELLS else 0

    def split(self, n_cells: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the training and the held-out cells among ``n_cells``, drawn from ``seed``."""
        order = np.random.default_rng(seed).permutation(n_cells)
        n_validation = self.validation_size(n_cells)
        return order[n_validation:], order[:n_validation]


@dataclass(frozen=True)
class TrainingRecord:
    """What a training run did: its options, its outcome and its loss curve (JSON-serialisable)."""

    n_steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    p_drop: float
    ema_decay: float | None
    score_weight: float
    final_loss: float
    loss_history: list[float]
    record_every: int
    n_devices: int
    steps_trained: int
    n_validation: int
    validation_fraction: float
    best_validation_loss: float | None
    best_step: int | None
    precision: str = PRECISIONS[0]  # absent from the records of 0.1 models, trained in float32

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict (the ``training`` entry of a saved model's ``config.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> TrainingRecord:
        """Inverse of :meth:`to_dict`."""
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing = sorted(required - set(record))
        if missing:
            raise ValueError(f"The training record lacks {missing}; the saved model is incomplete.")
        return cls(**{f.name: record[f.name] for f in fields(cls) if f.name in record})


def train_flow(
    network: ConditionalFlowNet,
    path: GaussianPath,
    x: torch.Tensor,
    codes: torch.Tensor,
    options: TrainingOptions,
    *,
    seed: int,
) -> TrainingRecord:
    """Fit ``network`` in place by flow matching on ``x`` (standardised cells) with per-cell ``codes``.

    Splits off the held-out cells, fits the network's base field (if any) to the training
    cells, builds the loaders, the early stopping and a quiet Lightning trainer, trains, and
    leaves the network on the CPU in evaluation mode with the best validated (or averaged)
    weights.
    """
    from lightning.pytorch.callbacks import EarlyStopping

    from .flow_matching import FixedValidationBatch, FlowMatchingModule, RandomBatches, WeightAverage

    n_steps = options.steps_for(len(x))
    train_cells, validation_cells = options.split(len(x), seed)
    n_validation = len(validation_cells)
    if network.base is not None:
        network.base.fit(
            x[train_cells], codes[train_cells], path,
            held_out_x=x[validation_cells], held_out_codes=codes[validation_cells],
        )  # fmt: skip
    batches = RandomBatches(
        x, codes, torch.from_numpy(train_cells), batch_size=options.batch_size, n_batches=n_steps, seed=seed
    )
    module = FlowMatchingModule(network, path, options, max_steps=n_steps, seed=seed)
    trainer_kwargs = dict(options.trainer_kwargs)
    callbacks = list(trainer_kwargs.pop("callbacks", []))
    if options.ema_decay is not None:
        callbacks.append(WeightAverage(options.ema_decay))
    validation_loader = None
    if n_validation:
        held_out = FixedValidationBatch(
            x[validation_cells],
            codes[validation_cells],
            null_codes=network.conditions.null_codes(1),
            p_drop=options.p_drop,
            seed=seed,
        )
        validation_loader = torch.utils.data.DataLoader(held_out, batch_size=None)
        trainer_kwargs.setdefault("val_check_interval", min(options.check_every, n_steps))
        if options.patience is not None:
            callbacks.append(
                EarlyStopping("val_loss", patience=options.patience, check_on_train_epoch_end=False)
            )
    else:
        trainer_kwargs.setdefault("limit_val_batches", 0)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    with quiet_lightning():
        trainer = quiet_trainer(
            max_steps=n_steps,
            accelerator=options.accelerator,
            devices=options.devices,
            strategy=options.strategy,
            precision=options.precision,
            callbacks=callbacks,
            **trainer_kwargs,
        )
        device_kind = trainer.accelerator.__class__.__name__.removesuffix("Accelerator").lower()
        faster = (
            ' This processor has bfloat16 matrix units (AMX): `precision="bf16-mixed"` takes about half '
            'the time, with nearly the same results (see "How it works").'
            if device_kind == "cpu" and options.precision == PRECISIONS[0] and cpu_has_bf16_matrix_units()
            else ""
        )
        logger.info(
            f"Training RatioFlow on {trainer.num_devices} {device_kind} device(s): {len(train_cells)} cells "
            f"({n_validation} held out), {x.shape[1]} dims, up to {n_steps} steps of {options.batch_size}.{faster}"
        )
        network.train()
        with _interruptible(trainer):
            trainer.fit(module, loader, validation_loader)
    network.cpu().eval()  # a spawning strategy loads the trained weights back into this network
    history = module.loss_history.cpu().numpy()
    record = TrainingRecord(
        n_steps=n_steps,
        batch_size=options.batch_size,
        lr=options.lr,
        weight_decay=options.weight_decay,
        warmup_steps=options.warmup_steps,
        p_drop=options.p_drop,
        ema_decay=options.ema_decay,
        score_weight=options.score_weight,
        final_loss=float(module.smoothed_loss),
        loss_history=[float(v) for v in history[np.isfinite(history)]],
        record_every=module.record_every,
        n_devices=trainer.num_devices,
        steps_trained=int(trainer.global_step),
        n_validation=n_validation,
        validation_fraction=options.validation_fraction,
        best_validation_loss=float(module.best_validation_loss) if n_validation else None,
        best_step=int(module.best_step) if n_validation else None,
        precision=options.precision,
    )
    kept = (
        f"; kept step {record.best_step} (held-out loss {record.best_validation_loss:.4f})"
        if n_validation
        else ""
    )
    logger.info(f"Trained RatioFlow for {record.steps_trained} steps: loss {record.final_loss:.4f}{kept}.")
    return record


@functools.cache
def cpu_has_bf16_matrix_units() -> bool:
    """Whether this CPU has bfloat16 matrix units (Intel AMX), read from Linux's ``/proc/cpuinfo``."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return False
    flags = next(
        (line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []
    )
    return "amx_bf16" in flags


def quiet_trainer(*, callbacks: Sequence[Any] = (), **kwargs):
    """A Lightning trainer without logger, checkpoints, summaries or banner lines.

    Its processes tear their process group down at exit
    (:class:`~scratio.core.flow_matching.ProcessGroupTeardown`).
    """
    import lightning as L
    from lightning.pytorch.callbacks import ProgressBar

    from .flow_matching import ProcessGroupTeardown, StepProgressBar

    kwargs.setdefault("enable_progress_bar", settings.shows_progress_bars)
    callbacks = [*callbacks, ProcessGroupTeardown()]
    if kwargs["enable_progress_bar"] and not any(isinstance(c, ProgressBar) for c in callbacks):
        # One bar over the steps (Lightning's own count "epochs" and nest a bar per validation).
        callbacks.append(StepProgressBar())
    return L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        max_epochs=-1,
        callbacks=callbacks,
        **kwargs,
    )


@contextlib.contextmanager
def _interruptible(trainer):
    """Let Ctrl+C during ``trainer.fit`` raise :class:`KeyboardInterrupt`, and keep Ctrl+C working after it.

    Lightning answers a :class:`KeyboardInterrupt` by ignoring SIGINT from then on and calling
    ``exit(1)``: a notebook would see ``SystemExit`` and could not be interrupted again.
    """
    main_thread = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        yield
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt("Training was interrupted; the model is left untrained.") from None
        raise
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)


#: Lightning's loggers of banner lines (devices, ranks, the distributed set-up).
LIGHTNING_BANNERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
    "lightning.fabric",
)


@contextlib.contextmanager
def quiet_lightning():
    """Lightning's banner lines held back and its warnings about single-process loaders dropped, for one run."""
    with warnings.catch_warnings(), _lightning_says_only_warnings():
        ignore_lightning_warnings()
        yield


def ignore_lightning_warnings() -> None:
    """Drop Lightning's warnings about single-process loaders and our hooks' return values.

    Inside :func:`quiet_lightning`, or in a process that Lightning started (which does not inherit
    the filters of the calling process).
    """
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*predict_dataloader.*|.*val_dataloader.*")
    warnings.filterwarnings("ignore", ".*predict returned None.*")
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")  # Lightning vs torch 2.13


@contextlib.contextmanager
def _lightning_says_only_warnings():
    """Hold Lightning's banner lines (devices, ranks) back during one run, then restore its loggers."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_BANNERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
