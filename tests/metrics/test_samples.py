"""Sample distances: exact identities, known values for Gaussians, chunking and validation."""

import math

import numpy as np
import ot
import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.metrics import energy_distance, mmd_rbf, sample_metrics, sliced_wasserstein2, wasserstein2
from fluxmatch.metrics import samples as samples_module


def gaussian(n, d=2, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + torch.as_tensor(shift, dtype=torch.float32)


def test_w2_of_a_translation_is_its_length():
    x = gaussian(300)
    c = torch.tensor([1.5, -2.0])
    # Translating every point is an optimal coupling: W2 = |c| exactly.
    assert wasserstein2(x, x + c) == pytest.approx(2.5, abs=1e-5)
    assert wasserstein2(x, x) == pytest.approx(0.0, abs=1e-6)


def test_w2_mean_decomposition():
    x, y = gaussian(200, seed=1), gaussian(250, seed=2, shift=[1.0, 0.5])
    dm = float((x.mean(0) - y.mean(0)).norm())
    w = wasserstein2(x, y)
    # W2² = |mean difference|² + W2² of the centred samples, for any two measures.
    assert w**2 == pytest.approx(dm**2 + wasserstein2(x - x.mean(0), y - y.mean(0)) ** 2, rel=1e-6)


def test_w2_between_shifted_gaussians():
    n = 1000
    m = torch.tensor([3.0, 0.0])
    w = wasserstein2(gaussian(n, seed=3), gaussian(n, seed=4, shift=m))
    # W2 - |m| ≈ (|x̄ - ȳ| - |m|) + floor²/(2|m|): the first term has std sqrt(2/N) ≈ 0.045, the
    # second is ≈ 0.2²/6 (the same-law W2 of 1000 2-D points is about 0.2).
    assert abs(w - 3.0) < 4 * math.sqrt(2 / n) + 0.02


def test_w2_matches_pot_on_numpy_and_flattens():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 2, 3)), rng.normal(size=(30, 6))
    cost = ot.dist(x.reshape(40, -1), y)
    expected = math.sqrt(ot.emd2(np.full(40, 1 / 40), np.full(30, 1 / 30), cost))
    assert wasserstein2(x, y) == pytest.approx(expected, rel=1e-9)


def test_w2_caps_big_problems_with_seeded_subsets():
    x, y = gaussian(80, seed=30), gaussian(60, seed=31, shift=[0.3, 0.0])
    # Below the cap (80·60 ≤ 70²) the value is the exact W2, whatever the seed.
    assert wasserstein2(x, y, max_points=70) == wasserstein2(x, y) == wasserstein2(x, y, max_points=70, seed=5)
    # Above it (80·60 > 50²) each side larger than the cap becomes a seeded subset of 50 rows.
    capped = wasserstein2(x, y, max_points=50, seed=2)
    xs = x.double()[torch.randperm(80, generator=torch.Generator().manual_seed(2))[:50]]
    ys = y.double()[torch.randperm(60, generator=torch.Generator().manual_seed(3))[:50]]
    cost = ot.dist(xs.numpy(), ys.numpy())
    assert capped == pytest.approx(math.sqrt(ot.emd2(np.full(50, 1 / 50), np.full(50, 1 / 50), cost)), rel=1e-9)
    assert capped == wasserstein2(x, y, max_points=50, seed=2) != wasserstein2(x, y, max_points=50, seed=4)
    # Only the side above the cap is subsampled: 100·10 > 20², y keeps its 10 rows.
    big, small = gaussian(100, seed=32), gaussian(10, seed=33)
    xs = big.double()[torch.randperm(100, generator=torch.Generator().manual_seed(0))[:20]]
    cost = ot.dist(xs.numpy(), small.double().numpy())
    assert wasserstein2(big, small, max_points=20) == pytest.approx(math.sqrt(ot.emd2(np.full(20, 1 / 20), np.full(10, 1 / 10), cost)), rel=1e-9)
    assert samples_module.W2_MAX_POINTS == 5000
    with pytest.raises(FluxMatchError, match="max_points"):
        wasserstein2(x, y, max_points=0)


def test_sliced_w2_of_a_translation():
    x = gaussian(500)
    c = torch.tensor([3.0, 4.0])
    sw = sliced_wasserstein2(x, x + c, n_projections=256)
    # Each projection is shifted by θ·c, so SW2² = mean (θ·c)² ≈ |c|²/2 in 2-D; the mean of
    # cos² over 256 directions has std sqrt(1/8/256) ≈ 0.022.
    assert sw**2 / 25 == pytest.approx(0.5, abs=0.1)


def test_sliced_w2_unequal_sizes_exact_in_1d():
    # In 1-D every direction is ±1, so SW2 is the exact W2 between the empirical measures:
    # quantiles of {0, 1} and {0, ½, 1} differ by ½ on (1/3, 2/3), so W2² = 1/3 · 1/4.
    sw = sliced_wasserstein2(np.array([[0.0], [1.0]]), np.array([[0.0], [0.5], [1.0]]))
    assert sw**2 == pytest.approx(1 / 12, rel=1e-9)


def test_sliced_w2_bounded_by_w2_and_deterministic():
    x, y = gaussian(300, d=3, seed=5), gaussian(200, d=3, seed=6, shift=[0.5, 0.0, 0.0])
    sw = sliced_wasserstein2(x, y, seed=7)
    # For any coupling, E_θ (θ·(x - y))² = |x - y|²/d, hence SW2 ≤ W2/sqrt(d).
    assert sw <= wasserstein2(x, y) / math.sqrt(3) + 1e-9
    assert sw == sliced_wasserstein2(x, y, seed=7)
    assert sw != sliced_wasserstein2(x, y, seed=8)


def test_mmd_same_and_different_laws():
    x, y = gaussian(500, seed=10), gaussian(500, seed=11)
    # Unbiased estimate: under equal laws it scatters around 0 with std ≈ 1.2e-3 at N = 500
    # (measured over 30 seeds), so 0.01 is more than 8 standard errors.
    assert abs(mmd_rbf(x, y)) < 0.01
    assert mmd_rbf(x, gaussian(500, seed=12, shift=[1.0, 0.0])) > 0.05


def brute_force(x, y, h):
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    k = lambda a, b: torch.exp(-torch.cdist(a, b).square() / (2 * h * h))  # noqa: E731
    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    mmd = (kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - m) / (m * (m - 1)) - 2 * k(x, y).mean()
    energy = 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()
    return float(mmd), float(energy)


def test_mmd_and_energy_match_brute_force_with_small_chunks(monkeypatch):
    x, y = gaussian(37, seed=13) + 100.0, gaussian(23, seed=14, shift=[100.5, 100.0])
    mmd, energy = brute_force(x, y, 0.8)
    assert mmd_rbf(x, y, bandwidth=0.8) == pytest.approx(mmd, rel=1e-6)
    assert energy_distance(x, y) == pytest.approx(energy, rel=1e-6)
    monkeypatch.setattr(samples_module, "_CHUNK_ELEMENTS", 50)
    assert mmd_rbf(x, y, bandwidth=0.8) == pytest.approx(mmd, rel=1e-6)
    assert energy_distance(x, y) == pytest.approx(energy, rel=1e-6)


def test_mmd_median_bandwidth_is_scale_invariant():
    x, y = gaussian(200, seed=15), gaussian(200, seed=16, shift=[0.7, 0.0])
    assert mmd_rbf(x, y) == pytest.approx(mmd_rbf(10 * x, 10 * y), rel=1e-6)
    with pytest.raises(FluxMatchError, match="bandwidth"):
        mmd_rbf(x, y, bandwidth=-1.0)


def test_energy_distance_properties():
    x = gaussian(500, seed=17)
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    same = energy_distance(x, gaussian(500, seed=18))
    # V-statistic: ≥ 0 with bias 2E|X - X'|/N = 2·sqrt(π)/500 ≈ 0.007 (measured 0.007 ± 0.004).
    assert 0 <= same < 0.03
    assert energy_distance(x, gaussian(500, seed=19, shift=[1.0, 0.0])) > 0.3


def test_sample_metrics_keys_and_floor():
    data, ref = gaussian(400, seed=20), gaussian(400, seed=21)
    good = sample_metrics(gaussian(400, seed=22), data, reference=ref)
    assert set(good) == {"w2", "sliced_w2", "mmd", "energy", "floor_w2", "floor_sliced_w2", "floor_mmd", "floor_energy"}
    assert all(isinstance(v, float) for v in good.values())
    bad = sample_metrics(gaussian(400, seed=22, shift=[2.0, 0.0]), data)
    assert set(bad) == {"w2", "sliced_w2", "mmd", "energy"}
    for key in bad:
        assert bad[key] > good[key] and bad[key] > 5 * abs(good[f"floor_{key}"])
    assert sample_metrics(data.numpy(), data, seed=1)["w2"] == pytest.approx(0.0, abs=1e-6)


def test_sample_metrics_subsamples_w2():
    x, y = gaussian(600, seed=23), gaussian(600, seed=24)
    # Exact W2 on 600 points would not equal W2 on a 100-point subset.
    assert sample_metrics(x, y, w2_max_points=100)["w2"] != pytest.approx(wasserstein2(x, y), rel=1e-3)


def test_sample_metrics_validation():
    data = gaussian(50)
    diverged = data.clone()
    diverged[[3, 7], 0] = float("nan")
    diverged[9, 1] = float("inf")
    with pytest.raises(FluxMatchError, match=r"samples has 3 non-finite row\(s\) of 50 .*smaller step size"):
        sample_metrics(diverged, data)
    with pytest.raises(FluxMatchError, match=r"\(50, 3\).*\(50, 2\)"):
        sample_metrics(gaussian(50, d=3), data)
    with pytest.raises(FluxMatchError, match=r"\(50, 1, 2\).*\(50, 2\)"):
        sample_metrics(data[:, None], data)
    with pytest.raises(FluxMatchError, match="at least 2 rows"):
        sample_metrics(data[:1], data)
    with pytest.raises(FluxMatchError, match="different dimensions"):
        wasserstein2(gaussian(5, d=3), data)


def direct_sums(x, y, h):
    """The pair sums of MMD and energy in one full matrix each (no blocks), float64, with the
    same centring and the same |a|² + |b|² − 2ab formula as the blocked code."""
    a, b = samples_module._pair(x, y)

    def d2(u, v, same):
        out = (u.square().sum(1)[:, None] + v.square().sum(1)[None] - 2 * u @ v.T).clamp_min(0)
        return out.fill_diagonal_(0.0) if same else out

    n, m = len(a), len(b)
    k = lambda e: torch.exp(-e / (2 * h * h))  # noqa: E731
    mmd = (float(k(d2(a, a, True)).sum()) - n) / (n * (n - 1)) + (float(k(d2(b, b, True)).sum()) - m) / (m * (m - 1)) - 2 * float(k(d2(a, b, False)).sum()) / (n * m)
    energy = 2 * float(d2(a, b, False).sqrt().sum()) / (n * m) - float(d2(a, a, True).sqrt().sum()) / n**2 - float(d2(b, b, True).sqrt().sum()) / m**2
    return mmd, energy


@pytest.mark.parametrize("chunk_elements", [7 * 83, 5 * 83 + 1, 1, 2**22])
def test_blocked_pair_sums_equal_the_direct_formula(monkeypatch, chunk_elements):
    # 101 and 83 rows: the blocks (7, 5, 1 rows, or one block) do not divide the row counts.
    x, y = gaussian(101, d=3, seed=40).double(), gaussian(83, d=3, seed=41, shift=[0.8, 0.0, 0.0]).double()
    mmd, energy = direct_sums(x, y, 0.9)
    monkeypatch.setattr(samples_module, "_CHUNK_ELEMENTS", chunk_elements)
    assert mmd_rbf(x, y, bandwidth=0.9) == pytest.approx(mmd, rel=1e-10)
    assert energy_distance(x, y) == pytest.approx(energy, rel=1e-10)


def test_sliced_w2_in_blocks_of_directions_equals_one_product(monkeypatch):
    x, y = gaussian(120, d=4, seed=42), gaussian(90, d=4, seed=43, shift=[0.5, 0, 0, 0])
    whole = sliced_wasserstein2(x, y, n_projections=50, seed=3)
    # 210 rows: blocks of 2, 1 and 7 directions (the last block of 7 is short).
    for elements in (420, 1, 7 * 210 + 5):
        monkeypatch.setattr(samples_module, "_CHUNK_ELEMENTS", elements)
        assert sliced_wasserstein2(x, y, n_projections=50, seed=3) == pytest.approx(whole, rel=1e-12)


@pytest.mark.parametrize("metric", [wasserstein2, sliced_wasserstein2, mmd_rbf, energy_distance])
def test_two_sample_metrics_refuse_bad_shapes(metric):
    with pytest.raises(FluxMatchError, match="different dimensions: 3 and 2"):
        metric(gaussian(5, d=3), gaussian(6))
    with pytest.raises(FluxMatchError, match="x has no rows"):
        metric(torch.zeros(0, 2), gaussian(6))
    with pytest.raises(FluxMatchError, match="y must have one point per row"):
        metric(gaussian(6), torch.tensor(1.0))


def test_mmd_needs_two_rows_per_sample():
    with pytest.raises(FluxMatchError, match="at least 2 points per sample, got 1 and 6"):
        mmd_rbf(gaussian(1), gaussian(6))


def test_the_suite_takes_seeded_subsets_for_the_pair_sums_of_big_samples():
    from fluxmatch.metrics.samples import _subsample

    x, y = torch.randn(300, 2, generator=torch.Generator().manual_seed(0)), torch.randn(200, 2, generator=torch.Generator().manual_seed(1)) + 0.5
    capped = sample_metrics(x, y, seed=4, pair_max_points=50)
    assert capped["mmd"] == pytest.approx(mmd_rbf(_subsample(x.double(), 50, 6), _subsample(y.double(), 50, 7)), rel=1e-12)
    assert capped["energy"] == pytest.approx(energy_distance(_subsample(x.double(), 50, 6), _subsample(y.double(), 50, 7)), rel=1e-12)
    full = sample_metrics(x, y, seed=4)
    assert full["mmd"] == pytest.approx(mmd_rbf(x, y), rel=1e-12) and full["sliced_w2"] == capped["sliced_w2"]
