"""SIGTERM and SIGINT stop a training process with a checkpoint at the current step."""

import json
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from fluxmatch.data import DataSource
from fluxmatch.fields import MLPField
from fluxmatch.objectives import FluxMatching
from fluxmatch.train import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SCRIPT = r"""
import sys
import torch
from fluxmatch.data import DataSource
from fluxmatch.errors import TrainingInterrupted
from fluxmatch.fields import MLPField
from fluxmatch.objectives import FluxMatching
from fluxmatch.train import TrainConfig, Trainer

torch.set_num_threads(1)
torch.manual_seed(0)
config = TrainConfig(steps=100_000, batch_size=16, log_every=5, checkpoint_every=10**9, progress=False)
trainer = Trainer(MLPField(2, (8,)), FluxMatching(sigma=0.3, dim=2), DataSource.from_spec("ring", seed=0, n=200), config, sys.argv[1])
try:
    trainer.fit()
except TrainingInterrupted as err:
    print(err, flush=True)
    sys.exit(err.exit_code)
"""


def make(out, steps):
    torch.manual_seed(0)
    config = TrainConfig(steps=steps, batch_size=16, log_every=5, checkpoint_every=10**9, progress=False)
    return Trainer(MLPField(2, (8,)), FluxMatching(sigma=0.3, dim=2), DataSource.from_spec("ring", seed=0, n=200), config, out)


def wait_for_progress(process, log, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the training process exited early: {process.communicate()}")
        if log.is_file() and len(log.read_text().splitlines()) >= 3:  # the header and two rows
            return
        time.sleep(0.05)
    process.kill()
    pytest.fail("the training process logged no progress")


@pytest.mark.parametrize(("signum", "name", "code"), [(signal.SIGTERM, "SIGTERM", 143), (signal.SIGINT, "SIGINT", 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_writes_a_checkpoint_at_the_current_step(tmp_path, signum, name, code):
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_progress(process, out / "log.csv")
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, stderr
    match = re.fullmatch(rf"{name} received: training stopped at step (\d+) with a checkpoint in (.+)\n", stdout)
    assert match and match.group(2) == str(out), (stdout, stderr)
    step = int(match.group(1))
    assert step >= 10 and "Traceback" not in stderr
    assert json.loads((out / "trainer.json").read_text())["step"] == step
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[-1].split(",")[0] == str(step)  # the interrupted step is logged too
    assert not (out / ".lock").exists()

    summary = make(out, step + 7).fit(resume=True)
    assert summary["resumed_from"] == step and summary["steps_run"] == 7
    assert json.loads((out / "trainer.json").read_text())["step"] == step + 7
