"""Trajectory plots: each writes a non-empty file (headless), the GIF has one frame per step,
and bad shapes are refused."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from fluxmatch.data.springs import SpringParams, simulate_springs
from fluxmatch.errors import FluxMatchError
from fluxmatch.viz.trajectories import animate_springs, plot_trajectories, plot_w2_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS = 6


@pytest.fixture(scope="module")
def real():
    return simulate_springs(12, seed=0, params=SpringParams(steps=STEPS))


@pytest.fixture(scope="module")
def generated(real):
    noisy = real + 0.3 * torch.randn(real.shape, generator=torch.Generator().manual_seed(1))
    wrong = simulate_springs(5, seed=2, params=SpringParams(steps=STEPS)).numpy()
    wrong[0, 2, 1] = np.nan  # a diverged sample is left out, not fatal
    return {"flux": noisy, "dsm": wrong}


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000


def test_plot_trajectories(tmp_path, real, generated):
    path = plot_trajectories(tmp_path / "sub" / "traj.png", real, generated, n_show=3, title="springs")
    assert_png(path)
    assert_png(plot_trajectories(tmp_path / "two.png", real[:, :, :2], {}, names=["a", "b"], dt=0.5))


def test_plot_w2_curves(tmp_path):
    curves = {"flux": ([0, 100, 200], [4.0, 0.5, 0.2]), "dsm": ([0, 100, 200], [4.0, 1.0, math.nan])}
    assert_png(plot_w2_curves(tmp_path / "w2.png", curves, floor=0.1, title="W2"))
    assert_png(plot_w2_curves(tmp_path / "linear.png", {"one": ([1], [0.3])}))


def test_animate_springs_has_one_frame_per_step(tmp_path, real, generated):
    path = animate_springs(tmp_path / "springs.gif", real, generated, index=1, fps=5)
    assert path.stat().st_size > 0
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == STEPS
    assert [p.name for p in tmp_path.iterdir()] == ["springs.gif"]  # no temporary left behind


@pytest.mark.parametrize(
    "real_shape, gen_shape",
    [((4, STEPS), (4, STEPS, 4)), ((4, STEPS, 4), (4, STEPS + 1, 4)), ((4, STEPS, 4), (4, STEPS, 3)), ((0, STEPS, 4), (4, STEPS, 4))],
    ids=["rank2", "steps-differ", "features-differ", "empty"],
)
def test_bad_shapes_are_refused(tmp_path, real_shape, gen_shape):
    real, gen = np.zeros(real_shape), {"g": np.zeros(gen_shape)}
    with pytest.raises(FluxMatchError):
        plot_trajectories(tmp_path / "t.png", real, gen)
    with pytest.raises(FluxMatchError):
        animate_springs(tmp_path / "a.gif", real, gen)
    assert not list(tmp_path.iterdir())


def test_bad_arguments_are_refused(tmp_path, real):
    with pytest.raises(FluxMatchError):
        plot_trajectories(tmp_path / "t.png", real, [real])
    with pytest.raises(FluxMatchError):
        plot_trajectories(tmp_path / "t.png", real, {"real": real})
    with pytest.raises(FluxMatchError):
        plot_trajectories(tmp_path / "t.png", real, {}, names=["q1"])
    with pytest.raises(FluxMatchError):
        plot_trajectories(tmp_path / "t.png", real, {}, n_show=0)
    with pytest.raises(FluxMatchError):
        plot_trajectories(tmp_path / "t.png", real, {}, dt=-1)
    with pytest.raises(FluxMatchError):
        animate_springs(tmp_path / "a.gif", real, {"g": real[:2]}, index=2)
    with pytest.raises(FluxMatchError):
        animate_springs(tmp_path / "a.gif", real[:, :, :2], {})
    with pytest.raises(FluxMatchError):
        animate_springs(tmp_path, real, {})
    for curves in ({}, {"a": ([1, 2], [0.1])}, {"a": ([1], [math.nan])}, {"a": 3}):
        with pytest.raises(FluxMatchError):
            plot_w2_curves(tmp_path / "w.png", curves)
    with pytest.raises(FluxMatchError):
        plot_w2_curves(tmp_path / "w.png", {"a": ([1], [0.2])}, floor=math.inf)
