"""Files of a run directory besides the checkpoint: arrays, the loss plot, metrics.json."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..train.checkpoint import atomic_write_bytes, atomic_write_json
from ..train.trainer import RUN_MARKERS

CHECKPOINT_FILES = list(RUN_MARKERS)  # config.json, model.safetensors, trainer.safetensors, trainer.json, log.csv


def save_npy(path, array: np.ndarray) -> Path:
    """Write ``array`` as .npy atomically (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def loss_keys(log_path: Path) -> list[str]:
    """Columns of log.csv worth plotting: the loss, each logged term that is not a copy of it, the grad norm."""
    with Path(log_path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return ["loss"]
    fixed = {"step", "loss", "grad_norm", "lr", "step_ms"}
    terms = [k for k in rows[0] if k not in fixed and any(r.get(k) not in ("", None) for r in rows)]
    terms = [k for k in terms if any(r.get(k) != r.get("loss") for r in rows)]
    return ["loss", *terms, "grad_norm"]


def plot_loss(out: Path) -> str:
    """Draw ``loss.png`` from the run's log.csv; returns the file name."""
    from ..viz import plot_loss_curve

    plot_loss_curve(out / "loss.png", out / "log.csv", loss_keys(out / "log.csv"))
    return "loss.png"


def write_metrics(out: Path, result: dict) -> dict:
    atomic_write_json(Path(out) / "metrics.json", result)
    return result
