"""Train a run from its spec, then sample, evaluate and plot it: one pipeline for every kind of data."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import RunSpec, log_every, resolve, to_dict
from ..kinds import Evaluation, get_kind
from ..kinds.base import finite_or_raise
from ..train import TrainConfig, Trainer
from .artifacts import CHECKPOINT_FILES, plot_loss, save_npy, write_metrics
from .build import build_field, build_objective
from .run import open_run
from .sampling import draw


def train_config(spec: RunSpec, progress: bool) -> TrainConfig:
    """The trainer's settings from a resolved spec."""
    t = spec.train
    return TrainConfig(
        steps=t.steps, batch_size=t.batch_size, lr=t.lr, lr_schedule=t.lr_schedule, ema_decay=t.ema_decay, grad_clip=t.grad_clip,
        seed=t.seed, log_every=log_every(t.steps), checkpoint_every=t.checkpoint_every, progress=progress, device=t.device,
    )


def fit(spec: RunSpec, out, resume: bool = False, progress: bool = True) -> dict:
    """Train the run a spec describes into ``out`` (checkpoints, log.csv, config.json with the
    resolved spec); returns the trainer's summary. The same spec and seed give the same weights."""
    spec = resolve(spec)
    kind = get_kind(spec.data.kind)
    source = kind.load(spec.data, spec.train.seed)
    # seeded before any network is built, the field first: the same seed gives every objective the same initial field
    torch.manual_seed(spec.train.seed)
    field = build_field(spec, source)
    objective = build_objective(spec, field, source)
    trainer = Trainer(field, objective, source, train_config(spec, progress), out, metadata={"run": to_dict(spec)})
    return {"summary": trainer.fit(resume=resume), "source": source}


def train_run(spec: RunSpec, out, resume: bool = False, progress: bool = True) -> dict:
    """Train, sample, evaluate and plot the run ``spec`` describes, writing a complete run directory.

    ``out`` gets the checkpoint (config.json with the resolved spec, model.safetensors, trainer
    state, log.csv), ``samples.npy`` (n, *event_shape) in the data's own units, the kind's
    plots (points: samples.png, field.png for 2-D fixed-σ fields; images: samples.png,
    data.png), ``loss.png`` and ``metrics.json``.

    Returns the content of metrics.json: the kind's metrics, ``train`` (the trainer's summary),
    ``sampler`` (its settings, NFE per sample, n, seed), ``data``, ``objective``, ``noise``
    and ``files``.
    """
    out = Path(out)
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
