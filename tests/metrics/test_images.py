"""Image metrics: the Fréchet distance, the cached digit classifier, FD-digits and class coverage."""

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from fluxmatch.data.digits import digits_split
from fluxmatch.errors import FluxMatchError
from fluxmatch.metrics import images
from fluxmatch.metrics.images import (
    CLASSIFIER_VERSION,
    class_coverage,
    digit_features,
    digits_classifier,
    fd_digits,
    frechet_distance,
    gaussian_frechet_distance,
    image_metrics,
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache folder for the module; the classifier is trained once into it (~5 s)."""
    folder = tmp_path_factory.mktemp("fluxmatch-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLUXMATCH_CACHE", str(folder))
        first = digits_classifier()
        yield folder, first


@pytest.fixture
def model(cache, monkeypatch):
    monkeypatch.setenv("FLUXMATCH_CACHE", str(cache[0]))
    return digits_classifier()


@pytest.fixture(scope="module")
def split():
    return digits_split()


def random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_gaussian_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=4), rng.normal(size=4)
    v1, v2 = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    # Commuting (diagonal) covariances: |Δm|² + Σ_i (√v1_i − √v2_i)².
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert gaussian_frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)
    # General covariances: the FID formula with scipy's matrix square root of Σ1 Σ2.
    c1, c2 = random_spd(rng, 5), random_spd(rng, 5)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    reference = np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(scipy.linalg.sqrtm(c1 @ c2)).real
    assert gaussian_frechet_distance(m1, c1, m2, c2) == pytest.approx(reference, rel=1e-9)
    assert gaussian_frechet_distance(m2, c2, m1, c1) == pytest.approx(reference, rel=1e-9)
    assert gaussian_frechet_distance(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-9)
    # A singular covariance (rank 1) is fine: no complex parts, no negative result.
    u = rng.normal(size=(5, 1))
    assert gaussian_frechet_distance(m1, u @ u.T, m1, u @ u.T) >= 0
    with pytest.raises(FluxMatchError, match="covariances"):
        gaussian_frechet_distance(m1, c1, m2[:3], c2)


def test_frechet_distance_one_dimensional_gaussians():
    rng = np.random.default_rng(1)
    n = 20000
    a = rng.normal(1.0, 2.0, size=(n, 1))
    b = rng.normal(-0.5, 0.5, size=(n, 1))
    # Population value (m1 − m2)² + (s1 − s2)² = 1.5² + 1.5² = 4.5. Monte Carlo error of the
    # estimate: 2|Δm|·sd(Δm̂) = 3·√(4.25/n) ≈ 0.044 and 2|Δs|·sd(Δŝ) ≈ 3·√((4 + 0.25)/(2n)) ≈ 0.031,
    # so about 0.054 in all; 0.3 is more than 5 standard deviations.
    assert frechet_distance(a, b) == pytest.approx(4.5, abs=0.3)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(frechet_distance(a, b), rel=1e-12)


def test_frechet_distance_exact_on_sample_moments():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    shift = rng.normal(size=6)
    # Translating a sample leaves its covariance unchanged, so the distance is exactly |shift|².
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(FluxMatchError, match="different widths"):
        frechet_distance(a, a[:, :3])
    with pytest.raises(FluxMatchError, match="N ≥ 2"):
        frechet_distance(a[:1], a)
    bad = a.copy()
    bad[3, 2] = np.nan
    with pytest.raises(FluxMatchError, match="NaN"):
        frechet_distance(bad, a)


def test_classifier_accuracy_on_held_out(model, split):
    with torch.no_grad():
        predicted = model(split.held_out_images).argmax(1)
    accuracy = float((predicted == split.held_out_labels).double().mean())
    assert accuracy >= 0.95
    assert model.heldout_accuracy == pytest.approx(accuracy, abs=1e-12)
    assert not model.training


def test_cache_is_reused(cache, monkeypatch):
    folder, first = cache
    assert first.source == "trained" and (folder / f"{CLASSIFIER_VERSION}.safetensors").is_file()

    def no_training():
        raise AssertionError("the cached classifier should have been loaded, not retrained")

    monkeypatch.setenv("FLUXMATCH_CACHE", str(folder))
    monkeypatch.setattr(images, "_train", no_training)
    again = digits_classifier()
    assert again.source == "cache" and again.heldout_accuracy == first.heldout_accuracy
    for (name, p), q in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other version"])
def test_corrupt_cache_is_rebuilt_with_a_warning(cache, tmp_path, monkeypatch, damage):
    folder, first = cache
    good = (folder / f"{CLASSIFIER_VERSION}.safetensors").read_bytes()
    path = tmp_path / f"{CLASSIFIER_VERSION}.safetensors"
    if damage == "garbage":
        path.write_bytes(b"not a safetensors file")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in first.state_dict().items()}, str(path), metadata={"version": "digits-cnn-v0", "heldout_accuracy": "1.0"})
    calls = []

    def train_once():
        # Retraining is what the real recovery does; reusing the module's model keeps the test fast.
        calls.append(1)
        return first

    monkeypatch.setenv("FLUXMATCH_CACHE", str(tmp_path))
    monkeypatch.setattr(images, "_train", train_once)
    with pytest.warns(UserWarning, match="unreadable.*retraining"):
        rebuilt = digits_classifier()
    assert calls == [1] and rebuilt is first
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reloaded = digits_classifier()
    assert reloaded.source == "cache" and calls == [1]
    assert not list(tmp_path.glob("*.tmp"))


def test_features_shapes_units_and_validation(model, split):
    x = split.held_out_images[:50]
    f = digit_features(x, model)
    assert f.shape == (50, images.FEATURE_DIM) and f.dtype == torch.float64
    assert torch.equal(digit_features(x.reshape(50, 64), model), f)
    assert torch.equal(digit_features(x[:, 0].numpy(), model), f)
    # Samples are clipped to [−1, 1] before the classifier sees them.
    assert torch.equal(digit_features(x * 1.5, model), digit_features((x * 1.5).clamp(-1, 1), model))
    assert not torch.equal(digit_features(x * 0.5, model), f)
    with pytest.raises(FluxMatchError, match="pixel intensities"):
        digit_features((x + 1) * 8, model)
    with pytest.raises(FluxMatchError, match="8×8"):
        digit_features(torch.zeros(3, 1, 7, 7), model)
    bad = x.clone()
    bad[4, 0, 2, 2] = float("inf")
    with pytest.raises(FluxMatchError, match=r"images has 1 non-finite image\(s\) of 50"):
        digit_features(bad, model)


def test_fd_digits_separates_data_from_noise(model, split):
    g = torch.Generator().manual_seed(0)
    n = split.held_out_images.shape[0]
    real = split.train_images[torch.randperm(split.train_images.shape[0], generator=g)[:n]]
    noise = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    noisy = (real + 0.3 * torch.randn(real.shape, generator=g)).clamp(-1, 1)
    fd_real = fd_digits(real, split.held_out_images, model)
    fd_noise = fd_digits(noise, split.held_out_images, model)
    fd_noisy = fd_digits(noisy, split.held_out_images, model)
    # Measured at n = 359: real 10 ± 2.5 (mean ± sd over 100 draws, max 18.4), digits with
    # N(0, 0.3²) pixel noise 30–35, uniform noise 750–800. Both margins hold even against the
    # largest real-vs-real value seen.
    assert fd_noise > 20 * fd_real
    assert fd_noisy > 1.5 * fd_real


def test_class_coverage(model, split):
    held = class_coverage(split.held_out_images, model=model)
    assert held["coverage"] == 1.0
    true_shares = torch.bincount(split.held_out_labels, minlength=10).double() / split.held_out_labels.shape[0]
    # With ≥ 95% accuracy at most 5% of the mass can move between classes.
    assert np.abs(np.array(held["histogram"]) - true_shares.numpy()).sum() <= 2 * 0.05
    assert held["entropy"] == pytest.approx(math.log(10), abs=0.02)
    one = split.held_out_images[split.held_out_labels == 7][:1].repeat(100, 1, 1, 1)
    single = class_coverage(one, model=model)
    assert single["coverage"] == pytest.approx(0.1) and single["entropy"] == 0.0
    assert single["histogram"][7] == 1.0
    # Two digits, one of them below the 1/20 threshold.
    mix = torch.cat([one[:97], split.held_out_images[split.held_out_labels == 0][:3]])
    assert class_coverage(mix, model=model)["coverage"] == pytest.approx(0.1)
    with pytest.raises(FluxMatchError, match="threshold"):
        class_coverage(one, threshold=0, model=model)


def test_image_metrics(model, split):
    g = torch.Generator().manual_seed(1)
    real = split.train_images[torch.randperm(1438, generator=g)[:359]]
    result = image_metrics(real, split.held_out_images, seed=3)
    expected = {
        "fd_digits", "fd_digits_floor", "floor_n", "class_coverage", "class_histogram",
        "class_entropy", "classifier_accuracy", "n_samples", "out_of_range",
    }
    assert set(result) == expected
    assert result["floor_n"] == result["n_samples"] == 359 and result["out_of_range"] == 0.0
    assert result["classifier_accuracy"] == model.heldout_accuracy and result["class_coverage"] == 1.0
    assert result == image_metrics(real, split.held_out_images, seed=3)
    # Real digits score like the floor, which is FD of other real digits at the same n: both are
    # draws of one statistic: at n = 359 its 5–95% range is 7.0–14.7 and its largest value 18.4
    # (100 draws), so two draws stay within a factor of 3 of each other.
    assert 1 / 3 < result["fd_digits"] / result["fd_digits_floor"] < 3
    noise = torch.rand(359, 1, 8, 8, generator=g) * 2.4 - 1.2
    bad = image_metrics(noise, split.held_out_images, seed=3)
    assert bad["fd_digits"] > 20 * bad["fd_digits_floor"] and bad["out_of_range"] > 0.1
    # At most the whole training split is available for the floor.
    many = split.train_images.repeat(2, 1, 1, 1)
    assert image_metrics(many, split.held_out_images)["floor_n"] == 1438
    nan = real.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(FluxMatchError, match="NaN or inf"):
        image_metrics(nan, split.held_out_images)
    with pytest.raises(FluxMatchError, match="at least 2"):
        image_metrics(real[:1], split.held_out_images)
