"""One training loop for every objective: Adam, grad clipping, EMA, LR schedule, logs, checkpoints."""

from __future__ import annotations

import csv
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import FluxMatchError
from ..fields import call_field
from ..objectives import Objective
from .checkpoint import TRAINER_JSON, TRAINER_TENSORS, load_training_state, save_checkpoint
from .ema import EMA

LR_SCHEDULES = ("cosine", "constant")
LOG_FILE = "log.csv"
LOG_COLUMNS = ("step", "loss", "grad_norm", "lr", "step_ms")


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
        lr_schedule: "cosine" (2% linear warm-up, then cosine decay to 10% of ``lr``) or
            "constant".
        ema_decay: asymptotic decay of the weight EMA used for sampling.
        grad_clip: largest gradient norm of each parameter group (None: no clipping).
        seed: seeds the global torch RNG (used by the objective) and the data generator.
        log_every: append a row to log.csv every this many steps (and at the last step).
        checkpoint_every: checkpoint every this many steps (and at the last step).
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

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FluxMatchError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise FluxMatchError(f"the learning rate must be a positive number, got {self.lr!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise FluxMatchError(f"unknown learning-rate schedule {self.lr_schedule!r}: expected one of {LR_SCHEDULES}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise FluxMatchError(f"the EMA decay must lie in [0, 1), got {self.ema_decay!r}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise FluxMatchError(f"grad_clip must be a positive number or None, got {self.grad_clip!r}")

    def lr_at(self, step: int) -> float:
        """Learning rate for the optimizer step with 0-based index ``step``."""
        if self.lr_schedule == "constant":
            return self.lr
        warmup = max(1, round(0.02 * self.steps))
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, self.steps - warmup))
        return self.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


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

    def _training_points(self) -> torch.Tensor:
        points = torch.as_tensor(self.data.data).float()
        if points.ndim < 2 or points.shape[0] == 0:
            raise FluxMatchError(f"the data {self.data.name!r} must have shape (N, ...) with N ≥ 1, got {tuple(points.shape)}")
        return points

    def _validate(self) -> None:
        """Check the field maps a few data points to a tensor of their shape, before any training."""
        device = next(self.field.parameters()).device
        points = self._training_points()[:8].to(device)
        labels = self._labels_for_check(points.shape[0])
        cond = self._conditioning(points.shape[0])
        with torch.no_grad():
            call_field(self.field, points, None if cond is None else cond.to(device), None if labels is None else labels.to(device))

    def _run_config(self) -> dict:
        points = self._training_points()
        points = points.reshape(points.shape[0], -1)
        return {
            "train": asdict(self.config),
            "data": {
                "spec": str(getattr(self.data, "spec", self.data.name)),
                "name": self.data.name,
                "dim": [int(d) for d in self.data.dim],
                "mean": points.mean(0).tolist(),
                "std": points.std(0, unbiased=False).tolist(),
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
        handle = path.open("w", newline="")
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(rows)
        handle.flush()
        return handle, writer

    def _diverged(self, step: int, what: str, last_checkpoint: int | None) -> FluxMatchError:
        where = (
            f"the last good checkpoint (step {last_checkpoint}) is in {self.out_dir}"
            if last_checkpoint is not None
            else "no checkpoint had been written yet"
        )
        return FluxMatchError(f"training diverged at step {step} (non-finite {what}); {where}")

    # -----------------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> dict:
        """Train up to ``config.steps`` and return a summary.

        Args:
            resume: continue from the checkpoint in ``out_dir`` (weights, optimizer, EMA, RNG and
                data-generator state) instead of starting afresh.

        Returns:
            ``{"steps", "steps_run", "resumed_from", "wall_time_s", "median_step_ms",
            "final_loss"}``.

        Raises FluxMatchError if the field's output has the wrong shape, there is nothing to
        resume, or the loss or gradient becomes non-finite (the last good checkpoint is kept).
        """
        cfg = self.config
        device = resolve_device(cfg.device)
        self.field.to(device)
        self.objective.to(device)
        self._validate()
        if resume and not (self.out_dir / TRAINER_TENSORS).is_file():
            raise FluxMatchError(f"nothing to resume in {self.out_dir}: {TRAINER_TENSORS} and {TRAINER_JSON} are missing")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        optimizer = torch.optim.Adam([dict(group) for group in self.param_groups], lr=cfg.lr)
        ema = EMA(self.field, cfg.ema_decay)
        start = 0
        if resume:
            start = load_training_state(self.out_dir, self.field, self.objective, optimizer, ema, generator)
        else:
            (self.out_dir / LOG_FILE).unlink(missing_ok=True)
        run_config = self._run_config()
        last_checkpoint = start if resume else None

        self.field.train()
        self.objective.train()
        step_ms: list[float] = []
        loss_value = float("nan")
        log_handle = writer = None
        bar = None
        began = time.perf_counter()
        # denormal floats from exp() of far-apart points slow the B×B softmaxes several-fold
        torch.set_flush_denormal(True)
        try:
            if cfg.progress and start < cfg.steps:
                from tqdm.auto import tqdm

                bar = tqdm(total=cfg.steps, initial=start, desc="train", dynamic_ncols=True)
            for k in range(start, cfg.steps):
                tick = time.perf_counter()
                lr = cfg.lr_at(k)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_scale"]
                batch = self.data.sample_batch(cfg.batch_size, generator).to(device)
                extras = dict(batch.extras)
                if extras and not getattr(self.objective, "takes_extras", False):
                    raise FluxMatchError(f"the data's batches carry {', '.join(extras)}, which the {type(self.objective).__name__} objective does not pass to the field")
                if self.uses_labels:
                    extras["labels"] = batch.labels
                out = self.objective(self.field, batch.x, **extras)
                loss = out.loss.mean()
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise self._diverged(k + 1, "loss", last_checkpoint)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # each group (the field, an objective's own networks) is clipped on its own, so that
                # a critic's large gradients never shrink the field's step
                max_norm = cfg.grad_clip if cfg.grad_clip is not None else float("inf")
                norms = [float(torch.nn.utils.clip_grad_norm_(g["params"], max_norm)) for g in optimizer.param_groups]
                grad_norm = norms[0]
                if not all(math.isfinite(n) for n in norms):
                    raise self._diverged(k + 1, "gradient", last_checkpoint)
                optimizer.step()
                ema.update(self.field, k)
                step = k + 1
                step_ms.append((time.perf_counter() - tick) * 1e3)

                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({"loss": f"{loss_value:.4g}", **{name: f"{v:.4g}" for name, v in out.terms.items()}}, refresh=False)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    if writer is None:
                        log_handle, writer = self._open_log(start, [*LOG_COLUMNS, *out.terms])
                    row = {"step": step, "loss": loss_value, "grad_norm": grad_norm, "lr": lr, "step_ms": round(step_ms[-1], 3)}
                    writer.writerow({**row, **{name: float(v) for name, v in out.terms.items()}})
                    log_handle.flush()
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    save_checkpoint(self.out_dir, self.field, self.objective, optimizer, ema, step, run_config, generator)
                    last_checkpoint = step
        finally:
            torch.set_flush_denormal(False)
            if bar is not None:
                bar.close()
            if log_handle is not None:
                log_handle.close()
        return {
            "steps": max(start, cfg.steps),
            "steps_run": len(step_ms),
            "resumed_from": start,
            "wall_time_s": round(time.perf_counter() - began, 3),
            "median_step_ms": round(statistics.median(step_ms), 3) if step_ms else None,
            "final_loss": loss_value if step_ms else None,
        }
