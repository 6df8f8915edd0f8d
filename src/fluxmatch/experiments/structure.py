"""Structured fields on the coupled springs: causal against full attention, flux against DSM.

The paper's claim: when a field's architecture is constrained (here, causal attention over
time: the field at step t sees only steps ≤ t), the data's score usually violates the
constraint, so score matching under it cannot fit, while Flux Matching can still find a
stationary field inside it (the score plus a flux that the constraint allows).

Four runs train on the same 2000 simulated trajectories (50 states of q1, v1, q2, v2), with the
same transformer size, batch, steps and seed: ``flux-causal``, ``flux-full``, ``dsm-causal``,
``dsm-full``, noise-annealed (σ log-uniform on [0.002, 80]) and sampled by the probability-flow
ODE. Each is judged against fresh, held-out simulations: exact W2 between 2000 generated and
2000 held-out trajectories (each flattened to 200 numbers in z-scored units) at snapshots
through training, beside the data-vs-data floor, and the physics check (one RK4 step of the
springs from generated state t against generated state t+1; see
:func:`~fluxmatch.data.springs.dynamics_residual`).

The defaults fit a 2-core CPU (a transformer of width 64, depth 2, 4 heads; 2000 steps of
256); :data:`FULL` is the official code's size (width 512, depth 12, 8 heads, 10,000 steps),
for a GPU.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..config import DataSpec, EvalSpec, FieldSpec, ObjectiveSpec, RunSpec, SamplerSpec, TrainSpec
from ..errors import FluxMatchError
from ..metrics import wasserstein2
from ..run import draw, evaluation_pair, open_run, snapshot_runs, train_run
from ..train.checkpoint import atomic_write_json

#: variant → (objective, causal attention)
VARIANTS = {"flux-causal": ("flux", True), "flux-full": ("flux", False), "dsm-causal": ("dsm", True), "dsm-full": ("dsm", False)}


@dataclass(frozen=True)
class StructureSettings:
    """Sizes of the structure study (the defaults: a 2-core CPU, about 6 minutes a variant).

    Attributes:
        steps, batch_size, lr: training of every variant (Adam, cosine schedule, clip 1, EMA).
        width, depth, heads: the transformer.
        n_train: simulated training trajectories; n: generated and held-out trajectories per W2.
        evaluations: W2 measurements through training (snapshots every steps/evaluations).
        sample_steps: noise levels of the Heun probability-flow sampler.
        seed, device: the training seed of every variant, and where it trains.
    """

    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    width: int = 64
    depth: int = 2
    heads: int = 4
    n_train: int = 2000
    n: int = 2000
    evaluations: int = 5
    sample_steps: int = 18
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "width", "depth", "heads", "n_train", "n", "evaluations", "sample_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FluxMatchError(f"the structure study's {name} must be a positive integer, got {value!r}")
        if self.n < 2 or self.evaluations > self.steps:
            raise FluxMatchError(f"the structure study needs n ≥ 2 and at most one evaluation per step (n {self.n}, evaluations {self.evaluations}, steps {self.steps})")
        if self.steps % self.evaluations:
            raise FluxMatchError(f"the structure study's steps ({self.steps}) must be a multiple of its {self.evaluations} evaluations through training, e.g. {self.steps - self.steps % self.evaluations}")


#: The official code's sizes (experiments/exp5_embed_structure): for a GPU.
FULL = StructureSettings(steps=10000, lr=3e-4, width=512, depth=12, heads=8, evaluations=10, device="cuda")


def variant_spec(settings: StructureSettings, objective: str, causal: bool) -> RunSpec:
    """The run spec of one variant (snapshots every steps/evaluations steps, the last at the end)."""
    s = settings
    every = s.steps // s.evaluations  # a whole number of snapshots: StructureSettings checks it
    return RunSpec(
        data=DataSpec("springs", n=s.n_train),
        field=FieldSpec(family="transformer", causal=causal, width=s.width, depth=s.depth, heads=s.heads),
        objective=ObjectiveSpec(name=objective, noise="annealed", sigma_distribution="loguniform"),
        sampler=SamplerSpec(steps=s.sample_steps),
        train=TrainSpec(steps=s.steps, batch_size=s.batch_size, lr=s.lr, seed=s.seed, device=s.device, snapshot_every=every),
        evaluation=EvalSpec(n=s.n),
    )


def _curve(run_dir, held, settings: StructureSettings, progress: bool) -> dict:
    """W2 to ``held`` of n samples from every snapshot of a run (model units)."""
    steps, w2 = [], []
    for step, run in snapshot_runs(run_dir):
        samples, _ = draw(run, settings.n, settings.seed, progress=False)
        if not np.isfinite(samples).all():
            value = float("nan")
        else:
            value = wasserstein2(samples.reshape(samples.shape[0], -1), held.reshape(held.shape[0], -1))
        steps.append(step)
        w2.append(value)
        if progress:
            print(f"  step {step}: W2 {value:.4g}")
    return {"steps": steps, "w2": w2}


def _row(metrics: dict, curve: dict, wall: float) -> dict:
    """A variant's row of structure.json from its run's metrics (what train_run returns)."""
    keys = ("dynamics_rms", "dynamics_relative_rms", "data_dynamics_relative_rms", "persistence_relative_rms", "sliced_w2", "mmd", "energy")
    return {"w2": curve["w2"][-1], "best_w2": float(np.nanmin(curve["w2"])), "curve": curve, "train_wall_s": round(wall, 1), "median_step_ms": metrics["train"]["median_step_ms"], **{k: metrics.get(k) for k in keys}}


def _ratios(rows: dict) -> dict:
    final = {label: row["w2"] for label, row in rows.items()}
    best = min(final.values())
    out = {"best_variant": min(final, key=final.get)}
    if "flux-causal" in final:
        out["flux_causal_vs_best"] = final["flux-causal"] / best
    if "flux-causal" in final and "dsm-causal" in final:
        out["dsm_causal_vs_flux_causal"] = final["dsm-causal"] / final["flux-causal"]
    if "flux-causal" in rows and rows["flux-causal"].get("data_dynamics_relative_rms"):
        out["flux_causal_dynamics_vs_data"] = rows["flux-causal"]["dynamics_relative_rms"] / rows["flux-causal"]["data_dynamics_relative_rms"]
    if "flux-causal" in rows and rows["flux-causal"].get("persistence_relative_rms"):
        out["flux_causal_dynamics_vs_persistence"] = rows["flux-causal"]["dynamics_relative_rms"] / rows["flux-causal"]["persistence_relative_rms"]
    return out


def run_structure(out="runs/experiment-structure", steps: int | None = None, seed: int = 0, n: int | None = None, progress: bool = True, full: bool = False, settings: StructureSettings | None = None, variants=tuple(VARIANTS)) -> dict:
    """Train the four variants, measure W2 through training and the physics check, draw the plots.

    Args:
        out: output directory: ``structure.json``, ``w2.png``, ``trajectories.png``,
            ``springs.gif`` and one run directory per variant (``flux-causal``, ...), whose
            ``samples.npy`` are (n, 50, 4) trajectories in raw units.
        steps, seed, n: override the settings' training steps, seed and evaluation size.
        full: start from :data:`FULL` (the official sizes, on a GPU) instead of the CPU defaults.
        settings: start from these settings instead.
        variants: which of :data:`VARIANTS` to train.

    Returns the content of structure.json: the settings, per variant its final and best W2 and
    the W2 curve, its physics residual, its wall time (``train_wall_s``: training with the run's
    own sampling and metrics; ``wall_s``: with the snapshots' W2 too), and the ratios the paper's
    claim is about.
    """
    base = settings or (FULL if full else StructureSettings())
    s = replace(base, **{k: v for k, v in (("steps", steps), ("seed", seed), ("n", n)) if v is not None})
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise FluxMatchError(f"unknown structure variant(s) {', '.join(unknown)}: expected some of {', '.join(VARIANTS)}")
    out = Path(out)
    rows, held, floor = {}, None, None
    report = {"settings": asdict(s), "data": "springs", "rows": rows}
    for label in variants:
        objective, causal = VARIANTS[label]
        began = time.perf_counter()
        metrics = train_run(variant_spec(s, objective, causal), out / label, progress=progress, overwrite=True)
        wall = time.perf_counter() - began
        if held is None:
            held, reference = (t.numpy() for t in evaluation_pair(out / label, s.n, s.seed + 1))
            floor = wasserstein2(held.reshape(held.shape[0], -1), reference.reshape(reference.shape[0], -1))
            report["floor_w2"] = floor
        curve = _curve(out / label, held, s, progress)
        rows[label] = {**_row(metrics, curve, wall), "wall_s": round(time.perf_counter() - began, 1)}
        report["ratios"] = _ratios(rows)
        atomic_write_json(out / "structure.json", report)
    report["files"] = ["structure.json", *_plots(out, rows, held, floor, variants)]
    atomic_write_json(out / "structure.json", report)
    return report


def _plots(out: Path, rows: dict, held: np.ndarray, floor: float, variants) -> list[str]:
    from ..data.trajectories import to_raw
    from ..viz.trajectories import animate_springs, plot_trajectories, plot_w2_curves

    run = open_run(out / variants[0])
    units = run.data_meta["units"]
    real = to_raw(held[:64], units)
    generated = {label: np.load(out / label / "samples.npy")[:64] for label in variants}
    plot_w2_curves(out / "w2.png", {label: (row["curve"]["steps"], row["curve"]["w2"]) for label, row in rows.items()}, floor=floor, title="coupled springs: W2 to held-out trajectories")
    plot_trajectories(out / "trajectories.png", real, generated, names=tuple(units["features"]), dt=0.1, title="coupled springs: held-out against generated")
    animate_springs(out / "springs.gif", real, generated, dt=0.1)
    return ["w2.png", "trajectories.png", "springs.gif"]


__all__ = ["run_structure", "StructureSettings", "FULL", "VARIANTS", "variant_spec"]
