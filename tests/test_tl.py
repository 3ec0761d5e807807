"""Tests of ``scratio.tl``: the four tools against simulated truths, outputs and bad input."""

from __future__ import annotations

import inspect
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import scratio as sr
from scratio.model import RatioFlow

torch.set_num_threads(1)
sr.settings.verbosity = 0

# Tiny training: every tool call below trains in a few seconds on one CPU core.
FAST = {"n_steps": 300, "batch_size": 256, "width": 64}


def da_data(n_cells=1200, *, n_dims=4, p_target=(0.5, 0.8, 0.2), random_state=0) -> ad.AnnData:
    """Three clusters; the share of "treated" cells is 0.5, 0.8 and 0.2 in clusters 0, 1, 2."""
    rng = np.random.default_rng(random_state)
    centers = np.array([[0.0] * n_dims, [6.0] + [0.0] * (n_dims - 1), [0.0, 6.0] + [0.0] * (n_dims - 2)])
    cluster = rng.integers(3, size=n_cells)
    x = centers[cluster] + rng.normal(size=(n_cells, n_dims))
    treated = rng.random(n_cells) < np.asarray(p_target)[cluster]
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(np.where(treated, "treated", "control")),
            "cluster": pd.Categorical([f"c{k}" for k in cluster]),
        },
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    return ad.AnnData(obs=obs, obsm={"X_pca": x.astype(np.float32)})


@pytest.fixture(scope="module")
def da_result():
    adata = da_data()
    sr.tl.differential_abundance(adata, "condition", "control", "treated", groupby="cluster", **FAST)
    return adata


def snapshot(adata):
    return (
        adata.obs.copy(),
        {k: np.array(v, copy=True) for k, v in adata.obsm.items()},
        dict(adata.uns),
        adata.is_view,
    )


def assert_unchanged(adata, before):
    obs, obsm, uns, is_view = before
    pd.testing.assert_frame_equal(adata.obs, obs)
    assert set(adata.obsm) == set(obsm)
    for key, value in obsm.items():
        np.testing.assert_array_equal(np.asarray(adata.obsm[key]), value)
    assert set(adata.uns) == set(uns)
    assert adata.is_view == is_view


def roundtrip(adata, key, path):
    """Write to .h5ad, read back, and check the tool's obs column and uns tables survive."""
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    for column in adata.uns[key]["params"]["columns"]:
        np.testing.assert_array_equal(back.obs[column], adata.obs[column])
    for name, table in adata.uns[key].items():
        if isinstance(table, pd.DataFrame):
            pd.testing.assert_frame_equal(
                back.uns[key][name], table, check_dtype=False, check_index_type=False
            )
    assert back.uns[key]["params"]["tool"] == adata.uns[key]["params"]["tool"]
    return back


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any model is trained: errors must come before training."""
    forbid_training(monkeypatch)


def forbid_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training started before the input was rejected")

    monkeypatch.setattr(RatioFlow, "train", fail)


# ---------------------------------------------------------------- differential abundance
def test_da_sign_and_ranking(da_result):
    adata = da_result
    scores = adata.obs["scratio_da"]
    assert scores.dtype == np.float32
    assert np.isfinite(scores).all()
    by_cluster = scores.groupby(adata.obs["cluster"], observed=True).mean()
    # enriched in treated -> positive, depleted -> negative
    assert by_cluster["c1"] > 0.4
    assert by_cluster["c2"] < -0.4
    # true log-odds: 0, log 4, -log 4: the DA clusters rank above the null cluster
    assert abs(by_cluster["c0"]) < min(abs(by_cluster["c1"]), abs(by_cluster["c2"])) / 2


def test_da_in_bfloat16_ranks_the_cells_as_float32_does(da_result):
    adata = da_data()
    sr.tl.differential_abundance(adata, "condition", "control", "treated", precision="bf16-mixed", **FAST)
    params = adata.uns["scratio_da"]["params"]
    assert params["scoring"]["precision"] == params["training"]["precision"] == "bf16-mixed"
    scores = adata.obs["scratio_da"]
    assert scores.dtype == np.float32 and np.isfinite(scores).all()
    assert np.corrcoef(scores, da_result.obs["scratio_da"])[0, 1] > 0.999


@pytest.mark.parametrize(
    ("call", "base", "n_steps"),
    [
        ({}, "mixture", 100),  # without samples: the mixture base, the network trained briefly
        ({"n_steps": 30}, "mixture", 30),
        ({"base": "mixture"}, "mixture", None),  # an explicit base keeps the model's own steps
        ({"base": None}, None, None),
        ({"sample_key": "sample"}, None, None),  # the replicate test's calibrated model
    ],
)
def test_da_base_auto_is_a_briefly_trained_mixture_without_samples_and_none_with_them(
    monkeypatch, call, base, n_steps
):
    adata = da_data(300)
    adata.obs["sample"] = adata.obs["condition"].astype(str) + "_s" + (np.arange(300) % 3).astype(str)
    trained = {}

    def record(model, steps=None, **kwargs):
        trained.update(base=model.network.config["base"], n_steps=steps)
        raise AssertionError("training started")

    monkeypatch.setattr(RatioFlow, "train", record)
    with pytest.raises(AssertionError, match="training started"):
        sr.tl.differential_abundance(adata, "condition", "control", **call)
    assert trained == {"base": base, "n_steps": n_steps}


@pytest.mark.parametrize(
    ("call", "divergence_used"),
    [
        ({"n_pcs": None}, "hutchinson"),  # a mixture base in 18 dimensions
        ({"n_pcs": 16}, "exact"),
        ({"n_pcs": None, "divergence": "exact"}, "exact"),
        ({"n_pcs": None, "base": None}, "exact"),
    ],
)
def test_da_divergence_auto_is_hutchinson_over_a_base_in_more_than_16_dimensions(call, divergence_used):
    adata = da_data(600, n_dims=18)
    sr.tl.differential_abundance(
        adata, "condition", "control", n_steps=5, batch_size=128, width=16, bandwidth=None, **call
    )
    params = adata.uns["scratio_da"]["params"]
    assert params["scoring"]["divergence"] == call.get("divergence", "auto")
    assert params["scoring"]["divergence_used"] == divergence_used
    # a probe per 16 dimensions
    assert params["scoring"].get("n_probes_used") == (2 if divergence_used == "hutchinson" else None)
    assert np.isfinite(adata.obs["scratio_da"]).all()


def test_da_with_a_mixture_base_hidden_from_the_network_gives_each_state_its_log_odds():
    """``base="mixture", condition_dim=0``: per cluster the empirical log-odds, nearly flat within it."""
    adata = da_data()
    sr.tl.differential_abundance(adata, "condition", "control", "treated", base="mixture", condition_dim=0,
                                 n_steps=50, batch_size=256, width=64)  # fmt: skip
    params = adata.uns["scratio_da"]["params"]
    assert params["network"]["condition_dim"] == 0 and params["network"]["base"] == "mixture"
    assert params["training"]["base_components"] == 128 and params["training"]["base_shrinkage"] == 1.0
    scores = adata.obs["scratio_da"]
    assert scores.dtype == np.float32 and np.isfinite(scores).all()
    treated = adata.obs["condition"] == "treated"
    share = treated.groupby(adata.obs["cluster"], observed=True).mean()
    expected = np.log(share / (1 - share)) - np.log(treated.mean() / (1 - treated.mean()))
    by_cluster = scores.groupby(adata.obs["cluster"], observed=True).agg(["mean", "std"])
    np.testing.assert_allclose(by_cluster["mean"], expected, atol=0.25)
    assert (by_cluster["std"] < 0.2).all()


def test_da_outputs(da_result, tmp_path):
    uns = da_result.uns["scratio_da"]
    params = uns["params"]
    assert params["tool"] == "differential_abundance"
    assert params["columns"] == ["scratio_da"]
    assert params["ratios"] == ["log p(x | treated) / p(x | control)"]
    assert params["condition_key"] == "condition"
    assert params["reference"] == "control"
    assert params["targets"] == ["treated"]
    assert params["groupby"] == "cluster"
    assert params["sample_key"] is None
    assert params["base"] == "auto" and params["base_used"] == params["network"]["base"] == "mixture"
    assert params["use_rep"] == "X_pca"
    assert params["random_state"] == 0
    assert params["n_steps"] == FAST["n_steps"]
    assert params["batch_size"] == FAST["batch_size"]
    assert params["solver"] == "rk4"
    assert params["schedule"]["schedule"] == "noise_at_data"
    assert params["schedule"]["s_min"] == 0.4  # the tool's smoothing, not the model's 0.05
    assert params["scaling"] == "per_dimension"
    assert params["bandwidth"] == "auto"  # and the scoring's, chosen by the held-out cells
    assert params["scoring"]["precision"] == params["training"]["precision"] == "32-true"
    # and how much of the network's dependence on the condition the scores keep, over the mixture base
    assert params["condition_weight"] == "auto" and params["condition_weight_used"] in (0.0, 1.0)
    selection = uns["bandwidth_selection"]
    assert list(selection.columns) == ["condition_weight", "bandwidth", "held_out_gain", "chosen"]
    assert list(selection["condition_weight"].unique()) == [0.0, 1.0]
    widths = [0.4, 0.5, 0.6, 0.8, 1.0, 1.3, 1.6]
    for _, per_weight in selection.groupby("condition_weight"):
        assert (
            list(per_weight["bandwidth"]) == widths[: len(per_weight)]
        )  # narrowest first, up to two past the best
    assert np.isfinite(selection["held_out_gain"]).all()
    assert selection["chosen"].sum() == 1
    chosen = selection[selection["chosen"]].iloc[0]
    assert chosen["bandwidth"] == params["bandwidth_used"]
    assert chosen["condition_weight"] == params["condition_weight_used"]
    same_weight = selection[selection["condition_weight"] == chosen["condition_weight"]]
    assert chosen["held_out_gain"] == same_weight["held_out_gain"].max()
    assert np.isfinite(params["final_loss"])
    assert params["scratio_version"] == sr.__version__
    summary = uns["summary"]
    assert list(summary.index) == ["treated"]
    assert summary.loc["treated", "n_cells"] == da_result.n_obs
    assert summary.loc["treated", "mean_treated"] > summary.loc["treated", "mean_control"]
    groups = uns["groupby_summary"]
    assert list(groups.columns) == ["cluster", "target", "n_cells", "mean", "median", "mean_abs"]
    assert groups["n_cells"].sum() == da_result.n_obs
    back = roundtrip(da_result, "scratio_da", tmp_path / "da.h5ad")
    assert back.uns["scratio_da"]["params"]["groupby"] == "cluster"


@pytest.fixture
def trained_models(monkeypatch):
    """The models that tools train within the test, in order."""
    trained = []
    train = RatioFlow.train

    def keep(self, *args, **kwargs):
        trained.append(self)
        return train(self, *args, **kwargs)

    monkeypatch.setattr(RatioFlow, "train", keep)
    return trained


def test_da_bandwidth_is_chosen_by_the_held_out_cells_labels(trained_models):
    adata = da_data(800, random_state=5)
    sr.tl.differential_abundance(adata, "condition", "control", "treated", **FAST)
    (model,) = trained_models
    weight = adata.uns["scratio_da"]["params"]["condition_weight_used"]
    selection = adata.uns["scratio_da"]["bandwidth_selection"].query("condition_weight == @weight")
    selection = selection.set_index("bandwidth")
    # each candidate's score: the held-out cells' label log-likelihood under P(treated | x), minus the prior's
    held, treated = model.held_out, (adata.obs["condition"] == "treated").to_numpy()
    prior = np.log(treated.mean() / (1 - treated.mean()))
    sign = np.where(treated[held], 1.0, -1.0)
    for width in selection.index[[0, -1]]:  # the narrowest and the widest scored
        log_p = model.category_log_likelihoods(
            adata[held], "condition", solver_steps=2, bandwidth=width, condition_weight=weight
        )
        log_r = (log_p["treated"] - log_p["control"]).to_numpy()
        gain = np.mean(np.logaddexp(0, -sign * prior) - np.logaddexp(0, -sign * (log_r + prior)))
        assert selection.loc[width, "held_out_gain"] == pytest.approx(gain, abs=1e-4)
    chosen = adata.uns["scratio_da"]["params"]["bandwidth_used"]
    assert selection["held_out_gain"].idxmax() == chosen


@pytest.mark.parametrize(
    ("peak", "slope", "n_scored"), [(0, 0.1, 3), (2, 0.1, 5), (5, 0.1, 7), (6, 0.1, 7), (0, 0.001, 7)]
)
def test_da_bandwidth_search_stops_two_widths_clearly_past_the_best(peak, slope, n_scored):
    from scratio.tl._differential_abundance import _select_bandwidth

    rng = np.random.default_rng(0)
    labels = np.repeat(["control", "treated"], 100)
    treated = labels == "treated"
    scored = []

    def log_densities(x, width):
        # a separation that peaks at the candidate numbered `peak` (s_min is 0.4); with a small
        # slope the widths cannot be told apart from the noise, so every one is scored
        scored.append(width)
        strength = 1.0 - slope * abs(len(scored) - 1 - peak)
        log_r = np.where(treated[x], strength, -strength) + rng.normal(0, 0.1, len(x))
        return {"control": -log_r / 2, "treated": log_r / 2}, None

    held_out = np.arange(0, 200, 2)
    conditions = ["control", "treated"]
    width, table, held = _select_bandwidth(log_densities, np.arange(200), labels, held_out, conditions, 0.4)
    assert scored == [0.4, 0.5, 0.6, 0.8, 1.0, 1.3, 1.6][:n_scored]
    assert list(table["bandwidth"]) == scored and table["chosen"].sum() == 1
    assert table.loc[table["chosen"], "bandwidth"].item() == width
    assert table.loc[table["chosen"], "held_out_gain"].item() == table["held_out_gain"].max()
    if slope > 0.01:
        assert width == scored[peak]
    assert set(held.log_p) == {"control", "treated"} and len(held.log_p["treated"]) == len(held_out)
    np.testing.assert_array_equal(held.rows, held_out)


@pytest.mark.parametrize(("extra_signal", "weight"), [(0.0, 0.0), (1.0, 1.0)])
def test_da_condition_weight_is_the_least_within_one_standard_error_of_the_best(extra_signal, weight):
    """The network's dependence on the condition is kept only where the held-out labels clearly ask for it."""
    from scratio.tl._differential_abundance import _select_scoring

    rng = np.random.default_rng(2)
    labels = np.repeat(["control", "treated"], 100)
    sign = np.where(labels == "treated", 1.0, -1.0)
    base_noise, network_noise = rng.normal(0, 0.5, 200), rng.normal(0, 0.5, 200)

    def log_densities(x, width, weights):
        # the base separates the labels by 0.3; at weight 1 the network adds noise and `extra_signal`
        out = {}
        for weight in weights:
            log_r = sign[x] * 0.3 + base_noise[x] + weight * (sign[x] * extra_signal + network_noise[x])
            out[weight] = {"control": -log_r / 2, "treated": log_r / 2}, None
        return out

    held_out, conditions = np.arange(0, 200, 2), ["control", "treated"]
    width, chosen, table, held = _select_scoring(
        log_densities,
        np.arange(200),
        labels,
        held_out,
        conditions,
        bandwidth=0.6,
        weights=(0.0, 1.0),
        s_min=0.4,
    )
    assert (width, chosen) == (0.6, weight)
    assert list(table.columns) == ["condition_weight", "bandwidth", "held_out_gain", "chosen"]
    assert table["condition_weight"].tolist() == [0.0, 1.0] and table["bandwidth"].tolist() == [0.6, 0.6]
    assert table.loc[table["chosen"], "condition_weight"].item() == weight
    gains = table.set_index("condition_weight")["held_out_gain"]
    assert gains[1.0] > gains[0.0]  # the highest mean gain would take the network in both cases
    np.testing.assert_allclose(
        held.log_p["treated"] - held.log_p["control"],
        log_densities(held_out, 0.6, [weight])[weight][0]["treated"] * 2,
    )


def test_da_condition_weight_zero_scores_with_the_base_alone(trained_models):
    """``condition_weight=0``: the model's log-likelihoods with one correction for both conditions."""
    adata = da_data(600)
    call = {"bandwidth": 0.6, "n_steps": 100, "batch_size": 256, "width": 32}
    sr.tl.differential_abundance(adata, "condition", "control", condition_weight=0, **call)
    (model,) = trained_models
    params = adata.uns["scratio_da"]["params"]
    assert params["condition_weight"] == 0 and params["condition_weight_used"] == 0.0
    assert "bandwidth_selection" not in adata.uns["scratio_da"]  # nothing to choose
    scores = adata.obs["scratio_da"].to_numpy()
    assert scores.dtype == np.float32 and np.isfinite(scores).all()
    for weight, close in ((0.0, True), (1.0, False)):
        log_p = model.category_log_likelihoods(
            adata, "condition", solver_steps=2, bandwidth=0.6, condition_weight=weight
        )
        expected = (log_p["treated"] - log_p["control"]).to_numpy()
        assert np.allclose(scores, expected, atol=1e-4) == close


def test_da_bandwidth_without_held_out_cells_is_the_fallback():
    adata = da_data(400)
    kwargs = {**FAST, "train_kwargs": {"validation_fraction": 0}}
    sr.tl.differential_abundance(adata, "condition", "control", "treated", **kwargs)
    params = adata.uns["scratio_da"]["params"]
    assert params["bandwidth"] == "auto"
    assert params["bandwidth_used"] == 0.6
    assert "bandwidth_selection" not in adata.uns["scratio_da"]
    assert np.isfinite(adata.obs["scratio_da"]).all()


def test_da_imbalance_without_difference_is_centred():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1500, 4)).astype(np.float32)
    condition = np.array(["a"] * 300 + ["b"] * 1200)  # 1:4, same distribution
    adata = ad.AnnData(obs=pd.DataFrame({"condition": condition}, index=map(str, range(1500))))
    adata.obsm["X_pca"] = x
    sr.tl.differential_abundance(adata, "condition", "a", "b", **FAST)
    scores = adata.obs["scratio_da"].to_numpy()
    assert abs(scores.mean()) < 0.1, scores.mean()
    assert abs(np.median(scores)) < 0.1
    for c in ("a", "b"):
        assert abs(scores[condition == c].mean()) < 0.15


def test_da_several_targets_and_samples():
    adata = da_data(1200, random_state=2)
    # a third condition: a copy of the control distribution in cluster 0 only
    rng = np.random.default_rng(0)
    cond = adata.obs["condition"].astype(str).to_numpy().copy()
    in_c0 = (adata.obs["cluster"] == "c0").to_numpy()
    cond[in_c0 & (rng.random(adata.n_obs) < 0.5)] = "third"
    adata.obs["condition"] = pd.Categorical(cond)
    out = sr.tl.differential_abundance(adata, "condition", "control", copy=True, **FAST)
    assert out.uns["scratio_da"]["params"]["targets"] == ["third", "treated"]
    assert out.uns["scratio_da"]["params"]["columns"] == ["scratio_da_third", "scratio_da_treated"]
    assert list(out.uns["scratio_da"]["summary"].index) == ["third", "treated"]
    third = out.obs["scratio_da_third"].groupby(out.obs["cluster"], observed=True).mean()
    assert third["c0"] > third["c1"] and third["c0"] > third["c2"]

    # replicated design: two samples per condition, the model is trained on samples
    sample = np.where(rng.random(adata.n_obs) < 0.5, "s1", "s2")
    adata.obs["sample"] = [f"{c}_{s}" for c, s in zip(cond, sample, strict=True)]
    sr.tl.differential_abundance(
        adata, "condition", "control", "treated", sample_key="sample", key_added="rep", min_cells=5, **FAST
    )
    params = adata.uns["rep"]["params"]
    assert params["sample_key"] == "sample"
    assert params["model_condition_keys"] == ["sample"]
    assert sorted(params["samples"]["treated"]) == ["treated_s1", "treated_s2"]
    by_cluster = adata.obs["rep"].groupby(adata.obs["cluster"], observed=True).mean()
    assert by_cluster["c1"] > 0 > by_cluster["c2"]


def test_da_sample_spanning_conditions_is_rejected(no_training):
    adata = da_data(300)
    adata.obs["sample"] = np.where(np.arange(300) % 2, "s1", "s2")  # both conditions in each sample
    before = snapshot(adata)
    with pytest.raises(ValueError, match=r"'s1'.*sample.*one condition|one condition.*'s1'"):
        sr.tl.differential_abundance(adata, "condition", "control", sample_key="sample")
    assert_unchanged(adata, before)


def test_da_warns_that_the_test_is_not_calibrated_with_a_mixture_base(no_training):
    adata = da_data(300)
    condition = adata.obs["condition"].astype(str)
    adata.obs["sample"] = condition + np.where(np.arange(300) % 2, "_s1", "_s2")
    with (
        pytest.warns(UserWarning, match='base="mixture".*not calibrated') as record,
        pytest.raises(AssertionError, match="training started"),
    ):
        sr.tl.differential_abundance(adata, "condition", "control", sample_key="sample", base="mixture")
    [warning] = [w for w in record if "not calibrated" in str(w.message)]
    assert warning.filename == __file__  # it points at the call


def test_reproducible_and_copy():
    adata = da_data(400, random_state=3)
    before = snapshot(adata)
    settings = {"n_steps": 60, "batch_size": 128, "width": 32}
    first = sr.tl.differential_abundance(adata, "condition", "control", copy=True, random_state=7, **settings)
    second = sr.tl.differential_abundance(
        adata, "condition", "control", copy=True, random_state=7, **settings
    )
    assert first is not adata and second is not adata
    assert_unchanged(adata, before)  # copy=True leaves the input untouched
    np.testing.assert_array_equal(first.obs["scratio_da"], second.obs["scratio_da"])
    assert first.uns["scratio_da"]["params"]["random_state"] == 7
    other = sr.tl.differential_abundance(adata, "condition", "control", copy=True, random_state=8, **settings)
    assert not np.array_equal(first.obs["scratio_da"], other.obs["scratio_da"])


def test_model_reuse():
    adata = da_data(600, random_state=4)
    model = RatioFlow(adata, "X_pca", ["condition"], width=64).train(200, batch_size=256)
    assert sr.tl.differential_abundance(adata, "condition", "control", model=model) is None
    params = adata.uns["scratio_da"]["params"]
    conditions = {"numerator": {"condition": "treated"}, "denominator": {"condition": "control"}}
    direct = model.log_ratio(adata, **conditions, estimator="s2", solver_steps=2, bandwidth=0.6)
    # one trajectory (S2, base null) gives the same ratio as the direct S2 estimate, at the tool's bandwidth:
    # a passed model's held-out cells need not be these, so "auto" takes its fallback
    np.testing.assert_allclose(adata.obs["scratio_da"], direct, atol=1e-3)
    assert params["n_steps"] == 200
    assert params["bandwidth_used"] == 0.6
    assert "bandwidth_selection" not in adata.uns["scratio_da"]
    sharp = sr.tl.differential_abundance(
        adata, "condition", "control", model=model, bandwidth=None, copy=True
    )
    unsmoothed = model.log_ratio(adata, **conditions, estimator="s2", solver_steps=2)
    np.testing.assert_allclose(sharp.obs["scratio_da"], unsmoothed, atol=1e-3)
    assert np.std(direct) < 0.9 * np.std(unsmoothed)  # smoothing shrinks the ratios


# ---------------------------------------------------------------- the other three tools
def test_batch_effect_larger_before_correction(tmp_path):
    adata = sr.datasets.batch_effect_design(1200, n_dims=5, n_cell_types=2, n_batches=2, random_state=0)
    sr.tl.batch_effect_score(adata, "batch", "cell_type", **FAST)
    sr.tl.batch_effect_score(
        adata, "batch", "cell_type", use_rep="X_corrected", key_added="corrected", **FAST
    )
    raw, corrected = adata.uns["scratio_batch"]["score"], adata.uns["corrected"]["score"]
    assert raw >= 3 * corrected, (raw, corrected)
    scores = adata.obs["scratio_batch"]
    assert scores.dtype == np.float32 and np.isfinite(scores).all()
    affected = adata.obs["batch_affected"].to_numpy()
    assert np.abs(scores[affected]).mean() > 3 * np.abs(scores[~affected]).mean()
    summary = adata.uns["scratio_batch"]["summary"]
    assert list(summary.columns) == ["cell_type", "batch", "n_cells", "mean", "mean_abs"]
    params = adata.uns["scratio_batch"]["params"]
    assert (params["tool"], params["batch_key"], params["label_key"]) == (
        "batch_effect_score",
        "batch",
        "cell_type",
    )
    assert adata.uns["corrected"]["params"]["use_rep"] == "X_corrected"
    roundtrip(adata, "scratio_batch", tmp_path / "out.h5ad")


def test_combination_effect_ranks_effective_drugs(tmp_path):
    adata = sr.datasets.combination_design(1200, n_dims=5, random_state=0)
    sr.tl.combination_effect(adata, "drug1", "drug2", **FAST)
    scores = adata.obs["scratio_combination"]
    control = (adata.obs["drug2"] == "control").to_numpy()
    assert scores[control].isna().all()
    assert scores.dtype == np.float32 and np.isfinite(scores[~control]).all()
    summary = adata.uns["scratio_combination"]["summary"]
    assert list(summary.columns) == ["first", "second", "n_cells", "mean", "mean_abs"]
    assert summary["mean_abs"].is_monotonic_decreasing
    truth = adata.uns["simulation"]["truth"]
    merged = summary.merge(truth, on=["first", "second"])
    assert len(merged) == len(truth)
    assert merged.loc[merged["effect"], "mean_abs"].min() > merged.loc[~merged["effect"], "mean_abs"].max()
    params = adata.uns["scratio_combination"]["params"]
    assert (params["tool"], params["first_key"], params["second_key"], params["control"]) == (
        "combination_effect",
        "drug1",
        "drug2",
        "control",
    )
    roundtrip(adata, "scratio_combination", tmp_path / "out.h5ad")


def test_donor_response_ranks_responders(tmp_path):
    adata = sr.datasets.donor_design(1200, n_dims=5, n_donors=4, n_responders=2, random_state=0)
    sr.tl.donor_response(adata, "donor", "treatment", **FAST)
    scores = adata.obs["scratio_donor"]
    control = (adata.obs["treatment"] == "control").to_numpy()
    assert scores[control].isna().all()
    assert scores.dtype == np.float32 and np.isfinite(scores[~control]).all()
    summary = adata.uns["scratio_donor"]["summary"]
    assert list(summary.columns) == ["stim"]
    assert list(summary.index) == [f"donor_{k}" for k in range(4)]
    responders = adata.uns["simulation"]["responders"]
    is_responder = summary.index.isin(responders)
    assert summary.loc[is_responder, "stim"].min() > summary.loc[~is_responder, "stim"].max() + 0.5
    assert adata.uns["scratio_donor"]["params"]["tool"] == "donor_response"
    roundtrip(adata, "scratio_donor", tmp_path / "out.h5ad")


# ---------------------------------------------------------------- input handling
def test_view_is_written_without_warning():
    adata = da_data(500, random_state=5)
    view = adata[adata.obs["cluster"] != "c2"]
    assert view.is_view
    with warnings.catch_warnings():
        warnings.simplefilter("error", ad.ImplicitModificationWarning)
        sr.tl.differential_abundance(view, "condition", "control", n_steps=50, batch_size=128, width=32)
    assert not view.is_view
    assert "scratio_da" in view.obs and "scratio_da" in view.uns
    assert "scratio_da" not in adata.obs  # the parent is untouched


def test_view_rejected_input_stays_a_view(no_training):
    adata = da_data(300)
    view = adata[:200]
    with pytest.raises(ValueError, match=r"'ctrl'"):
        sr.tl.differential_abundance(view, "condition", "ctrl")
    assert view.is_view


def test_missing_control_cells_warn_before_training(no_training):
    adata = sr.datasets.combination_design(400, n_dims=3)
    keep = ~((adata.obs["drug1"] == "B") & (adata.obs["drug2"] == "control")).to_numpy()
    adata = adata[keep].copy()
    with pytest.warns(UserWarning, match=r"\['B'\].*'drug1'.*no 'control' cells"):
        with pytest.raises(AssertionError, match="training started"):
            sr.tl.combination_effect(adata, "drug1", "drug2")


def test_many_dimensions_for_few_cells_warn_before_training(no_training):
    rng = np.random.default_rng(0)
    adata = ad.AnnData(
        obs=pd.DataFrame({"condition": np.where(np.arange(300) < 100, "control", "treated")}),
        obsm={"X_pca": rng.normal(size=(300, 12)).astype(np.float32)},
    )
    # 100 control cells for 12 dimensions: fewer than 30 per dimension
    with pytest.warns(
        UserWarning, match=r"12 dimensions for 100 cells in 'control'.*`n_pcs` \(at most 3\)"
    ) as record:
        with pytest.raises(AssertionError, match="training started"):
            sr.tl.differential_abundance(adata, "condition", "control", use_rep="X_pca")
    assert record[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with pytest.raises(AssertionError, match="training started"):
            sr.tl.differential_abundance(adata, "condition", "control", use_rep="X_pca", n_pcs=3)


def test_auto_n_pcs_keeps_the_components_the_cells_support():
    rng = np.random.default_rng(0)
    sd = np.linspace(3.0, 0.5, 12)  # ordered by variance, as principal components are
    adata = ad.AnnData(
        obs=pd.DataFrame({"condition": np.where(np.arange(300) < 100, "control", "treated")}),
        obsm={"X_pca": (rng.normal(size=(300, 12)) * sd).astype(np.float32)},
    )
    small = {"n_steps": 20, "batch_size": 64, "width": 16}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # chosen, not warned about
        sr.tl.differential_abundance(adata, "condition", "control", **small)
    params = adata.uns["scratio_da"]["params"]
    assert (params["n_pcs"], params["n_dims"]) == ("auto", 3)  # 100 control cells, 30 per dimension
    assert adata.obsm["X_pca"].shape == (300, 12)  # the user's representation is untouched
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        # one scale for every column: the columns' order of variance is read from the cells
        sr.tl.differential_abundance(adata, "condition", "control", scaling="global", **small)
    params = adata.uns["scratio_da"]["params"]
    assert (params["n_dims"], params["scaling"]) == (3, "global")
    assert np.isfinite(adata.obs["scratio_da"]).all() and adata.obs["scratio_da"].dtype == np.float32
    with pytest.warns(UserWarning, match=r"12 dimensions for 100 cells"):
        sr.tl.differential_abundance(adata, "condition", "control", n_pcs=None, **small)
    params = adata.uns["scratio_da"]["params"]
    assert (params["n_pcs"], params["n_dims"]) == ("all", 12)
    sr.tl.differential_abundance(adata, "condition", "control", n_pcs=3, **small)
    params = adata.uns["scratio_da"]["params"]
    assert (params["n_pcs"], params["n_dims"]) == (3, 3)


def test_only_principal_components_are_cut():
    from scratio.tl._runner import ordered_by_variance

    sd = np.array([5.6, 4.6, 3.8, 3.4, 3.0, 2.7, 2.1, 1.8, 1.8, 1.7])  # pbmc68k_reduced's first PCs
    assert ordered_by_variance(sd)
    assert ordered_by_variance(sd * [1, 1, 1, 1, 1, 1, 1, 1, 1.05, 1])  # neighbours may swap a little
    assert not ordered_by_variance(sd[::-1])  # e.g. a latent space in no particular order
    assert not ordered_by_variance(np.ones(10))  # standardised: nothing says which columns matter


@pytest.mark.parametrize("n_pcs", [0, -1, 2.5, "all"])
def test_bad_n_pcs_is_refused_before_training(no_training, n_pcs):
    adata = da_data(300)
    with pytest.raises(ValueError, match=r"`n_pcs` must be 'auto', None"):
        sr.tl.differential_abundance(adata, "condition", "control", n_pcs=n_pcs)
    assert "scratio_da" not in adata.uns


@pytest.mark.parametrize("kind", ["string", "numeric", "bool"])
def test_non_categorical_conditions_are_accepted(kind):
    adata = da_data(300, random_state=6)
    treated = (adata.obs["condition"] == "treated").to_numpy()
    values, reference = {
        "string": (np.where(treated, "treated", "control").astype(object), "control"),
        "numeric": (treated.astype(int), 0),
        "bool": (treated, False),
    }[kind]
    adata.obs["condition"] = values
    sr.tl.differential_abundance(adata, "condition", reference, n_steps=30, batch_size=128, width=32)
    assert adata.obs["scratio_da"].dtype == np.float32
    assert adata.uns["scratio_da"]["params"]["reference"] == str(reference)


def _bad_nan(adata):
    adata.obsm["X_pca"][3, 1] = np.nan


def _bad_inf(adata):
    adata.obsm["X_pca"][5, 0] = np.inf


def _bad_constant(adata):
    adata.obsm["X_pca"][:] = 1.0


def _bad_one_category(adata):
    adata.obs["condition"] = pd.Categorical(["control"] * adata.n_obs)


def _bad_small_category(adata):
    condition = np.array(["control"] * adata.n_obs, dtype=object)
    condition[:4] = "treated"
    adata.obs["condition"] = pd.Categorical(condition)


def _bad_existing_column(adata):
    adata.obs["scratio_da"] = "some text"


BAD_DA = {
    "missing obs key": (
        None,
        {"condition_key": "treatment"},
        KeyError,
        r"'treatment'.*Available columns.*Pass one of them",
    ),
    "missing obsm key": (
        None,
        {"use_rep": "X_scVI"},
        KeyError,
        r"'X_scVI'.*available: 'X_pca'.*pass another `use_rep`",
    ),
    "unknown reference": (
        None,
        {"reference": "ctrl"},
        ValueError,
        r"'ctrl'.*Categories: \['control', 'treated'\]\. Pass one of these",
    ),
    "unknown target": (None, {"target": "IFNg"}, ValueError, r"'IFNg'.*Categories.*Pass one of these"),
    "target is reference": (None, {"target": "control"}, ValueError, r"differ from `reference`"),
    "unknown groupby": (None, {"groupby": "celltype"}, KeyError, r"'celltype'"),
    "NaN": (_bad_nan, {}, ValueError, r"'X_pca' has NaN or inf.*cell_3.*Remove"),
    "inf": (_bad_inf, {}, ValueError, r"'X_pca' has NaN or inf.*cell_5.*Remove those cells"),
    "constant": (_bad_constant, {}, ValueError, r"'X_pca' has zero variance.*Pass an embedding that varies"),
    "one category": (
        _bad_one_category,
        {},
        ValueError,
        r"'condition'.*single category.*two or more categories",
    ),
    "small category": (
        _bad_small_category,
        {},
        ValueError,
        r"fewer than 10 cells: \{'treated': 4\}.*min_cells",
    ),
    "existing column": (_bad_existing_column, {}, ValueError, r"'scratio_da'.*already exists.*key_added"),
    "smoothing out of range": (None, {"s_min": 1.0}, ValueError, r"`s_min` must lie in \[0, 1\), got 1.0"),
    "unknown scaling": (
        None,
        {"scaling": "pca"},
        ValueError,
        r"Unknown scaling 'pca'; choose one of \['per_dimension', 'global'\]",
    ),
    "unknown base": (
        None,
        {"base": "kde"},
        ValueError,
        r"Unknown base 'kde'; choose one of \(None, 'gaussian', 'mixture'\)",
    ),
    "unknown base names the tool's default": (
        None,
        {"base": "mixtur"},
        ValueError,
        r"'mixtur'.* or 'auto' \(the default",
    ),
    "unknown divergence names the tools' default": (
        None,
        {"divergence": "trace"},
        ValueError,
        r"Unknown divergence 'trace'; choose one of \['exact', 'hutchinson', 'auto'\]",
    ),
    "bandwidth not a number": (
        None,
        {"bandwidth": "wide"},
        ValueError,
        r"`bandwidth` must be a number, 'auto' or None, got 'wide'",
    ),
    "bandwidth below s_min": (
        None,
        {"bandwidth": 0.3},
        ValueError,
        r"`bandwidth` must be a finite number at least the model's `s_min` \(0.4\), got 0.3.*Pass a larger",
    ),
    "condition weight out of range": (
        None,
        {"condition_weight": 2},
        ValueError,
        r"`condition_weight` must be a number in \[0, 1\] or 'auto', got 2",
    ),
}


@pytest.mark.parametrize("case", list(BAD_DA))
def test_bad_input_differential_abundance(case, no_training):
    corrupt, kwargs, error, message = BAD_DA[case]
    adata = da_data(120)
    if corrupt is not None:
        corrupt(adata)
    args = {"condition_key": "condition", "reference": "control", **kwargs}
    before = snapshot(adata)
    with pytest.raises(error, match=message):
        sr.tl.differential_abundance(adata, **args)
    assert_unchanged(adata, before)


def test_bad_input_other_tools(no_training):
    adata = sr.datasets.donor_design(300, n_dims=3, n_donors=3)
    adata.obs["constant"] = "x"
    before = snapshot(adata)
    with pytest.raises(ValueError, match=r"'ctrl'.*'treatment'.*Categories: \['control', 'stim'\]\. Pass"):
        sr.tl.donor_response(adata, "donor", "treatment", control="ctrl")
    with pytest.raises(ValueError, match=r"'none'.*Categories"):
        sr.tl.combination_effect(adata, "donor", "treatment", control="none")
    with pytest.raises(KeyError, match=r"'cell_type'"):
        sr.tl.batch_effect_score(adata, "donor", "cell_type")
    with pytest.raises(ValueError, match=r"'constant'.*single category"):
        sr.tl.batch_effect_score(adata, "donor", "constant")
    with pytest.raises(ValueError, match=r"different columns"):
        sr.tl.batch_effect_score(adata, "donor", "donor")
    with pytest.raises(ValueError, match=r"'responder'.*already exists.*key_added"):
        sr.tl.donor_response(adata, "donor", "treatment", key_added="responder")
    assert_unchanged(adata, before)


def test_bad_model(monkeypatch):
    adata = da_data(200, random_state=7)
    trained = RatioFlow(adata, "X_pca", ["condition"], width=16).train(
        1, batch_size=16, validation_fraction=0
    )
    forbid_training(monkeypatch)
    model = RatioFlow(adata, "X_pca", ["condition"], width=16)
    before = snapshot(adata)
    with pytest.raises(ValueError, match=r"not trained.*model.train\(\)"):
        sr.tl.differential_abundance(adata, "condition", "control", model=model)
    model = trained
    with pytest.raises(ValueError, match=r"condition keys \['condition'\], not on \['cluster'\].*model=None"):
        sr.tl.differential_abundance(adata, "cluster", "c0", model=model)
    adata.obsm["X_other"] = adata.obsm["X_pca"].copy()
    before = snapshot(adata)
    with pytest.raises(ValueError, match=r"use_rep='X_pca', not 'X_other'"):
        sr.tl.differential_abundance(adata, "condition", "control", model=model, use_rep="X_other")
    other = adata.copy()
    other.obs["condition"] = pd.Categorical(np.where(np.arange(200) % 3, "control", "IFNg"))
    before_other = snapshot(other)
    with pytest.raises(ValueError, match=r"categories \['IFNg'\] the model was not trained on.*model=None"):
        sr.tl.differential_abundance(other, "condition", "control", model=model)
    with pytest.raises(ValueError, match=r"'IFNg' of 'condition' is unknown to `model`.*model=None"):
        sr.tl.differential_abundance(adata, "condition", "control", "IFNg", model=model)
    with pytest.raises(ValueError, match=r"not on \[.cluster.\]"):
        sr.tl.donor_response(adata, "condition", "cluster", model=model)
    assert_unchanged(adata, before)
    assert_unchanged(other, before_other)


def test_mistyped_options_name_the_tool_before_anything_is_touched(no_training):
    adata = da_data(200)
    view = adata[:150]
    before = snapshot(adata)
    with pytest.raises(
        TypeError, match=r"differential_abundance\(\) got unknown options \['patience'\].*train_kwargs"
    ):
        sr.tl.differential_abundance(view, "condition", "control", patience=5)
    assert view.is_view
    with pytest.raises(
        TypeError,
        match=r"donor_response\(train_kwargs=\.\.\.\): Unknown training options \['learning_rate'\]",
    ):
        sr.tl.donor_response(adata, "cluster", "condition", train_kwargs={"learning_rate": 1.0})
    with pytest.raises(ValueError, match="Unknown solver 'dopri'"):
        sr.tl.batch_effect_score(adata, "condition", "cluster", solver="dopri")
    with pytest.raises(
        ValueError, match=r"Unknown precision 'bf16'; choose one of \['32-true', 'bf16-mixed'\]"
    ):
        sr.tl.differential_abundance(adata, "condition", "control", precision="bf16")
    assert_unchanged(adata, before)


def test_every_tool_takes_the_common_options_with_one_default_each():
    from scratio._keys import TOOLS

    common = {"use_rep", "key_added", "model", "n_steps", "batch_size", "solver", "solver_steps", "divergence",
              "precision", "min_cells", "train_kwargs", "copy", "random_state", "model_kwargs"}  # fmt: skip
    for name in sr.tl.__all__:
        tool = getattr(sr.tl, name)
        parameters = inspect.signature(tool).parameters
        assert common <= set(parameters), name
        assert parameters["key_added"].default == TOOLS[name].key_added
        assert parameters["n_pcs"].default == TOOLS[name].n_pcs
        # documentation tools unwrap decorators: they must find the public signature too
        assert inspect.signature(inspect.unwrap(tool)).parameters == parameters
        assert parameters["batch_size"].default == 1024 and parameters["solver_steps"].default == 2
        assert "    solver_steps\n" in tool.__doc__ and "``None``, or the AnnData" in tool.__doc__


def test_a_tool_reads_the_representation_and_each_column_once(monkeypatch):
    import scratio._registration as registration
    import scratio.tl._runner as runner

    reads = {"representation": 0, "columns": []}
    read_representation, read_column = registration.get_representation, registration.get_categorical

    def count_representation(*args):
        reads["representation"] += 1
        return read_representation(*args)

    def count_column(adata, key):
        reads["columns"].append(key)
        return read_column(adata, key)

    monkeypatch.setattr(registration, "get_representation", count_representation)
    monkeypatch.setattr(registration, "get_categorical", count_column)
    monkeypatch.setattr(runner, "get_categorical", count_column)
    adata = sr.datasets.donor_design(300, n_dims=3, n_donors=3)
    sr.tl.donor_response(adata, "donor", "treatment", n_steps=5, batch_size=64, width=16)
    assert reads == {"representation": 1, "columns": ["donor", "treatment"]}
    assert np.isfinite(adata.obs["scratio_donor"][adata.obs["treatment"] != "control"]).all()


def test_a_second_call_says_where_it_replaces_results(caplog, monkeypatch):
    monkeypatch.setattr(sr.settings, "verbosity", "info")
    adata = sr.datasets.donor_design(300, n_dims=3, n_donors=3)
    settings = {"n_steps": 5, "batch_size": 64, "width": 16}
    sr.tl.donor_response(adata, "donor", "treatment", **settings)
    with caplog.at_level("INFO", logger="scratio"):
        sr.tl.donor_response(adata, "donor", "treatment", **settings)
    [line] = [r.getMessage() for r in caplog.records if "replacing" in r.getMessage()]
    obs = [c for c in ("scratio_donor", "scratio_donor_outside") if c in adata.obs]
    where = [f"adata.obs[{c!r}]" for c in obs] + ["adata.uns['scratio_donor']"]
    assert line == f"donor_response: replacing the earlier scratio results {', '.join(where)}"


def test_a_scored_cell_without_a_finite_score_is_an_error_and_nothing_is_written(monkeypatch):
    adata = sr.datasets.donor_design(300, n_dims=3, n_donors=3)
    before = snapshot(adata)

    def broken(self, *args, **kwargs):
        scores = np.zeros(len(args[0]), dtype=np.float32)
        scores[0] = np.nan
        return scores

    monkeypatch.setattr(RatioFlow, "log_ratio", broken)
    with pytest.raises(
        RuntimeError, match=r"1 cells got non-finite scores for `adata.obs\['scratio_donor'\]`"
    ):
        sr.tl.donor_response(adata, "donor", "treatment", n_steps=5, batch_size=64, width=16)
    assert_unchanged(adata, before)


def test_a_users_column_or_uns_entry_is_not_overwritten_silently(no_training):
    adata = da_data(200)
    adata.obs["scratio_da"] = np.linspace(0, 1, 200)  # a float column of the user's
    before = snapshot(adata)
    with pytest.raises(
        ValueError,
        match=r"`adata.obs\['scratio_da'\]` already exists .* not written by scratio.*overwrite=True",
    ):
        sr.tl.differential_abundance(adata, "condition", "control")
    del adata.obs["scratio_da"]
    adata.uns["scratio_da"] = {"note": "mine"}
    before = snapshot(adata)
    with pytest.raises(ValueError, match=r"`adata.uns\['scratio_da'\]` already exists.*`overwrite=True`"):
        sr.tl.differential_abundance(adata, "condition", "control")
    assert_unchanged(adata, before)


def test_scratios_own_results_are_replaced_and_overwrite_replaces_the_users():
    adata = da_data(300)
    adata.obs["mine"] = 1.0
    settings = {"n_steps": 20, "batch_size": 128, "width": 16}
    sr.tl.differential_abundance(adata, "condition", "control", key_added="mine", overwrite=True, **settings)
    first = adata.obs["mine"].to_numpy().copy()
    assert adata.uns["mine"]["params"]["tool"] == "differential_abundance"
    sr.tl.differential_abundance(adata, "condition", "control", key_added="mine", random_state=1, **settings)
    assert not np.array_equal(first, adata.obs["mine"].to_numpy())


def test_ctrl_c_during_training_raises_keyboard_interrupt_and_leaves_the_anndata(monkeypatch):
    import signal

    from lightning.pytorch.callbacks import Callback

    class PressCtrlC(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 3:
                raise KeyboardInterrupt

    adata = da_data(300)
    before = snapshot(adata)
    handler = signal.getsignal(signal.SIGINT)  # the default, or "ignore" in a background job
    with pytest.raises(KeyboardInterrupt, match="interrupted"):
        sr.tl.differential_abundance(
            adata, "condition", "control", n_steps=50, width=16, train_kwargs={"callbacks": [PressCtrlC()]}
        )
    assert_unchanged(adata, before)
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl+C works afterwards as it did before


def test_da_judges_the_support_by_its_own_scoring_pass(monkeypatch):
    """With held-out cells to choose the bandwidth from, no separate pass checks the support."""

    def separate_pass(*args, **kwargs):
        raise AssertionError("a separate pass over the cells")

    adata = da_data(800)
    adata.obsm["X_pca"][5] = 8.0  # in training, far from the other cells
    monkeypatch.setattr(RatioFlow, "outside_training_data", separate_pass)
    monkeypatch.setattr(RatioFlow, "log_likelihood", separate_pass)  # nor does training measure the model's
    sr.tl.differential_abundance(adata, "condition", "control", n_steps=50, batch_size=256, width=16)
    outside = adata.obs["scratio_da_outside"]
    record = adata.uns["scratio_da"]["params"]["outside"]
    assert outside.dtype == bool and record["n_cells"] == outside.sum() <= 1
    assert record["likelihood"].startswith("log p(x) under the compared conditions' mixture, at bandwidth")
    assert np.isfinite(record["threshold"])
    with pytest.raises(AssertionError, match="a separate pass"):  # no held-out choice: the model's check
        sr.tl.differential_abundance(
            adata, "condition", "control", n_steps=50, bandwidth=None, condition_weight=1, width=16
        )


@pytest.mark.parametrize("sample_key", [None, "sample"])
def test_da_scores_the_held_out_cells_once_at_the_chosen_width(monkeypatch, sample_key):
    """The last pass reuses the held-out cells' values from the width search: the numbers of one pass at that width."""
    adata = da_data(600)
    rng = np.random.default_rng(1)
    replicate = np.where(rng.random(adata.n_obs) < 0.5, "a", "b")
    adata.obs["sample"] = [f"{c}_{r}" for c, r in zip(adata.obs["condition"], replicate, strict=True)]
    rows = []
    score = RatioFlow.category_log_likelihoods

    def counted(self, data=None, *args, **kwargs):
        rows.append(len(data))
        return score(self, data, *args, **kwargs)

    monkeypatch.setattr(RatioFlow, "category_log_likelihoods", counted)
    options = {"sample_key": sample_key, "n_steps": 50, "batch_size": 256, "width": 16, "min_cells": 5}
    searched = sr.tl.differential_abundance(adata, "condition", "control", copy=True, **options)
    # one pass over the held-out cells per width, for every condition weight at once
    n_widths = searched.uns["scratio_da"]["bandwidth_selection"]["bandwidth"].nunique()
    n_held = rows[0]
    assert 0 < n_held < adata.n_obs and rows == [n_held] * n_widths + [adata.n_obs - n_held]
    params = searched.uns["scratio_da"]["params"]
    assert (
        params["condition_weight_used"] == 1.0 or sample_key is None
    )  # with samples no base: nothing to weigh
    chosen = {"bandwidth": params["bandwidth_used"], "condition_weight": params["condition_weight_used"]}
    fixed = sr.tl.differential_abundance(adata, "condition", "control", copy=True, **chosen, **options)
    columns = ["scratio_da"] + (["scratio_da_fdr", "scratio_da_significant"] if sample_key else [])
    # at a fixed weight 0 the fixed call takes log-ratios alone, without the correction's divergence: equal to rounding
    pd.testing.assert_frame_equal(searched.obs[columns], fixed.obs[columns], atol=1e-5)


def test_new_cells_outside_the_training_data_are_flagged_with_a_warning():
    adata = da_data(800, random_state=3)
    model = RatioFlow(adata, "X_pca", ["condition"], width=32).train(200, batch_size=256)
    new = adata[:50].copy()
    new.obsm["X_pca"][7] = 20.0  # far from every training cell
    with pytest.warns(
        UserWarning, match=r"1 of 50 scored cells lie outside the training data.*scratio_da_outside"
    ):
        sr.tl.differential_abundance(new, "condition", "control", model=model)
    outside = new.obs["scratio_da_outside"]
    assert outside.dtype == bool and outside.sum() == 1 and outside.iloc[7]
    assert new.uns["scratio_da"]["params"]["outside"]["n_cells"] == 1
    assert new.uns["scratio_da"]["params"]["outside"]["likelihood"] == "log p(x), every condition key null"
    assert np.isfinite(new.obs["scratio_da"]).all()
