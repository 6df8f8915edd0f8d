"""Controllable fields (docs/MATH.md §5; the paper's Experiment 1) on a 3-component 2-D mixture.

Flux Matching fields are trained with design terms of growing weight (a tangential-flow reward
about the centre, and a reward for Jacobian skewness), beside plain flux and DSM. Each field is
then measured on four axes:

- distribution error: W2 of its Langevin samples against held-out data (with the data floor);
- mixing speed: 1/τ, τ the integrated autocorrelation time (in steps) of sin(angle) along
  stationary Langevin chains: how fast a chain moves between the three components;
- cycle alignment: mean cosine between the field and the counter-clockwise cycle through the
  components, over data points (0 for the score, which points radially);
- skewness: mean ‖½(J − Jᵀ)‖_F of the field's Jacobian on data points.

The frontier plot shows the trade-off; the field plot shows each field's streamlines and curl.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ..config import SamplerSpec
from ..metrics import antisymmetric_jacobian_norm, autocorrelation_time, mean_abs_curl
from ..run import evaluation_pair, open_run, train_run
from ..train.checkpoint import atomic_write_json
from .specs import study_spec

DATA = "triangle"
SWEEP = (("dsm", None, 0.0), ("flux", None, 0.0), ("flux", "rotation", 0.1), ("flux", "rotation", 0.3), ("flux", "rotation", 1.0), ("flux", "skew", 0.01), ("flux", "skew", 0.05))


def _label(objective: str, term: str | None, weight: float) -> str:
    return objective if term is None else f"{objective}+{term} {weight:g}"


def cycle_alignment(field, points: torch.Tensor, cond=None) -> float:
    """Mean cosine between f(x) and the counter-clockwise tangent R₉₀ x/|x| over the points."""
    with torch.no_grad():
        f = field(points, cond)
    tangent = torch.stack([-points[:, 1], points[:, 0]], 1) / points.norm(dim=1, keepdim=True).clamp_min(1e-6)
    return float(((f * tangent).sum(1) / f.norm(dim=1).clamp_min(1e-12)).mean())


def _sin_angle(z: torch.Tensor) -> torch.Tensor:
    return z[:, 1] / z.norm(dim=1).clamp_min(1e-6)


def run_controllable(
    out="runs/experiment-controllable",
    steps: int = 1500,
    seed: int = 0,
    sweep=SWEEP,
    n: int = 1000,
    step_size: float = 0.005,
    chains: tuple[int, float] = (5000, 0.02),
    progress: bool = True,
) -> dict:
    """Train the sweep's fields on the triangle mixture, measure each, draw the frontier.

    Args:
        out: output directory (one run per setting, ``controllable.json``, ``frontier.png``, ``fields.png``).
        steps, seed: training steps and seed of every field.
        sweep: (objective, design term or None, weight) settings.
        n: samples / chains per measurement.
        step_size: Langevin ε for the samples behind W2.
        chains: (steps, ε) of the 256 stationary chains for τ (long enough in time, 100 units
            by default, to see chains hop between components).
    """
    from ..viz import plot_fields

    out = Path(out)
    rows, fields, held = [], {}, None
    for objective, term, weight in sweep:
        label = _label(objective, term, weight)
        run_dir = out / label.replace(" ", "-").replace("+", "-")
        spec = study_spec(DATA, objective, steps, seed, n, {term: weight} if term else None, SamplerSpec(steps=2000, step_size=step_size))
        quality = train_run(spec, run_dir, progress=progress, overwrite=True)
        run = open_run(run_dir)
        if held is None:
            held = evaluation_pair(run, n, seed + 1)[0]
        generator = torch.Generator().manual_seed(seed)
        tau = autocorrelation_time(run.field, held[:256], chains[1], chains[0], statistic=_sin_angle, cond=run.sigma, generator=generator)
        cond = None if run.sigma is None else torch.full((held.shape[0],), float(run.sigma))
        rows.append({
            "label": label, "objective": objective, "term": term, "weight": weight,
            "w2": quality["w2"], "floor_w2": quality["floor_w2"],
            "autocorrelation_steps": tau, "mixing_speed": 1.0 / tau,
            "cycle_alignment": cycle_alignment(run.field, held, cond),
            "skewness": antisymmetric_jacobian_norm(run.field, held, cond),
            "mean_abs_curl": mean_abs_curl(run.field, held, cond),
        })
        fields[label] = run.field
        atomic_write_json(out / "controllable.json", {"rows": rows})
    _plot_frontier(out / "frontier.png", rows)
    plot_fields(out / "fields.png", fields, data=held, cond=run.sigma)  # every setting trains at the same σ
    report = {"data": DATA, "steps": steps, "seed": seed, "step_size": step_size, "chain_step_size": chains[1], "chain_steps": chains[0], "rows": rows, "files": ["controllable.json", "frontier.png", "fields.png"]}
    atomic_write_json(out / "controllable.json", report)
    return report


def _pareto(points: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated in both coordinates (larger is better)."""
    keep = [i for i, p in enumerate(points) if not any((q >= p).all() and (q > p).any() for q in points)]
    return np.array(sorted(keep, key=lambda i: points[i, 0]))


def _plot_frontier(path, rows: list[dict]) -> Path:
    from ..viz.samples import save

    fig = Figure(figsize=(11.0, 4.4), layout="constrained")
    ax_a, ax_b = fig.subplots(1, 2)
    align = np.array([r["cycle_alignment"] for r in rows])
    speed = np.array([r["mixing_speed"] for r in rows])
    skew = np.array([r["skewness"] for r in rows])
    w2 = np.array([r["w2"] for r in rows])
    points = ax_a.scatter(align, speed, c=skew, cmap="viridis", s=60, edgecolors="k")
    front = _pareto(np.stack([align, speed], 1))
    ax_a.plot(align[front], speed[front], "--", color="0.5", linewidth=1, label="frontier")
    for r, x, y in zip(rows, align, speed):
        ax_a.annotate(f"{r['label']}\nW2 {r['w2']:.2f}", (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    fig.colorbar(points, ax=ax_a, label="Jacobian skewness ‖½(J − Jᵀ)‖")
    ax_a.set_xlabel("cycle alignment (mean cosine with the counter-clockwise cycle)")
    ax_a.set_ylabel("mixing speed 1/τ (per Langevin step)")
    ax_a.legend(fontsize=8)
    ax_a.grid(alpha=0.3)
    ax_b.scatter(skew, w2, c=["C1" if r["objective"] == "dsm" else "C0" for r in rows], s=50, edgecolors="k")
    floor = float(np.mean([r["floor_w2"] for r in rows]))
    ax_b.axhline(floor, color="0.4", linestyle="--", linewidth=1, label="data vs data")
    for r, x, y in zip(rows, skew, w2):
        ax_b.annotate(r["label"], (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax_b.set_xlabel("Jacobian skewness")
    ax_b.set_ylabel("W2 of samples to held-out data")
    ax_b.legend(fontsize=8)
    ax_b.grid(alpha=0.3)
    return save(fig, path)
