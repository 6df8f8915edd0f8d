"""Where a run is written: an existing run is never destroyed before its replacement exists.

- A new path or an empty directory: the run is trained there.
- A directory holding a run: refused, unless the run is resumed (``resume``) or replaced
  (``overwrite``).
- A replacement is trained in a staging directory beside the run (``.<name>.new-<random suffix>``, which
  records the run it replaces in ``.replaces``) and swapped in only once it is complete. A failed
  replacement leaves the old run whole. An interrupted one can be resumed in its staging
  directory, and is then swapped in.
- ``overwrite`` deletes only what a run writes (its checkpoint files and :data:`RUN_ARTIFACTS`).
  Anything else is refused even with ``overwrite``: a file, a path under a file, a non-empty
  directory that is not a run, or a run directory holding other files.
"""

from __future__ import annotations

import ctypes
import fnmatch
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import FluxMatchError
from ..train.checkpoint import check_writable_target
from ..train.trainer import LOCK_FILE, RUN_MARKERS, TENSORBOARD_DIR

#: In a staging directory: the run directory it replaces (JSON ``{"target": path}``).
REPLACES = ".replaces"

#: What a killed trainer leaves behind: its (unlocked) lock file and the temporary files of an
#: unfinished atomic write. A directory holding nothing else counts as empty.
LEFTOVERS = (LOCK_FILE, ".*.tmp")
#: What a run directory holds besides its checkpoint files: what ``--overwrite`` may replace.
RUN_ARTIFACTS = ("samples.npy", "metrics.json", "*.png", "*.gif", "samples-seed*.npy", "snapshots", TENSORBOARD_DIR, *LEFTOVERS, REPLACES)


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def _is_empty(path: Path) -> bool:
    """Whether a directory holds nothing but :data:`LEFTOVERS`."""
    return all(_matches(entry.name, LEFTOVERS) for entry in path.iterdir())


def _is_run_config(path: Path) -> bool:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("field"), dict) and isinstance(config.get("objective"), dict)


def is_run_dir(path) -> bool:
    """Whether ``path`` is a directory holding (part of) a fluxmatch run: a trainer checkpoint, or
    a config.json with the field and objective sections of a run (another program's config.json
    or log.csv does not make a directory a run)."""
    path = Path(path)
    return path.is_dir() and ((path / "trainer.safetensors").is_file() or _is_run_config(path / "config.json"))


def _is_training_log(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline().startswith("step,")
    except (OSError, UnicodeDecodeError):
        return False


def _is_ours(entry: Path) -> bool:
    """Whether a directory entry is one a run writes (a config.json or log.csv only if it is a run's)."""
    if entry.name == "config.json":
        return _is_run_config(entry)
    if entry.name == "log.csv":
        return _is_training_log(entry)
    return entry.name in RUN_MARKERS or _matches(entry.name, RUN_ARTIFACTS)


def foreign_files(path) -> list[str]:
    """Names in a run directory that are not part of the run (neither its checkpoint files nor
    :data:`RUN_ARTIFACTS`): what ``--overwrite`` refuses to delete."""
    return sorted(e.name for e in Path(path).iterdir() if not _is_ours(e))


def check_writable_dir(path, what: str = "--out") -> Path:
    """``path`` as a Path, after checking it can be a directory: not an existing file, symlink
    to a file or other non-directory, with no file among its parents, and writable where it exists."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FluxMatchError(f"{what} {path} is an existing file, not a directory: name a new or existing run directory")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FluxMatchError(f"{what} {path} lies under {parent}, which is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK) and not path.exists():
                raise FluxMatchError(f"{what} {path} cannot be created: {parent} is not writable")
            break
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise FluxMatchError(f"{what} {path} is not writable")
    return path


def training_dir(out, resume: bool, overwrite: bool) -> Path:
    """The directory to train into for ``out``: ``out`` itself, or a fresh staging directory
    beside it when ``overwrite`` replaces an existing run. Raises FluxMatchError (before anything
    is written) when ``out`` cannot hold the run; see the module docstring."""
    out = check_writable_dir(out)
    if resume and overwrite:
        raise FluxMatchError("give --resume (continue the run) or --overwrite (replace it), not both")
    if resume:
        if not is_run_dir(out):
            raise FluxMatchError(f"nothing to resume in {out}: it holds no fluxmatch run checkpoint")
        return out
    if not out.is_dir() or _is_empty(out):
        return out
    foreign = foreign_files(out)
    if not is_run_dir(out) and foreign:
        raise FluxMatchError(f"--out {out} is a non-empty directory that is not a fluxmatch run: choose a new or empty directory")
    if not overwrite:
        if is_run_dir(out):
            raise FluxMatchError(f"{out} already holds a run: --resume continues it, --overwrite replaces it (the old run is kept until the new one is complete)")
        raise FluxMatchError(f"{out} holds a run stopped before its first checkpoint (nothing to resume): --overwrite replaces it")
    if foreign:
        raise FluxMatchError(f"--overwrite would delete files in {out} that are not part of its run ({', '.join(foreign[:5])}): move them away first, or choose another --out")
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    (stage / REPLACES).write_text(json.dumps({"target": str(out.resolve())}) + "\n", encoding="utf-8")
    return stage


def replacement_target(stage) -> Path | None:
    """The run directory a staging directory is to replace (None for an ordinary run directory):
    an interrupted ``--overwrite`` is resumed in its staging directory and swapped in when done."""
    try:
        return Path(json.loads((Path(stage) / REPLACES).read_text(encoding="utf-8"))["target"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def swap_in(stage: Path, out: Path) -> None:
    """Put the complete run in ``stage`` in place of the run in ``out``, then remove the old run.

    Where the system can, the two directories are exchanged in one atomic step. Otherwise two
    renames do it, and a crash between them leaves the old run in ``.<name>.old-<random suffix>`` beside
    ``out``.
    """
    stage, out = Path(stage), Path(out)
    if stage == out:
        return
    (stage / REPLACES).unlink(missing_ok=True)
    if not out.exists():
        os.rename(stage, out)
        return
    if _exchange(stage, out):
        shutil.rmtree(stage, ignore_errors=True)  # now holds the old run
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(stage, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def study_dir(out, overwrite: bool) -> Path:
    """The output directory of a study (``compare``, ``experiment``), after refusing one that
    already holds something unless ``overwrite``: a study replaces the runs it wrote there."""
    out = check_writable_dir(out)
    if out.is_dir() and not _is_empty(out) and not overwrite:
        raise FluxMatchError(f"{out} is not empty: --overwrite replaces the study's results there, or choose a new --out")
    return out


def check_output_file(path, what: str = "--out") -> Path:
    """``path`` as a Path, after checking a regular file can be written there: a new path or an
    existing regular file (never a symlink, directory, device or FIFO), under a directory."""
    path = Path(path)
    check_writable_dir(path.parent, what=f"the directory of {what} {path}")  # may not exist yet: it is created
    if os.path.lexists(path):
        check_writable_target(path)  # the writer's own check: a regular file, never a symlink, directory or device
        if not os.access(path, os.W_OK):
            raise FluxMatchError(f"{what} {path} is not writable")
    return path


__all__ = ["RUN_MARKERS", "RUN_ARTIFACTS", "REPLACES", "foreign_files", "replacement_target", "is_run_dir", "check_writable_dir", "training_dir", "swap_in", "study_dir", "check_output_file"]
