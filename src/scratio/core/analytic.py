"""Closed-form fields of Gaussian conditionals, for testing the ODE engine apart from learning."""

from __future__ import annotations

import math

import torch
from torch import nn

from .paths import GaussianPath


class GaussianConditionalField(nn.Module):
    """Exact marginal velocity and score when ``p(x | c = k) = N(mean_k, cov_k)``.

    The null condition is the mixture ``sum_k weight_k N(mean_k, cov_k)``, whose marginal
    field and score are the responsibility-weighted averages of the components'. It has the
    call signature of :class:`~scratio.core.network.ConditionalFlowNet` for one condition key.

    Parameters
    ----------
    means
        ``(K, d)`` component means.
    covariances
        ``(K, d, d)`` component covariances.
    path
        The probability path that carries noise to data.
    weights
        ``(K,)`` mixture weights of the null condition; uniform by default.
    """

    def __init__(self, means, covariances, path: GaussianPath, weights=None):
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float64)
        self.register_buffer("means", means)
        self.register_buffer("covariances", torch.as_tensor(covariances, dtype=torch.float64))
        k = len(means)
        weights = torch.full((k,), 1.0 / k) if weights is None else torch.as_tensor(weights)
        self.register_buffer("log_weights", torch.log(weights.to(torch.float64)))
        self.path = path
        self.n_dims = means.shape[1]

    def forward(self, x: torch.Tensor, t: torch.Tensor, codes: torch.Tensor):  # noqa: D102
        t = torch.as_tensor(t, dtype=x.dtype)
        sigma = self.path.sigma(t)
        eye = torch.eye(self.n_dims, dtype=x.dtype)
        cov_t = t**2 * self.covariances.to(x.dtype) + sigma**2 * eye  # (K, d, d)
        precision = torch.linalg.inv(cov_t)
        centred = x[:, None, :] - t * self.means.to(x.dtype)  # (n, K, d)
        score = -torch.einsum("kij,nkj->nki", precision, centred)
        gain = t * self.covariances.to(x.dtype) + self.path.sigma_d_sigma(t) * eye
        velocity = self.means.to(x.dtype) - torch.einsum("kij,nkj->nki", gain, score)
        log_density = (
            0.5 * (centred * score).sum(-1)
            - 0.5 * torch.logdet(cov_t)
            - 0.5 * self.n_dims * math.log(2 * math.pi)
        )
        k = len(self.means)
        code = codes[:, 0]
        one_hot = nn.functional.one_hot(code.clamp_max(k - 1), k).to(x.dtype)
        responsibilities = torch.softmax(log_density + self.log_weights.to(x.dtype), dim=-1)
        weight = torch.where((code == k)[:, None], responsibilities, one_hot)
        return (weight[..., None] * velocity).sum(1), (weight[..., None] * score).sum(1)

    def log_prob(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Data log-density (``t = 1``) of component ``k``, or of the mixture for ``None``."""
        dist = torch.distributions.MultivariateNormal(
            self.means.to(x.dtype),
            covariance_matrix=self.covariances.to(x.dtype)
            + self.path.s_min**2 * torch.eye(self.n_dims, dtype=x.dtype),
        )
        per_component = dist.log_prob(x[:, None, :])
        if k is not None:
            return per_component[:, k]
        return torch.logsumexp(per_component + self.log_weights.to(x.dtype), dim=-1)
