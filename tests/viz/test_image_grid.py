"""Image grids: a PNG whose tiles show the images in the right colours, and clear errors."""

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from fluxmatch.data.digits import digits_split
from fluxmatch.errors import FluxMatchError
from fluxmatch.viz.images import plot_image_grid

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_rgb(path):
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    return imread(path)[:, :, :3]


def test_digit_grid_with_labels(tmp_path):
    split = digits_split()
    out = plot_image_grid(tmp_path / "sub" / "grid.png", split.held_out_images[:40], nrow=10, title="digits", labels=split.held_out_labels[:40])
    assert out == tmp_path / "sub" / "grid.png"
    rgb = read_rgb(out)
    # Ten tiles across, each ≥ 8 pixels wide.
    assert rgb.shape[1] >= 10 * 8 * 4
    # Digits are white strokes on black: both extremes appear.
    grey = rgb.mean(2)
    assert (grey < 0.05).mean() > 0.1 and (grey > 0.95).mean() > 0.02


def test_model_units_and_value_range(tmp_path):
    white = torch.ones(4, 1, 8, 8)  # 1.0 is white in model units
    assert (read_rgb(plot_image_grid(tmp_path / "w.png", white)).mean(2) > 0.98).mean() > 0.3
    # The same numbers read as pixels 0..16 are almost black.
    dark = read_rgb(plot_image_grid(tmp_path / "d.png", white, value_range=(0, 16)))
    assert (dark.mean(2) > 0.98).mean() < 0.3 and (dark.mean(2) < 0.1).mean() > 0.3


def test_rgb_and_three_dimensional_input(tmp_path):
    red = torch.zeros(6, 3, 16, 16)
    red[:, 0] = 1.0
    rgb = read_rgb(plot_image_grid(tmp_path / "red.png", red, value_range=(0, 1), nrow=3))
    is_red = (rgb[:, :, 0] > 0.9) & (rgb[:, :, 1] < 0.1) & (rgb[:, :, 2] < 0.1)
    assert is_red.mean() > 0.3
    grey = np.random.default_rng(0).uniform(-1, 1, size=(5, 8, 8))
    plain = read_rgb(plot_image_grid(tmp_path / "g.png", grey))
    assert np.allclose(plain[:, :, 0], plain[:, :, 1], atol=0.02)  # no colour without labels


def test_non_finite_pixels_are_drawn_not_fatal(tmp_path):
    x = torch.zeros(3, 1, 8, 8)
    x[1, 0, 2, 2] = float("nan")
    assert plot_image_grid(tmp_path / "nan.png", x, title="samples").is_file()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"images": torch.zeros(2, 2, 8, 8)}, "grey"),
        ({"images": torch.zeros(0, 1, 8, 8)}, "N ≥ 1"),
        ({"images": torch.zeros(4, 1, 8, 8), "labels": [1, 2]}, "one label per image"),
        ({"images": torch.zeros(4, 1, 8, 8), "nrow": 0}, "nrow"),
        ({"images": torch.zeros(4, 1, 8, 8), "value_range": (1, 1)}, "low < high"),
        ({"images": "pixels"}, "numeric"),
    ],
)
def test_bad_input(tmp_path, kwargs, match):
    with pytest.raises(FluxMatchError, match=match):
        plot_image_grid(tmp_path / "bad.png", **kwargs)
