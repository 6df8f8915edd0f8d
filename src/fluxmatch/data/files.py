"""Loading the user's own data from ``.npy``, ``.npz`` or ``.csv`` files.

Rows (the first axis) are samples; the remaining axes are the event shape, e.g. (N, 2) points
or (N, 1, 28, 28) images. Everything comes back as a contiguous float32 CPU tensor, and every
problem with the file or its content raises :class:`~fluxmatch.errors.FluxMatchError`.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import FluxMatchError

FILE_EXTENSIONS = (".npy", ".npz", ".csv")
NPZ_KEYS = ("data", "x", "samples")
"""Keys looked up, in this order, in an ``.npz`` archive holding several arrays."""


def load_array(path: str | os.PathLike) -> torch.Tensor:
    """Read a data file into an (N, ...) float32 tensor.

    - ``.npy``: any shape; the first axis indexes samples.
    - ``.npz``: its only array, or else the one stored under ``data``, ``x`` or ``samples``.
    - ``.csv``: comma-separated, one sample per row, numeric columns; a first row made only of
      non-numbers (a header) is skipped.

    The array then goes through :func:`validate_data` (so a 1-D array of N values becomes
    (N, 1), and NaN/inf or empty data is refused).

    Raises:
        FluxMatchError: missing file, unknown extension, unreadable or non-numeric content,
            ambiguous ``.npz`` keys, or anything :func:`validate_data` refuses.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FILE_EXTENSIONS:
        raise FluxMatchError(f"unsupported data file extension {path.suffix!r} for {path}: expected one of {', '.join(FILE_EXTENSIONS)}")
    if not path.is_file():
        raise FluxMatchError(f"data file not found: {path}")
    if suffix == ".npy":
        array = _load_npy(path)
    elif suffix == ".npz":
        array = _load_npz(path)
    else:
        array = _load_csv(path)
    return validate_data(array, str(path))


def _load_npy(path: Path) -> np.ndarray:
    try:
        # allow_pickle=False: a pickled object array is both unsafe to load and not numeric.
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        raise FluxMatchError(f"{path} is not a numeric .npy array: {_first_line(err)}") from None
    except (OSError, EOFError) as err:
        raise FluxMatchError(f"cannot read {path} as .npy: {_first_line(err)}") from None


def _load_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if not keys:
                raise FluxMatchError(f"{path} holds no arrays")
            if len(keys) == 1:
                key = keys[0]
            else:
                key = next((k for k in NPZ_KEYS if k in keys), None)
                if key is None:
                    raise FluxMatchError(
                        f"{path} holds several arrays ({', '.join(keys)}): store the data under one of the keys {', '.join(NPZ_KEYS)}"
                    )
            return archive[key]
    except ValueError as err:
        if isinstance(err, FluxMatchError):
            raise
        raise FluxMatchError(f"{path} does not hold a numeric array: {_first_line(err)}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise FluxMatchError(f"cannot read {path} as .npz: {_first_line(err)}") from None


def _load_csv(path: Path) -> np.ndarray:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise FluxMatchError(f"cannot read {path} as text: {_first_line(err)}") from None
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise FluxMatchError(f"data file {path} is empty")
    skip = first + 1 if _is_header(lines[first]) else first
    body = [line for line in lines[skip:] if line.strip()]
    if not body:
        raise FluxMatchError(f"data file {path} has a header but no data rows")
    try:
        return np.loadtxt(body, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise FluxMatchError(f"{path} has non-numeric or ragged CSV content: {_first_line(err)}") from None


def _is_header(line: str) -> bool:
    """True if no field of the line parses as a number (so "x,y" is a header but "1,y" is bad data)."""
    for field in line.split(","):
        try:
            float(field)
            return False
        except ValueError:
            continue
    return True


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def validate_data(x, name: str) -> torch.Tensor:
    """Check a data array and return it as a contiguous float32 tensor of shape (N, ...).

    Args:
        x: numpy array, torch tensor or nested sequence; the first axis indexes samples.
            A 1-D array of N values is read as N one-dimensional samples and becomes (N, 1).
        name: what to call the data in error messages (e.g. its file path).

    Raises:
        FluxMatchError: non-numeric content (strings, objects, complex numbers), a 0-d scalar,
            no rows, or rows containing NaN/inf (also values that overflow float32); the last
            message counts the affected rows and gives the first one's index.
    """
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise FluxMatchError(f"data {name} is complex; expected real numbers")
        array = x.detach().cpu()
    else:
        try:
            array = np.asarray(x)
        except (ValueError, TypeError) as err:
            raise FluxMatchError(f"data {name} is not a numeric array: {_first_line(err)}") from None
        if array.dtype.kind not in "biuf":
            kind = "complex" if array.dtype.kind == "c" else f"of dtype {array.dtype}"
            raise FluxMatchError(f"data {name} is {kind}; expected real numbers")
        # Values beyond float32's range become inf here and are then reported as non-finite.
        with np.errstate(over="ignore", invalid="ignore"):
            array = torch.from_numpy(np.array(array, dtype=np.float32, order="C"))
    if array.ndim == 0:
        raise FluxMatchError(f"data {name} is a single number; expected an array with one sample per row")
    if array.ndim == 1:
        array = array[:, None]
    if array.shape[0] == 0:
        raise FluxMatchError(f"data {name} is empty (0 rows)")
    if array.shape[1:].numel() == 0:
        raise FluxMatchError(f"data {name} has rows with no entries (shape {tuple(array.shape)})")
    array = array.to(torch.float32).contiguous()
    bad = ~torch.isfinite(array.reshape(array.shape[0], -1)).all(dim=1)
    n_bad = int(bad.sum())
    if n_bad:
        first = int(bad.nonzero()[0, 0])
        raise FluxMatchError(f"data {name} has {n_bad} row(s) with NaN or inf values (first: row {first})")
    return array


__all__ = ["load_array", "validate_data", "FILE_EXTENSIONS", "NPZ_KEYS"]
