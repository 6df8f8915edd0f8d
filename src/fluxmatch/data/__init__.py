"""Data: built-in toy sets, the 8×8 digits images and the user's own ``.npy``/``.npz``/``.csv`` files.

A *spec* names the data: a toy set (``"ring"``, ``"8gaussians"``, ...), ``"digits"`` (labelled
images, see :mod:`fluxmatch.data.digits`) or a path to a file.
:func:`load_data` turns a spec into a tensor; :class:`DataSource` adds training batches and a
held-out sample for evaluation.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import FluxMatchError
from .digits import DIGITS_UNITS, HOLDOUT_FRACTION, N_CLASSES, digits_split, from_pixels, load_digits_images, to_pixels
from .files import FILE_EXTENSIONS, load_array, validate_data
from .springs import FEATURE_NAMES, SpringParams, dynamics_residual, rk4_step, save_springs, simulate_springs
from .toy import TOY_DATASETS, _check_count, sample_toy, toy_mixture

DEFAULT_TOY_SIZE = 20000
DIGITS = "digits"


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _derived_seed(seed: int, stream: int) -> int:
    """A seed for an independent random stream, so that e.g. ``holdout(n, seed)`` never replays
    the draws made at construction with the same ``seed``."""
    # SeedSequence wants non-negative entries; masking keeps negative seeds usable and distinct.
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, int(stream)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


def unknown_data(spec) -> FluxMatchError:
    """The error for a data spec that names no toy set, image set or file."""
    return FluxMatchError(
        f"unknown data set {str(spec)!r}: expected one of {', '.join(TOY_DATASETS)}, {DIGITS} "
        f"or a path to {'/'.join(FILE_EXTENSIONS)}"
    )


def _is_toy(spec) -> bool:
    return isinstance(spec, str) and spec in TOY_DATASETS


def _is_digits(spec) -> bool:
    return isinstance(spec, str) and spec == DIGITS


def _is_file(spec) -> bool:
    return isinstance(spec, (str, os.PathLike)) and Path(spec).is_file()


def _subset_index(rows: int, n: int | None, generator: torch.Generator) -> torch.Tensor | None:
    """Indices of a random subset of n of ``rows`` rows without replacement, or None to keep all."""
    if n is None or n >= rows:
        return None
    return torch.randperm(rows, generator=generator)[:n]


def _take(x: torch.Tensor | None, index: torch.Tensor | None) -> torch.Tensor | None:
    if x is None or index is None:
        return x
    return x[index].contiguous()


def _subset(x: torch.Tensor, n: int | None, generator: torch.Generator) -> torch.Tensor:
    return _take(x, _subset_index(x.shape[0], n, generator))


def _check_labels(labels, rows: int, n_classes: int, name: str) -> torch.Tensor:
    """(rows,) int64 labels in [0, n_classes), or raise naming ``name``."""
    t = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise FluxMatchError(f"labels of {name} must be integers, got dtype {t.dtype}")
    if t.shape != (rows,):
        raise FluxMatchError(f"labels of {name} must have shape ({rows},), one per row, got {tuple(t.shape)}")
    t = t.to("cpu", torch.int64).contiguous()
    if rows and (int(t.min()) < 0 or int(t.max()) >= n_classes):
        raise FluxMatchError(f"labels of {name} must lie in 0..{n_classes - 1}, got {int(t.min())}..{int(t.max())}")
    return t


def load_data(spec: str | os.PathLike, n: int | None = None, seed: int = 0) -> torch.Tensor:
    """The data named by ``spec`` as an (N, ...) float32 tensor.

    Args:
        spec: a toy set name (a key of :data:`TOY_DATASETS`; it wins over a file of the same
            name) or a path to a ``.npy``, ``.npz`` or ``.csv`` file.
        n: toy sets: number of samples (default 20000). Files: if given and smaller than the
            file, a random subset of n rows (without replacement); otherwise the whole file.
        seed: seeds the ``torch.Generator`` used for the toy draws or the subset.

    ``"digits"`` gives the training split of :func:`~fluxmatch.data.digits.digits_split`,
    (1438, 1, 8, 8) in model units, or a random subset of n of its rows.

    Raises:
        FluxMatchError: unknown name and no such file, n ≤ 0, or a bad file (see
            :func:`load_array`).
    """
    if n is not None:
        n = _check_count(n)
    if _is_toy(spec):
        return sample_toy(spec, DEFAULT_TOY_SIZE if n is None else n, _generator(seed))
    if _is_digits(spec):
        return _subset(digits_split().train_images, n, _generator(seed))
    if _is_file(spec):
        return _subset(load_array(spec), n, _generator(seed))
    raise unknown_data(spec)


def part_rows(b: int, part: tuple[int, int]) -> slice:
    """The rows of a b-row global batch that rank ``part[0]`` of ``part[1]`` keeps: the slice
    ``rank·b//world … (rank+1)·b//world``.

        >>> [part_rows(10, (r, 3)) for r in range(3)]
        [slice(0, 3, None), slice(3, 6, None), slice(6, 10, None)]
    """
    rank, world = part
    if isinstance(world, bool) or not isinstance(world, int) or world < 1 or not isinstance(rank, int) or not 0 <= rank < world:
        raise FluxMatchError(f"part must be (rank, world) with 0 ≤ rank < world, got {part!r}")
    if b < world:
        raise FluxMatchError(f"a batch of {b} rows cannot be split across {world} processes: use a batch of at least {world}")
    return slice(rank * b // world, (rank + 1) * b // world)


@dataclass(frozen=True)
class Batch:
    """One training batch as a data source yields it.

    Attributes:
        x: (B, ...) float32 points or images in model units.
        labels: (B,) int64 class labels, or None for unlabelled data.
        extras: further per-row tensors the field takes as keyword arguments (masks, time
            indices, covariates), passed through the objective to the field untouched.
    """

    x: torch.Tensor
    labels: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    def to(self, device) -> Batch:
        """The batch with every tensor on ``device``."""
        move = (lambda t: None if t is None else t.to(device))
        return Batch(move(self.x), move(self.labels), {k: move(v) for k, v in self.extras.items()})


class DataSource:
    """Training batches and held-out samples from one data set.

    Toy sets are infinite: :meth:`batch` and :meth:`holdout` draw fresh points every call, and
    ``data`` is one fixed sample (for plots and statistics). A file has no fresh samples, so
    :meth:`from_spec` reserves a held-out split when the source is built: ``data`` holds the
    training rows only, :meth:`batch` draws from them, and :meth:`holdout` from the reserved
    rows, which training never sees. The digits are a labelled image set with a fixed held-out
    split (:func:`~fluxmatch.data.digits.digits_split`).

    Attributes:
        data: (N, ...) float32 tensor, the fixed toy sample or the training rows.
        name: the spec it came from (toy name, ``"digits"`` or file path).
        dim: event shape, e.g. ``(2,)`` or ``(1, 8, 8)``.
        held_out: (M, ...) reserved rows, or None (toy sets, or no split).
        is_toy: True for a built-in toy set.
        labels: (N,) int64 class labels of ``data`` in 0..n_classes−1, or None (unlabelled).
        held_out_labels: (M,) int64 labels of ``held_out``, or None.
        n_classes: number of classes (10 for the digits), 0 for unlabelled data.
        units: for images, the dict mapping model units to pixels (``x = pixels · scale +
            offset``, see :data:`~fluxmatch.data.digits.DIGITS_UNITS`), else None.
    """

    def __init__(
        self,
        data,
        name: str,
        *,
        is_toy: bool = False,
        held_out=None,
        labels=None,
        held_out_labels=None,
        n_classes: int | None = None,
        units: dict | None = None,
    ) -> None:
        self.data = validate_data(data, name)
        self.name = str(name)
        if is_toy and not _is_toy(self.name):
            raise FluxMatchError(f"unknown toy data set {self.name!r}: expected one of {', '.join(TOY_DATASETS)}")
        self.is_toy = bool(is_toy)
        self.held_out = None if held_out is None else validate_data(held_out, f"{name} (held-out rows)")
        if self.held_out is not None and self.held_out.shape[1:] != self.data.shape[1:]:
            raise FluxMatchError(
                f"held-out rows of {name} have shape {tuple(self.held_out.shape[1:])}, training rows {tuple(self.dim)}"
            )
        self._set_labels(labels, held_out_labels, n_classes)
        self.units = None if units is None else dict(units)

    def _set_labels(self, labels, held_out_labels, n_classes) -> None:
        if labels is None:
            if held_out_labels is not None or n_classes:
                raise FluxMatchError(f"{self.name}: held_out_labels and n_classes need labels for the training rows")
            self.labels, self.held_out_labels, self.n_classes = None, None, 0
            return
        if n_classes is None:
            n_classes = int(torch.as_tensor(np.asarray(labels)).max()) + 1 if len(labels) else 1
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
            raise FluxMatchError(f"n_classes must be a positive integer, got {n_classes!r}")
        self.n_classes = int(n_classes)
        self.labels = _check_labels(labels, len(self), self.n_classes, self.name)
        if (held_out_labels is None) != (self.held_out is None):
            raise FluxMatchError(f"{self.name}: give held_out_labels exactly when there are held-out rows")
        self.held_out_labels = (
            None if held_out_labels is None else _check_labels(held_out_labels, self.held_out.shape[0], self.n_classes, f"{self.name} (held-out rows)")
        )

    @classmethod
    def from_spec(
        cls, spec: str | os.PathLike, seed: int = 0, holdout_fraction: float = 0.2, n: int | None = None
    ) -> DataSource:
        """Build a source from a toy name or a file path.

        Args:
            spec: as in :func:`load_data`.
            seed: seeds the toy sample in ``data`` or the file's shuffle before the split; for
                the digits only the subset chosen by ``n`` (the split itself is fixed).
            holdout_fraction: files only: the fraction of rows (in [0, 1)) reserved for
                :meth:`holdout`, at least one row when positive; 0 keeps every row for training.
                The digits have a fixed 20% split, so any other value is refused for them.
            n: toy sets: size of the fixed ``data`` sample (default 20000); files: if smaller
                than the file, a random subset of n rows is used before splitting; digits: a
                random subset of n training images (the held-out split is unchanged).
        """
        try:
            fraction = float(holdout_fraction)
        except (TypeError, ValueError):
            raise FluxMatchError(f"holdout_fraction must be a number in [0, 1), got {holdout_fraction!r}") from None
        if not 0 <= fraction < 1:
            raise FluxMatchError(f"holdout_fraction must be in [0, 1), got {holdout_fraction!r}")
        if _is_toy(spec):
            return cls(load_data(spec, n, seed), spec, is_toy=True)
        if _is_digits(spec):
            return cls._digits(fraction, n, seed)
        from .images import image_source, parse_image_spec

        if parse_image_spec(spec) is not None:
            return image_source(str(spec), seed=seed, limit=n)
        if not _is_file(spec):
            raise unknown_data(spec)
        rows = load_data(spec, n, seed)
        n_rows = rows.shape[0]
        n_held = int(round(fraction * n_rows))
        if fraction > 0:
            n_held = max(n_held, 1)
        if n_rows - n_held < 1:
            raise FluxMatchError(
                f"{spec} has {n_rows} row(s): too few to keep a fraction {fraction} aside and still train; "
                "use holdout_fraction=0 or more data"
            )
        order = torch.randperm(n_rows, generator=_generator(_derived_seed(seed, 0)))
        held = rows[order[:n_held]] if n_held else None
        return cls(rows[order[n_held:]], str(spec), held_out=held)

    @classmethod
    def _digits(cls, fraction: float, n: int | None, seed: int) -> DataSource:
        if fraction != HOLDOUT_FRACTION:
            raise FluxMatchError(
                f"the digits have a fixed held-out split of {HOLDOUT_FRACTION:g} per class (shared by the metric "
                f"classifier); holdout_fraction={fraction:g} cannot be used with them"
            )
        split = digits_split()
        index = _subset_index(split.train_images.shape[0], None if n is None else _check_count(n), _generator(seed))
        return cls(
            _take(split.train_images, index),
            DIGITS,
            held_out=split.held_out_images,
            labels=_take(split.train_labels, index),
            held_out_labels=split.held_out_labels,
            n_classes=N_CLASSES,
            units=DIGITS_UNITS,
        )

    def fingerprint(self) -> str:
        """A digest of the rows the source holds (training rows, held-out rows, labels), e.g.
        ``"blake2b:3f0c…"``: a run stores it, so that evaluating or resuming on data that changed
        since (a reordered or edited file, whose rebuilt held-out split would not be held out) is refused."""
        digest = hashlib.blake2b(digest_size=16)
        for part in (self.data, self.held_out, self.labels, self.held_out_labels):
            if part is not None:
                digest.update(str(tuple(part.shape)).encode())
                digest.update(part.detach().cpu().contiguous().numpy().tobytes())
            digest.update(b"|")
        return "blake2b:" + digest.hexdigest()

    @property
    def dim(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return self.data.shape[0]

    def __repr__(self) -> str:
        kind = "toy" if self.is_toy else DIGITS if _is_digits(self.name) else "file"
        held = "" if self.held_out is None else f", held_out={self.held_out.shape[0]}"
        classes = f", n_classes={self.n_classes}" if self.labels is not None else ""
        return f"DataSource({self.name!r}, {kind}, rows={len(self)}, dim={self.dim}{held}{classes})"

    def batch(self, b: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A (b, ...) float32 training batch: fresh toy samples, or file rows drawn uniformly
        with replacement (never from the held-out rows)."""
        b = _check_count(b)
        if self.is_toy:
            return sample_toy(self.name, b, generator)
        index = torch.randint(0, len(self), (b,), generator=generator)
        return self.data[index]

    def batch_with_labels(self, b: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A training batch and its labels: ((b, ...) float32, (b,) int64), drawn exactly as
        :meth:`batch` draws (same generator use, so the same rows for the same generator state).
        Unlabelled data gives ``(batch(b, generator), None)``."""
        if self.labels is None:
            return self.batch(b, generator), None
        b = _check_count(b)
        index = torch.randint(0, len(self), (b,), generator=generator)
        return self.data[index], self.labels[index]

    def sample_batch(self, b: int, generator: torch.Generator | None = None, part: tuple[int, int] | None = None) -> Batch:
        """A training :class:`Batch` of b rows with their labels (None when unlabelled), drawn
        exactly as :meth:`batch_with_labels` draws.

        ``part=(rank, world)`` keeps only rows ``rank·b//world … (rank+1)·b//world`` of that
        batch: every rank of a data-parallel run draws the same global random choices from the
        same generator state and keeps its own slice, so the slices of all ranks concatenate
        to the batch one process would draw."""
        x, labels = self.batch_with_labels(b, generator)
        if part is None:
            return Batch(x, labels)
        rows = part_rows(b, part)
        return Batch(x[rows], None if labels is None else labels[rows])

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-coordinate mean and population std of the training rows, flattened: two (D,)
        arrays (computed in float32, as runs have always stored them)."""
        points = self.data.reshape(len(self), -1).float()
        return points.mean(0).numpy(), points.std(0, unbiased=False).numpy()

    def head(self, n: int) -> torch.Tensor:
        """The first min(n, N) training rows, (n', ...) float32 in model units."""
        return self.data[: _check_count(n)]

    def holdout(self, n: int, seed: int = 0) -> torch.Tensor:
        """An evaluation sample independent of the training data.

        Toy sets: n fresh samples from a stream seeded by ``seed`` and distinct from the one
        that drew ``data``. Files: a random subset of min(n, M) of the M reserved rows, so the
        result can have fewer than n rows.

        Raises:
            FluxMatchError: a file source built without a held-out split.
        """
        return self.holdout_with_labels(n, seed)[0]

    def holdout_with_labels(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`holdout` and the labels of its rows ((n', ...) float32, (n',) int64); the labels
        are None for unlabelled data. The rows are exactly those :meth:`holdout` returns."""
        n = _check_count(n)
        generator = _generator(_derived_seed(seed, 1))
        if self.is_toy:
            return sample_toy(self.name, n, generator), None
        if self.held_out is None:
            raise FluxMatchError(f"{self.name} has no held-out rows: build the source with holdout_fraction > 0")
        index = _subset_index(self.held_out.shape[0], n, generator)
        return _take(self.held_out, index), _take(self.held_out_labels, index)


__all__ = [
    "Batch",
    "unknown_data",
    "TOY_DATASETS",
    "DIGITS_UNITS",
    "DataSource",
    "digits_split",
    "from_pixels",
    "load_digits_images",
    "to_pixels",
    "FILE_EXTENSIONS",
    "load_array",
    "load_data",
    "sample_toy",
    "toy_mixture",
    "validate_data",
    "FEATURE_NAMES",
    "SpringParams",
    "simulate_springs",
    "rk4_step",
    "dynamics_residual",
    "save_springs",
]
