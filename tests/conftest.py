import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scratio as sr

sr.settings.verbosity = 0


def shifted_pair(n_obs: int = 2000, n_dims: int = 2, loc: float = 1.0, seed: int = 0):
    """Cells from N(loc, I) ("shifted") and N(0, I) ("reference") with the exact log-ratio."""
    rng = np.random.default_rng(seed)
    condition = np.repeat(["shifted", "reference"], n_obs // 2)
    x = rng.standard_normal((n_obs, n_dims)).astype(np.float32)
    x[condition == "shifted"] += loc
    adata = ad.AnnData(
        obs=pd.DataFrame({"condition": pd.Categorical(condition)}, index=[f"cell{i}" for i in range(n_obs)]),
        obsm={"X_pca": x},
    )
    return adata, loc * x.sum(1) - n_dims * loc**2 / 2


def r_squared(estimate, truth):
    return 1 - ((estimate - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()


FAST = {"width": 96}
FAST_TRAIN = {"n_steps": 600, "batch_size": 512}
SHIFTED = {"condition": "shifted"}
REFERENCE = {"condition": "reference"}


@pytest.fixture(scope="session")
def trained_2d():
    adata, truth = shifted_pair(2000, 2)
    model = sr.RatioFlow(adata, condition_keys="condition", **FAST).train(**FAST_TRAIN)
    return adata, truth, model


@pytest.fixture(scope="session")
def trained_10d():
    adata, truth = shifted_pair(3000, 10, loc=2 / np.sqrt(10))
    model = sr.RatioFlow(adata, condition_keys="condition", **FAST).train(n_steps=800, batch_size=512)
    return adata, truth, model
