"""The training loop: logs, schedule, resuming, divergence and input checks."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from fluxmatch.data import DataSource
from fluxmatch.errors import FluxMatchError, TrainingInterrupted
from fluxmatch.fields import MLPField, call_field
from fluxmatch.objectives import DenoisingScoreMatching, FluxMatching, ObjectiveOutput
from fluxmatch.train import EMA, TrainConfig, Trainer, load_run
from fluxmatch.train import checkpoint as checkpoint_module
from fluxmatch.train.trainer import RunLock

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


# ---------------------------------------------------------------------------------------------
# a fresh run never destroys an existing one; one trainer per run directory


def snapshot(directory):
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


MARKERS = ["trainer.safetensors", "config.json", "log.csv", "model.safetensors", "trainer.json"]


@pytest.mark.parametrize("keep", MARKERS)
def test_a_fresh_run_refuses_a_directory_that_holds_a_run(tmp_path, keep):
    make(tmp_path, steps=10).fit()
    for name in set(MARKERS) - {keep}:
        (tmp_path / name).unlink()
    before = snapshot(tmp_path)
    with pytest.raises(FluxMatchError, match=rf"already holds a training run \({keep}\); resume it \(resume=True / --resume\), or train into a new directory \(--overwrite replaces it\)"):
        make(tmp_path, steps=10).fit()
    assert snapshot(tmp_path) == before


def test_a_fresh_run_may_use_an_empty_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    make(tmp_path, steps=5).fit()
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / ".lock").exists()


def test_a_second_trainer_in_the_same_directory_is_refused(tmp_path):
    fresh, existing = tmp_path / "fresh", tmp_path / "existing"
    fresh.mkdir()
    make(existing, steps=5).fit()
    for directory, resume in ((fresh, False), (existing, True)):
        with RunLock(directory):
            assert (directory / ".lock").read_text() == f"{os.getpid()}\n"
            with pytest.raises(FluxMatchError, match=rf"{directory} is in use: another trainer \(pid {os.getpid()}\) holds"):
                make(directory, steps=10).fit(resume=resume)
        assert not (directory / ".lock").exists()
        make(directory, steps=10).fit(resume=resume)


def test_a_trainer_in_another_process_is_refused(tmp_path):
    holder = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, str(os.getpid()).encode())\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path / ".lock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "locked\n"
        with pytest.raises(FluxMatchError, match=rf"is in use: another trainer \(pid {process.pid}\)"):
            make(tmp_path, steps=5).fit()
        assert not (tmp_path / "log.csv").exists()
    finally:
        process.communicate("", timeout=30)
    make(tmp_path, steps=5).fit()


# ---------------------------------------------------------------------------------------------
# SIGINT / SIGTERM in the process itself


class SignalAt:
    """A data source that sends this process ``signum`` while drawing its ``at``-th batch."""

    def __init__(self, source, at, signum):
        self.source, self.at, self.signum, self.calls = source, at, signum, 0
        self.data, self.name, self.dim = source.data, source.name, source.dim

    def sample_batch(self, b, generator=None):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.signum)
        return self.source.sample_batch(b, generator)


def test_sigterm_checkpoints_the_current_step_and_resumes_bit_identically(tmp_path, monkeypatch):
    full = make(tmp_path / "full")
    full.fit()
    data = SignalAt(ring(), 13, signal.SIGTERM)
    real_write, repeats = checkpoint_module.atomic_write_bytes, []

    def write_and_signal_again(path, payload):
        repeats.append(path)
        if data.calls >= 13:
            os.kill(os.getpid(), signal.SIGINT)  # a repeat while checkpointing is ignored
        real_write(path, payload)

    monkeypatch.setattr(checkpoint_module, "atomic_write_bytes", write_and_signal_again)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        make(tmp_path / "stopped", data=data).fit()
    monkeypatch.undo()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    err = info.value
    assert (err.step, err.signal_name, err.exit_code, err.run_dir) == (13, "SIGTERM", 143, str(tmp_path / "stopped"))
    assert str(err) == f"SIGTERM received: training stopped at step 13 with a checkpoint in {tmp_path / 'stopped'}"
    assert len(repeats) == 4 + 3  # the periodic checkpoint at step 10, then the one at step 13
    assert json.loads((tmp_path / "stopped" / "trainer.json").read_text())["step"] == 13
    assert [int(r["step"]) for r in read_log(tmp_path / "stopped" / "log.csv")] == [5, 10, 13]

    resumed = make(tmp_path / "stopped")
    assert resumed.fit(resume=True)["resumed_from"] == 13
    for name in ("model.safetensors", "trainer.safetensors"):
        want, got = load_file(str(tmp_path / "full" / name)), load_file(str(tmp_path / "stopped" / name))
        assert set(want) == set(got) and all(torch.equal(want[k], got[k]) for k in want), name


def test_a_signal_during_the_last_step_stops_after_its_checkpoint(tmp_path):
    with pytest.raises(TrainingInterrupted, match="SIGINT received: training stopped at step 10") as stop:
        make(tmp_path, steps=10, data=SignalAt(ring(), 10, signal.SIGINT)).fit()
    assert stop.value.step == 10 and json.loads((tmp_path / "trainer.json").read_text())["step"] == 10
    assert make(tmp_path, steps=10).fit(resume=True)["steps_run"] == 0  # resuming the finished run trains nothing


def test_training_in_another_thread_leaves_signals_alone(tmp_path):
    results = []
    thread = threading.Thread(target=lambda: results.append(make(tmp_path, steps=5).fit()))
    thread.start()
    thread.join(60)
    assert results and results[0]["steps"] == 5


# ---------------------------------------------------------------------------------------------
# settings that would crash inside torch are refused up front


@pytest.mark.parametrize("lr", [1e39, float("inf"), float("nan"), 0, True, "0.1"])
def test_learning_rates_beyond_float32_are_refused(lr):
    with pytest.raises(FluxMatchError, match="learning rate"):
        TrainConfig(lr=lr)


def test_the_largest_float32_learning_rate_is_allowed():
    assert TrainConfig(lr=3.4e38).lr == 3.4e38


def test_a_float64_field_is_refused_before_training(tmp_path):
    trainer = make(tmp_path / "run")
    trainer.field.double()
    with pytest.raises(FluxMatchError, match=r"fluxmatch trains float32 fields; call field.float\(\)"):
        trainer.fit()
    assert not (tmp_path / "run").exists()


def test_tensorboard_logs_mirror_the_csv_through_a_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def train(steps, resume=False):
        torch.manual_seed(0)
        config = TrainConfig(steps=steps, batch_size=64, progress=False, log_every=5, checkpoint_every=10, log="tensorboard", lr_schedule="constant")
        return Trainer(MLPField(2, (16,)), DenoisingScoreMatching(0.3), DataSource.from_spec("ring", 0), config, tmp_path).fit(resume=resume)

    train(10)
    train(20, resume=True)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/grad_norm", "train/lr"} <= set(events.Tags()["scalars"])
    steps = [e.step for e in events.Scalars("train/loss")]
    with (tmp_path / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(set(steps)) == [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    logged = {e.step: e.value for e in events.Scalars("train/loss")}
    assert all(abs(logged[int(r["step"])] - float(r["loss"])) < 1e-6 for r in rows)


def test_tensorboard_missing_is_one_clear_error_before_training(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    config = TrainConfig(steps=5, batch_size=16, progress=False, log="tensorboard")
    with pytest.raises(FluxMatchError, match=r"fluxmatch\[tensorboard\]"):
        Trainer(MLPField(2, (8,)), DenoisingScoreMatching(0.3), DataSource.from_spec("ring", 0), config, tmp_path / "run").fit()
    assert not (tmp_path / "run").exists()


def test_edm_schedules_ramp_the_learning_rate_and_the_ema_half_life():
    config = TrainConfig(steps=100, batch_size=100, lr=1e-3, lr_schedule="ramp", lr_rampup=5000)
    assert config.lr_at(0) == pytest.approx(2e-5) and config.lr_at(49) == pytest.approx(1e-3) and config.lr_at(99) == 1e-3
    assert TrainConfig(lr_schedule="ramp", batch_size=512).lr_at(0) == pytest.approx(1e-3 * 512 / 10_000_000)
    ema = EMA(MLPField(2, (4,)), halflife=1000, batch_size=100, rampup=0.05)
    assert ema.decay_at(0) == pytest.approx(0.5 ** (100 / 5)) and ema.decay_at(10**6) == pytest.approx(0.5**0.1)
    for bad, match in (
        (dict(lr_rampup=10), "applies to the 'ramp'"), (dict(ema_rampup=0.05), "applies only with ema_halflife"),
        (dict(precision="fp8"), "unknown precision"), (dict(workers=-1), "workers must be"), (dict(log="wandb"), "unknown log"),
    ):
        with pytest.raises(FluxMatchError, match=match):
            TrainConfig(**bad)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_precisions_train_and_keep_float32_weights(tmp_path, precision):
    torch.manual_seed(0)
    field = MLPField(2, (16,))
    config = TrainConfig(steps=6, batch_size=64, progress=False, precision=precision)
    summary = Trainer(field, DenoisingScoreMatching(0.3), DataSource.from_spec("ring", 0), config, tmp_path).fit()
    assert summary["steps"] == 6 and math.isfinite(summary["final_loss"])
    assert all(p.dtype == torch.float32 for p in field.parameters())


def test_workers_prefetch_batches_that_a_resumed_run_gets_again(tmp_path):
    def train(out, steps, workers, resume=False):
        torch.manual_seed(0)
        config = TrainConfig(steps=steps, batch_size=64, progress=False, workers=workers, checkpoint_every=4, lr_schedule="constant")
        Trainer(MLPField(2, (16,)), DenoisingScoreMatching(0.3), DataSource.from_spec("ring", 0), config, out).fit(resume=resume)
        return load_file(str(out / "trainer.safetensors"))

    whole = train(tmp_path / "a", 8, workers=1)
    train(tmp_path / "b", 4, workers=1)
    resumed = train(tmp_path / "b", 8, workers=1, resume=True)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole if k.startswith(("field.", "ema.")))


def test_compile_compiles_the_field_once_before_training(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(MLPField, "compile", lambda self, *a, **k: calls.append(self), raising=False)
    field = MLPField(2, (8,))
    config = TrainConfig(steps=2, batch_size=16, progress=False, compile=True)
    Trainer(field, DenoisingScoreMatching(0.3), DataSource.from_spec("ring", 0), config, tmp_path).fit()
    assert calls == [field]
