"""RatioFlow trained on shifted Gaussians: accuracy against the closed form, estimators, persistence."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from helpers import REFERENCE, SHIFTED, r_squared, trained_pair

import scratio as sr
from scratio._support import SUPPORT_SCORING, Support


@pytest.mark.parametrize("fixture", ["trained_2d", "trained_10d"])
def test_s1_matches_closed_form(fixture, request):
    adata, truth, model = request.getfixturevalue(fixture)
    estimate = model.log_ratio(numerator=SHIFTED, denominator=REFERENCE)
    assert estimate.dtype == np.float32 and estimate.shape == (adata.n_obs,)
    assert np.isfinite(estimate).all()
    assert r_squared(estimate, truth) >= 0.9


def test_weight_average_forgets_the_initial_weights():
    # Without the warm-up of the decay, 0.999^600 = 55% of the average would be random weights.
    adata, truth, model = trained_pair(2000, 2, n_steps=600, ema_decay=0.999)
    assert r_squared(model.log_ratio(numerator=SHIFTED, denominator=REFERENCE), truth) >= 0.9


def test_bf16_training_and_scoring_match_the_closed_form(trained_10d):
    adata, truth, model = trained_10d
    full = model.log_ratio(adata[:1000], SHIFTED, REFERENCE)
    mixed = model.log_ratio(adata[:1000], SHIFTED, REFERENCE, precision="bf16-mixed")
    assert mixed.dtype == np.float32 and np.isfinite(mixed).all()
    # rounding the network's outputs to bfloat16 moves each ratio by a small fraction of its spread
    assert np.sqrt(np.mean((mixed - full) ** 2)) < 0.05 * truth[:1000].std()
    adata, truth, model = trained_pair(2000, 2, n_steps=600, precision="bf16-mixed")
    assert model.training.precision == "bf16-mixed"
    estimate = model.log_ratio(numerator=SHIFTED, denominator=REFERENCE, precision="bf16-mixed")
    assert r_squared(estimate, truth) >= 0.9


@pytest.mark.parametrize(
    ("has_units", "precision", "hinted"),
    [(True, "32-true", True), (True, "bf16-mixed", False), (False, "32-true", False)],
)
def test_training_says_when_bf16_would_be_faster(has_units, precision, hinted, monkeypatch, caplog):
    from scratio.core import training

    monkeypatch.setattr(training, "cpu_has_bf16_matrix_units", lambda: has_units)
    monkeypatch.setattr(sr.settings, "verbosity", "info")
    adata = sr.datasets.shifted_gaussians(200, 2, random_state=0)
    with caplog.at_level("INFO", logger="scratio"):
        sr.RatioFlow(adata, "X_pca", "condition", width=16).train(5, batch_size=64, precision=precision)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Training RatioFlow"))
    assert ('precision="bf16-mixed"` takes about half the time' in line) is hinted


def test_bf16_matrix_units_are_read_from_the_cpu_flags(monkeypatch):
    from scratio.core import training

    training.cpu_has_bf16_matrix_units.cache_clear()
    flags = {"amx": "flags\t\t: fpu sse avx512f amx_bf16 amx_tile\n", "none": "flags\t\t: fpu sse avx2\n"}
    for kind, expected in (("amx", True), ("none", False)):
        monkeypatch.setattr(training.Path, "read_text", lambda self, kind=kind: flags[kind])
        assert training.cpu_has_bf16_matrix_units() is expected
        training.cpu_has_bf16_matrix_units.cache_clear()


def test_estimators_agree(trained_10d):
    adata, truth, model = trained_10d
    cells = adata[:500]
    s1 = model.log_ratio(cells, SHIFTED, REFERENCE, estimator="s1")
    s2 = model.log_ratio(cells, SHIFTED, REFERENCE, estimator="s2")
    naive = model.log_ratio(cells, SHIFTED, REFERENCE, estimator="naive")
    scale = truth[:500].std()
    for other in (s2, naive):
        assert np.sqrt(np.mean((s1 - other) ** 2)) < 0.25 * scale
        assert np.corrcoef(s1, other)[0, 1] > 0.97


def test_hutchinson_fast_mode_tracks_exact(trained_10d):
    adata, truth, model = trained_10d
    fast = model.log_ratio(adata[:1000], SHIFTED, REFERENCE, divergence="hutchinson", n_probes=2)
    assert r_squared(fast, truth[:1000]) >= 0.85


def test_many_condition_form_equals_pairwise_s2(trained_10d):
    adata, _, model = trained_10d
    cells = adata[:300]
    log_likelihoods = model.category_log_likelihoods(cells, "condition")
    assert sorted(log_likelihoods.columns) == ["reference", "shifted"]
    assert list(log_likelihoods.index) == list(cells.obs_names)
    from_one_trajectory = (log_likelihoods["shifted"] - log_likelihoods["reference"]).to_numpy()
    pairwise = model.log_ratio(cells, SHIFTED, REFERENCE, estimator="s2")
    np.testing.assert_allclose(from_one_trajectory, pairwise, atol=2e-3)


def test_category_log_ratios_are_the_likelihoods_less_that_of_the_base(trained_10d):
    adata, _, model = trained_10d
    cells = adata[:200]
    log_ratios = model.category_log_ratios(cells, "condition")
    assert list(log_ratios.columns) == ["reference", "shifted"] and log_ratios.dtypes.eq(np.float32).all()
    expected = model.category_log_likelihoods(cells, "condition").sub(model.log_likelihood(cells), axis=0)
    np.testing.assert_allclose(log_ratios, expected, atol=2e-3)


def test_a_network_blind_to_the_conditions_drops_out_of_the_log_ratios():
    """Its divergence is left out of ``category_log_ratios``, whose differences stay the likelihoods'."""
    adata = sr.datasets.shifted_gaussians(800, 3, random_state=0)
    blind = sr.RatioFlow(adata, "X_pca", "condition", base="mixture", condition_dim=0, width=32)
    blind.train(30, batch_size=256)
    seen = sr.RatioFlow(adata, "X_pca", "condition", base="mixture", width=32)
    seen.train(30, batch_size=256)
    assert blind.network.cancels_from_ratios() and not seen.network.cancels_from_ratios()
    cells = adata[:150]
    # so does a network that sees them, scored with condition_weight=0
    for model, scoring in ((blind, {}), (seen, {"condition_weight": 0.0})):
        ratios = model.category_log_ratios(cells, **scoring)
        likelihoods = model.category_log_likelihoods(
            cells, batch_size=7, **scoring
        )  # its divergence integrated
        np.testing.assert_allclose(
            ratios["shifted"] - ratios["reference"],
            likelihoods["shifted"] - likelihoods["reference"],
            atol=1e-4,
        )
        assert (ratios["shifted"] - ratios["reference"]).std() > 0.3  # the base's weights differ
    weighted = seen.category_log_ratios(cells)
    assert np.abs((weighted - ratios).to_numpy()).max() > 1e-3  # with weight 1 the network adds its own


def test_several_condition_weights_from_one_trajectory_are_each_weights_own():
    """``condition_weights=[0, 1]``: one column per (weight, category), each the call at that weight."""
    adata = sr.datasets.shifted_gaussians(600, 3, random_state=1)
    model = sr.RatioFlow(adata, "X_pca", "condition", base="mixture", width=32)
    model.train(30, batch_size=256)
    cells = adata[:120]
    both = model.category_log_likelihoods(cells, condition_weights=[0.0, 1.0])
    assert both.columns.names == ["condition_weight", "condition"]
    assert list(both.columns) == [(w, c) for w in (0.0, 1.0) for c in ("reference", "shifted")]
    for weight in (0.0, 1.0):
        alone = model.category_log_likelihoods(cells, condition_weight=weight)
        np.testing.assert_allclose(both[weight], alone, atol=1e-4)
    assert np.abs((both[0.0] - both[1.0]).to_numpy()).max() > 1e-3
    with pytest.raises(ValueError, match="`condition_weights` scores along the trajectory of every key null"):
        model.category_log_ratios(cells, condition_weights=[0.0, 1.0], condition_weight=0.5)


def test_posterior_sums_to_one_and_follows_the_ratio(trained_10d):
    adata, truth, model = trained_10d
    posterior = model.condition_probabilities(adata[:300])
    np.testing.assert_allclose(posterior.sum(axis=1), 1.0, atol=1e-6)
    assert ((posterior >= 0) & (posterior <= 1)).all().all()
    # Under a uniform prior the posterior log-odds is the log-ratio.
    log_odds = np.log(posterior["shifted"] / posterior["reference"])
    assert np.corrcoef(log_odds, truth[:300])[0, 1] > 0.9
    tilted = model.condition_probabilities(adata[:300], prior={"shifted": 0.9, "reference": 0.1})
    assert (tilted["shifted"] >= posterior["shifted"] - 1e-6).all()
    with pytest.raises(TypeError, match="pass the scoring option `condition_weight=w`"):
        model.condition_probabilities(adata[:300], condition_weights=[0.0, 1.0])


def test_log_likelihood_is_in_the_units_of_the_representation(trained_2d):
    adata, _, model = trained_2d
    x = adata.obsm["X_pca"][:400]
    estimated = model.log_likelihood(x, SHIFTED)
    mean = np.asarray(adata.uns["simulation"]["mean"])
    exact = -0.5 * ((x - mean) ** 2).sum(1) - np.log(2 * np.pi)
    assert np.median(np.abs(estimated - exact)) < 0.1
    assert np.corrcoef(estimated, exact)[0, 1] > 0.98


def test_samples_follow_their_condition(trained_2d):
    adata, _, model = trained_2d
    shifted = model.sample(3000, SHIFTED, random_state=1)
    reference = model.sample(3000, REFERENCE, random_state=1)
    mean = np.asarray(adata.uns["simulation"]["mean"])
    np.testing.assert_allclose(shifted.mean(0), mean, atol=0.15)
    np.testing.assert_allclose(reference.mean(0), 0.0, atol=0.15)
    np.testing.assert_allclose(reference.std(0), 1.0, atol=0.15)
    np.testing.assert_array_equal(shifted, model.sample(3000, SHIFTED, random_state=1))


def test_per_cell_conditions_and_batch_independence(trained_2d):
    adata, _, model = trained_2d
    cells = adata[:200]
    own = cells.obs["condition"].to_numpy()
    other = np.where(own == "shifted", "reference", "shifted")
    per_cell = model.log_ratio(cells, {"condition": own}, {"condition": other}, batch_size=64)
    shifted = own == "shifted"
    by_group = np.empty_like(per_cell)
    by_group[shifted] = model.log_ratio(cells[shifted], SHIFTED, REFERENCE, batch_size=200)
    by_group[~shifted] = model.log_ratio(cells[~shifted], REFERENCE, SHIFTED, batch_size=37)
    np.testing.assert_allclose(per_cell, by_group, atol=1e-5)
    assert (per_cell[shifted].mean() > 0) and (per_cell[~shifted].mean() > 0)  # each cell favours its own


def test_scoring_memory_does_not_grow_with_the_cells(trained_2d):
    _, _, model = trained_2d
    # One condition for every cell is a zero-stride view, not a code per cell.
    assert model.encode(SHIFTED, 10**7).strides[0] == 0
    assert model.encode({"condition": ["shifted", "reference"]}, 2).tolist() == [[1], [0]]
    with pytest.raises(ValueError, match="No cells to score"):
        model.log_ratio(np.zeros((0, 2)), SHIFTED, REFERENCE)
    with pytest.raises(ValueError, match="finite 2-D array"):
        model.log_ratio(np.array([[0.0, np.nan]]), SHIFTED, REFERENCE)


def test_same_seed_same_numbers():
    runs = [
        trained_pair(600, 2, n_steps=60)[2].log_ratio(numerator=SHIFTED, denominator=REFERENCE)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])
    adata = sr.datasets.shifted_gaussians(600, 2)
    other_seed = sr.RatioFlow(adata, condition_keys="condition", random_state=1, **{"width": 96}).train(
        60, batch_size=512
    )
    assert not np.array_equal(runs[0], other_seed.log_ratio(numerator=SHIFTED, denominator=REFERENCE))


def test_save_load_round_trip(trained_2d, tmp_path):
    adata, _, model = trained_2d
    model.save(tmp_path / "model")
    loaded = sr.RatioFlow.load(tmp_path / "model", adata=adata)
    np.testing.assert_array_equal(
        model.log_ratio(adata[:200], SHIFTED, REFERENCE), loaded.log_ratio(adata[:200], SHIFTED, REFERENCE)
    )
    assert loaded.categories == model.categories and loaded.training_record == model.training_record
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "model")
    # The weights file holds tensors only: loading it never unpickles arbitrary objects.
    import torch

    state = torch.load(tmp_path / "model" / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_load_rejects_an_anndata_with_other_categories(trained_2d, tmp_path):
    adata, _, model = trained_2d
    model.save(tmp_path / "model")
    renamed = adata[:100].copy()
    renamed.obs["condition"] = pd.Categorical(
        np.where(renamed.obs["condition"] == "shifted", "IFNg", "control")
    )
    with pytest.raises(ValueError, match=r"categories \['IFNg', 'control'\] the model was not trained on"):
        sr.RatioFlow.load(tmp_path / "model", adata=renamed)
    narrow = adata[:100].copy()
    narrow.obsm["X_pca"] = narrow.obsm["X_pca"][:, :1]
    with pytest.raises(ValueError, match="1 dimensions but the model was trained on 2"):
        sr.RatioFlow.load(tmp_path / "model", adata=narrow)


def test_encoding_errors_name_the_fix(trained_2d):
    _, _, model = trained_2d
    with pytest.raises(KeyError, match="'donor' is not registered; the model knows \\['condition'\\]"):
        model.encode({"donor": "d1"}, 3)
    with pytest.raises(ValueError, match="Unknown category 'IFNg' for key 'condition'"):
        model.encode({"condition": "IFNg"}, 3)
    with pytest.raises(ValueError, match="has 2 entries for 3 cells"):
        model.encode({"condition": ["shifted", "reference"]}, 3)
    with pytest.raises(ValueError, match="has 3 dimensions but the model was trained on 2"):
        model.log_ratio(np.zeros((4, 3)), SHIFTED, REFERENCE)


def test_registration_errors():
    adata = sr.datasets.shifted_gaussians(100, 2)
    with pytest.raises(KeyError, match="'X_scvi' not found in `adata.obsm`"):
        sr.RatioFlow(adata, use_rep="X_scvi", condition_keys="condition")
    adata.obsm["X_pca"][:] = 1.0
    with pytest.raises(ValueError, match="zero variance"):
        sr.RatioFlow(adata, condition_keys="condition")


def test_repr_and_record(trained_2d):
    _, _, model = trained_2d
    assert "condition (2)" in repr(model) and "trained 600 steps" in repr(model)
    assert model.training_record["final_loss"] > 0
    assert len(model.training_record["loss_history"]) == 60


def test_n_pcs_uses_the_first_columns_and_checks_its_range(trained_2d):
    adata, _, _ = trained_2d
    wide = adata.copy()
    wide.obsm["X_pca"] = np.hstack(
        [adata.obsm["X_pca"], np.random.default_rng(0).normal(size=(adata.n_obs, 3))]
    )
    before = wide.obsm["X_pca"].copy()
    model = sr.RatioFlow(wide, condition_keys="condition", n_pcs=2, width=32)
    assert model.n_dims == 2 and model.record["n_dims"] == 2 and model.record["scaling"] == "per_dimension"
    model.train(20, batch_size=128)
    scores = model.log_ratio(wide[:50], SHIFTED, REFERENCE)  # the wide AnnData is cut to 2 columns
    np.testing.assert_array_equal(scores, model.log_ratio(wide.obsm["X_pca"][:50, :2], SHIFTED, REFERENCE))
    np.testing.assert_array_equal(wide.obsm["X_pca"], before)
    with pytest.raises(ValueError, match=r"`n_pcs` must lie in \[1, 5\] for 'X_pca', got 9"):
        sr.RatioFlow(wide, condition_keys="condition", n_pcs=9)


def test_to_moves_the_network(trained_2d):
    _, _, model = trained_2d
    assert model.to("cpu") is model and model.device.type == "cpu"


def test_a_model_saved_by_0_1_0_loads_and_scores_the_same():
    # tests/data/model_v0.1.0 was written by scratio 0.1.0 (commit fc8ebd1) with the scores beside it.
    data = Path(__file__).parent / "data"
    expected = np.load(data / "model_v0.1.0_scores.npz")
    model = sr.RatioFlow.load(data / "model_v0.1.0")
    assert (
        model.is_trained and model.n_pcs == 2 and model.categories == {"condition": ["reference", "shifted"]}
    )
    cells = expected["cells"]
    np.testing.assert_allclose(model.log_ratio(cells, SHIFTED, REFERENCE), expected["log_ratio"], atol=1e-6)
    np.testing.assert_allclose(model.log_likelihood(cells, SHIFTED), expected["log_likelihood"], atol=1e-6)
    np.testing.assert_allclose(
        model.condition_probabilities(cells).to_numpy(), expected["probabilities"], atol=1e-6
    )
    with pytest.raises(ValueError, match=r"No data is attached.*model.attach\(adata\)"):
        model.log_ratio(numerator=SHIFTED, denominator=REFERENCE)


def test_renamed_keywords_still_work_with_a_warning(trained_2d):
    adata, _, model = trained_2d
    cells = adata[:50]
    new = model.log_ratio(cells, SHIFTED, REFERENCE, estimator="s2", solver_steps=2)
    with pytest.warns(FutureWarning, match=r"`method` of RatioFlow.log_ratio\(\) is renamed `estimator`"):
        np.testing.assert_array_equal(
            model.log_ratio(cells, SHIFTED, REFERENCE, method="s2", solver_steps=2), new
        )
    with pytest.warns(FutureWarning, match=r"`n_steps` of RatioFlow.log_ratio\(\) is renamed `solver_steps`"):
        np.testing.assert_array_equal(
            model.log_ratio(cells, SHIFTED, REFERENCE, estimator="s2", n_steps=2), new
        )
    with pytest.warns(FutureWarning, match="`n_steps` of RatioFlow.sample"):
        np.testing.assert_array_equal(
            model.sample(20, SHIFTED, n_steps=4), model.sample(20, SHIFTED, solver_steps=4)
        )
    with pytest.raises(TypeError, match="both `n_steps` and its new name `solver_steps`"):
        model.log_likelihood(cells, SHIFTED, n_steps=2, solver_steps=2)
    with pytest.warns(FutureWarning, match="SolverOptions` is renamed `scratio.core.Solver`"):
        assert sr.core.SolverOptions is sr.core.Solver


def test_scoring_options_are_checked_before_scoring(trained_2d):
    adata, _, model = trained_2d
    cells = adata[:50]
    with pytest.raises(TypeError, match=r"Unknown scoring options \['n_probe'\]"):
        model.log_ratio(cells, SHIFTED, REFERENCE, n_probe=2)
    with pytest.raises(ValueError, match="Unknown solver 'dopri'"):
        model.log_ratio(cells, SHIFTED, REFERENCE, solver="dopri")
    with pytest.raises(ValueError, match="Unknown estimator 's3'"):
        model.log_ratio(cells, SHIFTED, REFERENCE, estimator="s3")
    with pytest.raises(TypeError, match="as fields of the `Solver`"):
        model.log_ratio(cells, SHIFTED, REFERENCE, solver=sr.core.Solver(), divergence="hutchinson")
    with pytest.raises(
        TypeError, match=r"\(\['start'\], with `start=model.path.smoothing_time\(bandwidth\)`\)"
    ):
        model.log_ratio(cells, SHIFTED, REFERENCE, solver=sr.core.Solver(), bandwidth=0.6)
    # a Solver object and the same options as keywords give the same numbers
    np.testing.assert_array_equal(
        model.log_ratio(cells, SHIFTED, REFERENCE, solver=sr.core.Solver(n_steps=2, seed=0)),
        model.log_ratio(cells, SHIFTED, REFERENCE, solver_steps=2),
    )


def test_mistyped_network_option_names_the_valid_ones():
    adata = sr.datasets.shifted_gaussians(100, 2)
    with pytest.raises(
        TypeError, match=r"Unknown options \['widht'\] of RatioFlow; the network takes \['width'"
    ):
        sr.RatioFlow(adata, condition_keys="condition", widht=32)


def test_training_options_hold_every_default_once():
    options = sr.core.TrainingOptions.from_kwargs(lr=0.01, gradient_clip_val=1.0)
    assert options.lr == 0.01 and dict(options.trainer_kwargs) == {"gradient_clip_val": 1.0}
    with pytest.raises(TypeError, match=r"Unknown training options \['learning_rate'\]"):
        sr.core.TrainingOptions.from_kwargs(learning_rate=0.1)
    with pytest.raises(ValueError, match="p_drop=1.5"):
        sr.core.TrainingOptions(p_drop=1.5)
    with pytest.raises(ValueError, match="precision='16-mixed'"):
        sr.core.TrainingOptions(precision="16-mixed")
    defaults = sr.core.TrainingOptions()
    assert [defaults.steps_for(n) for n in (100, 2000, 10**5)] == [400, 1000, 3000]
    assert [defaults.validation_size(n) for n in (100, 1000, 10**6)] == [0, 100, 4096]


def test_learning_rate_warms_up_then_decays_as_a_cosine():
    from scratio.core.flow_matching import FlowMatchingModule

    network = sr.core.ConditionalFlowNet(2, [2], width=8)
    options = sr.core.TrainingOptions(lr=1.0, warmup_steps=10)
    configured = FlowMatchingModule(
        network, sr.core.GaussianPath(), options, max_steps=50
    ).configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(50):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [(k + 1) / 10 if k < 10 else 0.5 * (1 + math.cos(math.pi * (k - 10) / 40)) for k in range(50)]
    np.testing.assert_allclose(rates, expected, atol=1e-12)


@pytest.mark.parametrize(
    "edit",
    [
        lambda config: config["scale"].__setitem__(0, config["scale"][0] * 2),
        lambda config: config["categories"]["condition"].reverse(),
        lambda config: config["path"].__setitem__("s_min", 0.3),
    ],
    ids=["scale", "category order", "schedule"],
)
def test_an_edited_saved_model_is_refused(trained_2d, tmp_path, edit):
    import json

    _, _, model = trained_2d
    model.save(tmp_path / "model")
    sr.RatioFlow.load(tmp_path / "model")  # as saved: loads
    config_file = tmp_path / "model" / "config.json"
    config = json.loads(config_file.read_text())
    edit(config)
    config_file.write_text(json.dumps(config, indent=1))
    with pytest.raises(ValueError, match=r"changed after it was saved.*checksum"):
        sr.RatioFlow.load(tmp_path / "model")


def test_fast_scores_of_a_cell_do_not_depend_on_the_other_cells_passed(trained_2d):
    adata, _, model = trained_2d
    fast = {"divergence": "hutchinson", "n_probes": 1}
    everything = model.log_ratio(adata, SHIFTED, REFERENCE, **fast)
    subset = np.arange(1000, 1500)
    alone = model.log_ratio(adata.obsm["X_pca"][subset], SHIFTED, REFERENCE, **fast)
    np.testing.assert_array_equal(alone, everything[subset])
    shuffled = np.random.default_rng(0).permutation(subset)
    np.testing.assert_array_equal(
        model.log_ratio(adata[shuffled], SHIFTED, REFERENCE, **fast), everything[shuffled]
    )


def test_cells_outside_the_training_data_are_told_apart(trained_2d, tmp_path):
    adata, _, model = trained_2d
    assert model.support.reference == "held-out" and model.support.n_reference == 200
    held_out = model.log_likelihood(
        adata[model.held_out], **SUPPORT_SCORING
    )  # what training left to first use
    assert model.support == Support.from_log_likelihoods(held_out, "held-out")
    assert model.outside_training_data().mean() <= 0.01
    far = np.array([[20.0, 20.0], [0.5, 0.5], [-15.0, 3.0]], dtype=np.float32)
    assert model.outside_training_data(far).tolist() == [True, False, True]
    model.save(tmp_path / "model")
    assert sr.RatioFlow.load(tmp_path / "model").support == model.support
    old = sr.RatioFlow.load(Path(__file__).parent / "data" / "model_v0.1.0")
    with pytest.raises(ValueError, match="no record of its training data's support.*train it again"):
        old.outside_training_data(far)


def test_representation_and_cells_are_the_registered_reading(trained_2d):
    adata, _, model = trained_2d
    np.testing.assert_array_equal(model.representation(), adata.obsm["X_pca"])
    np.testing.assert_array_equal(model.representation(adata[:5]), adata.obsm["X_pca"][:5])
    shifted = (adata.obs["condition"] == "shifted").to_numpy()
    assert model.cells.codes[:, 0].tolist() == shifted.astype(int).tolist()


def test_gaussian_base_is_accurate_after_little_training_and_round_trips(tmp_path):
    """Shifted Gaussians in 8 dimensions: the base holds the answer that 100 steps cannot learn."""
    adata = sr.datasets.shifted_gaussians(1500, 8, loc=2.0, random_state=0)
    truth = adata.obs["true_log_ratio"].to_numpy()
    errors = {}
    for base in (None, "gaussian"):
        model = sr.RatioFlow(adata, condition_keys="condition", base=base, width=64)
        model.train(100, batch_size=512)
        estimate = model.log_ratio(adata[:200], SHIFTED, REFERENCE)
        errors[base] = float(np.mean((estimate - truth[:200]) ** 2))
    assert errors["gaussian"] < 0.05 * truth.var() < errors[None]
    assert model.record["network"]["base"] == "gaussian" and model.record["base_shrinkage"] == 1.0
    model.save(tmp_path / "model")
    loaded = sr.RatioFlow.load(tmp_path / "model", adata=adata)
    np.testing.assert_array_equal(estimate, loaded.log_ratio(adata[:200], SHIFTED, REFERENCE))


def test_mixture_base_holds_the_shares_of_shared_states_and_round_trips(tmp_path):
    """Three states in 4 dimensions, in other shares per condition: the base scores their log-ratio after little training."""
    rng = np.random.default_rng(0)
    centres = 4.0 * np.eye(4)[:3]
    shares = {"shifted": [0.6, 0.3, 0.1], "reference": [0.2, 0.3, 0.5]}
    states = {c: rng.choice(3, size=1000, p=p) for c, p in shares.items()}
    x = np.concatenate([centres[s] + 0.5 * rng.standard_normal((1000, 4)) for s in states.values()])
    conditions = pd.Categorical(np.repeat(list(shares), 1000))
    adata = AnnData(obs=pd.DataFrame({"condition": conditions}, index=[f"cell{i}" for i in range(2000)]))
    adata.obsm["X_pca"] = x.astype(np.float32)
    state = np.concatenate(list(states.values()))
    truth = np.log(np.array(shares["shifted"]) / np.array(shares["reference"]))[state]
    errors = {}
    for base in (None, "mixture"):
        model = sr.RatioFlow(adata, condition_keys="condition", base=base, width=64)
        model.train(100, batch_size=512)
        estimate = model.log_ratio(adata[::10], SHIFTED, REFERENCE)
        errors[base] = float(np.mean((estimate - truth[::10]) ** 2))
    assert errors["mixture"] < 0.1 * truth.var() < errors[None]
    assert model.record["network"]["base"] == "mixture" and model.record["base_components"] >= 3
    model.save(tmp_path / "model")
    loaded = sr.RatioFlow.load(tmp_path / "model", adata=adata)
    np.testing.assert_array_equal(estimate, loaded.log_ratio(adata[::10], SHIFTED, REFERENCE))
