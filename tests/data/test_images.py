"""Image data read from user paths: CIFAR-10 binary batches, image folders, arrays, configs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fluxmatch.data import DataSource
from fluxmatch.data.images import CIFAR_TRAIN_FILES, IMAGE_UNITS, load_cifar10, load_image_folder
from fluxmatch.errors import FluxMatchError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def fake_cifar(folder: Path, per_file: int = 4) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, labels = [], []
    for name in (*CIFAR_TRAIN_FILES, "test_batch.bin"):
        x = rng.integers(0, 256, (per_file, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, per_file, dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([y[:, None], x.reshape(per_file, -1)], 1).tobytes())
        if name != "test_batch.bin":
            images.append(x)
            labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def test_cifar_binary_batches_load_in_chw_order(tmp_path):
    x, y = fake_cifar(tmp_path / "cifar-10-batches-bin")
    images, labels = load_cifar10(tmp_path)  # the parent folder works too
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8
    assert np.array_equal(images.numpy(), x) and np.array_equal(labels.numpy(), y)
    test_images, _ = load_cifar10(tmp_path / "cifar-10-batches-bin", "test")
    assert test_images.shape == (4, 3, 32, 32)


def test_missing_or_pickled_cifar_is_named(tmp_path):
    with pytest.raises(FluxMatchError, match="data_batch_1.bin"):
        load_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(FluxMatchError, match="pickle"):
        load_cifar10(tmp_path)
    bad = tmp_path / "bin"
    bad.mkdir()
    for name in (*CIFAR_TRAIN_FILES, "test_batch.bin"):
        (bad / name).write_bytes(b"\x00" * 100)
    with pytest.raises(FluxMatchError, match="not a CIFAR-10 binary batch"):
        load_cifar10(bad)


def test_image_folder_is_cropped_and_resized(tmp_path):
    from PIL import Image

    for i in range(3):
        pixels = np.full((218, 178, 3), 40 * i, dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i:06d}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_image_folder(tmp_path, 64)
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.uint8
    assert int(images[2].float().mean().round()) == 80  # a flat image stays flat
    (tmp_path / "broken.jpg").write_bytes(b"garbage")
    with pytest.raises(FluxMatchError, match="broken.jpg"):
        load_image_folder(tmp_path, 64)
    with pytest.raises(FluxMatchError, match="no images"):
        load_image_folder(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else tmp_path, 64)


def test_array_fast_path_and_source_units(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8)
    np.savez(tmp_path / "celeba.npz", x=x)
    source = DataSource.from_spec(f"celeba64:{tmp_path / 'celeba.npz'}", seed=0)
    assert source.units == IMAGE_UNITS and source.labels is None
    assert source.data.shape[1:] == (3, 64, 64) and source.data.shape[0] + source.held_out.shape[0] == 30
    pixels = (source.data - IMAGE_UNITS["offset"]) / IMAGE_UNITS["scale"]
    assert torch.allclose(pixels, pixels.round(), atol=1e-3) and pixels.min() >= 0 and pixels.max() <= 255


def test_cifar_source_keeps_labels(tmp_path):
    fake_cifar(tmp_path / "c")
    from fluxmatch.data.images import image_source

    source = image_source(f"cifar10:{tmp_path / 'c'}", holdout=5)
    assert source.n_classes == 10 and source.labels.shape == (15,) and source.held_out_labels.shape == (5,)
    with pytest.raises(FluxMatchError, match="path you give"):
        DataSource.from_spec("cifar10:")


@pytest.mark.parametrize("name", ["digits", "cifar10", "celeba64"])
def test_configs_name_known_train_options(name):
    from fluxmatch.cli import _build_parser

    config = json.loads((CONFIGS / f"{name}.json").read_text())
    known = {a.dest for a in _build_parser().train_parser._actions}
    assert {k.replace("-", "_") for k in config if not k.startswith("_")} <= known
    assert config["unet"] == name
