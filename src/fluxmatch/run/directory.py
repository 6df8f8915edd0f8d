"""Where a run is written: an existing run is never destroyed before its replacement exists.

- a new path or an empty directory: the run is trained there;
- a directory holding a run: refused, unless the run is resumed (``resume``) or replaced
  (``overwrite``). A replacement is trained in a staging directory beside it
  (``.<name>.new-XXXX``) and swapped in only once it is complete, so an interrupted or failed
  replacement leaves the old run whole (and the partial one in the staging directory);
- anything else (a file, a path under a file, a non-empty directory that is not a run): refused,
  even with ``overwrite``: fluxmatch replaces only its own run directories.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import FluxMatchError
from ..train.trainer import LOCK_FILE

#: Files that mark a directory as a fluxmatch run.
RUN_MARKERS = ("config.json", "trainer.safetensors", "trainer.json", "model.safetensors", "log.csv")


def _is_empty(path: Path) -> bool:
    """Whether a directory holds nothing but what a killed trainer leaves behind: its (unlocked)
    lock file and the temporary files of an unfinished atomic write (``.<name>.*.tmp``)."""
    return all(entry.name == LOCK_FILE or (entry.name.startswith(".") and entry.name.endswith(".tmp")) for entry in path.iterdir())


def is_run_dir(path) -> bool:
    """Whether ``path`` is a directory holding (part of) a fluxmatch run."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in RUN_MARKERS)


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
            raise FluxMatchError(f"nothing to resume in {out}: it holds no fluxmatch run")
        return out
    if not out.is_dir() or _is_empty(out):
        return out
    if not is_run_dir(out):
        raise FluxMatchError(f"--out {out} is a non-empty directory that is not a fluxmatch run: choose a new or empty directory")
    if not overwrite:
        raise FluxMatchError(f"{out} already holds a run: --resume continues it, --overwrite replaces it (the old run is kept until the new one is complete)")
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))


def swap_in(stage: Path, out: Path) -> None:
    """Put the complete run in ``stage`` in place of the run in ``out`` (two renames; the old run
    is removed only after the new one is in place)."""
    stage, out = Path(stage), Path(out)
    if stage == out:
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
    if path.is_symlink():
        raise FluxMatchError(f"{what} {path} is a symlink: fluxmatch writes only regular files or new paths")
    if path.exists() and not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise FluxMatchError(f"{what} {path} is {kind}: name a file to write")
    check_writable_dir(path.parent, what=f"the directory of {what} {path}")
    if path.exists() and not os.access(path, os.W_OK):
        raise FluxMatchError(f"{what} {path} is not writable")
    return path


__all__ = ["RUN_MARKERS", "is_run_dir", "check_writable_dir", "training_dir", "swap_in", "study_dir", "check_output_file"]
