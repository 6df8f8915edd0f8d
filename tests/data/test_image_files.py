"""Image data read from user paths: CIFAR-10 batches (binary and pickled), image folders, arrays, configs.

Everything here is exact (byte-level round trips, fixed seeds): no Monte Carlo tolerance is needed.
"""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fluxmatch.data import DataSource
from fluxmatch.data.images import (
    CIFAR_PY_TRAIN_FILES,
    CIFAR_TRAIN_FILES,
    IMAGE_UNITS,
    image_source,
    load_cifar10,
    load_image_folder,
)
from fluxmatch.errors import FluxMatchError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def random_batches(n_files: int, per_file: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """n_files batches of (per_file, 3, 32, 32) uint8 images and (per_file,) uint8 labels."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (per_file, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, per_file, dtype=np.uint8)) for _ in range(n_files)]


def fake_cifar(folder: Path, per_file: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The binary release in miniature (per_file records a file instead of 10000); returns the
    training images and labels written."""
    folder.mkdir(parents=True)
    batches = random_batches(6, per_file)
    for name, (x, y) in zip((*CIFAR_TRAIN_FILES, "test_batch.bin"), batches):
        (folder / name).write_bytes(np.concatenate([y[:, None], x.reshape(per_file, -1)], 1).tobytes())
    return np.concatenate([b[0] for b in batches[:5]]), np.concatenate([b[1] for b in batches[:5]])


def fake_cifar_py(folder: Path, per_file: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The Python release in miniature: dicts of bytes keys, pickled with protocol 2 and the numpy 1
    module name numpy.core.multiarray, as in the real files."""
    folder.mkdir(parents=True)
    batches = random_batches(6, per_file, seed=1)
    for name, (x, y) in zip((*CIFAR_PY_TRAIN_FILES, "test_batch"), batches):
        batch = {b"batch_label": b"fake", b"labels": [int(v) for v in y], b"data": x.reshape(per_file, -1), b"filenames": [b"a.png"] * per_file}
        blob = pickle.dumps(batch, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(blob)
    return np.concatenate([b[0] for b in batches[:5]]), np.concatenate([b[1] for b in batches[:5]])


def test_cifar_binary_batches_load_in_chw_order(tmp_path):
    x, y = fake_cifar(tmp_path / "cifar-10-batches-bin")
    images, labels = load_cifar10(tmp_path)  # the parent folder works too
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert np.array_equal(images.numpy(), x) and np.array_equal(labels.numpy(), y)
    # CHW: the first 1024 pixel bytes of a record are the red plane, row-major.
    record = (tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin").read_bytes()[: 1 + 3072]
    assert images[0, 0, 0, 1] == record[2] and images[0, 1, 0, 0] == record[1 + 1024] and labels[0] == record[0]
    test_images, _ = load_cifar10(tmp_path / "cifar-10-batches-bin", "test")
    assert test_images.shape == (4, 3, 32, 32)


def test_cifar_python_release_loads_through_the_restricted_unpickler(tmp_path):
    x, y = fake_cifar_py(tmp_path / "cifar-10-batches-py")
    images, labels = load_cifar10(tmp_path)
    assert images.shape == (15, 3, 32, 32) and np.array_equal(images.numpy(), x) and np.array_equal(labels.numpy(), y)
    assert load_cifar10(tmp_path / "cifar-10-batches-py", "test")[0].shape == (3, 3, 32, 32)


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_before_it_runs(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    fake_cifar_py(folder)
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Exploit(marker), b"labels": []}, protocol=2))
    with pytest.raises(FluxMatchError, match=r"data_batch_3 .*(system|refusing).*binary version"):
        load_cifar10(folder)
    assert not marker.exists()
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072)), b"labels": [0, 1]}, protocol=2))
    with pytest.raises(FluxMatchError, match=r"uint8 array"):  # float64 arrays are not CIFAR batches
        load_cifar10(folder)


def test_missing_incomplete_or_malformed_cifar_is_named(tmp_path):
    with pytest.raises(FluxMatchError, match=r"data_batch_1\.bin.*test_batch\.bin.*cs\.toronto\.edu"):
        load_cifar10(tmp_path / "nowhere")
    (tmp_path / "cifar-10-batches-py").mkdir()  # an empty folder is not a copy of either release
    with pytest.raises(FluxMatchError, match=r"data_batch_1\.bin"):
        load_cifar10(tmp_path)
    fake_cifar(tmp_path / "partial")
    (tmp_path / "partial" / "data_batch_4.bin").unlink()
    with pytest.raises(FluxMatchError, match=r"incomplete: missing data_batch_4\.bin"):
        load_cifar10(tmp_path / "partial")
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in (*CIFAR_TRAIN_FILES, "test_batch.bin"):
        (bad / name).write_bytes(b"\x00" * 100)
    with pytest.raises(FluxMatchError, match="not a CIFAR-10 binary batch"):
        load_cifar10(bad)
    with pytest.raises(FluxMatchError, match="split"):
        load_cifar10(tmp_path / "partial", "validation")


def test_cifar_npz_in_either_layout(tmp_path):
    (x, y), = random_batches(1, 5)
    np.savez(tmp_path / "hwc.npz", x=x.transpose(0, 2, 3, 1), y=y)
    np.savez(tmp_path / "chw.npz", x=x, y=y)
    for name in ("hwc.npz", "chw.npz"):
        images, labels = load_cifar10(tmp_path / name)
        assert np.array_equal(images.numpy(), x) and np.array_equal(labels.numpy(), y)
    np.savez(tmp_path / "nolabels.npz", x=x)
    with pytest.raises(FluxMatchError, match="'y'"):
        load_cifar10(tmp_path / "nolabels.npz")


def test_image_folder_is_cropped_and_resized(tmp_path):
    from PIL import Image

    # 178×218 like CelebA: a bright 140×140 centre square on a black border. The centre crop keeps
    # exactly the square, so the resized image is uniformly bright; a crop that missed the centre
    # or kept border would pull the mean down.
    for i in range(3):
        pixels = np.zeros((218, 178, 3), dtype=np.uint8)
        pixels[39:179, 19:159] = 40 * (i + 1)
        Image.fromarray(pixels).save(tmp_path / f"{i:06d}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_image_folder(tmp_path, 64)
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.uint8
    assert torch.equal(images[2], torch.full((3, 64, 64), 120, dtype=torch.uint8))
    assert load_image_folder(tmp_path, 32, limit=2).shape == (2, 3, 32, 32)
    (tmp_path / "broken.jpg").write_bytes(b"garbage")
    with pytest.raises(FluxMatchError, match="broken.jpg"):
        load_image_folder(tmp_path, 64)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FluxMatchError, match="no images"):
        load_image_folder(tmp_path / "empty", 64)
    with pytest.raises(FluxMatchError, match="not found"):
        load_image_folder(tmp_path / "missing", 64)


def test_array_fast_path(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    np.save(tmp_path / "faces.npy", x)
    np.savez(tmp_path / "faces.npz", x=x)
    for name in ("faces.npy", "faces.npz"):
        assert np.array_equal(load_image_folder(tmp_path / name, 64).numpy(), x.transpose(0, 3, 1, 2))
    assert load_image_folder(tmp_path / "faces.npy", 64, limit=4).shape == (4, 3, 64, 64)
    with pytest.raises(FluxMatchError, match="expected 32×32"):
        load_image_folder(tmp_path / "faces.npy", 32)
    np.save(tmp_path / "floats.npy", x.astype(np.float32))
    with pytest.raises(FluxMatchError, match="uint8"):
        load_image_folder(tmp_path / "floats.npy", 64)


def test_celeba_source_units_round_trip_and_disjoint_split(tmp_path):
    rng = np.random.default_rng(3)
    # Row i's first pixel is i, so every image is identifiable after the shuffle.
    x = rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(30)
    np.savez(tmp_path / "celeba.npz", x=x)
    source = DataSource.from_spec(f"celeba64:{tmp_path / 'celeba.npz'}", seed=0)
    assert source.units == IMAGE_UNITS and source.labels is None and source.n_classes == 0
    assert source.data.shape == (27, 3, 64, 64) and source.held_out.shape == (3, 3, 64, 64)
    assert source.data.min() >= -1 and source.data.max() <= 1
    pixels = torch.cat([source.data, source.held_out]) / IMAGE_UNITS["scale"] - IMAGE_UNITS["offset"] / IMAGE_UNITS["scale"]
    assert torch.allclose(pixels, pixels.round(), atol=1e-3)  # float32 rounding only
    ids = pixels[:, 0, 0, 0].round().long()
    assert sorted(ids.tolist()) == list(range(30))  # every image once: train and held-out disjoint
    restored = pixels.round().to(torch.uint8)[torch.argsort(ids)]
    assert torch.equal(restored, torch.from_numpy(x).permute(0, 3, 1, 2))
    other = image_source(f"celeba64:{tmp_path / 'celeba.npz'}", seed=1)
    assert not torch.equal(other.held_out, source.held_out)  # the seed picks the split
    with pytest.raises(FluxMatchError, match="limit"):
        image_source(f"celeba64:{tmp_path / 'celeba.npz'}", limit=0)


def test_cifar_source_keeps_labels(tmp_path):
    x, y = fake_cifar(tmp_path / "c")
    source = image_source(f"cifar10:{tmp_path / 'c'}", holdout=5)
    assert source.n_classes == 10 and source.labels.shape == (15,) and source.held_out_labels.shape == (5,)
    # each image keeps its own label through the shuffle
    pixels = torch.round((source.data - IMAGE_UNITS["offset"]) / IMAGE_UNITS["scale"]).to(torch.uint8).numpy()
    for image, label in zip(pixels, source.labels.numpy()):
        match = np.flatnonzero((x == image).all(axis=(1, 2, 3)))
        assert len(match) == 1 and y[match[0]] == label
    assert len(image_source(f"cifar10:{tmp_path / 'c'}", limit=8, holdout=2)) == 6
    with pytest.raises(FluxMatchError, match="path you give"):
        DataSource.from_spec("cifar10:")
    with pytest.raises(FluxMatchError, match="nothing to train on"):
        image_source(f"cifar10:{tmp_path / 'c'}", holdout=20)


@pytest.mark.parametrize("name", ["digits", "cifar10", "celeba64"])
def test_configs_are_the_presets_as_specs(name):
    from fluxmatch.config import load_spec, preset, resolve
    from fluxmatch.fields.unet import UNET_PRESETS

    spec, flat = load_spec(CONFIGS / f"{name}.json")
    assert flat == {} and spec == resolve(preset(name))
    assert spec.field.preset == name and name in UNET_PRESETS and spec.data.spec.split(":")[0] == name


def test_paper_configs_use_the_edm_sizes():
    from fluxmatch.fields.unet import UNET_PRESETS

    # EDM (Karras et al. 2022) train.py / README: DDPM++ at 128 channels, 4 blocks, attention at 16×16;
    # CIFAR-10 cres 2,2,2, dropout 0.13, batch 512, lr 1e-3; 64×64 cres 1,2,2,2, dropout 0.05, batch 256, lr 2e-4.
    cifar = UNET_PRESETS["cifar10"]
    assert (cifar["channels"], tuple(cifar["channel_mult"]), cifar["num_blocks"], tuple(cifar["attn_resolutions"]), cifar["dropout"]) == (128, (2, 2, 2), 4, (16,), 0.13)
    celeba = UNET_PRESETS["celeba64"]
    assert (celeba["channels"], tuple(celeba["channel_mult"]), celeba["num_blocks"], tuple(celeba["attn_resolutions"]), celeba["dropout"]) == (128, (1, 2, 2, 2), 4, (16,), 0.05)
    c10 = json.loads((CONFIGS / "cifar10.json").read_text())
    c64 = json.loads((CONFIGS / "celeba64.json").read_text())
    assert (c10["train"]["batch_size"], c10["train"]["lr"], c10["sampler"]["steps"]) == (512, 1e-3, 18)
    assert (c64["train"]["batch_size"], c64["train"]["lr"], c64["sampler"]["steps"]) == (256, 2e-4, 40)
