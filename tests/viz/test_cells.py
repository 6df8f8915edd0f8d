"""Velocity streamlines on a cell embedding: grid smoothing, the PNG, and bad input refused."""

import numpy as np
import pytest

from fluxmatch.errors import FluxMatchError
from fluxmatch.viz.cells import _figure, embedding_grid_velocity, plot_velocity_streams

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cells():
    rng = np.random.default_rng(0)
    emb = np.vstack([rng.normal(0.0, 0.5, size=(150, 2)), rng.normal(10.0, 0.5, size=(150, 2))])  # two clumps, empty middle
    clusters = np.array(["stem cells"] * 150 + ["mature_B"] * 150)
    return emb, clusters


def test_constant_field_is_constant_on_the_cells_and_nan_far_away(cells):
    emb, _ = cells
    gx, gy, u, v = embedding_grid_velocity(emb, np.tile([0.3, -0.2], (emb.shape[0], 1)), n_grid=40)
    assert gx.shape == gy.shape == (40,) and u.shape == v.shape == (40, 40)
    iy, ix = np.argmin(np.abs(gy - 0.0)), np.argmin(np.abs(gx - 0.0))  # inside the first clump
    assert u[iy, ix] == pytest.approx(0.3) and v[iy, ix] == pytest.approx(-0.2)
    on = np.isfinite(u)
    np.testing.assert_allclose(u[on], 0.3)
    np.testing.assert_allclose(v[on], -0.2)
    mid_y, mid_x = np.argmin(np.abs(gy - 5.0)), np.argmin(np.abs(gx - 5.0))
    assert np.isnan(u[mid_y, mid_x]) and np.isnan(v[mid_y, mid_x])
    assert np.isnan(u[0, -1]) and np.isnan(u[-1, 0])  # the empty corners


def test_plot_velocity_streams_writes_png(cells, tmp_path):
    emb, clusters = cells
    rotation = np.stack([-emb[:, 1], emb[:, 0]], 1)
    panels = {"flux matching": np.tile([1.0, 0.5], (emb.shape[0], 1)), "scVelo": rotation, "zero": np.zeros_like(emb)}
    path = plot_velocity_streams(emb, panels, clusters, tmp_path / "out" / "streams.png", title="streams")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
    assert len(_figure(emb, panels, clusters).axes) == 3


def test_bad_input_is_refused(cells, tmp_path):
    emb, clusters = cells
    good = np.zeros_like(emb)
    with pytest.raises(FluxMatchError, match="mismatched lengths"):
        plot_velocity_streams(emb, {"a": good[:-1]}, clusters, tmp_path / "a.png")
    with pytest.raises(FluxMatchError, match="mismatched lengths"):
        plot_velocity_streams(emb, {"a": good}, clusters[:-1], tmp_path / "a.png")
    with pytest.raises(FluxMatchError, match="non-empty dict"):
        plot_velocity_streams(emb, {}, clusters, tmp_path / "a.png")
    with pytest.raises(FluxMatchError, match="shape"):
        embedding_grid_velocity(emb[:, :1], good[:, :1])
    with pytest.raises(FluxMatchError, match="n_grid"):
        embedding_grid_velocity(emb, good, n_grid=1)
    assert not (tmp_path / "a.png").exists()
