"""Flux Matching, denoising score matching and flow matching side by side (``fluxmatch compare``).

Every objective trains the same MLP on the same data with the same optimizer, batch and number
of steps (one :func:`fluxmatch.pipeline.train_run` each, in ``out/<objective>``), then samples
with its natural sampler: Langevin dynamics for the stationary fields of flux and DSM, the ODE
for flow matching's velocity. The metrics are computed against the same held-out points.

With ``nfe`` the comparison also records quality against sampler budget: at N function
evaluations per sample, flux and DSM run N Langevin steps of size ε_N = min(T/N, ε_max) (T the
total time of the default sampler, ε_max = 0.05 for stability), and flow matching runs N Euler
steps of its ODE.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .errors import FluxMatchError
from .metrics import wasserstein2
from .pipeline import OBJECTIVE_NAMES, _evaluation_rows, _split_pair, is_flow_run, sample_run, train_run
from .train import load_run
from .train.checkpoint import atomic_write_json

METRICS = ("w2", "sliced_w2", "mmd", "energy")
MAX_LANGEVIN_STEP = 0.05
_ODE_STAGES = {"euler": 1, "midpoint": 2, "heun": 2}


def _objective_list(objectives) -> list[str]:
    names = [o.strip() for o in objectives.split(",")] if isinstance(objectives, str) else list(objectives)
    unknown = [o for o in names if o not in OBJECTIVE_NAMES]
    if not names or unknown:
        raise FluxMatchError(f"unknown objective(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(OBJECTIVE_NAMES)}")
    if len(set(names)) != len(names):
        raise FluxMatchError(f"each objective may appear once, got {', '.join(names)}")
    return names


def _budget_samples(run, n: int, budget: int, total_time: float, seed: int):
    """Samples at ``budget`` field evaluations per sample (see the module docstring)."""
    if is_flow_run(run):
        return sample_run(run, n=n, seed=seed, steps=budget, ode_method="euler")
    return sample_run(run, n=n, seed=seed, steps=budget, step_size=min(total_time / budget, MAX_LANGEVIN_STEP))


def compare_objectives(
    data="8gaussians",
    objectives=("flux", "dsm", "flow"),
    steps: int = 2000,
    seed: int = 0,
    out="runs/compare",
    nfe=None,
    batch_size: int = 512,
    sigma: float = 0.2236,
    hidden=(128, 128),
    n_eval: int = 2000,
    sample_steps: int = 2000,
    step_size: float = 0.005,
    progress: bool = True,
) -> dict:
    """Train and evaluate each objective; write ``comparison.json``, ``comparison.png`` (and ``nfe.png``).

    Returns the content of ``comparison.json``: per objective the sample metrics (w2, sliced_w2,
    mmd, energy), the data-vs-data floor of each, training and sampling wall time (s), the
    sampler and its NFE per sample; and, with ``nfe``, ``nfe_curve``: objective → {N: W2}.
    """
    names = _objective_list(objectives)
    budgets = sorted({int(b) for b in nfe}) if nfe else []
    if any(b < 1 for b in budgets):
        raise FluxMatchError(f"sampler budgets must be positive integers, got {nfe}")
    out = Path(out)
    report: dict = {"data": str(data), "steps": steps, "seed": seed, "batch_size": batch_size, "hidden": list(hidden), "objectives": {}}
    samples, runs = {}, {}
    for name in names:
        metrics = train_run(
            data=data, objective=name, steps=steps, batch_size=batch_size, sigma=sigma, seed=seed, out=out / name,
            hidden=hidden, progress=progress, n_eval=n_eval, sample_steps=sample_steps, step_size=step_size,
        )
        run = runs[name] = load_run(out / name)
        start = time.perf_counter()
        samples[name] = sample_run(run, n=n_eval, seed=seed)
        sample_wall = time.perf_counter() - start
        if is_flow_run(run):
            ode = run.config["sampler"]["ode"]
            sampler, calls = f"ODE {ode['method']}, {ode['steps']} steps", ode["steps"] * _ODE_STAGES.get(ode["method"], 1)
        else:
            sampler, calls = f"Langevin, {sample_steps} steps of ε = {step_size:g}", sample_steps
        report["objectives"][name] = {
            **{k: metrics[k] for k in METRICS},
            **{f"floor_{k}": metrics[f"floor_{k}"] for k in METRICS},
            "mean_abs_curl": metrics.get("mean_abs_curl"),
            "train_wall_s": metrics["train"]["wall_time_s"],
            "sample_wall_s": round(sample_wall, 3),
            "nfe": calls,
            "sampler": sampler,
        }
    first = runs[names[0]]
    held, _ = _split_pair(_evaluation_rows(first.config["data"]["spec"], first.config, n_eval, seed), str(data))
    if budgets:
        total_time = sample_steps * step_size
        curve = {}
        for name in names:
            curve[name] = {}
            for budget in budgets:
                try:
                    points = _budget_samples(runs[name], n_eval, budget, total_time, seed)
                    curve[name][str(budget)] = wasserstein2(points, held)
                except FluxMatchError:  # a sampler that diverges at this budget has no finite W2
                    curve[name][str(budget)] = math.nan
        report["nfe_curve"] = curve
        report["nfe_samplers"] = {
            "langevin": f"N steps of ε = min({total_time:g}/N, {MAX_LANGEVIN_STEP})",
            "flow": "N Euler steps of the ODE",
        }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "comparison.json", report)
    _draw_figures(out, report, samples, runs, held)
    return report


def _draw_figures(out: Path, report: dict, samples: dict, runs: dict, held: torch.Tensor) -> None:
    from .viz.compare import plot_comparison, plot_quality_vs_budget

    flat_held = held.reshape(held.shape[0], -1)
    fields, conds = {}, {}
    if flat_held.shape[1] == 2:
        for name, run in runs.items():
            fields[name] = run.field
            conds[name] = 1.0 if is_flow_run(run) else run.sigma
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
            lines.append(f"{name:<10}" + " " * 0 + " ".join(f"{c[str(b)]:>7.3f}" for b in budgets))
    return "\n".join(lines)
