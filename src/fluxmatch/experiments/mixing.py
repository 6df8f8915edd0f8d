"""Fast mixing (docs/MATH.md §5; the paper's Experiment 4): does a mixing term buy fewer sampler steps?

On each data set, three fields train with the same network, batch and steps: DSM, Flux Matching,
and Flux Matching plus the fast-mixing term.

- Points (the 8-Gaussian mixture; fixed σ, an MLP field): each field is sampled by Langevin
  dynamics with the same step size from the same start (the data's mean ± std), and its W2 to
  held-out data is recorded along the chains: the mixing curve. The headline number is how many
  steps each needs to reach DSM's final W2.
- Images ("digits", the paper's own setting: noise-annealed UNet runs with the image defaults,
  Flux Matching by its default split estimator): each field is sampled by the predictor-corrector
  sampler with fewer and fewer noise levels, and FD-digits is recorded against the NFE. The
  headline number is the NFE each needs to reach DSM's FD at 35 NFE (18 levels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DataSpec, EvalSpec, ObjectiveSpec, RunSpec, SamplerSpec, TrainSpec
from ..metrics import mixing_curve, steps_to_reach, wasserstein2
from ..run import evaluation_pair, open_run, train_run
from ..train.checkpoint import atomic_write_json
from .specs import study_spec

CHECKPOINTS = (0, 10, 25, 50, 100, 150, 250, 400, 600, 1000, 1500, 2000)
DATASETS = ("8gaussians", "digits")
METHODS = {"dsm": ("dsm", None), "flux": ("flux", None), "flux+mixing": ("flux", "mixing")}
#: image data sets of the study: sampled by predictor-corrector at these numbers of noise levels
IMAGE_DATASETS = ("digits",)
IMAGE_LEVELS = (3, 4, 6, 9, 12, 18)


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
    """Train DSM, flux and flux + mixing on each data set and compare how fast they sample.

    Args:
        out: output directory (one run per data set and method, ``mixing.json``, ``mixing.png``).
        steps, seed: training steps and seed (same for every method).
        mixing_weight: weight of the fast-mixing term (reference 0.01).
        datasets: any of "8gaussians" (or other toy sets) and "digits" (images).
        n: chains per curve and held-out points (W2 exact, O(n³)); samples per FD for images.
        chains: Langevin ε of every chain and the step counts at which the distance is recorded.

    Returns the content of ``mixing.json``: per points data set, each method's curve, the target
    (DSM's final W2), the floor and the steps each method needs to reach the target, and the
    ratio ``steps(flux+mixing) / steps(DSM)``; per image data set (:func:`image_mixing`), FD
    against NFE and the NFE each method needs to reach DSM's FD at 35 NFE.
    """
    from ..viz.mixing import plot_mixing_curves

    out = Path(out)
    chains = Chains(chains.step_size, tuple(sorted({int(c) for c in chains.checkpoints})))
    report: dict = {"settings": {"steps": steps, "seed": seed, "mixing_weight": mixing_weight, "n": n, "step_size": chains.step_size, "checkpoints": list(chains.checkpoints)}}
    panels = {}
    for name in datasets:
        if name in IMAGE_DATASETS:
            report[name], panels[name] = image_mixing(name, out / name, steps, seed, mixing_weight, n, progress)
            atomic_write_json(out / "mixing.json", report)
            continue
        runs = {}
        for label, (objective, term) in METHODS.items():
            run_dir = out / name / label.replace("+", "-")
            sampler = SamplerSpec(steps=chains.checkpoints[-1], step_size=chains.step_size)
            train_run(study_spec(name, objective, steps, seed, n, {term: mixing_weight} if term else None, sampler), run_dir, progress=progress, overwrite=True)
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


def _fd_curve(run, held: torch.Tensor, n: int, seed: int) -> tuple[list[int], list[float], float]:
    """(NFE, FD-digits) of ``n`` predictor-corrector samples at each of :data:`IMAGE_LEVELS`, and the FD floor."""
    from ..metrics.images import image_metrics
    from ..run.sampling import draw, sampler_for

    nfes, fds = [], []
    for levels in IMAGE_LEVELS:
        samples, nfe = draw(run, n, seed, sampler_for(run, method="pc", steps=levels))
        metrics = image_metrics(samples, held, seed=seed)
        nfes.append(int(nfe))
        fds.append(float(metrics["fd_digits"]))
    return nfes, fds, float(metrics["fd_digits_floor"])


def _nfe_to_reach(nfes: list[int], fds: list[float], target: float) -> int | None:
    """The smallest NFE whose FD is at most ``target`` (None: none is)."""
    return next((nfe for nfe, fd in sorted(zip(nfes, fds)) if fd <= target), None)


def image_mixing(name: str, out: Path, steps: int, seed: int, mixing_weight: float, n: int, progress: bool) -> tuple[dict, dict]:
    """The image panel of :func:`run_mixing`: DSM, flux and flux + mixing trained on ``name``
    with the image defaults (noise-annealed UNet, no NLL), each sampled by predictor-corrector
    at :data:`IMAGE_LEVELS`. Returns the report entry and the plot panel."""
    runs = {}
    for label, (objective, term) in METHODS.items():
        spec = RunSpec(
            data=DataSpec(name),
            objective=ObjectiveSpec(name=objective, design={term: mixing_weight} if term else {}),
            train=TrainSpec(steps=steps, seed=seed),
            evaluation=EvalSpec(n=n, nll_n=0),
        )
        run_dir = out / label.replace("+", "-")
        train_run(spec, run_dir, progress=progress, overwrite=True)
        runs[label] = open_run(run_dir)
    held = runs["dsm"].kind.reload(runs["dsm"]).held_out
    curves = {label: _fd_curve(run, held, n, seed) for label, run in runs.items()}
    target = curves["dsm"][1][-1]
    reach = {label: _nfe_to_reach(nfes, fds, target) for label, (nfes, fds, _) in curves.items()}
    ratio = None if reach["flux+mixing"] is None or not reach["dsm"] else reach["flux+mixing"] / reach["dsm"]
    entry = {
        "sampler": "pc",
        "levels": list(IMAGE_LEVELS),
        "curves": {label: {"nfe": nfes, "fd_digits": fds} for label, (nfes, fds, _) in curves.items()},
        "target_fd": target,
        "target_nfe": curves["dsm"][0][-1],
        "floor_fd": curves["dsm"][2],
        "nfe_to_target": reach,
        "nfe_ratio_mixing_vs_dsm": ratio,
    }
    panel = {"curves": {label: (nfes, fds) for label, (nfes, fds, _) in curves.items()}, "target": target, "floor": curves["dsm"][2],
             "xlabel": "predictor-corrector NFE", "metric": "FD-digits"}
    return entry, panel
