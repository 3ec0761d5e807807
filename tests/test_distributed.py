"""Training and scoring through Lightning's distributed data parallel strategies on two CPU processes."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REFERENCE, SHIFTED, r_squared, row_index

import scratio as sr
from scratio._scoring import SharedRows
from scratio.core import RowBlocks, ScoringDevices, score_rows

needs_distributed = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch built without distributed support"
)


@needs_distributed
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


@needs_distributed
def test_processes_tear_their_process_group_down_at_exit(tmp_path):
    # A gloo group left to the interpreter's finalisation aborted a spawned process now and then.
    # An at-exit handler registered first runs last: it sees whether the group was torn down.
    script = (
        "import atexit, torch.distributed as dist\n"
        "from scratio.core.flow_matching import ProcessGroupTeardown\n"
        "from scratio.core.training import quiet_trainer\n"
        "atexit.register(lambda: print('initialized' if dist.is_initialized() else 'torn down'))\n"
        f"dist.init_process_group('gloo', init_method={(tmp_path / 'store').as_uri()!r}, rank=0, world_size=1)\n"
        "trainer = quiet_trainer(accelerator='cpu', enable_progress_bar=False)\n"
        "[teardown] = [c for c in trainer.callbacks if isinstance(c, ProcessGroupTeardown)]\n"
        "teardown.setup(trainer, None, stage='fit')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "torn down"


@pytest.mark.parametrize("n_rows", [1, 5, 1001])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shares_of_the_blocks_cover_every_row_once_in_order(n_rows, world_size):
    shares = [RowBlocks(n_rows, 100, rank=r, world_size=world_size) for r in range(world_size)]
    rows = [start for share in shares for start, stop in share for start in range(start, stop)]
    assert rows == list(range(n_rows))
    assert sum(share.n_cells for share in shares) == n_rows
    # the blocks are those of one process, whatever the number of processes
    assert [b for share in shares for b in share if b[0] < b[1]] == list(RowBlocks(n_rows, 100))


@needs_distributed
def test_two_processes_gather_the_rows_in_order_when_they_do_not_divide():
    network = torch.nn.Linear(2, 2)
    devices = ScoringDevices(accelerator="cpu", devices=2, strategy="ddp_spawn")
    values = score_rows(network, row_index, 1001, block_size=10, devices=devices)
    np.testing.assert_array_equal(values, np.arange(1001, dtype=np.float32))


@needs_distributed
def test_scoring_on_two_cpu_processes_matches_one_process():
    adata = sr.datasets.shifted_gaussians(1001, 3, direction=[1.0, 1.0, 0.0])
    model = sr.RatioFlow(adata, condition_keys="condition", width=32).train(30, batch_size=256)
    own = adata.obs["condition"].to_numpy()
    other = np.where(own == "shifted", "reference", "shifted")
    conditions = {"numerator": {"condition": own}, "denominator": {"condition": other}, "batch_size": 100}
    one = model.log_ratio(**conditions)
    two = model.log_ratio(**conditions, accelerator="cpu", devices=2, strategy="ddp_spawn")
    np.testing.assert_array_equal(two, one)
    assert model.device.type == "cpu"
    # Lightning on one device, the blocks of any size from 2 cells on: the same numbers
    fast = {"divergence": "hutchinson", "n_probes": 2}
    np.testing.assert_array_equal(
        model.category_log_likelihoods(**fast, batch_size=64, accelerator="cpu").to_numpy(),
        model.category_log_likelihoods(**fast, batch_size=1001).to_numpy(),
    )


def test_tools_score_where_they_are_told_and_record_it(tmp_path):
    adata = sr.datasets.batch_effect_design(n_cells=300, random_state=0)
    common = {"n_steps": 5, "batch_size": 64, "width": 16}
    sr.tl.batch_effect_score(adata, "batch", "cell_type", **common)
    here = adata.obs["scratio_batch"].to_numpy()
    scoring = adata.uns["scratio_batch"]["params"]["scoring"]
    assert {name: scoring[name] for name in ScoringDevices.names()} == {
        "accelerator": "cpu", "devices": 1, "strategy": "auto", "num_nodes": 1,
    }  # fmt: skip
    # Lightning's prediction loop on one CPU: the same numbers, recorded as such
    sr.tl.batch_effect_score(
        adata, "batch", "cell_type", accelerator="cpu", strategy="single_device", **common
    )
    np.testing.assert_array_equal(adata.obs["scratio_batch"].to_numpy(), here)
    assert adata.uns["scratio_batch"]["params"]["scoring"]["strategy"] == "single_device"
    adata.write_h5ad(tmp_path / "scored.h5ad")  # the record holds no None


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="a GPU is there")
@pytest.mark.filterwarnings("ignore:Scoring an untrained RatioFlow")
def test_devices_that_are_not_there_are_refused_before_training(monkeypatch):
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    adata = sr.datasets.batch_effect_design(n_cells=300, random_state=0)
    monkeypatch.setattr(sr.RatioFlow, "train", lambda *a, **k: pytest.fail("trained before the check"))
    with pytest.raises(MisconfigurationException, match="gpu"):
        sr.tl.batch_effect_score(adata, "batch", "cell_type", accelerator="gpu")
    with pytest.raises(ValueError, match="`num_nodes` must be a positive integer"):
        sr.tl.batch_effect_score(adata, "batch", "cell_type", num_nodes=0)
    model = sr.RatioFlow(adata, condition_keys="batch", width=16)
    with pytest.raises(MisconfigurationException, match="gpu"):
        model.log_likelihood(accelerator="gpu")


def test_one_device_scores_in_process_without_lightning(tmp_path):
    adata = sr.datasets.shifted_gaussians(200, 2)
    model = sr.RatioFlow(adata, condition_keys="condition", width=16).train(5, batch_size=64)
    model.save(tmp_path / "model")
    script = (
        "import sys, numpy as np, scratio as sr\n"
        f"model = sr.RatioFlow.load({str(tmp_path / 'model')!r})\n"
        "model.log_likelihood(np.zeros((3, 2), dtype=np.float32))\n"
        "print('lightning' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("view", ["rows", "columns", "whole", "rows of the memmap"])
def test_memory_mapped_cells_reach_spawned_processes_as_the_file(tmp_path, view):
    array = np.arange(4000, dtype=np.float32).reshape(400, 10)
    np.save(tmp_path / "cells.npy", array)
    mapped = np.load(tmp_path / "cells.npy", mmap_mode="r")
    cut = {"columns": np.s_[:, :7], "whole": np.s_[:]}.get(view, np.s_[150:260])
    # a slice of a memmap is a memmap too, with the offset of the whole file
    cells = mapped[cut] if view == "rows of the memmap" else np.asarray(mapped, dtype=np.float32)[cut]
    sent = pickle.dumps(SharedRows(cells))
    assert len(sent) < 1000  # the file's name and the view's place, not the cells
    np.testing.assert_array_equal(pickle.loads(sent)[:], array[cut])


def test_cells_in_memory_and_one_condition_for_all_reach_spawned_processes():
    cells = np.random.default_rng(0).standard_normal((300, 4), dtype=np.float32)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(SharedRows(cells)))[:], cells)
    one_condition = np.broadcast_to(np.array([1, 0]), (10**7, 2))
    sent = pickle.dumps(SharedRows(one_condition))
    assert len(sent) < 1000
    np.testing.assert_array_equal(pickle.loads(sent)[5:7], [[1, 0], [1, 0]])


def test_spawned_processes_log_and_draw_bars_as_the_caller():
    from scratio.core.flow_matching import BlockPrediction
    from scratio.core.network import ConditionalFlowNet

    before = (sr.settings.verbosity, sr.settings.progress_bar)
    try:
        sr.settings.verbosity, sr.settings.progress_bar = "info", False
        module = BlockPrediction(
            ConditionalFlowNet(2, width=4), None, torch.zeros(3), block_size=2, desc="cells"
        )
        sent = pickle.dumps(module)
        sr.settings.verbosity, sr.settings.progress_bar = 0, True  # a fresh process's own settings
        pickle.loads(sent)  # as a spawned process unpickles it
        assert (sr.settings.verbosity, sr.settings.progress_bar) == (2, False)
    finally:
        sr.settings.verbosity, sr.settings.progress_bar = before
