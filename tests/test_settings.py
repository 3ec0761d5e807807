"""Log lines and progress bars follow scanpy's verbosity, go to stderr and reach the root logger."""

import logging
import warnings

import pytest
import scanpy as sc
from tqdm import TqdmWarning

import scratio as sr


@pytest.fixture
def follow_scanpy():
    before = (sr.settings.verbosity, sc.settings.verbosity)
    sr.settings.verbosity = None
    yield
    sr.settings.verbosity, sc.settings.verbosity = before


def run_tool():
    adata = sr.datasets.donor_design(300, n_dims=3, n_donors=3)
    sr.tl.donor_response(adata, "donor", "treatment", n_steps=30, batch_size=64, width=16)


def test_scanpy_verbosity_zero_silences_lines_and_bars(follow_scanpy, monkeypatch, capfd):
    without_root_handlers(monkeypatch)
    sc.settings.verbosity = 0
    run_tool()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def without_root_handlers(monkeypatch):
    """As in a fresh session: no handler on the root logger (pytest attaches its own for each test)."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])


def test_scanpy_info_shows_lines_and_one_bar_per_phase_on_stderr(follow_scanpy, monkeypatch, capfd):
    without_root_handlers(monkeypatch)
    sc.settings.verbosity = 2
    lightning_levels = [
        logging.getLogger(n).level for n in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric")
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", TqdmWarning)  # no "IProgress not found" without ipywidgets
        run_tool()
    out, err = capfd.readouterr()
    assert out == ""  # nothing on stdout: no "Epoch 0", no Lightning banner
    assert "training:" in err and "donor_response: added" in err and "Epoch" not in err
    assert "Validation" not in err and "GPU available" not in err
    # Lightning's loggers are quiet during the run only, not for the whole process
    assert [
        logging.getLogger(n).level for n in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric")
    ] == lightning_levels


def test_log_records_reach_the_root_logger_once(follow_scanpy, caplog, capfd):
    sc.settings.verbosity = 2
    with caplog.at_level(logging.INFO):
        run_tool()
    assert any(r.name == "scratio" and "donor_response: added" in r.getMessage() for r in caplog.records)
    # the root logger had a handler (caplog's): scratio did not also write the line itself
    assert "donor_response: added" not in capfd.readouterr().err


def test_scratio_levels_are_scanpys_and_override_it(follow_scanpy, monkeypatch, capfd):
    without_root_handlers(monkeypatch)
    sc.settings.verbosity = 0
    sr.settings.verbosity = "info"  # as scanpy names it: log lines, and progress bars
    run_tool()
    err = capfd.readouterr().err
    assert "donor_response: added" in err and "training:" in err
    sr.settings.verbosity = sc.Verbosity.warning  # scanpy's default: progress bars only
    run_tool()
    err = capfd.readouterr().err
    assert "donor_response: added" not in err and "training:" in err
    for bad in (5, "loud", True):
        with pytest.raises(ValueError, match="None \\(follow scanpy\\) or one of scanpy's levels"):
            sr.settings.verbosity = bad
    assert sr.settings.verbosity == sc.Verbosity.warning


def test_progress_bar_setting_overrides_the_verbosity(follow_scanpy, monkeypatch, capfd):
    without_root_handlers(monkeypatch)
    sc.settings.verbosity = 2
    sr.settings.progress_bar = False  # log lines without bars, e.g. in a log file
    try:
        run_tool()
        err = capfd.readouterr().err
        assert "donor_response: added" in err and "training:" not in err
        with pytest.raises(ValueError, match="`progress_bar` must be None"):
            sr.settings.progress_bar = "yes"
    finally:
        sr.settings.progress_bar = None


def test_debug_records_show_only_at_debug(follow_scanpy, monkeypatch, capfd):
    from scratio._settings import logger

    without_root_handlers(monkeypatch)
    sr.settings.verbosity = "info"
    logger.debug("a detail")
    assert "a detail" not in capfd.readouterr().err
    sr.settings.verbosity = "debug"
    logger.debug("a detail")
    assert "a detail" in capfd.readouterr().err
