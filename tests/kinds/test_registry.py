"""A new kind of data plugs into the pipeline by registering itself: nothing else changes."""

import numpy as np
import torch

import fluxmatch as fm
from fluxmatch.data import DataSource
from fluxmatch.kinds import KINDS, DataKind, Evaluation, get_kind, kind_for, register_kind
from fluxmatch.kinds.points import split_pair


class Pendulums(DataKind):
    """Simulated trajectories (N, T=4, D=2) of damped pendulums, flattened by the MLP field."""

    name = "pendulums"
    default_steps, default_batch, default_eval = 10, 32, 40

    def claims(self, spec):
        return spec == "pendulums"

    def _simulate(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        state = torch.randn(n, 2, generator=g)
        frames = []
        for _ in range(4):
            frames.append(state)
            state = state + 0.1 * torch.stack([state[:, 1], -state[:, 0] - 0.2 * state[:, 1]], 1)
        return torch.stack(frames, 1)

    def load(self, data, seed):
        source = DataSource(self._simulate(200, seed), "pendulums", held_out=self._simulate(100, seed + 1))
        source.spec = "pendulums"
        return source

    def evaluation_rows(self, run, data, n, seed, source=None):
        return split_pair(self.load(run.spec.data, run.spec.train.seed).holdout(2 * n, seed), "pendulums")

    def metrics(self, ev: Evaluation):
        held, _ = self.evaluation_rows(ev.run, None, ev.samples.shape[0], ev.seed)
        error = np.abs(ev.samples.mean(0) - held.numpy().mean(0)).max()
        return {"mean_error": float(error)}

    def plots(self, ev, out):
        return []


def test_a_registered_kind_trains_samples_and_evaluates(tmp_path):
    register_kind(Pendulums())
    try:
        spec = fm.RunSpec(data=fm.DataSpec("pendulums"), field=fm.FieldSpec(hidden=(8,)), sampler=fm.SamplerSpec(steps=5))
        assert kind_for(spec.data).name == "pendulums"
        metrics = fm.train_run(spec, tmp_path / "p", progress=False)
        assert np.isfinite(metrics["mean_error"]) and metrics["train"]["steps"] == 10
        assert fm.sample_run(tmp_path / "p", n=7).shape == (7, 4, 2)
        assert "mean_error" in fm.evaluate_run(tmp_path / "p", n=10)
    finally:
        del KINDS["pendulums"]


def test_builtin_kinds_claim_their_specs():
    assert kind_for(fm.DataSpec("ring")).name == "points"
    assert kind_for(fm.DataSpec("digits")).name == "images"
    assert kind_for(fm.DataSpec("cifar10:/somewhere")).name == "images"
    assert kind_for(fm.DataSpec("digits", kind="points")).name == "points"
    assert get_kind("images").default_noise == "annealed"
