"""Built-in toy sets: scales, determinism, the analytic 8-Gaussian mixture, bad input."""

import math

import pytest
import torch

from fluxmatch.data import TOY_DATASETS, sample_toy
from fluxmatch.data.toy import toy_mixture
from fluxmatch.errors import FluxMatchError

N = 20000


def draw(name, n=N, seed=0):
    return sample_toy(name, n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_shape_dtype_and_determinism(name):
    x = draw(name, 1001)
    assert x.shape == (1001, 2) and x.dtype == torch.float32 and x.is_contiguous()
    assert torch.isfinite(x).all()
    assert torch.equal(x, draw(name, 1001))
    assert not torch.equal(x, draw(name, 1001, seed=1))


def test_ring_radius():
    r = draw("ring").norm(dim=1)
    # radius = 2.5 + 0.5 ε, so the mean and std of |x| are 2.5 and 0.5 (|r| folding is negligible).
    se = 0.5 / math.sqrt(N)
    assert abs(r.mean() - 2.5) < 5 * se
    assert abs(r.std() - 0.5) < 0.02


def test_ring_angles_uniform():
    angle = torch.atan2(*draw("ring").T.flip(0))
    counts = torch.histc(angle, bins=8, min=-math.pi, max=math.pi)
    assert (counts / N - 1 / 8).abs().max() < 0.02


@pytest.mark.parametrize("name", ["8gaussians", "gmm8"])
def test_8gaussians_near_means(name):
    x = draw(name)
    mix = toy_mixture(name)
    d2 = torch.cdist(x, mix["means"]).square()
    nearest = d2.argmin(1)
    # With std 0.3 per coordinate, |x - μ|² / 0.09 is χ²₂ with mean 2.
    assert abs(float(d2.min(1).values.mean()) / 0.09 - 2) < 0.1
    counts = torch.bincount(nearest, minlength=8) / N
    assert (counts - 1 / 8).abs().max() < 0.02


def test_gmm8_alias_is_same_set():
    assert torch.equal(draw("gmm8", 100), draw("8gaussians", 100))


def test_toy_mixture_form():
    mix = toy_mixture("8gaussians")
    assert mix["means"].shape == (8, 2) and mix["stds"].shape == (8,) and mix["weights"].shape == (8,)
    assert torch.allclose(mix["means"].norm(dim=1), torch.full((8,), 4.0))
    assert torch.allclose(mix["means"][2], torch.tensor([0.0, 4.0]), atol=1e-6)
    assert torch.allclose(mix["stds"], torch.full((8,), 0.3))
    assert abs(float(mix["weights"].sum()) - 1) < 1e-6
    for name in ("ring", "moons", "checkerboard", "spirals"):
        with pytest.raises(FluxMatchError, match="no analytic"):
            toy_mixture(name)


def test_moons_scale_and_centre():
    x = draw("moons")
    # Noise-free moons span x ∈ [-3, 3], y ∈ [-1.5, 1.5] after ×2 and centring; noise adds ~0.2.
    assert x.mean(0).abs().max() < 0.05
    lo, hi = torch.quantile(x, torch.tensor([0.002, 0.998]), dim=0)
    assert -3.5 < lo[0] < -2.7 and 2.7 < hi[0] < 3.5
    assert -2.0 < lo[1] < -1.3 and 1.3 < hi[1] < 2.0
    upper = x[:, 1] - 0.5 * x[:, 0] > 0
    assert abs(float(upper.float().mean()) - 0.5) < 0.05


def test_checkerboard_on_black_squares():
    x = draw("checkerboard")
    assert x.abs().max() <= 4
    col, row = ((x + 4) // 2).long().clamp(0, 3).T
    assert ((col + row) % 2 == 0).all()
    counts = torch.bincount(row * 4 + col, minlength=16) / N
    black = counts[(torch.arange(16) // 4 + torch.arange(16) % 4) % 2 == 0]
    assert (black - 1 / 8).abs().max() < 0.02


def test_spirals_radius_and_balance():
    x = draw("spirals")
    r = x.norm(dim=1)
    assert 3.7 < float(r.quantile(0.999)) < 4.5
    assert abs(float(x.mean(0).norm())) < 0.1
    # Two point-symmetric arms: x and -x have the same law, so the set and its mirror are close.
    assert float(torch.cdist(x[:2000], -x[2000:6000]).min(1).values.median()) < 0.15


def test_unknown_name_lists_valid_names():
    with pytest.raises(FluxMatchError, match="unknown toy data set 'swissroll'.*8gaussians"):
        sample_toy("swissroll", 10)


@pytest.mark.parametrize("n", [0, -5, 2.0, "10", True])
def test_bad_counts(n):
    with pytest.raises(FluxMatchError, match="positive integer"):
        sample_toy("ring", n)


def test_triangle_is_its_mixture():
    x = draw("triangle")
    mix = toy_mixture("triangle")
    assert torch.allclose(mix["means"].norm(dim=1), torch.full((3,), 2.5))
    assert torch.allclose(mix["means"][0], torch.tensor([0.0, 2.5]), atol=1e-6)
    d2 = torch.cdist(x, mix["means"]).square()
    # components 4.3 apart with std 0.5: almost every point is nearest its own mean, so the
    # nearest-mean distance is χ²₂·0.25 with mean 0.5 (to within the ~0.1% of overlap)
    assert abs(float(d2.min(1).values.mean()) / 0.25 - 2) < 0.1
    counts = torch.bincount(d2.argmin(1), minlength=3) / N
    assert (counts - 1 / 3).abs().max() < 0.02
