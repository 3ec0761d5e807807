from importlib.resources import files

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scratio as sr
from scratio import _cli
from scratio._version import __version__


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"scratio {__version__}\n"


def test_package_ships_py_typed():
    assert (files("scratio") / "py.typed").is_file()


def test_cluster_table_expects_density_ratios():
    # 30 treated and 10 control cells: a cluster without DA has log r = -log(3), not 0
    obs = pd.DataFrame(
        {
            "leiden": pd.Categorical(["0"] * 20 + ["1"] * 20),
            "condition": pd.Categorical(["treated"] * 10 + ["control"] * 10 + ["treated"] * 20),
            "true_log_odds": [0.0] * 20 + [np.inf] * 20,
            "scratio_da": np.linspace(-1, 1, 40),
        },
        index=[str(i) for i in range(40)],
    )
    table, offset = _cli.cluster_table(ad.AnnData(obs=obs))
    assert offset == pytest.approx(np.log(3))
    assert list(table.columns) == ["n_cells", "true log-odds", "expected log r", "mean log r"]
    assert table.loc["0", "expected log r"] == pytest.approx(-np.log(3))
    assert table.loc["0", "mean log r"] == pytest.approx(obs["scratio_da"].iloc[:20].mean())
    assert table["n_cells"].tolist() == [20, 20]


def test_demo_prints_expected_log_r(tmp_path, monkeypatch, capsys):
    # the demo end to end, on a subsample of the 700 cells (scoring time grows with the cells)
    load = sr.datasets.pbmc68k_da

    def subsample(*args, **kwargs):
        adata = load(*args, **kwargs)
        return adata[np.random.default_rng(0).choice(adata.n_obs, 120, replace=False)].copy()

    monkeypatch.setattr(sr.datasets, "pbmc68k_da", subsample)
    assert _cli.main(["demo", "--out", str(tmp_path), "--steps", "20"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("n_cells"))
    assert header.split() == ["n_cells", "true", "log-odds", "expected", "log", "r", "mean", "log", "r"]
    assert "expected log r = true log-odds - log(N_treated / N_control)" in out
    table = pd.read_csv(tmp_path / "pbmc68k_da_clusters.csv", index_col=0)
    offset = float(out.split("log(N_treated / N_control) = ")[1].split(":")[0])
    np.testing.assert_allclose(table["expected log r"], table["true log-odds"] - offset, atol=1e-3)
    assert (tmp_path / "pbmc68k_da_umap.png").is_file()
