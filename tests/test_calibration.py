"""Held-out calibration of differential abundance log-ratios (``calibrate=True``)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from test_tl import FAST, da_data, forbid_training

import scratio as sr
from scratio.core.calibration import fit_logit_scale

torch.set_num_threads(1)
sr.settings.verbosity = 0


# ---------------------------------------------------------------- the fit, on arrays
def test_the_scale_of_an_overconfident_log_ratio_is_recovered():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(scale=1.5, size=4000)
    labels = rng.random(4000) < 1 / (1 + np.exp(-(true_logit + 0.3)))
    fit = fit_logit_scale(2.5 * true_logit, labels, 0.3)  # 2.5 times too large
    assert fit.scale_mle == pytest.approx(0.4, abs=0.03)
    assert fit.standard_error < 0.02
    assert fit.scale == pytest.approx(fit.scale_mle - fit.standard_error)
    assert fit.n_cells == 4000


def test_noise_and_anticorrelated_log_ratios_scale_to_zero():
    rng = np.random.default_rng(1)
    zeros = 0
    for _ in range(50):
        labels = rng.random(70) < 0.5
        fit = fit_logit_scale(rng.normal(size=70), labels, 0.0)
        assert fit.scale >= 0 and fit.scale_mle >= 0
        zeros += fit.scale == 0
    assert zeros >= 35  # about 84% of pure-noise fits are 0 after one standard error
    labels = rng.random(200) < 0.5
    anti = fit_logit_scale(np.where(labels, -1.0, 1.0), labels, 0.0)
    assert anti.scale == anti.scale_mle == 0.0
    flat = fit_logit_scale(np.zeros(10), labels[:10], 0.0)
    assert flat.scale == 0.0 and np.isinf(flat.standard_error)


def test_bad_input_of_the_fit():
    with pytest.raises(ValueError, match="one length"):
        fit_logit_scale(np.zeros(3), np.zeros(4, dtype=bool), 0.0)
    with pytest.raises(ValueError, match="finite"):
        fit_logit_scale(np.array([np.nan]), np.array([True]), 0.0)


# ---------------------------------------------------------------- the tool
def test_random_labels_calibrate_to_a_low_noise_floor():
    adata = da_data(1500, n_dims=8, p_target=(0.5, 0.5, 0.5), random_state=3)  # no difference anywhere
    sr.tl.differential_abundance(adata, "condition", "control", "treated", calibrate=True, **FAST)
    scores = adata.obs["scratio_da"].to_numpy()
    fit = adata.uns["scratio_da"]["calibration"].loc["treated"]
    assert fit["n_cells"] == 150
    # the labels of the held-out cells do not follow the log-ratios: no scale is supported
    assert fit["scale"] == 0 and fit["scale_mle"] < 2 * fit["standard_error"]
    # the held-out cells fit the scale, so they do not also choose the bandwidth (that inflated the scale)
    assert adata.uns["scratio_da"]["params"]["bandwidth_used"] == 0.6
    assert "bandwidth_selection" not in adata.uns["scratio_da"]
    assert scores.std() < 0.03
    assert np.mean(np.abs(scores) > np.log(1.5)) < 0.01


def test_a_planted_effect_keeps_its_sign_and_size(tmp_path):
    adata = da_data(1500, random_state=4)  # true log-odds 0, log 4, -log 4 in clusters c0, c1, c2
    sr.tl.differential_abundance(adata, "condition", "control", "treated", calibrate=True, **FAST)
    uns = adata.uns["scratio_da"]
    assert uns["params"]["calibrate"] is True
    table = uns["calibration"]
    assert list(table.columns) == ["scale", "scale_mle", "standard_error", "shrink", "offset", "n_cells"]
    assert 0.5 < table.loc["treated", "scale"] <= table.loc["treated", "scale_mle"] < 1.6
    means = adata.obs["scratio_da"].groupby(adata.obs["cluster"], observed=True).mean()
    assert 0.6 < means["c1"] < 2.0
    assert -2.0 < means["c2"] < -0.6
    assert abs(means["c0"]) < 0.3
    adata.write_h5ad(tmp_path / "calibrated.h5ad")
    back = ad.read_h5ad(tmp_path / "calibrated.h5ad")
    pd.testing.assert_frame_equal(back.uns["scratio_da"]["calibration"], table, check_dtype=False)


def test_calibration_needs_held_out_cells_of_this_training(monkeypatch):
    adata = da_data(300)
    model = sr.RatioFlow(adata, condition_keys="condition", width=16)
    model.train(5, batch_size=64)
    assert model.held_out is not None and len(model.held_out) == 30
    forbid_training(monkeypatch)
    with pytest.raises(ValueError, match="passed `model`"):
        sr.tl.differential_abundance(adata, "condition", "control", calibrate=True, model=model)
    adata.obs["sample"] = adata.obs["condition"].astype(str) + np.asarray(["_a", "_b"])[np.arange(300) % 2]
    with pytest.raises(ValueError, match="sample_key"):
        sr.tl.differential_abundance(adata, "condition", "control", calibrate=True, sample_key="sample")
    with pytest.raises(ValueError, match="held out"):
        sr.tl.differential_abundance(
            adata, "condition", "control", calibrate=True, train_kwargs={"validation_fraction": 0}
        )
    with pytest.raises(ValueError, match="held out"):
        sr.tl.differential_abundance(da_data(100), "condition", "control", calibrate=True)
