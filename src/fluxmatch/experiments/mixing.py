"""Fast mixing (MATH.md §5; the paper's Experiment 4): does a mixing term buy fewer sampler steps?

On each data set, three fields train with the same MLP, batch, steps and σ: DSM, Flux Matching,
and Flux Matching plus the fast-mixing term. Each is then sampled by Langevin dynamics with the
same step size from the same start (the data's mean ± std), and its distance to held-out data
is recorded along the chains: the mixing curve. The headline number is how many steps each
needs to reach DSM's final distance.

Data: the 8-Gaussian mixture (2-D) and the scikit-learn digits as 64-D vectors in [−1, 1]
(fixed σ, an MLP field: the same setting as the 2-D study, in 64 dimensions).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import FluxMatchError
from ..metrics import mixing_curve, steps_to_reach, wasserstein2
from ..train import load_run
from ..train.checkpoint import atomic_write_bytes, atomic_write_json

CHECKPOINTS = (0, 10, 25, 50, 100, 150, 250, 400, 600, 1000, 1500, 2000)
DATASETS = ("8gaussians", "digits64")
METHODS = {"dsm": ("dsm", None), "flux": ("flux", None), "flux+mixing": ("flux", "mixing")}


def _digits64(out: Path) -> str:
    """The digits as 64-D vectors in [−1, 1], written once as an .npy file the pipeline can read."""
    from ..data.digits import load_digits_images

    path = out / "digits64.npy"
    if not path.is_file():
        images, _ = load_digits_images()
        buffer = io.BytesIO()
        np.save(buffer, images.reshape(images.shape[0], -1).numpy(), allow_pickle=False)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())
    return str(path)


def _evaluation(spec: str, run, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from ..pipeline import _evaluation_rows, _split_pair

    rows = _evaluation_rows(spec, run.config, n, seed)
    return _split_pair(rows, spec)


def run_mixing(
    out="runs/experiment-mixing",
    steps: int = 2000,
    seed: int = 0,
    mixing_weight: float = 0.01,
    datasets=DATASETS,
    n: int = 1000,
    step_size: float = 0.005,
    checkpoints=CHECKPOINTS,
    progress: bool = True,
) -> dict:
    """Train DSM, flux and flux + mixing on each data set and compare their mixing curves.

    Args:
        out: output directory (one run per data set and method, ``mixing.json``, ``mixing.png``).
        steps, seed: training steps and seed (same for every method).
        mixing_weight: weight of the fast-mixing term (reference 0.01).
        datasets: any of "8gaussians", "digits64" (or other toy sets).
        n: chains per curve and held-out points (W2 exact, O(n³)).
        step_size: Langevin ε of every chain.
        checkpoints: step counts at which the distance is recorded.

    Returns the content of ``mixing.json``: per data set, each method's curve, the target (DSM's
    final W2), the floor and the steps each method needs to reach the target, and the ratio
    ``steps(flux+mixing) / steps(DSM)``.
    """
    from ..pipeline import train_run
    from ..viz.mixing import plot_mixing_curves

    out = Path(out)
    checkpoints = sorted({int(c) for c in checkpoints})
    report: dict = {"settings": {"steps": steps, "seed": seed, "mixing_weight": mixing_weight, "n": n, "step_size": step_size, "checkpoints": checkpoints}}
    panels = {}
    for name in datasets:
        spec = _digits64(out) if name == "digits64" else name
        curves, runs = {}, {}
        for label, (objective, term) in METHODS.items():
            run_dir = out / name / label.replace("+", "-")
            train_run(
                data=spec, objective=objective, steps=steps, seed=seed, out=run_dir, progress=progress, n_eval=n,
                sample_steps=checkpoints[-1], step_size=step_size, design={term: mixing_weight} if term else None,
            )
            runs[label] = load_run(run_dir)
        held, floor_ref = _evaluation(spec, runs["dsm"], n, seed + 1)
        for label, run in runs.items():
            data = run.config["data"]
            generator = torch.Generator().manual_seed(seed)
            x0 = torch.tensor(data["mean"]) + torch.tensor(data["std"]) * torch.randn(held.shape[0], held.shape[1], generator=generator)
            curves[label] = mixing_curve(run.field, x0, step_size, checkpoints, held, metric="w2", cond=run.sigma, generator=generator)
        target = curves["dsm"].distances[-1]
        reach = {label: steps_to_reach(curve, target) for label, curve in curves.items()}
        ratio = None if reach["flux+mixing"] is None or not reach["dsm"] else reach["flux+mixing"] / reach["dsm"]
        report[name] = {
            "curves": {label: curve.as_dict() for label, curve in curves.items()},
            "target_w2": target,
            "floor_w2": wasserstein2(held, floor_ref),
            "steps_to_target": reach,
            "steps_ratio_mixing_vs_dsm": ratio,
            "final_w2": {label: curve.distances[-1] for label, curve in curves.items()},
        }
        panels[name] = {"curves": {label: (c.steps, c.distances) for label, c in curves.items()}, "target": target, "floor": report[name]["floor_w2"]}
        atomic_write_json(out / "mixing.json", report)
    plot_mixing_curves(out / "mixing.png", panels)
    report["files"] = ["mixing.json", "mixing.png"]
    atomic_write_json(out / "mixing.json", report)
    return report
