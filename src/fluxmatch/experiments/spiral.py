"""The spiral demo: the ring with a tangential reward, Flux Matching against DSM.

The same reward (counter-clockwise flow about the origin, weight ``weight``) is added to both
objectives. Flux Matching can satisfy it with a divergence-free flux, so its samples stay on the
ring while its field visibly rotates; DSM's only minimiser is the score, so the reward drags its
field away from the score and its samples away from the ring.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..metrics import mean_abs_curl
from ..run import evaluation_pair, open_run, train_run
from ..train.checkpoint import atomic_write_json
from .specs import study_spec

DATA = "ring"


def run_spiral(out="runs/experiment-spiral", steps: int = 2000, seed: int = 0, weight: float = 0.5, n: int = 2000, progress: bool = True) -> dict:
    """Train flux, flux + rotation and DSM + rotation on the ring; write ``spiral.json`` and
    ``spiral.png`` (samples and streamlines of each field)."""
    from ..viz import plot_fields, plot_samples

    out = Path(out)
    held = None
    settings = {"flux": ("flux", None), "flux+rotation": ("flux", {"rotation": weight}), "dsm+rotation": ("dsm", {"rotation": weight})}
    rows, fields, samples = {}, {}, {}
    for label, (objective, design) in settings.items():
        run_dir = out / label.replace("+", "-")
        quality = train_run(study_spec(DATA, objective, steps, seed, n, design), run_dir, progress=progress, overwrite=True)
        run = open_run(run_dir)
        if held is None:
            held = evaluation_pair(run, n, seed + 1)[0]
        cond = None if run.sigma is None else torch.full((held.shape[0],), float(run.sigma))
        rows[label] = {"w2": quality["w2"], "floor_w2": quality["floor_w2"], "energy": quality["energy"], "mean_abs_curl": mean_abs_curl(run.field, held, cond)}
        fields[label] = run.field
        samples[label] = np.load(run_dir / "samples.npy")
    plot_samples(out / "samples.png", samples, data=held, title=f"ring with a tangential reward (weight {weight:g})")
    plot_fields(out / "fields.png", fields, data=held, cond=run.sigma)  # every setting trains at the same σ
    report = {"data": DATA, "weight": weight, "steps": steps, "seed": seed, "rows": rows, "files": ["spiral.json", "samples.png", "fields.png"]}
    atomic_write_json(out / "spiral.json", report)
    return report
