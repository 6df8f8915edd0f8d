"""BatchLoader: the batch of a step depends on (seed, step) only, whatever the workers, the
prefetching, the step a run resumes at or the rank that draws it."""

import itertools

import pytest
import torch

from fluxmatch.data import Batch, DataSource
from fluxmatch.data.images import ImageSource
from fluxmatch.data.loader import BatchLoader, step_seed
from fluxmatch.errors import FluxMatchError


@pytest.fixture(scope="module")
def images():
    pixels = torch.randint(0, 256, (40, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return ImageSource(pixels, "tiny", labels=torch.arange(40) % 10, n_classes=10, hflip=True)


@pytest.fixture(scope="module")
def points():
    return DataSource(torch.randn(50, 3, generator=torch.Generator().manual_seed(1)), "points")


def take(loader, n):
    return list(itertools.islice(iter(loader), n))


def same(a: Batch, b: Batch) -> bool:
    labels = (a.labels is None and b.labels is None) or torch.equal(a.labels, b.labels)
    return torch.equal(a.x, b.x) and labels and a.extras.keys() == b.extras.keys()


def test_workers_do_not_change_the_batches(images):
    alone = take(BatchLoader(images, 12, seed=3), 6)
    with BatchLoader(images, 12, seed=3, workers=2, prefetch=3) as loader:
        ahead = take(loader, 6)
        assert all(same(a, b) for a, b in zip(ahead, take(loader, 6)))  # persistent workers start again at start_step
    assert len(ahead) == 6 and all(same(a, b) for a, b in zip(alone, ahead))
    assert all(isinstance(b, Batch) and b.x.dtype == torch.float32 and b.labels.shape == (12,) for b in ahead)
    assert not torch.equal(alone[0].x, alone[1].x)  # each step its own batch


def test_the_batch_of_a_step_is_the_sources_draw_with_the_step_generator(points):
    loader = BatchLoader(points, 8, seed=5, start_step=0)
    batches = take(loader, 3)
    for k, batch in enumerate(batches):
        expected = points.sample_batch(8, torch.Generator().manual_seed(step_seed(5, k)))
        assert same(batch, expected) and same(loader.batch(k), batch) and batch.labels is None
    assert not torch.equal(take(BatchLoader(points, 8, seed=6), 1)[0].x, batches[0].x)


def test_a_resumed_run_gets_the_same_batches(images, points):
    for source in (images, points):
        whole = take(BatchLoader(source, 10, seed=1), 8)
        resumed = take(BatchLoader(source, 10, seed=1, start_step=5), 3)
        assert all(same(a, b) for a, b in zip(whole[5:], resumed))


def test_part_slices_concatenate_to_the_global_batch(images):
    whole = take(BatchLoader(images, 10, seed=2), 3)
    for world in (2, 3):
        parts = [take(BatchLoader(images, 10, seed=2, part=(rank, world)), 3) for rank in range(world)]
        for k in range(3):
            assert torch.equal(torch.cat([p[k].x for p in parts]), whole[k].x)
            assert torch.equal(torch.cat([p[k].labels for p in parts]), whole[k].labels)


def test_pin_memory_is_only_for_a_cuda_target(points):
    batch = take(BatchLoader(points, 4, pin_memory="cuda"), 1)[0]  # no CUDA here: not pinned, still works
    assert batch.x.is_pinned() == torch.cuda.is_available()
    assert not BatchLoader(points, 4, pin_memory="cpu").loader.pin_memory
    with pytest.raises(FluxMatchError, match="pin_memory"):
        BatchLoader(points, 4, pin_memory=3.5)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"workers": -1}, "workers"),
        ({"workers": 1.5}, "workers"),
        ({"workers": "2"}, "workers"),
        ({"workers": True}, "workers"),
        ({"start_step": -1}, "start_step"),
        ({"prefetch": 0}, "prefetch"),
        ({"part": (2, 2)}, "part"),
        ({"seed": 0.5}, "seed"),
    ],
)
def test_bad_options_are_refused(points, options, match):
    with pytest.raises(FluxMatchError, match=match):
        BatchLoader(points, 8, **options)


def test_bad_batch_sizes_are_refused(points):
    for b in (0, 2.0, None):
        with pytest.raises(FluxMatchError, match="positive integer"):
            BatchLoader(points, b)
    with pytest.raises(FluxMatchError, match="cannot be split"):
        BatchLoader(points, 2, part=(0, 3))


@pytest.mark.parametrize("workers", [0, 1])
def test_iterating_leaves_the_global_rng_alone(workers):
    source = DataSource.from_spec("ring", 0)
    torch.manual_seed(0)
    before = torch.get_rng_state().clone()
    with BatchLoader(source, 16, seed=0, workers=workers) as loader:
        next(iter(loader))
    assert torch.equal(before, torch.get_rng_state())
