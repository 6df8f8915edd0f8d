"""Image data sets read from a path the user gives: CIFAR-10 and CelebA-64 (never downloaded).

Spec strings for :meth:`fluxmatch.data.DataSource.from_spec` (and ``fluxmatch train --data``):

- ``cifar10:PATH``: the official *binary* release, PATH the folder ``cifar-10-batches-bin``
  (or its parent) with ``data_batch_1.bin`` … ``data_batch_5.bin`` and ``test_batch.bin``
  (https://www.cs.toronto.edu/~kriz/cifar.html, "CIFAR-10 binary version"); the *Python*
  release ``cifar-10-batches-py`` (``data_batch_1`` … ``data_batch_5``, ``test_batch``); or an
  ``.npz`` with ``x`` (N, 32, 32, 3) or (N, 3, 32, 32) uint8 and ``y`` (N,) labels.
  The Python release is a pickle, and unpickling can run arbitrary code, so it is read with an
  unpickler that can build nothing but dicts, lists, bytes and numpy arrays (see
  :class:`_ArrayOnlyUnpickler`): anything else in the file is refused before it runs.
- ``celeba64:PATH``: a folder of face images (e.g. ``img_align_celeba/*.jpg``, 178×218),
  centre-cropped to 140×140 and resized to 64×64 (the usual CelebA-64 preprocessing), or an
  ``.npy``/``.npz`` array (N, 64, 64, 3) uint8 prepared that way.

Images come back in model units x = pixels/127.5 − 1 ∈ [−1, 1], shape (N, 3, H, W), with
:data:`IMAGE_UNITS` recording the map back to 0..255. :func:`image_source` keeps them as uint8
pixels in an :class:`ImageSource` (CIFAR-10: 150 MB, not the 600 MB of float32) and converts
only the rows a batch, a held-out sample or a statistic reads.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import FluxMatchError
from . import Batch, DataSource, _derived_seed, _generator, _subset_index, _take, part_rows
from .toy import _check_count

IMAGE_UNITS = {"offset": -1.0, "scale": 1 / 127.5, "pixel_range": [0, 255], "model_range": [-1, 1]}
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch.bin"
CIFAR_PY_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_PY_TEST_FILE = "test_batch"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_CIFAR_PIXELS = 3 * 32 * 32
_CIFAR_RECORD = 1 + _CIFAR_PIXELS
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _cifar_dir(path: Path) -> tuple[Path, str]:
    """The folder holding the CIFAR-10 batches and its release: "bin" or "py"."""
    for kind, folder_name, first in (("bin", "cifar-10-batches-bin", CIFAR_TRAIN_FILES[0]), ("py", "cifar-10-batches-py", CIFAR_PY_TRAIN_FILES[0])):
        for candidate in (path, path / folder_name):
            if (candidate / first).is_file():
                return candidate, kind
    raise FluxMatchError(
        f"CIFAR-10 not found at {path}: expected {', '.join(CIFAR_TRAIN_FILES)} and {CIFAR_TEST_FILE} "
        f"(the 'CIFAR-10 binary version' from {CIFAR_URL}, unpacked: the folder cifar-10-batches-bin or its parent), "
        "the Python version's cifar-10-batches-py, or an .npz with x and y; nothing is downloaded"
    )


def _read_cifar_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch: records of 1 label byte and 3072 pixel bytes (1024 red, 1024 green,
    1024 blue, each row-major 32×32). Returns images (n, 3, 32, 32) uint8, labels (n,) int64."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise FluxMatchError(f"{path} is not a CIFAR-10 binary batch: {raw.size} bytes is not a multiple of {_CIFAR_RECORD}")
    records = raw.reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise FluxMatchError(f"{path} is not a CIFAR-10 binary batch: label {labels.max()} > 9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What Python 3 pickles of ``bytes`` call (``_codecs.encode(text, "latin1")``), and nothing more."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode is allowed only as text→latin1 bytes, got encoding {encoding!r}")
    return text.encode("latin1")


# The only callables a CIFAR-10 Python batch needs: numpy's array reconstruction (under its
# numpy 1 and numpy 2 module names) and, in files re-pickled by Python 3, bytes from latin-1 text.
_RECONSTRUCT = np.empty(0, np.uint8).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` resolves only :data:`_ALLOWED_GLOBALS`, so a pickle can
    build dicts, lists, numbers, strings, bytes and numpy arrays but call nothing else (no
    ``os.system``, no ``eval``, no imports); persistent ids are refused by the base class."""

    def find_class(self, module: str, name: str):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch holds only numpy arrays and lists")
        return allowed


def _read_cifar_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One Python-release batch (a pickled dict with ``data`` (n, 3072) uint8 in the binary
    release's channel order and ``labels``, n ints) read with :class:`_ArrayOnlyUnpickler`.
    Returns images (n, 3, 32, 32) uint8, labels (n,) int64."""
    hint = f"use the binary version (cifar-10-batches-bin) from {CIFAR_URL}"
    try:
        with open(path, "rb") as handle:
            batch = _ArrayOnlyUnpickler(handle, encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise FluxMatchError(f"{path} is not a plain CIFAR-10 batch ({err}); {hint}") from None
    except (OSError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise FluxMatchError(f"{path} is not a readable CIFAR-10 batch ({type(err).__name__}: {err}); {hint}") from None
    if not isinstance(batch, dict):
        raise FluxMatchError(f"{path} is not a CIFAR-10 batch: expected a dict, got {type(batch).__name__}; {hint}")
    entries = {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in batch.items()}
    data, labels = entries.get("data"), entries.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
        raise FluxMatchError(f"{path} is not a CIFAR-10 batch: 'data' must be a (n, {_CIFAR_PIXELS}) uint8 array; {hint}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise FluxMatchError(f"{path} is not a CIFAR-10 batch: 'labels' must be a list of integers; {hint}") from None
    if labels.shape != (data.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise FluxMatchError(f"{path} is not a CIFAR-10 batch: expected {data.shape[0]} labels in 0..9; {hint}")
    return data.reshape(-1, 3, 32, 32), labels


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
    """CIFAR-10 from the user's copy (nothing is downloaded).

    Args:
        path: the folder ``cifar-10-batches-bin`` or ``cifar-10-batches-py``, or the folder
            holding one of them, or an ``.npz`` with ``x`` (N, 32, 32, 3) or (N, 3, 32, 32)
            uint8 and ``y`` (N,) labels (the .npz is one split; ``split`` is ignored).
        split: "train" (``data_batch_1`` … ``5``, 50000 images) or "test" (``test_batch``, 10000).

    Returns:
        images (N, 3, 32, 32) uint8 pixels 0..255 (channels R, G, B) and labels (N,) int64 in 0..9.

    Raises:
        FluxMatchError: a missing or incomplete copy (naming the files expected and where to get
            them), a malformed batch, or a pickle that tries to build anything but arrays.
    """
    path = Path(os.fspath(path)).expanduser()
    if split not in ("train", "test"):
        raise FluxMatchError(f"split must be 'train' or 'test', got {split!r}")
    if path.suffix == ".npz":
        if not path.is_file():
            raise FluxMatchError(f"CIFAR-10 file not found: {path}")
        x, y = _load_npz(path, need_labels=True)
        if x.shape[2:] != (32, 32):
            raise FluxMatchError(f"{path}: CIFAR-10 images are 32×32, got {x.shape[2]}×{x.shape[3]}")
        if y.shape != (x.shape[0],):
            raise FluxMatchError(f"{path}: 'y' must hold one label per image, shape ({x.shape[0]},), got {y.shape}")
    else:
        folder, kind = _cifar_dir(path)
        if kind == "bin":
            names, read = (CIFAR_TRAIN_FILES if split == "train" else (CIFAR_TEST_FILE,)), _read_cifar_file
        else:
            names, read = (CIFAR_PY_TRAIN_FILES if split == "train" else (CIFAR_PY_TEST_FILE,)), _read_cifar_pickle
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise FluxMatchError(f"CIFAR-10 in {folder} is incomplete: missing {', '.join(missing)} (re-download the archive from {CIFAR_URL} and unpack it)")
        parts = [read(folder / n) for n in names]
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return torch.from_numpy(x), torch.from_numpy(y)


def _check_limit(limit) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise FluxMatchError(f"limit must be a positive integer number of images, got {limit!r}")
    return int(limit)


def _center_crop_resize(image, size: int, crop: int | None):
    """A PIL image cut to its central ``crop``×``crop`` square (the largest square if None, or
    if the image is smaller), then resized to ``size``×``size`` with bicubic interpolation."""
    from PIL import Image

    w, h = image.size
    side = min(w, h) if crop is None else min(crop, w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image.resize((size, size), Image.Resampling.BICUBIC)


def load_image_folder(path, size: int = 64, crop: int | None = 140, limit: int | None = None) -> torch.Tensor:
    """RGB images from a folder of image files, or from an array of images already prepared.

    Folder: every ``.jpg/.jpeg/.png/.bmp/.webp`` file, in sorted name order, converted to RGB,
    cut to its central ``crop``×``crop`` pixels and resized (bicubic) to ``size``×``size``.
    The defaults are the usual CelebA-64 preprocessing: the 178×218 aligned faces of
    ``img_align_celeba`` cropped to the central 140×140 square, then resized to 64×64.
    ``crop=None`` takes the largest central square instead. Decoding the 202,599 CelebA files
    takes minutes; save the result once with ``np.save("celeba64.npy", x.permute(0, 2, 3, 1).numpy())``
    and pass that file afterwards.

    Array: an ``.npy``, or an ``.npz`` with ``x``, of shape (N, size, size, 3) or (N, 3, size, size)
    uint8, used as it is (no crop or resize).

    Args:
        path: the folder or the array file.
        size: output side in pixels.
        crop: side of the central square cut before resizing, in pixels of the source image.
        limit: keep only the first ``limit`` images (files in sorted order, or array rows).

    Returns:
        (N, 3, size, size) uint8 pixels 0..255.

    Raises:
        FluxMatchError: missing path, a folder without images, a file Pillow cannot read (named),
            or an array of the wrong shape or dtype.
    """
    limit = _check_limit(limit)
    path = Path(os.fspath(path)).expanduser()
    if path.suffix in (".npy", ".npz"):
        if not path.is_file():
            raise FluxMatchError(f"image array not found: {path}")
        if path.suffix == ".npz":
            x, _ = _load_npz(path, need_labels=False)
        else:
            try:
                array = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise FluxMatchError(f"{path}: not a readable .npy file ({err})") from None
            x = _channels_first(array, str(path))
        if x.shape[2:] != (size, size):
            raise FluxMatchError(f"{path}: images are {x.shape[2]}×{x.shape[3]}, expected {size}×{size}")
        return torch.from_numpy(x[:limit])
    if not path.is_dir():
        raise FluxMatchError(f"image folder not found: {path} (give a folder of .jpg/.png images, e.g. CelebA's img_align_celeba, or an .npy/.npz array)")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())[:limit]
    if not files:
        raise FluxMatchError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(files), 3, size, size), dtype=np.uint8)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as image:
                out[i] = np.asarray(_center_crop_resize(image.convert("RGB"), size, crop)).transpose(2, 0, 1)
        except (OSError, UnidentifiedImageError, ValueError) as err:
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


#: Values converted at a time by :meth:`ImageSource.fingerprint`
#: (16 MB of float32 a block).
_CHUNK_VALUES = 1 << 22


#: Rows summed at a time by :meth:`ImageSource.moments`: 255² · 256 < 2²⁴, so a float32 sum of
#: 256 squared pixels is exact.
_MOMENT_ROWS = 256


def to_model_units(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels 0..255 as float32 model units x = pixels/127.5 − 1 (a new tensor).

        >>> to_model_units(torch.tensor([0, 51, 255], dtype=torch.uint8))
        tensor([-1.0000, -0.6000,  1.0000])
    """
    # Exactly the arithmetic images were always converted with, so fingerprints do not change.
    return pixels.to(torch.float32).mul_(IMAGE_UNITS["scale"]).add_(IMAGE_UNITS["offset"])


def _check_pixels(pixels, name: str) -> torch.Tensor:
    if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[0] == 0:
        shown = f"{pixels.dtype} {tuple(pixels.shape)}" if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise FluxMatchError(f"{name}: an ImageSource holds a non-empty (N, C, H, W) uint8 tensor of pixels, got {shown}")
    return pixels.detach().cpu().contiguous()


def _chunks(pixels: torch.Tensor):
    """``pixels`` in consecutive blocks of rows of about :data:`_CHUNK_VALUES` values each."""
    rows = max(1, _CHUNK_VALUES // max(1, pixels[0].numel()))
    for start in range(0, pixels.shape[0], rows):
        yield pixels[start : start + rows]


class ImageSource(DataSource):
    """A :class:`~fluxmatch.data.DataSource` of uint8 images, converted to model units only
    where they are read: a batch converts its b rows, :meth:`holdout` its n rows.

    Args:
        pixels: (N, C, H, W) uint8 training images.
        name: the spec they came from (e.g. ``cifar10:/data/cifar``).
        held_out_pixels: (M, C, H, W) uint8 images reserved for evaluation, or None.
        labels, held_out_labels, n_classes: as for :class:`~fluxmatch.data.DataSource`.
        units: the map from model units to pixels (default :data:`IMAGE_UNITS`).
        hflip: mirror each drawn training image left-right with probability 1/2. The coins
            are drawn from the batch's generator after the row indices, so a generator state
            gives one batch; held-out images are never flipped.

    Attributes:
        pixels, held_out_pixels: the uint8 tensors held (the only copy of the images).
        data: the training rows in model units, **converted on every access**: a float32
            tensor 4× the size of ``pixels`` (600 MB for CIFAR-10). Only for compatibility;
            use :meth:`head`, :meth:`moments` or :meth:`sample_batch` instead.
        held_out: the held-out rows in model units (converted on access; small), or None.
    """

    def __init__(self, pixels, name: str, *, held_out_pixels=None, labels=None, held_out_labels=None, n_classes=None, units=None, hflip: bool = False) -> None:
        self.name = str(name)
        self.is_toy = False
        self.pixels = _check_pixels(pixels, self.name)
        self.held_out_pixels = None if held_out_pixels is None else _check_pixels(held_out_pixels, f"{self.name} (held-out rows)")
        if self.held_out_pixels is not None and self.held_out_pixels.shape[1:] != self.pixels.shape[1:]:
            raise FluxMatchError(f"held-out rows of {name} have shape {tuple(self.held_out_pixels.shape[1:])}, training rows {self.dim}")
        self._set_labels(labels, held_out_labels, n_classes)  # DataSource's checks (they read the held-out count through `held_out`: a small conversion, once at load)
        self.units = dict(IMAGE_UNITS if units is None else units)
        self.hflip = bool(hflip)

    @property
    def data(self) -> torch.Tensor:
        return to_model_units(self.pixels)

    @property
    def held_out(self) -> torch.Tensor | None:
        return None if self.held_out_pixels is None else to_model_units(self.held_out_pixels)

    @property
    def dim(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape[1:])

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors the source holds (pixels and labels)."""
        parts = (self.pixels, self.held_out_pixels, self.labels, self.held_out_labels)
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def __repr__(self) -> str:
        held = "" if self.held_out_pixels is None else f", held_out={self.held_out_pixels.shape[0]}"
        classes = f", n_classes={self.n_classes}" if self.labels is not None else ""
        return f"ImageSource({self.name!r}, rows={len(self)}, dim={self.dim}{held}{classes}, hflip={self.hflip})"

    def _draw(self, b: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The row indices of a b-row batch and, with ``hflip``, which rows to mirror."""
        index = torch.randint(0, len(self), (_check_count(b),), generator=generator)
        flip = torch.rand(index.shape[0], generator=generator) < 0.5 if self.hflip else None
        return index, flip

    def _rows(self, index: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
        x = self.pixels[index]
        if flip is not None and bool(flip.any()):
            x[flip] = x[flip].flip(-1)
        return to_model_units(x)

    def batch(self, b: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A (b, C, H, W) float32 batch of training images drawn uniformly with replacement
        (then mirrored at random with ``hflip``)."""
        return self._rows(*self._draw(b, generator))

    def batch_with_labels(self, b: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`batch` and the labels of its rows (None when unlabelled), same generator use."""
        index, flip = self._draw(b, generator)
        return self._rows(index, flip), _take(self.labels, index)

    def sample_batch(self, b: int, generator: torch.Generator | None = None, part: tuple[int, int] | None = None) -> Batch:
        """A training :class:`~fluxmatch.data.Batch` drawn as :meth:`batch_with_labels` draws;
        ``part=(rank, world)`` keeps rows ``rank·b//world … (rank+1)·b//world`` of it, and only
        those rows are converted."""
        index, flip = self._draw(b, generator)
        if part is not None:
            rows = part_rows(index.shape[0], part)
            index, flip = index[rows], None if flip is None else flip[rows]
        return Batch(self._rows(index, flip), _take(self.labels, index))

    def holdout_with_labels(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A random subset of min(n, M) held-out images in model units (never flipped) and
        their labels, the rows :class:`~fluxmatch.data.DataSource` would pick for its float copy."""
        n = _check_count(n)
        if self.held_out_pixels is None:
            raise FluxMatchError(f"{self.name} has no held-out rows: build the source with holdout > 0")
        index = _subset_index(self.held_out_pixels.shape[0], n, _generator(_derived_seed(seed, 1)))
        return to_model_units(_take(self.held_out_pixels, index)), _take(self.held_out_labels, index)

    def head(self, n: int) -> torch.Tensor:
        """The first min(n, N) training images, (n', C, H, W) float32 in model units (unflipped)."""
        return to_model_units(self.pixels[: _check_count(n)])

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-coordinate mean and population std of the training images in model units,
        flattened to two (C·H·W,) float64 arrays, from exact sums of the pixels and of their
        squares taken :data:`_MOMENT_ROWS` rows at a time (no float copy of the set)."""
        total = torch.zeros(self.pixels[0].numel(), dtype=torch.float64)
        squares = torch.zeros_like(total)
        for start in range(0, len(self), _MOMENT_ROWS):
            values = self.pixels[start : start + _MOMENT_ROWS].reshape(-1, total.shape[0]).to(torch.float32)
            ones = torch.ones(1, values.shape[0])
            # every partial sum is an integer ≤ 255² · 256 < 2²⁴, so float32 adds it exactly
            total += (ones @ values)[0]
            squares += (ones @ values.square_())[0]
        n = len(self)
        mean = total / n
        variance = (squares / n - mean.square()).clamp_min(0)
        scale, offset = IMAGE_UNITS["scale"], IMAGE_UNITS["offset"]
        return (mean * scale + offset).numpy(), (variance.sqrt() * scale).numpy()

    def fingerprint(self) -> str:
        """The digest :meth:`DataSource.fingerprint <fluxmatch.data.DataSource.fingerprint>`
        gives for the same images held as float32 model units (so runs stored before images
        were kept as uint8 still validate), computed a block of rows at a time."""
        digest = hashlib.blake2b(digest_size=16)
        for pixels in (self.pixels, self.held_out_pixels):
            if pixels is not None:
                digest.update(str(tuple(pixels.shape)).encode())
                for block in _chunks(pixels):
                    digest.update(to_model_units(block).numpy().tobytes())
            digest.update(b"|")
        for labels in (self.labels, self.held_out_labels):
            if labels is not None:
                digest.update(str(tuple(labels.shape)).encode())
                digest.update(labels.contiguous().numpy().tobytes())
            digest.update(b"|")
        return "blake2b:" + digest.hexdigest()


def image_source(spec: str, seed: int = 0, holdout: int | None = None, limit: int | None = None, hflip: bool = False) -> ImageSource:
    """An :class:`ImageSource` of CIFAR-10 (training split) or CelebA-64.

    Args:
        spec: ``cifar10:PATH`` or ``celeba64:PATH`` (see the module docstring).
        seed: seeds the shuffle that picks the held-out images.
        holdout: number of images held out for evaluation (default min(1000, N // 10), at least 1).
        limit: use only the first ``limit`` images (files in sorted order, or rows).
        hflip: mirror drawn training images left-right at random (see :class:`ImageSource`).

    Returns:
        A source holding ``pixels`` (N − M, 3, H, W) and ``held_out_pixels`` (M, 3, H, W) as
        uint8; its batches, ``held_out`` and ``data`` are float32 in model units
        x = pixels/127.5 − 1 ∈ [−1, 1], with ``units`` = :data:`IMAGE_UNITS` to map them back to
        pixels. CIFAR-10 carries ``labels``/``held_out_labels`` (int64, 0..9) and ``n_classes``
        10, CelebA none (``n_classes`` 0).
    """
    parsed = parse_image_spec(spec)
    if parsed is None:
        raise FluxMatchError(f"not an image data spec: {spec!r} (expected cifar10:PATH or celeba64:PATH)")
    name, path = parsed
    limit = _check_limit(limit)
    if name == "cifar10":
        pixels, labels = load_cifar10(path, "train")
        pixels, labels = pixels[:limit], labels[:limit]
    else:
        pixels, labels = load_image_folder(path, 64, limit=limit), None
    n = pixels.shape[0]
    if holdout is None:
        holdout = min(1000, max(1, n // 10))
    elif isinstance(holdout, bool) or not isinstance(holdout, (int, np.integer)) or holdout < 0:
        raise FluxMatchError(f"holdout must be a number of images ≥ 0, got {holdout!r}")
    holdout = int(holdout)
    if n <= holdout:
        raise FluxMatchError(f"{spec}: {n} images leave nothing to train on after holding out {holdout}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    train, held = order[holdout:], order[:holdout]
    return ImageSource(
        pixels[train], spec, held_out_pixels=pixels[held] if holdout else None,
        labels=None if labels is None else labels[train],
        held_out_labels=None if labels is None or not holdout else labels[held],
        n_classes=10 if labels is not None else None, units=IMAGE_UNITS, hflip=hflip,
    )
