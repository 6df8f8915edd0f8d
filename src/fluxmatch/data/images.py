"""Image data sets read from a path the user gives: CIFAR-10 and CelebA-64 (never downloaded).

Spec strings for :meth:`fluxmatch.data.DataSource.from_spec` (and ``fluxmatch train --data``):

- ``cifar10:PATH``: the official *binary* release, PATH the folder ``cifar-10-batches-bin``
  (or its parent) with ``data_batch_1.bin`` … ``data_batch_5.bin`` and ``test_batch.bin``
  (https://www.cs.toronto.edu/~kriz/cifar.html, "CIFAR-10 binary version"), or an ``.npz``
  with ``x`` (N, 32, 32, 3) or (N, 3, 32, 32) uint8 and ``y`` (N,) labels. The Python (pickle)
  release is refused: unpickling runs code.
- ``celeba64:PATH``: a folder of face images (e.g. ``img_align_celeba/*.jpg``, 178×218),
  centre-cropped to 140×140 and resized to 64×64 (the usual CelebA-64 preprocessing), or an
  ``.npy``/``.npz`` array (N, 64, 64, 3) uint8 prepared that way.

Images come back in model units x = pixels/127.5 − 1 ∈ [−1, 1], shape (N, 3, H, W), with
:data:`IMAGE_UNITS` recording the map back to 0..255.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import FluxMatchError

IMAGE_UNITS = {"offset": -1.0, "scale": 1 / 127.5, "pixel_range": [0, 255], "model_range": [-1, 1]}
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch.bin"
_CIFAR_RECORD = 1 + 3 * 32 * 32
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _cifar_dir(path: Path) -> Path:
    for candidate in (path, path / "cifar-10-batches-bin"):
        if (candidate / CIFAR_TRAIN_FILES[0]).is_file():
            return candidate
    if (path / "cifar-10-batches-py").is_dir() or (path / "data_batch_1").is_file():
        raise FluxMatchError(f"{path} holds the Python (pickle) release of CIFAR-10, which fluxmatch does not unpickle: use the binary version (cifar-10-batches-bin)")
    raise FluxMatchError(
        f"CIFAR-10 not found at {path}: expected {', '.join(CIFAR_TRAIN_FILES)} and {CIFAR_TEST_FILE} "
        "(the 'CIFAR-10 binary version' from https://www.cs.toronto.edu/~kriz/cifar.html, unpacked), or an .npz with x and y"
    )


def _read_cifar_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise FluxMatchError(f"{path} is not a CIFAR-10 binary batch: {raw.size} bytes is not a multiple of {_CIFAR_RECORD}")
    records = raw.reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise FluxMatchError(f"{path} is not a CIFAR-10 binary batch: label {labels.max()} > 9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _channels_first(x: np.ndarray, name: str) -> np.ndarray:
    if x.ndim != 4:
        raise FluxMatchError(f"{name}: images must have shape (N, H, W, 3) or (N, 3, H, W), got {x.shape}")
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.transpose(0, 3, 1, 2)
    if x.shape[1] != 3:
        raise FluxMatchError(f"{name}: images must have 3 channels, got shape {x.shape}")
    if x.dtype != np.uint8:
        raise FluxMatchError(f"{name}: images must be uint8 pixels 0..255, got {x.dtype}")
    return np.ascontiguousarray(x)


def _load_npz(path: Path, need_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive:
                raise FluxMatchError(f"{path}: expected an array named 'x' (and 'y' for labels), found {', '.join(archive.files)}")
            x = archive["x"]
            y = archive["y"].astype(np.int64) if "y" in archive else None
    except (OSError, ValueError) as err:
        raise FluxMatchError(f"{path}: not a readable .npz file ({err})") from None
    if need_labels and y is None:
        raise FluxMatchError(f"{path}: expected labels in an array named 'y'")
    return _channels_first(x, str(path)), y


def load_cifar10(path, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 images (N, 3, 32, 32) uint8 and labels (N,) int64 from the binary release or an .npz."""
    path = Path(os.fspath(path)).expanduser()
    if split not in ("train", "test"):
        raise FluxMatchError(f"split must be 'train' or 'test', got {split!r}")
    if path.suffix == ".npz":
        if not path.is_file():
            raise FluxMatchError(f"CIFAR-10 file not found: {path}")
        x, y = _load_npz(path, need_labels=True)
    else:
        folder = _cifar_dir(path)
        names = CIFAR_TRAIN_FILES if split == "train" else (CIFAR_TEST_FILE,)
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise FluxMatchError(f"CIFAR-10 in {folder} is incomplete: missing {', '.join(missing)}")
        parts = [_read_cifar_file(folder / n) for n in names]
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return torch.from_numpy(x), torch.from_numpy(y)


def _center_crop_resize(image, size: int, crop: int | None):
    from PIL import Image

    w, h = image.size
    side = min(w, h) if crop is None else min(crop, w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image.resize((size, size), Image.Resampling.BICUBIC)


def load_image_folder(path, size: int = 64, crop: int | None = 140, limit: int | None = None) -> torch.Tensor:
    """Images (N, 3, size, size) uint8 from a folder (centre crop of ``crop`` pixels, then resize)
    or from an .npy/.npz array already at that size."""
    path = Path(os.fspath(path)).expanduser()
    if path.suffix in (".npy", ".npz"):
        if not path.is_file():
            raise FluxMatchError(f"image array not found: {path}")
        if path.suffix == ".npz":
            x, _ = _load_npz(path, need_labels=False)
        else:
            x = _channels_first(np.load(path, allow_pickle=False), str(path))
        if x.shape[2:] != (size, size):
            raise FluxMatchError(f"{path}: images are {x.shape[2]}×{x.shape[3]}, expected {size}×{size}")
        return torch.from_numpy(x[:limit] if limit else x)
    if not path.is_dir():
        raise FluxMatchError(f"image folder not found: {path} (give a folder of .jpg/.png images, e.g. CelebA's img_align_celeba, or an .npy/.npz array)")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit:
        files = files[:limit]
    if not files:
        raise FluxMatchError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(files), 3, size, size), dtype=np.uint8)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as image:
                out[i] = np.asarray(_center_crop_resize(image.convert("RGB"), size, crop)).transpose(2, 0, 1)
        except (OSError, UnidentifiedImageError) as err:
            raise FluxMatchError(f"cannot read image {file}: {err}") from None
    return torch.from_numpy(out)


IMAGE_SETS = ("cifar10", "celeba64")


def parse_image_spec(spec: str) -> tuple[str, str] | None:
    """("cifar10" | "celeba64", path) for a spec like ``cifar10:/data/cifar``, else None."""
    name, sep, path = str(spec).partition(":")
    if not sep or name not in IMAGE_SETS:
        return None
    if not path:
        raise FluxMatchError(f"{name} is read from a path you give: --data {name}:/path/to/data (nothing is downloaded)")
    return name, path


def image_source(spec: str, seed: int = 0, holdout: int | None = None, limit: int | None = None):
    """A :class:`~fluxmatch.data.DataSource` of CIFAR-10 or CelebA-64 in model units [−1, 1].

    The held-out split is ``holdout`` random images (fixed by ``seed``; default min(1000, N/10));
    CIFAR-10 keeps its labels.
    """
    from . import DataSource

    parsed = parse_image_spec(spec)
    if parsed is None:
        raise FluxMatchError(f"not an image data spec: {spec!r} (expected cifar10:PATH or celeba64:PATH)")
    name, path = parsed
    if name == "cifar10":
        pixels, labels = load_cifar10(path, "train")
    else:
        pixels, labels = load_image_folder(path, 64, limit=limit), None
    if limit:
        pixels = pixels[:limit]
        labels = None if labels is None else labels[:limit]
    n = pixels.shape[0]
    holdout = min(1000, max(1, n // 10)) if holdout is None else int(holdout)
    if n <= holdout:
        raise FluxMatchError(f"{spec}: {n} images leave nothing to train on after holding out {holdout}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    images = pixels.float() * IMAGE_UNITS["scale"] + IMAGE_UNITS["offset"]
    train, held = order[holdout:], order[:holdout]
    return DataSource(
        images[train], spec, held_out=images[held],
        labels=None if labels is None else labels[train], held_out_labels=None if labels is None else labels[held],
        n_classes=10 if labels is not None else None, units=IMAGE_UNITS,
    )
