"""Training: the loop (:class:`Trainer`), its settings, the weight EMA and run directories."""

from .checkpoint import LoadedRun, load_run, load_training_state, save_checkpoint
from .ema import EMA
from .trainer import TrainConfig, Trainer

__all__ = ["Trainer", "TrainConfig", "EMA", "save_checkpoint", "load_run", "load_training_state", "LoadedRun"]
