"""Pictures of planar vector fields: streamlines or arrows, and curl heat-maps.

A field is any callable ``field(x, cond)`` on (N, 2) float32 tensors returning (N, 2). Every
function saves a PNG to ``path`` (creating its folder), closes the figure and returns ``path``
as a :class:`pathlib.Path`. The window is ``lim`` (a half-width around 0, or (xmin, xmax, ymin,
ymax)) or, by default, the 1st–99th percentile box of the data, padded; ±5 without data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure  # no pyplot: headless, and the user's backend is left alone
from matplotlib.patches import Rectangle

from ..errors import FluxMatchError  # noqa: E402
from ..metrics.fields import curl_2d, field_on_grid, grid_points  # noqa: E402
from .samples import as_rows, box_from_lim, finite_rows, save, thin  # noqa: E402

_BACKGROUND_POINTS = 3000
_CURL_SUMMARY_POINTS = 2000


def _planar_data(data) -> np.ndarray | None:
    if data is None:
        return None
    a = as_rows(data, "data")
    if a.shape[1] != 2:
        raise FluxMatchError(f"field plots are for 2-D data, got {a.shape[1]} coordinates per point")
    return finite_rows(a)[0]


def _background(ax, data: np.ndarray | None) -> None:
    if data is not None and data.shape[0]:
        shown = thin(data, _BACKGROUND_POINTS)
        ax.scatter(shown[:, 0], shown[:, 1], s=1, color="0.35", alpha=0.15, linewidths=0, zorder=0, rasterized=True)


def _frame(ax, box, title: str | None) -> None:
    ax.set_xlim(box[0], box[1])
    ax.set_ylim(box[2], box[3])
    ax.set_aspect("equal")
    ax.tick_params(labelsize=8)
    if title:
        ax.set_title(title, fontsize=10)


def _draw_field(ax, field, box, grid: int, cond, kind: str):
    """Streamlines or unit arrows coloured by |f|; returns the colour-mapped artist and how many
    grid values were NaN/inf (drawn as 0)."""
    X, Y, U, V = field_on_grid(field, box, grid, cond)
    bad = ~(np.isfinite(U) & np.isfinite(V))
    U, V = np.where(bad, 0.0, U), np.where(bad, 0.0, V)
    speed = np.hypot(U, V)
    if kind == "stream":
        stream = ax.streamplot(X, Y, U, V, color=speed, cmap="viridis", density=1.3, linewidth=0.9, arrowsize=0.8)
        artist = stream.lines
    else:
        # Arrows of one length show the direction everywhere; the colour carries the magnitude,
        # which would otherwise make arrows vanish where the field is weak.
        unit = np.where(speed > 0, speed, 1.0)
        spacing = (box[1] - box[0]) / (grid - 1)
        artist = ax.quiver(
            X, Y, U / unit, V / unit, speed, cmap="viridis", angles="xy", scale_units="xy",
            scale=1 / (0.8 * spacing), width=0.004, headwidth=3.5,
        )
    return artist, int(bad.sum())


def _check_kind(kind: str) -> str:
    if kind not in ("stream", "quiver"):
        raise FluxMatchError(f"unknown field plot kind {kind!r}: expected 'stream' or 'quiver'")
    return kind


def plot_field(path, field, data=None, cond=None, lim=None, kind: str = "stream", grid: int = 40, title: str | None = None) -> Path:
    """Streamlines (``kind="stream"``) or arrows (``kind="quiver"``, unit length, ~20–25 per side
    reads best) of a planar field coloured by |f|, with a colorbar and the data faint behind.

    Args:
        grid: points per side of the evaluation grid.
    """
    kind = _check_kind(kind)
    points = _planar_data(data)
    box = box_from_lim(lim, points)
    fig = Figure(figsize=(5.4, 4.6), layout="constrained")
    ax = fig.subplots()
    _background(ax, points)
    artist, bad = _draw_field(ax, field, box, grid, cond, kind)
    fig.colorbar(artist, ax=ax, label="|f|", shrink=0.9)
    heading = title or ("field streamlines" if kind == "stream" else "field directions")
    if bad:
        heading += f"\n({bad} non-finite grid values drawn as 0)"
    _frame(ax, box, heading)
    return save(fig, path)


def _curl_grid(field, box, grid: int, cond) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X, Y = grid_points(box, grid)
    points = torch.from_numpy(np.stack([X.ravel(), Y.ravel()], 1))
    return X, Y, curl_2d(field, points, cond).cpu().double().numpy().reshape(X.shape)


def _curl_norm(values: list[np.ndarray]) -> tuple[TwoSlopeNorm, bool]:
    """A colour scale centred at 0 and symmetric, and whether values lie beyond it.

    It reaches max |curl|, unless that is more than 3× the 99.5th percentile: then a few extreme
    grid cells (e.g. near a singularity of a learned field) would wash out the rest, and the
    scale stops at the percentile instead.
    """
    finite = np.concatenate([np.abs(v[np.isfinite(v)]) for v in values])
    if not finite.size:
        return TwoSlopeNorm(vcenter=0.0, vmin=-1.0, vmax=1.0), False
    peak, typical = float(finite.max()), float(np.percentile(finite, 99.5))
    top = peak if peak <= 3 * typical else typical
    return TwoSlopeNorm(vcenter=0.0, vmin=-max(top, 1e-12), vmax=max(top, 1e-12)), peak > top


def _draw_curl(ax, X, Y, C, norm, data):
    mesh = ax.pcolormesh(X, Y, np.ma.masked_invalid(C), cmap="RdBu_r", norm=norm, shading="nearest", rasterized=True)
    if data is not None and data.shape[0]:
        shown = thin(data, _BACKGROUND_POINTS)
        ax.scatter(shown[:, 0], shown[:, 1], s=1, color="k", alpha=0.12, linewidths=0, rasterized=True)
    return mesh


def _mean_abs_curl_text(field, data, cond, C) -> str:
    if data is not None and data.shape[0]:
        points = torch.from_numpy(thin(data, _CURL_SUMMARY_POINTS).astype(np.float32))
        return f"mean |curl| on data = {float(curl_2d(field, points, cond).abs().mean()):.3g}"
    return f"mean |curl| on grid = {float(np.nanmean(np.abs(C))):.3g}"


def plot_curl(path, field, data=None, cond=None, lim=None, grid: int = 80, title: str | None = None) -> Path:
    """Heat-map of the scalar curl ∂f_y/∂x − ∂f_x/∂y of a planar field (red: counter-clockwise,
    blue: clockwise, white: 0), with a colorbar and the data faint on top. The title gives the
    mean |curl| over the data (over the grid without data)."""
    points = _planar_data(data)
    box = box_from_lim(lim, points)
    X, Y, C = _curl_grid(field, box, grid, cond)
    norm, clipped = _curl_norm([C])
    fig = Figure(figsize=(5.4, 4.6), layout="constrained")
    ax = fig.subplots()
    mesh = _draw_curl(ax, X, Y, C, norm, points)
    fig.colorbar(mesh, ax=ax, label="curl", shrink=0.9, extend="both" if clipped else "neither")
    _frame(ax, box, f"{title or 'curl'}\n{_mean_abs_curl_text(field, points, cond, C)}")
    return save(fig, path)


def plot_fields(path, fields: dict, data=None, cond=None, lim=None, grid: int = 40, curl_grid: int = 80) -> Path:
    """Side-by-side comparison of fields: streamlines (top row, coloured by |f|, one colorbar
    each) and curl heat-maps (bottom row), one column per field.

    The curl row shares one colour scale, so a field that is (nearly) a gradient shows up
    white next to one that circulates.

    Args:
        fields: name → field, e.g. ``{"flux": f1, "dsm": f2}``.
        grid, curl_grid: evaluation grid sizes per side for the two rows.
    """
    if not isinstance(fields, dict) or not fields:
        raise FluxMatchError("fields must be a non-empty dict mapping a name to a field")
    points = _planar_data(data)
    box = box_from_lim(lim, points)
    curls = {name: _curl_grid(f, box, curl_grid, cond) for name, f in fields.items()}
    norm, clipped = _curl_norm([c[2] for c in curls.values()])
    k = len(fields)
    fig = Figure(figsize=(4.4 * k + 0.8, 8.4), layout="constrained")
    axes = fig.subplots(2, k, squeeze=False)
    mesh = None
    for j, (name, f) in enumerate(fields.items()):
        top, bottom = axes[0, j], axes[1, j]
        _background(top, points)
        artist, bad = _draw_field(top, f, box, grid, cond, "stream")
        fig.colorbar(artist, ax=top, label="|f|", shrink=0.85)
        _frame(top, box, name + (f"\n({bad} non-finite grid values drawn as 0)" if bad else ""))
        X, Y, C = curls[name]
        mesh = _draw_curl(bottom, X, Y, C, norm, points)
        _frame(bottom, box, f"curl of {name}\n{_mean_abs_curl_text(f, points, cond, C)}")
    fig.colorbar(mesh, ax=axes[1, :].tolist(), label="curl", shrink=0.85, extend="both" if clipped else "neither")
    return save(fig, path)


__all__ = ["plot_field", "plot_curl", "plot_fields"]


def plot_jacobian_patterns(path, patterns: dict, allowed=None, names=None, title: str | None = None) -> Path:
    """Heat maps of mean |∂f_i/∂x_j| (row i: output, column j: input), one panel per field.

    Args:
        patterns: label → (d, d) array of mean absolute Jacobian entries (each panel is scaled
            by its own largest entry, so the pattern, not the size, is compared).
        allowed: optional (d, d) boolean mask M[i, j] (output i may see input j): the cells it
            forbids are hatched, so an entry outside the structure stands out.
        names: variable names for the axes (default x1..xd).
    """
    labels = list(patterns)
    if not labels:
        raise FluxMatchError("plot_jacobian_patterns needs at least one pattern")
    arrays = [np.asarray(patterns[k], dtype=np.float64) for k in labels]
    d = arrays[0].shape[0]
    if any(a.shape != (d, d) for a in arrays):
        raise FluxMatchError(f"every Jacobian pattern must be a square (d, d) array, got shapes {[a.shape for a in arrays]}")
    names = list(names or [f"x{i + 1}" for i in range(d)])
    fig = Figure(figsize=(3.2 * len(labels) + 0.6, 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(labels)))
    for ax, label, a in zip(axes, labels, arrays):
        scaled = a / max(float(a.max()), 1e-30)
        image = ax.imshow(scaled, cmap="magma", vmin=0, vmax=1)
        for i in range(d):
            for j in range(d):
                ax.text(j, i, f"{scaled[i, j]:.2f}", ha="center", va="center", fontsize=8, color="w" if scaled[i, j] < 0.6 else "k")
                if allowed is not None and not bool(np.asarray(allowed)[i, j]):
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.6", linewidth=0))
        ax.set_xticks(range(d), [f"∂{n}" for n in names])
        ax.set_yticks(range(d), [f"f_{n}" for n in names])
        ax.set_title(label, fontsize=10)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="mean |∂f_i/∂x_j| / largest")
    if title:
        fig.suptitle(title)
    return save(fig, path)
