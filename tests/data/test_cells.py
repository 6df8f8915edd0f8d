"""Cell data: the checks on an AnnData (one error per problem), the .h5ad round trip, and the
preprocessing to moments (kNN without self, moments as neighbourhood means, gene selection)."""

import numpy as np
import pytest

anndata = pytest.importorskip("anndata")

from fluxmatch.data.cells import (  # noqa: E402
    NEIGHBORS_KEY,
    PreprocessConfig,
    check_cells,
    embedding,
    highly_variable,
    knn_indices,
    moments,
    preprocess,
    read_cells,
    scvelo_available,
    write_cells,
)
from fluxmatch.data.lineage import simulate_lineage  # noqa: E402
from fluxmatch.errors import FluxMatchError  # noqa: E402


def tiny(n=60, g=6, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.poisson(3.0, (n, g)).astype(np.float32)
    s = rng.poisson(6.0, (n, g)).astype(np.float32)
    a = anndata.AnnData(X=s.copy(), layers={"unspliced": u, "spliced": s})
    a.obs["clusters"] = np.where(np.arange(n) < n // 2, "A", "B")
    return a


def test_accepts_good_data():
    check_cells(tiny(), cluster_key="clusters", transitions=[("A", "B")])


def test_missing_layer_is_named():
    a = tiny()
    del a.layers["unspliced"]
    with pytest.raises(FluxMatchError, match=r"layers\['unspliced'\].*layers found: spliced"):
        check_cells(a)


def test_negative_counts():
    a = tiny()
    a.layers["spliced"][0, 0] = -1
    with pytest.raises(FluxMatchError, match="negative counts"):
        check_cells(a)


def test_nan_counts():
    a = tiny()
    a.layers["unspliced"][1, 1] = np.nan
    with pytest.raises(FluxMatchError, match="NaN"):
        check_cells(a)


@pytest.mark.parametrize("what", ["cells", "genes"])
def test_all_zero(what):
    a = tiny()
    a.layers["spliced"][:] = 0
    a.layers["unspliced"][:] = 0
    with pytest.raises(FluxMatchError, match="every cell has zero counts"):
        check_cells(a)
    b = tiny()
    if what == "genes":  # a matrix whose every gene is empty is also one whose every cell is: the cell check speaks first
        b = anndata.AnnData(X=np.zeros((0, 3), np.float32), layers={"unspliced": np.zeros((0, 3), np.float32), "spliced": np.zeros((0, 3), np.float32)})
        with pytest.raises(FluxMatchError, match="zero counts"):
            check_cells(b)


def test_unknown_cluster_key_and_transition():
    with pytest.raises(FluxMatchError, match="no cluster key 'celltype'.*columns: clusters"):
        check_cells(tiny(), cluster_key="celltype")
    with pytest.raises(FluxMatchError, match="cluster 'C'.*clusters: A, B"):
        check_cells(tiny(), cluster_key="clusters", transitions=[("A", "C")])


def test_round_trip_and_no_silent_overwrite(tmp_path):
    a = tiny()
    path = write_cells(a, tmp_path / "cells.h5ad")
    b = read_cells(path)
    np.testing.assert_array_equal(np.asarray(b.layers["spliced"]), a.layers["spliced"])
    assert list(b.obs["clusters"]) == list(a.obs["clusters"])
    with pytest.raises(FluxMatchError, match="exists"):
        write_cells(a, path)
    write_cells(a, path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["cells.h5ad"]  # no staging file left behind


def test_read_errors(tmp_path):
    with pytest.raises(FluxMatchError, match="no cell data"):
        read_cells(tmp_path / "missing.h5ad")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(FluxMatchError, match=".h5ad"):
        read_cells(tmp_path / "x.txt")
    (tmp_path / "bad.h5ad").write_text("not hdf5")
    with pytest.raises(FluxMatchError, match="cannot read"):
        read_cells(tmp_path / "bad.h5ad")


def test_knn_excludes_self_and_finds_nearest():
    points = np.array([[0.0], [1.0], [3.0], [6.0]])
    idx = knn_indices(points, 2)
    assert idx.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    dup = np.array([[0.0], [0.0], [5.0]])  # duplicates: self is still dropped, never the twin
    assert sorted(knn_indices(dup, 1)[:2].ravel().tolist()) == [0, 1]


def test_moments_are_means_over_the_symmetrised_neighbourhood():
    layer = np.array([[1.0], [2.0], [4.0], [8.0]])
    neighbours = np.array([[1], [0], [1], [2]])  # 2 → 1 and 3 → 2 are one-way; symmetrised they go both ways
    m = moments(layer, neighbours)
    expected = np.array([(1 + 2) / 2, (2 + 1 + 4) / 3, (4 + 2 + 8) / 3, (8 + 4) / 2])
    np.testing.assert_allclose(m.ravel(), expected)


def test_highly_variable_prefers_overdispersed_genes():
    rng = np.random.default_rng(0)
    n = 400
    poisson = rng.poisson(5.0, (n, 20)).astype(float)
    wild = rng.negative_binomial(1, 1 / 6, (n, 2)).astype(float)  # mean 5, variance 30
    keep = highly_variable(np.log1p(np.concatenate([poisson, wild], 1)), 2, n_bins=1)
    assert keep.tolist()[-2:] == [True, True] and keep.sum() == 2


def test_own_preprocessing_writes_moments_and_neighbours():
    a = simulate_lineage(n_cells=300, n_genes=12, seed=1)
    p = preprocess(a, PreprocessConfig(backend="fluxmatch", n_neighbors=10, min_shared_counts=5))
    assert p.layers["Ms"].shape == p.shape and p.obsm[NEIGHBORS_KEY].shape == (p.n_obs, 10)
    record = p.uns["fluxmatch"]["preprocessing"]
    assert record["backend"] == "fluxmatch" and record["cells_in"] == 300 and record["genes_kept"] == p.n_vars
    assert "Ms" not in a.layers  # the input is left alone
    sn = p.layers["spliced_normalised"]
    i = 7
    group = set(p.obsm[NEIGHBORS_KEY][i]) | {i} | set(np.flatnonzero((p.obsm[NEIGHBORS_KEY] == i).any(1)))
    np.testing.assert_allclose(p.layers["Ms"][i], sn[sorted(group)].mean(0), rtol=1e-5)
    emb, source = embedding(p)
    assert source == "X_lineage" and emb.shape == (p.n_obs, 2)


def test_preprocessing_refuses_what_it_cannot_use():
    with pytest.raises(FluxMatchError, match="min-shared-counts"):
        preprocess(tiny(), PreprocessConfig(backend="fluxmatch", min_shared_counts=10**9))
    with pytest.raises(FluxMatchError, match="backend"):
        PreprocessConfig(backend="seurat")
    with pytest.raises(FluxMatchError, match="n_neighbors"):
        PreprocessConfig(n_neighbors=1)
    with pytest.raises(FluxMatchError, match="no embedding 'umap'"):
        embedding(tiny(), "umap")


@pytest.mark.skipif(not scvelo_available(), reason="scVelo and scanpy are not installed")
def test_scvelo_backend_agrees_with_our_own_on_the_moments():
    a = simulate_lineage(n_cells=400, n_genes=10, seed=2)
    ours = preprocess(a, PreprocessConfig(backend="fluxmatch"))
    theirs = preprocess(a, PreprocessConfig(backend="scvelo"))
    assert theirs.uns["fluxmatch"]["preprocessing"]["backend"] == "scvelo"
    common = [g for g in ours.var_names if g in set(theirs.var_names)]
    assert len(common) >= 8
    x, y = np.asarray(ours[:, common].layers["Ms"]).ravel(), np.asarray(theirs[:, common].layers["Ms"]).ravel()
    assert np.corrcoef(x, y)[0, 1] > 0.95
