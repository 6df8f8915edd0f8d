"""Mixing curves: distance to the data against the number of sampler steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .samples import save


def plot_mixing_curves(path, panels: dict, metric: str = "W2") -> Path:
    """One panel per data set, one line per method.

    Args:
        path: PNG file to write.
        panels: title → {"curves": {method: (steps, distances)}, "target": float | None,
            "floor": float | None, optionally "xlabel" and "metric"}; the target (e.g. DSM's
            final distance) and the data-vs-data floor are drawn as horizontal lines. Step 0 is
            drawn at the left edge of the log axis.
    """
    fig = Figure(figsize=(5.2 * len(panels), 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (title, panel) in zip(axes, panels.items()):
        for i, (name, (steps, values)) in enumerate(panel["curves"].items()):
            steps = np.maximum(np.asarray(steps, dtype=float), 1.0)
            ax.plot(steps, values, "o-", color=f"C{i}", markersize=3, label=name)
        if panel.get("target") is not None:
            ax.axhline(panel["target"], color="C1", linestyle=":", linewidth=1, label="DSM target")
        if panel.get("floor") is not None:
            ax.axhline(panel["floor"], color="0.4", linestyle="--", linewidth=1, label="data vs data")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(panel.get("xlabel", "Langevin steps (step 0 drawn at 1)"))
        ax.set_ylabel(panel.get("metric", metric))
        ax.set_title(title, fontsize=11)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return save(fig, path)
