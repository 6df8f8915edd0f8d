"""Run directories: saving and loading trained fields and resumable training state.

A run directory holds

- ``config.json``: ``{"field": field.config, "objective": objective.config, "train": {...},
  "data": {"spec", "dim", "mean", "std"}, "sampler": {"step_size", "n_steps", "n"},
  "fluxmatch_version"}``;
- ``model.safetensors``: the EMA weights of the field, keyed like ``field.state_dict()``: what
  sampling and evaluation use;
- ``trainer.safetensors`` + ``trainer.json``: what resuming needs: the raw field weights
  (``field.*``), the objective's parameters (``objective.*``), the EMA weights (``ema.*``), Adam's
  state tensors (``optimizer.<param index>.<name>``), the torch and data-generator RNG states
  (``rng.torch``, ``rng.data``, uint8); the JSON holds the step, the optimizer's param groups
  (hyperparameters) and any non-tensor optimizer state.

Every file is written atomically (temporary file in the same directory, fsync, ``os.replace``),
so a crash mid-save leaves the previous checkpoint intact. Only safetensors and JSON are used:
nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from ..errors import FluxMatchError
from ..fields import build_field
from ..objectives import build_objective
from .ema import EMA

CONFIG = "config.json"
MODEL = "model.safetensors"
TRAINER_TENSORS = "trainer.safetensors"
TRAINER_JSON = "trainer.json"
FORMAT_VERSION = 1


def fluxmatch_version() -> str:
    """The installed fluxmatch version, or "unknown" when running from an uninstalled tree."""
    try:
        from .. import __version__

        return str(__version__)
    except ImportError:
        pass
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("fluxmatch")
    except PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------------------------
# atomic writes


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_mode() -> int:
    """Permissions of a newly created file under the current umask (mkstemp's are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def atomic_write_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write named tensors as safetensors (tensors are copied to contiguous CPU memory)."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


# ---------------------------------------------------------------------------------------------
# reading with clear errors


def _run_dir(run_dir) -> Path:
    path = Path(run_dir)
    if not path.is_dir():
        raise FluxMatchError(f"run directory {str(path)!r} does not exist" if not path.exists() else f"{str(path)!r} is not a run directory")
    return path


def read_config(run_dir) -> dict:
    """The parsed ``config.json`` of a run directory (a dict with "field" and "objective")."""
    path = _run_dir(run_dir) / CONFIG
    if not path.is_file():
        raise FluxMatchError(f"{path} is missing: {str(run_dir)!r} is not a fluxmatch run directory")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FluxMatchError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("field"), dict) or not isinstance(config.get("objective"), dict):
        raise FluxMatchError(f"{path} lacks the 'field' and 'objective' sections of a fluxmatch run config")
    return config


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning a missing or corrupt file into a FluxMatchError."""
    if not path.is_file():
        raise FluxMatchError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise FluxMatchError(f"{path} is corrupt or truncated ({reason})") from None


def _check_state(path: Path, module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise FluxMatchError(f"{path} does not match the config's {what}: missing keys {missing}, unexpected keys {unexpected}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise FluxMatchError(
                f"{path} does not match the config's {what}: {key!r} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}"
            )


def _build(path: Path, builder, config: dict):
    try:
        return builder(config)
    except FluxMatchError as err:
        raise FluxMatchError(f"{path}: {err}") from None


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


# ---------------------------------------------------------------------------------------------
# saving


def _optimizer_payload(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Adam-style state as named tensors plus a JSON-able description of everything else."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()} for group in state["param_groups"]]
    description = {"param_groups": groups, "scalars": scalars}
    try:
        json.dumps(description)
    except TypeError as err:
        raise FluxMatchError(f"the optimizer's hyperparameters cannot be stored as JSON ({err})") from None
    return tensors, description


def save_checkpoint(
    run_dir,
    field: torch.nn.Module,
    objective: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: EMA,
    step: int,
    config_dict: dict,
    generator: torch.Generator,
) -> Path:
    """Write a complete, resumable checkpoint of a training run into ``run_dir``.

    Args:
        run_dir: the run directory (created if needed).
        field: the trained field (raw weights; its ``config`` goes into config.json).
        objective: the objective (its ``config`` and parameters are saved).
        optimizer: the optimizer over field + objective parameters (Adam's state is flattened
            into named tensors, its hyperparameters into trainer.json).
        ema: the EMA of the field; its weights become ``model.safetensors``.
        step: number of completed optimizer steps.
        config_dict: the rest of config.json: "train", "data", "sampler" sections.
        generator: the data-batch generator, whose state is saved for resuming.

    Returns the run directory. The files are written trainer state first and config last, each
    atomically; trainer.json records the step the tensors belong to.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    step = int(step)
    opt_tensors, opt_description = _optimizer_payload(optimizer)
    tensors: dict[str, torch.Tensor] = {}
    tensors.update({f"field.{k}": v for k, v in field.state_dict().items()})
    tensors.update({f"objective.{k}": v for k, v in objective.state_dict().items()})
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.data"] = generator.get_state()
    atomic_write_tensors(run_dir / TRAINER_TENSORS, tensors, metadata={"step": str(step), "format": str(FORMAT_VERSION)})
    atomic_write_json(
        run_dir / TRAINER_JSON,
        {"format": FORMAT_VERSION, "step": step, "ema_decay": ema.decay, "optimizer": opt_description},
    )
    atomic_write_tensors(run_dir / MODEL, ema.state_dict())
    config = {"field": field.config, "objective": objective.config, **config_dict, "fluxmatch_version": fluxmatch_version()}
    atomic_write_json(run_dir / CONFIG, config)
    return run_dir


# ---------------------------------------------------------------------------------------------
# loading


@dataclass
class LoadedRun:
    """A trained run: the EMA field in eval mode, the parsed config.json and the rebuilt objective.

    The objective is rebuilt from its config (its learned horizon sampler, if any, is only needed
    for training and is restored by :func:`load_training_state`).
    """

    run_dir: Path
    config: dict
    field: torch.nn.Module
    objective: torch.nn.Module

    @property
    def sigma(self) -> float | None:
        """The objective's fixed noise level σ (None when noise-annealed or flow matching)."""
        objective = self.config["objective"]
        noise = objective.get("noise") or {}
        return noise.get("sigma") if noise.get("kind") == "fixed" else objective.get("sigma")

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one data point, e.g. (2,)."""
        data = self.config.get("data") or {}
        return tuple(data.get("dim") or (self.config["field"]["dim"],))


def load_run(run_dir) -> LoadedRun:
    """Load a run directory's config and EMA field (in eval mode) and rebuild its objective.

    Raises FluxMatchError (naming the file) when the directory, config.json or
    model.safetensors is missing, the config is not valid JSON, the weights file is corrupt or
    truncated, or the weights do not match the config's field.
    """
    run_dir = _run_dir(run_dir)
    config = read_config(run_dir)
    config_path = run_dir / CONFIG
    field = _build(config_path, build_field, config["field"])
    objective = _build(config_path, build_objective, config["objective"])
    model_path = run_dir / MODEL
    state = read_tensors(model_path)
    _check_state(model_path, field, state, "field")
    field.load_state_dict(state)
    field.eval()
    return LoadedRun(run_dir=run_dir, config=config, field=field, objective=objective)


def _normalised(obj):
    return json.loads(json.dumps(obj))


def load_training_state(
    run_dir,
    field: torch.nn.Module,
    objective: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: EMA,
    generator: torch.Generator,
) -> int:
    """Restore a checkpoint written by :func:`save_checkpoint` in place and return its step.

    Restores the raw field weights, the objective's parameters, the optimizer state, the EMA,
    the global torch RNG and the data generator, so that training continues as if it had not
    stopped. Raises FluxMatchError if there is nothing to resume or the run's field or objective
    config differs from the ones given.
    """
    run_dir = _run_dir(run_dir)
    tensor_path, json_path = run_dir / TRAINER_TENSORS, run_dir / TRAINER_JSON
    if not tensor_path.is_file() or not json_path.is_file():
        raise FluxMatchError(f"nothing to resume in {run_dir}: {TRAINER_TENSORS} and {TRAINER_JSON} are needed")
    config = read_config(run_dir)
    for what, module in (("field", field), ("objective", objective)):
        saved, current = _normalised(config[what]), _normalised(module.config)
        if saved != current:
            raise FluxMatchError(f"cannot resume {run_dir}: its {what} config {saved} differs from the requested {current}")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        step = int(meta["step"])
        description = meta["optimizer"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise FluxMatchError(f"{json_path} is not a valid trainer state ({err})") from None
    tensors = read_tensors(tensor_path)
    try:
        with safe_open(str(tensor_path), framework="pt") as handle:
            tensor_step = (handle.metadata() or {}).get("step")
    except (SafetensorError, OSError) as err:
        raise FluxMatchError(f"{tensor_path} is corrupt or truncated ({err})") from None
    if tensor_step != str(step):
        raise FluxMatchError(f"{tensor_path} (step {tensor_step}) and {json_path} (step {step}) belong to different checkpoints")
    if "rng.torch" not in tensors or "rng.data" not in tensors:
        raise FluxMatchError(f"{tensor_path} lacks the RNG states needed to resume")

    for prefix, module, what in (("field.", field, "field"), ("objective.", objective, "objective")):
        state = _prefixed(tensors, prefix)
        _check_state(tensor_path, module, state, what)
        module.load_state_dict(state)
    ema_state = _prefixed(tensors, "ema.")
    _check_state(tensor_path, field, ema_state, "field (EMA)")
    ema.load_state_dict(ema_state)

    opt_state: dict[int, dict] = {}
    for key, value in _prefixed(tensors, "optimizer.").items():
        index, name = key.split(".", 1)
        opt_state.setdefault(int(index), {})[name] = value
    for index, entries in description.get("scalars", {}).items():
        opt_state.setdefault(int(index), {}).update(entries)
    groups = description.get("param_groups", [])
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    try:
        optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as err:
        raise FluxMatchError(f"{tensor_path}: the optimizer state does not match the parameters ({err})") from None

    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.data"])
    return step
