"""Scatter plots of samples next to the data, and training-curve plots.

Every function draws off-screen (Agg), saves a PNG to ``path`` (creating its folder), closes
the figure and returns ``path`` as a :class:`pathlib.Path`. Points may be numpy arrays or
torch tensors.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import torch

# Figures are built as matplotlib.figure.Figure objects, never through pyplot: they render
# headless with the Agg canvas and leave the user's matplotlib backend (e.g. Jupyter's) alone.
from matplotlib.figure import Figure

from ..errors import FluxMatchError  # noqa: E402

_MAX_SCATTER = 20000
_MAX_PCA_ROWS = 10000
_DEFAULT_HALF_WIDTH = 5.0
_DPI = 120


def as_float_array(x, name: str) -> np.ndarray:
    """numpy/torch/nested lists → float64 numpy, or FluxMatchError naming ``name``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise FluxMatchError(f"{name} is not a numeric array") from None


def as_rows(x, name: str) -> np.ndarray:
    """(N, ...) numpy/torch → (N, d) float64 numpy; a 1-D array becomes (N, 1)."""
    a = as_float_array(x, name)
    if a.ndim == 0 or a.shape[0] == 0:
        raise FluxMatchError(f"{name} must have at least one point, one per row; got shape {a.shape}")
    return a.reshape(a.shape[0], -1)


def finite_rows(a: np.ndarray) -> tuple[np.ndarray, int]:
    """The rows without NaN/inf, and how many rows were dropped."""
    ok = np.isfinite(a).all(1)
    return a[ok], int((~ok).sum())


def robust_box(points: np.ndarray, pad: float = 0.25) -> tuple[float, float, float, float]:
    """A square window (xmin, xmax, ymin, ymax) around the 1st–99th percentiles of (N, 2) points,
    widened by ``pad`` of its half-width so that the bulk of the data is not on the frame."""
    points, _ = finite_rows(points)
    if points.shape[0] == 0:
        return (-_DEFAULT_HALF_WIDTH, _DEFAULT_HALF_WIDTH, -_DEFAULT_HALF_WIDTH, _DEFAULT_HALF_WIDTH)
    lo, hi = np.percentile(points[:, :2], [1, 99], axis=0)
    center = (lo + hi) / 2
    # One half-width for both axes: equal aspect then fills a square panel.
    half = max(float((hi - lo).max()) / 2, 1e-3) * (1 + pad)
    return (center[0] - half, center[0] + half, center[1] - half, center[1] + half)


def box_from_lim(lim, fallback: np.ndarray | None) -> tuple[float, float, float, float]:
    """The plotting window: ``lim`` as a half-width around 0 or (xmin, xmax, ymin, ymax); if None,
    :func:`robust_box` of ``fallback``, or ±5 without it."""
    if lim is None:
        if fallback is None:
            return (-_DEFAULT_HALF_WIDTH, _DEFAULT_HALF_WIDTH, -_DEFAULT_HALF_WIDTH, _DEFAULT_HALF_WIDTH)
        return robust_box(fallback)
    if np.ndim(lim) == 0:
        half = float(lim)
        if not math.isfinite(half) or half <= 0:
            raise FluxMatchError(f"lim must be a positive half-width or (xmin, xmax, ymin, ymax), got {lim!r}")
        return (-half, half, -half, half)
    box = tuple(float(v) for v in np.asarray(lim, dtype=float).reshape(-1))
    if len(box) != 4 or not np.all(np.isfinite(box)) or box[0] >= box[1] or box[2] >= box[3]:
        raise FluxMatchError(f"lim must be a positive half-width or (xmin, xmax, ymin, ymax) with min < max, got {lim!r}")
    return box


def thin(a: np.ndarray, limit: int = _MAX_SCATTER, seed: int = 0) -> np.ndarray:
    """At most ``limit`` rows, chosen at random with a fixed seed (scatter plots of 10⁵ points
    are slow and no more informative)."""
    if a.shape[0] <= limit:
        return a
    return a[np.random.default_rng(seed).choice(a.shape[0], limit, replace=False)]


def save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return path


def _pca_projection(reference: np.ndarray):
    """Map (N, D) → (N, 2) onto the first two principal axes of ``reference``."""
    ref = torch.from_numpy(thin(reference, _MAX_PCA_ROWS))
    mean = ref.mean(0)
    _, _, vh = torch.linalg.svd(ref - mean, full_matrices=False)
    axes = vh[:2].T.numpy()
    mean = mean.numpy()
    return lambda a: (a - mean) @ axes


def plot_samples(path, samples: dict, data=None, title: str | None = None, lim=None) -> Path:
    """Scatter plots of generated samples, one panel each, beside a panel of the data.

    Args:
        path: PNG file to write.
        samples: name → (N, 2) points, e.g. ``{"flux": s1, "dsm": s2}`` (numpy or torch).
        data: optional (M, 2) data points, drawn in a first panel titled "data".
        title: figure title.
        lim: half-width around 0 or (xmin, xmax, ymin, ymax); by default the 1st–99th
            percentile box of the data (or of all samples without data), padded. All panels
            share it and have equal aspect.

    Points with more than two coordinates (any event shape, flattened) are projected onto the
    first two principal components of the data (of the pooled samples without data), and
    one-dimensional points are shown as histograms; the title says which. Rows with NaN/inf
    are left out and counted in their panel's title.
    """
    if not isinstance(samples, dict):
        raise FluxMatchError("samples must be a dict mapping a name to an (N, 2) array, e.g. {'flux': x}")
    panels = {} if data is None else {"data": as_rows(data, "data")}
    for name, points in samples.items():
        panels[str(name)] = as_rows(points, f"samples[{name!r}]")
    if not panels:
        raise FluxMatchError("nothing to plot: pass at least one sample set or the data")
    dims = {a.shape[1] for a in panels.values()}
    if len(dims) > 1:
        shapes = ", ".join(f"{k}: {a.shape[1]}" for k, a in panels.items())
        raise FluxMatchError(f"all point sets must have the same number of coordinates, got {shapes}")
    dim = dims.pop()

    clean = {}
    dropped = {}
    for name, a in panels.items():
        clean[name], dropped[name] = finite_rows(a)
    basis = clean["data"] if data is not None else np.concatenate(list(clean.values()))
    note = None
    if dim > 2:
        if basis.shape[0] < 2:
            raise FluxMatchError("need at least 2 finite points to find principal components")
        project = _pca_projection(basis)
        clean = {k: project(a) for k, a in clean.items()}
        basis = project(basis)
        note = f"first two principal components of the {'data' if data is not None else 'samples'} ({dim}-D points)"

    n = len(clean)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.7 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    if dim == 1:
        note = "one-dimensional points: histograms"
        lo, hi = np.percentile(basis[:, 0], [1, 99]) if basis.shape[0] else (-_DEFAULT_HALF_WIDTH, _DEFAULT_HALF_WIDTH)
        if lim is not None:
            lo, hi = box_from_lim(lim, None)[:2]
        pad = 0.15 * max(hi - lo, 1e-3)
        bins = np.linspace(lo - pad, hi + pad, 61)
    else:
        box = box_from_lim(lim, basis)
    for i, (name, a) in enumerate(clean.items()):
        ax = axes[i // ncols, i % ncols]
        color = "0.25" if name == "data" and data is not None else f"C{i - (data is not None)}"
        if dim == 1:
            ax.hist(a[:, 0], bins=bins, density=True, color=color, alpha=0.8)
            ax.set_xlim(bins[0], bins[-1])
        else:
            shown = thin(a)
            alpha = 0.5 if shown.shape[0] <= 5000 else 0.25
            ax.scatter(shown[:, 0], shown[:, 1], s=1.5, alpha=alpha, color=color, linewidths=0, rasterized=True)
            ax.set_xlim(box[0], box[1])
            ax.set_ylim(box[2], box[3])
            ax.set_aspect("equal")
        label = f"{name} (N={a.shape[0]})"
        if dropped[name]:
            label += f"\n{dropped[name]} non-finite row(s) left out"
        ax.set_title(label, fontsize=10)
        ax.tick_params(labelsize=8)
    for j in range(n, nrows * ncols):
        axes[j // ncols, j % ncols].set_visible(False)
    heading = "\n".join(t for t in (title, note) if t)
    if heading:
        fig.suptitle(heading, fontsize=11)
    return save(fig, path)


def _read_log(source) -> list[dict]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FluxMatchError(f"log file not found: {path}")
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    try:
        rows = [dict(r) for r in source]
    except (TypeError, ValueError):
        raise FluxMatchError("the log must be a CSV path or a list of dicts (one per logged step)") from None
    return rows


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _moving_average(values: np.ndarray, half: int) -> np.ndarray:
    """Centred mean over ±half neighbours (fewer at the ends); unlike an exponential average it
    does not lag behind the raw curve."""
    sums = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(len(values))
    lo = np.clip(index - half, 0, len(values))
    hi = np.clip(index + half + 1, 0, len(values))
    return (sums[hi] - sums[lo]) / (hi - lo)


def plot_loss_curve(path, log_csv_path_or_rows, keys=("loss",)) -> Path:
    """Training curves from a log: one stacked panel per key against ``step``.

    Args:
        path: PNG file to write.
        log_csv_path_or_rows: a CSV file with a header containing ``step``, or a list of dicts.
        keys: columns to plot. Rows where a key is empty or not a finite number (e.g. metrics
            logged only every few steps) are skipped for that key. With more than 50 points a
            centred moving average over ~2% of the points is drawn over the faint raw curve; the y axis is
            logarithmic when a curve is positive and spans more than two decades.

    Raises:
        FluxMatchError: missing file, no ``step`` column, or a key with no numeric values.
    """
    rows = _read_log(log_csv_path_or_rows)
    if not rows:
        raise FluxMatchError("the log has no rows")
    columns = list(rows[0].keys())
    if "step" not in columns:
        raise FluxMatchError(f"the log has no 'step' column (columns: {', '.join(map(str, columns))})")
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    if not keys:
        raise FluxMatchError("give at least one key to plot")
    curves = {}
    for key in keys:
        pairs = [(_number(r.get("step")), _number(r.get(key))) for r in rows]
        pairs = [(s, v) for s, v in pairs if s is not None and v is not None]
        if not pairs:
            raise FluxMatchError(f"the log has no numeric values for {key!r} (columns: {', '.join(map(str, columns))})")
        curves[key] = np.asarray(pairs)

    fig = Figure(figsize=(6.4, 2.6 * len(keys) + 0.3), layout="constrained")
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)
    for ax, (key, curve) in zip(axes[:, 0], curves.items()):
        steps, values = curve[:, 0], curve[:, 1]
        if len(values) > 50:
            ax.plot(steps, values, color="C0", alpha=0.3, linewidth=0.8)
            ax.plot(steps, _moving_average(values, len(values) // 50), color="C0", linewidth=1.5)
        else:
            ax.plot(steps, values, color="C0", marker="o" if len(values) < 20 else None, markersize=3, linewidth=1.2)
        if values.min() > 0 and values.max() / values.min() > 100:
            ax.set_yscale("log")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    return save(fig, path)


__all__ = ["plot_samples", "plot_loss_curve"]
