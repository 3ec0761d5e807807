"""Shared test data and checks."""

import numpy as np
import torch

import scratio as sr

SHIFTED = {"condition": "shifted"}
REFERENCE = {"condition": "reference"}
SMALL_NETWORK = {"width": 96}


def r_squared(estimate, truth):
    return 1 - ((estimate - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()


def trained_pair(n_obs: int, n_dims: int, *, n_steps: int, **train_kwargs):
    adata = sr.datasets.shifted_gaussians(n_obs, n_dims, direction=np.full(n_dims, 2 / np.sqrt(n_dims)))
    model = sr.RatioFlow(adata, condition_keys="condition", **SMALL_NETWORK)
    model.train(n_steps, batch_size=512, **train_kwargs)
    return adata, adata.obs["true_log_ratio"].to_numpy(), model


def row_index(network, start: int, stop: int, device) -> torch.Tensor:
    """A block scorer that returns each row's index, to see where every row lands.

    Here, not in a test module, so that processes started by ``ddp_spawn`` can import it.
    """
    return torch.arange(start, stop, dtype=torch.float32)
