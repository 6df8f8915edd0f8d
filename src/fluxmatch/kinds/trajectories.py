"""Trajectories (N, T, D): the simulated coupled springs, or your own (N, T, D) .npy/.npz file.

Defaults: flux and dsm are noise-annealed with an EDM-preconditioned transformer over the time
axis (causal attention: step t sees steps ≤ t), 3000 steps of 256 trajectories, 2000 evaluation
samples drawn by the probability-flow ODE. Models work in z-scored units (per feature, over
samples and time); samples are written in raw units. Metrics: exact W2 (and sliced W2, MMD²,
energy) between generated and held-out trajectories flattened to T·D numbers in model units, each
with its data-vs-data floor; for springs data, the physics check: how far each generated state
t+1 is from one RK4 step of the springs' own dynamics from state t, beside the same figure for
held-out data and for the "nothing moves" baseline. Plots: trajectories (real against generated)
and, for springs, an animated GIF of the two masses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import load_data
from ..data.springs import SpringParams, dynamics_residual, load_springs_params
from ..data.trajectories import SPRINGS, check_trajectories, file_source, fresh_springs, is_trajectory_file, springs_source, to_model, to_raw
from ..errors import FluxMatchError
from .base import DataKind, Evaluation, distance_table, format_number
from .points import data_path, split_pair


def _dynamics(samples_raw: np.ndarray, held_raw: np.ndarray, params) -> dict:
    """The springs' physics check of samples beside held-out data (raw units), both scaled by the
    held-out data's per-feature std."""
    std = held_raw.reshape(-1, held_raw.shape[-1]).std(0)
    generated, real = dynamics_residual(samples_raw, params, std=std), dynamics_residual(held_raw, params, std=std)
    return {
        "dynamics_rms": generated["rms"],
        "dynamics_relative_rms": generated["relative_rms"],
        "data_dynamics_rms": real["rms"],
        "data_dynamics_relative_rms": real["relative_rms"],
        "persistence_relative_rms": real["persistence_relative_rms"],
    }


class Trajectories(DataKind):
    """Trajectories; see the module docstring."""

    name = "trajectories"
    default_noise = "annealed"
    default_family = "transformer"
    default_steps = 3000
    default_batch = 256
    default_eval = 2000

    def claims(self, spec: str) -> bool:
        return spec == SPRINGS or is_trajectory_file(spec)

    def load(self, data, seed: int):
        spec = data_path(data.spec)
        source = springs_source(data.n, seed) if spec == SPRINGS else file_source(spec, seed, data.holdout_fraction, data.n)
        source.spec = spec
        return source

    def validate(self, spec) -> None:
        family = spec.field.family
        if family in ("unet", "dag"):
            what = "image data" if family == "unet" else "points (one variable per coordinate)"
            raise FluxMatchError(f"--field {family} applies to {what}; {spec.data.spec} is trajectory data: use --field transformer (or mlp)")
        if spec.field.class_conditional:
            raise FluxMatchError(f"--class-conditional applies to labelled image data; {spec.data.spec} is trajectory data")

    def to_data_units(self, samples: np.ndarray, data_meta: dict) -> np.ndarray:
        units = data_meta.get("units")
        return to_raw(samples, units) if units else samples

    def _own_source(self, run, data, source):
        """The run's own data source when ``data`` is the run's own data (loaded at most once),
        else None: the one test of "own data" that the rows and the spring parameters share."""
        if data is not None and data_path(data) != run.spec.data.spec:
            return None
        return source if source is not None else self.reload(run)

    def _other_rows(self, run, target: str, n: int, seed: int) -> torch.Tensor:
        """2n trajectories of another data set, in the run's model units."""
        raw = fresh_springs(2 * n, seed, SpringParams()) if target == SPRINGS else check_trajectories(load_data(target, n=2 * n, seed=seed), target)
        if tuple(raw.shape[1:]) != run.event_shape:
            raise FluxMatchError(f"data {target} has trajectories of shape {tuple(raw.shape[1:])} (T, D), but the run {run.run_dir} was trained on {run.event_shape}")
        return to_model(raw, run.data_meta["units"])

    def evaluation_rows(self, run, data, n: int, seed: int, source=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(held, reference), each up to n trajectories the run never trained on (model units):
        fresh simulations (springs), the file's held-out rows, or rows of another data set."""
        own = self._own_source(run, data, source)
        if own is not None:
            return split_pair(own.holdout(2 * n, seed), str(run.spec.data.spec))
        target = data_path(data)
        return split_pair(self._other_rows(run, target, n, seed), str(target))

    def _params(self, run, own, data):
        """The spring parameters the evaluation data follow: the run's own data's (``own``, its
        source), those of ``--data springs`` (the defaults) or of a springs .npz, else None (no
        physics check)."""
        if own is not None:
            return getattr(own, "params", None)
        target = data_path(data)
        if target == SPRINGS:
            return SpringParams()
        return load_springs_params(target) if str(target).lower().endswith(".npz") else None

    def metrics(self, ev: Evaluation) -> dict:
        from ..metrics import sample_metrics

        run = ev.run
        own = self._own_source(run, ev.data, ev.source)
        held, reference = self.evaluation_rows(run, ev.data, ev.samples.shape[0], ev.seed, own)
        result = sample_metrics(ev.samples, held, reference=reference, seed=ev.seed)
        params = self._params(run, own, ev.data)
        if params is not None and run.event_shape[-1] == 4:
            units = run.data_meta["units"]
            result.update(_dynamics(to_raw(ev.samples, units), to_raw(held.numpy(), units), params))
        return {**result, "n": int(ev.samples.shape[0]), "n_data": int(held.shape[0]), "nfe": ev.nfe}

    def plots(self, ev: Evaluation, out) -> list[str]:
        from ..viz.trajectories import animate_springs, plot_trajectories

        run, out = ev.run, Path(out)
        units = run.data_meta["units"]
        own = self._own_source(run, None, ev.source)
        held, _ = self.evaluation_rows(run, None, min(ev.samples.shape[0], 64), ev.seed, own)
        real, generated = to_raw(held.numpy(), units), {run.spec.objective.name: to_raw(ev.samples[:64], units)}
        params = self._params(run, own, None)
        dt = params.dt if params is not None else 1.0
        title = f"{run.spec.objective.name} on {Path(str(run.spec.data.spec)).name}, {run.spec.train.steps} steps"
        plot_trajectories(out / "trajectories.png", real, generated, names=tuple(units.get("features") or ()), dt=dt, title=title)
        files = ["trajectories.png"]
        if params is not None and run.event_shape[-1] == 4:
            animate_springs(out / "springs.gif", real, generated, dt=dt)
            files.append("springs.gif")
        return files

    def summary(self, metrics: dict) -> list[str]:
        lines = distance_table(metrics)
        if "dynamics_relative_rms" in metrics:
            lines.append(
                f"springs residual (RMS / std): samples {format_number(metrics['dynamics_relative_rms'])}, held-out data "
                f"{format_number(metrics['data_dynamics_relative_rms'])}, nothing-moves baseline {format_number(metrics['persistence_relative_rms'])}"
            )
        return lines


__all__ = ["Trajectories"]
