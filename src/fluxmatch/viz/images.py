"""A grid of images saved as one PNG (e.g. generated digits beside real ones).

Like every plot of :mod:`fluxmatch.viz`, it draws off-screen with a matplotlib ``Figure`` (no
pyplot), saves the PNG (creating its folder) and returns the path.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure

from ..errors import FluxMatchError
from .samples import save

_MAX_TILE_INCHES = 0.8
_MAX_WIDTH_INCHES = 12.0


def _as_images(images) -> np.ndarray:
    """(N, C, H, W) with C in {1, 3}, or (N, H, W) → (N, C, H, W) float64 numpy."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().double().numpy()
    try:
        a = np.asarray(images, dtype=np.float64)
    except (TypeError, ValueError):
        raise FluxMatchError("images must be a numeric array") from None
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[0] == 0 or a.shape[1] not in (1, 3) or min(a.shape[2:]) == 0:
        raise FluxMatchError(
            f"images must be (N, 1, H, W) grey, (N, 3, H, W) RGB or (N, H, W) with N ≥ 1, got shape {a.shape}"
        )
    return a


def _check_range(value_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise FluxMatchError(f"value_range must be (low, high), got {value_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise FluxMatchError(f"value_range must be finite with low < high, got {value_range!r}")
    return lo, hi


def plot_image_grid(path, images, nrow: int | None = None, title: str | None = None, labels=None, value_range=(-1.0, 1.0)):
    """Save N images as a grid, ``nrow`` images per row, greyscale (1 channel) or RGB (3).

    Args:
        path: PNG file to write.
        images: (N, 1, H, W), (N, 3, H, W) or (N, H, W), numpy or torch. By default in model
            units [−1, 1] (the digits' ``pixels/8 − 1``); pass ``value_range`` for other units,
            e.g. ``(0, 16)`` for digit pixels or ``(0, 255)`` for 8-bit images. Values are
            clipped to the range, which maps to black..white.
        nrow: images per row; default ⌈√N⌉ (a square-ish grid).
        title: figure title.
        labels: optional N labels (ints or strings) written on each tile's top-left corner.
        value_range: (low, high) of the image units.

    Images with NaN/inf pixels are drawn with those pixels black and counted in the title.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    a = _as_images(images)
    lo, hi = _check_range(value_range)
    n, channels, height, width = a.shape
    if nrow is None:
        nrow = math.ceil(math.sqrt(n))
    if isinstance(nrow, bool) or not isinstance(nrow, (int, np.integer)) or nrow < 1:
        raise FluxMatchError(f"nrow must be a positive integer (images per row), got {nrow!r}")
    if labels is not None:
        labels = [str(v) for v in (labels.tolist() if hasattr(labels, "tolist") else list(labels))]
        if len(labels) != n:
            raise FluxMatchError(f"labels must give one label per image: {len(labels)} labels for {n} images")

    bad = ~np.isfinite(a)
    n_bad = int(bad.reshape(n, -1).any(1).sum())
    a = np.where(bad, lo, a)
    a = (np.clip(a, lo, hi) - lo) / (hi - lo)

    ncols = min(int(nrow), n)
    nrows = math.ceil(n / ncols)
    pad = 1
    # One mosaic drawn once: fast for hundreds of tiles, and tiles stay pixel-exact with
    # nearest-neighbour interpolation. The padding is mid-grey so black digits stay separated.
    mosaic = np.full((nrows * (height + pad) + pad, ncols * (width + pad) + pad, channels), 0.5)
    for i in range(n):
        r, c = divmod(i, ncols)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        mosaic[top : top + height, left : left + width] = a[i].transpose(1, 2, 0)

    tile = min(_MAX_TILE_INCHES, _MAX_WIDTH_INCHES / ncols)
    aspect = mosaic.shape[0] / mosaic.shape[1]
    heading = title
    if n_bad:
        heading = "\n".join(t for t in (title, f"{n_bad} image(s) with NaN/inf pixels (drawn black)") if t)
    width_inches = tile * ncols + 0.2
    if heading:
        # wide enough for the title, the grid then centred in it
        width_inches = max(width_inches, min(_MAX_WIDTH_INCHES, 0.085 * max(len(line) for line in heading.split("\n"))))
    fig = Figure(figsize=(width_inches, tile * ncols * aspect + (0.3 + 0.2 * heading.count("\n") if heading else 0.2)), layout="constrained")
    ax = fig.add_subplot()
    if channels == 1:
        ax.imshow(mosaic[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    if labels is not None:
        size = max(4.0, min(9.0, 12 * tile))
        for i, label in enumerate(labels):
            r, c = divmod(i, ncols)
            ax.text(
                pad + c * (width + pad) - 0.3,
                pad + r * (height + pad) - 0.3,
                label,
                color="yellow",
                fontsize=size,
                va="top",
                ha="left",
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.5, "linewidth": 0},
            )
    if heading:
        fig.suptitle(heading, fontsize=9)
    return save(fig, path)


__all__ = ["plot_image_grid"]
