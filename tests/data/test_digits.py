"""The digits data set: units, the fixed split, and labels in DataSource."""

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from fluxmatch.data import DataSource, load_data
from fluxmatch.data.digits import DIGITS_UNITS, HOLDOUT_FRACTION, digits_split, from_pixels, load_digits_images, to_pixels
from fluxmatch.errors import FluxMatchError


@pytest.fixture(scope="module")
def split():
    return digits_split()


def rows_as_set(images, labels):
    return sorted((int(y), x.numpy().tobytes()) for x, y in zip(images, labels))


def test_images_in_model_units():
    images, labels = load_digits_images()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (1797,) and labels.dtype == torch.int64
    assert float(images.min()) == -1.0 and float(images.max()) == 1.0
    assert sorted(labels.unique().tolist()) == list(range(10))
    raw = load_digits()
    assert torch.equal(images[:, 0], torch.from_numpy(raw.images / 8 - 1).float())


def test_pixel_round_trip_is_exact():
    raw = load_digits().images
    assert np.array_equal(to_pixels(from_pixels(raw)), raw)
    as_tensor = torch.from_numpy(raw)
    assert torch.equal(to_pixels(from_pixels(as_tensor)), as_tensor)
    # The units survive a trip through a run's config.json.
    stored = json.loads(json.dumps({"units": DIGITS_UNITS}))["units"]
    assert np.array_equal(to_pixels(load_digits_images()[0][:, 0].numpy(), stored), raw)


def test_to_pixels_clips_and_validates():
    assert to_pixels(torch.tensor([-3.0, -1.0, 0.0, 0.5, 4.0])).tolist() == [0.0, 0.0, 8.0, 12.0, 16.0]
    assert isinstance(to_pixels(np.zeros(3)), np.ndarray)
    with pytest.raises(FluxMatchError, match="NaN or inf"):
        to_pixels(torch.tensor([0.0, float("nan")]))
    with pytest.raises(FluxMatchError, match="positive scale"):
        to_pixels(np.zeros(2), {"offset": 0, "scale": 0, "pixel_range": [0, 1]})
    with pytest.raises(FluxMatchError, match="pixel_range"):
        from_pixels(np.zeros(2), {"offset": 0})


def test_split_is_fixed_stratified_and_disjoint(split):
    assert split.train_images.shape == (1438, 1, 8, 8) and split.held_out_images.shape == (359, 1, 8, 8)
    assert split.train_labels.shape == (1438,) and split.held_out_labels.shape == (359,)
    images, labels = load_digits_images()
    # Together the two parts are the whole set, each image exactly once.
    both = rows_as_set(torch.cat([split.train_images, split.held_out_images]), torch.cat([split.train_labels, split.held_out_labels]))
    assert both == rows_as_set(images, labels)
    counts = torch.bincount(labels, minlength=10)
    held = torch.bincount(split.held_out_labels, minlength=10)
    assert held.tolist() == [int(round(HOLDOUT_FRACTION * int(c))) for c in counts]
    again = digits_split()
    assert torch.equal(again.held_out_images, split.held_out_images) and torch.equal(again.train_labels, split.train_labels)


def test_from_spec_digits(split):
    src = DataSource.from_spec("digits", seed=5)
    assert src.dim == (1, 8, 8) and len(src) == 1438 and src.n_classes == 10 and not src.is_toy
    assert torch.equal(src.data, split.train_images) and torch.equal(src.labels, split.train_labels)
    assert torch.equal(src.held_out, split.held_out_images) and torch.equal(src.held_out_labels, split.held_out_labels)
    assert src.units == DIGITS_UNITS and src.units is not DIGITS_UNITS
    assert "n_classes=10" in repr(src) and "digits" in repr(src)
    # The training seed does not move the split.
    assert torch.equal(DataSource.from_spec("digits", seed=6).held_out, src.held_out)
    assert torch.equal(load_data("digits"), split.train_images)


def test_from_spec_digits_subset_keeps_labels_with_images(split):
    sub = DataSource.from_spec("digits", seed=1, n=200)
    assert sub.data.shape == (200, 1, 8, 8) and sub.labels.shape == (200,)
    assert torch.equal(sub.data, DataSource.from_spec("digits", seed=1, n=200).data)
    assert not torch.equal(sub.data, DataSource.from_spec("digits", seed=2, n=200).data)
    assert set(rows_as_set(sub.data, sub.labels)) <= set(rows_as_set(split.train_images, split.train_labels))
    assert sub.held_out.shape == (359, 1, 8, 8)
    with pytest.raises(FluxMatchError, match="fixed held-out split"):
        DataSource.from_spec("digits", holdout_fraction=0.1)


def test_batch_with_labels_draws_like_batch():
    src = DataSource.from_spec("digits")
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x, y = src.batch_with_labels(500, g1)
    assert torch.equal(x, src.batch(500, g2)) and y.shape == (500,) and y.dtype == torch.int64
    assert torch.equal(g1.get_state(), g2.get_state())
    # A source whose first pixel encodes the row, so each label can be checked against its row.
    data = torch.arange(30.0)[:, None] * torch.ones(1, 4)
    coded = DataSource(data, "coded", labels=torch.arange(30) % 3, n_classes=3, held_out=data[:6], held_out_labels=torch.arange(6) % 3)
    x, y = coded.batch_with_labels(400, torch.Generator().manual_seed(0))
    assert torch.equal(y, x[:, 0].long() % 3)
    h, hy = coded.holdout_with_labels(4, seed=2)
    assert torch.equal(h, coded.holdout(4, seed=2)) and torch.equal(hy, h[:, 0].long() % 3)


def test_holdout_with_labels_matches_holdout():
    src = DataSource.from_spec("digits")
    x, y = src.holdout_with_labels(100, seed=4)
    assert torch.equal(x, src.holdout(100, seed=4)) and y.shape == (100,)
    assert set(rows_as_set(x, y)) <= set(rows_as_set(src.held_out, src.held_out_labels))
    full, labels = src.holdout_with_labels(5000)
    assert full.shape[0] == 359 and torch.equal(labels, src.held_out_labels)


def test_unlabelled_sources_keep_their_draws(tmp_path):
    toy = DataSource.from_spec("ring", n=100)
    assert toy.labels is None and toy.n_classes == 0 and toy.units is None
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    x, y = toy.batch_with_labels(64, g1)
    assert y is None and torch.equal(x, toy.batch(64, g2)) and torch.equal(toy.batch(8, g1), toy.batch(8, g2))
    h, hy = toy.holdout_with_labels(50, seed=1)
    assert hy is None and torch.equal(h, toy.holdout(50, seed=1))

    np.save(tmp_path / "d.npy", np.random.default_rng(0).normal(size=(40, 3)))
    rows = DataSource.from_spec(tmp_path / "d.npy")
    assert rows.labels is None and rows.held_out_labels is None and rows.n_classes == 0 and rows.units is None
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(rows.batch_with_labels(16, g1)[0], rows.batch(16, g2))
    assert rows.holdout_with_labels(3, seed=0)[1] is None


def test_bad_labels():
    data = torch.zeros(5, 2)
    with pytest.raises(FluxMatchError, match="integers"):
        DataSource(data, "x", labels=torch.zeros(5))
    with pytest.raises(FluxMatchError, match=r"shape \(5,\)"):
        DataSource(data, "x", labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(FluxMatchError, match=r"0\.\.2"):
        DataSource(data, "x", labels=torch.tensor([0, 1, 2, 3, 0]), n_classes=3)
    with pytest.raises(FluxMatchError, match="held_out_labels exactly"):
        DataSource(data, "x", labels=torch.zeros(5, dtype=torch.long), held_out=data)
    with pytest.raises(FluxMatchError, match="need labels"):
        DataSource(data, "x", n_classes=3)
    inferred = DataSource(data, "x", labels=np.array([0, 4, 1, 1, 0]))
    assert inferred.n_classes == 5 and inferred.labels.dtype == torch.int64


def test_unknown_spec_names_digits():
    with pytest.raises(FluxMatchError, match="unknown data set 'mnist'.*digits"):
        DataSource.from_spec("mnist")
