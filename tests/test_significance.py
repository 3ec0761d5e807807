"""Per-cell significance across replicates: the permutation test over samples and its tool."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pytest
import torch
from test_tl import FAST, assert_unchanged, forbid_training, snapshot

import scratio as sr
from scratio.tl._significance import (
    SampleDesign,
    moderated_t,
    pooled_permutation_fdr,
    sample_permutation_test,
)

torch.set_num_threads(1)

THREE_BY_THREE = SampleDesign(["c1", "c2", "c3"], ["t1", "t2", "t3"])


def test_assignments_are_every_relabelling_within_strata():
    rng = np.random.default_rng(0)
    masks = THREE_BY_THREE.assignments(1000, rng)
    assert THREE_BY_THREE.n_assignments == len(masks) == 20  # 6 choose 3
    np.testing.assert_array_equal(masks[0], [False, False, False, True, True, True])  # the observed one first
    assert (masks.sum(axis=1) == 3).all() and len({m.tobytes() for m in masks}) == 20

    batches = {"c1": "a", "c2": "a", "t1": "a", "t2": "a", "c3": "b", "c4": "b", "t3": "b", "t4": "b"}
    nested = SampleDesign(["c1", "c2", "c3", "c4"], ["t1", "t2", "t3", "t4"], strata=batches)
    masks = nested.assignments(1000, rng)
    assert nested.n_assignments == len(masks) == 36  # (4 choose 2) per batch, not 8 choose 4 = 70
    in_a = np.isin(nested.samples, ["c1", "c2", "t1", "t2"])
    assert (masks[:, in_a].sum(axis=1) == 2).all()  # two targets stay in each batch

    sampled = SampleDesign([f"c{i}" for i in range(8)], [f"t{i}" for i in range(8)]).assignments(50, rng)
    assert len(sampled) == 50 and len({m.tobytes() for m in sampled}) == 50


def test_paired_design_swaps_labels_within_donors():
    donors = {f"{c}_{d}": f"donor_{d}" for c in ("control", "treated") for d in range(6)}
    paired = SampleDesign(
        [f"control_{d}" for d in range(6)], [f"treated_{d}" for d in range(6)], strata=donors
    )
    masks = paired.assignments(1000, np.random.default_rng(0))
    assert paired.n_assignments == len(masks) == 2**6
    assert (masks[:, :6] ^ masks[:, 6:]).all()  # each donor keeps one treated sample


def test_moderated_t_closed_form():
    log_p = np.array([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    t = moderated_t(log_p, np.array([False, False, False, True, True, True]))
    # difference 3, Welch s.e. sqrt(1/3 + 1/3), fudge = median of (0.816, 0) = 0.408
    se = np.sqrt(2 / 3)
    np.testing.assert_allclose(t, [3 / (se + se / 2), 0.0])
    log_p[1, 3:] = 1.4  # a difference of 0.4
    is_target = np.array([True, True, True, False, False, False])  # differences -3 and -0.4
    # a difference within the threshold gives 0, one beyond it keeps its statistic
    t = moderated_t(log_p, is_target, min_log_ratio=0.5)
    np.testing.assert_allclose(t, [-3 / (se + se / 2), 0.0])
    # TREAT: each difference moves towards 0 by the threshold, and one smaller than it becomes 0
    t = moderated_t(log_p, is_target, min_log_ratio=0.5, treat=True)
    np.testing.assert_allclose(t, [-(3 - 0.5) / (se + se / 2), 0.0])


def test_min_log_ratio_keeps_the_test_calibrated_and_calls_no_change_within_it():
    called_anywhere, found = [], []
    for seed in range(60):
        for effect in (0.0, 3.0):
            log_p, is_da = _null_and_effect(seed, effect)
            q = sample_permutation_test(
                log_p, THREE_BY_THREE, n_permutations=1000, rng=np.random.default_rng(seed), min_log_ratio=0.5
            ).q
            within = np.abs(log_p[:, 3:].mean(axis=1) - log_p[:, :3].mean(axis=1)) <= 0.5
            assert (q[within] == 1).all()  # not called, whatever the other samples say
            if effect:
                found.append((q[is_da] < 0.1).mean())
            else:
                called_anywhere.append((q < 0.1).any())
    assert np.mean(called_anywhere) <= 0.12  # the null applies the same threshold: still calibrated
    assert np.mean(found) >= 0.9


def test_treat_calls_changes_beyond_the_threshold_and_not_at_it():
    found, at_threshold = [], []
    for seed in range(30):
        for effect, record in ((3.0, found), (0.5, at_threshold)):
            log_p, is_da = _null_and_effect(seed, effect)
            q = sample_permutation_test(
                log_p,
                THREE_BY_THREE,
                n_permutations=1000,
                rng=np.random.default_rng(seed),
                min_log_ratio=0.5,
                treat=True,
            ).q
            record.append((q[is_da] < 0.1).mean())
    assert np.mean(found) >= 0.9  # 3 nats of change, 0.5 of them the threshold
    # a change of exactly the threshold is tested as no change: called in at most alpha of datasets
    assert np.mean(np.array(at_threshold) > 0) <= 0.1


def _null_and_effect(seed: int, effect: float) -> tuple[np.ndarray, np.ndarray]:
    """Log-densities of 2000 cells in 20 regions x 6 samples, with sample-by-region noise."""
    rng = np.random.default_rng(seed)
    region = rng.integers(20, size=2000)
    log_p = rng.normal(scale=0.3, size=(20, 6))[region] + rng.normal(scale=0.3, size=(2000, 6))
    log_p[region == 0, 3:] += effect
    return log_p, region == 0


def test_permutation_fdr_is_calibrated_under_sample_noise_and_finds_an_effect():
    called_anywhere, share_called = [], []
    for seed in range(60):
        log_p, _ = _null_and_effect(seed, 0.0)
        q, n, typical = sample_permutation_test(
            log_p, THREE_BY_THREE, n_permutations=1000, rng=np.random.default_rng(seed)
        )
        assert n == 20 and q.min() >= 1 / 20 and q.max() <= 1 and typical == 0.0  # no normalisation
        called_anywhere.append((q < 0.1).any())
        share_called.append((q < 0.1).mean())
    assert np.mean(called_anywhere) <= 0.12
    assert np.mean(share_called) <= 0.01

    tpr, fdp = [], []
    for seed in range(5):  # an effect of 10 times the sample noise, in one region of 20
        log_p, is_da = _null_and_effect(seed, 3.0)
        q = sample_permutation_test(
            log_p, THREE_BY_THREE, n_permutations=1000, rng=np.random.default_rng(seed)
        ).q
        called = q < 0.1
        tpr.append(called[is_da].mean())
        fdp.append((~is_da[called]).mean())
    assert min(tpr) >= 0.9
    assert np.mean(fdp) <= 0.1


def test_median_normalization_does_not_call_a_dilution_shared_by_most_cells():
    # Region 0 (40% of cells, densities between those of the other regions, so that it holds
    # the median cell) doubles in the target samples; every region's density there falls by
    # the same factor 0.7, which "none" calls depleted and "median" takes as the baseline.
    rng = np.random.default_rng(0)
    region = np.where(rng.random(2000) < 0.4, 0, rng.integers(1, 21, size=2000))
    baseline = np.r_[0.0, np.full(10, 2.0), np.full(10, -2.0)]
    log_p = baseline[region, None] + rng.normal(scale=0.1, size=(21, 6))[region]
    log_p += rng.normal(scale=0.1, size=(2000, 6))
    is_da = region == 0
    log_p[is_da, 3:] += np.log(2.0)
    log_p[:, 3:] += np.log(0.7)
    q = {
        normalization: sample_permutation_test(
            log_p,
            THREE_BY_THREE,
            n_permutations=1000,
            rng=np.random.default_rng(0),
            normalization=normalization,
        )[0]
        for normalization in ("none", "median")
    }
    assert (q["median"][is_da] < 0.1).mean() >= 0.9
    assert (q["median"][~is_da] < 0.1).mean() <= 0.01
    assert (q["none"][~is_da] < 0.1).mean() >= 0.5
    # the size factors take (part of) the shared dilution, log 0.7, as the typical cell's
    # log-ratio: with 40% of cells expanded and cell noise the median sits above it
    typical = sample_permutation_test(
        log_p, THREE_BY_THREE, n_permutations=10, rng=np.random.default_rng(0), normalization="median"
    ).typical_log_ratio
    assert np.log(0.7) - 0.05 < typical < -0.05
    with pytest.raises(
        ValueError, match=r"`sample_normalization` must be one of \('none', 'median'\), got 'tmm'"
    ):
        sample_permutation_test(log_p, THREE_BY_THREE, n_permutations=10, rng=None, normalization="tmm")


def test_pooled_fdr_counts_each_side_apart():
    observed = np.array([5.0, 4.0, -5.0, 0.1, -0.1, 0.0])
    permuted = [np.array([0.2, -0.2, 0.1, 0.0, 0.3, -0.3])] * 19
    q = pooled_permutation_fdr(observed, iter(permuted))
    # two cells past 4 on the positive side: (2 observed + 1) / 20 assignments / 2 cells
    np.testing.assert_allclose(q[:2], 3 / 20 / 2)
    np.testing.assert_allclose(q[2], 2 / 20 / 1)  # one cell past 5 on the negative side
    assert (q[3:] > 0.5).all()


@pytest.fixture(scope="module")
def replicate_results():
    """The tool on a null with composition noise between samples, and on one expanded state (both normalisations)."""
    results = {}
    for name, expanded, test_options in [
        ("null", None, {}),  # the default
        ("expanded", 0, {"sample_normalization": "none", "min_log_ratio": 0.0}),
        ("expanded, median", 0, {"min_log_ratio": 0.0}),
        ("expanded, median, default", 0, {}),
        ("expanded, median, treat", 0, {"min_log_ratio": 0.2, "treat": True}),
    ]:
        adata = sr.datasets.replicate_design(
            1500,
            n_dims=4,
            n_states=4,
            expanded_state=expanded,
            fold_change=4.0,
            concentration=20.0,
            random_state=3,
        )
        sr.tl.differential_abundance(
            adata,
            "condition",
            "control",
            sample_key="sample",
            n_steps=600,
            batch_size=256,
            **test_options,
        )
        results[name] = adata
    return results


def test_da_significance_outputs(replicate_results, tmp_path):
    adata = replicate_results["expanded"]
    fdr, significant = adata.obs["scratio_da_fdr"], adata.obs["scratio_da_significant"]
    assert fdr.dtype == np.float32 and significant.dtype == bool
    assert fdr.notna().all() and fdr.between(0, 1).all()
    np.testing.assert_array_equal(significant, fdr < 0.1)
    test = adata.uns["scratio_da"]["test"]
    assert test["n_samples"] == {"control": 3, "treated": 3}
    assert test["n_permutations"] == {"treated": 20} and test["exhaustive"] == {"treated": True}
    assert test["alpha"] == 0.1 and test["strata"] is None
    assert test["columns"] == {"treated": ["scratio_da_fdr", "scratio_da_significant"]}
    assert test["n_significant"]["treated"] == significant.sum()
    params = adata.uns["scratio_da"]["params"]
    assert params["other_columns"] == ["scratio_da_fdr", "scratio_da_significant"]
    adata.write_h5ad(tmp_path / "da.h5ad")
    back = ad.read_h5ad(tmp_path / "da.h5ad")
    np.testing.assert_array_equal(back.obs["scratio_da_significant"], significant)
    assert back.uns["scratio_da"]["test"]["n_samples"]["treated"] == 3


def test_da_significance_calls_the_expanded_state_and_nothing_under_the_null(replicate_results):
    null = replicate_results["null"]
    assert null.obs["scratio_da_significant"].mean() <= 0.01
    adata = replicate_results["expanded"]
    called, is_da = adata.obs["scratio_da_significant"].to_numpy(), adata.obs["is_da"].to_numpy()
    assert called[is_da].mean() >= 0.8
    # Without normalisation densities are relative: the other states' shares fall from 1/4 to
    # 1/7 (true log-ratio -0.56), so calls there are right too, but never in the wrong direction.
    truth = adata.obs["true_log_ratio"].to_numpy()
    assert (np.sign(adata.obs["scratio_da"].to_numpy()[called]) == np.sign(truth[called])).mean() >= 0.99


def test_da_significance_with_median_normalization_calls_the_expanded_state_only(replicate_results):
    density, median = replicate_results["expanded"], replicate_results["expanded, median"]
    np.testing.assert_array_equal(median.obs["scratio_da"], density.obs["scratio_da"])  # ratios unchanged
    assert median.uns["scratio_da"]["test"]["sample_normalization"] == "median"
    assert density.uns["scratio_da"]["test"]["typical_log_ratio"] == {"treated": 0.0}
    # what the normalisation takes as unchanged is the diluted states' log-ratio (true: their
    # share falls from 1/4 to 1/7, log 4/7 = -0.56; the model's per-sample densities differ less)
    typical = median.uns["scratio_da"]["test"]["typical_log_ratio"]["treated"]
    assert np.log(4 / 7) - 0.2 < typical < -0.1
    is_da = median.obs["is_da"].to_numpy()
    called = {
        name: adata.obs["scratio_da_significant"].to_numpy()
        for name, adata in [("none", density), ("median", median)]
    }
    assert called["median"][is_da].mean() >= 0.8
    # the diluted states (share 1/4 -> 1/7) are called depleted by density, not once normalised
    assert called["none"][~is_da].mean() >= 0.2
    assert called["median"][~is_da].mean() <= 0.05


def test_da_calls_by_default_only_changes_beyond_one_and_a_half_fold(replicate_results):
    plain, default = replicate_results["expanded, median"], replicate_results["expanded, median, default"]
    test = default.uns["scratio_da"]["test"]
    assert test["min_log_ratio"] == pytest.approx(np.log(1.5)) and test["treat"] is False
    assert plain.uns["scratio_da"]["test"]["min_log_ratio"] == 0.0
    np.testing.assert_array_equal(default.obs["scratio_da"], plain.obs["scratio_da"])  # the same model
    called = default.obs["scratio_da_significant"].to_numpy()
    np.testing.assert_array_equal(called, default.obs["scratio_da_fdr"] < 0.1)
    # every call changed by 1.5-fold or more from the typical cell; the test reads the mean of the
    # samples' log-densities, the written log-ratio their mixture's, hence a margin
    change = np.abs(default.obs["scratio_da"].to_numpy() - test["typical_log_ratio"]["treated"])
    assert (change[called] > np.log(1.5) - 0.2).all()
    assert called[default.obs["is_da"].to_numpy()].mean() >= 0.8  # a 4-fold expansion is beyond 1.5-fold


def test_da_treat_keeps_the_ratios_and_calls_a_subset(replicate_results):
    plain, treat = replicate_results["expanded, median"], replicate_results["expanded, median, treat"]
    np.testing.assert_array_equal(treat.obs["scratio_da"], plain.obs["scratio_da"])  # same model, same ratios
    assert treat.uns["scratio_da"]["test"]["min_log_ratio"] == 0.2
    assert treat.uns["scratio_da"]["test"]["treat"] is True
    np.testing.assert_array_equal(treat.obs["scratio_da_significant"], treat.obs["scratio_da_fdr"] < 0.1)
    called = {
        name: a.obs["scratio_da_significant"].to_numpy() for name, a in [("plain", plain), ("treat", treat)]
    }
    assert not (called["treat"] & ~called["plain"]).any()  # a higher bar calls no new cell
    # the expanded state's share changes 4-fold relative to the others (log 4 = 1.39 > 0.2)
    is_da = treat.obs["is_da"].to_numpy()
    assert called["treat"][is_da].mean() >= 0.8
    assert (treat.obs["scratio_da_fdr"] >= plain.obs["scratio_da_fdr"]).all()


def test_da_significance_within_batches(monkeypatch):
    adata = sr.datasets.replicate_design(800, n_dims=3, n_states=3, n_samples=4, random_state=1)
    adata.obs["batch"] = adata.obs["sample"].map(lambda s: "b1" if s[-1] in "01" else "b2").astype("category")
    sr.tl.differential_abundance(
        adata, "condition", "control", sample_key="sample", batch_key="batch", **FAST
    )
    test = adata.uns["scratio_da"]["test"]
    assert test["strata"] == "batch"
    assert test["n_permutations"] == {"treated": 36}  # (4 choose 2)^2 within batches, not 8 choose 4 = 70
    assert adata.uns["scratio_da"]["params"]["batch_key"] == "batch"


def test_da_significance_one_pair_of_columns_per_target():
    adata = sr.datasets.replicate_design(900, n_dims=3, n_states=3, n_samples=4, random_state=2)
    condition = (
        adata.obs["sample"].astype(str).replace({"treated_0": "A", "treated_1": "A", "treated_2": "B"})
    )
    adata.obs["condition"] = condition.replace({"treated_3": "B"}).str.replace(
        r"control_\d", "control", regex=True
    )
    sr.tl.differential_abundance(adata, "condition", "control", sample_key="sample", **FAST)
    test = adata.uns["scratio_da"]["test"]
    assert test["columns"] == {
        "A": ["scratio_da_A_fdr", "scratio_da_A_significant"],
        "B": ["scratio_da_B_fdr", "scratio_da_B_significant"],
    }
    assert test["n_samples"] == {"control": 4, "A": 2, "B": 2}
    assert test["n_permutations"] == {"A": 15, "B": 15}  # 6 choose 2 for each target against the 4 controls
    for target in "AB":
        assert adata.obs[f"scratio_da_{target}_fdr"].between(0, 1).all()
        assert adata.obs[f"scratio_da_{target}_significant"].dtype == bool


def test_da_without_samples_says_significance_needs_replicates(caplog):
    adata = sr.datasets.replicate_design(300, n_dims=2, n_states=2, random_state=0)
    with caplog.at_level(logging.INFO, logger="scratio"):
        sr.settings.verbosity = 2
        try:
            sr.tl.differential_abundance(adata, "condition", "control", n_steps=20, batch_size=128, width=16)
        finally:
            sr.settings.verbosity = 0
    assert "significance needs replicate" in caplog.text or "calling cells needs replicate" in caplog.text
    assert "scratio_da_fdr" not in adata.obs and "test" not in adata.uns["scratio_da"]


def _two_samples_in_one_condition(adata):
    sample = adata.obs["sample"].astype(str)
    adata.obs["sample"] = sample.replace({"control_2": "control_1"}).astype("category")
    adata.obs.loc[adata.obs["condition"] == "treated", "sample"] = "treated_0"


def _sample_in_two_batches(adata):
    adata.obs["batch"] = np.where(np.arange(adata.n_obs) % 2, "b1", "b2")


BAD_TEST = {
    "one sample": (
        _two_samples_in_one_condition,
        {"sample_key": "sample"},
        ValueError,
        r"at least two samples.*\{'treated': \['treated_0'\]\}.*Add replicates",
    ),
    "batch without samples": (None, {"batch_key": "batch"}, ValueError, r"`batch_key`.*pass `sample_key`"),
    "sample in two batches": (
        _sample_in_two_batches,
        {"sample_key": "sample", "batch_key": "batch"},
        ValueError,
        r"each lie in one batch.*'control_0'",
    ),
    "alpha": (
        None,
        {"sample_key": "sample", "alpha": 1.5},
        ValueError,
        r"`alpha` must lie in \(0, 1\), got 1.5",
    ),
    "permutations": (None, {"sample_key": "sample", "n_permutations": 1}, ValueError, r"at least 2, got 1"),
    "normalization": (
        None,
        {"sample_key": "sample", "sample_normalization": "tmm"},
        ValueError,
        r"`sample_normalization` must be one of \('none', 'median'\), got 'tmm'",
    ),
    "negative threshold": (
        None,
        {"sample_key": "sample", "min_log_ratio": -0.4},
        ValueError,
        r"`min_log_ratio` must be a finite number >= 0 \(nats; e.g. np.log\(1.5\)\), got -0.4",
    ),
    "threshold not a number": (
        None,
        {"sample_key": "sample", "min_log_ratio": True},
        ValueError,
        r"`min_log_ratio` must be a finite number >= 0.*got True",
    ),
    "threshold without samples": (
        None,
        {"min_log_ratio": 0.4},
        ValueError,
        r"`min_log_ratio` sets the smallest change the test over samples calls; pass `sample_key`",
    ),
    "treat without samples": (
        None,
        {"treat": True},
        ValueError,
        r"`treat` tests the change across replicate samples; pass `sample_key` too",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TEST))
def test_bad_significance_input(case, monkeypatch):
    forbid_training(monkeypatch)
    corrupt, kwargs, error, message = BAD_TEST[case]
    adata = sr.datasets.replicate_design(600, n_dims=2, n_states=2, random_state=0)
    if corrupt is not None:
        corrupt(adata)
    before = snapshot(adata)
    with pytest.raises(error, match=message):
        sr.tl.differential_abundance(adata, "condition", "control", **kwargs)
    assert_unchanged(adata, before)


def test_two_samples_per_condition_warn_that_nothing_can_be_called(monkeypatch):
    forbid_training(monkeypatch)
    adata = sr.datasets.replicate_design(600, n_dims=2, n_states=2, n_samples=2, random_state=0)
    with pytest.warns(UserWarning, match=r"allow 6 assignments.*1/6 >= alpha = 0.1.*Add replicates"):
        with pytest.raises(AssertionError, match="training started"):
            sr.tl.differential_abundance(adata, "condition", "control", sample_key="sample")
