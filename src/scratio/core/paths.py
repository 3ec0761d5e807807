"""Gaussian probability paths from noise (``t = 0``) to data (``t = 1``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from scratio._validation import is_finite_number

SCHEDULES = ("deterministic", "noise_at_data", "noise_on_path")
#: Noise at the data of the ``noise_at_data`` schedule, and width of the tube of ``noise_on_path``.
DEFAULT_S_MIN, DEFAULT_S_PATH = 0.05, 0.1


@dataclass(frozen=True)
class GaussianPath:
    r"""The Gaussian path family ``x_t = alpha_t x1 + sigma_t x0``.

    ``alpha_t = t`` and ``sigma_t = sqrt((1 - (1 - s_min) t)^2 + s_path t (1 - t))``.
    Two numbers span the three schedules of the method:

    ===================  ========  =======
    schedule             s_path    s_min
    ===================  ========  =======
    ``deterministic``    0         0
    ``noise_at_data``    0         > 0
    ``noise_on_path``    > 0       0
    ===================  ========  =======

    Parameters
    ----------
    s_min
        Standard deviation of the Gaussian left around each data point at ``t = 1``.
        With ``s_min > 0`` the model fits the data convolved with ``N(0, s_min^2 I)``.
    s_path
        Width of the Brownian-bridge-like tube around the straight noise-to-data line.
    """

    s_min: float = 0.0
    s_path: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.s_min < 1.0:
            raise ValueError(f"`s_min` must lie in [0, 1), got {self.s_min}.")
        if self.s_path < 0.0:
            raise ValueError(f"`s_path` must be non-negative, got {self.s_path}.")

    @classmethod
    def from_schedule(
        cls, schedule: str | GaussianPath, *, s_min: float | None = None, s_path: float | None = None
    ) -> GaussianPath:
        """Build a path from a schedule name (see the class table) or return a path unchanged.

        ``s_min`` and ``s_path`` default to 0.05 and 0.1 for the schedules that use them.
        """
        if isinstance(schedule, GaussianPath):
            return schedule
        s_min = DEFAULT_S_MIN if s_min is None else s_min
        s_path = DEFAULT_S_PATH if s_path is None else s_path
        if schedule == "deterministic":
            return cls()
        if schedule == "noise_at_data":
            return cls(s_min=s_min)
        if schedule == "noise_on_path":
            return cls(s_path=s_path)
        raise ValueError(f"Unknown schedule {schedule!r}; choose one of {SCHEDULES}.")

    @property
    def name(self) -> str:
        """The schedule's name, as accepted by :meth:`from_schedule`."""
        if self.s_path > 0:
            return "noise_on_path" if self.s_min == 0 else "mixed"
        return "noise_at_data" if self.s_min > 0 else "deterministic"

    def to_dict(self) -> dict[str, float | str]:
        """JSON-serialisable description."""
        return {"schedule": self.name, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> GaussianPath:
        """Inverse of :meth:`to_dict`."""
        return cls(s_min=float(d["s_min"]), s_path=float(d["s_path"]))

    # The schedule in closed form. ``t`` is a tensor broadcastable against the data.
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """``alpha_t = t``."""
        return t

    def d_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """``d alpha_t / dt = 1``."""
        return torch.ones_like(t)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise scale ``sigma_t``."""
        line = 1.0 - (1.0 - self.s_min) * t
        if self.s_path == 0:
            return line
        return torch.sqrt(line**2 + self.s_path * t * (1.0 - t))

    def sigma_d_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """``sigma_t * d sigma_t / dt``, finite everywhere."""
        return 0.5 * (
            self.s_path * (1.0 - 2.0 * t) - 2.0 * (1.0 - self.s_min) * (1.0 - (1.0 - self.s_min) * t)
        )

    def d_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """``d sigma_t / dt``.

        Constant for straight paths. With ``s_path > 0`` and ``s_min = 0`` it diverges like
        ``(1 - t)^(-1/2)`` at the data end, as the Brownian bridge does; training draws ``t``
        away from that end point.
        """
        if self.s_path == 0:
            return torch.full_like(t, -(1.0 - self.s_min))
        return self.sigma_d_sigma(t) / self.sigma(t).clamp_min(1e-6)

    def bandwidth(self, t: float) -> float:
        """``sigma_t / alpha_t``: the density at ``t`` is the data's smoothed by a Gaussian of this sd.

        The path's density at ``alpha_t x`` is ``alpha_t^(-d)`` times the data density convolved
        with ``N(0, (sigma_t / alpha_t)^2 I)`` at ``x``; at ``t = 1`` this is ``s_min``.
        """
        return float(self.sigma(torch.tensor(float(t), dtype=torch.float64)) / t)

    def smoothing_time(self, bandwidth: float) -> float:
        """The time ``t`` at which :meth:`bandwidth` equals ``bandwidth`` (at least ``s_min``).

        With ``u = 1 / t`` and ``c = 1 - s_min``, ``(sigma_t / t)^2 = (u - c)^2 + s_path (u - 1)``
        rises with ``u``, so the root is unique.
        """
        if not (is_finite_number(bandwidth) and bandwidth >= self.s_min):
            raise ValueError(
                f"`bandwidth` must be a finite number at least the model's `s_min` ({self.s_min}), got "
                f"{bandwidth}: the model knows the densities only smoothed by `s_min`. Pass a larger "
                "`bandwidth`, or `None` to score with the model's own."
            )
        c, p = 1.0 - self.s_min, self.s_path
        u = 0.5 * ((2 * c - p) + np.sqrt(p**2 + 4 * p * self.s_min + 4 * bandwidth**2))
        return float(min(1.0, 1.0 / u))

    def sample(self, x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor):
        """Point on the path and the regression targets.

        Returns
        -------
        ``(x_t, velocity_target, sigma_t)``: the score target is ``-x0 / sigma_t``, which the
        loss never forms explicitly (it matches ``sigma_t * score`` against ``-x0``).
        """
        t = t.reshape(-1, *([1] * (x1.dim() - 1)))
        sigma = self.sigma(t)
        x_t = self.alpha(t) * x1 + sigma * x0
        velocity = self.d_alpha(t) * x1 + self.d_sigma(t) * x0
        return x_t, velocity, sigma
