"""The conditional network: shared trunk, velocity head and score head."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .base import GaussianBase, MixtureBase

#: Closed-form fields the heads may learn the residual of, by name.
BASE_FIELDS = {"gaussian": GaussianBase, "mixture": MixtureBase}
#: The values of ``base`` (``None``: no base).
BASES = (None, *BASE_FIELDS)
ACTIVATIONS = {"silu": nn.SiLU, "selu": nn.SELU, "gelu": nn.GELU, "tanh": nn.Tanh}


class TimeFeatures(nn.Module):
    """Sinusoidal features of ``t`` in [0, 1].

    Frequencies ``pi * 2^k`` for ``k = 0 .. n_frequencies - 1`` span one half-period over
    the unit interval up to a fraction of it, so every scale of ``t`` is resolved (the usual
    ``10000^(-k/n)`` periods of transformer encodings are nearly constant on [0, 1]).
    """

    def __init__(self, n_frequencies: int = 6):
        super().__init__()
        self.register_buffer("frequencies", math.pi * 2.0 ** torch.arange(n_frequencies, dtype=torch.float32))
        self.dim = 1 + 2 * n_frequencies

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        angles = t[:, None] * self.frequencies
        return torch.cat([t[:, None], torch.sin(angles), torch.cos(angles)], dim=-1)


class ConditionEmbedding(nn.Module):
    """One embedding table per condition key, each with a final *null* row.

    Codes are integer tensors of shape ``(n, n_keys)``; code ``n_categories[k]`` is the null
    entry of key ``k`` (the key is marginalised out).
    """

    def __init__(self, n_categories: Sequence[int], dim: int = 16):
        super().__init__()
        self.n_categories = [int(n) for n in n_categories]
        self.tables = nn.ModuleList(nn.Embedding(n + 1, dim) for n in self.n_categories)
        self.dim = dim * len(self.n_categories)

    def null_codes(self, n: int, device=None) -> torch.Tensor:
        """Codes with every key set to null."""
        return torch.tensor(self.n_categories, device=device).expand(n, -1).clone()

    def drop(self, codes: torch.Tensor, p_drop: float, generator: torch.Generator | None = None):
        """Replace each key of each sample by null with probability ``p_drop``, independently."""
        mask = torch.rand(codes.shape, generator=generator, device=codes.device) < p_drop
        return torch.where(mask, self.null_codes(len(codes), codes.device), codes)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not self.tables:
            return codes.new_zeros((len(codes), 0), dtype=torch.float32)
        return torch.cat([table(codes[:, k]) for k, table in enumerate(self.tables)], dim=-1)


def _mlp(n_in: int, width: int, n_layers: int, activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers += [nn.Linear(n_in if i == 0 else width, width), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


class ConditionalFlowNet(nn.Module):
    """Velocity ``v(x, t | c)`` and score ``grad log p_t(x | c)`` from one shared trunk.

    Parameters
    ----------
    n_dims
        Dimension of the data.
    n_categories
        Number of categories of each condition key.
    width, n_layers
        Width and depth of the shared trunk.
    head_layers
        Hidden layers (of ``width``) in each head before its linear read-out.
    condition_dim
        Embedding size per condition key.
    n_frequencies
        Number of sinusoidal time frequencies.
    activation
        One of ``"silu"``, ``"selu"``, ``"gelu"``, ``"tanh"``. Smooth activations keep the
        divergence well defined.
    base
        ``"gaussian"``: the heads learn the residual around the exact fields of a Gaussian per
        group of cells (:class:`~scratio.core.GaussianBase`, fitted when training starts).
        ``"mixture"``: around the exact fields of a Gaussian mixture whose components all groups
        share, with weights per group (:class:`~scratio.core.MixtureBase`).
        ``None``: the heads learn the whole fields.
    """

    def __init__(
        self,
        n_dims: int,
        n_categories: Sequence[int] = (),
        *,
        width: int = 256,
        n_layers: int = 3,
        head_layers: int = 0,
        condition_dim: int = 16,
        n_frequencies: int = 6,
        activation: str = "silu",
        base: str | None = None,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}.")
        if base not in BASES:
            raise ValueError(f"Unknown base {base!r}; choose one of {BASES}.")
        self.n_dims = n_dims
        #: The keyword arguments that rebuild this network (saved with a model).
        self.config = {
            "width": width,
            "n_layers": n_layers,
            "head_layers": head_layers,
            "condition_dim": condition_dim,
            "n_frequencies": n_frequencies,
            "activation": activation,
            "base": base,
        }
        self.time_features = TimeFeatures(n_frequencies)
        self.conditions = ConditionEmbedding(n_categories, condition_dim)
        n_in = n_dims + self.time_features.dim + self.conditions.dim
        self.trunk = _mlp(n_in, width, n_layers, activation)
        self.velocity_head = nn.Sequential(
            _mlp(width, width, head_layers, activation), nn.Linear(width, n_dims)
        )
        self.score_head = nn.Sequential(_mlp(width, width, head_layers, activation), nn.Linear(width, n_dims))
        self.base = BASE_FIELDS[base](n_categories) if base else None
        if self.base is not None:  # start as the base: the residual is learned from zero
            for head in (self.velocity_head, self.score_head):
                nn.init.zeros_(head[-1].weight)
                nn.init.zeros_(head[-1].bias)

    @property
    def fitted_base(self) -> GaussianBase | None:
        """The base field, once fitted to cells; ``None`` without one."""
        return self.base if self.base is not None and self.base.is_fitted else None

    def _inputs(self, x: torch.Tensor, t: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The trunk's input: the points, their time features and their condition embeddings."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(len(x))
        return torch.cat([x, self.time_features(t), self.conditions(codes)], dim=-1)

    def features(self, x: torch.Tensor, t: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Trunk features; ``t`` is a scalar or a tensor of shape ``(n,)``."""
        return self.trunk(self._inputs(x, t, codes))

    def forward(self, x: torch.Tensor, t: torch.Tensor, codes: torch.Tensor):
        """Return ``(velocity, score)``, each of the shape of ``x``."""
        h = self.features(x, t, codes)
        velocity, score = self.velocity_head(h), self.score_head(h)
        if self.fitted_base is None:
            return velocity, score
        base_velocity, base_score = self.base(x, t, codes)
        return velocity + base_velocity, score + base_score

    @property
    def sees_conditions(self) -> bool:
        """Whether the learned correction depends on the conditions (not with ``condition_dim=0``)."""
        return self.conditions.dim > 0

    def cancels_from_ratios(self, condition_weight: float = 1.0) -> bool:
        """Whether the learned correction drops out of log-ratios: every condition gets the same one, and a base carries their differences.

        So it is when the correction is blind to the conditions (``condition_dim=0``) or scored
        with ``condition_weight=0`` (see :meth:`forward_under_conditions`).
        """
        return self.fitted_base is not None and (not self.sees_conditions or condition_weight == 0)

    def forward_under_conditions(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        codes: Sequence[torch.Tensor],
        probes: torch.Tensor,
        *,
        relative: bool = False,
        condition_weight: float | Sequence[float] = 1.0,
    ):
        """Velocity, score and divergence of the velocity at the same points under several conditions.

        The divergence is taken in forward mode, written out for the MLP: each probe goes
        through the same matrix products as the cells, so ``P`` probes cost about ``P`` forward
        passes, without the overhead of generic ``vmap(jvp)``. It is ``sum_p e_p^T J e_p`` over
        the probes ``e_p`` for the network's correction (exact for the identity basis,
        Hutchinson's estimate for scaled Rademacher probes), plus the base's divergence in
        closed form. The network runs on every condition's codes at once; a base computes its
        Gaussians' densities at the points once for all conditions.

        Parameters
        ----------
        x
            ``(n, d)`` points.
        t
            Scalar time.
        codes
            One ``(n, n_keys)`` code tensor per condition.
        probes
            ``(P, n, d)`` tangent directions.
        relative
            Whether the divergences may leave out a term common to all conditions, for callers
            that use only their differences (log-ratios). A correction that is the same under
            every condition (:meth:`cancels_from_ratios`) then cancels from them: it is
            evaluated once, without tangents, and only the base's divergences remain, in closed
            form. This costs one network pass instead of one per condition and probe.
        condition_weight
            How much of the correction's dependence on the conditions is kept, for every
            condition or one weight per condition: under condition ``k`` the correction is
            ``c_null + w_k * (c_k - c_null)``, with ``c_null`` the correction with every key null
            (velocity, score and divergence alike, as all are linear in it). ``1``: the network
            as trained; ``0``: one correction for all conditions, so that only the base tells
            them apart. The network runs once per code whose own correction enters and once on
            the null codes where a weight below 1 mixes them in (a code that is the null codes
            has their correction at any weight), so the same conditions at weights 0 and 1 cost
            no more network passes than at 1 alone.

        Returns
        -------
        Lists of velocities and scores (each ``(n, d)``) and divergences (each ``(n,)``), one per condition.
        """
        n, repeats = len(x), len(codes)
        weights = (
            [float(w) for w in condition_weight]
            if isinstance(condition_weight, Sequence)
            else [float(condition_weight)] * repeats
        )
        if len(weights) != repeats:
            raise ValueError(
                f"{len(weights)} condition weights for {repeats} conditions; pass one per condition."
            )
        null = self.conditions.null_codes(n, x.device)
        # the null codes' correction is the same at any weight, and a blind network's is it under every code
        weights = [
            w if self.sees_conditions and not torch.equal(code, null) else 0.0
            for w, code in zip(weights, codes, strict=True)
        ]
        if not any(weights):
            # one correction for every condition: that of the null codes, computed once
            if relative and self.fitted_base is not None:
                h = self.features(x, t, null)
                velocity, score, divergence = self.velocity_head(h), self.score_head(h), x.new_zeros(n)
            else:
                velocity, score, divergence = self._correction_with_divergence(x, t, null, probes)
            velocities, scores, divergences = [velocity] * repeats, [score] * repeats, [divergence] * repeats
        else:
            own = [k for k, w in enumerate(weights) if w != 0]
            with_null = any(w != 1 for w in weights)
            batch = [codes[k] for k in own] + ([null] if with_null else [])
            velocity, score, divergence = self._correction_with_divergence(
                x.repeat(len(batch), 1), t, torch.cat(batch), probes.repeat(1, len(batch), 1)
            )

            def per_condition(values: torch.Tensor) -> list[torch.Tensor]:
                parts = values.split(n)
                null_part = parts[-1] if with_null else None
                corrections = []
                for k, w in enumerate(weights):
                    own_part = parts[own.index(k)] if k in own else null_part
                    corrections.append(own_part if w == 1 else null_part + w * (own_part - null_part))
                return corrections

            velocities, scores, divergences = (per_condition(v) for v in (velocity, score, divergence))
        if self.fitted_base is None:
            return list(velocities), list(scores), list(divergences)
        bases = self.base.under_conditions(x, t, codes, divergence=True)
        return (
            [v + base_v for v, (base_v, _, _) in zip(velocities, bases, strict=True)],
            [s + base_s for s, (_, base_s, _) in zip(scores, bases, strict=True)],
            [q + base_q for q, (_, _, base_q) in zip(divergences, bases, strict=True)],
        )

    def _correction_with_divergence(self, x, t, codes, probes):
        """The network's own velocity, score and quadratic forms, without the base."""
        h = self._inputs(x, t, codes)
        layers = _leaves(self.trunk)
        first = layers[0]
        # Only the first n_dims inputs depend on x; time and condition features carry no tangent.
        h, dh = first(h), probes @ first.weight[:, : self.n_dims].T
        h, dh = _push_forward(layers[1:], h, dh)
        velocity, d_velocity = _push_forward(_leaves(self.velocity_head), h, dh)
        return velocity, self.score_head(h), _quadratic_forms(probes, d_velocity)


def _quadratic_forms(probes: torch.Tensor, d_velocity: torch.Tensor) -> torch.Tensor:
    """``sum_p e_p^T (J e_p)`` per cell from the probes ``(P, n, d)`` and their Jacobian products, in the probes' precision."""
    with torch.autocast(probes.device.type, enabled=False):
        return torch.einsum("pnd,pnd->n", probes, d_velocity.to(probes.dtype))


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The layers of ``module`` in order, without (possibly empty) containers."""
    return [m for m in module.modules() if not list(m.children()) and not isinstance(m, nn.Sequential)]


def _push_forward(layers: list[nn.Module], h: torch.Tensor, dh: torch.Tensor):
    """Apply linear layers and elementwise activations to ``h`` and their differentials to ``dh``."""
    for layer in layers:
        if isinstance(layer, nn.Linear):
            h, dh = layer(h), dh @ layer.weight.T
        elif isinstance(layer, nn.SiLU):  # the default: value and slope from one sigmoid
            sigmoid = torch.sigmoid(h)
            h, dh = h * sigmoid, dh * (sigmoid * (1 + h * (1 - sigmoid)))
        else:
            value, slope = torch.func.jvp(layer, (h,), (torch.ones_like(h),))
            h, dh = value, dh * slope
    return h, dh
