"""Trajectories: (N, T, D) arrays of N sequences of T states with D features each.

Two sources: ``"springs"``, the coupled nonlinear springs simulated on the fly
(:mod:`fluxmatch.data.springs`; a fixed training set of ``n`` trajectories, default 2000, and
fresh simulations for every held-out sample), and a ``.npy``/``.npz`` file of any (N, T, D)
trajectories (a held-out fraction of its rows reserved, as for points files).

Models see trajectories z-scored per feature over samples and time, with the statistics of the
training rows: ``x_model = (x_raw − mean) / std``, mean and std of shape (D,). The statistics
travel with the source (``units``) into the run's config.json, so samples are mapped back to raw
units (:func:`to_raw`) when they are written.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import FluxMatchError
from . import DataSource, _derived_seed
from .files import NPZ_KEYS
from .springs import FEATURE_NAMES, SpringParams, load_springs_params, simulate_springs

SPRINGS = "springs"
#: Training trajectories of ``--data springs`` by default (the paper's 2000).
DEFAULT_TRAJECTORIES = 2000
#: The smallest per-feature std that is divided by (a constant feature is left centred).
MIN_STD = 1e-6


def check_trajectories(x: torch.Tensor, name: str) -> torch.Tensor:
    """Refuse data that is not (N, T, D) with T ≥ 2 (NaN and inf are refused when loaded)."""
    if x.ndim != 3:
        raise FluxMatchError(f"trajectories must have shape (N, T, D) (N sequences of T states with D features); {name} has shape {tuple(x.shape)}")
    if x.shape[1] < 2:
        raise FluxMatchError(f"trajectories need at least 2 time steps; {name} has shape {tuple(x.shape)}")
    return x


def zscore_units(train: torch.Tensor, features=None) -> dict:
    """The z-score statistics of (N, T, D) training rows: mean and std (D,) over samples and
    time, as the JSON-ready ``units`` a source carries (with the feature names, if known)."""
    flat = train.double().reshape(-1, train.shape[-1])
    std = flat.std(0, unbiased=False).clamp_min(MIN_STD)
    names = list(features) if features is not None else [f"x{i + 1}" for i in range(train.shape[-1])]
    return {"transform": "zscore", "mean": flat.mean(0).tolist(), "std": std.tolist(), "features": names}


def fresh_springs(n: int, seed: int, params: SpringParams | None = None) -> torch.Tensor:
    """n raw springs trajectories for evaluation, from a random stream (derived from ``seed``)
    that no training set is drawn from (training sets use the seed itself)."""
    return simulate_springs(n, seed=_derived_seed(seed, 1), params=params)


def to_model(x: torch.Tensor, units: dict) -> torch.Tensor:
    """Raw (N, T, D) trajectories in model units (z-scored with ``units``)."""
    mean = torch.tensor(units["mean"], dtype=torch.float64)
    std = torch.tensor(units["std"], dtype=torch.float64)
    return ((x.double() - mean) / std).float()


def to_raw(x, units: dict) -> np.ndarray:
    """(N, T, D) trajectories in model units mapped back to raw units, as float32 numpy."""
    mean = np.asarray(units["mean"], dtype=np.float64)
    std = np.asarray(units["std"], dtype=np.float64)
    return (np.asarray(x, dtype=np.float64) * std + mean).astype(np.float32)


class TrajectorySource(DataSource):
    """A :class:`~fluxmatch.data.DataSource` of trajectories in model units.

    Attributes (besides DataSource's): ``units`` (the z-score statistics, see the module
    docstring), ``params`` (the :class:`~fluxmatch.data.springs.SpringParams` of springs data,
    simulated or read from the file, else None). A simulated source draws every held-out sample
    afresh (:meth:`holdout`), from a random stream no training row came from.
    """

    def __init__(self, data, name: str, *, held_out=None, units: dict, params: SpringParams | None = None, simulated: bool = False) -> None:
        super().__init__(data, name, held_out=held_out, units=units)
        self.params = params
        self.simulated = bool(simulated)

    def raw(self, x) -> np.ndarray:
        """Model-unit trajectories (N, T, D) in raw units."""
        return to_raw(x, self.units)

    def holdout_with_labels(self, n: int, seed: int = 0) -> tuple[torch.Tensor, None]:
        if not self.simulated:
            return super().holdout_with_labels(n, seed)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise FluxMatchError(f"the number of held-out trajectories must be an integer ≥ 1, got {n!r}")
        return to_model(fresh_springs(int(n), seed, self.params), self.units), None

    def __repr__(self) -> str:
        held = "fresh simulations" if self.simulated else ("none" if self.held_out is None else self.held_out.shape[0])
        return f"TrajectorySource({self.name!r}, rows={len(self)}, dim={self.dim}, held_out={held})"


def is_trajectory_file(spec) -> bool:
    """Whether ``spec`` is a .npy/.npz file holding a rank-3 array (read from its header where it can)."""
    path = Path(os.fspath(spec))
    if path.suffix.lower() not in (".npy", ".npz") or not path.is_file():
        return False
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False).ndim == 3
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            key = keys[0] if len(keys) == 1 else next((k for k in NPZ_KEYS if k in keys), None)
            return key is not None and archive[key].ndim == 3
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False  # the points loader will say what is wrong with it


def springs_source(n: int | None, seed: int, params: SpringParams | None = None) -> TrajectorySource:
    """``n`` (default 2000) simulated springs trajectories for training, seeded by ``seed``,
    and fresh simulations as held-out data."""
    params = params or SpringParams()
    raw = simulate_springs(DEFAULT_TRAJECTORIES if n is None else n, seed=seed, params=params)
    units = zscore_units(raw, FEATURE_NAMES)
    return TrajectorySource(to_model(raw, units), SPRINGS, units=units, params=params, simulated=True)


def file_source(path, seed: int, holdout_fraction: float, n: int | None) -> TrajectorySource:
    """The trajectories of a file, a held-out fraction of its rows reserved (as for points)."""
    split = DataSource.from_spec(path, seed=seed, holdout_fraction=holdout_fraction, n=n)
    rows = check_trajectories(split.data, str(path))
    params = load_springs_params(path) if str(path).lower().endswith(".npz") else None
    names = FEATURE_NAMES if params is not None and rows.shape[-1] == len(FEATURE_NAMES) else None
    units = zscore_units(split.data, names)
    held = None if split.held_out is None else to_model(split.held_out, units)
    return TrajectorySource(to_model(split.data, units), str(path), held_out=held, units=units, params=params)


__all__ = [
    "SPRINGS",
    "DEFAULT_TRAJECTORIES",
    "TrajectorySource",
    "check_trajectories",
    "zscore_units",
    "to_model",
    "fresh_springs",
    "to_raw",
    "is_trajectory_file",
    "springs_source",
    "file_source",
]
