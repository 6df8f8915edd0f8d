"""The branching-lineage RNA velocity simulator: shapes and naming, reproducibility, the kinetics
against their closed form, the embedding and transitions, the count noise, regulation, bad input
and the .h5ad round trip."""

import math

import numpy as np
import pytest

from fluxmatch.data.lineage import FATE_LETTERS, LineageParams, SwitchProgram, integrate_kinetics, simulate_lineage
from fluxmatch.errors import FluxMatchError

anndata = pytest.importorskip("anndata")

SMALL = {"n_cells": 600, "n_genes": 20}


@pytest.fixture(scope="module")
def adata():
    return simulate_lineage(seed=3, **SMALL)


def test_shapes_keys_and_naming(adata):
    N, G = SMALL["n_cells"], SMALL["n_genes"]
    assert adata.shape == (N, G)
    assert list(adata.var_names[:2]) == ["gene_0", "gene_1"]
    for key in ("spliced", "unspliced", "true_spliced", "true_unspliced", "true_velocity", "true_velocity_unspliced"):
        assert adata.layers[key].shape == (N, G) and adata.layers[key].dtype == np.float32, key
    assert adata.obsm["X_lineage"].shape == (N, 2)
    assert {"clusters", "true_t", "true_fate", "size_factor"} <= set(adata.obs)
    assert {"true_alpha", "true_beta", "true_gamma"} <= set(adata.var)
    assert list(adata.obs["clusters"].cat.categories) == ["Progenitor", "Transit", "A_early", "A_late", "B_early", "B_late"]
    assert adata.obs["clusters"].value_counts().min() > 0
    assert set(adata.obs["true_fate"]) == {"trunk", "A", "B"}
    assert adata.uns["transitions"] == ["Progenitor>Transit", "Transit>A_early", "A_early>A_late", "Transit>B_early", "B_early>B_late"]
    assert "true_regulation" not in adata.uns and adata.uns["simulation"]["seed"] == 3
    np.testing.assert_array_equal(adata.X, adata.layers["spliced"])
    t = adata.obs["true_t"].to_numpy()
    assert t.min() >= 0 and t.max() <= 25 and (t[adata.obs["true_fate"] == "trunk"] <= 10).all()


def test_counts_are_nonnegative_integers(adata):
    for key in ("spliced", "unspliced"):
        counts = adata.layers[key]
        assert (counts >= 0).all() and np.array_equal(counts, np.round(counts)), key
    assert 3 < np.median(adata.layers["spliced"].mean(axis=0)) < 50


def test_same_seed_identical_other_seed_differs(adata):
    again, other = simulate_lineage(seed=3, **SMALL), simulate_lineage(seed=4, **SMALL)
    for key in adata.layers:
        np.testing.assert_array_equal(adata.layers[key], again.layers[key])
    np.testing.assert_array_equal(adata.obsm["X_lineage"], again.obsm["X_lineage"])
    assert adata.obs.equals(again.obs) and adata.var.equals(again.var)
    assert not np.array_equal(adata.layers["spliced"], other.layers["spliced"])
    assert not np.array_equal(adata.var["true_beta"], other.var["true_beta"])


def test_velocity_is_the_kinetics_at_the_true_state(adata):
    beta, gamma = adata.var["true_beta"].to_numpy(), adata.var["true_gamma"].to_numpy()
    u, s = adata.layers["true_unspliced"].astype(np.float64), adata.layers["true_spliced"].astype(np.float64)
    np.testing.assert_allclose(adata.layers["true_velocity"], beta * u - gamma * s, rtol=1e-5, atol=1e-5)
    ratio = gamma / beta
    assert ratio.max() / ratio.min() >= 10


def test_du_dt_matches_the_program_without_regulation(adata):
    # du/dt + β u is α(t): one of the gene's two levels, α_on or α_off, at every cell.
    alpha = adata.layers["true_velocity_unspliced"] + adata.var["true_beta"].to_numpy() * adata.layers["true_unspliced"]
    on, off = adata.var["true_alpha"].to_numpy(), adata.var["true_alpha_off"].to_numpy()
    assert np.minimum(abs(alpha - on), abs(alpha - off)).max() < 1e-4 * on.max()


def closed_form(alpha, beta, gamma, u0, s0, t):
    """The linear ODE's exact solution from (u0, s0) at time 0 with constant α, β ≠ γ."""
    u_inf, s_inf = alpha / beta, alpha / gamma
    u = u_inf + (u0 - u_inf) * np.exp(-beta * t)
    c = beta * (u0 - u_inf) / (gamma - beta)
    s = s_inf + c * np.exp(-beta * t) + (s0 - s_inf - c) * np.exp(-gamma * t)
    return u, s


@pytest.mark.parametrize("h", [0.1, 0.01])
def test_integration_matches_the_closed_form(h):
    alpha, beta, gamma = np.array([3.0, 0.5, 2.0]), np.array([2.0, 0.7, 0.5]), np.array([0.3, 1.1, 0.9])
    u0, s0 = np.array([0.0, 4.0, 1.0]), np.array([0.5, 0.0, 6.0])
    grid = np.arange(0.0, 8.0 + h / 2, h)
    u, s = integrate_kinetics(lambda t: alpha, beta, gamma, u0, s0, grid)
    u_exact, s_exact = closed_form(alpha, beta, gamma, u0, s0, grid[:, None])
    tolerance = h**4  # RK4: global error O(h⁴); the constant is about 0.1 for these rates and states
    assert np.abs(u - u_exact).max() < tolerance and np.abs(s - s_exact).max() < tolerance


def test_integration_across_a_switch_on_the_grid():
    grid = np.linspace(0.0, 6.0, 601)
    program = SwitchProgram(before=np.array([0.2]), switch=np.array([grid[200]]), after=np.array([4.0]))
    beta, gamma = np.array([1.5]), np.array([0.4])
    u, s = integrate_kinetics(program, beta, gamma, 0.2 / beta, 0.2 / gamma, grid)
    np.testing.assert_allclose(u[:201], 0.2 / beta[0], rtol=1e-12)
    u_exact, s_exact = closed_form(4.0, beta, gamma, u[200], s[200], grid[200:, None] - grid[200])
    assert np.abs(u[200:] - u_exact).max() < 1e-8 and np.abs(s[200:] - s_exact).max() < 1e-8


def spearman(a, b):
    rank = lambda x: np.argsort(np.argsort(x))
    return np.corrcoef(rank(a), rank(b))[0, 1]


def test_embedding_increases_along_true_time(adata):
    xy, t = adata.obsm["X_lineage"], adata.obs["true_t"].to_numpy()
    fate = adata.obs["true_fate"].to_numpy()
    trunk = fate == "trunk"
    assert spearman(xy[trunk, 0], t[trunk]) > 0.9
    for letter in "AB":
        cells = fate == letter
        distance = np.linalg.norm(xy[cells] - np.array([10.0, 0.0]), axis=1)
        assert spearman(distance, t[cells]) > 0.9
    assert np.mean(xy[fate == "A", 1]) * np.mean(xy[fate == "B", 1]) < 0  # the fates fan out to opposite sides


def test_transitions_join_neighbouring_clusters(adata):
    from scipy.spatial import cKDTree

    clusters = adata.obs["clusters"].to_numpy()
    xy = adata.obsm["X_lineage"]
    _, neighbours = cKDTree(xy).query(xy, k=31)
    for transition in adata.uns["transitions"]:
        source, target = transition.split(">")
        assert {source, target} <= set(adata.obs["clusters"].cat.categories)
        assert (clusters[neighbours[clusters == source][:, 1:]] == target).any(), transition


def test_poisson_counts_have_the_right_mean():
    a = simulate_lineage(seed=5, n_cells=1000, n_genes=20)
    mean = a.uns["simulation"]["capture"] * a.obs["size_factor"].to_numpy()[:, None] * a.layers["true_spliced"].astype(np.float64)
    total, expected = a.layers["spliced"].astype(np.float64).sum(), mean.sum()
    assert abs(total - expected) < 5 * math.sqrt(expected)  # the sum of Poissons has variance = mean


def test_dispersion_adds_variance():
    poisson, overdispersed = simulate_lineage(seed=5, dispersion=0.0, **SMALL), simulate_lineage(seed=5, dispersion=0.5, **SMALL)
    residual = lambda a: (a.layers["spliced"] - a.uns["simulation"]["capture"] * a.obs["size_factor"].to_numpy()[:, None] * a.layers["true_spliced"]).var()
    assert residual(overdispersed) > 2 * residual(poisson)


def test_regulation_matrix_and_its_effect(adata):
    regulated = simulate_lineage(seed=3, regulation=3, **SMALL)
    W = regulated.uns["true_regulation"]
    assert W.shape == (20, 20) and np.all(np.diag(W) == 0)
    assert np.all((W != 0).sum(axis=1) == 3)
    assert np.all((np.abs(W[W != 0]) >= 0.5) & (np.abs(W[W != 0]) <= 1.5))
    np.testing.assert_array_equal(regulated.var["true_beta"], adata.var["true_beta"])  # same rates, same cells
    np.testing.assert_array_equal(regulated.obs["true_t"], adata.obs["true_t"])
    assert np.abs(regulated.layers["true_spliced"] - adata.layers["true_spliced"]).max() > 0.1


def test_linear_lineage_and_many_fates():
    linear = simulate_lineage(seed=0, n_cells=100, n_genes=5, n_fates=1)
    assert list(linear.obs["clusters"].cat.categories) == ["Progenitor", "Transit", "A_early", "A_late"]
    assert np.abs(linear.obsm["X_lineage"][:, 1]).max() < 2  # a straight line along x, plus jitter
    many = simulate_lineage(seed=0, n_cells=200, n_genes=5, n_fates=8)
    assert set(many.obs["true_fate"]) == {"trunk", *FATE_LETTERS}
    assert len(many.uns["transitions"]) == 1 + 2 * 8


@pytest.mark.parametrize(
    "override, name",
    [
        ({"n_cells": 20}, "n_cells"),
        ({"n_genes": 1}, "n_genes"),
        ({"n_fates": 0}, "n_fates"),
        ({"n_fates": 9}, "n_fates"),
        ({"regulation": 20, "n_genes": 20}, "regulation"),
        ({"regulation": -1}, "regulation"),
        ({"t_end": 10.0}, "t_end"),
        ({"t_branch": 0.0}, "t_branch"),
        ({"dispersion": -0.1}, "dispersion"),
        ({"size_sd": -1.0}, "size_sd"),
        ({"capture": 0.0}, "capture"),
        ({"beta_range": (2.0, 1.0)}, "beta_range"),
        ({"gamma_range": (0.0, 1.0)}, "gamma_range"),
        ({"alpha_off_fraction": 1.0}, "alpha_off_fraction"),
        ({"dt": 20.0}, "dt"),
        ({"fan_degrees": 90.0}, "fan_degrees"),
    ],
)
def test_bad_input_names_the_parameter(override, name):
    with pytest.raises(FluxMatchError, match=name):
        LineageParams(**override)
    with pytest.raises(FluxMatchError, match=name):
        simulate_lineage(**override)


def test_bad_seed_and_unknown_override():
    with pytest.raises(FluxMatchError, match="seed"):
        simulate_lineage(seed=-1, **SMALL)
    with pytest.raises(FluxMatchError, match="LineageParams"):
        simulate_lineage(n_cell=100)


def test_h5ad_round_trip(tmp_path):
    a = simulate_lineage(seed=1, n_cells=200, n_genes=6, regulation=2)
    a.write_h5ad(tmp_path / "x.h5ad")
    b = anndata.read_h5ad(tmp_path / "x.h5ad")
    np.testing.assert_array_equal(a.X, b.X)
    for key in a.layers:
        np.testing.assert_array_equal(a.layers[key], b.layers[key])
    np.testing.assert_array_equal(a.obsm["X_lineage"], b.obsm["X_lineage"])
    assert a.obs.equals(b.obs) and a.var.equals(b.var)
    assert list(b.uns["transitions"]) == a.uns["transitions"]
    assert dict(b.uns["simulation"]) == a.uns["simulation"]
    np.testing.assert_array_equal(a.uns["true_regulation"], b.uns["true_regulation"])


def test_missing_anndata_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "anndata", None)
    with pytest.raises(FluxMatchError, match="needs anndata"):
        simulate_lineage(**SMALL)
