"""Data-parallel training on ``torch.distributed``: one run trained by several processes.

``torchrun --nproc_per_node N -m fluxmatch train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`initialise`
joins them into one process group (NCCL on GPUs, gloo on CPU) and :func:`current` tells the
trainer where it stands. What a step means under data parallelism:

- **The batch is global.** ``--batch-size B`` is the batch of the whole step: each rank draws the
  same B random choices from the same data generator and keeps its slice of B/N rows
  (:meth:`fluxmatch.data.DataSource.sample_batch` with ``part``), so the N slices concatenate to
  the batch one process would draw with the same seed.
- **Gradients are averaged.** After the backward pass the gradients of every parameter (the
  field's and the objective's own networks), the loss and a stop flag are summed across ranks in
  one ``all_reduce`` and divided by N (:func:`average_gradients`). Every rank then clips and steps
  identically, so the weights never drift apart. This works for any objective, including those
  that call the field several times per step or differentiate through its divergence, which
  ``DistributedDataParallel``'s hooks do not support.
- **Batch-coupled objectives are per rank.** The flux reference (the batch posterior over the
  batch's own points), minibatch OT couplings and the mixing term's Sinkhorn plan are built from
  each rank's B/N rows, not from the gathered batch. For objectives whose loss is a mean of
  per-row terms (DSM, flow matching with independent coupling) a step equals the single-process
  step on the concatenated batch; for batch-coupled ones it equals the mean of the single-process
  losses on the N slices.
- **Noise is per rank.** Rank r seeds the global torch RNG, which objectives draw σ and noise
  from, with :func:`rank_seed` (rank 0 keeps the run's seed, so a one-process run is unchanged);
  checkpoints keep every rank's RNG state, so a resumed run continues exactly.
- **Rank 0 writes.** The run directory's lock, log.csv, checkpoints, snapshots, the progress bar,
  sampling, metrics and plots come from rank 0 only. Resuming a multi-node run needs the run
  directory on a file system every node sees.

    >>> current().world, current().is_main
    (1, True)
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch

from ..errors import FluxMatchError

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT_MINUTES = 30


@dataclass(frozen=True)
class Context:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: this process's rank, 0 … world − 1 (0 in a one-process run).
        world: number of processes training the run.
        local_rank: rank on this node (picks the GPU, ``cuda:local_rank``).
        backend: "nccl", "gloo", or None in a one-process run.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    @property
    def part(self) -> tuple[int, int] | None:
        """``(rank, world)`` for :meth:`~fluxmatch.data.DataSource.sample_batch`, None alone."""
        return (self.rank, self.world) if self.world > 1 else None


def _dist():
    import torch.distributed as dist

    return dist


def current() -> Context:
    """The context of an initialised process group, else a one-process context."""
    dist = _dist()
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return Context(dist.get_rank(), dist.get_world_size(), local, str(dist.get_backend()))


def launched_world() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when not launched by torchrun)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        world = int(value)
    except ValueError:
        raise FluxMatchError(f"WORLD_SIZE={value!r} is not an integer (set by torchrun: do not set it by hand)") from None
    if world < 1:
        raise FluxMatchError(f"WORLD_SIZE={value!r} must be at least 1")
    return world


def initialise(device: str = "auto") -> Context:
    """Join the process group torchrun set up (a no-op in a one-process launch).

    ``device`` is the run's ``--device``: "cpu" trains with gloo; "cuda", "cuda:N" or "auto" on a
    machine with GPUs trains with NCCL, rank r on ``cuda:LOCAL_RANK``. Returns :func:`current`.

    Raises:
        FluxMatchError: torchrun's variables are incomplete, or CUDA is asked for but this
            node has fewer GPUs than processes.
    """
    dist = _dist()
    if launched_world() == 1 or dist.is_initialized():
        return current()
    missing = [name for name in ENV_VARS if name not in os.environ]
    if missing:
        raise FluxMatchError(f"WORLD_SIZE is set but {', '.join(missing)} are not: launch with torchrun --nproc_per_node N -m fluxmatch ...")
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    local = int(os.environ["LOCAL_RANK"])
    if use_cuda:
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise FluxMatchError(f"local rank {local} needs a GPU, but this node sees {seen}: use --nproc_per_node ≤ {seen}, or --device cpu")
        torch.cuda.set_device(local)
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=TIMEOUT_MINUTES))
    return current()


def shutdown() -> None:
    """Leave the process group, if one was joined: all ranks together.

    A barrier first, so that no rank tears down its gloo connections while another still uses
    them (rank 0 evaluates after training while the others wait): a rank that left early could
    abort in gloo's threads ("terminate called without an active exception"). A rank that
    crashed is not waited for: torchrun stops the others when one fails."""
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            with contextlib.suppress(RuntimeError):  # a peer is gone: nothing left to wait for
                dist.barrier()
        dist.destroy_process_group()


def device_for(device: torch.device, ctx: Context) -> torch.device:
    """The device this rank trains on: ``cuda`` without an index becomes ``cuda:local_rank``."""
    if ctx.world > 1 and device.type == "cuda" and device.index is None:
        return torch.device("cuda", ctx.local_rank)
    return device


def rank_seed(seed: int, rank: int) -> int:
    """The global-RNG seed of rank ``rank``: the run's seed on rank 0, a distinct one elsewhere.

        >>> rank_seed(7, 0), rank_seed(7, 1) != rank_seed(7, 2)
        (7, True)
    """
    return int(seed) if rank == 0 else (int(seed) * 1_000_003 + 7_919 * int(rank)) % (2**63 - 1)


def average_gradients(parameters: list[torch.Tensor], scalars: list[float], ctx: Context) -> list[float]:
    """Average the gradients of ``parameters`` and the numbers ``scalars`` across ranks, in place.

    One ``all_reduce`` of a flat buffer (every gradient, then the scalars) in the gradients'
    dtype; a parameter without a gradient on a rank counts as zeros there, and gets a gradient
    on every rank. Returns the averaged scalars. A one-process context returns them unchanged.
    """
    if ctx.world == 1:
        return list(scalars)
    device = parameters[0].device
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([*(g.reshape(-1).float() for g in grads), torch.tensor(scalars, dtype=torch.float32, device=device)])
    _dist().all_reduce(flat)
    flat.div_(ctx.world)
    offset = 0
    for p, g in zip(parameters, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).to(g.dtype)
        offset += n
    return flat[offset:].tolist()


def broadcast_parameters(modules, ctx: Context) -> None:
    """Copy rank 0's parameters and buffers into every rank's modules."""
    if ctx.world == 1:
        return
    dist = _dist()
    with torch.no_grad():
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)


def broadcast_object(obj, ctx: Context):
    """Rank 0's ``obj`` on every rank (picklable objects only)."""
    if ctx.world == 1:
        return obj
    box = [obj if ctx.is_main else None]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def agree(fn, ctx: Context):
    """Run ``fn()`` on rank 0 and give its result to every rank; a FluxMatchError it raises is
    raised on every rank with the same message, so no rank waits for a peer that gave up."""
    if ctx.world == 1:
        return fn()
    result, error = None, None
    if ctx.is_main:
        try:
            result = fn()
        except FluxMatchError as err:
            error = str(err)
    result, error = broadcast_object((result, error), ctx)
    if error is not None:
        raise FluxMatchError(error)
    return result


def gather_rng_states(ctx: Context, device: torch.device) -> dict[str, torch.Tensor]:
    """Every rank's RNG states for a checkpoint (a collective: call it on every rank).

    Returns, on rank 0, ``{"rng.torch.rank<r>": …}`` for r ≥ 1 and, when training on CUDA,
    ``{"rng.cuda.rank<r>": …}`` for every r (uint8 tensors); on other ranks an empty dict.
    """
    own = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        own["cuda"] = torch.cuda.get_rng_state(device)
    if ctx.world == 1:
        return {"rng.cuda.rank0": own["cuda"]} if "cuda" in own else {}
    states = [None] * ctx.world
    _dist().all_gather_object(states, own)
    if not ctx.is_main:
        return {}
    out = {}
    for r, state in enumerate(states):
        for name, tensor in state.items():
            if name == "cuda" or r > 0:
                out[f"rng.{name}.rank{r}"] = tensor
    return out


def restore_rng_states(tensors: dict[str, torch.Tensor], ctx: Context, device: torch.device, seed: int, step: int) -> bool:
    """Set this rank's RNG states from a checkpoint's ``rng.*.rank<r>`` tensors.

    Rank 0's torch state was already restored from ``rng.torch``. A rank the checkpoint has no
    state for (it was written by fewer processes) seeds itself from ``(seed, rank, step)``
    instead: training continues correctly, though not bit for bit as an uninterrupted run.
    Returns whether this rank's states were all found.
    """
    found = True
    if ctx.rank > 0:
        state = tensors.get(f"rng.torch.rank{ctx.rank}")
        if state is None:
            found = False
            torch.manual_seed(rank_seed(seed, ctx.rank) + int(step))
        else:
            torch.set_rng_state(state)
    if device.type == "cuda":
        state = tensors.get(f"rng.cuda.rank{ctx.rank}")
        if state is not None:
            torch.cuda.set_rng_state(state, device)
        else:
            found = False
            torch.cuda.manual_seed(rank_seed(seed, ctx.rank) + int(step))
    return found


@contextlib.contextmanager
def main_only(ctx: Context, manager):
    """``manager`` entered on rank 0 only (a lock, a progress bar), a no-op elsewhere."""
    if ctx.is_main:
        with manager as value:
            yield value
    else:
        yield None
