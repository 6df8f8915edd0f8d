"""Crash-safety of checkpoints: a fault at every write of every checkpoint of a run, then a resume.

Each checkpoint is a sequence of calls to ``atomic_write_bytes`` (config.json when it changes,
model.safetensors, trainer.safetensors, trainer.json). For every such call of a short run, and
for each way a write can fail (the rename fails and the error propagates; the process dies
with the temporary file half written; the process dies right after the file is in place), the
run is crashed there and then resumed to the end: its weights, optimizer state and log must
be bit-identical to an uninterrupted run's.
"""

import csv
import json
import os
import tempfile

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from fluxmatch.data import DataSource
from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import MLPField
from fluxmatch.objectives import FluxMatching
from fluxmatch.train import TrainConfig, Trainer
from fluxmatch.train import checkpoint as checkpoint_module

STEPS, CHECKPOINT_EVERY = 12, 4
EXPECTED_WRITES = ["config.json", "model.safetensors", "trainer.safetensors", "trainer.json"] + ["model.safetensors", "trainer.safetensors", "trainer.json"] * 2
MODES = ("rename-fails", "dies-mid-write", "dies-after-write")
DATA = DataSource.from_spec("ring", seed=0, n=200)


class Died(BaseException):
    """Stands for the process dying (power cut, SIGKILL): nothing after it runs, no cleanup."""


def make(out):
    torch.manual_seed(0)
    field = MLPField(2, (8,))
    objective = FluxMatching(sigma=0.3, dim=2)
    config = TrainConfig(steps=STEPS, batch_size=16, log_every=2, checkpoint_every=CHECKPOINT_EVERY, progress=False)
    return Trainer(field, objective, DATA, config, out)


class FaultInjector:
    """Wraps ``atomic_write_bytes``: records each call's file name and fails call ``at`` in ``mode``."""

    def __init__(self, real, at=None, mode=None):
        self.real, self.at, self.mode = real, at, mode
        self.names, self.fired = [], False

    def __call__(self, path, payload):
        index = len(self.names)
        self.names.append(os.path.basename(path))
        if index != self.at:
            return self.real(path, payload)
        self.fired = True
        if self.mode == "rename-fails":
            real_replace = os.replace

            def failing_replace(src, dst):
                raise OSError(28, "No space left on device")

            os.replace = failing_replace
            try:
                return self.real(path, payload)
            finally:
                os.replace = real_replace
        if self.mode == "dies-mid-write":
            fd, _ = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload[: len(payload) // 2])
            raise Died
        self.real(path, payload)
        raise Died


def tensors_and_metadata(path):
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    return load_file(str(path)), metadata


def log_without_timing(path):
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k != "step_ms"} for row in csv.DictReader(handle)]


def assert_same_run(run, reference):
    for name in ("model.safetensors", "trainer.safetensors"):
        (got, got_meta), (want, want_meta) = tensors_and_metadata(run / name), tensors_and_metadata(reference / name)
        assert set(got) == set(want), name
        for key in want:
            assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), f"{name}: {key}"
        assert got_meta == want_meta, name
    for name in ("trainer.json", "config.json"):
        assert json.loads((run / name).read_text()) == json.loads((reference / name).read_text()), name
    assert log_without_timing(run / "log.csv") == log_without_timing(reference / "log.csv")
    assert sorted(os.listdir(run)) == sorted(os.listdir(reference)), "temporary or lock files left behind"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    counter = FaultInjector(checkpoint_module.atomic_write_bytes)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint_module, "atomic_write_bytes", counter)
        make(out).fit()
    return out, counter.names


def test_a_checkpoint_is_written_config_model_then_the_committing_trainer_state(reference):
    _, names = reference
    assert names == EXPECTED_WRITES


def crash_then_recover(out, injector, monkeypatch):
    """Run into ``out`` with ``injector`` failing one write; resume (or check the refusals when
    no checkpoint was committed). Returns whether the run was resumed."""
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module, "atomic_write_bytes", injector)
        with pytest.raises((Died, OSError)):
            make(out).fit()
    assert injector.fired
    if injector.mode == "dies-mid-write":
        (out / ".lock").write_text("999999\n")  # a dead trainer's lock file stays; its flock died with it
    if not (out / "trainer.safetensors").exists():
        # the first checkpoint never became visible: nothing to resume, and a fresh run is refused
        with pytest.raises(FluxMatchError, match="nothing to resume"):
            make(out).fit(resume=True)
        with pytest.raises(FluxMatchError, match="already holds a training run"):
            make(out).fit()
        return False
    make(out).fit(resume=True)
    return True


def test_a_fault_at_every_write_point_resumes_bit_identically(reference, tmp_path, monkeypatch):
    reference_dir, names = reference
    injected, resumed = [], 0
    for mode in MODES:
        for at in range(len(names)):
            out = tmp_path / f"{mode}-{at}"
            injector = FaultInjector(checkpoint_module.atomic_write_bytes, at=at, mode=mode)
            if crash_then_recover(out, injector, monkeypatch):
                assert_same_run(out, reference_dir)
                resumed += 1
            injected.append((mode, at, names[at]))
    # every write of every checkpoint, in every mode, was faulted once
    assert len(injected) == len(MODES) * len(EXPECTED_WRITES) == 30
    # only faults before the first commit (config.json, model, trainer.safetensors itself, unless
    # it landed) leave nothing to resume
    assert resumed == len(injected) - (2 * 3 + 2)


def test_resuming_the_uncommitted_first_checkpoint_names_the_missing_file(tmp_path, monkeypatch):
    injector = FaultInjector(checkpoint_module.atomic_write_bytes, at=EXPECTED_WRITES.index("trainer.safetensors"), mode="dies-mid-write")
    assert not crash_then_recover(tmp_path, injector, monkeypatch)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "model.safetensors").is_file()
