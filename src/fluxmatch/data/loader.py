"""Training batches by step, drawn ahead in worker processes: :class:`BatchLoader`.

The batch of step k depends on (seed, k) only: its rows are drawn by
``source.sample_batch(batch_size, generator, part)`` with a generator seeded by
:func:`step_seed` (seed, k). So prefetching never changes which batch a step gets, any number of
workers gives the same batches, a run resumed at step k gets the batches an uninterrupted run
gets from k on, and the ranks of a data-parallel run (``part=(rank, world)``) get slices of one
global batch that concatenate to it.

The dataset handed to :class:`torch.utils.data.DataLoader` is a tiny object that holds the source
and maps a step to its batch; the workers read the source's tensors (an
:class:`~fluxmatch.data.images.ImageSource`'s uint8 pixels), and convert only the rows drawn.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import FluxMatchError, check_integer
from . import Batch, part_rows
from .toy import _check_count

#: Mixed into every step's seed, so that step generators never replay another stream of the
#: same seed (the data split, the held-out draws, the trainer's generator).
_STEP_STREAM = 0x6C6F61646572  # "loader"


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s generator: a hash-free mix of ``(seed, step)`` by NumPy's
    SeedSequence, in [0, 2⁶³). The same on every machine and in every process.

        >>> step_seed(0, 5) == step_seed(0, 5) != step_seed(0, 6)
        True
    """
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, int(step), _STEP_STREAM]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


class _StepBatches(Dataset):
    """Step k → the tensors of its batch, as a dict (so that the DataLoader can pin them)."""

    def __init__(self, source, batch_size: int, seed: int, part) -> None:
        self.source, self.batch_size, self.seed, self.part = source, batch_size, seed, part

    def __getitem__(self, step: int) -> dict:
        generator = torch.Generator().manual_seed(step_seed(self.seed, step))
        batch = self.source.sample_batch(self.batch_size, generator, self.part)
        return {"x": batch.x, "labels": batch.labels, "extras": dict(batch.extras)}


class _StepsFrom(Sampler):
    """The steps start, start + 1, … without end."""

    def __init__(self, start: int) -> None:
        self.start = start

    def __iter__(self):
        return itertools.count(self.start)


def _as_is(item):
    return item


def _pins(pin_memory) -> bool:
    """Whether to pin: True/False as given, or a device: pinned when it is a CUDA device."""
    if not isinstance(pin_memory, bool):
        try:
            pin_memory = torch.device(pin_memory).type == "cuda"
        except (TypeError, RuntimeError):
            raise FluxMatchError(f"pin_memory must be True, False or a device, got {pin_memory!r}") from None
    return pin_memory and torch.cuda.is_available()


class BatchLoader:
    """An iterable of the training :class:`~fluxmatch.data.Batch` of each step from ``start_step``
    on (without end: stop it, e.g. with ``itertools.islice``), drawn ahead by a DataLoader.

    Args:
        source: a :class:`~fluxmatch.data.DataSource` (anything with
            ``sample_batch(b, generator, part)``).
        batch_size: the global batch size b.
        seed: with the step, seeds each step's generator (:func:`step_seed`).
        start_step: the first step yielded (a resumed run passes the steps already done).
        part: ``(rank, world)``: yield only rows ``rank·b//world … (rank+1)·b//world`` of each
            global batch; None for the whole batch.
        workers: worker processes drawing batches ahead (0: drawn in this process on demand).
            Workers are persistent, so iterating again does not start new ones.
        pin_memory: pin the batches' memory for fast copies to a GPU: True, False, or the
            target device (pinned when it is a CUDA device and CUDA is available).
        prefetch: batches each worker draws ahead.

    Every ``iter()`` starts again at ``start_step``; :meth:`batch` gives any step's batch.

    Example:
        >>> from fluxmatch.data import DataSource
        >>> source = DataSource.from_spec("ring", seed=0, n=1000)
        >>> loader = BatchLoader(source, batch_size=64, seed=0, start_step=10)
        >>> first = next(iter(loader))
        >>> first.x.shape
        torch.Size([64, 2])
        >>> torch.equal(first.x, loader.batch(10).x)
        True
        >>> torch.equal(next(iter(BatchLoader(source, 64, seed=0, start_step=10, part=(1, 2)))).x, first.x[32:])
        True

    Raises:
        FluxMatchError: a batch size that is not a positive integer, a negative or non-integer
            ``workers``, ``start_step`` or ``prefetch`` < 1, or a bad ``part``.
    """

    def __init__(self, source, batch_size: int, seed: int = 0, start_step: int = 0, part: tuple[int, int] | None = None, workers: int = 0, pin_memory=False, prefetch: int = 2) -> None:
        batch_size = _check_count(batch_size)
        if part is not None:
            part = tuple(part)
            part_rows(batch_size, part)  # refuses a bad (rank, world) now, not in a worker
        self.workers = check_integer(workers, "workers", 0)
        self.start_step = check_integer(start_step, "start_step", 0)
        prefetch = check_integer(prefetch, "prefetch", 1)
        self.dataset = _StepBatches(source, batch_size, check_integer(seed, "seed", -(1 << 63)), part)
        self.loader = DataLoader(
            self.dataset, batch_size=None, sampler=_StepsFrom(self.start_step), collate_fn=_as_is,
            num_workers=self.workers, pin_memory=_pins(pin_memory),
            persistent_workers=self.workers > 0, prefetch_factor=prefetch if self.workers else None,
        )

    def batch(self, step: int) -> Batch:
        """The batch of step ``step``, drawn here (what iterating yields for that step)."""
        return _to_batch(self.dataset[check_integer(step, "step", 0)])

    def __iter__(self):
        with torch.random.fork_rng(devices=[]):  # the DataLoader draws its workers' base seed: never from the caller's global stream
            items = iter(self.loader)
        for item in items:
            yield _to_batch(item)

    def close(self) -> None:
        """Stop the worker processes (they also stop when the loader is garbage-collected)."""
        iterator = getattr(self.loader, "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self.loader._iterator = None

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _to_batch(item: dict) -> Batch:
    return Batch(item["x"], item["labels"], item["extras"])


__all__ = ["BatchLoader", "step_seed"]
