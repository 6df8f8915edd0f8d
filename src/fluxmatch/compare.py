"""Flux Matching, denoising score matching and flow matching side by side (``fluxmatch compare``).

Every objective trains the same MLP on the same data with the same optimizer, batch and number
of steps (one :func:`fluxmatch.train_run` each, in ``out/<objective>``), then samples with its
natural sampler: Langevin dynamics for fixed-σ flux and DSM fields, EDM's Heun down the noise
schedule for noise-annealed ones (``noise="annealed"``), the ODE for flow matching's velocity.
The metrics are computed against the same held-out points.

With ``nfe`` the comparison also records quality against sampler budget: at N function
evaluations per sample, fixed-σ flux and DSM run N Langevin steps of size ε_N = min(T/N, ε_max)
(T the total time of the default sampler, ε_max = 0.05 for stability), noise-annealed ones N
Euler steps of the probability-flow ODE, and flow matching N Euler steps of its ODE.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .config import OBJECTIVES, DataSpec, EvalSpec, FieldSpec, ObjectiveSpec, RunSpec, SamplerSpec, TrainSpec
from .errors import FluxMatchError
from .kinds import kind_for
from .metrics import wasserstein2
from .run import evaluation_pair, open_run, sample_run, train_run
from .train.checkpoint import atomic_write_json

METRICS = ("w2", "sliced_w2", "mmd", "energy")
MAX_LANGEVIN_STEP = 0.05


@dataclass(frozen=True)
class CompareSettings:
    """What every objective of a comparison shares (see the module docstring).

    ``sigma``, ``sample_steps`` and ``step_size`` are the fixed-σ objectives' σ and Langevin
    sampler; ``noise="annealed"`` trains flux and DSM over a continuum of σ instead.
    """

    data: str = "8gaussians"
    objectives: tuple[str, ...] | str = ("flux", "dsm", "flow")
    noise: str = "fixed"
    steps: int = 2000
    seed: int = 0
    nfe: tuple[int, ...] | None = None
    batch_size: int = 512
    sigma: float = 0.2236
    hidden: tuple[int, ...] = (128, 128)
    n_eval: int = 2000
    sample_steps: int = 2000
    step_size: float = 0.005


def _objective_list(objectives) -> list[str]:
    names = [o.strip() for o in objectives.split(",")] if isinstance(objectives, str) else list(objectives)
    unknown = [o for o in names if o not in OBJECTIVES]
    if not names or unknown:
        raise FluxMatchError(f"unknown objective(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(OBJECTIVES)}")
    if len(set(names)) != len(names):
        raise FluxMatchError(f"each objective may appear once, got {', '.join(names)}")
    return names


def spec_for(settings: CompareSettings, name: str) -> RunSpec:
    """The run spec of objective ``name`` in a comparison."""
    if name == "flow":
        objective, sampler = ObjectiveSpec(name="flow"), SamplerSpec()
    elif settings.noise == "fixed":
        objective = ObjectiveSpec(name=name, noise="fixed", sigma=settings.sigma)
        sampler = SamplerSpec(steps=settings.sample_steps, step_size=settings.step_size)
    else:
        objective, sampler = ObjectiveSpec(name=name, noise="annealed"), SamplerSpec()
    return RunSpec(
        data=DataSpec(settings.data), field=FieldSpec(family="mlp", hidden=tuple(settings.hidden)), objective=objective, sampler=sampler,
        train=TrainSpec(steps=settings.steps, batch_size=settings.batch_size, seed=settings.seed), evaluation=EvalSpec(n=settings.n_eval),
    )


def _sampler_label(run) -> str:
    s = run.spec.sampler
    if run.conditioning == "fixed":
        return f"Langevin, {s.steps} steps of ε = {s.step_size:g}"
    if run.conditioning == "sigma":
        return f"PF-ODE {s.method}, {s.steps} levels"
    return f"ODE {s.method}, {s.steps} steps"


def _budget_sampler(run, budget: int, total_time: float) -> dict:
    """Sampler settings at ``budget`` field evaluations per sample (see the module docstring)."""
    if run.conditioning == "fixed":
        return {"steps": budget, "step_size": min(total_time / budget, MAX_LANGEVIN_STEP)}
    return {"method": "euler", "steps": budget}


def compare_objectives(settings: CompareSettings, out, progress: bool = True) -> dict:
    """Train and evaluate each objective; write ``comparison.json``, ``comparison.png`` (and ``nfe.png``).

    Returns the content of ``comparison.json``: per objective the sample metrics (w2, sliced_w2,
    mmd, energy), the data-vs-data floor of each, training and sampling wall time (s), the
    sampler and its NFE per sample; and, with ``nfe``, ``nfe_curve``: objective → {N: W2}.
    """
    names = _objective_list(settings.objectives)
    kind = kind_for(DataSpec(str(settings.data)))
    if kind.name != "points":
        raise FluxMatchError(
            f"fluxmatch compare compares fields on points data (toy sets, .npy/.npz/.csv files); {settings.data} is {kind.name} data: "
            "train each objective on it with fluxmatch train --objective NAME"
        )
    budgets = sorted({int(b) for b in settings.nfe}) if settings.nfe else []
    if any(b < 1 for b in budgets):
        raise FluxMatchError(f"sampler budgets must be positive integers, got {settings.nfe}")
    out = Path(out)
    report: dict = {**asdict(settings), "objectives": {}, "data": str(settings.data)}
    samples, runs = {}, {}
    for name in names:
        metrics = train_run(spec_for(settings, name), out / name, progress=progress, overwrite=True)
        run = runs[name] = open_run(out / name)
        start = time.perf_counter()
        samples[name] = sample_run(run, n=settings.n_eval, seed=settings.seed)
        sample_wall = time.perf_counter() - start
        report["objectives"][name] = {
            **{k: metrics[k] for k in METRICS},
            **{f"floor_{k}": metrics[f"floor_{k}"] for k in METRICS},
            "mean_abs_curl": metrics.get("mean_abs_curl"),
            "train_wall_s": metrics["train"]["wall_time_s"],
            "sample_wall_s": round(sample_wall, 3),
            "nfe": metrics["sampler"]["nfe"],
            "sampler": _sampler_label(run),
        }
    held, _ = evaluation_pair(runs[names[0]], settings.n_eval, settings.seed)
    if budgets:
        report["nfe_curve"] = _nfe_curve(runs, budgets, settings, held)
        report["nfe_samplers"] = {
            "langevin": f"N steps of ε = min({settings.sample_steps * settings.step_size:g}/N, {MAX_LANGEVIN_STEP})",
            "annealed": "N Euler steps of the probability-flow ODE",
            "flow": "N Euler steps of the ODE",
        }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "comparison.json", report)
    _draw_figures(out, report, samples, runs, held)
    return report


def _nfe_curve(runs: dict, budgets: list[int], settings: CompareSettings, held: torch.Tensor) -> dict:
    total_time = settings.sample_steps * settings.step_size
    curve = {}
    for name, run in runs.items():
        curve[name] = {}
        for budget in budgets:
            try:
                points = sample_run(run, n=settings.n_eval, seed=settings.seed, **_budget_sampler(run, budget, total_time))
                curve[name][str(budget)] = wasserstein2(points, held)
            except FluxMatchError:  # a sampler that diverges at this budget has no finite W2
                curve[name][str(budget)] = math.nan
    return curve


def _draw_figures(out: Path, report: dict, samples: dict, runs: dict, held: torch.Tensor) -> None:
    from .viz.compare import plot_comparison, plot_quality_vs_budget

    flat_held = held.reshape(held.shape[0], -1)
    fields, conds = {}, {}
    if flat_held.shape[1] == 2:
        for name, run in runs.items():
            if run.conditioning != "sigma":
                fields[name] = run.field
                conds[name] = 1.0 if run.conditioning == "time" else run.sigma
    title = f"{report['data']}: {report['steps']} training steps each, seed {report['seed']}"
    plot_comparison(out / "comparison.png", {k: v.reshape(v.shape[0], -1) for k, v in samples.items()}, flat_held, fields, conds, title)
    if "nfe_curve" in report:
        floor = next(iter(report["objectives"].values()))["floor_w2"]
        plot_quality_vs_budget(out / "nfe.png", report["nfe_curve"], floor=floor, title=f"{report['data']}: W2 against sampler budget")


def format_table(report: dict) -> str:
    """A fixed-width text table of the comparison (one row per objective)."""
    head = f"{'objective':<10}{'W2':>9}{'floor':>9}{'sliced W2':>11}{'MMD²':>11}{'energy':>10}{'train s':>9}{'sample s':>10}{'NFE':>7}  sampler"
    lines = [head, "-" * len(head)]
    for name, r in report["objectives"].items():
        lines.append(
            f"{name:<10}{r['w2']:>9.4f}{r['floor_w2']:>9.4f}{r['sliced_w2']:>11.4f}{r['mmd']:>11.2e}{r['energy']:>10.4f}"
            f"{r['train_wall_s']:>9.1f}{r['sample_wall_s']:>10.2f}{r['nfe']:>7d}  {r['sampler']}"
        )
    if "nfe_curve" in report:
        budgets = sorted({int(b) for c in report["nfe_curve"].values() for b in c})
        lines += ["", "W2 at NFE " + " ".join(f"{b:>7d}" for b in budgets)]
        for name, c in report["nfe_curve"].items():
            lines.append(f"{name:<10}" + " ".join(f"{c[str(b)]:>7.3f}" for b in budgets))
    return "\n".join(lines)
