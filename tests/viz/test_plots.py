"""Plots: each writes a non-empty PNG (headless) and refuses bad input."""

import csv
import math

import numpy as np
import pytest
import torch

from fluxmatch.data import sample_toy
from fluxmatch.errors import FluxMatchError
from fluxmatch.viz import plot_curl, plot_field, plot_fields, plot_loss_curve, plot_samples

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000


@pytest.fixture(scope="module")
def ring():
    return sample_toy("ring", 2000, torch.Generator().manual_seed(0))


def swirl(x, cond):
    scale = 1.0 if cond is None else cond
    return scale * (torch.stack([-x[:, 1], x[:, 0]], 1) - 0.1 * x * (x.square().sum(1, keepdim=True) - 6.25))


def score(x, cond):
    return -x * (x.square().sum(1, keepdim=True) - 6.25)


def test_plot_samples_2d(tmp_path, ring):
    out = plot_samples(tmp_path / "sub" / "samples.png", {"flux": ring.numpy() * 1.1, "dsm": ring}, data=ring, title="ring")
    assert out == tmp_path / "sub" / "samples.png"
    assert_png(out)


def test_plot_samples_projects_high_dim_and_drops_nan(tmp_path):
    x = torch.randn(500, 1, 2, 3)
    s = x.clone()
    s[0, 0, 0, 0] = float("nan")
    assert_png(plot_samples(tmp_path / "pca.png", {"model": s}, data=x))
    assert_png(plot_samples(tmp_path / "hist.png", {"model": np.random.default_rng(0).normal(size=300)}, lim=4))


def test_plot_samples_errors(tmp_path, ring):
    with pytest.raises(FluxMatchError, match="same number of coordinates"):
        plot_samples(tmp_path / "x.png", {"a": torch.randn(10, 3)}, data=ring)
    with pytest.raises(FluxMatchError, match="nothing to plot"):
        plot_samples(tmp_path / "x.png", {})
    with pytest.raises(FluxMatchError, match="lim"):
        plot_samples(tmp_path / "x.png", {"a": ring}, lim=(1, 0, 0, 1))


@pytest.mark.parametrize("kind, grid", [("stream", 30), ("quiver", 20)])
def test_plot_field(tmp_path, ring, kind, grid):
    assert_png(plot_field(tmp_path / f"{kind}.png", swirl, data=ring, cond=2.0, kind=kind, grid=grid, title=kind))


def test_plot_field_errors(tmp_path):
    with pytest.raises(FluxMatchError, match="kind"):
        plot_field(tmp_path / "f.png", swirl, kind="arrows")
    with pytest.raises(FluxMatchError, match="2-D data"):
        plot_field(tmp_path / "f.png", swirl, data=torch.randn(10, 3))


def test_plot_curl_and_fields(tmp_path, ring):
    assert_png(plot_curl(tmp_path / "curl.png", swirl, data=ring, grid=40))
    assert_png(plot_curl(tmp_path / "curl_no_data.png", score, lim=3, grid=30))
    assert_png(plot_fields(tmp_path / "field.png", {"flux": swirl, "dsm": score}, data=ring, grid=25, curl_grid=40))


def test_plot_loss_curve(tmp_path):
    log = tmp_path / "log.csv"
    with open(log, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss", "w2"])
        for step in range(200):
            writer.writerow([step, math.exp(-step / 50) + 0.01 * math.sin(step), 0.3 if step % 50 == 0 else ""])
    assert_png(plot_loss_curve(tmp_path / "loss.png", log, keys=("loss", "w2")))
    rows = [{"step": i, "loss": -float(i)} for i in range(10)]
    assert_png(plot_loss_curve(tmp_path / "rows.png", rows))
    with pytest.raises(FluxMatchError, match="no numeric values for 'mmd'"):
        plot_loss_curve(tmp_path / "bad.png", log, keys=("mmd",))
    with pytest.raises(FluxMatchError, match="no 'step' column"):
        plot_loss_curve(tmp_path / "bad.png", [{"loss": 1.0}])
    with pytest.raises(FluxMatchError, match="not found"):
        plot_loss_curve(tmp_path / "bad.png", tmp_path / "missing.csv")
