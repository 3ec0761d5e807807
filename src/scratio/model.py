"""``RatioFlow``: one conditional flow on an AnnData embedding, scored as per-cell log-ratios."""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from ._deprecation import renamed_keywords
from ._docs import doc_params, parameters_section
from ._files import read_model_files, write_model_files
from ._registration import Condition, RegisteredCells, Registration
from ._scoring import CellScorer, SharedRows, scoring_method
from ._support import SUPPORT_SCORING, Support
from ._version import __version__
from .core import ode
from .core.base import MixtureBase
from .core.network import ConditionalFlowNet
from .core.ode import Solver
from .core.paths import GaussianPath
from .core.prediction import ScoringDevices, score_rows
from .core.training import TrainingOptions, TrainingRecord

Data = AnnData | np.ndarray | None

#: The network's options, which ``RatioFlow(...)`` forwards.
NETWORK_OPTIONS = tuple(inspect.signature(ConditionalFlowNet).parameters)[2:]


class RatioFlow:
    """A conditional flow-matching model of ``p(x | conditions)`` on ``adata.obsm[use_rep]``.

    One network models the density of cells under every combination of the registered
    condition keys, and under any key left out (*null*, trained by condition dropout). From
    it, :meth:`log_ratio` integrates one ODE per cell that tracks
    ``log p(x | numerator) - log p(x | denominator)``.

    The AnnData is read and checked once, when the model is made (or data is attached); the
    :class:`Registration` is saved with the model. Call :meth:`attach` after changing the
    AnnData.

    Parameters
    ----------
    adata
        Annotated data; the model keeps a reference for training and default scoring.
    use_rep
        Key of the embedding in ``adata.obsm`` (``"X"`` uses ``adata.X``).
    condition_keys
        Categorical columns of ``adata.obs`` to condition on. Strings, numbers and booleans
        are converted to categories.
    n_pcs
        Use only the first ``n_pcs`` columns of the representation (as in
        :func:`scanpy.pp.neighbors`). Densities in fewer dimensions need fewer cells; with a few
        thousand cells, 10-20 principal components are a good start.
    min_cells
        Fewest cells a category may have.
    scaling
        How the representation is scaled before training: ``"per_dimension"`` (default) to unit
        standard deviation in each dimension, or ``"global"``, by one number (the root mean
        variance), which keeps its geometry: the Gaussian smoothing of ``s_min`` and of
        ``bandwidth`` is then isotropic in the representation, as Euclidean neighbourhoods are,
        instead of widest along the dimensions that vary least. Log-ratios are invariant to the
        scaling; their smoothed versions are not.
    schedule
        ``"deterministic"``, ``"noise_at_data"`` (default) or ``"noise_on_path"``, or a
        :class:`~scratio.core.GaussianPath`.
    s_min, s_path
        Noise at the data and on the path for the named schedules (defaults 0.05 and 0.1).
    random_state
        Seed of the weights and of training.
    registration
        Build the model on this registration instead of reading ``use_rep``,
        ``condition_keys`` and ``n_pcs`` from ``adata`` (as :meth:`load` does); ``adata`` is then
        optional and attached when given.
    network_options
        Options of :class:`~scratio.core.ConditionalFlowNet`: ``width``, ``n_layers``,
        ``head_layers``, ``condition_dim``, ``n_frequencies``, ``activation``, ``base``
        (``"gaussian"``: learn the residual around a Gaussian per condition; ``"mixture"``: around
        a Gaussian mixture whose components the conditions share, with weights per condition).

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
        adata: AnnData | None,
        use_rep: str = "X_pca",
        condition_keys: Sequence[str] | str = (),
        *,
        n_pcs: int | None = None,
        min_cells: int = 1,
        scaling: str = "per_dimension",
        schedule: str | GaussianPath = "noise_at_data",
        s_min: float | None = None,
        s_path: float | None = None,
        random_state: int = 0,
        registration: Registration | None = None,
        **network_options,
    ):
        unknown = sorted(set(network_options) - set(NETWORK_OPTIONS))
        if unknown:
            raise TypeError(
                f"Unknown options {unknown} of RatioFlow; the network takes {list(NETWORK_OPTIONS)}."
            )
        self.adata: AnnData | None = None
        self._cells: RegisteredCells | None = None
        if registration is not None:
            self.registration = registration
            if adata is not None:
                self.attach(adata)
        elif adata is not None:
            keys = [condition_keys] if isinstance(condition_keys, str) else list(condition_keys)
            self.registration, self._cells = Registration.register(
                adata, use_rep, keys, n_pcs=n_pcs, min_cells=min_cells, scaling=scaling
            )
            self.adata = adata
        else:
            raise ValueError("Pass an AnnData to register, or a `registration`.")
        self.path = GaussianPath.from_schedule(schedule, s_min=s_min, s_path=s_path)
        self.random_state = random_state
        with torch.random.fork_rng():
            torch.manual_seed(random_state)
            self.network = ConditionalFlowNet(
                self.registration.n_dims, [len(c) for c in self.categories.values()], **network_options
            )
        self.network.eval()
        self.training: TrainingRecord | None = None
        self._support: Support | None = None
        # cells (as registered) and their name, whose likelihoods set the support on first use
        self._support_cells: tuple[np.ndarray, str] | None = None
        self._held_out: np.ndarray | None = None

    # ---------------------------------------------------------------- what the model is
    @property
    def use_rep(self) -> str:
        """The registered representation."""
        return self.registration.use_rep

    @property
    def n_pcs(self) -> int | None:
        """How many first columns of the representation are used (``None``: all)."""
        return self.registration.n_pcs

    @property
    def categories(self) -> dict[str, list[str]]:
        """The categories of each condition key."""
        return self.registration.categories

    @property
    def condition_keys(self) -> list[str]:
        """The registered condition keys, in the network's order."""
        return self.registration.condition_keys

    @property
    def n_dims(self) -> int:
        """Dimension of the representation."""
        return self.registration.n_dims

    @property
    def device(self) -> torch.device:
        """Device the network lives on."""
        return next(self.network.parameters()).device

    @property
    def is_trained(self) -> bool:
        """Whether :meth:`train` has run (or trained weights were loaded)."""
        return self.training is not None

    @property
    def training_record(self) -> dict[str, Any]:
        """What :meth:`train` did (options, final and held-out loss, loss history); empty if untrained."""
        return {} if self.training is None else self.training.to_dict()

    def __repr__(self) -> str:
        keys = ", ".join(f"{k} ({len(c)})" for k, c in self.categories.items()) or "none"
        state = f"trained {self.training.n_steps} steps" if self.is_trained else "untrained"
        return f"RatioFlow(use_rep={self.use_rep!r}, n_dims={self.n_dims}, conditions: {keys}; {self.path.name}, {state})"

    def encode(self, condition: Condition | None, n: int) -> np.ndarray:
        """Integer codes ``(n, n_keys)`` of a condition; unnamed keys are null.

        ``condition`` maps a registered key to one category (every cell), to ``None`` (null),
        or to a per-cell sequence of categories of length ``n``.
        """
        return self.registration.encode(condition, n)

    @property
    def cells(self) -> RegisteredCells:
        """The attached cells as read at registration: representation and per-cell condition codes."""
        if self._cells is None:
            raise ValueError(
                "No data is attached to this model (it was loaded without `adata`). "
                "Pass the cells to score, or attach them with `model.attach(adata)`."
            )
        return self._cells

    def representation(self, data: Data = None) -> np.ndarray:
        """The registered representation of ``data`` (default: the attached AnnData's), float32."""
        return self.cells.x if data is None else self.registration.representation(data)

    # ---------------------------------------------------------------- training
    @doc_params(options=parameters_section(TrainingOptions.__doc__))
    def train(self, n_steps: int | None = None, **options) -> RatioFlow:
        """Fit the velocity and score heads by flow matching through Lightning.

        Every option and its default is a field of :class:`~scratio.core.TrainingOptions`;
        any other keyword is passed to :class:`lightning.pytorch.Trainer`.

        Parameters
        ----------
        {options}

        Returns
        -------
        The model itself, trained.
        """
        from .core.training import train_flow

        options = TrainingOptions.from_kwargs(n_steps=n_steps, **options)
        x, codes = (
            torch.from_numpy(self.registration.standardise(self.cells.x)),
            torch.from_numpy(self.cells.codes),
        )
        self.training = train_flow(self.network, self.path, x, codes, options, seed=self.random_state)
        _, held_out = options.split(len(x), self.random_state)
        self._held_out = held_out
        reference = "held-out" if len(held_out) else "training"
        if not len(held_out):  # every cell trained on: take up to 4096 of them, evenly spaced
            held_out = np.arange(0, len(x), max(1, len(x) // 4096))
        self._support, self._support_cells = None, (self.cells.x[held_out], reference)
        return self

    @property
    def support(self) -> Support | None:
        """What :meth:`outside_training_data` judges cells by: the likelihoods of cells held out of training.

        ``None`` before :meth:`train` (or for a model saved by scratio 0.1). Measured when first
        read after training (one pass over the held-out cells), so calls that judge the
        support by likelihoods of their own do not pay for it; saved with the model.
        """
        if self._support is None and self._support_cells is not None:
            cells, reference = self._support_cells
            self._support = Support.from_log_likelihoods(
                self.log_likelihood(cells, **SUPPORT_SCORING), reference
            )
            self._support_cells = None
        return self._support

    @support.setter
    def support(self, support: Support | None) -> None:
        self._support, self._support_cells = support, None

    @property
    def held_out(self) -> np.ndarray | None:
        """Positions, among the attached cells, of the cells :meth:`train` held out of training.

        Empty when every cell was trained on (``validation_fraction=0``, or too few cells);
        ``None`` when the model was not trained in this session (e.g. loaded) or data was attached
        since, as the held-out cells are then unknown.
        """
        return self._held_out

    @scoring_method
    def outside_training_data(
        self, data: Data = None, *, batch_size: int = 256, placement: ScoringDevices
    ) -> np.ndarray:
        """Whether each cell lies outside the training data, by its unconditional likelihood.

        A cell is outside when ``log p(x)`` (every condition key null) is lower than that of the
        least likely held-out cell by more than three times the held-out cells' interquartile range
        (:class:`~scratio.Support`). Its log-ratios extrapolate the model and should not be trusted.

        Parameters
        ----------
        data
            As in :meth:`log_ratio`.
        batch_size
            Cells integrated together.
        {scoring}

        Returns
        -------
        A boolean array, one entry per cell.
        """
        if self.support is None:
            raise ValueError(
                "This model has no record of its training data's support (it was trained by scratio 0.1); "
                "train it again to flag cells outside the training data."
            )
        log_likelihood = self.log_likelihood(
            data, batch_size=batch_size, **SUPPORT_SCORING, **placement.keywords()
        )
        return self.support.outside(log_likelihood)

    # ---------------------------------------------------------------- scoring
    def _stream(
        self,
        x: np.ndarray,
        integrate,
        codes: Sequence[np.ndarray],
        *,
        solver: Solver,
        placement: ScoringDevices,
        batch_size: int,
        desc: str,
        width: int | None = None,
    ) -> np.ndarray:
        """``integrate(network, block, block_codes, keys)`` over blocks of ``x``, where ``placement`` says."""
        if not self.is_trained:
            warnings.warn("Scoring an untrained RatioFlow; call `.train()` first.", stacklevel=3)
        scorer = CellScorer(
            SharedRows(x),
            self.registration.standardise,
            tuple(SharedRows(c) for c in codes),
            functools.partial(integrate, solver=solver),
            keyed=solver.divergence == "hutchinson",
        )
        return score_rows(
            self.network, scorer, len(x), block_size=batch_size, width=width, devices=placement, desc=desc
        )

    @renamed_keywords(method="estimator")
    @scoring_method
    def log_ratio(
        self,
        data: Data = None,
        numerator: Condition | None = None,
        denominator: Condition | None = None,
        *,
        estimator: Literal["s1", "s2", "naive"] = "s1",
        base: Condition | None = None,
        solver: Solver,
        placement: ScoringDevices,
        batch_size: int = 256,
    ) -> np.ndarray:
        """Per-cell ``log p(x | numerator) - log p(x | denominator)``.

        Parameters
        ----------
        data
            An AnnData with ``obsm[use_rep]``, an array of cells x dims, or ``None`` for the
            attached AnnData.
        numerator, denominator
            Mappings from condition key to a category, to a per-cell sequence of categories,
            or to ``None``; keys left out are null (marginalised).
        estimator
            ``"s1"`` follows the numerator's field (cheapest); ``"s2"`` follows the field of
            ``base`` (default: every key null), better when the two conditions overlap
            little; ``"naive"`` subtracts two separate CNF likelihoods (two trajectories).
        base
            The condition whose field ``"s2"`` follows.
        batch_size
            Cells integrated together.
        {scoring}

        Returns
        -------
        Log-ratios, ``float32`` of shape ``(n_cells,)``.
        """
        if estimator not in ode.ESTIMATORS:
            raise ValueError(f"Unknown estimator {estimator!r}; choose one of {list(ode.ESTIMATORS)}.")
        x = self.representation(data)
        codes = [self.encode(c, len(x)) for c in (numerator, denominator, base)]
        return self._stream(
            x, functools.partial(_log_ratio, estimator=estimator), codes, solver=solver, placement=placement,
            batch_size=batch_size, desc=f"log-ratio ({estimator})",
        )  # fmt: skip

    @scoring_method
    def log_likelihood(
        self,
        data: Data = None,
        condition: Condition | None = None,
        *,
        solver: Solver,
        placement: ScoringDevices,
        batch_size: int = 256,
    ) -> np.ndarray:
        """Per-cell CNF log-density ``log p(x | condition)`` in the units of ``use_rep``.

        Parameters
        ----------
        data
            As in :meth:`log_ratio`.
        condition
            Maps keys to categories (``None`` or ``{}``: the unconditional density).
        batch_size
            Cells integrated together.
        {scoring}
        """
        x = self.representation(data)
        codes = [self.encode(condition, len(x))]
        values = self._stream(
            x, _log_likelihood, codes, solver=solver, placement=placement, batch_size=batch_size,
            desc="log-likelihood",
        )  # fmt: skip
        return values - self.registration.log_scale

    @scoring_method
    def category_log_likelihoods(
        self,
        data: Data = None,
        key: str | None = None,
        *,
        given: Condition | None = None,
        categories: Sequence[str] | None = None,
        condition_weights: Sequence[float] | None = None,
        solver: Solver,
        placement: ScoringDevices,
        batch_size: int | None = None,
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
        condition_weights
            Score at each of these condition weights (the ``condition_weight`` scoring option) at
            once, along the one trajectory: its field, with every key null, is the same at every
            weight. The columns are then ``(condition_weight, category)`` pairs. Not with
            ``given`` or the scoring option.
        batch_size
            Cells per block. By default ``512 // (n_columns + 1)`` (at least 8): every cell
            carries one field per column plus the base, and blocks of about 512 field rows
            ran fastest (``benchmarks/scale.py``).
        {scoring}

        Returns
        -------
        A cells x categories frame of log-densities.
        """
        frame = self._category_frame(
            data, key, given, categories, condition_weights, relative=False, solver=solver,
            placement=placement, batch_size=batch_size,
        )  # fmt: skip
        return frame - self.registration.log_scale

    @scoring_method
    def category_log_ratios(
        self,
        data: Data = None,
        key: str | None = None,
        *,
        given: Condition | None = None,
        categories: Sequence[str] | None = None,
        condition_weights: Sequence[float] | None = None,
        solver: Solver,
        placement: ScoringDevices,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """``log p(x | key = k, given) - log p(x | given)`` for every category ``k``, from a single trajectory.

        :meth:`category_log_likelihoods` without the log-likelihood of ``given`` alone, which is
        common to every column: pairwise log-ratios (differences of two columns) and posteriors
        over the categories are the same from either. Without that term a model whose network
        does not see the conditions (``condition_dim=0`` with a ``base``) is integrated without
        the network's divergence: one network pass per step instead of one per dimension.

        Parameters
        ----------
        data, key, given, categories, condition_weights
            As in :meth:`category_log_likelihoods`.
        batch_size
            Cells per block. By default as in :meth:`category_log_likelihoods`, or 512 when the
            network drops out of the ratios (each cell then passes through it once).
        {scoring}

        Returns
        -------
        A cells x categories frame of log-ratios.
        """
        return self._category_frame(
            data, key, given, categories, condition_weights, relative=True, solver=solver,
            placement=placement, batch_size=batch_size,
        )  # fmt: skip

    def _category_frame(
        self, data: Data, key: str | None, given: Condition | None, categories: Sequence[str] | None,
        condition_weights: Sequence[float] | None, *, relative: bool, solver: Solver, placement: ScoringDevices,
        batch_size: int | None,
    ) -> pd.DataFrame:  # fmt: skip
        """One column per category of ``key`` (and condition weight): its log-ratio to ``given`` alone, or with ``relative=False`` its log-likelihood."""
        key = self.registration.key(key)
        if given and key in given:
            raise ValueError(f"`given` must not fix the compared key {key!r}.")
        if condition_weights is not None and (given or solver.condition_weight != 1):
            raise ValueError(
                "`condition_weights` scores along the trajectory of every key null, whose field is the same at "
                "every weight; pass it without `given` and without the scoring option `condition_weight`."
            )
        categories = list(self.categories[key] if categories is None else categories)
        weights = (
            [solver.condition_weight] if condition_weights is None else [float(w) for w in condition_weights]
        )
        if batch_size is None:
            # about 512 rows through the network: one per cell, or one per category and the base (each
            # category's correction at other weights is computed from these: the same rows)
            shared = relative and self.network.cancels_from_ratios(max(weights))
            batch_size = 512 if shared else max(8, 512 // (len(categories) + 1))
        x = self.representation(data)
        codes = [self.encode({**(given or {}), key: c}, len(x)) for _ in weights for c in categories]
        codes.append(self.encode(given, len(x)))  # the base, whose field the trajectory follows
        integrate = functools.partial(
            _category_columns,
            relative=relative,
            category_weights=None if condition_weights is None else [w for w in weights for _ in categories],
        )
        values = self._stream(
            x, integrate, codes, solver=solver, placement=placement, batch_size=batch_size,
            desc=f"{'log-ratios' if relative else 'log-likelihoods'} ({key})", width=len(codes) - 1,
        )  # fmt: skip
        index = (
            data.obs_names if isinstance(data, AnnData) else (self.adata.obs_names if data is None else None)
        )
        columns = (
            pd.Index(categories, name=key)
            if condition_weights is None
            else pd.MultiIndex.from_product([weights, categories], names=["condition_weight", key])
        )
        return pd.DataFrame(values, index=index, columns=columns)

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
            ``"uniform"``, ``"empirical"`` (category frequencies of the attached AnnData) or a
            mapping from category to prior weight.
        kwargs
            Scoring options of :meth:`category_log_ratios`, one condition weight at most
            (``condition_weight=``): a posterior is over the categories at one weight.
        """
        if "condition_weights" in kwargs:
            raise TypeError(
                "condition_probabilities() gives the posterior at one condition weight; pass the scoring "
                "option `condition_weight=w` instead of `condition_weights`."
            )
        key = self.registration.key(key)
        # the posterior needs only differences between categories
        log_ratios = self.category_log_ratios(data, key, given=given, **kwargs)
        columns = list(log_ratios.columns)
        if prior == "uniform":
            weights = np.ones(len(columns))
        elif prior == "empirical":
            j, known = self.condition_keys.index(key), self.categories[key]
            counts = np.bincount(self.cells.codes[:, j], minlength=len(known) + 1)
            weights = np.array([counts[known.index(c)] for c in columns], dtype=float)
        else:
            weights = np.array([float(prior.get(c, 0.0)) for c in columns])
        with np.errstate(divide="ignore"):
            logits = log_ratios.to_numpy(np.float64) + np.log(weights / weights.sum())
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return pd.DataFrame(probabilities, index=log_ratios.index, columns=log_ratios.columns)

    @renamed_keywords(n_steps="solver_steps")
    def sample(
        self,
        n: int,
        condition: Condition | None = None,
        *,
        solver: str = "rk4",
        solver_steps: int = 20,
        batch_size: int = 4096,
        random_state: int = 0,
    ) -> np.ndarray:
        """Draw ``n`` cells' coordinates from ``p(x | condition)`` in the units of ``use_rep``.

        Parameters
        ----------
        n
            Number of cells.
        condition
            As in :meth:`log_likelihood`.
        solver, solver_steps
            A fixed-step torchdiffeq method and its steps from noise to data.
        batch_size
            Cells integrated together.
        random_state
            Seed of the noise.
        """
        solver = Solver(method=solver, n_steps=solver_steps, seed=random_state)
        codes = self.encode(condition, n)
        noise = torch.randn(n, self.n_dims, generator=torch.Generator().manual_seed(random_state))
        out = []
        for start in range(0, n, batch_size):
            codes_b = torch.from_numpy(np.ascontiguousarray(codes[start : start + batch_size])).to(
                self.device
            )
            out.append(
                ode.sample(
                    self.network, codes_b, noise[start : start + batch_size].to(self.device), solver=solver
                )
            )
        return torch.cat(out).cpu().numpy() * self.registration.scale + self.registration.mean

    def to(self, device: str | torch.device) -> RatioFlow:
        """Move the network for scoring (e.g. ``"cuda"``)."""
        self.network.to(device)
        return self

    # ---------------------------------------------------------------- persistence
    def config(self) -> dict[str, Any]:
        """JSON-serialisable description of everything but the weights."""
        return {
            "scratio_version": __version__,
            **self.registration.to_dict(),
            "path": self.path.to_dict(),
            "network": self.network.config,
            "random_state": self.random_state,
            "training": self.training_record,
            "support": None if self.support is None else self.support.to_dict(),
        }

    @property
    def record(self) -> dict[str, Any]:
        """What reproduces this model, for ``adata.uns[...]["params"]`` (HDF5-writable, no history).

        Keys: ``use_rep``, ``n_dims`` (the first ``n_dims`` columns of ``use_rep``),
        ``scaling``, ``condition_keys``, ``schedule`` (the path's parameters), ``network``, ``base_shrinkage``
        (with a base: the share of each condition's own fit it kept), ``base_components`` (with a
        mixture base: its number of components, all fits together), ``random_state``
        and the training record without its loss history (``n_steps``, ``batch_size``,
        ``final_loss``, ...).
        """
        training = {k: v for k, v in self.training_record.items() if k != "loss_history" and v is not None}
        base = self.network.fitted_base
        return {
            "use_rep": self.use_rep,
            "n_dims": self.n_dims,
            "scaling": self.registration.scaling,
            "condition_keys": self.condition_keys,
            "schedule": self.path.to_dict(),
            "network": dict(self.network.config),
            **({"base_shrinkage": float(base.shrinkage)} if base is not None else {}),
            **({"base_components": len(base.means)} if isinstance(base, MixtureBase) else {}),
            "random_state": self.random_state,
            **training,
        }

    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Write the model to a directory: ``config.json`` (with a checksum) and ``weights.pt`` (tensors only)."""
        write_model_files(path, self.config(), self.network.state_dict(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, adata: AnnData | None = None, *, device: str = "cpu") -> RatioFlow:
        """Load a model written by :meth:`save` (0.1 or later) without executing code from the files.

        The configuration is checked (shapes, finite standardisation, distinct categories), and
        a model saved since 0.2 must match the checksum written with it, so that an edited or
        corrupted file is refused rather than scored with wrong numbers.

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
        config, state = read_model_files(path, device=device)
        model = cls(
            adata,
            registration=Registration.from_dict(config),
            schedule=GaussianPath.from_dict(config["path"]),
            random_state=config["random_state"],
            **config["network"],
        )
        model.network.load_state_dict(state)
        model.network.to(device)
        model.training = TrainingRecord.from_dict(config["training"]) if config["training"] else None
        model.support = Support.from_dict(config["support"]) if config.get("support") else None
        return model

    # ---------------------------------------------------------------- other data
    def check_compatible(self, adata: AnnData, keys: Sequence[str], *, use_rep: str | None = None) -> None:
        """Raise a :class:`ValueError` unless this trained model can score ``adata`` on ``keys``.

        See :meth:`~scratio.Registration.cells`; the model must also be trained.
        """
        if not self.is_trained:
            raise ValueError("The model is not trained; call `model.train()` first.")
        self.registration.cells(adata, keys, use_rep=use_rep)

    def attach(self, adata: AnnData) -> None:
        """Use ``adata`` as the default data, read once through the registration (and checked against it)."""
        self._cells = self.registration.cells(adata)
        self.adata = adata
        self._held_out = None  # positions among other cells


# ---------------------------------------------------------------- one block of each scoring method
# Module-level functions, so that the processes of a spawning strategy can unpickle them.
def _log_ratio(network, x, codes, keys, *, estimator: str, solver: Solver) -> torch.Tensor:
    numerator, denominator, base = codes
    return ode.log_ratio(
        network, x, numerator, denominator, estimator=estimator, base=base, solver=solver, index=keys
    )


def _log_likelihood(network, x, codes, keys, *, solver: Solver) -> torch.Tensor:
    return ode.log_likelihood(network, x, codes[0], solver=solver, index=keys)


def _category_columns(
    network,
    x,
    codes,
    keys,
    *,
    solver: Solver,
    relative: bool,
    category_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Each category's log-ratio to the base, or with ``relative=False`` its log-likelihood."""
    *per_category, base = codes
    ratios, base_log_likelihood = ode.category_log_ratios(
        network, x, per_category, base, solver=solver, index=keys, base_log_likelihood=not relative,
        category_weights=category_weights,
    )  # fmt: skip
    return ratios if relative else ratios + base_log_likelihood[:, None]
