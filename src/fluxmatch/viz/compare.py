"""Figures of ``fluxmatch compare``: samples and fields side by side, and quality against budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .fields import _background, _draw_field, _frame
from .samples import as_rows, box_from_lim, finite_rows, save, thin


def plot_comparison(path, samples: dict, data, fields: dict | None = None, conds: dict | None = None, title: str | None = None) -> Path:
    """Row 1: the data and each method's samples; row 2 (2-D data with ``fields``): each field's streamlines.

    Args:
        path: PNG file to write.
        samples: method name → (N, 2) samples.
        data: (M, 2) held-out data.
        fields: method name → field callable ``f(x, c)``; methods without one get no field panel.
        conds: method name → the conditioning to draw its field with (σ, or t = 1 for a flow).
        title: figure title.
    """
    data = finite_rows(as_rows(data, "data"))[0]
    names = list(samples)
    box = box_from_lim(None, data)
    fields = fields or {}
    conds = conds or {}
    rows = 2 if fields else 1
    cols = len(names) + 1
    fig = Figure(figsize=(3.6 * cols, 3.7 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    shown = thin(data)
    axes[0, 0].scatter(shown[:, 0], shown[:, 1], s=1.5, alpha=0.5, color="0.25", linewidths=0, rasterized=True)
    _frame(axes[0, 0], box, f"data (N={data.shape[0]})")
    for i, name in enumerate(names, start=1):
        points, dropped = finite_rows(as_rows(samples[name], f"samples[{name!r}]"))
        shown = thin(points)
        axes[0, i].scatter(shown[:, 0], shown[:, 1], s=1.5, alpha=0.5, color=f"C{i - 1}", linewidths=0, rasterized=True)
        label = f"{name} (N={points.shape[0]})" + (f"\n{dropped} non-finite left out" if dropped else "")
        _frame(axes[0, i], box, label)
    if fields:
        axes[1, 0].set_visible(False)
        for i, name in enumerate(names, start=1):
            ax = axes[1, i]
            if name not in fields:
                ax.set_visible(False)
                continue
            _background(ax, data)
            artist, _ = _draw_field(ax, fields[name], box, 30, conds.get(name), "stream")
            fig.colorbar(artist, ax=ax, shrink=0.8, label="|f|")
            _frame(ax, box, f"{name}: field" + (" at t = 1" if name == "flow" else ""))
    if title:
        fig.suptitle(title, fontsize=11)
    return save(fig, path)


def plot_quality_vs_budget(path, curves: dict, floor: float | None = None, metric: str = "W2", title: str | None = None) -> Path:
    """``metric`` against the number of field evaluations (log axis), one line per method.

    Args:
        path: PNG file to write.
        curves: method name → {nfe: value}; non-finite values (a diverged sampler) are left out.
        floor: the data-vs-data value, drawn as a dashed line.
    """
    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, (name, curve) in enumerate(curves.items()):
        nfe = np.array(sorted(int(k) for k in curve), dtype=float)
        values = np.array([curve[k] if k in curve else curve[str(int(k))] for k in sorted(curve, key=int)], dtype=float)
        ok = np.isfinite(values)
        ax.plot(nfe[ok], values[ok], "o-", color=f"C{i}", label=name)
    if floor is not None:
        ax.axhline(floor, color="0.4", linestyle="--", linewidth=1, label="data vs data")
    ax.set_xscale("log")
    ax.set_xlabel("function evaluations per sample (NFE)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9)
    if title:
        ax.set_title(title, fontsize=11)
    return save(fig, path)
