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
ROOT = Path(__file__).resolve().parents[1]
# What the tools record in params["ratios"] for the columns of the fixture.
DA_RATIO = "log p(x | treated) / p(x | control)"
BATCH_RATIO = "log p(x | leiden, batch) / p(x | leiden)"
COMBINATION_RATIO = "log p(x | drug1, drug2) / p(x | drug1, control)"
DONOR_RATIO = "log p(x | donor, treatment) / p(x | donor, control)"


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
            "ratios": [DA_RATIO],
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
                "columns": [key],
                "ratios": [BATCH_RATIO],
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
            "columns": ["scratio_combination"],
            "ratios": [COMBINATION_RATIO],
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
            "columns": ["scratio_donor"],
            "ratios": [DONOR_RATIO],
        },
        "summary": pd.DataFrame(
            [[1.2, -0.3], [0.4, 0.1], [-2.5, 0.9]],
            index=pd.Index(["d1", "d2", "d3"]),
            columns=pd.Index(["IFNg", "TNF"]),
        ),
    }
    return adata


def _one_line(text: str) -> str:
    """A label as one line: long ratios are broken before their "/"."""
    return text.replace("\n", " ")


def _tick_names(labels) -> list[str]:
    """The group names of tick labels "name\nn = 123"."""
    return [label.get_text().split("\n")[0] for label in labels]


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
    assert _one_line(ax.get_title()) == DA_RATIO
    _save(ax.figure, "ratio_embedding")


def test_ratio_embedding_nan_underneath_and_vmax(adata):
    fig = pl.ratio_embedding(adata, "scratio_donor", vmax=2.0, return_fig=True)
    assert isinstance(fig, Figure)
    points = _points(fig.axes[0])
    assert points.get_clim() == (-2.0, 2.0)
    n_control = int((adata.obs["treatment"] == "control").sum())
    drawn = np.ma.filled(points.get_array().astype(float), np.nan)
    assert np.isnan(drawn[:n_control]).all() and not np.isnan(drawn[n_control:]).any()


def test_ratio_embedding_greys_cells_that_are_not_significant(adata):
    significant = np.abs(adata.obs["scratio_da"].to_numpy()) > 1.5
    adata.obs["scratio_da_significant"] = significant
    adata.uns["scratio_da"]["test"] = {
        "alpha": 0.1,
        "columns": {"treated": ["scratio_da_fdr", "scratio_da_significant"]},
    }
    ax = pl.ratio_embedding(adata, mask_obs="scratio_da_significant", show=False)
    drawn = np.ma.filled(_points(ax).get_array().astype(float), np.nan)
    n_grey = int((~significant).sum())
    # grey cells first (underneath), without a colour; then the significant ones, coloured
    assert np.isnan(drawn[:n_grey]).all() and not np.isnan(drawn[n_grey:]).any()
    assert ax.get_title().endswith("grey: not significant (FDR ≥ 0.1)")
    _save(ax.figure, "ratio_embedding_significant")
    adata.uns["scratio_da"]["test"]["min_log_ratio"] = float(np.log(1.5))
    ax = pl.ratio_embedding(adata, mask_obs="scratio_da_significant", show=False)
    assert ax.get_title().endswith("grey: no significant change beyond 1.5-fold (FDR ≥ 0.1)")
    ax = pl.ratio_embedding(adata, mask_obs=~significant, show=False)
    assert ax.get_title().endswith("grey: cells not in mask_obs")
    with pytest.raises(KeyError, match=r"'scratio_da_sig'.*not a column.*_significant"):
        pl.ratio_embedding(adata, mask_obs="scratio_da_sig")
    with pytest.raises(ValueError, match=r"boolean with one value per cell \(300\)"):
        pl.ratio_embedding(adata, mask_obs=np.ones(10, dtype=bool))


def test_ratio_distributions_ordered_by_median(adata):
    ax = pl.ratio_distributions(adata, show=False)  # groupby "leiden" from the tool's params
    medians = adata.obs.groupby("leiden", observed=True)["scratio_da"].median().sort_values(ascending=False)
    assert _tick_names(ax.get_xticklabels()) == list(medians.index)
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
    assert _tick_names(ax.get_xticklabels()) == ["Y", "X"]
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
    assert _tick_names(ax.get_xticklabels()) == ["a", "b", "c", "d"]
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


# Figures to publish: what is shown, the zero line, cell counts, legible labels, missing values.


def test_ratio_embedding_says_what_is_shown(adata):
    ax = pl.ratio_embedding(adata, show=False)
    assert _one_line(ax.get_title()) == DA_RATIO  # not the obs key "scratio_da"
    # With a title of one's own (a panel name), the colour bar says what is shown.
    ax = pl.ratio_embedding(adata, title="PCA", show=False)
    assert ax.get_title() == "PCA"
    assert _one_line(_points(ax).colorbar.ax.get_ylabel()) == DA_RATIO
    # Nothing recorded (results of older versions): the column's name.
    del adata.uns["scratio_da"]["params"]["ratios"]
    assert pl.ratio_embedding(adata, show=False).get_title() == "scratio_da"


def test_ratio_embedding_per_target_column_title(adata):
    adata.obs = adata.obs.rename(columns={"scratio_da": "scratio_da_treated"})
    adata.obs["scratio_da_other"] = -adata.obs["scratio_da_treated"]
    adata.uns["scratio_da"]["params"]["columns"] = ["scratio_da_treated", "scratio_da_other"]
    adata.uns["scratio_da"]["params"]["ratios"] = [DA_RATIO, "log p(x | other) / p(x | control)"]
    ax = pl.ratio_embedding(adata, "scratio_da_other", show=False)
    assert _one_line(ax.get_title()) == "log p(x | other) / p(x | control)"


def test_ratio_distributions_axis_says_what_is_shown(adata):
    ax = pl.ratio_distributions(adata, show=False)
    assert _one_line(ax.get_ylabel()) == DA_RATIO
    ax = pl.ratio_distributions(adata, "batch_before", "leiden", show=False)
    assert _one_line(ax.get_ylabel()) == BATCH_RATIO


def test_batch_effect_score_axis_says_what_is_shown(adata):
    ax = pl.batch_effect_score(adata, ["batch_before", "batch_after"], show=False)
    assert _one_line(ax.get_ylabel()) == f"mean |{BATCH_RATIO}|"
    # Results that record nothing, or different ratios: the generic name.
    del adata.uns["batch_after"]["params"]["ratios"]
    ax = pl.batch_effect_score(adata, ["batch_before", "batch_after"], show=False)
    assert ax.get_ylabel() == "mean |log r|"


def test_heatmaps_say_what_is_shown(adata):
    fig = pl.donor_response(adata, return_fig=True)
    ax, colorbar = fig.axes
    assert _one_line(colorbar.get_ylabel()) == f"mean {DONOR_RATIO}"
    assert ax.get_title() == "treatment vs control, per donor"  # not "scratio_donor"
    fig = pl.combination_effect(adata, kind="heatmap", return_fig=True)
    ax, colorbar = fig.axes
    assert _one_line(colorbar.get_ylabel()) == f"mean |{COMBINATION_RATIO}|"
    assert ax.get_title() == "drug2 vs control, given drug1"
    ax = pl.combination_effect(adata, show=False)
    assert _one_line(ax.get_xlabel()) == f"mean |{COMBINATION_RATIO}|"


@pytest.mark.parametrize("kind", ["violin", "strip"])
@pytest.mark.parametrize("axisbelow", [True, "line", False])
def test_ratio_distributions_zero_line_on_top(adata, kind, axisbelow):
    # scanpy's style (sc.set_figure_params) draws a grid.
    with plt.rc_context({"axes.grid": True, "axes.axisbelow": axisbelow}):
        ax = pl.ratio_distributions(adata, kind=kind, show=False)
        ax.figure.canvas.draw()
    (zero_line,) = ax.get_lines()
    assert list(zero_line.get_ydata()) == [0, 0]
    *cells, medians = ax.collections
    assert cells
    assert zero_line.get_zorder() > max(collection.get_zorder() for collection in cells)
    assert zero_line.get_zorder() > max(ax.xaxis.get_zorder(), ax.yaxis.get_zorder())  # the grid lines
    assert zero_line.get_zorder() < medians.get_zorder()
    if axisbelow is not False:  # the grid lies under the cells too
        assert min(collection.get_zorder() for collection in cells) > ax.yaxis.get_zorder()
    assert zero_line.get_visible() and zero_line.get_alpha() in (None, 1)


def test_ratio_distributions_cell_counts(adata):
    ax = pl.ratio_distributions(adata, "scratio_combination", "drug2", show=False)
    scored = adata.obs.dropna(subset=["scratio_combination"])["drug2"].value_counts()
    for label in ax.get_xticklabels():
        name, count = label.get_text().split("\n")
        assert count == f"n = {scored[name]}"


def test_batch_effect_score_cell_counts(adata):
    ax = pl.batch_effect_score(adata, ["batch_before", "batch_after"], show=False)
    n_cells = adata.obs["leiden"].value_counts()
    assert [label.get_text() for label in ax.get_xticklabels()] == [f"{g}\nn = {n_cells[g]}" for g in "abcd"]


def test_ratio_labels_fit_in_scanpy_style(adata):
    """In scanpy's style (14 pt) long ratios are not longer than the axes or colour bar they label."""
    import scanpy as sc

    with plt.rc_context():
        sc.settings.set_figure_params(dpi=80, frameon=False)
        adata.uns["scratio_donor"]["summary"] = adata.uns["scratio_donor"]["summary"].iloc[:2]
        fig = pl.donor_response(adata, return_fig=True)
        ax, colorbar = fig.axes
        fig.canvas.draw()
        label = colorbar.yaxis.label
        assert label.get_window_extent().height <= colorbar.get_window_extent().height + 1
        assert label.get_fontsize() == pytest.approx(14)  # a figure of its own grows instead
        _save(fig, "donor_response_scanpy_style")
        for fig in [
            pl.ratio_distributions(adata, "scratio_donor", "donor", return_fig=True),
            pl.batch_effect_score(adata, ["batch_before", "batch_after"], return_fig=True),
            pl.ratio_embedding(adata, title="panel", return_fig=True),
        ]:
            fig.canvas.draw()
            for ax in fig.axes:
                label = ax.yaxis.label
                if label.get_text() and label.get_rotation() == 90:
                    assert label.get_window_extent().height <= ax.get_window_extent().height + 1, label
        _save(fig, "ratio_embedding_panel_scanpy_style")


def _assert_labels_apart(fig, labels) -> None:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = sorted((label.get_window_extent(renderer) for label in labels), key=lambda box: box.x0)
    assert len(boxes) > 1
    overlaps = [
        (a.get_text(), b.get_text())
        for (a, b), (left, right) in zip(
            zip(labels, labels[1:], strict=False), zip(boxes, boxes[1:], strict=False), strict=True
        )
        if left.x1 > right.x0
    ]
    assert not overlaps, f"tick labels overlap: {overlaps}"


# Cell types as in pbmc68k_reduced's bulk_labels: one long name among short ones.
BULK_LABELS = ["CD14+ Monocyte", "CD34+", "NK", "B"]


@pytest.mark.parametrize("figsize", [None, (5, 3), (8, 3)])
def test_batch_effect_score_labels_do_not_overlap(adata, figsize):
    adata.obs["leiden"] = adata.obs["leiden"].cat.rename_categories(BULK_LABELS)
    ax = None if figsize is None else plt.subplots(figsize=figsize, layout="constrained")[1]
    fig = pl.batch_effect_score(adata, ["batch_before", "batch_after"], ax=ax, return_fig=True)
    _assert_labels_apart(fig, fig.axes[0].get_xticklabels())


@pytest.mark.parametrize("n_groups", [4, 12, 40])
def test_ratio_distributions_labels_do_not_overlap(adata, n_groups):
    names = [f"{BULK_LABELS[i % 4]} {i}" for i in range(n_groups)]
    adata.obs["group"] = pd.Categorical(np.asarray(names)[np.arange(adata.n_obs) % n_groups])
    fig = pl.ratio_distributions(adata, groupby="group", return_fig=True)
    _assert_labels_apart(fig, fig.axes[0].get_xticklabels())


def test_short_labels_stay_upright(adata):
    ax = pl.ratio_distributions(adata, show=False)
    assert {label.get_rotation() for label in ax.get_xticklabels()} == {0}


def _missing_cells(ax) -> list[tuple[float, float]]:
    """Centres of the hatched patches that mark missing values."""
    from matplotlib.patches import Rectangle

    cells = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch()]
    for cell in cells:
        assert cell.get_facecolor() != matplotlib.colors.to_rgba("white")
    return [(cell.get_x() + 0.5, cell.get_y() + 0.5) for cell in cells]


def test_heatmap_missing_values_differ_from_zero(adata):
    summary = adata.uns["scratio_donor"]["summary"]
    summary.loc["d2", "TNF"] = np.nan  # d2 has no TNF cells
    summary.loc["d3", "TNF"] = 0.0
    ax = pl.donor_response(adata, show=False)
    # (column, row) of the missing cell: hatched, marked "n/a"; the zero cell is a number.
    assert _missing_cells(ax) == [(1, 1)]
    texts = {text.get_position(): text.get_text() for text in ax.texts}
    assert texts[(1, 1)] == "n/a"
    assert texts[(1, 2)] == "0.00"
    # Without annotation the hatching alone marks it.
    ax = pl.donor_response(adata, annotate=False, show=False)
    assert _missing_cells(ax) == [(1, 1)] and not ax.texts


def test_combination_heatmap_missing_pair(adata):
    summary = adata.uns["scratio_combination"]["summary"]
    adata.uns["scratio_combination"]["summary"] = summary[summary["first"] + summary["second"] != "BX"]
    ax = pl.combination_effect(adata, kind="heatmap", show=False)
    assert _missing_cells(ax) == [(0, 1)]  # row B, column X
    assert sorted(text.get_text() for text in ax.texts) == ["0.40", "1.00", "1.50", "n/a"]


def test_ratio_embedding_no_implicit_modification(adata):
    from anndata import ImplicitModificationWarning

    # scanpy turns string columns into categories, which on a view copies the whole AnnData.
    adata.obs["sample"] = adata.obs["condition"].astype(str)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ImplicitModificationWarning)
        pl.ratio_embedding(adata, show=False)
        pl.ratio_embedding(
            adata, "scratio_donor", basis="X_umap", size=np.arange(adata.n_obs) + 1.0, show=False
        )
    assert adata.obs["sample"].dtype == object  # the caller's data is left alone


def test_ratio_embedding_sizes_follow_the_cells(adata):
    sizes = np.arange(adata.n_obs) + 1.0
    points = _points(pl.ratio_embedding(adata, size=sizes, show=False))
    drawn = dict(zip(map(tuple, points.get_offsets()), points.get_sizes(), strict=True))
    assert drawn[tuple(adata.obsm["X_umap"][7])] == sizes[7]


def test_scanpy_call_of_the_docstring_centres_the_scale(adata):
    import scanpy as sc

    doc = pl.ratio_embedding.__doc__
    assert 'sc.pl.umap(adata, color="scratio_da", cmap="RdBu_r", vcenter=0)' in doc
    assert "vmin=-v, vmax=v" in doc
    ax = sc.pl.umap(adata, color="scratio_da", cmap="RdBu_r", vcenter=0, show=False)
    points = _points(ax)
    assert points.norm(0.0) == pytest.approx(0.5)  # white at a ratio of one
    assert points.get_cmap().name.startswith("RdBu_r")
    tutorial = (ROOT / "tutorials" / "differential_abundance.ipynb").read_text()
    assert "vcenter=0" in tutorial


def test_one_colormap_for_ratios():
    from scratio.pl import _ratio, _tables, _utils

    assert _utils.RATIO_CMAP == "RdBu_r"
    for plot in (_ratio.ratio_embedding, _tables.donor_response):
        assert plot.__kwdefaults__["cmap"] == _utils.RATIO_CMAP
    assert _tables.combination_effect.__kwdefaults__["cmap"] == _utils.MAGNITUDE_CMAP


def _code(path: Path) -> list[str]:
    import json

    cells = json.loads(path.read_text())["cells"]
    return ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]


def test_tutorials_share_one_style():
    """Same figure settings in every tutorial; ratios in the plots' colormap and figure sizes."""
    notebooks = sorted((ROOT / "tutorials").glob("*.ipynb"))
    assert len(notebooks) == 3
    settings = {}
    for path in notebooks:
        code = "\n".join(_code(path))
        settings[path.stem] = [
            line for line in code.splitlines() if "set_figure_params" in line or "rcParams" in line
        ]
        # Ratios are drawn by the sr.pl defaults or with their colormap; distributions at the default size.
        for cmap in __import__("re").findall(r"cmap=\"([^\"]+)\"", code):
            assert cmap == "RdBu_r", f"{path.name}: cmap={cmap!r}"
        for cell in _code(path):
            if "sr.pl.ratio_distributions" in cell:
                assert "figsize" not in cell, (
                    f"{path.name}: ratio_distributions with a figure size of its own"
                )
    assert len({tuple(lines) for lines in settings.values()}) == 1, settings
    assert settings["differential_abundance"] == ["sc.settings.set_figure_params(dpi=80, frameon=False)"]


@pytest.mark.parametrize("given_axes", [False, True])
def test_heatmap_colorbar_spans_the_cells(adata, given_axes):
    """A tall, narrow table (six donors, one treatment) still gets a colour bar as long as the cells."""
    adata.uns["scratio_donor"]["summary"] = pd.DataFrame(
        {"stim": np.linspace(-1, 4, 6)}, index=[f"donor_{i}" for i in range(6)]
    )
    import scanpy as sc

    with plt.rc_context():
        sc.settings.set_figure_params(dpi=80, frameon=False)
        ax = plt.subplots(1, 3, figsize=(7, 4), layout="constrained")[1][1] if given_axes else None
        fig = pl.donor_response(adata, ax=ax, return_fig=True)
        fig.canvas.draw()
    heatmap, colorbar = (ax, fig.axes[-1]) if given_axes else fig.axes
    assert colorbar.get_label() == "<colorbar>"
    assert colorbar.get_window_extent().height == pytest.approx(heatmap.get_window_extent().height, rel=0.02)
