"""Run directories: saving and loading trained fields and resumable training state.

A run directory holds

- ``config.json``: ``{"field": field.config, "objective": objective.config, "train": {...},
  "data": {"spec", "dim", "mean", "std"}, "sampler": {"step_size", "n_steps", "n"},
  "fluxmatch_version"}``;
- ``model.safetensors``: the EMA weights of the field, keyed like ``field.state_dict()``: what
  sampling and evaluation use;
- ``trainer.safetensors``: everything resuming needs: the raw field weights (``field.*``), the
  objective's parameters (``objective.*``), the EMA weights (``ema.*``), Adam's state tensors
  (``optimizer.<param index>.<name>``), the torch and data-generator RNG states (``rng.torch``,
  ``rng.data``, uint8), and in its metadata, under ``"trainer"``, a JSON string with the format,
  the step, the EMA decay, the optimizer's param groups (hyperparameters) and any non-tensor
  optimizer state;
- ``trainer.json``: a human-readable mirror of that JSON (not needed to resume).

Every file is written atomically (temporary file in the same directory, fsync, ``os.replace``),
and only to regular files or new paths. A checkpoint is written config.json (when missing or
changed), model.safetensors, trainer.safetensors, trainer.json: trainer.safetensors alone says
which step the checkpoint holds, so replacing it is the one step that makes a checkpoint
visible, and a crash at any point leaves the previous checkpoint resumable. Format-1 checkpoints
(the step in the metadata, the rest in trainer.json) still resume. Only safetensors and JSON are
used: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import os
import stat
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
CHECKPOINT_FILES = (CONFIG, MODEL, TRAINER_TENSORS, TRAINER_JSON)
FORMAT_VERSION = 2
TRAINER_KEY = "trainer"


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

_SPECIAL_KINDS = (
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
)


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


def check_writable_target(path: str | os.PathLike) -> Path:
    """Return ``path`` if it is a regular file or a new path in an existing directory.

    Raises FluxMatchError naming the path when it is a symlink (even to a regular file), a
    directory, a device, a FIFO or a socket, and naming the parent when that does not exist or
    is not a directory.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        why = "is not a directory" if os.path.lexists(parent) else "does not exist"
        raise FluxMatchError(f"cannot write {path}: its directory {parent} {why}")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as err:
        raise FluxMatchError(f"cannot write {path} ({err.strerror or err})") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "special file")
        raise FluxMatchError(f"{path} is a {kind}; fluxmatch writes only regular files or new paths")
    return path


def _permission_denied(path: Path, err: PermissionError) -> FluxMatchError:
    return FluxMatchError(f"cannot write {path}: permission denied ({err.strerror or err})")


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that readers see either the old file or the whole new one.

    Raises FluxMatchError (naming the path) before writing anything when ``path`` exists and is
    not a regular file or its directory is missing (see :func:`check_writable_target`), and
    when the write is not permitted; other OSErrors (a full disk) propagate, leaving the old
    file and no temporary file behind.
    """
    path = check_writable_target(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except PermissionError as err:
        raise _permission_denied(path, err) from None
    try:
        os.chmod(tmp, _file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, PermissionError):
            raise _permission_denied(path, err) from None
        raise
    _fsync_dir(path.parent)


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode("utf-8")


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write ``obj`` as indented JSON (raises like :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, _json_bytes(obj))


def atomic_write_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write named tensors as safetensors (tensors are copied to contiguous CPU memory;
    raises like :func:`atomic_write_bytes`)."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def _write_if_changed(path: Path, payload: bytes) -> None:
    """Atomically write ``payload`` unless ``path`` is a regular file that already holds it."""
    try:
        if stat.S_ISREG(os.lstat(path).st_mode) and path.read_bytes() == payload:
            return
    except OSError:
        pass
    atomic_write_bytes(path, payload)


def remove_stale_temporaries(run_dir) -> list[Path]:
    """Delete the temporary files a save that crashed left in ``run_dir`` and return them.

    Only call this while no other process writes into the run (the trainer holds its lock).
    """
    removed = []
    for name in CHECKPOINT_FILES:
        for tmp in Path(run_dir).glob(f".{name}.*.tmp"):
            try:
                if stat.S_ISREG(os.lstat(tmp).st_mode):
                    tmp.unlink()
                    removed.append(tmp)
            except OSError:
                pass
    return removed


# ---------------------------------------------------------------------------------------------
# reading with clear errors


def _run_dir(run_dir) -> Path:
    path = Path(run_dir)
    if not path.is_dir():
        raise FluxMatchError(f"run directory {str(path)!r} does not exist" if not path.exists() else f"{str(path)!r} is not a run directory")
    return path


def read_config(run_dir) -> dict:
    """The parsed ``config.json`` of a run directory (a dict with "field" and "objective").

    Raises FluxMatchError naming the file when it is missing, not JSON, lacks the "field" and
    "objective" sections, or has a "train", "data" or "sampler" section that is not an object.
    """
    path = _run_dir(run_dir) / CONFIG
    if not path.is_file():
        raise FluxMatchError(f"{path} is missing: {str(run_dir)!r} is not a fluxmatch run directory")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FluxMatchError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("field"), dict) or not isinstance(config.get("objective"), dict):
        raise FluxMatchError(f"{path} lacks the 'field' and 'objective' sections of a fluxmatch run config")
    for section in ("train", "data", "sampler"):
        if config.get(section) is not None and not isinstance(config[section], dict):
            raise FluxMatchError(f"{path}: its {section!r} section must be an object, got {config[section]!r}")
    return config


def _reason(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning a missing or corrupt file into a FluxMatchError."""
    if not path.is_file():
        raise FluxMatchError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise FluxMatchError(f"{path} is corrupt or truncated ({_reason(err)})") from None


def read_rng_states(run_dir) -> dict[str, torch.Tensor]:
    """The ``rng.*`` tensors of a run's trainer.safetensors (only those are read)."""
    path = _run_dir(run_dir) / TRAINER_TENSORS
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys() if key.startswith("rng.")}  # noqa: SIM118 (safe_open is not iterable)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise FluxMatchError(f"{path} is corrupt or truncated ({_reason(err)})") from None


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file; raises FluxMatchError when it is corrupt or truncated."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise FluxMatchError(f"{path} is corrupt or truncated ({_reason(err)})") from None


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


def _build(path: Path, builder, config: dict, what: str):
    """``builder(config)``, with any error a hand-edited section causes named as ``path``'s."""
    try:
        return builder(config)
    except FluxMatchError as err:
        raise FluxMatchError(f"{path}: {err}") from None
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, RuntimeError, OverflowError) as err:
        raise FluxMatchError(f"{path}: its {what} section {config} cannot be built ({type(err).__name__}: {_reason(err)})") from None


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
    rng_states: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a complete, resumable checkpoint of a training run into ``run_dir``.

    Args:
        run_dir: the run directory (created if needed).
        field: the trained field (raw weights; its ``config`` goes into config.json).
        objective: the objective (its ``config`` and parameters are saved).
        optimizer: the optimizer over field + objective parameters (Adam's state is flattened
            into named tensors, its hyperparameters into the trainer metadata).
        ema: the EMA of the field; its weights become ``model.safetensors``.
        step: number of completed optimizer steps.
        config_dict: the rest of config.json: "train", "data", "sampler" sections.
        generator: the data-batch generator, whose state is saved for resuming.
        rng_states: further RNG states, named ``rng.<kind>.rank<r>`` (the other ranks of a
            data-parallel run, CUDA generators; see
            :func:`fluxmatch.train.distributed.gather_rng_states`).

    Returns the run directory. Writes config.json (when missing or changed), model.safetensors,
    trainer.safetensors, which commits the checkpoint, then its trainer.json mirror; each
    atomically. Raises FluxMatchError when a target is not a regular file or the write is not
    permitted (see :func:`atomic_write_bytes`), or the optimizer's state is not JSON-able.
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
    for name, state in (rng_states or {}).items():
        if not name.startswith("rng.") or name in ("rng.torch", "rng.data"):
            raise FluxMatchError(f"extra RNG states must be named rng.<kind>.rank<r>, got {name!r}")
        tensors[name] = state.detach().cpu()
    description = {"format": FORMAT_VERSION, "step": step, "ema_decay": ema.decay, "optimizer": opt_description}
    config = {"field": field.config, "objective": objective.config, **config_dict, "fluxmatch_version": fluxmatch_version()}
    _write_if_changed(run_dir / CONFIG, _json_bytes(config))
    atomic_write_tensors(run_dir / MODEL, ema.state_dict())
    metadata = {"format": str(FORMAT_VERSION), "step": str(step), TRAINER_KEY: json.dumps(description)}
    atomic_write_tensors(run_dir / TRAINER_TENSORS, tensors, metadata=metadata)  # the commit point
    atomic_write_json(run_dir / TRAINER_JSON, description)
    return run_dir


SNAPSHOTS = "snapshots"


def save_snapshot(run_dir, ema: EMA, step: int) -> Path:
    """Keep the EMA weights at ``step`` as ``snapshots/model-<step>.safetensors`` (keyed like
    model.safetensors), for measurements through training; written atomically."""
    path = Path(run_dir) / SNAPSHOTS / f"model-{int(step):07d}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_tensors(path, ema.state_dict())
    return path


def list_snapshots(run_dir) -> list[tuple[int, Path]]:
    """(step, path) of every snapshot of a run, by step."""
    found = []
    for path in (Path(run_dir) / SNAPSHOTS).glob("model-*.safetensors"):
        digits = path.name[len("model-") : -len(".safetensors")]
        if digits.isdigit():
            found.append((int(digits), path))
    return sorted(found)


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
    model.safetensors is missing, the config is not valid JSON or its field or objective
    section cannot be built (values of the wrong type), the weights file is corrupt or
    truncated, or the weights do not match the config's field.
    """
    run_dir = _run_dir(run_dir)
    config = read_config(run_dir)
    config_path = run_dir / CONFIG
    field = _build(config_path, build_field, config["field"], "field")
    objective = _build(config_path, build_objective, config["objective"], "objective")
    model_path = run_dir / MODEL
    state = read_tensors(model_path)
    _check_state(model_path, field, state, "field")
    field.load_state_dict(state)
    field.eval()
    return LoadedRun(run_dir=run_dir, config=config, field=field, objective=objective)


def _normalised(obj):
    return json.loads(json.dumps(obj))


def is_finite_number(value) -> bool:
    """Whether ``value`` is a finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _format1_description(run_dir: Path, metadata: dict[str, str]) -> tuple[Path, object]:
    """A format-1 checkpoint's trainer.json, checked to belong to its trainer.safetensors."""
    json_path, tensor_path = run_dir / TRAINER_JSON, run_dir / TRAINER_TENSORS
    if not json_path.is_file():
        raise FluxMatchError(f"nothing to resume in {run_dir}: {tensor_path} is a format-1 checkpoint, which needs {TRAINER_JSON}")
    try:
        description = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise FluxMatchError(f"{json_path} is not a valid trainer state ({err})") from None
    step = description.get("step") if isinstance(description, dict) else None
    if metadata.get("step") != str(step):
        raise FluxMatchError(f"{tensor_path} (step {metadata.get('step')}) and {json_path} (step {step}) belong to different checkpoints")
    return json_path, description


def _checked_description(source: Path, description) -> dict:
    """``description`` if it has the trainer state's fields with the right types, else FluxMatchError."""

    def invalid(why: str) -> FluxMatchError:
        return FluxMatchError(f"{source} is not a valid trainer state: {why}")

    if not isinstance(description, dict):
        raise invalid(f"expected a JSON object, got {description!r}")
    version, step, decay = description.get("format", 1), description.get("step"), description.get("ema_decay")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise invalid(f"unknown format {version!r} (this fluxmatch reads formats 1 to {FORMAT_VERSION}; a newer one may have written it)")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise invalid(f"'step' must be a non-negative integer, got {step!r}")
    if decay is not None and not (is_finite_number(decay) and 0 <= decay < 1):
        raise invalid(f"'ema_decay' must be a number in [0, 1), got {decay!r}")
    optimizer = description.get("optimizer")
    groups = optimizer.get("param_groups") if isinstance(optimizer, dict) else None
    scalars = optimizer.get("scalars", {}) if isinstance(optimizer, dict) else None
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise invalid(f"'optimizer' must hold a 'param_groups' list of objects, got {optimizer!r}")
    if not isinstance(scalars, dict) or not all(isinstance(s, dict) for s in scalars.values()):
        raise invalid(f"the optimizer's 'scalars' must map parameter indices to objects, got {scalars!r}")
    return description


def read_trainer_state(run_dir) -> dict:
    """The trainer state of the checkpoint in ``run_dir``: ``{"format", "step", "ema_decay",
    "optimizer"}``, from trainer.safetensors' metadata (format 2) or trainer.json (format 1).

    Raises FluxMatchError when there is no trainer.safetensors ("nothing to resume"), it is
    corrupt, or the state is not valid (wrong types, a format-1 trainer.json of another step).
    """
    run_dir = _run_dir(run_dir)
    tensor_path = run_dir / TRAINER_TENSORS
    if not tensor_path.is_file():
        raise FluxMatchError(f"nothing to resume in {run_dir}: {TRAINER_TENSORS} is missing")
    metadata = read_metadata(tensor_path)
    if TRAINER_KEY not in metadata:
        return _checked_description(*_format1_description(run_dir, metadata))
    try:
        description = json.loads(metadata[TRAINER_KEY])
    except json.JSONDecodeError as err:
        raise FluxMatchError(f"{tensor_path} is not a valid trainer state: its {TRAINER_KEY!r} metadata is not JSON ({err})") from None
    return _checked_description(tensor_path, description)


def sync_trainer_json(run_dir) -> None:
    """Rewrite trainer.json, the human-readable mirror, from trainer.safetensors when it is
    missing or stale (a crash between the two writes). Does nothing for a format-1 checkpoint.

    Raises FluxMatchError like :func:`read_trainer_state` and :func:`atomic_write_bytes`.
    """
    state = read_trainer_state(run_dir)
    if state.get("format", 1) >= 2:  # format 1 keeps its state in trainer.json itself
        _write_if_changed(Path(run_dir) / TRAINER_JSON, _json_bytes(state))


def _same_kind(saved, current) -> bool:
    """Whether a stored hyperparameter has the type of the optimizer's current one."""
    if current is None or isinstance(current, bool):
        return saved is None or isinstance(saved, bool)
    if isinstance(current, (int, float)):
        return is_finite_number(saved)
    if isinstance(current, (tuple, list)):
        return isinstance(saved, list) and len(saved) == len(current) and all(_same_kind(s, c) for s, c in zip(saved, current))
    if isinstance(current, str):
        return isinstance(saved, str)
    return True


def _checked_groups(path: Path, optimizer: torch.optim.Optimizer, groups: list[dict]) -> list[dict]:
    """The stored param groups (betas as tuples), checked against the optimizer's own."""
    current = optimizer.param_groups
    if len(groups) != len(current):
        raise FluxMatchError(f"{path}: the optimizer state has {len(groups)} parameter groups, the optimizer {len(current)}")
    checked = []
    for number, (saved, group) in enumerate(zip(groups, current)):
        ids = saved.get("params")
        if not isinstance(ids, list) or len(ids) != len(group["params"]) or not all(type(i) is int for i in ids):
            raise FluxMatchError(f"{path}: the optimizer's parameter group {number} does not match the parameters (params {ids!r}, expected {len(group['params'])} indices)")
        for key, value in saved.items():
            if key != "params" and key in group and not _same_kind(value, group[key]):
                raise FluxMatchError(f"{path}: the optimizer's {key!r} is {value!r}, expected a value like {group[key]!r}")
        checked.append({**saved, **({"betas": tuple(saved["betas"])} if isinstance(saved.get("betas"), list) else {})})
    return checked


def _optimizer_state(path: Path, params: dict[int, torch.Tensor], tensors: dict[str, torch.Tensor], scalars: dict) -> dict[int, dict]:
    """Per-parameter optimizer state from the ``optimizer.<index>.<name>`` tensors and the
    stored scalars, each checked to belong to a parameter (and its shape, for tensors)."""
    state: dict[int, dict] = {}
    for key, value in _prefixed(tensors, "optimizer.").items():
        index, _, name = key.partition(".")
        if not index.isdigit() or int(index) not in params or not name:
            raise FluxMatchError(f"{path}: the optimizer state tensor {'optimizer.' + key!r} names none of the {len(params)} parameters")
        expected = tuple(params[int(index)].shape)
        if (value.numel() != 1) if name == "step" else (tuple(value.shape) != expected):
            shape = "one number" if name == "step" else f"shape {expected}"
            raise FluxMatchError(f"{path}: the optimizer state does not match the parameters: {'optimizer.' + key!r} has shape {tuple(value.shape)}, expected {shape}")
        state.setdefault(int(index), {})[name] = value
    for index, entries in scalars.items():
        if not str(index).isdigit() or int(index) not in params:
            raise FluxMatchError(f"{path}: the optimizer's scalar state {index!r} names none of the {len(params)} parameters")
        state.setdefault(int(index), {}).update(entries)
    return state


def _load_optimizer(path: Path, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], description: dict) -> None:
    groups = _checked_groups(path, optimizer, description["param_groups"])
    params = {i: p for saved, group in zip(groups, optimizer.param_groups) for i, p in zip(saved["params"], group["params"])}
    state = _optimizer_state(path, params, tensors, description.get("scalars", {}))
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError, TypeError) as err:
        raise FluxMatchError(f"{path}: the optimizer state does not match the parameters ({_reason(err)})") from None


def _check_same_modules(run_dir: Path, field: torch.nn.Module, objective: torch.nn.Module) -> None:
    config = read_config(run_dir)
    for what, module in (("field", field), ("objective", objective)):
        saved, current = _normalised(config[what]), _normalised(module.config)
        if saved != current:
            raise FluxMatchError(f"cannot resume {run_dir}: the {what} config {saved} in its {CONFIG} differs from the requested {current}")


def _restore_rng(path: Path, tensors: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    if "rng.torch" not in tensors or "rng.data" not in tensors:
        raise FluxMatchError(f"{path} lacks the RNG states needed to resume")
    try:
        torch.set_rng_state(tensors["rng.torch"])
        generator.set_state(tensors["rng.data"])
    except (RuntimeError, TypeError, ValueError) as err:
        raise FluxMatchError(f"{path}: its RNG states are invalid ({_reason(err)})") from None


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
    stopped. Reads format-2 checkpoints (the trainer state in trainer.safetensors' metadata)
    and format-1 ones (in trainer.json). Raises FluxMatchError naming the file if there is
    nothing to resume, the run's field or objective config differs from the ones given, a file
    is corrupt, the trainer state has values of the wrong type, or the stored tensors (weights,
    optimizer state, RNG states) do not match.
    """
    run_dir = _run_dir(run_dir)
    tensor_path = run_dir / TRAINER_TENSORS
    if not tensor_path.is_file():
        raise FluxMatchError(f"nothing to resume in {run_dir}: {TRAINER_TENSORS} is missing")
    _check_same_modules(run_dir, field, objective)
    description = read_trainer_state(run_dir)
    tensors = read_tensors(tensor_path)
    for prefix, module, what in (("field.", field, "field"), ("objective.", objective, "objective")):
        state = _prefixed(tensors, prefix)
        _check_state(tensor_path, module, state, what)
        module.load_state_dict(state)
    ema_state = _prefixed(tensors, "ema.")
    _check_state(tensor_path, field, ema_state, "field (EMA)")
    ema.load_state_dict(ema_state)
    _load_optimizer(tensor_path, optimizer, tensors, description["optimizer"])
    _restore_rng(tensor_path, tensors, generator)
    return description["step"]
