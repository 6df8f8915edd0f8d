"""Data: built-in toy sets and the user's own ``.npy``/``.npz``/``.csv`` files.

A *spec* names the data: a toy set (``"ring"``, ``"8gaussians"``, ...) or a path to a file.
:func:`load_data` turns a spec into a tensor; :class:`DataSource` adds training batches and a
held-out sample for evaluation.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import FluxMatchError
from .files import FILE_EXTENSIONS, load_array, validate_data
from .toy import TOY_DATASETS, _check_count, sample_toy, toy_mixture

DEFAULT_TOY_SIZE = 20000


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _derived_seed(seed: int, stream: int) -> int:
    """A seed for an independent random stream, so that e.g. ``holdout(n, seed)`` never replays
    the draws made at construction with the same ``seed``."""
    # SeedSequence wants non-negative entries; masking keeps negative seeds usable and distinct.
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, int(stream)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


def _unknown(spec) -> FluxMatchError:
    return FluxMatchError(
        f"unknown data set {str(spec)!r}: expected one of {', '.join(TOY_DATASETS)} "
        f"or a path to {'/'.join(FILE_EXTENSIONS)}"
    )


def _is_toy(spec) -> bool:
    return isinstance(spec, str) and spec in TOY_DATASETS


def _is_file(spec) -> bool:
    return isinstance(spec, (str, os.PathLike)) and Path(spec).is_file()


def _subset(x: torch.Tensor, n: int | None, generator: torch.Generator) -> torch.Tensor:
    if n is None or n >= x.shape[0]:
        return x
    return x[torch.randperm(x.shape[0], generator=generator)[:n]].contiguous()


def load_data(spec: str | os.PathLike, n: int | None = None, seed: int = 0) -> torch.Tensor:
    """The data named by ``spec`` as an (N, ...) float32 tensor.

    Args:
        spec: a toy set name (a key of :data:`TOY_DATASETS`; it wins over a file of the same
            name) or a path to a ``.npy``, ``.npz`` or ``.csv`` file.
        n: toy sets: number of samples (default 20000). Files: if given and smaller than the
            file, a random subset of n rows (without replacement); otherwise the whole file.
        seed: seeds the ``torch.Generator`` used for the toy draws or the subset.

    Raises:
        FluxMatchError: unknown name and no such file, n ≤ 0, or a bad file (see
            :func:`load_array`).
    """
    if n is not None:
        n = _check_count(n)
    if _is_toy(spec):
        return sample_toy(spec, DEFAULT_TOY_SIZE if n is None else n, _generator(seed))
    if _is_file(spec):
        return _subset(load_array(spec), n, _generator(seed))
    raise _unknown(spec)


class DataSource:
    """Training batches and held-out samples from one data set.

    Toy sets are infinite: :meth:`batch` and :meth:`holdout` draw fresh points every call, and
    ``data`` is one fixed sample (for plots and statistics). A file has no fresh samples, so
    :meth:`from_spec` reserves a held-out split when the source is built: ``data`` holds the
    training rows only, :meth:`batch` draws from them, and :meth:`holdout` from the reserved
    rows, which training never sees.

    Attributes:
        data: (N, ...) float32 tensor, the fixed toy sample or the file's training rows.
        name: the spec it came from (toy name or file path).
        dim: event shape, e.g. ``(2,)`` or ``(1, 28, 28)``.
        held_out: (M, ...) reserved rows of a file, or None (toy sets, or no split).
        is_toy: True for a built-in toy set.
    """

    def __init__(self, data, name: str, *, is_toy: bool = False, held_out=None) -> None:
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

    @classmethod
    def from_spec(
        cls, spec: str | os.PathLike, seed: int = 0, holdout_fraction: float = 0.2, n: int | None = None
    ) -> "DataSource":
        """Build a source from a toy name or a file path.

        Args:
            spec: as in :func:`load_data`.
            seed: seeds the toy sample in ``data`` or the file's shuffle before the split.
            holdout_fraction: files only: the fraction of rows (in [0, 1)) reserved for
                :meth:`holdout`, at least one row when positive; 0 keeps every row for training.
            n: toy sets: size of the fixed ``data`` sample (default 20000); files: if smaller
                than the file, a random subset of n rows is used before splitting.
        """
        try:
            fraction = float(holdout_fraction)
        except (TypeError, ValueError):
            raise FluxMatchError(f"holdout_fraction must be a number in [0, 1), got {holdout_fraction!r}") from None
        if not 0 <= fraction < 1:
            raise FluxMatchError(f"holdout_fraction must be in [0, 1), got {holdout_fraction!r}")
        if _is_toy(spec):
            return cls(load_data(spec, n, seed), spec, is_toy=True)
        if not _is_file(spec):
            raise _unknown(spec)
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

    @property
    def dim(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return self.data.shape[0]

    def __repr__(self) -> str:
        kind = "toy" if self.is_toy else "file"
        held = "" if self.held_out is None else f", held_out={self.held_out.shape[0]}"
        return f"DataSource({self.name!r}, {kind}, rows={len(self)}, dim={self.dim}{held})"

    def batch(self, b: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A (b, ...) float32 training batch: fresh toy samples, or file rows drawn uniformly
        with replacement (never from the held-out rows)."""
        b = _check_count(b)
        if self.is_toy:
            return sample_toy(self.name, b, generator)
        index = torch.randint(0, len(self), (b,), generator=generator)
        return self.data[index]

    def holdout(self, n: int, seed: int = 0) -> torch.Tensor:
        """An evaluation sample independent of the training data.

        Toy sets: n fresh samples from a stream seeded by ``seed`` and distinct from the one
        that drew ``data``. Files: a random subset of min(n, M) of the M reserved rows, so the
        result can have fewer than n rows.

        Raises:
            FluxMatchError: a file source built without a held-out split.
        """
        n = _check_count(n)
        generator = _generator(_derived_seed(seed, 1))
        if self.is_toy:
            return sample_toy(self.name, n, generator)
        if self.held_out is None:
            raise FluxMatchError(f"{self.name} has no held-out rows: build the source with holdout_fraction > 0")
        return _subset(self.held_out, n, generator)


__all__ = [
    "TOY_DATASETS",
    "DataSource",
    "FILE_EXTENSIONS",
    "load_array",
    "load_data",
    "sample_toy",
    "toy_mixture",
    "validate_data",
]
