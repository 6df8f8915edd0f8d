"""Points: vectors in R^d (toy sets, the user's .npy/.npz/.csv files), judged by sample distances.

Defaults: flux and dsm train at one fixed σ with an MLP field (``--noise annealed`` gives a
σ-conditioned, EDM-preconditioned MLP sampled down a noise schedule); 2000 steps of 512 points;
2000 evaluation samples. Metrics: exact W2, sliced W2, MMD², energy distance against held-out
points, each with its floor (two independent held-out samples), and for 2-D fixed-σ fields the
mean |curl| on the data. Plots: samples beside held-out data, and for 2-D fixed-σ fields the
streamlines and curl of the field.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..data import TOY_DATASETS, DataSource, load_data
from ..errors import FluxMatchError
from .base import DataKind, Evaluation, distance_table, format_number


def data_path(spec) -> str:
    """A toy name as is; an existing file made absolute (so the run can be evaluated from anywhere)."""
    spec = os.fspath(spec)
    if spec in TOY_DATASETS or not Path(spec).is_file():
        return spec
    return str(Path(spec).resolve())


#: The range of data spreads (RMS over coordinates of the per-coordinate std) the defaults suit.
SPREAD_RANGE = (1e-3, 1e3)


def check_spread(rows: torch.Tensor, name: str) -> float:
    """The spread of (N, ...) points (RMS over coordinates of the per-coordinate standard
    deviation), after refusing data whose rows are all one point or whose spread lies outside
    :data:`SPREAD_RANGE`, where the default σ, step size and initialisation are meaningless."""
    flat = rows.reshape(rows.shape[0], -1).double()
    spread = float(flat.std(0, unbiased=False).pow(2).mean().sqrt())
    if spread == 0:
        raise FluxMatchError(f"every row of {name} is the same point: there is no distribution to learn")
    low, high = SPREAD_RANGE
    if not low <= spread <= high:
        raise FluxMatchError(
            f"{name} has a spread of {spread:.3g} (RMS of the per-coordinate std), outside [{low:g}, {high:g}], far from the unit scale "
            "the defaults assume (σ 0.2236, Langevin step 0.005): standardise it first, e.g. (x - mean) / std per column, and map samples back"
        )
    return spread


def split_pair(rows: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint halves of an evaluation sample: the data, and the reference of the floor."""
    half = rows.shape[0] // 2
    if half < 2:
        raise FluxMatchError(f"{name} has only {rows.shape[0]} evaluation row(s): at least 4 are needed for metrics and their floor")
    return rows[:half], rows[half : 2 * half]


class Points(DataKind):
    """Points in R^d; see the module docstring."""

    name = "points"

    def claims(self, spec: str) -> bool:
        return spec in TOY_DATASETS or Path(spec).is_file()

    def load(self, data, seed: int) -> DataSource:
        source = DataSource.from_spec(data_path(data.spec), seed=seed, holdout_fraction=data.holdout_fraction, n=data.n)
        source.spec = data_path(data.spec)
        check_spread(source.data, source.name)
        return source

    def validate(self, spec) -> None:
        if spec.field.family == "transformer":
            raise FluxMatchError(f"--field transformer applies to trajectory data (N, T, D: springs or a rank-3 .npy/.npz); {spec.data.spec} is points data")
        if spec.field.class_conditional:
            raise FluxMatchError(f"--class-conditional applies to labelled image data (digits, cifar10:PATH); {spec.data.spec} is points data")

    def evaluation_rows(self, run, data, n: int, seed: int, source=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(held, reference), each up to n points the run never trained on.

        The run's own data (or any toy set): its held-out split (files) or fresh draws (toy
        sets), rebuilt with the training seed. Another file: random rows of it.
        """
        own = run.spec.data.spec
        target = own if data is None else data_path(data)
        if source is not None and target == own:
            rows = source.holdout(2 * n, seed)
        elif target == own:
            rows = self.reload(run).holdout(2 * n, seed)
        elif target in TOY_DATASETS:
            rows = self.load(type(run.spec.data)(spec=target), run.spec.train.seed).holdout(2 * n, seed)
        else:
            rows = load_data(target, n=2 * n, seed=seed)
        if tuple(rows.shape[1:]) != run.event_shape:
            raise FluxMatchError(f"data {target} has points of shape {tuple(rows.shape[1:])}, but the run {run.run_dir} was trained on points of shape {run.event_shape}")
        return split_pair(rows, str(target))

    def metrics(self, ev: Evaluation) -> dict:
        from ..metrics import mean_abs_curl, sample_metrics

        run = ev.run
        held, reference = self.evaluation_rows(run, ev.data, ev.samples.shape[0], ev.seed, ev.source)
        result = sample_metrics(ev.samples, held, reference=reference, seed=ev.seed)
        curl = None
        if math.prod(run.event_shape) == 2 and run.conditioning == "fixed":
            curl = mean_abs_curl(run.field, held.reshape(held.shape[0], 2), cond=run.sigma)
        return {**result, "mean_abs_curl": curl, "n": int(ev.samples.shape[0]), "n_data": int(held.shape[0])}

    def plots(self, ev: Evaluation, out) -> list[str]:
        from ..viz import plot_fields, plot_samples

        run, out = ev.run, Path(out)
        held, _ = self.evaluation_rows(run, None, ev.samples.shape[0], ev.seed, ev.source)
        spec = run.spec
        name = spec.data.spec if spec.data.spec in TOY_DATASETS else Path(spec.data.spec).name
        noise = f"σ = {spec.objective.sigma:g}" if run.conditioning == "fixed" else {"sigma": "noise-annealed", "time": "flow ODE"}[run.conditioning]
        title = f"{spec.objective.name} on {name}, {noise}, {spec.train.steps} steps"
        plot_samples(out / "samples.png", {spec.objective.name: ev.samples}, data=held, title=title)
        files = ["samples.png"]
        if math.prod(run.event_shape) == 2 and run.conditioning == "fixed":
            plot_fields(out / "field.png", {spec.objective.name: run.field}, data=held.reshape(held.shape[0], 2), cond=run.sigma)
            files.append("field.png")
        return files

    def summary(self, metrics: dict) -> list[str]:
        lines = distance_table(metrics)
        if metrics.get("mean_abs_curl") is not None:
            lines.append(f"mean |curl| of the field on held-out data: {format_number(metrics['mean_abs_curl'])}")
        return lines


__all__ = ["Points", "data_path", "split_pair", "check_spread", "SPREAD_RANGE"]
