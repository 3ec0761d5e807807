"""Training through Lightning's distributed data parallel strategy on two CPU processes."""

import numpy as np
import pytest
import torch
from helpers import REFERENCE, SHIFTED, r_squared

import scratio as sr


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed support")
def test_ddp_on_two_cpu_processes_matches_one_process():
    adata = sr.datasets.shifted_gaussians(2000, 2, direction=[1.0, 1.0])
    truth = adata.obs["true_log_ratio"].to_numpy()
    scores = {}
    for devices, strategy in [(1, "auto"), (2, "ddp_spawn")]:
        model = sr.RatioFlow(adata, condition_keys="condition", width=64)
        model.train(300, batch_size=256, accelerator="cpu", devices=devices, strategy=strategy)
        assert model.training_record["n_devices"] == devices
        scores[devices] = r_squared(model.log_ratio(numerator=SHIFTED, denominator=REFERENCE), truth)
    assert scores[2] >= 0.9
    assert scores[2] >= scores[1] - 0.03
    assert np.isfinite(list(scores.values())).all()
