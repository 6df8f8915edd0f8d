"""Trajectory plots: real against generated (N, T, D) trajectories, W2 training curves, and an
animated GIF of the coupled springs.

Everything draws off-screen on :class:`matplotlib.figure.Figure` objects (Agg), never through
pyplot's global state; PNGs go through :func:`fluxmatch.viz.samples.save`. Arrays may be numpy
arrays or torch tensors, in raw units (e.g. :func:`fluxmatch.data.springs.simulate_springs`'s).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..data.springs import FEATURE_NAMES
from ..errors import FluxMatchError, check_integer
from .samples import as_float_array, save

FEATURE_NAMES_DEFAULT = FEATURE_NAMES
"""Feature names used for 4-feature trajectories when none are given: the springs' (q1, v1, q2, v2)."""

_REAL = "real"
_REAL_COLOR = "0.2"
#: Wall, rest positions of the two masses and the largest drawn displacement, in track units.
_WALL, _REST, _MAX_SHIFT = 2.6, 1.0, 0.75


def _as_trajectories(x, name: str) -> np.ndarray:
    """(N, T, D) numpy/torch → float64 numpy, or FluxMatchError naming ``name``."""
    a = as_float_array(x, name)
    if a.ndim != 3 or a.shape[0] < 1 or a.shape[1] < 1 or a.shape[2] < 1:
        raise FluxMatchError(f"{name} must have shape (N, T, D) with N, T, D ≥ 1 (N trajectories of T states with D features), got {a.shape}")
    return a


def _sources(real, generated) -> dict[str, np.ndarray]:
    """{"real": ..., label: ...} as float64 (N, T, D) arrays sharing T and D."""
    if not isinstance(generated, dict):
        raise FluxMatchError("generated must be a dict mapping a label to an (N, T, D) array, e.g. {'flux': x}")
    sources = {_REAL: _as_trajectories(real, "real")}
    for label, x in generated.items():
        if str(label) in sources:
            raise FluxMatchError(f"the generated label {label!r} is taken: 'real' names the real trajectories")
        sources[str(label)] = _as_trajectories(x, f"generated[{label!r}]")
    shape = sources[_REAL].shape[1:]
    for label, a in sources.items():
        if a.shape[1:] != shape:
            raise FluxMatchError(f"{label} has {a.shape[1]} steps of {a.shape[2]} features; the real trajectories have {shape[0]} of {shape[1]}")
    return sources


def _feature_names(names, d: int) -> list[str]:
    if names is None:
        return list(FEATURE_NAMES_DEFAULT) if d == len(FEATURE_NAMES_DEFAULT) else [f"x{i + 1}" for i in range(d)]
    names = [str(n) for n in names]
    if len(names) != d:
        raise FluxMatchError(f"names has {len(names)} entries but the trajectories have {d} features")
    return names


def _finite(a: np.ndarray) -> tuple[np.ndarray, int]:
    """The trajectories without NaN/inf, and how many were dropped."""
    ok = np.isfinite(a).all(axis=(1, 2))
    return a[ok], int((~ok).sum())


def _row_limits(shown: dict[str, np.ndarray], bands: dict[str, tuple[np.ndarray, np.ndarray]], d: int) -> list[tuple[float, float]]:
    """One y-range per feature, shared by every column: the 0.5–99.5 percentiles of what is drawn, padded."""
    limits = []
    for f in range(d):
        values = [a[:, :, f].ravel() for a in shown.values()]
        values += [np.concatenate([m[:, f] - s[:, f], m[:, f] + s[:, f]]) for m, s in bands.values()]
        pooled = np.concatenate(values) if values else np.zeros(1)
        pooled = pooled[np.isfinite(pooled)]
        lo, hi = np.percentile(pooled, [0.5, 99.5]) if pooled.size else (-1.0, 1.0)
        pad = 0.08 * max(hi - lo, 1e-6)
        limits.append((float(lo - pad), float(hi + pad)))
    return limits


def _color(i: int) -> str:
    return _REAL_COLOR if i == 0 else f"C{i - 1}"


def _draw_bands(column, time: np.ndarray, bands: dict[str, tuple[np.ndarray, np.ndarray]], order: list[str]) -> None:
    """Overlay, in each feature's axes of ``column``, every source's mean (T, D) ± std (T, D) over time."""
    for label, (mean, std) in bands.items():
        color = _color(order.index(label))
        for f, ax in enumerate(column):
            ax.plot(time, mean[:, f], color=color, linewidth=1.4, label=label)
            ax.fill_between(time, mean[:, f] - std[:, f], mean[:, f] + std[:, f], color=color, alpha=0.25 if label == _REAL else 0.15, linewidth=0)
    column[0].set_title("mean ± std", fontsize=9)
    if bands:
        column[0].legend(fontsize=7, loc="upper right")


def plot_trajectories(path, real, generated: dict, names=None, n_show: int = 8, dt: float = 0.1, title: str | None = None) -> Path:
    """Real and generated trajectories side by side, feature by feature, and their mean ± std.

    The grid has one row per feature and one column per source (the real trajectories first,
    then each generated label in order): each panel shows ``n_show`` trajectories (the first
    finite ones) against time t = step·dt. A last column overlays, for every source, the mean
    over trajectories of the feature at each step with a ±1 std band, so the comparison is
    visible at a glance. Every panel of a row shares the y-range (0.5–99.5 percentiles of what
    is drawn); trajectories with NaN/inf are left out and counted in the column title.

    Args:
        path: PNG file to write.
        real: (N, T, D) real trajectories in raw units (numpy or torch).
        generated: label → (M, T, D) generated trajectories (same T and D as ``real``).
        names: D feature names; by default q1, v1, q2, v2 for D = 4, else x1, …, xD.
        n_show: trajectories drawn per panel, ≥ 1.
        dt: time between steps (time units), > 0.
        title: figure title.

    Raises:
        FluxMatchError: an array is not (N, T, D), the sources' T or D differ, a label is
            "real", ``names`` has the wrong length, or ``n_show``/``dt`` are not valid.
    """
    sources = _sources(real, generated)
    t_steps, d = sources[_REAL].shape[1:]
    names = _feature_names(names, d)
    n_show = check_integer(n_show, "n_show")
    dt = _check_dt(dt)
    time = dt * np.arange(t_steps)
    clean, dropped = {}, {}
    for label, a in sources.items():
        clean[label], dropped[label] = _finite(a)
    shown = {label: a[:n_show] for label, a in clean.items()}
    bands = {label: (a.mean(0), a.std(0)) for label, a in clean.items() if a.shape[0]}
    limits = _row_limits(shown, bands, d)

    ncols = len(sources) + 1
    fig = Figure(figsize=(2.7 * ncols, 1.7 * d + 0.8), layout="constrained")
    axes = fig.subplots(d, ncols, sharex=True, squeeze=False)
    for col, (label, a) in enumerate(shown.items()):
        for f in range(d):
            axes[f, col].plot(time, a[:, :, f].T, color=_color(col), linewidth=0.8, alpha=0.75)
        note = f", {dropped[label]} non-finite" if dropped[label] else ""
        axes[0, col].set_title(f"{label} (N={sources[label].shape[0]}{note})", fontsize=9)
    _draw_bands(axes[:, -1], time, bands, list(sources))
    for f in range(d):
        axes[f, 0].set_ylabel(names[f])
        for ax in axes[f]:
            ax.set_ylim(*limits[f])
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("t")
    if title:
        fig.suptitle(title)
    return save(fig, path)


def _check_dt(dt) -> float:
    try:
        value = float(dt)
    except (TypeError, ValueError):
        raise FluxMatchError(f"dt must be a positive finite number, got {dt!r}") from None
    if isinstance(dt, bool) or not math.isfinite(value) or value <= 0:
        raise FluxMatchError(f"dt must be a positive finite number, got {dt!r}")
    return value


def _curve(label, curve) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) as float arrays with the non-finite points dropped, or FluxMatchError."""
    try:
        steps, values = curve
        steps, values = np.asarray(steps, dtype=np.float64).reshape(-1), np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise FluxMatchError(f"curves[{label!r}] must be a pair (steps, values) of number lists") from None
    if steps.shape != values.shape:
        raise FluxMatchError(f"curves[{label!r}] has {steps.size} steps but {values.size} values")
    ok = np.isfinite(steps) & np.isfinite(values)
    if not ok.any():
        raise FluxMatchError(f"curves[{label!r}] has no finite (step, value) point")
    return steps[ok], values[ok]


def plot_w2_curves(path, curves: dict, floor: float | None = None, title: str | None = None, metric: str = "W2") -> Path:
    """W2 (or another distance) against training steps, one line with markers per variant.

    Args:
        path: PNG file to write.
        curves: label → (steps, values), e.g. ``{"flux": ([500, 1000], [0.9, 0.4])}``; points
            whose step or value is not finite are skipped.
        floor: optional reference level (e.g. real-vs-real W2), drawn as a dashed horizontal line.
        title: figure title.
        metric: the y-axis label.

    The y axis is logarithmic when every value (and the floor) is positive and they span more
    than a factor 10.

    Raises:
        FluxMatchError: ``curves`` is not a non-empty dict, a curve is not a (steps, values)
            pair of equal lengths with a finite point, or ``floor`` is not a finite number.
    """
    if not isinstance(curves, dict) or not curves:
        raise FluxMatchError("curves must be a non-empty dict mapping a label to (steps, values)")
    data = {str(label): _curve(label, curve) for label, curve in curves.items()}
    if floor is not None:
        try:
            floor = float(floor)
        except (TypeError, ValueError):
            raise FluxMatchError(f"floor must be a finite number or None, got {floor!r}") from None
        if not math.isfinite(floor):
            raise FluxMatchError(f"floor must be a finite number or None, got {floor!r}")
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for i, (label, (steps, values)) in enumerate(data.items()):
        ax.plot(steps, values, "o-", color=f"C{i}", markersize=4, linewidth=1.3, label=label)
    if floor is not None:
        ax.axhline(floor, color="0.4", linestyle="--", linewidth=1, label=f"floor ({floor:.3g})")
    every = np.concatenate([v for _, v in data.values()] + ([np.asarray([floor])] if floor is not None else []))
    if every.min() > 0 and every.max() / every.min() > 10:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return save(fig, path)


def _zigzag(x0: float, x1: float, y: float, coils: int = 6, height: float = 0.12) -> tuple[np.ndarray, np.ndarray]:
    """The polyline of a spring from (x0, y) to (x1, y): straight ends, ``coils`` zigzags between."""
    xs = np.linspace(x0, x1, 2 * coils + 3)
    ys = np.full(xs.shape, float(y))
    ys[1:-1:2], ys[2:-1:2] = y + height, y - height
    ys[1], ys[-2] = y, y
    return xs, ys


def _positions(sources: dict[str, np.ndarray], index: int) -> tuple[dict[str, np.ndarray], float]:
    """Per source the (T, 2) displacements (q1, q2) of trajectory ``index``, and the drawing scale."""
    positions = {label: a[index][:, [0, 2]] for label, a in sources.items()}
    finite = np.concatenate([np.abs(p[np.isfinite(p)]) for p in positions.values()])
    largest = float(finite.max()) if finite.size else 0.0
    return positions, (_MAX_SHIFT / largest if largest > 0 else 1.0)


def _springs_figure(labels: list[str], scale: float):
    """The figure with one track per source: the walls, and the artists to move each frame."""
    fig = Figure(figsize=(6.0, 0.9 * len(labels) + 0.6))
    FigureCanvasAgg(fig)  # FuncAnimation and PillowWriter draw through the figure's canvas
    ax = fig.add_axes((0.13, 0.02, 0.85, 0.86))
    ax.set_xlim(-_WALL - 0.2, _WALL + 0.2)
    ax.set_ylim(-len(labels) + 0.4, 0.6)
    ax.set_axis_off()
    tracks = []
    for k, label in enumerate(labels):
        y = -k
        for side in (-1, 1):
            ax.plot([side * _WALL] * 2, [y - 0.3, y + 0.3], color="0.3", linewidth=4, solid_capstyle="butt")
        ax.text(-_WALL - 0.25, y, label, ha="right", va="center", fontsize=9, color=_color(k))
        ax.plot([-_REST, -_REST, _REST, _REST], [y - 0.3, y - 0.2, y - 0.3, y - 0.2], color="0.7", linewidth=0, marker="|", markersize=6)  # rest positions
        springs = [ax.plot([], [], color="0.45", linewidth=1)[0] for _ in range(3)]
        masses = ax.plot([], [], "s", color=_color(k), markersize=13, markeredgecolor="black")[0]
        tracks.append((y, springs, masses))
    ax.text(_WALL + 0.2, 0.45, f"displacement ×{scale:.2g}", ha="right", va="center", fontsize=7, color="0.4")
    clock = ax.text(-_WALL - 0.2, 0.45, "", ha="left", va="center", fontsize=9)
    return fig, tracks, clock


def animate_springs(path, real, generated: dict, index: int = 0, fps: int = 10, dt: float = 0.1) -> Path:
    """An animated GIF of the coupled springs: trajectory ``index`` of every source, one track each.

    Each horizontal track (real first, then each generated label) shows wall | spring | mass 1
    | spring | mass 2 | spring | wall, with the masses drawn at their rest positions ∓1 plus
    their displacements q1, q2, all scaled by one factor (shown) so that the largest
    displacement fits between the walls. Frame k shows step k, with the time k·dt; there is
    one frame per step.

    Args:
        path: GIF file to write, atomically (readers see the old file or the whole new one).
        real: (N, T, 4) real trajectories (q1, v1, q2, v2) in raw units.
        generated: label → (M, T, 4) generated trajectories.
        index: which trajectory of each source to show, 0 ≤ index < every N.
        fps: frames per second, ≥ 1.
        dt: time between steps (time units), > 0, for the time label.

    Raises:
        FluxMatchError: an array is not (N, T, 4), T differs between sources, ``index`` is out
            of range for a source, or ``fps``/``dt`` are not valid.
    """
    sources = _sources(real, generated)
    if sources[_REAL].shape[2] != 4:
        raise FluxMatchError(f"animate_springs needs the springs' 4 features (q1, v1, q2, v2), got {sources[_REAL].shape[2]}")
    index, fps, dt = check_integer(index, "index", 0), check_integer(fps, "fps"), _check_dt(dt)
    for label, a in sources.items():
        if index >= a.shape[0]:
            raise FluxMatchError(f"index {index} is out of range: {label} has {a.shape[0]} trajectories")
    path = _gif_target(path)
    positions, scale = _positions(sources, index)
    fig, tracks, clock = _springs_figure(list(sources), scale)

    def draw(k: int):
        for (y, springs, masses), p in zip(tracks, positions.values()):
            x1, x2 = -_REST + scale * p[k, 0], _REST + scale * p[k, 1]
            for spring, (a, b) in zip(springs, ((-_WALL, x1), (x1, x2), (x2, _WALL))):
                spring.set_data(*_zigzag(a, b, y))
            masses.set_data([x1, x2], [y, y])
        clock.set_text(f"t = {k * dt:.2f}  (step {k})")
        return [clock] + [artist for _, springs, masses in tracks for artist in (*springs, masses)]

    frames = sources[_REAL].shape[1]
    animation = FuncAnimation(fig, draw, frames=frames, interval=1000 / fps, blit=False, repeat=False)
    return _save_gif(animation, path, fps)


def _gif_target(path) -> Path:
    """``path`` as a Path, refused (FluxMatchError) if it is a directory; its folder is created."""
    path = Path(os.fspath(path))
    if path.is_dir():
        raise FluxMatchError(f"cannot write the animation to {path}: it is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save_gif(animation: FuncAnimation, path: Path, fps: int) -> Path:
    """Render ``animation`` to a GIF in a temporary folder, then write its bytes atomically to ``path``."""
    from ..train.checkpoint import atomic_write_bytes  # here: fluxmatch.train imports the models

    with tempfile.TemporaryDirectory(prefix="fluxmatch-gif-") as folder:
        tmp = Path(folder) / "animation.gif"
        animation.save(tmp, writer=PillowWriter(fps=fps), dpi=80)
        atomic_write_bytes(path, tmp.read_bytes())
    return path


__all__ = ["FEATURE_NAMES_DEFAULT", "plot_trajectories", "plot_w2_curves", "animate_springs"]
