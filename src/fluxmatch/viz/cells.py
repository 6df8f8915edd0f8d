"""Velocity streamlines on a 2-D cell embedding, one panel per method.

Like every plot of :mod:`fluxmatch.viz`, it draws off-screen with a matplotlib ``Figure`` (no
pyplot), saves the PNG (creating its folder) and returns the path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from ..errors import FluxMatchError, check_integer

_BANDWIDTH = 0.04  # Gaussian kernel bandwidth, as a fraction of the embedding's mean span
_PAD = 0.05  # grid margin around the cells, as a fraction of each span
_MIN_MASS = np.exp(-2.0)  # kernel mass below this (no cell within ~2 bandwidths) is off the data
_REL_MASS = 0.01  # ... and so is mass below this fraction of the grid's largest mass
_DPI = 110


def _points(a, name: str, n: int | None = None) -> np.ndarray:
    """``a`` as a finite (n, 2) float64 array."""
    try:
        out = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise FluxMatchError(f"{name} must be a numeric (n_cells, 2) array") from None
    if out.ndim != 2 or out.shape[1] != 2 or out.shape[0] == 0:
        raise FluxMatchError(f"{name} must have shape (n_cells, 2), got {out.shape}")
    if n is not None and out.shape[0] != n:
        raise FluxMatchError(f"{name} has {out.shape[0]} rows but emb has {n} cells (mismatched lengths)")
    if not np.isfinite(out).all():
        raise FluxMatchError(f"{name} has NaN or inf in row {np.flatnonzero(~np.isfinite(out).all(1))[0]}: positions and velocities must be finite")
    return out


def embedding_grid_velocity(emb, v_emb, n_grid: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Smooth embedding velocities onto a regular grid with a Gaussian kernel.

    The grid spans the cells' bounding box padded by 5 % per side; the kernel bandwidth is 4 % of
    the mean span of the two axes. A grid point's velocity is the kernel-weighted mean of the
    cells' velocities; points with little kernel mass (no cell within about two bandwidths, or
    under 1 % of the largest mass on the grid) are NaN, so streamlines stay on the data.

    Args:
        emb: (n_cells, 2) embedding.
        v_emb: (n_cells, 2) embedding velocities.
        n_grid: grid points per axis (≥ 2).

    Returns:
        ``gx`` (n_grid,), ``gy`` (n_grid,) the grid coordinates, and ``U``, ``V`` (n_grid, n_grid)
        the smoothed velocity components, indexed [y, x] as :meth:`Axes.streamplot` wants.
    """
    emb = _points(emb, "emb")
    v = _points(v_emb, "v_emb", emb.shape[0])
    n_grid = check_integer(n_grid, "n_grid", minimum=2)
    lo, hi = emb.min(0), emb.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    gx, gy = (np.linspace(lo[d] - _PAD * span[d], hi[d] + _PAD * span[d], n_grid) for d in range(2))
    h = _BANDWIDTH * span.mean()
    mass = np.empty((n_grid, n_grid))
    flow = np.empty((n_grid, n_grid, 2))
    for row, y in enumerate(gy):  # one grid row at a time: n_grid × n_cells weights
        points = np.stack([gx, np.full_like(gx, y)], 1)
        sq = ((points[:, None, :] - emb[None, :, :]) ** 2).sum(-1)
        w = np.exp(-0.5 * sq / h**2)
        mass[row] = w.sum(1)
        flow[row] = w @ v / np.maximum(mass[row], 1e-300)[:, None]
    off = (mass < _MIN_MASS) | (mass < _REL_MASS * mass.max())
    flow[off] = np.nan
    return gx, gy, flow[..., 0], flow[..., 1]


def _cluster_colours(clusters: np.ndarray) -> tuple[np.ndarray, list, np.ndarray]:
    """The sorted cluster names, one colour per name (tab10, or tab20 past 10 clusters) and each cell's code."""
    names, codes = np.unique(clusters, return_inverse=True)
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return names, [cmap(i % cmap.N) for i in range(len(names))], codes


def _stream_panel(ax, emb: np.ndarray, v: np.ndarray, colours: list, codes: np.ndarray, name: str) -> None:
    ax.scatter(emb[:, 0], emb[:, 1], c=[colours[c] for c in codes], s=4, alpha=0.5, linewidths=0, rasterized=True)
    gx, gy, u, w = embedding_grid_velocity(emb, v)
    speed = np.hypot(u, w)
    if np.isfinite(speed).any() and np.nanmax(speed) > 0:
        ax.streamplot(gx, gy, np.ma.masked_invalid(u), np.ma.masked_invalid(w), color="0.15", density=1.2, linewidth=0.8, arrowsize=0.8)
    ax.set_title(name)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")


def _figure(emb, panels: dict, clusters, title: str | None = None) -> Figure:
    """The figure of :func:`plot_velocity_streams`, one axes per panel."""
    emb = _points(emb, "emb")
    if not isinstance(panels, dict) or not panels:
        raise FluxMatchError("panels must be a non-empty dict: name → (n_cells, 2) embedding velocities")
    fields = {str(k): _points(v, f"panels[{k!r}]", emb.shape[0]) for k, v in panels.items()}
    labels = np.asarray(clusters).astype(str)
    if labels.shape != (emb.shape[0],):
        raise FluxMatchError(f"clusters must be 1-D with one name per cell ({emb.shape[0]}), got shape {labels.shape} (mismatched lengths)")
    names, colours, codes = _cluster_colours(labels)
    fig = Figure(figsize=(4.0 * len(fields) + 1.8, 4.2), layout="constrained")
    axes = fig.subplots(1, len(fields), squeeze=False)[0]
    for ax, (name, v) in zip(axes, fields.items()):
        _stream_panel(ax, emb, v, colours, codes, name)
    handles = [axes[0].scatter([], [], color=colours[i], s=20, label=names[i]) for i in range(len(names))]
    fig.legend(handles=handles, loc="outside right center", fontsize="small", frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def plot_velocity_streams(emb, panels: dict, clusters, path, title: str | None = None) -> Path:
    """Streamlines of embedding velocities over the cells, one panel per method.

    Args:
        emb: (n_cells, 2) embedding.
        panels: panel name → (n_cells, 2) embedding velocities (e.g. from
            :func:`fluxmatch.metrics.cells.velocity_embedding`).
        clusters: (n_cells,) cluster names, colouring the cells (one legend for all panels).
        path: PNG file to write (its folder is created).
        title: figure title.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    fig = _figure(emb, panels, clusters, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    fig.clf()
    return path
