from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.figure import Figure

from scratio import pl

FIGURES = Path("/tmp/scratio_pl")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _save(fig: Figure, name: str) -> None:
    FIGURES.mkdir(exist_ok=True)
    fig.savefig(FIGURES / f"{name}.png", dpi=80, bbox_inches="tight")


@pytest.fixture
def adata() -> AnnData:
    """Cells with the outputs of all four tools, written by hand following the tools' contract."""
    rng = np.random.default_rng(0)
    n = 300
    cluster = pd.Categorical(rng.choice(["a", "b", "c", "d"], n), categories=["a", "b", "c", "d"])
    shift = pd.Series({"a": 0.0, "b": 2.0, "c": -1.5, "d": 0.5})[np.asarray(cluster)].to_numpy()
    obs = pd.DataFrame(
        {
            "leiden": cluster,
            "condition": pd.Categorical(rng.choice(["control", "treated"], n)),
            "batch": pd.Categorical(rng.choice(["b1", "b2"], n)),
            "drug1": pd.Categorical(rng.choice(["A", "B"], n)),
            "drug2": pd.Categorical(rng.choice(["control", "X", "Y"], n)),
            "donor": pd.Categorical(rng.choice(["d1", "d2", "d3"], n)),
            "treatment": pd.Categorical(rng.choice(["control", "IFNg", "TNF"], n)),
        },
        index=[f"cell{i}" for i in range(n)],
    )
    adata = AnnData(obs=obs, obsm={"X_umap": rng.normal(size=(n, 2)), "X_pca": rng.normal(size=(n, 5))})
    ratio = (shift + rng.normal(size=n)).astype(np.float32)
    ratio[7] = 30.0  # one outlier beyond the 99th percentile
    adata.obs["scratio_da"] = ratio
    adata.uns["scratio_da"] = {
        "params": {
            "tool": "differential_abundance",
            "columns": ["scratio_da"],
            "condition_key": "condition",
            "reference": "control",
            "targets": ["treated"],
            "groupby": "leiden",
        }
    }
    for key, scale in [("batch_before", 2.0), ("batch_after", 0.5)]:
        values = (scale * rng.normal(size=n)).astype(np.float32)
        adata.obs[key] = values
        summary = (
            adata.obs.assign(abs=np.abs(values))
            .groupby(["leiden", "batch"], observed=True)
            .agg(n_cells=(key, "size"), mean=(key, "mean"), mean_abs=("abs", "mean"))
            .reset_index()
        )
        adata.uns[key] = {
            "params": {
                "tool": "batch_effect_score",
                "batch_key": "batch",
                "label_key": "leiden",
                "use_rep": "X_pca",
            },
            "summary": summary,
            "score": float(np.abs(values).mean()),
        }
    combination = np.where(adata.obs["drug2"] == "control", np.nan, rng.normal(size=n)).astype(np.float32)
    adata.obs["scratio_combination"] = combination
    adata.uns["scratio_combination"] = {
        "params": {
            "tool": "combination_effect",
            "first_key": "drug1",
            "second_key": "drug2",
            "control": "control",
        },
        "summary": pd.DataFrame(
            {
                "first": ["B", "A", "A", "B"],
                "second": ["Y", "X", "Y", "X"],
                "n_cells": [50, 40, 45, 55],
                "mean": [-1.2, 0.8, 0.1, -0.05],
                "mean_abs": [1.5, 1.0, 0.4, 0.2],
            }
        ),
    }
    adata.obs["scratio_donor"] = np.where(adata.obs["treatment"] == "control", np.nan, 1.0).astype(np.float32)
    adata.uns["scratio_donor"] = {
        "params": {
            "tool": "donor_response",
            "donor_key": "donor",
            "treatment_key": "treatment",
            "control": "control",
        },
        "summary": pd.DataFrame(
            [[1.2, -0.3], [0.4, 0.1], [-2.5, 0.9]],
            index=pd.Index(["d1", "d2", "d3"]),
            columns=pd.Index(["IFNg", "TNF"]),
        ),
    }
    return adata


def _points(ax) -> PathCollection:
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    return points


def test_ratio_embedding_symmetric_and_extreme_on_top(adata):
    ax = pl.ratio_embedding(adata, show=False)
    points = _points(ax)
    ratio = adata.obs["scratio_da"].to_numpy()
    limit = np.percentile(np.abs(ratio), 99)
    assert points.get_clim() == pytest.approx((-limit, limit))
    assert limit < 30  # the outlier does not set the scale
    # Drawn last, hence on top: the most extreme cell.
    np.testing.assert_allclose(points.get_offsets()[-1], adata.obsm["X_umap"][7])
    drawn = np.abs(points.get_array())
    assert np.all(np.diff(drawn) >= 0)
    assert ax.get_title() == "scratio_da"
    _save(ax.figure, "ratio_embedding")


def test_ratio_embedding_nan_underneath_and_vmax(adata):
    fig = pl.ratio_embedding(adata, "scratio_donor", vmax=2.0, return_fig=True)
    assert isinstance(fig, Figure)
    points = _points(fig.axes[0])
    assert points.get_clim() == (-2.0, 2.0)
    n_control = int((adata.obs["treatment"] == "control").sum())
    drawn = np.ma.filled(points.get_array().astype(float), np.nan)
    assert np.isnan(drawn[:n_control]).all() and not np.isnan(drawn[n_control:]).any()


def test_ratio_distributions_ordered_by_median(adata):
    ax = pl.ratio_distributions(adata, show=False)  # groupby "leiden" from the tool's params
    medians = adata.obs.groupby("leiden", observed=True)["scratio_da"].median().sort_values(ascending=False)
    assert [label.get_text() for label in ax.get_xticklabels()] == list(medians.index)
    marked = [c for c in ax.collections if isinstance(c, PathCollection)][-1]
    np.testing.assert_allclose(marked.get_offsets()[:, 1], medians.to_numpy(), rtol=1e-6)
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 4  # one violin per group
    (zero_line,) = ax.get_lines()
    assert list(zero_line.get_ydata()) == [0, 0]
    assert ax.get_xlabel() == "leiden"
    _save(ax.figure, "ratio_distributions")


def test_ratio_distributions_strip_order_and_nan(adata):
    ax = pl.ratio_distributions(
        adata, "scratio_combination", "drug2", kind="strip", order=["Y", "X"], show=False
    )
    assert [label.get_text() for label in ax.get_xticklabels()] == ["Y", "X"]
    strips = [c for c in ax.collections if isinstance(c, PathCollection)][:-1]
    # Control cells were not scored (NaN) and are left out.
    assert sum(len(c.get_offsets()) for c in strips) == int((adata.obs["drug2"] != "control").sum())


def test_ratio_distributions_errors(adata):
    with pytest.raises(ValueError, match="kind"):
        pl.ratio_distributions(adata, kind="box")
    with pytest.raises(ValueError, match=r"\['control'\] of `order` have no scored cells"):
        pl.ratio_distributions(adata, "scratio_combination", "drug2", order=["control"])
    with pytest.raises(ValueError, match="pass `groupby`"):
        pl.ratio_distributions(adata, "scratio_combination")


def test_batch_effect_score_bars_match_table(adata):
    ax = pl.batch_effect_score(adata, ["batch_before", "batch_after"], labels=["PCA", "scVI"], show=False)
    for container, key in zip(ax.containers, ["batch_before", "batch_after"], strict=True):
        summary = adata.uns[key]["summary"]
        per_label = (summary["mean_abs"] * summary["n_cells"]).groupby(summary["leiden"], observed=True).sum()
        per_label /= summary.groupby("leiden", observed=True)["n_cells"].sum()
        np.testing.assert_allclose([bar.get_height() for bar in container], per_label.to_numpy(), rtol=1e-5)
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend[0] == f"PCA (score {adata.uns['batch_before']['score']:.3g})"
    assert [label.get_text() for label in ax.get_xticklabels()] == ["a", "b", "c", "d"]
    _save(ax.figure, "batch_effect_score")


def test_batch_effect_score_errors(adata):
    with pytest.raises(ValueError, match="name each of the 2 keys"):
        pl.batch_effect_score(adata, ["batch_before", "batch_after"], labels=["PCA"])
    with pytest.raises(ValueError, match="written by `sr.tl.differential_abundance`"):
        pl.batch_effect_score(adata, ["batch_before", "scratio_da"])
    with pytest.raises(KeyError, match=r"Run `sr.tl.batch_effect_score` first"):
        pl.batch_effect_score(adata, ["batch_before", "batch_scvi"])


def test_batch_effect_old_name_warns(adata):
    keys = ["batch_before", "batch_after"]
    with pytest.warns(
        FutureWarning, match=r"`scratio.pl.batch_effect` is renamed `scratio.pl.batch_effect_score`"
    ):
        ax = pl.batch_effect(adata, keys, show=False)
    new = pl.batch_effect_score(adata, keys, show=False)
    for old_bars, new_bars in zip(ax.containers, new.containers, strict=True):
        assert [bar.get_height() for bar in old_bars] == [bar.get_height() for bar in new_bars]


def test_combination_effect_bar(adata):
    ax = pl.combination_effect(adata, show=False)
    widths = [bar.get_width() for bar in ax.containers[0]]
    assert widths == [1.5, 1.0, 0.4, 0.2]
    assert [label.get_text() for label in ax.get_yticklabels()] == ["B + Y", "A + X", "A + Y", "B + X"]
    assert ax.yaxis_inverted()  # largest at the top
    _save(ax.figure, "combination_effect_bar")
    assert len(pl.combination_effect(adata, n_top=2, show=False).containers[0]) == 2


def test_combination_effect_heatmap(adata):
    ax = pl.combination_effect(adata, kind="heatmap", show=False)
    (image,) = ax.get_images()
    np.testing.assert_array_equal(image.get_array(), [[1.0, 0.4], [0.2, 1.5]])
    assert [label.get_text() for label in ax.get_yticklabels()] == ["A", "B"]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["X", "Y"]
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("drug1", "drug2")
    assert sorted(text.get_text() for text in ax.texts) == ["0.20", "0.40", "1.00", "1.50"]
    _save(ax.figure, "combination_effect_heatmap")
    with pytest.raises(ValueError, match="kind"):
        pl.combination_effect(adata, kind="pie")


def test_donor_response_heatmap(adata):
    fig = pl.donor_response(adata, return_fig=True)
    ax = fig.axes[0]
    (image,) = ax.get_images()
    np.testing.assert_array_equal(image.get_array(), adata.uns["scratio_donor"]["summary"].to_numpy())
    assert image.get_clim() == (-2.5, 2.5)
    assert image.get_cmap().name == "RdBu_r"
    assert [text.get_text() for text in ax.texts] == ["1.20", "-0.30", "0.40", "0.10", "-2.50", "0.90"]
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("donor", "treatment")
    _save(fig, "donor_response")
    assert pl.donor_response(adata, vmax=5, show=False).get_images()[0].get_clim() == (-5, 5)


@pytest.mark.parametrize(
    ("plot", "message"),
    [
        (lambda a: pl.ratio_embedding(a, "scratio_missing"), "No column 'scratio_missing' in `adata.obs`"),
        (lambda a: pl.combination_effect(a, "missing"), r"Run `sr.tl.combination_effect` first"),
        (lambda a: pl.donor_response(a, "missing"), r"Run `sr.tl.donor_response` first"),
    ],
)
def test_missing_key_errors(adata, plot, message):
    with pytest.raises(KeyError, match=message):
        plot(adata)


def test_missing_result_of_any_tool_says_what_to_run(adata):
    from scratio.pl._utils import get_result

    with pytest.raises(KeyError, match=r"Run `sr.tl.donor_response` first, .* \(default 'scratio_donor'\)"):
        get_result(adata, "missing", "donor_response")
    # A tool without a known default key still gets the message, not a bare KeyError.
    with pytest.raises(
        KeyError, match=r"Run `sr.tl.new_tool` first, or pass the `key_added` you used\.[\"']$"
    ):
        get_result(adata, "missing", "new_tool")
    with pytest.raises(KeyError, match=r"Run a `sr.tl` tool first"):
        pl.ratio_distributions(adata, "missing")


def test_several_targets_need_a_column(adata):
    adata.obs = adata.obs.rename(columns={"scratio_da": "scratio_da_treated"})
    adata.obs["scratio_da_other"] = adata.obs["scratio_da_treated"]
    adata.uns["scratio_da"]["params"]["columns"] = ["scratio_da_treated", "scratio_da_other"]
    with pytest.raises(KeyError, match="one column per target"):
        pl.ratio_embedding(adata, show=False)
    # The per-target column finds the tool's groupby.
    ax = pl.ratio_distributions(adata, "scratio_da_other", show=False)
    assert ax.get_xlabel() == "leiden"


def test_show_returns_none(adata, monkeypatch):
    monkeypatch.setattr(plt, "show", lambda: None)
    assert pl.donor_response(adata, show=True) is None
