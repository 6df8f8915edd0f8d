"""The training loop: logs, schedule, resuming, divergence and input checks."""

import csv
import json
import math

import pytest
import torch
from torch import nn

from fluxmatch.data import DataSource
from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import MLPField, call_field
from fluxmatch.objectives import DenoisingScoreMatching, FluxMatching, ObjectiveOutput
from fluxmatch.train import TrainConfig, Trainer, load_run

STEPS = 30



class Interrupted(Exception):
    """Stands for a crash (e.g. the machine going away) in the middle of training."""


class CrashingData:
    """A data source that crashes on its ``crash_at``-th batch (1-based)."""

    def __init__(self, source, crash_at):
        self.source, self.crash_at, self.calls = source, crash_at, 0
        self.data, self.name, self.dim = source.data, source.name, source.dim

    def sample_batch(self, b, generator=None):
        self.calls += 1
        if self.calls == self.crash_at:
            raise Interrupted
        return self.source.sample_batch(b, generator)


class NaNAfter(nn.Module):
    """Wraps an objective and returns a NaN loss from its ``bad_from``-th call on."""

    def __init__(self, objective, bad_from):
        super().__init__()
        self.inner, self.bad_from, self.calls = objective, bad_from, 0
        self.sigma = objective.sigma

    @property
    def config(self):
        return self.inner.config

    def forward(self, field, x):
        self.calls += 1
        out = self.inner(field, x)
        if self.calls >= self.bad_from:
            return ObjectiveOutput(out.loss * float("nan"), out.terms)
        return out


class InfiniteGradient(nn.Module):
    """A finite loss (0) whose gradient is NaN: sqrt of a squared norm at 0."""

    sigma = None
    config = {"name": "infinite-gradient"}

    def forward(self, field, x):
        f = call_field(field, x)
        return ObjectiveOutput(((f - f.detach()).square().sum(1)).sqrt(), {})


def ring(n=500):
    return DataSource.from_spec("ring", seed=0, n=n)


def make(out, data=None, objective=None, steps=STEPS, **config):
    torch.manual_seed(0)
    field = MLPField(2, (16, 16))
    objective = objective or FluxMatching(sigma=0.3, dim=2)
    settings = dict(steps=steps, batch_size=64, log_every=5, checkpoint_every=10, progress=False)
    settings.update(config)
    return Trainer(field, objective, data or ring(), TrainConfig(**settings), out)


def read_log(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_fit_writes_log_and_summary(tmp_path):
    trainer = make(tmp_path)
    summary = trainer.fit()
    assert summary["steps"] == STEPS and summary["steps_run"] == STEPS
    assert summary["wall_time_s"] > 0 and summary["median_step_ms"] > 0
    rows = read_log(tmp_path / "log.csv")
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20, 25, 30]
    base = ["step", "loss", "grad_norm", "lr", "step_ms"]
    assert list(rows[0])[:5] == base and len(rows[0]) > len(base)  # then the objective's terms
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    assert json.loads((tmp_path / "trainer.json").read_text())["step"] == STEPS


def test_dsm_trains_through_the_same_loop(tmp_path):
    summary = make(tmp_path, objective=DenoisingScoreMatching(sigma=0.3), steps=10).fit()
    assert summary["steps"] == 10
    assert "dsm" in read_log(tmp_path / "log.csv")[0]
    config = load_run(tmp_path).objective.config
    assert config["name"] == "dsm" and config["noise"] == {"kind": "fixed", "sigma": 0.3} and config["weighting"] == "none" and not config["normaliser"]


def test_optimizer_covers_the_objective_parameters(tmp_path):
    trainer = make(tmp_path, steps=5)
    before = [p.detach().clone() for p in trainer.objective.parameters()]
    trainer.fit()
    after = list(trainer.objective.parameters())
    assert before and any(not torch.equal(a, b) for a, b in zip(before, after))


def test_resume_matches_an_uninterrupted_run(tmp_path):
    full = make(tmp_path / "full")
    full.fit()

    crashed = make(tmp_path / "resumed", data=CrashingData(ring(), crash_at=25))
    with pytest.raises(Interrupted):
        crashed.fit()
    assert json.loads((tmp_path / "resumed" / "trainer.json").read_text())["step"] == 20

    resumed = make(tmp_path / "resumed")
    summary = resumed.fit(resume=True)
    assert summary["resumed_from"] == 20 and summary["steps"] == STEPS and summary["steps_run"] == 10

    def without_timing(rows):
        return [{k: v for k, v in row.items() if k != "step_ms"} for row in rows]

    assert without_timing(read_log(tmp_path / "resumed" / "log.csv")) == without_timing(read_log(tmp_path / "full" / "log.csv"))
    for a, b in zip(full.field.state_dict().values(), resumed.field.state_dict().values()):
        assert torch.equal(a, b)
    ema_full, ema_resumed = load_run(tmp_path / "full").field, load_run(tmp_path / "resumed").field
    for a, b in zip(ema_full.state_dict().values(), ema_resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_without_a_checkpoint(tmp_path):
    with pytest.raises(FluxMatchError, match="nothing to resume"):
        make(tmp_path / "empty").fit(resume=True)
    assert not (tmp_path / "empty").exists()


def test_resume_with_another_objective(tmp_path):
    make(tmp_path, steps=10).fit()
    with pytest.raises(FluxMatchError, match="objective config"):
        make(tmp_path, objective=FluxMatching(sigma=0.5, dim=2)).fit(resume=True)


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    objective = NaNAfter(FluxMatching(sigma=0.3, dim=2), bad_from=25)
    trainer = make(tmp_path, objective=objective)
    with pytest.raises(FluxMatchError) as info:
        trainer.fit()
    message = str(info.value)
    assert message.startswith("training diverged at step 25 (non-finite loss)")
    assert str(tmp_path) in message and "step 20" in message
    assert json.loads((tmp_path / "trainer.json").read_text())["step"] == 20
    saved = {name: (tmp_path / name).read_bytes() for name in ("model.safetensors", "trainer.safetensors")}
    run = load_run(tmp_path)
    assert all(torch.isfinite(p).all() for p in run.field.parameters())
    # The run can be resumed from the good checkpoint once the objective is healthy again.
    make(tmp_path, objective=NaNAfter(FluxMatching(sigma=0.3, dim=2), bad_from=10**9)).fit(resume=True)
    assert (tmp_path / "model.safetensors").read_bytes() != saved["model.safetensors"]


def test_non_finite_gradient_stops_training(tmp_path):
    with pytest.raises(FluxMatchError, match=r"diverged at step 1 \(non-finite gradient\); no checkpoint"):
        make(tmp_path, objective=InfiniteGradient(), steps=5).fit()
    assert not (tmp_path / "model.safetensors").exists()


def test_field_with_wrong_output_shape_is_refused_before_training(tmp_path):
    class Wrong(nn.Module):
        config = {"type": "wrong"}

        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 3)

        def forward(self, x, c=None):
            return self.linear(x)

    trainer = Trainer(Wrong(), FluxMatching(sigma=0.3, dim=2), ring(), TrainConfig(steps=5, progress=False), tmp_path / "run")
    with pytest.raises(FluxMatchError, match="shape"):
        trainer.fit()
    assert not (tmp_path / "run").exists()


def test_cosine_schedule_warms_up_and_decays_to_a_tenth():
    config = TrainConfig(steps=1000, lr=1e-3)
    assert config.lr_at(0) == pytest.approx(1e-3 / 20)
    assert config.lr_at(19) == pytest.approx(1e-3)
    assert config.lr_at(999) == pytest.approx(1e-4, rel=1e-3)
    assert all(config.lr_at(k) >= config.lr_at(k + 1) for k in range(20, 999))
    assert TrainConfig(lr_schedule="constant").lr_at(5) == 1e-3


@pytest.mark.parametrize(
    "settings",
    [{"lr_schedule": "linear"}, {"steps": 0}, {"lr": -1.0}, {"grad_clip": 0.0}, {"ema_decay": 1.5}, {"batch_size": 2.5}],
)
def test_bad_train_config(settings):
    with pytest.raises(FluxMatchError):
        TrainConfig(**settings)


def test_grad_clip_none_disables_clipping(tmp_path):
    make(tmp_path, steps=5, grad_clip=None, log_every=1).fit()
    assert len(read_log(tmp_path / "log.csv")) == 5
