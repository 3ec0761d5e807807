r"""Log-ratio ODEs along one flow trajectory (see "How it works" in the documentation).

A *field* is any callable ``field(x, t, codes) -> (velocity, score)`` on tensors: the trained
:class:`~scratio.core.network.ConditionalFlowNet` or a closed-form
:class:`~scratio.core.analytic.GaussianConditionalField`. ``codes`` are ``(n, n_keys)``
integer tensors, one row per cell, so every cell may carry its own conditions.

Every estimator integrates an augmented state ``(x_t, a_t)`` from the cell at ``t = 1``
back to noise at ``t = 0`` with ``a_1 = 0`` and ``da/dt = dQ/dt`` for the tracked quantity
``Q``; then ``Q_1 - Q_0 = -a_0``. For log-ratios ``Q_0 = 0``; for log-likelihoods
``Q_0 = log N(x_0; 0, I)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import jvp, vmap
from torchdiffeq import odeint

from scratio._deprecation import renamed_keywords

from .network import _quadratic_forms

Field = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

FIXED_STEP_METHODS = ("euler", "midpoint", "heun3", "rk4", "explicit_adams", "implicit_adams")
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
#: How a log-ratio is integrated: along the numerator's field, along a base field, or as two likelihoods.
ESTIMATORS = ("s1", "s2", "naive")
#: How the divergence of the velocity is taken.
DIVERGENCES = ("exact", "hutchinson")
#: Arithmetic of the network, named as Lightning names it: float32 throughout (the default), or its
#: matrix products in bfloat16 with everything else (the ODE state, divergences, any base field) in float32.
PRECISIONS = ("32-true", "bf16-mixed")


@dataclass(frozen=True)
class Solver:
    """How to integrate and how to take divergences: one object for every scoring function.

    Parameters
    ----------
    method
        A torchdiffeq method. Fixed-step methods (default ``"rk4"``) make each cell's result
        independent of which cells share its batch; adaptive ones (``"dopri5"``, ...) use
        ``rtol``/``atol`` and pick steps per batch.
    n_steps
        Steps from ``t = 1`` to ``t = 0`` for fixed-step methods.
    rtol, atol
        Tolerances of adaptive methods.
    divergence
        ``"exact"`` (Jacobian trace, ``d`` forward-mode products) or ``"hutchinson"``
        (``n_probes`` Rademacher probes, fixed along each trajectory).
    n_probes
        Probes per cell for ``"hutchinson"``.
    seed
        Seed of the Hutchinson probes. A cell's probes depend on its key and the seed only, not
        on its batch (:class:`~scratio.RatioFlow` keys each cell by its coordinates).
    start
        Time in ``(0, 1]`` at which a cell ``x`` enters the flow, as ``start * x``. At 1 the
        cell is scored under the densities the field learned; below 1, under those densities
        smoothed by a Gaussian kernel of standard deviation
        :meth:`GaussianPath.bandwidth(start) <scratio.core.GaussianPath.bandwidth>`, which
        :meth:`~scratio.core.GaussianPath.smoothing_time` inverts.
    precision
        ``"32-true"`` (float32 throughout) or ``"bf16-mixed"``: the network evaluated under
        :class:`torch.autocast` in bfloat16, about twice as fast on processors with bfloat16
        matrix units (Intel AMX; recent GPUs) and slower on others; the field values are
        rounded to about three significant digits before they enter the float32 integration.
    condition_weight
        How much of a :class:`~scratio.core.ConditionalFlowNet`'s learned correction's dependence
        on the conditions the scored fields keep, in ``[0, 1]``
        (:meth:`~scratio.core.ConditionalFlowNet.forward_under_conditions`): ``1`` (default) the
        network as trained; ``0`` the same correction under every condition, so that only its
        base tells them apart. Other fields take only ``1``.
    """

    method: str = "rk4"
    n_steps: int = 3
    rtol: float = 1e-5
    atol: float = 1e-5
    divergence: str = "exact"
    n_probes: int = 1
    seed: int = 0
    start: float = 1.0
    precision: str = PRECISIONS[0]
    condition_weight: float = 1.0

    def __post_init__(self) -> None:
        methods = FIXED_STEP_METHODS + ADAPTIVE_METHODS
        if self.method not in methods:
            raise ValueError(f"Unknown solver {self.method!r}; choose one of {list(methods)}.")
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"Unknown divergence {self.divergence!r}; choose one of {list(DIVERGENCES)}.")
        if self.n_steps < 1 or self.n_probes < 1:
            raise ValueError("`n_steps` and `n_probes` must be positive integers.")
        if not 0.0 < self.start <= 1.0:
            raise ValueError(f"`start` must lie in (0, 1], got {self.start}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {self.precision!r}; choose one of {list(PRECISIONS)}.")
        if not 0.0 <= self.condition_weight <= 1.0:
            raise ValueError(f"`condition_weight` must lie in [0, 1], got {self.condition_weight}.")

    @property
    def fixed_step(self) -> bool:
        """Whether the solver takes a fixed grid of steps."""
        return self.method in FIXED_STEP_METHODS

    def time_grid(self, start: float, end: float, like: torch.Tensor) -> torch.Tensor:
        """Grid of times handed to ``odeint``."""
        n = self.n_steps + 1 if self.fixed_step else 2
        return torch.linspace(start, end, n, dtype=like.dtype, device=like.device)

    def integrate(self, rhs, state, start: float, end: float):
        """Integrate ``rhs`` over ``[start, end]`` and return the final state."""
        ts = self.time_grid(start, end, state[0])
        kwargs = {} if self.fixed_step else {"rtol": self.rtol, "atol": self.atol}
        return tuple(s[-1] for s in odeint(rhs, state, ts, method=self.method, **kwargs))

    def integrate_from_cells(self, rhs, x: torch.Tensor, *accumulated: torch.Tensor):
        """Integrate ``rhs`` from the cells ``x``, entering at :attr:`start`, back to noise at ``t = 0``."""
        return self.integrate(rhs, (self.start * x, *accumulated), self.start, 0.0)

    def log_jacobian(self, n_dims: int) -> float:
        """``log`` of the Jacobian of ``x -> start * x``, which turns a density at ``start`` into one of ``x``."""
        return n_dims * math.log(self.start)

    def probes(self, n_dims: int, index: torch.Tensor) -> torch.Tensor:
        """Tangent directions ``(n_probes or d, n, d)`` whose quadratic forms average to the trace.

        ``index`` holds a key per cell (its global position, or a hash of its coordinates);
        Rademacher signs come from a hash of ``(seed, key, probe, dimension)`` so they do not
        depend on the batching.
        """
        n = len(index)
        if self.divergence == "exact":
            return torch.eye(n_dims, dtype=torch.float32)[:, None, :].expand(n_dims, n, n_dims)
        probe = torch.arange(self.n_probes)[:, None, None]
        dim = torch.arange(n_dims)[None, None, :]
        key = (index.to(torch.int64)[None, :, None] * 1_000_003 + probe * 7_919 + dim) * 2_654_435_761
        key = key + self.seed * 97_531
        bits = (key ^ (key >> 13)) * 1_274_126_177
        signs = ((bits >> 17) & 1).to(torch.float32) * 2 - 1
        return signs / math.sqrt(self.n_probes)


def network_precision(precision: str, device: torch.device) -> torch.autocast:
    """:class:`torch.autocast` in bfloat16 on ``device`` for ``"bf16-mixed"``, disabled for ``"32-true"``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


def evaluate(
    field: Field,
    x: torch.Tensor,
    t: torch.Tensor,
    codes: tuple[torch.Tensor, ...],
    probes: torch.Tensor,
    *,
    precision: str = Solver.precision,
    relative: bool = False,
    condition_weight: float | Sequence[float] = Solver.condition_weight,
):
    """Velocity, score and Jacobian quadratic forms of the field under each condition.

    The quadratic form of condition ``k`` is ``q_k = sum_p e_p^T J_k e_p`` over the probes
    ``e_p``: the exact divergence of ``v_k`` for the identity basis, Hutchinson's estimate for
    scaled Rademacher probes. Both are linear in the Jacobian, so the divergence of a
    difference field is the difference of quadratic forms taken with the same probes. A
    closed-form part of the field (a base) adds its exact divergence instead.

    Parameters
    ----------
    field
        Velocity-and-score callable; its ``forward_under_conditions`` method, when present, gives
        the quadratic forms, else ``torch.func`` forward mode.
    x
        ``(n, d)`` points.
    t
        Scalar time.
    codes
        One ``(n, n_keys)`` code tensor per condition; all are evaluated in one batched call.
    probes
        ``(P, n, d)`` tangent directions.
    precision
        ``"32-true"`` or ``"bf16-mixed"`` (as :class:`Solver`'s); the field's outputs are
        returned in the dtype of ``x``.
    relative
        Whether the caller uses only differences of the quadratic forms between conditions,
        so that a term common to all may be left out
        (:meth:`ConditionalFlowNet.forward_under_conditions <scratio.core.ConditionalFlowNet.forward_under_conditions>`).
    condition_weight
        As :class:`Solver`'s, or one per condition; a field without ``forward_under_conditions``
        takes only ``1``.

    Returns
    -------
    Lists ``velocities``, ``scores`` (each ``(n, d)``) and ``quadratic_forms`` (each ``(n,)``).
    """
    probes = probes.to(device=x.device, dtype=x.dtype)  # probes are made on the CPU
    with network_precision(precision, x.device):
        if hasattr(field, "forward_under_conditions"):
            fields = field.forward_under_conditions(
                x, t, codes, probes, relative=relative, condition_weight=condition_weight
            )
        elif np.any(np.asarray(condition_weight) != 1):
            raise ValueError(
                f"`condition_weight` {condition_weight} needs a network with `forward_under_conditions` "
                "(a ConditionalFlowNet); other fields take only 1."
            )
        else:
            n, repeats = len(x), len(codes)
            x_all, codes_all = x.repeat(repeats, 1), torch.cat(codes)
            probes_all = probes.repeat(1, repeats, 1)

            def along(tangent):
                return jvp(lambda y: field(y, t, codes_all), (x_all,), (tangent,), has_aux=True)

            velocity, d_velocity, score = vmap(along, out_dims=(None, 0, None))(probes_all)
            quadratic = _quadratic_forms(probes_all, d_velocity)
            fields = velocity.split(n), score.split(n), quadratic.split(n)
    return tuple([v.to(x.dtype) for v in part] for part in fields)


@renamed_keywords(null="base", options="solver")
def log_ratio(
    field: Field,
    x: torch.Tensor,
    numerator: torch.Tensor,
    denominator: torch.Tensor,
    *,
    estimator: str = "s1",
    base: torch.Tensor | None = None,
    solver: Solver = Solver(),
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log p(x | numerator) - log p(x | denominator)`` for each row of ``x``.

    Parameters
    ----------
    field
        Velocity-and-score callable.
    x
        ``(n, d)`` points at ``t = 1``.
    numerator, denominator
        ``(n, n_keys)`` condition codes.
    estimator
        One of :data:`ESTIMATORS`: ``"s1"`` simulates the numerator's field, ``"s2"`` the field
        of ``base`` (required then; usually every key set to null), ``"naive"`` integrates two
        separate CNF likelihoods and subtracts them.
    base
        Codes of the condition whose field the trajectory follows, for ``"s2"``.
    solver
        Solver and divergence settings.
    index
        Global positions of the rows, for batch-independent Hutchinson probes.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"Unknown estimator {estimator!r}; choose one of {ESTIMATORS}.")
    index = torch.arange(len(x)) if index is None else index
    if estimator == "naive":
        both = log_likelihood(
            field, x.repeat(2, 1), torch.cat([numerator, denominator]), solver=solver, index=index.repeat(2)
        )
        return both[: len(x)] - both[len(x) :]
    if estimator == "s2" and base is None:
        raise ValueError("The S2 estimator needs the codes of the `base` condition whose field it follows.")
    probes = solver.probes(x.shape[1], index)
    codes = (numerator, denominator) if estimator == "s1" else (numerator, denominator, base)

    def rhs(t, state):
        (v_num, v_den, *v_base), (s_num, s_den, *_), (q_num, q_den, *_) = evaluate(
            field,
            state[0],
            t,
            codes,
            probes,
            precision=solver.precision,
            relative=True,
            condition_weight=solver.condition_weight,
        )
        divergence = q_den - q_num
        if estimator == "s1":
            return v_num, divergence - (s_den * (v_num - v_den)).sum(-1)
        drift = v_base[0]
        return drift, divergence + (s_num * (drift - v_num)).sum(-1) - (s_den * (drift - v_den)).sum(-1)

    with torch.no_grad():
        _, a0 = solver.integrate_from_cells(rhs, x, x.new_zeros(len(x)))
    return -a0


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` per row."""
    return -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


@renamed_keywords(options="solver")
def log_likelihood(
    field: Field,
    x: torch.Tensor,
    codes: torch.Tensor,
    *,
    solver: Solver = Solver(),
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """CNF log-likelihood ``log p(x | codes)``: ``log N(x_0) - integral_0^1 div v dt``."""
    index = torch.arange(len(x)) if index is None else index
    probes = solver.probes(x.shape[1], index)

    def rhs(t, state):
        (v,), _, (q,) = evaluate(
            field,
            state[0],
            t,
            (codes,),
            probes,
            precision=solver.precision,
            condition_weight=solver.condition_weight,
        )
        return v, -q

    with torch.no_grad():
        x0, a0 = solver.integrate_from_cells(rhs, x, x.new_zeros(len(x)))
    return standard_normal_log_density(x0) - a0 + solver.log_jacobian(x.shape[1])


@renamed_keywords(options="solver")
def category_log_ratios(
    field: Field,
    x: torch.Tensor,
    categories: list[torch.Tensor],
    base: torch.Tensor,
    *,
    solver: Solver = Solver(),
    index: torch.Tensor | None = None,
    base_log_likelihood: bool = True,
    category_weights: Sequence[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every ``log p(x | c_k) / p(x | base)`` and ``log p(x | base)`` from one trajectory.

    The trajectory follows the base field (S2); for each of the ``K`` conditions it tracks
    ``dl_k/dt = div(v_base - v_k) + s_k . (v_base - v_k)``, and ``log p(x | base)`` through
    ``-div v_base``. Without ``base_log_likelihood`` only differences of divergences are
    taken, which costs less for a network blind to the conditions
    (:meth:`ConditionalFlowNet.forward_under_conditions <scratio.core.ConditionalFlowNet.forward_under_conditions>`).
    ``category_weights`` gives each category its own condition weight in place of the solver's,
    which the base keeps: the same categories at several weights along one trajectory, whose
    field, the base's, is the same at every weight when every key of the base is null.

    Returns
    -------
    ``(log_ratios, base_log_likelihood)`` of shapes ``(n, K)`` and ``(n,)``; the latter is
    ``None`` without ``base_log_likelihood``.
    """
    index = torch.arange(len(x)) if index is None else index
    probes = solver.probes(x.shape[1], index)
    codes = (*categories, base)
    weights = (
        solver.condition_weight if category_weights is None else [*category_weights, solver.condition_weight]
    )

    def rhs(t, state):
        (*v, v_base), (*s, _), (*q, q_base) = evaluate(
            field,
            state[0],
            t,
            codes,
            probes,
            precision=solver.precision,
            relative=not base_log_likelihood,
            condition_weight=weights,
        )
        dl = torch.stack(
            [q_base - q_k + (s_k * (v_base - v_k)).sum(-1) for v_k, s_k, q_k in zip(v, s, q, strict=True)],
            dim=1,
        )
        return (v_base, dl, -q_base) if base_log_likelihood else (v_base, dl)

    accumulated = [x.new_zeros(len(x), len(categories))]
    if base_log_likelihood:
        accumulated.append(x.new_zeros(len(x)))
    with torch.no_grad():
        x0, a0, *b0 = solver.integrate_from_cells(rhs, x, *accumulated)
    if not base_log_likelihood:
        return -a0, None
    return -a0, standard_normal_log_density(x0) - b0[0] + solver.log_jacobian(x.shape[1])


@renamed_keywords(options="solver")
def sample(
    field: Field, codes: torch.Tensor, noise: torch.Tensor, *, solver: Solver = Solver()
) -> torch.Tensor:
    """Push ``noise`` (``t = 0``) along the conditional field to data (``t = 1``)."""

    def rhs(t, state):
        with network_precision(solver.precision, state[0].device):
            velocity = field(state[0], t, codes)[0]
        return (velocity.to(state[0].dtype),)

    with torch.no_grad():
        (x1,) = solver.integrate(rhs, (noise,), 0.0, 1.0)
    return x1


def __getattr__(name: str):
    if name == "SolverOptions":  # the 0.1 name
        import warnings

        warnings.warn(
            "`scratio.core.SolverOptions` is renamed `scratio.core.Solver`; the old name will be removed in 0.3.",
            FutureWarning,
            stacklevel=2,
        )
        return Solver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
