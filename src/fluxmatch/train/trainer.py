"""One training loop for every objective: Adam, grad clipping, EMA, LR schedule, logs, checkpoints.

While :meth:`Trainer.fit` runs it holds an exclusive lock on the run directory (``.lock``, with
the trainer's pid), so two trainers never write into one run, and, in the main thread, turns
SIGINT and SIGTERM into a checkpoint at the current step followed by
:class:`~fluxmatch.errors.TrainingInterrupted`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import signal
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

import torch

from ..errors import FluxMatchError, TrainingInterrupted
from ..fields import call_field
from ..objectives import Objective
from .checkpoint import (
    CHECKPOINT_FILES,
    TRAINER_TENSORS,
    atomic_write_bytes,
    is_finite_number,
    list_snapshots,
    load_training_state,
    read_rng_states,
    remove_stale_temporaries,
    save_checkpoint,
    save_snapshot,
    sync_trainer_json,
)
from .distributed import (
    Context,
    agree,
    average_gradients,
    broadcast_parameters,
    current,
    device_for,
    gather_rng_states,
    rank_seed,
    restore_rng_states,
)
from .ema import EMA

try:
    import fcntl
except ImportError:  # not POSIX: no run-directory lock
    fcntl = None

LR_SCHEDULES = ("cosine", "constant", "ramp")
PRECISIONS = ("fp32", "bf16", "fp16")
LOGS = ("csv", "tensorboard")
TENSORBOARD_DIR = "tensorboard"
EDM_LR_RAMPUP = 10_000_000
"""EDM's learning-rate ramp-up, in training images (10 M images)."""
LOG_FILE = "log.csv"
LOG_COLUMNS = ("step", "loss", "grad_norm", "lr", "step_ms")
LOCK_FILE = ".lock"
RUN_MARKERS = (*CHECKPOINT_FILES, LOG_FILE)
"""The files a training run writes: any of them means a directory already holds a run."""
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}




def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; any other name as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise FluxMatchError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FluxMatchError(f"device {name!r} asked for, but this torch build sees no CUDA GPU")
    return device


@dataclass
class TrainConfig:
    """Training hyperparameters.

    Attributes:
        steps: total optimizer steps (a resumed run continues up to this number).
        batch_size: points per batch.
        lr: peak Adam learning rate.
        lr_schedule: "cosine" (2% linear warm-up, then cosine decay to 10% of ``lr``),
            "constant", or "ramp" (EDM's: linear from 0 to ``lr`` over ``lr_rampup`` training
            images, then constant).
        lr_rampup: the "ramp" schedule's length in training images (default EDM's 10 M).
        ema_decay: asymptotic decay of the weight EMA used for sampling.
        ema_halflife: EDM's EMA instead: the half-life in training images (EDM: 500 000),
            ramped up as min(halflife, ema_rampup · images seen); None keeps ``ema_decay``.
        ema_rampup: the half-life's ramp-up ratio (EDM: 0.05), or None for none.
        precision: "fp32", or autocast in "bf16" (the paper's) or "fp16" (with a gradient
            scaler) for the objective's forward and backward; weights and Adam stay float32.
        compile: compile the field's forward with ``torch.compile`` (``Module.compile``).
        workers: 0 draws batches in the training process; N > 0 prefetches them in N
            DataLoader workers (:class:`~fluxmatch.data.loader.BatchLoader`, batches seeded
            per step, so a resumed run gets the same batches).
        log: "csv" (log.csv), or "tensorboard": log.csv and TensorBoard event files in
            ``tensorboard/`` (needs the tensorboard package).
        grad_clip: largest gradient norm of each parameter group (None: no clipping).
        seed: seeds the global torch RNG (used by the objective) and the data generator.
        log_every: append a row to log.csv every this many steps (and at the last step).
        checkpoint_every: checkpoint every this many steps (and at the last step).
        snapshot_every: keep the EMA weights every this many steps in ``snapshots/`` (None: never).
        progress: show a tqdm progress bar.
        device: where the field, the objective and each batch live ("cpu", "cuda", "cuda:1",
            or "auto": CUDA when available); checkpoints are always written from CPU copies.
    """

    steps: int = 2000
    batch_size: int = 512
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    ema_decay: float = 0.999
    grad_clip: float | None = 1.0
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    progress: bool = True
    device: str = "cpu"
    snapshot_every: int | None = None
    lr_rampup: int | None = None
    ema_halflife: float | None = None
    ema_rampup: float | None = None
    precision: str = "fp32"
    compile: bool = False
    workers: int = 0
    log: str = "csv"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "snapshot_every"):
            value = getattr(self, name)
            if value is None and name == "snapshot_every":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FluxMatchError(f"{name} must be a positive integer, got {value!r}")
        if not (is_finite_number(self.lr) and 0 < self.lr <= FLOAT32_MAX):
            raise FluxMatchError(f"the learning rate must be a positive finite number at most {FLOAT32_MAX:.7g} (float32's largest), got {self.lr!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise FluxMatchError(f"unknown learning-rate schedule {self.lr_schedule!r}: expected one of {LR_SCHEDULES}")
        if not (is_finite_number(self.ema_decay) and 0.0 <= self.ema_decay < 1.0):
            raise FluxMatchError(f"the EMA decay must lie in [0, 1), got {self.ema_decay!r}")
        if self.grad_clip is not None and not (is_finite_number(self.grad_clip) and self.grad_clip > 0):
            raise FluxMatchError(f"grad_clip must be a positive number or None, got {self.grad_clip!r}")
        self._check_scale_options()

    def _check_scale_options(self) -> None:
        if self.lr_rampup is not None and (isinstance(self.lr_rampup, bool) or not isinstance(self.lr_rampup, int) or self.lr_rampup < 1):
            raise FluxMatchError(f"lr_rampup must be a positive number of training images, got {self.lr_rampup!r}")
        if self.lr_rampup is not None and self.lr_schedule != "ramp":
            raise FluxMatchError(f"lr_rampup applies to the 'ramp' learning-rate schedule, not {self.lr_schedule!r}")
        if self.ema_halflife is not None and not (is_finite_number(self.ema_halflife) and self.ema_halflife > 0):
            raise FluxMatchError(f"ema_halflife must be a positive number of training images, got {self.ema_halflife!r}")
        if self.ema_rampup is not None and (self.ema_halflife is None or not (is_finite_number(self.ema_rampup) and self.ema_rampup > 0)):
            raise FluxMatchError(f"ema_rampup must be a positive ratio, and applies only with ema_halflife; got {self.ema_rampup!r}")
        if self.precision not in PRECISIONS:
            raise FluxMatchError(f"unknown precision {self.precision!r}: expected one of {PRECISIONS}")
        if not isinstance(self.compile, bool):
            raise FluxMatchError(f"compile must be True or False, got {self.compile!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise FluxMatchError(f"workers must be an integer ≥ 0, got {self.workers!r}")
        if self.log not in LOGS:
            raise FluxMatchError(f"unknown log {self.log!r}: expected one of {LOGS}")

    def lr_at(self, step: int) -> float:
        """Learning rate for the optimizer step with 0-based index ``step``."""
        if self.lr_schedule == "constant":
            return self.lr
        if self.lr_schedule == "ramp":
            rampup = EDM_LR_RAMPUP if self.lr_rampup is None else self.lr_rampup
            return self.lr * min(1.0, (step + 1) * self.batch_size / rampup)
        warmup = max(1, round(0.02 * self.steps))
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, self.steps - warmup))
        return self.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


class RunLock:
    """An exclusive ``fcntl.flock`` on ``<run_dir>/.lock`` (holding the owner's pid), taken on
    ``__enter__`` and released, with the file removed, on ``__exit__``.

    Any other holder, another process or another open of the file in this one, is refused:
    ``__enter__`` raises FluxMatchError naming the directory and the holder's pid. Does nothing
    where ``fcntl`` is missing (not POSIX).
    """

    def __init__(self, run_dir) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fd: int | None = None

    def _open_locked(self) -> int | None:
        """A descriptor of the lock file, locked; None when the file was replaced meanwhile."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as err:
            raise FluxMatchError(f"cannot lock {self.run_dir}: {self.path} cannot be opened ({err.strerror or err})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise FluxMatchError(f"{self.run_dir} is in use: another trainer (pid {holder}) holds {self.path}; wait for it to finish or stop it") from None
        except OSError as err:
            os.close(fd)
            raise FluxMatchError(f"cannot lock {self.run_dir}: flock on {self.path} failed ({err.strerror or err})") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(self.path))
        except OSError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed it after we opened it: lock the new one
        return None

    def __enter__(self) -> RunLock:
        if fcntl is None:
            return self
        fd = None
        while fd is None:
            fd = self._open_locked()
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self.fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


class StopSignals:
    """While active, SIGINT and SIGTERM only record the first signal's name in ``received``
    (repeats are ignored); the previous handlers come back on exit. Outside the main thread,
    where Python cannot install handlers, it does nothing."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.received: str | None = None
        self.previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                signum = getattr(signal, name)
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self.previous.clear()


@dataclass
class _Loop:
    """What one call of :meth:`Trainer.fit` carries from step to step."""

    optimizer: torch.optim.Optimizer
    ema: EMA
    generator: torch.Generator
    run_config: dict
    start: int
    last_checkpoint: int | None
    step_ms: list[float] = dataclass_field(default_factory=list)
    loss_value: float = float("nan")
    last: dict | None = None
    last_logged: int | None = None
    log_handle: object = None
    writer: object = None
    bar: object = None
    ctx: Context = dataclass_field(default_factory=Context)
    signals: StopSignals | None = None
    device: torch.device = dataclass_field(default_factory=lambda: torch.device("cpu"))
    scaler: object = None
    batches: object = None
    board: object = None
    stop: str | None = None

    def autocast(self, precision: str):
        """The autocast context of ``precision`` on this loop's device (a no-op for fp32)."""
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


class Trainer:
    """Trains a field with an objective on a data source, writing a run directory.

    Args:
        field: the field to train (any module called as ``field(x, c)``, with a ``config``).
        objective: module called as ``objective(field, x) -> ObjectiveOutput``; its own
            parameters (e.g. a learned potential or horizon sampler) are optimized too, in the
            groups returned by ``objective.param_groups(field, lr)`` when it defines that.
        data: a :class:`fluxmatch.data.DataSource` (``.batch(b, generator)``, ``.data``,
            ``.dim``, ``.name``).
        config: :class:`TrainConfig`.
        out_dir: run directory for checkpoints and ``log.csv`` (see
            :mod:`fluxmatch.train.checkpoint` for the layout).
        metadata: further top-level sections of config.json (the run pipeline stores the
            resolved run spec there as ``"run"``).

    Example:
        >>> trainer = Trainer(MLPField(2), FluxMatching(0.2236, dim=2), DataSource.from_spec("ring", 0),
        ...                   TrainConfig(steps=20, progress=False), "runs/demo")
        >>> trainer.fit()["steps"]
        20
    """

    def __init__(self, field, objective, data, config: TrainConfig, out_dir, metadata: dict | None = None) -> None:
        self.field = field
        self.objective = objective
        self.data = data
        self.config = config
        self.out_dir = Path(out_dir)
        self.metadata = dict(metadata or {})
        self.param_groups = self._param_groups()
        self.parameters = [p for group in self.param_groups for p in group["params"]]
        if not self.parameters:
            raise FluxMatchError("the field has no trainable parameters")
        for name, module in (("field", field), ("objective", objective)):
            if not isinstance(getattr(module, "config", None), dict):
                raise FluxMatchError(f"the {name} needs a `config` dict so that checkpoints can rebuild it")

    # -----------------------------------------------------------------------------------------

    def _param_groups(self) -> list[dict]:
        """Adam's parameter groups: the objective's ``param_groups(field, lr)`` if it defines them
        (e.g. per-player learning-rate scales), else one group of field + objective parameters.
        Each group gets ``lr_scale``, its learning rate relative to ``config.lr``, which the
        schedule multiplies."""
        lr = self.config.lr
        if isinstance(self.objective, Objective):
            groups = [dict(group) for group in self.objective.param_groups(self.field, lr)]
        else:
            groups = [{"params": [*self.field.parameters(), *self.objective.parameters()], "lr": lr}]
        for group in groups:
            group["params"] = [p for p in group["params"] if p.requires_grad]
            group["lr_scale"] = float(group.get("lr", lr)) / lr
            group["lr"] = lr * group["lr_scale"]
        return [group for group in groups if group["params"]]

    def _conditioning(self, b: int):
        """What the field is called with in the up-front shape check: t = 1 for a time-conditioned
        field (flow matching), the objective's fixed σ, or σ = 1 for a noise-annealed objective."""
        if getattr(self.field, "conditioning", None) == "time":
            return torch.ones(b)
        sigma = getattr(self.objective, "sigma", None)
        if sigma is not None:
            return torch.full((b,), float(sigma))
        return None if getattr(self.objective, "noise", None) is None else torch.ones(b)

    @property
    def uses_labels(self) -> bool:
        """Whether batches carry class labels: labelled data and a class-conditional field."""
        return getattr(self.data, "labels", None) is not None and int(getattr(self.field, "n_classes", 0) or 0) > 0

    def _labels_for_check(self, b: int):
        return torch.as_tensor(self.data.labels[:b]).long() if self.uses_labels else None

    def _training_points(self, n: int) -> torch.Tensor:
        """The first n training rows, float32: the source's ``head(n)`` where it has one (an
        image source never converts its whole set at once), else ``data[:n]``."""
        head = getattr(self.data, "head", None)
        points = torch.as_tensor(head(n) if head is not None else self.data.data[:n]).float()
        if points.ndim < 2 or points.shape[0] == 0:
            raise FluxMatchError(f"the data {self.data.name!r} must have shape (N, ...) with N ≥ 1, got {tuple(points.shape)}")
        return points

    def _moments(self) -> tuple[list[float], list[float]]:
        """Per-coordinate mean and std of the training rows (the source's ``moments()`` where it has one)."""
        moments = getattr(self.data, "moments", None)
        if moments is not None:
            mean, std = moments()
        else:
            points = torch.as_tensor(self.data.data).float().reshape(len(self.data.data), -1)
            mean, std = points.mean(0), points.std(0, unbiased=False)
        return [float(v) for v in mean], [float(v) for v in std]

    def _validate(self) -> None:
        """Check the field maps a few data points to a tensor of their shape, before any training."""
        device = next(self.field.parameters()).device
        points = self._training_points(8).to(device)
        labels = self._labels_for_check(points.shape[0])
        cond = self._conditioning(points.shape[0])
        with torch.no_grad():
            call_field(self.field, points, None if cond is None else cond.to(device), None if labels is None else labels.to(device))

    def _run_config(self) -> dict:
        mean, std = self._moments()
        return {
            "train": asdict(self.config),
            "data": {
                "spec": str(getattr(self.data, "spec", self.data.name)),
                "name": self.data.name,
                "dim": [int(d) for d in self.data.dim],
                "mean": mean,
                "std": std,
                "units": getattr(self.data, "units", None),
                "n_classes": int(getattr(self.data, "n_classes", 0) or 0),
            },
            **self.metadata,
        }

    def _open_log(self, start: int, columns: list[str]):
        """log.csv opened for appending; a fresh run starts it anew, a resumed one drops rows after ``start``."""
        path = self.out_dir / LOG_FILE
        rows, header = [], None
        if start > 0 and path.is_file():
            with path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                header = reader.fieldnames
                rows = [row for row in reader if row.get("step") and int(float(row["step"])) <= start]
        header = list(header or columns)
        # the kept rows are written atomically, so that a crash now cannot lose the run's history
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=header, extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(path, text.getvalue().encode("utf-8"))
        handle = path.open("a", newline="")
        return handle, csv.DictWriter(handle, fieldnames=header, extrasaction="ignore", restval="")

    def _diverged(self, step: int, what: str, last_checkpoint: int | None) -> FluxMatchError:
        where = (
            f"the last good checkpoint (step {last_checkpoint}) is in {self.out_dir}"
            if last_checkpoint is not None
            else "no checkpoint had been written yet"
        )
        return FluxMatchError(f"training diverged at step {step} (non-finite {what}); {where}")

    def _check_float32(self) -> None:
        for name, module in (("field", self.field), ("objective", self.objective)):
            for key, parameter in module.named_parameters():
                if parameter.is_floating_point() and parameter.dtype != torch.float32:
                    raise FluxMatchError(f"fluxmatch trains float32 fields; call {name}.float() (the {name}'s {key!r} is {parameter.dtype})")

    def _refuse_existing_run(self) -> None:
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise FluxMatchError(f"{self.out_dir} is not a directory: train into a new directory")
        found = [name for name in RUN_MARKERS if os.path.lexists(self.out_dir / name)]
        if found:
            raise FluxMatchError(
                f"{self.out_dir} already holds a training run ({', '.join(found)}); resume it (resume=True / --resume), "
                "or train into a new directory (--overwrite replaces it)"
            )

    def _next_batch(self, loop: _Loop, device: torch.device):
        """This rank's part of the step's batch, on ``device``: from the prefetching loader
        (workers > 0) or drawn here from the run's data generator."""
        if loop.batches is not None:
            batch = next(loop.batches)
        else:
            part = {} if loop.ctx.part is None else {"part": loop.ctx.part}
            batch = self.data.sample_batch(self.config.batch_size, loop.generator, **part)
        return batch.to(device)

    def _forward(self, loop: _Loop, device: torch.device):
        """The objective on this step's batch: ``(output, mean loss)``."""
        batch = self._next_batch(loop, device)
        extras = dict(batch.extras)
        if extras and not getattr(self.objective, "takes_extras", False):
            raise FluxMatchError(f"the data's batches carry {', '.join(extras)}, which the {type(self.objective).__name__} objective does not pass to the field")
        if self.uses_labels:
            extras["labels"] = batch.labels
        with loop.autocast(self.config.precision):
            out = self.objective(self.field, batch.x, **extras)
            loss = out.loss.float().mean()
        return out, loss

    def _optimize(self, loop: _Loop, k: int, device: torch.device):
        """One optimizer step (0-based index ``k``) on a fresh batch: ``(output, loss, grad norm)``.

        Under data parallelism the gradients, the loss and the stop flag are averaged across
        ranks before the checks, so every rank clips, steps, or stops alike."""
        cfg = self.config
        out, loss = self._forward(loop, device)
        loss_value = float(loss.detach())
        if loop.ctx.world == 1 and not math.isfinite(loss_value):
            raise self._diverged(k + 1, "loss", loop.last_checkpoint)
        loop.optimizer.zero_grad(set_to_none=True)
        (loss if loop.scaler is None else loop.scaler.scale(loss)).backward()
        if loop.ctx.world > 1:
            stop = float(loop.signals is not None and loop.signals.received is not None)
            loss_value, stop = average_gradients(self.parameters, [loss_value, stop], loop.ctx)
            if stop > 0:
                loop.stop = (loop.signals.received if loop.signals is not None else None) or "SIGTERM"
            if not math.isfinite(loss_value):
                raise self._diverged(k + 1, "loss", loop.last_checkpoint)
        if loop.scaler is not None:
            loop.scaler.unscale_(loop.optimizer)
        # each group (the field, an objective's own networks) is clipped on its own, so that
        # a critic's large gradients never shrink the field's step
        max_norm = cfg.grad_clip if cfg.grad_clip is not None else float("inf")
        norms = [float(torch.nn.utils.clip_grad_norm_(g["params"], max_norm)) for g in loop.optimizer.param_groups]
        if loop.scaler is not None:
            loop.scaler.step(loop.optimizer)  # skips the step when fp16 overflowed, and lowers the scale
            loop.scaler.update()
        elif not all(math.isfinite(n) for n in norms):
            raise self._diverged(k + 1, "gradient", loop.last_checkpoint)
        else:
            loop.optimizer.step()
        loop.ema.update(self.field, k)
        return out, loss_value, norms[0]

    def _log(self, loop: _Loop) -> None:
        """Append the last step's row to log.csv (opening it on the first row), and to the
        TensorBoard events when logging there; rank 0 only."""
        if not loop.ctx.is_main:
            return
        last = loop.last
        row = {"step": last["step"], "loss": last["loss"], "grad_norm": last["grad_norm"], "lr": last["lr"], "step_ms": round(last["step_ms"], 3)}
        row.update({name: float(v) for name, v in last["terms"].items()})
        if loop.writer is None:
            loop.log_handle, loop.writer = self._open_log(loop.start, list(row))
        loop.writer.writerow(row)
        loop.log_handle.flush()
        if loop.board is not None:
            for name, value in row.items():
                if name != "step":
                    loop.board.add_scalar(f"train/{name}", float(value), last["step"])
            loop.board.flush()
        loop.last_logged = last["step"]

    def _checkpoint(self, loop: _Loop, step: int) -> None:
        """A checkpoint at ``step``: every rank's RNG states gathered (a collective), rank 0 writes."""
        states = gather_rng_states(loop.ctx, loop.device)
        if loop.ctx.is_main:
            save_checkpoint(self.out_dir, self.field, self.objective, loop.optimizer, loop.ema, step, loop.run_config, loop.generator, rng_states=states)
        loop.last_checkpoint = step

    def _train_step(self, loop: _Loop, k: int, device: torch.device) -> None:
        """Optimizer step ``k`` (0-based), then the progress bar, log row and checkpoint it is due."""
        cfg = self.config
        tick = time.perf_counter()
        lr = cfg.lr_at(k)
        for group in loop.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        out, loop.loss_value, grad_norm = self._optimize(loop, k, device)
        step = k + 1
        loop.step_ms.append((time.perf_counter() - tick) * 1e3)
        loop.last = {"step": step, "loss": loop.loss_value, "grad_norm": grad_norm, "lr": lr, "step_ms": loop.step_ms[-1], "terms": out.terms}
        if loop.bar is not None:
            loop.bar.update(1)
            loop.bar.set_postfix({"loss": f"{loop.loss_value:.4g}", **{name: f"{v:.4g}" for name, v in out.terms.items()}}, refresh=False)
        if step % cfg.log_every == 0 or step == cfg.steps:
            self._log(loop)
        if cfg.snapshot_every and step % cfg.snapshot_every == 0 and loop.ctx.is_main:
            save_snapshot(self.out_dir, loop.ema, step)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            self._checkpoint(loop, step)

    def _stop(self, loop: _Loop, signal_name: str) -> TrainingInterrupted:
        """Log and checkpoint the last completed step (unless already done) after a signal."""
        step = loop.last["step"]
        if loop.last_logged != step:
            self._log(loop)
        if loop.last_checkpoint != step:
            self._checkpoint(loop, step)
        return TrainingInterrupted(step, self.out_dir, signal_name, EXIT_CODES.get(signal_name, 1))

    # -----------------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> dict:
        """Train up to ``config.steps`` and return a summary.

        Args:
            resume: continue from the checkpoint in ``out_dir`` (weights, optimizer, EMA, RNG and
                data-generator state) instead of starting afresh.

        Returns:
            ``{"steps", "steps_run", "resumed_from", "wall_time_s", "median_step_ms",
            "final_loss"}``.

        While it runs, ``out_dir/.lock`` is locked, and (in the main thread) SIGINT and SIGTERM
        stop training after the current step with a checkpoint at that step.

        Raises:
            FluxMatchError: a field or objective parameter is not float32; the field's output
                has the wrong shape; there is nothing to resume; without ``resume``, ``out_dir``
                already holds a run (trainer.safetensors, config.json, log.csv, model.safetensors
                or trainer.json; nothing is touched); another trainer holds the directory's lock; the checkpoint to resume is
                invalid; the loss or gradient becomes non-finite (the last good checkpoint is kept).
            TrainingInterrupted: SIGINT or SIGTERM arrived (a FluxMatchError whose ``step``,
                ``run_dir``, ``signal_name`` and ``exit_code``, 130 or 143, say where it stopped).
        """
        self._check_float32()
        ctx = current()
        device = device_for(resolve_device(self.config.device), ctx)
        self.field.to(device)
        self.objective.to(device)
        self._validate()
        self._check_tensorboard()

        def prepare() -> None:
            if resume and not (self.out_dir / TRAINER_TENSORS).is_file():
                raise FluxMatchError(f"nothing to resume in {self.out_dir}: {TRAINER_TENSORS} is missing")
            if not resume:
                self._refuse_existing_run()
            self.out_dir.mkdir(parents=True, exist_ok=True)

        agree(prepare, ctx)
        with contextlib.ExitStack() as stack, StopSignals() as signals:

            def lock() -> None:  # rank 0 alone holds the run's lock
                stack.enter_context(RunLock(self.out_dir))
                if not resume:
                    self._refuse_existing_run()  # again: another trainer may have finished meanwhile
                remove_stale_temporaries(self.out_dir)

            agree(lock, ctx)
            return self._fit_locked(resume, device, signals, ctx)

    def _check_tensorboard(self) -> None:
        if self.config.log != "tensorboard":
            return
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise FluxMatchError("--log tensorboard needs the tensorboard package: pip install 'fluxmatch[tensorboard]' (or pip install tensorboard)") from None

    def _open_board(self, loop: _Loop):
        """TensorBoard's writer into ``tensorboard/`` (rank 0, when logging there); a resumed
        run drops the events after its checkpoint's step."""
        if self.config.log != "tensorboard" or not loop.ctx.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.out_dir / TENSORBOARD_DIR), purge_step=loop.start + 1 if loop.start else None)

    def _restore(self, loop: _Loop) -> int:
        """Resume: weights, optimizer, EMA, this rank's RNG states and the data generator."""
        start = load_training_state(self.out_dir, self.field, self.objective, loop.optimizer, loop.ema, loop.generator)
        restore_rng_states(read_rng_states(self.out_dir), loop.ctx, loop.device, self.config.seed, start)
        if loop.ctx.is_main:
            sync_trainer_json(self.out_dir)
            for step, path in list_snapshots(self.out_dir):
                if step > start:  # kept by a run killed after it and before the checkpoint: training replays those steps
                    path.unlink(missing_ok=True)
        return start

    def _new_loop(self, device: torch.device, signals: StopSignals, ctx: Context, resume: bool) -> _Loop:
        cfg = self.config
        if ctx.world > 1 and not resume:  # every rank starts from rank 0's weights (a resume loads them)
            broadcast_parameters([self.field, self.objective], ctx)
        torch.manual_seed(rank_seed(cfg.seed, ctx.rank))
        generator = torch.Generator().manual_seed(cfg.seed)
        optimizer = torch.optim.Adam([dict(group) for group in self.param_groups], lr=cfg.lr)
        ema = EMA(self.field, cfg.ema_decay, halflife=cfg.ema_halflife, batch_size=cfg.batch_size, rampup=cfg.ema_rampup)
        scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
        return _Loop(optimizer, ema, generator, self._run_config(), 0, None, ctx=ctx, signals=signals, device=device, scaler=scaler)

    def _start(self, loop: _Loop, resume: bool) -> None:
        """Restore a resumed run's state, then compile and open the loader, bar and TensorBoard."""
        cfg = self.config
        if resume:
            loop.start = loop.last_checkpoint = self._restore(loop)
        if cfg.compile:
            self.field.compile()
        if cfg.workers > 0:
            from ..data.loader import BatchLoader

            loader = BatchLoader(self.data, cfg.batch_size, cfg.seed, loop.start, part=loop.ctx.part, workers=cfg.workers, pin_memory=loop.device.type == "cuda")
            loop.batches = iter(loader)
        loop.board = self._open_board(loop)
        if cfg.progress and loop.start < cfg.steps and loop.ctx.is_main:
            from tqdm.auto import tqdm

            loop.bar = tqdm(total=cfg.steps, initial=loop.start, desc="train", dynamic_ncols=True)

    def _fit_locked(self, resume: bool, device: torch.device, signals: StopSignals, ctx: Context) -> dict:
        cfg = self.config
        loop = self._new_loop(device, signals, ctx, resume)
        self.field.train()
        self.objective.train()
        began = time.perf_counter()
        # denormal floats from exp() of far-apart points slow the B×B softmaxes several-fold
        torch.set_flush_denormal(True)
        try:
            self._start(loop, resume)
            for k in range(loop.start, cfg.steps):
                self._train_step(loop, k, device)
                stop = loop.stop if ctx.world > 1 else signals.received
                if stop is not None:
                    raise self._stop(loop, stop)
            if ctx.world == 1 and signals.received is not None:  # arrived before any step ran (a finished run resumed): its checkpoint stands
                raise TrainingInterrupted(max(loop.start, cfg.steps), self.out_dir, signals.received, EXIT_CODES.get(signals.received, 1))
        finally:
            torch.set_flush_denormal(False)
            for closer in (loop.bar, loop.log_handle, loop.board):
                if closer is not None:
                    closer.close()
        return {
            "steps": max(loop.start, cfg.steps),
            "steps_run": len(loop.step_ms),
            "resumed_from": loop.start,
            "wall_time_s": round(time.perf_counter() - began, 3),
            "median_step_ms": round(statistics.median(loop.step_ms), 3) if loop.step_ms else None,
            "final_loss": loop.loss_value if loop.step_ms else None,
        }
