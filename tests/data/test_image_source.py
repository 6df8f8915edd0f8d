"""ImageSource: uint8 storage, batches converted per draw, random flips, moments and fingerprints
equal to those of the float32 source the same images used to make."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from fluxmatch.config import DataSpec, preset, resolve
from fluxmatch.data import DataSource
from fluxmatch.data.images import IMAGE_UNITS, ImageSource, image_source, to_model_units
from fluxmatch.errors import FluxMatchError
from fluxmatch.kinds.images import Images


def write_cifar_npz(path, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n)
    np.savez(path, x=x, y=y)
    return x, y


@pytest.fixture
def cifar(tmp_path):
    write_cifar_npz(tmp_path / "cifar.npz", 60)
    return f"cifar10:{tmp_path / 'cifar.npz'}"


def float_copy(source: ImageSource) -> DataSource:
    """The float32 DataSource image_source built before images were kept as uint8."""
    return DataSource(source.data, source.name, held_out=source.held_out, labels=source.labels,
                      held_out_labels=source.held_out_labels, n_classes=source.n_classes, units=IMAGE_UNITS)


def test_a_cifar_sized_source_holds_150_mb_of_uint8(tmp_path):
    write_cifar_npz(tmp_path / "big.npz", 50000)
    source = image_source(f"cifar10:{tmp_path / 'big.npz'}")
    assert source.pixels.dtype == source.held_out_pixels.dtype == torch.uint8
    assert len(source) == 49000 and source.held_out_pixels.shape == (1000, 3, 32, 32) and source.dim == (3, 32, 32)
    tensors = [v for v in vars(source).values() if isinstance(v, torch.Tensor)]
    assert {t.dtype for t in tensors} == {torch.uint8, torch.int64}  # no float copy anywhere
    assert source.nbytes == sum(t.numel() * t.element_size() for t in tensors) == 50000 * (3072 + 8)  # ≈ 154 MB
    batch = source.sample_batch(128, torch.Generator().manual_seed(0))
    assert batch.x.dtype == torch.float32 and batch.x.shape == (128, 3, 32, 32) and batch.labels.shape == (128,)
    assert source.head(4).shape == (4, 3, 32, 32)


def test_without_flips_it_draws_what_the_float_source_draws(cifar):
    source = image_source(cifar, seed=3, holdout=10)
    ref = float_copy(source)
    assert repr(source).startswith("ImageSource(") and source.units == IMAGE_UNITS and source.n_classes == 10
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    assert torch.equal(source.batch(16, g()), ref.batch(16, g()))
    for mine, theirs in zip(source.batch_with_labels(16, g()), ref.batch_with_labels(16, g())):
        assert torch.equal(mine, theirs)
    mine, theirs = source.sample_batch(16, g()), ref.sample_batch(16, g())
    assert torch.equal(mine.x, theirs.x) and torch.equal(mine.labels, theirs.labels)
    for mine, theirs in zip(source.holdout_with_labels(4, seed=2), ref.holdout_with_labels(4, seed=2)):
        assert torch.equal(mine, theirs)
    assert torch.equal(source.head(5), ref.data[:5]) and torch.equal(source.head(500), ref.data)
    assert torch.equal(source.data, to_model_units(source.pixels)) and source.data.dtype == torch.float32


def test_moments_match_a_float_reference(cifar, monkeypatch):
    import fluxmatch.data.images as images

    monkeypatch.setattr(images, "_MOMENT_ROWS", 16)  # several blocks, the last one short
    source = image_source(cifar, holdout=10)
    points = source.data.reshape(len(source), -1).double()
    mean, std = source.moments()
    assert mean.dtype == std.dtype == np.float64 and mean.shape == std.shape == (3072,)
    np.testing.assert_allclose(mean, points.mean(0).numpy(), atol=1e-6)
    np.testing.assert_allclose(std, points.std(0, unbiased=False).numpy(), atol=1e-6)


def test_fingerprint_is_the_float32_sources(cifar, tmp_path, monkeypatch):
    import fluxmatch.data.images as images

    monkeypatch.setattr(images, "_CHUNK_VALUES", 7 * 3072)  # several blocks, the last one short
    source = image_source(cifar, seed=1, holdout=10)
    assert source.fingerprint() == float_copy(source).fingerprint()
    # what image_source built before (its own conversion of the same shuffle): stored runs still validate
    x, y = np.load(tmp_path / "cifar.npz")["x"], np.load(tmp_path / "cifar.npz")["y"]
    order = torch.randperm(60, generator=torch.Generator().manual_seed(1))
    pixels, labels = torch.from_numpy(x), torch.from_numpy(y)
    old = lambda i: pixels[i].to(torch.float32).mul_(IMAGE_UNITS["scale"]).add_(IMAGE_UNITS["offset"])  # noqa: E731
    legacy = DataSource(old(order[10:]), cifar, held_out=old(order[:10]), labels=labels[order[10:]], held_out_labels=labels[order[:10]], n_classes=10, units=IMAGE_UNITS)
    assert source.fingerprint() == legacy.fingerprint()
    assert image_source(cifar, seed=1, holdout=10, hflip=True).fingerprint() == source.fingerprint()  # flips are not data
    assert image_source(cifar, seed=2, holdout=10).fingerprint() != source.fingerprint()
    no_held = image_source(cifar, seed=1, holdout=0)
    assert no_held.held_out is None and no_held.fingerprint() == float_copy(no_held).fingerprint()


def test_hflip_mirrors_about_half_the_drawn_images(cifar):
    plain, flipping = image_source(cifar, holdout=10), image_source(cifar, holdout=10, hflip=True)
    g = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    x, labels = flipping.batch_with_labels(2000, g())
    again = flipping.sample_batch(2000, g())
    assert torch.equal(again.x, x) and torch.equal(again.labels, labels)  # one batch per generator state
    unflipped, same_labels = plain.batch_with_labels(2000, g())  # the same rows: the coins come after the indices
    assert torch.equal(labels, same_labels)
    flipped = (x != unflipped).flatten(1).any(1)
    assert 0.45 < flipped.float().mean() < 0.55
    assert torch.equal(x[flipped], torch.flip(unflipped[flipped], dims=[-1]))
    # the coins are the generator's next draw after the indices
    gen = g()
    index = torch.randint(0, len(plain), (2000,), generator=gen)
    assert torch.equal(flipped, torch.rand(2000, generator=gen) < 0.5) and torch.equal(unflipped, to_model_units(plain.pixels[index]))
    assert not torch.equal(flipping.batch(2000, torch.Generator().manual_seed(12)), x)


def test_held_out_and_head_are_never_flipped(cifar):
    plain, flipping = image_source(cifar, holdout=10), image_source(cifar, holdout=10, hflip=True)
    for seed in range(3):
        for mine, theirs in zip(flipping.holdout_with_labels(8, seed), plain.holdout_with_labels(8, seed)):
            assert torch.equal(mine, theirs)
    assert torch.equal(flipping.held_out, plain.held_out) and torch.equal(flipping.head(10), plain.head(10))


@pytest.mark.parametrize("hflip", [False, True])
def test_part_slices_concatenate_to_the_batch(cifar, hflip):
    source = image_source(cifar, holdout=10, hflip=hflip)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    whole = source.sample_batch(10, g())
    for world in (1, 2, 3):
        parts = [source.sample_batch(10, g(), part=(rank, world)) for rank in range(world)]
        assert [p.x.shape[0] for p in parts] == [10 // world + (r >= world - 10 % world) for r in range(world)]
        assert torch.equal(torch.cat([p.x for p in parts]), whole.x) and torch.equal(torch.cat([p.labels for p in parts]), whole.labels)
    with pytest.raises(FluxMatchError, match="part"):
        source.sample_batch(10, g(), part=(3, 3))


def test_unlabelled_images_and_bad_pixels(tmp_path):
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "faces.npz", x=rng.integers(0, 256, (12, 64, 64, 3), dtype=np.uint8))
    source = image_source(f"celeba64:{tmp_path / 'faces.npz'}", hflip=True)
    assert source.labels is None and source.n_classes == 0 and len(source) == 11 and source.dim == (3, 64, 64)
    x, labels = source.batch_with_labels(6, torch.Generator().manual_seed(0))
    assert labels is None and x.shape == (6, 3, 64, 64) and source.sample_batch(6).labels is None
    assert source.holdout_with_labels(5)[1] is None and source.holdout(5).shape == (1, 3, 64, 64)
    with pytest.raises(FluxMatchError, match="uint8"):
        ImageSource(torch.zeros(4, 3, 8, 8), "floats")
    with pytest.raises(FluxMatchError, match="held-out"):
        ImageSource(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), "x", held_out_pixels=torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(FluxMatchError, match="held_out_labels"):
        ImageSource(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), "x", labels=[0, 1, 0, 1], held_out_pixels=torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


def data_spec(spec, augment=None):
    return DataSpec(spec=spec, augment=augment)


def test_the_images_kind_loads_uint8_sources_and_their_augmentation(cifar):
    kind = Images()
    plain, flipping = kind.load(data_spec(cifar), 0), kind.load(data_spec(cifar, "hflip"), 0)
    assert isinstance(plain, ImageSource) and not plain.hflip and flipping.hflip and flipping.spec == cifar
    assert plain.fingerprint() == flipping.fingerprint() == DataSource.from_spec(cifar).fingerprint()
    with pytest.raises(FluxMatchError, match="digit"):
        kind.load(data_spec("digits", "hflip"), 0)
    with pytest.raises(FluxMatchError, match="unknown augmentation"):
        kind.load(data_spec(cifar, "rotate"), 0)
    digits = preset("digits")
    with pytest.raises(FluxMatchError, match="mirrored digit"):  # refused when the run spec is checked, before loading
        resolve(replace(digits, data=replace(digits.data, augment="hflip")))
