"""The registration: one reading of the AnnData, the encoder, the check of other data, and its saved form."""

import json

import numpy as np
import pandas as pd
import pytest

import scratio as sr


@pytest.fixture
def registered():
    adata = sr.datasets.shifted_gaussians(200, 3)
    registration, cells = sr.Registration.register(adata, "X_pca", ["condition"], n_pcs=2)
    return adata, registration, cells


def test_register_reads_the_cells_once(registered):
    adata, registration, cells = registered
    assert cells.x.shape == (200, 2) and cells.x.dtype == np.float32
    np.testing.assert_array_equal(cells.x, adata.obsm["X_pca"][:, :2])
    shifted = (adata.obs["condition"] == "shifted").to_numpy()
    assert cells.codes.dtype == np.int64 and cells.codes[:, 0].tolist() == shifted.astype(int).tolist()
    # the codes read at registration are the encoder's codes of each cell's own category
    np.testing.assert_array_equal(
        registration.encode({"condition": adata.obs["condition"]}, 200), cells.codes
    )
    np.testing.assert_allclose(registration.standardise(cells.x).std(axis=0), 1.0, atol=1e-5)
    assert registration.condition_keys == ["condition"] and registration.n_dims == 2


def test_saved_form_round_trips_through_json(registered):
    _, registration, _ = registered
    again = sr.Registration.from_dict(json.loads(json.dumps(registration.to_dict())))
    assert (again.use_rep, again.n_pcs, again.categories) == (
        "X_pca",
        2,
        {"condition": ["reference", "shifted"]},
    )
    np.testing.assert_array_equal(again.mean, registration.mean)
    np.testing.assert_array_equal(again.scale, registration.scale)


def test_global_scaling_keeps_the_geometry(registered):
    adata, per_dimension, _ = registered
    adata.obsm["X_pca"] = adata.obsm["X_pca"] * np.array([3.0, 1.0, 1.0], dtype=np.float32)
    registration, cells = sr.Registration.register(adata, "X_pca", ["condition"], n_pcs=2, scaling="global")
    sd = cells.x.std(axis=0)
    # one scale for every dimension, the root mean variance: the sds keep their ratio and their
    # mean square is 1 (the per-dimension registration makes each 1)
    ratio = registration.standardise(cells.x).std(axis=0) / (sd / np.sqrt(np.mean(sd**2)))
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
    np.testing.assert_allclose(ratio[0], 1.0, rtol=1e-2)
    assert sd[0] / sd[1] > 2 and np.ptp(registration.scale) == 0
    again = sr.Registration.from_dict(json.loads(json.dumps(registration.to_dict())))
    assert (again.scaling, per_dimension.scaling) == ("global", "per_dimension")
    np.testing.assert_array_equal(again.scale, registration.scale)
    config = per_dimension.to_dict()
    del config["scaling"]  # saved before the option: scaled per dimension
    assert sr.Registration.from_dict(config).scaling == "per_dimension"
    with pytest.raises(
        ValueError, match=r"Unknown scaling 'pca'; choose one of \['per_dimension', 'global'\]"
    ):
        sr.Registration.register(adata, "X_pca", ["condition"], scaling="pca")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["scale"].__setitem__(0, -1.0), "`scale` must be positive"),
        (lambda c: c.__setitem__("mean", c["mean"][:1]), "must have 2 entries"),
        (lambda c: c["mean"].__setitem__(1, float("nan")), "must be finite"),
        (lambda c: c["categories"].__setitem__("condition", ["a", "a"]), "two or more distinct"),
    ],
)
def test_a_corrupt_saved_form_is_refused(registered, edit, message):
    _, registration, _ = registered
    config = json.loads(json.dumps(registration.to_dict()))
    edit(config)
    with pytest.raises(ValueError, match=f"configuration is invalid: .*{message}"):
        sr.Registration.from_dict(config)


def test_other_data_is_checked_and_messages_end_with_the_callers_fix(registered):
    adata, registration, _ = registered
    fix = "do the fix"
    with pytest.raises(
        ValueError, match=r"use_rep='X_pca', not 'X_umap'\. Pass use_rep='X_pca', or do the fix\."
    ):
        registration.cells(adata, use_rep="X_umap", fix=fix)
    with pytest.raises(
        ValueError, match=r"condition keys \['condition'\], not on \['donor'\].*or do the fix\."
    ):
        registration.cells(adata, ["donor"], fix=fix)
    other = adata[:20].copy()
    other.obs["condition"] = pd.Categorical(["IFNg"] * 20)
    with pytest.raises(
        ValueError, match=r"categories \['IFNg'\] the model was not trained on.*or do the fix\."
    ):
        registration.cells(other, fix=fix)
    del other.obs["condition"]
    with pytest.raises(KeyError, match="'condition' of the model is missing"):
        registration.cells(other)
    # keys left out are null (code = number of categories) for every cell
    assert (registration.cells(adata, []).codes == 2).all()


def test_unknown_categories_are_printed_as_plain_strings(registered):
    _, registration, _ = registered
    with pytest.raises(ValueError, match=r"Unknown categories \['c3'\] for key 'condition'"):
        registration.encode({"condition": np.array(["c3", "shifted"])}, 2)


def test_one_huge_value_is_refused_before_training_not_turned_into_nan():
    adata = sr.datasets.shifted_gaussians(600, 3)
    adata.obsm["X_pca"][5, 1] = 1e30
    with pytest.raises(
        ValueError, match=r"extreme values: column 1 of cells \['cell_5'\] lies .* robust standard"
    ):
        sr.RatioFlow(adata, condition_keys="condition")
    adata.obsm["X_pca"][5, 1] = 1e3  # far out but plausible: trained on and scored finitely
    registration, _ = sr.Registration.register(adata, "X_pca", ["condition"])
    assert np.isfinite(registration.scale).all() and np.isfinite(registration.mean).all()


def test_cells_far_from_the_training_cells_are_refused(registered):
    _, registration, cells = registered
    far = cells.x[:3].copy()
    far[1, 0] = 1e30
    with pytest.raises(ValueError, match=r"1\+ cells lie more than 10000 standard deviations .* row 1"):
        registration.representation(far)


def test_statistics_are_computed_in_float64_blocks(registered):
    _, registration, cells = registered
    from scratio._validation import column_moments

    mean, std = column_moments(cells.x, block=7)
    np.testing.assert_allclose(mean, cells.x.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, cells.x.astype(np.float64).std(axis=0), rtol=1e-12)
