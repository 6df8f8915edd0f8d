"""Fast mixing (docs/MATH.md §5; the paper's Experiment 4): does a mixing term buy fewer sampler steps?

On each data set, three fields train with the same MLP, batch, steps and σ: DSM, Flux Matching,
and Flux Matching plus the fast-mixing term. Each is then sampled by Langevin dynamics with the
same step size from the same start (the data's mean ± std), and its distance to held-out data
is recorded along the chains: the mixing curve. The headline number is how many steps each
needs to reach DSM's final distance.

Data: the 8-Gaussian mixture (2-D) and the scikit-learn digits read as 64-D points in [−1, 1]
(fixed σ, an MLP field: the same setting as the 2-D study, in 64 dimensions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import SamplerSpec
from ..metrics import mixing_curve, steps_to_reach, wasserstein2
from ..run import evaluation_pair, open_run, train_run
from ..train.checkpoint import atomic_write_json
from .specs import study_spec

CHECKPOINTS = (0, 10, 25, 50, 100, 150, 250, 400, 600, 1000, 1500, 2000)
DATASETS = ("8gaussians", "digits64")
METHODS = {"dsm": ("dsm", None), "flux": ("flux", None), "flux+mixing": ("flux", "mixing")}
#: study data name → (data spec, data kind): the digits are read as 64-D points
DATA = {"digits64": ("digits", "points")}


@dataclass(frozen=True)
class Chains:
    """The Langevin chains of a mixing curve: step size ε and the step counts recorded."""

    step_size: float = 0.005
    checkpoints: tuple[int, ...] = CHECKPOINTS


def _curves(runs: dict, held: torch.Tensor, chains: Chains, seed: int) -> dict:
    """Each run's mixing curve: W2 to ``held`` along chains started from its data's mean ± std."""
    curves = {}
    for label, run in runs.items():
        meta = run.data_meta
        generator = torch.Generator().manual_seed(seed)
        x0 = torch.tensor(meta["mean"]) + torch.tensor(meta["std"]) * torch.randn(held.shape[0], len(meta["mean"]), generator=generator)
        curves[label] = mixing_curve(run.field, x0.reshape(held.shape), chains.step_size, list(chains.checkpoints), held, metric="w2", cond=run.sigma, generator=generator)
    return curves


def _summary(curves: dict, held: torch.Tensor, floor_ref: torch.Tensor) -> dict:
    target = curves["dsm"].distances[-1]
    reach = {label: steps_to_reach(curve, target) for label, curve in curves.items()}
    ratio = None if reach["flux+mixing"] is None or not reach["dsm"] else reach["flux+mixing"] / reach["dsm"]
    return {
        "curves": {label: curve.as_dict() for label, curve in curves.items()},
        "target_w2": target,
        "floor_w2": wasserstein2(held, floor_ref),
        "steps_to_target": reach,
        "steps_ratio_mixing_vs_dsm": ratio,
        "final_w2": {label: curve.distances[-1] for label, curve in curves.items()},
    }


def run_mixing(
    out="runs/experiment-mixing",
    steps: int = 2000,
    seed: int = 0,
    mixing_weight: float = 0.01,
    datasets=DATASETS,
    n: int = 1000,
    chains: Chains = Chains(),
    progress: bool = True,
) -> dict:
    """Train DSM, flux and flux + mixing on each data set and compare their mixing curves.

    Args:
        out: output directory (one run per data set and method, ``mixing.json``, ``mixing.png``).
        steps, seed: training steps and seed (same for every method).
        mixing_weight: weight of the fast-mixing term (reference 0.01).
        datasets: any of "8gaussians", "digits64" (or other toy sets).
        n: chains per curve and held-out points (W2 exact, O(n³)).
        chains: Langevin ε of every chain and the step counts at which the distance is recorded.

    Returns the content of ``mixing.json``: per data set, each method's curve, the target (DSM's
    final W2), the floor and the steps each method needs to reach the target, and the ratio
    ``steps(flux+mixing) / steps(DSM)``.
    """
    from ..viz.mixing import plot_mixing_curves

    out = Path(out)
    chains = Chains(chains.step_size, tuple(sorted({int(c) for c in chains.checkpoints})))
    report: dict = {"settings": {"steps": steps, "seed": seed, "mixing_weight": mixing_weight, "n": n, "step_size": chains.step_size, "checkpoints": list(chains.checkpoints)}}
    panels = {}
    for name in datasets:
        data, kind = DATA.get(name, (name, None))
        runs = {}
        for label, (objective, term) in METHODS.items():
            run_dir = out / name / label.replace("+", "-")
            sampler = SamplerSpec(steps=chains.checkpoints[-1], step_size=chains.step_size)
            train_run(study_spec(data, objective, steps, seed, n, {term: mixing_weight} if term else None, sampler, kind), run_dir, progress=progress, overwrite=True)
            runs[label] = open_run(run_dir)
        held, floor_ref = evaluation_pair(runs["dsm"], n, seed + 1)
        curves = _curves(runs, held, chains, seed)
        report[name] = _summary(curves, held, floor_ref)
        panels[name] = {"curves": {label: (c.steps, c.distances) for label, c in curves.items()}, "target": report[name]["target_w2"], "floor": report[name]["floor_w2"]}
        atomic_write_json(out / "mixing.json", report)
    plot_mixing_curves(out / "mixing.png", panels)
    report["files"] = ["mixing.json", "mixing.png"]
    atomic_write_json(out / "mixing.json", report)
    return report
