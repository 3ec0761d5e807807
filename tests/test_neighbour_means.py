"""Differential abundance log-ratios averaged over each cell's nearest cells (``n_neighbors``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors
from test_tl import FAST, assert_unchanged, da_data, snapshot

import scratio as sr

torch.set_num_threads(1)
sr.settings.verbosity = 0


def _model(adata):
    options = {k: v for k, v in FAST.items() if k != "n_steps"}
    model = sr.RatioFlow(adata, condition_keys="condition", width=options.pop("width"))
    return model.train(FAST["n_steps"], **options)


def test_neighbour_means_average_each_cell_over_its_nearest_cells_and_cut_noise():
    adata = da_data(1200, p_target=(0.5, 0.5, 0.5), random_state=5)  # no difference anywhere
    model = _model(adata)
    sr.tl.differential_abundance(adata, "condition", "control", model=model, key_added="raw")
    sr.tl.differential_abundance(adata, "condition", "control", model=model, n_neighbors=15, key_added="mean")
    raw, mean = adata.obs["raw"].to_numpy(), adata.obs["mean"].to_numpy()
    x = adata.obsm["X_pca"]
    neighbours = NearestNeighbors(n_neighbors=15).fit(x).kneighbors(x, return_distance=False)
    np.testing.assert_allclose(mean, raw[neighbours].mean(axis=1), atol=1e-5)
    assert mean.dtype == np.float32 and np.isfinite(mean).all()
    assert mean.std() < 0.9 * raw.std()  # the model's errors are smooth in space: averaging removes part
    assert adata.uns["mean"]["params"]["n_neighbors"] == 15
    assert adata.uns["raw"]["params"]["n_neighbors"] is None


def test_neighbour_means_keep_a_planted_effect():
    adata = da_data(1200, random_state=6)  # true log-odds 0, log 4, -log 4 in clusters c0, c1, c2
    sr.tl.differential_abundance(adata, "condition", "control", n_neighbors=15, **FAST)
    means = adata.obs["scratio_da"].groupby(adata.obs["cluster"], observed=True).mean()
    assert means["c1"] > 0.6 and means["c2"] < -0.6 and abs(means["c0"]) < 0.3


@pytest.mark.parametrize(
    ("value", "message"),
    [(0, "from 1 to the number of cells"), (2.5, "integer"), (True, "integer"), (10**6, "1200")],
)
def test_bad_n_neighbors_is_refused_before_training(monkeypatch, value, message):
    monkeypatch.setattr(sr.RatioFlow, "train", lambda *a, **k: pytest.fail("trained before the check"))
    adata = da_data(1200)
    before = snapshot(adata)
    with pytest.raises(ValueError, match=message):
        sr.tl.differential_abundance(adata, "condition", "control", n_neighbors=value)
    assert_unchanged(adata, before)
    adata.obs["sample"] = adata.obs["condition"].astype(str) + np.asarray(["_a", "_b"])[np.arange(1200) % 2]
    before = snapshot(adata)
    with pytest.raises(ValueError, match="test over samples"):
        sr.tl.differential_abundance(adata, "condition", "control", n_neighbors=15, sample_key="sample")
    assert_unchanged(adata, before)
