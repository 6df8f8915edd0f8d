"""Coupled nonlinear springs: a small physical system whose trajectories a model can learn.

Two unit masses on a line, each tied to its own wall by a spring of stiffness ``k_wall`` with a
cubic (hardening) term ``cubic``, coupled to each other by a spring ``k_couple``, and slowed by
linear damping ``damping``. The state is (q1, v1, q2, v2): displacements from rest and
velocities, in arbitrary length and time units (unit masses, so forces are accelerations)::

    dq_i/dt = v_i
    dv_i/dt = −k_wall q_i − k_couple (q_i − q_j) − damping v_i − cubic q_i³      (j ≠ i)

Without damping and the cubic term the system is linear with two normal modes: the in-phase
one (q1 = q2) at angular frequency √k_wall and the anti-phase one (q1 = −q2) at
√(k_wall + 2 k_couple). Without damping the energy

    E = ½ Σ v_i² + ½ k_wall Σ q_i² + ½ k_couple (q1 − q2)² + ¼ cubic Σ q_i⁴

is conserved; with damping it decreases.

:func:`simulate_springs` integrates the system with the classical fourth-order Runge–Kutta
scheme (:func:`rk4_step`) in float64 and returns (n, steps, 4) float32 trajectories sampled
every ``dt``; :func:`dynamics_residual` measures how far given trajectories are from obeying
that one-step map (0 for simulated data up to float32 round-off).
"""

from __future__ import annotations

import dataclasses
import io
import math
import operator
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import FluxMatchError, check_integer

FEATURE_NAMES = ("q1", "v1", "q2", "v2")
"""The names of the four state features, in the order of the last axis."""

_NONNEGATIVE = ("k_wall", "k_couple", "damping", "cubic")
_POSITIVE = ("dt", "q_std", "v_std")
#: Per-feature standard deviations below this are not divided by (a constant feature).
_MIN_STD = 1e-12


@dataclass(frozen=True)
class SpringParams:
    """The physical and sampling parameters of the coupled springs.

    Attributes:
        k_wall: stiffness of each mass's spring to its wall (1/time²), ≥ 0.
        k_couple: stiffness of the spring between the masses (1/time²), ≥ 0.
        damping: linear damping rate (1/time), ≥ 0.
        cubic: coefficient of the hardening force −cubic·q³ (1/(length²·time²)), ≥ 0.
        dt: time between stored states (time units), > 0; also the RK4 step.
        steps: states per trajectory, including the initial state, an integer ≥ 2.
        q_std: standard deviation of the initial displacements (length), > 0.
        v_std: standard deviation of the initial velocities (length/time), > 0.
    """

    k_wall: float = 1.0
    k_couple: float = 0.7
    damping: float = 0.08
    cubic: float = 0.08
    dt: float = 0.1
    steps: int = 50
    q_std: float = 3.0
    v_std: float = 1.5

    def __post_init__(self) -> None:
        for name in _NONNEGATIVE + _POSITIVE:
            value = getattr(self, name)
            bound = "a positive" if name in _POSITIVE else "a non-negative"
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise FluxMatchError(f"SpringParams.{name} must be {bound} finite number, got {value!r}")
            number = float(value)
            if not math.isfinite(number) or number < 0 or (name in _POSITIVE and number == 0):
                raise FluxMatchError(f"SpringParams.{name} must be {bound} finite number, got {value!r}")
            object.__setattr__(self, name, number)
        object.__setattr__(self, "steps", check_integer(self.steps, "SpringParams.steps (states per trajectory)", 2))

    def as_dict(self) -> dict:
        """The parameters as a JSON-ready dict (floats, and ``steps`` an int)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> SpringParams:
        """Parameters from a dict like :meth:`as_dict`'s; missing keys take their defaults.

        Raises:
            FluxMatchError: ``d`` is not a mapping, has a key that is not a parameter, or a
                value that :class:`SpringParams` refuses.
        """
        if not isinstance(d, Mapping):
            raise FluxMatchError(f"spring parameters must be a mapping of parameter names to values, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise FluxMatchError(f"unknown spring parameter(s) {', '.join(unknown)}: expected some of {', '.join(known)}")
        return cls(**dict(d))


def _check_params(params) -> SpringParams:
    """``params``, or the defaults for None."""
    if params is None:
        return SpringParams()
    if not isinstance(params, SpringParams):
        raise FluxMatchError(f"params must be a SpringParams, got {type(params).__name__}")
    return params


def _check_state(state) -> torch.Tensor:
    if not isinstance(state, torch.Tensor):
        raise FluxMatchError(f"the spring state must be a torch tensor of shape (..., 4), got {type(state).__name__}")
    if state.ndim == 0 or state.shape[-1] != 4:
        raise FluxMatchError(f"the spring state must have shape (..., 4) (q1, v1, q2, v2), got {tuple(state.shape)}")
    if not state.is_floating_point():
        raise FluxMatchError(f"the spring state must be a floating-point tensor, got dtype {state.dtype}")
    return state


def springs_derivative(state: torch.Tensor, params: SpringParams | None = None) -> torch.Tensor:
    """The time derivative of the state.

    Args:
        state: (..., 4) floating-point tensor (q1, v1, q2, v2).
        params: the system (None: the defaults); only the force constants are used.

    Returns:
        (..., 4) tensor (dq1/dt, dv1/dt, dq2/dt, dv2/dt) of ``state``'s dtype and device, in
        state units per time unit.
    """
    state, p = _check_state(state), _check_params(params)
    q1, v1, q2, v2 = state.unbind(-1)
    a1 = -p.k_wall * q1 - p.k_couple * (q1 - q2) - p.damping * v1 - p.cubic * q1**3
    a2 = -p.k_wall * q2 - p.k_couple * (q2 - q1) - p.damping * v2 - p.cubic * q2**3
    return torch.stack([v1, a1, v2, a2], dim=-1)


def rk4_step(state: torch.Tensor, params: SpringParams | None = None) -> torch.Tensor:
    """One classical fourth-order Runge–Kutta step of length ``params.dt``.

    Args:
        state: (..., 4) floating-point tensor (q1, v1, q2, v2) at time t.
        params: the system (None: the defaults).

    Returns:
        (..., 4) tensor, the state at time t + dt, in ``state``'s dtype (use float64 for
        accuracy: the local error of the scheme is O(dt⁵)).
    """
    p = _check_params(params)
    h = p.dt
    k1 = springs_derivative(state, p)
    k2 = springs_derivative(state + 0.5 * h * k1, p)
    k3 = springs_derivative(state + 0.5 * h * k2, p)
    k4 = springs_derivative(state + h * k3, p)
    return state + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def _check_seed(seed) -> int:
    try:
        if isinstance(seed, bool):
            raise TypeError
        return int(operator.index(seed))
    except TypeError:
        raise FluxMatchError(f"seed must be an integer, got {seed!r}") from None


def simulate_springs(n: int, seed: int = 0, params: SpringParams | None = None) -> torch.Tensor:
    """Simulate ``n`` independent trajectories of the coupled springs.

    The initial displacements are drawn from N(0, q_std²) and the initial velocities from
    N(0, v_std²), independently, with a ``torch.Generator`` seeded with ``seed`` (the same
    trajectories for the same seed and parameters on every platform); all trajectories are then
    integrated together in float64 with :func:`rk4_step`.

    Args:
        n: number of trajectories, a positive integer.
        seed: seeds the initial states.
        params: the system and the sampling (``dt``, ``steps``, ``q_std``, ``v_std``); None:
            the defaults.

    Returns:
        (n, steps, 4) float32 CPU tensor in raw units; ``x[:, t]`` is the state (q1, v1, q2, v2)
        at time t·dt, ``x[:, 0]`` the initial one.
    """
    n, seed, p = check_integer(n, "the number of trajectories", 1), _check_seed(seed), _check_params(params)
    generator = torch.Generator().manual_seed(seed)
    scale = torch.tensor([p.q_std, p.v_std, p.q_std, p.v_std], dtype=torch.float64)
    state = torch.randn(n, 4, generator=generator, dtype=torch.float64) * scale
    out = torch.empty(n, p.steps, 4, dtype=torch.float64)
    out[:, 0] = state
    for t in range(1, p.steps):
        state = rk4_step(state, p)
        out[:, t] = state
    return out.float()


def _as_trajectories(trajectories) -> torch.Tensor:
    """(N, T, 4) numpy/torch → float64 CPU tensor, or FluxMatchError."""
    if isinstance(trajectories, torch.Tensor):
        x = trajectories.detach().cpu()
        if x.is_complex() or x.dtype == torch.bool:
            raise FluxMatchError(f"trajectories must be real numbers, got dtype {x.dtype}")
        x = x.double()
    else:
        try:
            a = np.asarray(trajectories)
            if a.dtype.kind not in "iuf":
                raise TypeError
            x = torch.from_numpy(a.astype(np.float64))
        except (TypeError, ValueError):
            raise FluxMatchError("trajectories must be a numeric (N, T, 4) array or tensor") from None
    if x.ndim != 3 or x.shape[-1] != 4 or x.shape[0] < 1 or x.shape[1] < 2:
        raise FluxMatchError(f"trajectories must have shape (N, T, 4) with N ≥ 1 and T ≥ 2 (states q1, v1, q2, v2), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).sum())
        raise FluxMatchError(f"trajectories contain NaN or inf ({bad} of {x.shape[0]} trajectories)")
    return x


def _residual_figures(residual: torch.Tensor, std: torch.Tensor) -> tuple[float, list[float], float]:
    per_feature = residual.pow(2).mean(dim=(0, 1)).sqrt()
    relative = (per_feature / std).mean()
    return float(residual.pow(2).mean().sqrt()), [float(v) for v in per_feature], float(relative)


def dynamics_residual(trajectories, params: SpringParams | None = None, std=None) -> dict:
    """How far trajectories are from following the springs' one-step RK4 map.

    For every transition the residual is r = x[:, t+1] − rk4_step(x[:, t]); the persistence
    baseline, which predicts no motion, has residual x[:, t+1] − x[:, t]. A perfect model gives
    0 (simulated data gives float32 round-off, ~1e-7 relative); one that ignores the dynamics
    gives about the persistence figures. Computed in float64.

    Args:
        trajectories: (N, T, 4) numpy array or tensor, T ≥ 2, in RAW units (not z-scored).
        params: the system the trajectories should follow (its ``dt`` is the time between
            states; ``steps`` need not equal T); None: the defaults.
        std: (4,) per-feature scale of ``relative_rms`` (raw units); None: the trajectories' own
            std. Give real data's std to compare generated trajectories with real ones on one
            scale (a model that collapsed to the rest state would otherwise score 0).

    Returns:
        dict with
        ``rms``: the root mean square of r over trajectories, transitions and the 4 features,
        in state units; ``per_feature``: list of 4 per-feature RMS of r (q1, v1, q2, v2);
        ``relative_rms``: the per-feature RMS divided by that feature's std (``std``, or over
        all trajectories and times), averaged over the features (unit-free);
        ``persistence_rms``, ``persistence_per_feature``, ``persistence_relative_rms``: the same
        for the persistence baseline; ``transitions``: N·(T − 1).

    Raises:
        FluxMatchError: not (N, T, 4) with N ≥ 1 and T ≥ 2, not numeric, or NaN/inf.
    """
    x, p = _as_trajectories(trajectories), _check_params(params)
    if std is None:
        std = x.reshape(-1, 4).std(0, unbiased=False)
    else:
        std = torch.as_tensor(np.asarray(std, dtype=np.float64)).reshape(-1)
        if std.numel() != 4 or not bool(torch.isfinite(std).all()):
            raise FluxMatchError(f"std must be 4 finite per-feature scales (q1, v1, q2, v2), got {std.tolist()}")
    std = std.clamp_min(_MIN_STD)
    before, after = x[:, :-1], x[:, 1:]
    rms, per_feature, relative = _residual_figures(after - rk4_step(before, p), std)
    p_rms, p_per_feature, p_relative = _residual_figures(after - before, std)
    return {
        "rms": rms,
        "per_feature": per_feature,
        "relative_rms": relative,
        "persistence_rms": p_rms,
        "persistence_per_feature": p_per_feature,
        "persistence_relative_rms": p_relative,
        "transitions": int(before.shape[0] * before.shape[1]),
    }


def save_springs(path, n: int, seed: int = 0, params: SpringParams | None = None) -> Path:
    """Simulate ``n`` trajectories and write them, with how they were made, to an ``.npz`` file.

    The archive holds ``x``: (n, steps, 4) float32 in raw units (see :func:`simulate_springs`);
    one 0-d array per :class:`SpringParams` field, named like the field; ``seed`` (0-d int64);
    and ``feature_names``: the unicode array ["q1", "v1", "q2", "v2"]. All of it loads with
    ``np.load(path, allow_pickle=False)``. The file is written atomically (readers see the old
    file or the whole new one) into an existing folder, created if missing.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        FluxMatchError: ``path`` is a directory or does not end in ``.npz``, bad ``n``,
            ``seed`` or ``params``, or the file cannot be written.
    """
    from ..train.checkpoint import atomic_write_bytes  # here: fluxmatch.train imports models, not needed to simulate

    path = Path(os.fspath(path))
    if path.is_dir():
        raise FluxMatchError(f"cannot write springs data to {path}: it is a directory; give a file name ending in .npz")
    if path.suffix.lower() != ".npz":
        raise FluxMatchError(f"springs data is written as .npz; {path} has another extension")
    p = _check_params(params)
    x = simulate_springs(n, seed=seed, params=p).numpy()
    arrays = {"x": x, "seed": np.asarray(_check_seed(seed), dtype=np.int64), "feature_names": np.array(FEATURE_NAMES)}
    for name, value in p.as_dict().items():
        arrays[name] = np.asarray(value, dtype=np.int64 if name == "steps" else np.float64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_springs_params(path) -> SpringParams | None:
    """The :class:`SpringParams` stored in an ``.npz`` written by :func:`save_springs`.

    Returns:
        the parameters, or None when the archive does not hold every parameter (e.g. a user's
        own trajectories).

    Raises:
        FluxMatchError: the file is missing or not a readable ``.npz``, or holds all the
            parameters but a value is not a single number or is refused by SpringParams.
    """
    path = Path(os.fspath(path))
    if not path.is_file():
        raise FluxMatchError(f"springs data file not found: {path}")
    names = [f.name for f in dataclasses.fields(SpringParams)]
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise FluxMatchError(f"{path} is not a readable .npz archive ({err})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise FluxMatchError(f"{path} is a single .npy array, not an .npz archive that could hold spring parameters")
    with archive:
        if not all(name in archive.files for name in names):
            return None
        try:
            values = {name: archive[name] for name in names}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise FluxMatchError(f"{path}: its spring parameters cannot be read ({err})") from None
    for name, value in values.items():
        if value.shape != () or value.dtype.kind not in "iuf":
            raise FluxMatchError(f"{path}: the spring parameter {name!r} must be a single number, got an array of shape {value.shape} and dtype {value.dtype}")
    return SpringParams(**{name: value.item() for name, value in values.items()})


__all__ = [
    "FEATURE_NAMES",
    "SpringParams",
    "springs_derivative",
    "rk4_step",
    "simulate_springs",
    "dynamics_residual",
    "save_springs",
    "load_springs_params",
]
