"""``RatioFlow``: one conditional flow on an AnnData embedding, scored as per-cell log-ratios."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from tqdm.auto import tqdm

from . import __version__
from ._settings import logger, settings
from ._validation import check_categories, check_variance, get_categorical, get_representation
from .core import ode
from .core.network import ConditionalFlowNet
from .core.paths import GaussianPath

Condition = Mapping[str, Any]
Data = AnnData | np.ndarray | None

_CONFIG = "config.json"
_WEIGHTS = "weights.pt"


class RatioFlow:
    """A conditional flow-matching model of ``p(x | conditions)`` on ``adata.obsm[use_rep]``.

    One network models the density of cells under every combination of the registered
    condition keys, and under any key left out (*null*, trained by condition dropout). From
    it, :meth:`log_ratio` integrates one ODE per cell that tracks
    ``log p(x | numerator) - log p(x | denominator)``.

    Parameters
    ----------
    adata
        Annotated data; the model keeps a reference for training and default scoring.
    use_rep
        Key of the embedding in ``adata.obsm`` (``"X"`` uses ``adata.X``).
    condition_keys
        Categorical columns of ``adata.obs`` to condition on. Strings, numbers and booleans
        are converted to categories.
    schedule
        ``"deterministic"``, ``"noise_at_data"`` (default) or ``"noise_on_path"``, or a
        :class:`~scratio.core.GaussianPath`.
    s_min, s_path
        Noise at the data and on the path for the named schedules.
    width, n_layers, head_layers, condition_dim, activation
        Network size, see :class:`~scratio.core.ConditionalFlowNet`.
    min_cells
        Fewest cells a category may have.
    n_pcs
        Use only the first ``n_pcs`` columns of the representation (as in
        :func:`scanpy.pp.neighbors`). Densities in fewer dimensions need fewer cells; with a few
        thousand cells, 10-20 principal components are a good start.
    random_state
        Seed of the weights and of training.

    Examples
    --------
    >>> model = sr.RatioFlow(adata, use_rep="X_pca", condition_keys=["treatment"])
    >>> model.train()
    >>> adata.obs["lr"] = model.log_ratio(
    ...     numerator={"treatment": "IFNg"}, denominator={"treatment": "control"}
    ... )
    """

    def __init__(
        self,
        adata: AnnData,
        use_rep: str = "X_pca",
        condition_keys: Sequence[str] | str = (),
        *,
        schedule: str | GaussianPath = "noise_at_data",
        s_min: float = 0.05,
        s_path: float = 0.1,
        width: int = 256,
        n_layers: int = 3,
        head_layers: int = 0,
        condition_dim: int = 16,
        activation: str = "silu",
        min_cells: int = 1,
        n_pcs: int | None = None,
        random_state: int = 0,
    ):
        condition_keys = [condition_keys] if isinstance(condition_keys, str) else list(condition_keys)
        x = get_representation(adata, use_rep)
        if n_pcs is not None:
            if not 1 <= n_pcs <= x.shape[1]:
                raise ValueError(f"`n_pcs` must lie in [1, {x.shape[1]}] for {use_rep!r}, got {n_pcs}.")
            x = x[:, :n_pcs]
        self.n_pcs = n_pcs
        check_variance(x, use_rep)
        self.categories: dict[str, list[str]] = {
            key: check_categories(get_categorical(adata, key), key, min_cells=min_cells)
            for key in condition_keys
        }
        self.adata = adata
        self.use_rep = use_rep
        self.path = GaussianPath.from_schedule(schedule, s_min=s_min, s_path=s_path)
        std = x.std(axis=0)
        self.mean = x.mean(axis=0)
        self.scale = np.where(std > 0, std, 1.0).astype(np.float32)
        self.random_state = random_state
        self.network_kwargs = {
            "width": width, "n_layers": n_layers, "head_layers": head_layers,
            "condition_dim": condition_dim, "activation": activation,
        }  # fmt: skip
        with torch.random.fork_rng():
            torch.manual_seed(random_state)
            self.network = ConditionalFlowNet(
                x.shape[1], [len(c) for c in self.categories.values()], **self.network_kwargs
            )
        self.network.eval()
        self.training_record: dict[str, Any] = {}

    # ---------------------------------------------------------------- registration
    @property
    def condition_keys(self) -> list[str]:
        """The registered condition keys, in the network's order."""
        return list(self.categories)

    @property
    def n_dims(self) -> int:
        """Dimension of the representation."""
        return self.network.n_dims

    @property
    def device(self) -> torch.device:
        """Device the network lives on."""
        return next(self.network.parameters()).device

    @property
    def is_trained(self) -> bool:
        """Whether :meth:`train` has run (or trained weights were loaded)."""
        return bool(self.training_record)

    def __repr__(self) -> str:
        keys = ", ".join(f"{k} ({len(c)})" for k, c in self.categories.items()) or "none"
        state = f"trained {self.training_record['n_steps']} steps" if self.is_trained else "untrained"
        return f"RatioFlow(use_rep={self.use_rep!r}, n_dims={self.n_dims}, conditions: {keys}; {self.path.name}, {state})"

    def encode(self, condition: Condition | None, n: int) -> np.ndarray:
        """Integer codes ``(n, n_keys)`` of a condition; unnamed keys are null.

        ``condition`` maps a registered key to one category (every cell), to ``None`` (null),
        or to a per-cell sequence of categories of length ``n``.
        """
        constant = np.array([len(c) for c in self.categories.values()], dtype=np.int64)
        per_cell = {}
        for key, value in (condition or {}).items():
            if key not in self.categories:
                raise KeyError(
                    f"Condition key {key!r} is not registered; the model knows {self.condition_keys}."
                )
            if value is None:
                continue
            j = self.condition_keys.index(key)
            known = self.categories[key]
            if np.ndim(value) == 0:
                if str(value) not in known:
                    raise ValueError(f"Unknown category {value!r} for key {key!r}. Categories: {known}.")
                constant[j] = known.index(str(value))
                continue
            values = np.asarray(value).astype(str)
            if len(values) != n:
                raise ValueError(f"Per-cell condition for {key!r} has {len(values)} entries for {n} cells.")
            lookup = pd.Index(known).get_indexer(values)
            if (lookup < 0).any():
                unknown = sorted(set(values[lookup < 0]))
                raise ValueError(f"Unknown categories {unknown} for key {key!r}. Categories: {known}.")
            per_cell[j] = lookup
        if not per_cell:  # one row for every cell: a read-only view, no memory per cell
            return np.broadcast_to(constant, (n, len(constant)))
        codes = np.tile(constant, (n, 1))
        for j, lookup in per_cell.items():
            codes[:, j] = lookup
        return codes

    def _representation(self, data: Data) -> np.ndarray:
        if data is None:
            data = self.adata
        if isinstance(data, AnnData):
            x = get_representation(data, self.use_rep)
        else:
            x = np.asarray(data, dtype=np.float32)
            # Checked in blocks: a mask of the whole array would cost a byte per entry.
            if x.ndim != 2 or not all(np.isfinite(x[i : i + 65536]).all() for i in range(0, len(x), 65536)):
                raise ValueError("Pass a finite 2-D array of cells x dimensions, or an AnnData.")
        if self.n_pcs is not None and x.shape[1] >= self.n_pcs:
            x = x[:, : self.n_pcs]
        if x.shape[1] != self.n_dims:
            raise ValueError(
                f"Representation has {x.shape[1]} dimensions but the model was trained on {self.n_dims} "
                f"({self.use_rep!r})."
            )
        return x

    def _standardise(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((x - self.mean) / self.scale).to(self.device)

    # ---------------------------------------------------------------- training
    def train(
        self,
        n_steps: int | None = None,
        *,
        batch_size: int = 2048,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        p_drop: float = 0.25,
        ema_decay: float | None = None,
        score_weight: float = 1.0,
        validation_fraction: float = 0.1,
        check_every: int = 100,
        patience: int | None = 10,
        accelerator: str = "auto",
        devices: int | str | Sequence[int] = "auto",
        strategy: str | Any = "auto",
        **trainer_kwargs,
    ) -> RatioFlow:
        """Fit the velocity and score heads by flow matching through Lightning.

        Parameters
        ----------
        n_steps
            Optimisation steps (per device). By default half the number of cells, between 400
            and 3000: a density ratio between a few hundred cells per condition degrades with
            long training as each condition's density starts to memorise its own cells.
        batch_size
            Cells per step and device, drawn with replacement.
        lr, weight_decay, warmup_steps
            AdamW with linear warm-up and cosine decay.
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
        accelerator, devices, strategy
            Passed to :class:`lightning.pytorch.Trainer`; e.g. ``devices=4, strategy="ddp"``.
        trainer_kwargs
            Further :class:`~lightning.pytorch.Trainer` arguments.

        Returns
        -------
        The model itself, trained.
        """
        # Lightning loads here, not at import: scoring a saved model does not need it.
        from .core.training import FixedValidationBatch, FlowMatchingModule, RandomBatches

        adata = self.adata
        x = torch.from_numpy((self._representation(adata) - self.mean) / self.scale)
        if n_steps is None:
            n_steps = int(np.clip(len(x) // 2, 400, 3000))
        codes = torch.from_numpy(
            self.encode({k: get_categorical(adata, k) for k in self.condition_keys}, len(x))
        )
        n_validation = min(int(round(validation_fraction * len(x))), 4096)
        if n_validation < 16:  # too few cells to tell memorising from learning
            n_validation = 0
        order = np.random.default_rng(self.random_state).permutation(len(x))
        train_cells, validation_cells = order[n_validation:], order[:n_validation]
        batches = RandomBatches(
            x[train_cells],
            codes[train_cells],
            batch_size=batch_size,
            n_batches=n_steps,
            seed=self.random_state,
        )
        module = FlowMatchingModule(
            self.network, self.path, max_steps=n_steps, lr=lr, weight_decay=weight_decay,
            warmup_steps=warmup_steps, p_drop=p_drop, ema_decay=ema_decay, score_weight=score_weight,
            seed=self.random_state,
        )  # fmt: skip
        loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
        validation_loader = None
        if n_validation:
            held_out = FixedValidationBatch(
                x[validation_cells], codes[validation_cells], null_codes=self.network.conditions.null_codes(1),
                p_drop=p_drop, seed=self.random_state,
            )  # fmt: skip
            validation_loader = torch.utils.data.DataLoader(held_out, batch_size=None)
            trainer_kwargs.setdefault("val_check_interval", min(check_every, n_steps))
            if patience is not None:
                from lightning.pytorch.callbacks import EarlyStopping

                stopper = EarlyStopping("val_loss", patience=patience, check_on_train_epoch_end=False)
                trainer_kwargs["callbacks"] = [*trainer_kwargs.get("callbacks", []), stopper]
        else:
            trainer_kwargs.setdefault("limit_val_batches", 0)
        trainer = _quiet_trainer(
            max_steps=n_steps, accelerator=accelerator, devices=devices, strategy=strategy, **trainer_kwargs
        )
        device_kind = trainer.accelerator.__class__.__name__.removesuffix("Accelerator").lower()
        logger.info(
            f"Training RatioFlow on {trainer.num_devices} {device_kind} device(s): {len(train_cells)} cells "
            f"({n_validation} held out), {x.shape[1]} dims, up to {n_steps} steps of {batch_size}."
        )
        self.network.train()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*predict_dataloader.*|.*val_dataloader.*")
            warnings.filterwarnings(
                "ignore", ".*isinstance\\(treespec, LeafSpec\\).*"
            )  # Lightning vs torch 2.13
            trainer.fit(module, loader, validation_loader)
        self.network = module.network.cpu().eval()
        history = module.loss_history.cpu().numpy()
        self.training_record = {
            "n_steps": n_steps, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
            "warmup_steps": warmup_steps, "p_drop": p_drop, "ema_decay": ema_decay,
            "score_weight": score_weight, "final_loss": float(module.smoothed_loss),
            "loss_history": [float(v) for v in history[np.isfinite(history)]],
            "record_every": module.record_every, "n_devices": trainer.num_devices,
            "steps_trained": int(trainer.global_step), "n_validation": n_validation,
            "validation_fraction": validation_fraction,
            "best_validation_loss": float(module.best_validation_loss) if n_validation else None,
            "best_step": int(module.best_step) if n_validation else None,
        }  # fmt: skip
        kept = ""
        if n_validation:
            record = self.training_record
            kept = f"; kept step {record['best_step']} (held-out loss {record['best_validation_loss']:.4f})"
        logger.info(
            f"Trained RatioFlow for {trainer.global_step} steps: loss {self.training_record['final_loss']:.4f}{kept}."
        )
        return self

    # ---------------------------------------------------------------- scoring
    def _stream(self, x: np.ndarray, score, *, batch_size: int, desc: str) -> np.ndarray:
        """Apply ``score(x_batch, index)`` over batches of cells, memory flat in ``len(x)``."""
        if not self.is_trained:
            warnings.warn("Scoring an untrained RatioFlow; call `.train()` first.", stacklevel=3)
        if len(x) == 0:
            raise ValueError("No cells to score: the data has 0 rows.")
        output = None
        bar = tqdm(total=len(x), desc=desc, unit="cells", disable=not settings.progress_bar, leave=False)
        for start in range(0, len(x), batch_size):
            stop = min(start + batch_size, len(x))
            block = score(self._standardise(x[start:stop]), torch.arange(start, stop)).cpu().numpy()
            if output is None:
                output = np.empty((len(x), *block.shape[1:]), dtype=np.float32)
            output[start:stop] = block
            bar.update(stop - start)
        bar.close()
        return output

    def _rows(self, codes: np.ndarray, rows: torch.Tensor | slice) -> torch.Tensor:
        """Encoded conditions of a block of cells, on the network's device."""
        rows = rows.numpy() if isinstance(rows, torch.Tensor) else rows
        return torch.from_numpy(np.ascontiguousarray(codes[rows])).to(self.device)

    def log_ratio(
        self,
        data: Data = None,
        numerator: Condition | None = None,
        denominator: Condition | None = None,
        *,
        method: Literal["s1", "s2", "naive"] = "s1",
        base: Condition | None = None,
        solver: str = "rk4",
        n_steps: int = 3,
        divergence: Literal["exact", "hutchinson"] = "exact",
        n_probes: int = 1,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        batch_size: int = 256,
        random_state: int = 0,
    ) -> np.ndarray:
        """Per-cell ``log p(x | numerator) - log p(x | denominator)``.

        Parameters
        ----------
        data
            An AnnData with ``obsm[use_rep]``, an array of cells x dims, or ``None`` for the
            training AnnData.
        numerator, denominator
            Mappings from condition key to a category, to a per-cell sequence of categories,
            or to ``None``; keys left out are null (marginalised).
        method
            ``"s1"`` follows the numerator's field (cheapest); ``"s2"`` follows the field of
            ``base`` (default: every key null), better when the two conditions overlap
            little; ``"naive"`` subtracts two separate CNF likelihoods (two trajectories).
        base
            Simulating condition for ``"s2"``.
        solver, n_steps, rtol, atol
            torchdiffeq method; fixed-step methods take ``n_steps``, adaptive ones the tolerances.
        divergence, n_probes
            Exact Jacobian trace or Hutchinson's estimate with ``n_probes`` Rademacher probes.
        batch_size
            Cells integrated together.
        random_state
            Seed of the Hutchinson probes.

        Returns
        -------
        Log-ratios, ``float32`` of shape ``(n_cells,)``.
        """
        x = self._representation(data)
        options = self._solver(solver, n_steps, divergence, n_probes, rtol, atol, random_state)
        num = self.encode(numerator, len(x))
        den = self.encode(denominator, len(x))
        null = self.encode(base, len(x))

        def score(xb, index):
            return ode.log_ratio(
                self.network, xb, self._rows(num, index), self._rows(den, index), estimator=method,
                null=self._rows(null, index), options=options, index=index,
            )  # fmt: skip

        return self._stream(x, score, batch_size=batch_size, desc=f"log-ratio ({method})")

    def log_likelihood(
        self,
        data: Data = None,
        condition: Condition | None = None,
        *,
        solver: str = "rk4",
        n_steps: int = 3,
        divergence: Literal["exact", "hutchinson"] = "exact",
        n_probes: int = 1,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        batch_size: int = 256,
        random_state: int = 0,
    ) -> np.ndarray:
        """Per-cell CNF log-density ``log p(x | condition)`` in the units of ``use_rep``.

        Parameters are those of :meth:`log_ratio`; ``condition`` maps keys to categories
        (``None`` or ``{}``: the unconditional density).
        """
        x = self._representation(data)
        options = self._solver(solver, n_steps, divergence, n_probes, rtol, atol, random_state)
        codes = self.encode(condition, len(x))

        def score(xb, index):
            return ode.log_likelihood(
                self.network, xb, self._rows(codes, index), options=options, index=index
            )

        return self._stream(x, score, batch_size=batch_size, desc="log-likelihood") - self._log_scale

    def category_log_likelihoods(
        self,
        data: Data = None,
        key: str | None = None,
        *,
        given: Condition | None = None,
        categories: Sequence[str] | None = None,
        solver: str = "rk4",
        n_steps: int = 3,
        divergence: Literal["exact", "hutchinson"] = "exact",
        n_probes: int = 1,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        batch_size: int | None = None,
        random_state: int = 0,
    ) -> pd.DataFrame:
        """``log p(x | key = k, given)`` for every category ``k``, from a single trajectory.

        The trajectory follows the field of ``given`` alone (``key`` null); along it the
        log-ratio of every category to that base is tracked together with the base's CNF
        likelihood (see "How it works", many ratios from one trajectory). Any pairwise
        log-ratio is a difference of two columns.

        Parameters
        ----------
        data
            As in :meth:`log_ratio`.
        key
            The condition key whose categories are compared; defaults to the only key.
        given
            Other keys held fixed (a category or per-cell categories each).
        categories
            Subset of the key's categories (default: all).
        solver, n_steps, divergence, n_probes, rtol, atol, random_state
            As in :meth:`log_ratio`.
        batch_size
            Cells per block. By default ``512 // (n_categories + 1)`` (at least 8): every cell
            carries one field per category plus the base, and blocks of about 512 field rows
            ran fastest (``benchmarks/scale.py``).

        Returns
        -------
        A cells x categories frame of log-densities.
        """
        key = self._key(key)
        if given and key in given:
            raise ValueError(f"`given` must not fix the compared key {key!r}.")
        categories = list(self.categories[key] if categories is None else categories)
        if batch_size is None:
            batch_size = max(8, 512 // (len(categories) + 1))
        x = self._representation(data)
        options = self._solver(solver, n_steps, divergence, n_probes, rtol, atol, random_state)
        base = self.encode(given, len(x))
        per_category = [self.encode({**(given or {}), key: c}, len(x)) for c in categories]

        def score(xb, index):
            ratios, base_ll = ode.category_log_ratios(
                self.network,
                xb,
                [self._rows(c, index) for c in per_category],
                self._rows(base, index),
                options=options,
                index=index,
            )
            return ratios + base_ll[:, None]

        values = (
            self._stream(x, score, batch_size=batch_size, desc=f"log-likelihoods ({key})") - self._log_scale
        )
        index = (
            data.obs_names if isinstance(data, AnnData) else (self.adata.obs_names if data is None else None)
        )
        return pd.DataFrame(values, index=index, columns=pd.Index(categories, name=key))

    def condition_probabilities(
        self,
        data: Data = None,
        key: str | None = None,
        *,
        given: Condition | None = None,
        prior: Literal["uniform", "empirical"] | Mapping[str, float] = "uniform",
        **kwargs,
    ) -> pd.DataFrame:
        """Posterior ``p(key = k | x, given)`` over the categories of ``key``, rows summing to one.

        Parameters
        ----------
        data, key, given
            As in :meth:`category_log_likelihoods`.
        prior
            ``"uniform"``, ``"empirical"`` (category frequencies of the training AnnData) or a
            mapping from category to prior weight.
        kwargs
            Solver options of :meth:`category_log_likelihoods`.
        """
        key = self._key(key)
        log_likelihoods = self.category_log_likelihoods(data, key, given=given, **kwargs)
        if prior == "uniform":
            weights = np.ones(log_likelihoods.shape[1])
        elif prior == "empirical":
            counts = pd.Series(get_categorical(self.adata, key)).astype(str).value_counts()
            weights = counts.reindex(log_likelihoods.columns).fillna(0).to_numpy(float)
        else:
            weights = np.array([float(prior.get(c, 0.0)) for c in log_likelihoods.columns])
        with np.errstate(divide="ignore"):
            logits = log_likelihoods.to_numpy(np.float64) + np.log(weights / weights.sum())
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return pd.DataFrame(probabilities, index=log_likelihoods.index, columns=log_likelihoods.columns)

    def sample(
        self,
        n: int,
        condition: Condition | None = None,
        *,
        solver: str = "rk4",
        n_steps: int = 20,
        batch_size: int = 4096,
        random_state: int = 0,
    ) -> np.ndarray:
        """Draw ``n`` cells' coordinates from ``p(x | condition)`` in the units of ``use_rep``."""
        options = self._solver(solver, n_steps, "exact", 1, 1e-5, 1e-5, random_state)
        codes = self.encode(condition, n)
        generator = torch.Generator().manual_seed(random_state)
        noise = torch.randn(n, self.n_dims, generator=generator)
        out = []
        for start in range(0, n, batch_size):
            codes_b = self._rows(codes, slice(start, start + batch_size))
            out.append(
                ode.sample(
                    self.network, codes_b, noise[start : start + batch_size].to(self.device), options=options
                )
            )
        return torch.cat(out).cpu().numpy() * self.scale + self.mean

    # ---------------------------------------------------------------- helpers
    @property
    def _log_scale(self) -> float:
        # Density in the original units: p(x) = p(z) / prod(scale).
        return float(np.log(self.scale.astype(np.float64)).sum())

    def _key(self, key: str | None) -> str:
        if key is None:
            if len(self.categories) != 1:
                raise ValueError(f"Name the condition key; the model has {self.condition_keys}.")
            return self.condition_keys[0]
        if key not in self.categories:
            raise KeyError(f"Condition key {key!r} is not registered; the model knows {self.condition_keys}.")
        return key

    @staticmethod
    def _solver(solver, n_steps, divergence, n_probes, rtol, atol, seed) -> ode.SolverOptions:
        return ode.SolverOptions(
            method=solver,
            n_steps=n_steps,
            divergence=divergence,
            n_probes=n_probes,
            rtol=rtol,
            atol=atol,
            seed=seed,
        )

    def to(self, device: str | torch.device) -> RatioFlow:
        """Move the network for scoring (e.g. ``"cuda"``)."""
        self.network.to(device)
        return self

    # ---------------------------------------------------------------- persistence
    def config(self) -> dict[str, Any]:
        """JSON-serialisable description of everything but the weights."""
        return {
            "scratio_version": __version__,
            "use_rep": self.use_rep,
            "n_pcs": self.n_pcs,
            "categories": self.categories,
            "n_dims": self.n_dims,
            "path": self.path.to_dict(),
            "network": self.network_kwargs,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "random_state": self.random_state,
            "training": self.training_record,
        }

    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Write the model to a directory: ``config.json`` and ``weights.pt`` (tensors only)."""
        path = Path(path)
        if path.exists() and not overwrite and any(path.iterdir()):
            raise FileExistsError(f"{str(path)!r} exists and is not empty; pass `overwrite=True`.")
        path.mkdir(parents=True, exist_ok=True)
        (path / _CONFIG).write_text(json.dumps(self.config(), indent=1))
        torch.save({k: v.cpu() for k, v in self.network.state_dict().items()}, path / _WEIGHTS)

    @classmethod
    def load(cls, path: str | Path, adata: AnnData | None = None, *, device: str = "cpu") -> RatioFlow:
        """Load a model written by :meth:`save` without executing code from the files.

        Parameters
        ----------
        path
            The directory.
        adata
            Data to attach for scoring (and further training). It must have the model's
            representation with the same dimension, and its condition columns may only hold
            categories the model knows.
        device
            Where to put the network.
        """
        path = Path(path)
        config = json.loads((path / _CONFIG).read_text())
        state = torch.load(path / _WEIGHTS, map_location=device, weights_only=True)
        model = cls.__new__(cls)
        model.use_rep = config["use_rep"]
        model.n_pcs = config.get("n_pcs")
        model.categories = {k: list(v) for k, v in config["categories"].items()}
        model.path = GaussianPath.from_dict(config["path"])
        model.network_kwargs = config["network"]
        model.mean = np.asarray(config["mean"], dtype=np.float32)
        model.scale = np.asarray(config["scale"], dtype=np.float32)
        model.random_state = config["random_state"]
        model.training_record = config["training"]
        model.network = ConditionalFlowNet(
            config["n_dims"], [len(c) for c in model.categories.values()], **model.network_kwargs
        )
        model.network.load_state_dict(state)
        model.network.to(device).eval()
        model.adata = None
        if adata is not None:
            model.attach(adata)
        return model

    @property
    def record(self) -> dict[str, Any]:
        """What reproduces this model, for ``adata.uns[...]["params"]`` (HDF5-writable, no history).

        Keys: ``use_rep``, ``condition_keys``, ``schedule`` (the path's parameters), ``network``,
        ``random_state`` and the training options (``n_steps``, ``batch_size``, ``final_loss``, ...).
        """
        training = {k: v for k, v in self.training_record.items() if k != "loss_history" and v is not None}
        return {
            "use_rep": self.use_rep,
            "n_dims": self.n_dims,  # the first n_dims columns of use_rep (n_pcs)
            "condition_keys": self.condition_keys,
            "schedule": self.path.to_dict(),
            "network": dict(self.network_kwargs),
            "random_state": self.random_state,
            **training,
        }

    def check_compatible(self, adata: AnnData, keys: Sequence[str], *, use_rep: str | None = None) -> None:
        """Raise a :class:`ValueError` unless this trained model can score ``adata`` on ``keys``.

        The model must be trained, on ``use_rep`` (when given) with the same dimension, with
        every key in ``keys`` registered, and must know every category ``adata.obs[key]`` holds.
        Registered keys not in ``keys`` are left null (marginalised) when scoring.

        Parameters
        ----------
        adata
            The data to score.
        keys
            Condition keys the caller conditions on.
        use_rep
            The representation the caller asks for.
        """
        if not self.is_trained:
            raise ValueError("`model` is not trained; call `model.train()` first or pass `model=None`.")
        if use_rep is not None and use_rep != self.use_rep:
            raise ValueError(
                f"`model` was trained on use_rep={self.use_rep!r}, not {use_rep!r}. "
                f"Pass use_rep={self.use_rep!r} or `model=None` to train a new one."
            )
        missing = [k for k in keys if k not in self.categories]
        if missing:
            raise ValueError(
                f"`model` was trained on condition keys {self.condition_keys}, not on {missing}. "
                "Pass `model=None` to train a new one, or a model trained on these keys."
            )
        self._representation(adata)
        for key in keys:
            known = self.categories[key]
            unknown = sorted(set(map(str, get_categorical(adata, key).categories)) - set(known))
            if unknown:
                raise ValueError(
                    f"`adata.obs[{key!r}]` has categories {unknown} the model was not trained on "
                    f"(it knows {known}). Subset the AnnData to known categories or pass `model=None`."
                )

    def attach(self, adata: AnnData) -> None:
        """Use ``adata`` as the default data, after checking it against the registration."""
        self._representation(adata)
        for key, known in self.categories.items():
            values = get_categorical(adata, key) if key in adata.obs.columns else None
            if values is None:
                raise KeyError(f"Condition key {key!r} of the model is missing from `adata.obs`.")
            unknown = sorted(set(map(str, values.categories)) - set(known))
            if unknown:
                raise ValueError(
                    f"`adata.obs[{key!r}]` has categories {unknown} the model was not trained on "
                    f"(it knows {known}). Subset the AnnData to known categories or retrain."
                )
        self.adata = adata


def _quiet_trainer(**kwargs):
    """A Lightning trainer without logger, checkpoints, summaries or banner lines."""
    import lightning as L

    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    kwargs.setdefault("enable_progress_bar", settings.progress_bar)
    from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

    callbacks = list(kwargs.pop("callbacks", []))
    if kwargs["enable_progress_bar"] and not any(isinstance(c, ProgressBar) for c in callbacks):
        # One plain bar over all steps (Lightning would pick a Rich bar counting "epochs" if rich is installed).
        callbacks.append(TQDMProgressBar(refresh_rate=10))
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
