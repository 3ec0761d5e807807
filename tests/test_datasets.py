import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

from scratio import datasets


def _standard_error(values: np.ndarray) -> float:
    return values.std(ddof=1) / np.sqrt(len(values))


def test_shifted_gaussians_truth_and_layout():
    adata = datasets.shifted_gaussians(4000, 5, loc=1.0, random_state=1)
    assert adata.obsm["X_pca"].shape == (4000, 5)
    assert adata.obsm["X_pca"].dtype == np.float32
    assert list(adata.obs["condition"].cat.categories) == ["reference", "shifted"]
    assert (adata.obs["condition"] == "shifted").sum() == 2000
    x = adata.obsm["X_pca"].astype(np.float64)
    np.testing.assert_allclose(adata.obs["true_log_ratio"], x.sum(axis=1) - 5 / 2, rtol=1e-5, atol=1e-5)
    # The mean log-ratio of the shifted cells is KL(shifted || reference) = d loc^2 / 2.
    shifted = adata.obs.loc[adata.obs["condition"] == "shifted", "true_log_ratio"].to_numpy()
    assert adata.uns["simulation"]["kl"] == pytest.approx(2.5)
    assert abs(shifted.mean() - 2.5) < 4 * _standard_error(shifted)
    # The shifted cells sit at mean loc, the reference cells at 0.
    reference = x[(adata.obs["condition"] == "reference").to_numpy()]
    assert np.abs(reference.mean(axis=0)).max() < 4 / np.sqrt(2000)


def test_shifted_gaussians_direction():
    direction = np.full(30, 2 / np.sqrt(30))
    adata = datasets.shifted_gaussians(1000, 30, direction=direction, random_state=0)
    x = adata.obsm["X_pca"].astype(np.float64)
    np.testing.assert_allclose(adata.obs["true_log_ratio"], x @ direction - 2.0, rtol=1e-5, atol=1e-5)
    assert adata.uns["simulation"]["kl"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="length `n_dims` = 10"):
        datasets.shifted_gaussians(100, 10, direction=direction)


def test_shifted_gaussians_errors():
    with pytest.raises(ValueError, match="`n_dims` must be at least 1"):
        datasets.shifted_gaussians(100, 0)
    with pytest.raises(ValueError, match="`n_obs` must be at least 2"):
        datasets.shifted_gaussians(1)


def test_simulations_round_trip_h5ad(tmp_path):
    import anndata

    adata = datasets.mutual_information_pair(90, 4)
    adata.obs["cluster"] = pd.Categorical(np.repeat(["x", "y", "z"], 30))
    datasets.semi_synthetic_da(adata, "cluster", delta=0.2, condition_key="label")
    adata.write_h5ad(tmp_path / "simulated.h5ad")
    read = anndata.read_h5ad(tmp_path / "simulated.h5ad")
    assert read.uns["simulation"]["p_treated"] == {"x": 0.5, "y": 0.7, "z": pytest.approx(0.3)}
    assert list(read.obs["condition"].cat.categories) == ["p", "q"]
    np.testing.assert_array_equal(read.obs["true_log_odds"], adata.obs["true_log_odds"])


@pytest.mark.parametrize(
    "simulator",
    [
        "shifted_gaussians",
        "mutual_information_pair",
        "batch_effect_design",
        "combination_design",
        "donor_design",
    ],
)
def test_simulations_record_their_name(simulator):
    adata = getattr(datasets, simulator)(100)
    assert adata.uns["simulation"]["name"] == simulator
    assert "design" not in adata.uns["simulation"]


def test_simulators_are_reproducible():
    first = datasets.shifted_gaussians(200, 3, random_state=7)
    second = datasets.shifted_gaussians(200, 3, random_state=7)
    np.testing.assert_array_equal(first.obsm["X_pca"], second.obsm["X_pca"])
    assert not np.array_equal(
        first.obsm["X_pca"], datasets.shifted_gaussians(200, 3, random_state=8).obsm["X_pca"]
    )


def test_mutual_information_pair():
    adata = datasets.mutual_information_pair(4000, 20, random_state=0)
    assert adata.uns["simulation"]["mutual_information"] == pytest.approx(5.0)
    assert list(adata.obs["condition"].cat.categories) == ["p", "q"]
    truth = adata.obs["true_log_ratio"].to_numpy()
    assert not np.isnan(truth).any()
    on_p = truth[(adata.obs["condition"] == "p").to_numpy()]
    # The mean log-ratio over samples of p estimates KL(p || q) = MI = d / 4.
    assert abs(on_p.mean() - 5.0) < 4 * _standard_error(on_p)
    x = adata.obsm["X_pca"][(adata.obs["condition"] == "p").to_numpy()]
    rho = np.sqrt(1 - np.exp(-1))
    assert np.corrcoef(x[:, 0], x[:, 1])[0, 1] == pytest.approx(rho, abs=0.03)
    assert abs(np.corrcoef(x[:, 1], x[:, 2])[0, 1]) < 0.1


def test_mutual_information_pair_matches_density():
    from scipy.stats import multivariate_normal

    rho = 0.5
    adata = datasets.mutual_information_pair(50, 4, rho=rho, random_state=3)
    x = adata.obsm["X_pca"].astype(np.float64)
    block = np.array([[1, rho], [rho, 1]])
    covariance = np.kron(np.eye(2), block)
    expected = multivariate_normal(np.zeros(4), covariance).logpdf(x) - multivariate_normal(
        np.zeros(4)
    ).logpdf(x)
    np.testing.assert_allclose(adata.obs["true_log_ratio"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_dims": 5}, "even"), ({"rho": 1.0}, "strictly between"), ({"n_obs": 1}, "at least 2")],
)
def test_mutual_information_pair_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        datasets.mutual_information_pair(**kwargs)


def _clustered(n_per_cluster: int = 1500, n_clusters: int = 4) -> AnnData:
    labels = np.repeat([str(i) for i in range(n_clusters)], n_per_cluster)
    return AnnData(
        obs=pd.DataFrame({"cluster": pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(labels))])
    )


def test_semi_synthetic_da_frequencies():
    adata = _clustered()
    delta = 0.3
    datasets.semi_synthetic_da(adata, "cluster", delta=delta, random_state=0)
    assert list(adata.obs["condition"].cat.categories) == ["control", "treated"]
    treated = (adata.obs["condition"] == "treated").groupby(adata.obs["cluster"], observed=True).mean()
    expected = pd.Series({"0": 0.5, "1": 0.5 + delta, "2": 0.5 - delta, "3": 0.5})
    standard_error = np.sqrt(expected * (1 - expected) / 1500)
    assert (np.abs(treated - expected) < 4 * standard_error).all()
    log_odds = adata.obs.groupby("cluster", observed=True)["true_log_odds"].first()
    np.testing.assert_allclose(log_odds, np.log(expected / (1 - expected)))
    assert adata.obs["is_da"].dtype == bool
    assert adata.obs.groupby("cluster", observed=True)["is_da"].all().tolist() == [False, True, True, False]
    assert adata.uns["simulation"]["da_clusters"] == ["1", "2"]


def test_semi_synthetic_da_extremes_and_copy():
    adata = _clustered(100)
    result = datasets.semi_synthetic_da(adata, "cluster", delta=0.5, da_clusters=["3", "0"], copy=True)
    assert "condition" not in adata.obs
    by_cluster = result.obs.groupby("cluster", observed=True)
    treated = (result.obs["condition"] == "treated").groupby(result.obs["cluster"], observed=True).mean()
    assert treated["3"] == 1.0 and treated["0"] == 0.0
    assert by_cluster["true_log_odds"].first().tolist() == [-np.inf, 0.0, 0.0, np.inf]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"cluster_key": "cluster", "delta": 0.6}, ValueError, r"\[0, 0.5\]"),
        ({"cluster_key": "cluster", "delta": -0.1}, ValueError, r"\[0, 0.5\]"),
        ({"cluster_key": "missing", "delta": 0.1}, KeyError, "'missing' not found"),
        (
            {"cluster_key": "cluster", "delta": 0.1, "da_clusters": ["1", "7"]},
            ValueError,
            r"\['7'\] not found",
        ),
        ({"cluster_key": "cluster", "delta": 0.1, "da_clusters": ["1", "1"]}, ValueError, "two different"),
    ],
)
def test_semi_synthetic_da_errors(kwargs, error, message):
    adata = _clustered(10)
    with pytest.raises(error, match=message):
        datasets.semi_synthetic_da(adata, **kwargs)
    assert "condition" not in adata.obs


def test_semi_synthetic_da_needs_three_clusters():
    with pytest.raises(ValueError, match="at least 3"):
        datasets.semi_synthetic_da(_clustered(10, n_clusters=2), "cluster", delta=0.1)


@pytest.mark.parametrize("n_clusters", [3, 6])
def test_leiden_clusters_exact_count(n_clusters):
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()  # ships a kNN graph, which is reused
    datasets.leiden_clusters(adata, n_clusters, random_state=0)
    assert adata.obs["leiden"].cat.categories.tolist() == [str(i) for i in range(n_clusters)]
    assert adata.uns["leiden"]["params"]["resolution"] > 0


@pytest.mark.slow  # the first kNN graph of a session compiles numba code (~15 s)
def test_leiden_clusters_builds_graph():
    adata = datasets.shifted_gaussians(600, 2, loc=8.0, random_state=0)
    datasets.leiden_clusters(adata, 2, random_state=0)
    assert adata.uns["neighbors"]["params"]["use_rep"] == "X_pca"
    # The two well-separated conditions are the two clusters.
    crosstab = pd.crosstab(adata.obs["leiden"], adata.obs["condition"]).to_numpy()
    assert sorted(crosstab.max(axis=1)) == [300, 300]


def test_leiden_clusters_impossible():
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()
    with pytest.raises(ValueError, match="No Leiden resolution gave exactly 650 clusters"):
        datasets.leiden_clusters(adata, 650, max_steps=3)
    assert "leiden" not in adata.obs
    with pytest.raises(ValueError, match="between 1 and the number of cells"):
        datasets.leiden_clusters(adata, 0)


def test_pbmc68k_da():
    adata = datasets.pbmc68k_da(0.4, random_state=0)
    assert adata.n_obs == 700
    assert adata.obs["leiden"].cat.categories.tolist() == ["0", "1", "2", "3"]
    assert {"X_pca", "X_umap"} <= set(adata.obsm)
    treated = (adata.obs["condition"] == "treated").groupby(adata.obs["leiden"], observed=True).mean()
    assert treated["1"] > 0.75 and treated["2"] < 0.25
    assert adata.uns["simulation"]["delta"] == 0.4
    assert adata.uns["simulation"]["name"] == "semi_synthetic_da"


def test_da_metrics_hand_example():
    scores = np.array([3.0, -2.0, 0.5, 1.0, -0.1, 0.0])
    is_da = np.array([True, True, True, False, False, False])
    true_log_odds = np.array([1.0, -1.0, -1.0, 0.0, 0.0, 0.0])
    metrics = datasets.da_metrics(scores, is_da, true_log_odds)
    # Ranking by |score|: 3 (DA), 2 (DA), 1, 0.5 (DA), 0.1, 0 -> precision at each DA hit: 1, 1, 3/4.
    assert metrics["pr_auc"] == pytest.approx((1 + 1 + 3 / 4) / 3)
    assert metrics["nar"] == pytest.approx((5.5 / 3) / (1.1 / 3))
    assert metrics["csp"] == pytest.approx(2 / 3)
    assert all(isinstance(value, float) for value in metrics.values())


def test_da_metrics_ties_and_perfect_ranking():
    # One tie across classes counts as a single threshold: precision 1/2 at recall 1.
    assert datasets.da_metrics([1.0, 1.0], [True, False], [1.0, 0.0])["pr_auc"] == pytest.approx(0.5)
    perfect = datasets.da_metrics([-4.0, 3.0, 0.1, -0.2], [True, True, False, False], [-1.0, 1.0, 0, 0])
    assert perfect == {"pr_auc": 1.0, "nar": pytest.approx(7 / 0.3), "csp": 1.0}


@pytest.mark.parametrize(
    ("scores", "is_da", "message"),
    [
        ([1.0, np.nan], [True, False], "NaN or inf"),
        ([1.0, 2.0], [True, True], "some cells as DA and some as not"),
        ([1.0, 2.0, 3.0], [True, False], "one value per cell"),
    ],
)
def test_da_metrics_errors(scores, is_da, message):
    with pytest.raises(ValueError, match=message):
        datasets.da_metrics(scores, is_da, np.zeros(len(is_da)))
