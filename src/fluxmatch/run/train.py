"""Train a run from its spec, then sample, evaluate and plot it: one pipeline for every kind of data."""

from __future__ import annotations

import contextlib
import math
import shutil
from pathlib import Path

import torch

from ..config import RunSpec, from_dict, log_every, resolve, spec_changes, to_dict
from ..errors import FluxMatchError
from ..kinds import Evaluation, get_kind
from ..kinds.base import finite_or_raise
from ..train import TrainConfig, Trainer
from ..train.distributed import agree, current
from ..train.trainer import RunLock
from .artifacts import CHECKPOINT_FILES, plot_loss, save_npy, write_metrics
from .build import build_field, build_objective
from .directory import replacement_target, swap_in, training_dir
from .run import open_run
from .sampling import draw


def train_config(spec: RunSpec, progress: bool) -> TrainConfig:
    """The trainer's settings from a resolved spec."""
    t = spec.train
    return TrainConfig(
        steps=t.steps, batch_size=t.batch_size, lr=t.lr, lr_schedule=t.lr_schedule, ema_decay=t.ema_decay, grad_clip=t.grad_clip,
        seed=t.seed, log_every=log_every(t.steps), checkpoint_every=t.checkpoint_every, progress=progress, device=t.device,
        snapshot_every=t.snapshot_every, lr_rampup=t.lr_rampup, ema_halflife=t.ema_halflife, ema_rampup=t.ema_rampup,
        precision=t.precision, compile=t.compile, workers=t.workers, log=t.log,
    )


def fit(spec: RunSpec, out, resume: bool = False, progress: bool = True) -> dict:
    """Train the run a spec describes into ``out`` (checkpoints, log.csv, config.json with the
    resolved spec and the data's fingerprint); returns the trainer's summary. The same spec and
    seed give the same weights.

    With ``resume``, the spec must be the run's own (only the settings in
    :data:`~fluxmatch.config.RESUMABLE_CHANGES` may differ) and the data must be the data it
    was trained on; otherwise FluxMatchError names what changed.
    """
    spec = resolve(spec)
    kind = get_kind(spec.data.kind)
    source = kind.load(spec.data, spec.train.seed)
    check_batch_memory(spec, source.dim)
    fingerprint = source.fingerprint()
    if resume:
        check_resumable(out, spec, fingerprint)
    # seeded before any network is built, the field first: the same seed gives every objective the same initial field
    torch.manual_seed(spec.train.seed)
    field = build_field(spec, source)
    objective = build_objective(spec, field, source)
    metadata = {"run": to_dict(spec), "data_fingerprint": fingerprint}
    trainer = Trainer(field, objective, source, train_config(spec, progress), out, metadata=metadata)
    return {"summary": trainer.fit(resume=resume), "source": source}


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_batch_memory(spec: RunSpec, event_shape) -> None:
    """Refuse a batch whose training step cannot fit in memory (before the kernel kills the
    process): about 64 floats of activations per coordinate, and for flux the B×B matrices of the
    batch posterior."""
    b, d = spec.train.batch_size, math.prod(event_shape)
    need = 4 * b * d * 64 + (4 * 8 * b * b if spec.objective.name == "flux" else 0)
    free = available_memory()
    if free is not None and need > free:
        raise FluxMatchError(
            f"--batch-size {b} needs about {need / 2**30:.3g} GiB for one training step, more than the {free / 2**30:.3g} GiB available: use a smaller batch"
        )


def stored_spec(out) -> tuple[RunSpec | None, dict]:
    """The resolved spec a run directory was trained with (None for runs written before run
    specs) and its parsed config.json."""
    from ..train.checkpoint import read_config

    config = read_config(out)
    section = config.get("run")
    if not isinstance(section, dict):
        return None, config
    return resolve(from_dict(section, f"{Path(out) / 'config.json'}, section 'run'")), config


def check_resumable(out, spec: RunSpec, fingerprint: str) -> None:
    """Refuse to resume the run in ``out`` with a different spec or different data."""
    old, config = stored_spec(out)
    if old is not None:
        changes = spec_changes(old, spec)
        if changes:
            what = "; ".join(f"{name} was {a!r}, now {b!r}" for name, a, b in changes)
            raise FluxMatchError(f"cannot resume {out} with different settings ({what}): resume with the run's own settings, or train a new run")
    stored = config.get("data_fingerprint")
    if stored is not None and stored != fingerprint:
        raise FluxMatchError(f"cannot resume {out}: the data {spec.data.spec} differs from the data the run was trained on (fingerprint {stored}, now {fingerprint})")


def train_run(spec: RunSpec, out, resume: bool = False, progress: bool = True, overwrite: bool = False) -> dict:
    """Train, sample, evaluate and plot the run ``spec`` describes, writing a complete run directory.

    ``out`` must be a new path, an empty directory, or (with ``resume``) the run to continue;
    ``overwrite`` replaces the run in ``out`` by one trained beside it and swapped in only when
    complete (see :mod:`fluxmatch.run.directory`). Anything else is refused before any work.

    ``out`` gets the checkpoint (config.json with the resolved spec, model.safetensors, trainer
    state, log.csv), ``samples.npy`` (n, *event_shape) in the data's own units, the kind's
    plots (points: samples.png, field.png for 2-D fixed-σ fields; images: samples.png,
    data.png), ``loss.png`` and ``metrics.json``.

    Returns the content of metrics.json: the kind's metrics, ``train`` (the trainer's summary),
    ``sampler`` (its settings, NFE per sample, n, seed), ``data``, ``objective``, ``noise``
    and ``files``.

    Launched by torchrun (see :mod:`fluxmatch.train.distributed`), every rank trains and rank 0
    alone checks and writes the directory, samples, evaluates and plots; the other ranks return
    ``{"train": summary, "rank": r, "files": []}``.
    """
    spec = resolve(spec)
    ctx = current()
    out = agree(lambda: training_dir(out, resume, overwrite), ctx)
    final = replacement_target(out) or Path(out)  # a staging directory (--overwrite) is swapped in when complete
    if not ctx.is_main:
        return {"train": fit(spec, out, resume, progress=False)["summary"], "rank": ctx.rank, "files": []}
    try:
        with RunLock(final) if final != out and final.is_dir() else contextlib.nullcontext():  # no trainer may use the run being replaced
            result = _train_into(spec, out, resume, progress)
            swap_in(out, final)
    except BaseException:
        if final != out and not (out / "trainer.safetensors").is_file():
            shutil.rmtree(out, ignore_errors=True)  # a replacement that never checkpointed: nothing to keep
        raise
    return result


def _train_into(spec: RunSpec, out: Path, resume: bool, progress: bool) -> dict:
    trained = fit(spec, out, resume, progress)
    run = open_run(out)
    n, seed = run.spec.evaluation.n, run.spec.train.seed
    samples, nfe = draw(run, n, seed, progress=progress)
    save_npy(out / "samples.npy", run.kind.to_data_units(samples, run.data_meta))
    files = [*CHECKPOINT_FILES, "samples.npy"]
    finite_or_raise(samples, f"the model is saved in {out}")
    ev = Evaluation(run, samples, seed, nfe=nfe, source=trained["source"])
    files += run.kind.plots(ev, out)
    files.append(plot_loss(out))
    sampler = {k: v for k, v in to_dict(run.spec)["sampler"].items() if v is not None}
    result = {
        **run.kind.metrics(ev),
        "train": trained["summary"],
        "sampler": {**sampler, "nfe": nfe, "n": n, "seed": seed},
        "data": run.spec.data.spec,
        "objective": run.spec.objective.name,
        "noise": run.spec.objective.noise,
        "files": [*files, "metrics.json"],
    }
    return write_metrics(out, result)
