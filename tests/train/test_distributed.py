"""Data-parallel training: two gloo processes on CPU against one process.

The equality checks rebuild the step by hand in this process: the global batch the data
generator draws, each rank's slice of it with that rank's noise stream (``rank_seed``), the
mean of the slices' losses, per-group clipping and one Adam step. For DSM that mean is the loss
on the concatenated batch; for flux, whose reference couples the batch, it is the per-rank
semantics :mod:`fluxmatch.train.distributed` states.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fluxmatch import DataSource
from fluxmatch.data import part_rows
from fluxmatch.errors import FluxMatchError
from fluxmatch.train.distributed import Context, agree, average_gradients, current, rank_seed

WORKER = Path(__file__).with_name("ddp_worker.py")
SEED, BATCH = 3, 64


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 ARGS`` with one thread per process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()), *args]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240, cwd=cwd)


def _build(name: str):
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    return worker.build(name)


def _reference_step(name: str) -> tuple[dict[str, torch.Tensor], float, float]:
    """One process: the two ranks' slices, each with its rank's noise, mean loss, clip, Adam.
    Returns the field's weights after the step, the loss and the field's gradient norm."""
    field, objective = _build(name)
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in objective.param_groups(field, 1e-2)]
    optimizer = torch.optim.Adam(groups, lr=1e-2)
    batch = DataSource.from_spec("ring", SEED).sample_batch(BATCH, torch.Generator().manual_seed(SEED))
    losses = []
    for rank in range(2):
        torch.manual_seed(rank_seed(SEED, rank))
        losses.append(objective(field, batch.x[part_rows(BATCH, (rank, 2))]).loss.mean())
    loss = torch.stack(losses).mean()
    loss.backward()
    norms = [float(torch.nn.utils.clip_grad_norm_(group["params"], 1.0)) for group in optimizer.param_groups]
    optimizer.step()
    return {f"field.{k}": v for k, v in field.state_dict().items()}, float(loss.detach()), norms[0]


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    run = _launch(str(WORKER), str(out), cwd=out)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.mark.parametrize("name", ["dsm", "flux"])
def test_one_two_process_step_equals_the_one_process_step(two_process_runs, name):
    run = two_process_runs / name
    trained = load_file(str(run / "trainer.safetensors"))
    expected, loss, grad_norm = _reference_step(name)
    assert {"rng.torch.rank1", "rng.data", "rng.torch"} <= set(trained)
    # Adam's first step is lr·sign(g): the logged loss and gradient norm check the averaging's scale
    with (run / "log.csv").open() as handle:
        row = next(csv.DictReader(handle))
    assert float(row["loss"]) == pytest.approx(loss, rel=1e-5)
    assert float(row["grad_norm"]) == pytest.approx(grad_norm, rel=1e-5)
    for key, value in expected.items():
        torch.testing.assert_close(trained[key], value, rtol=1e-5, atol=1e-6, msg=key)
    before = _build(name)[0].state_dict()
    assert any(not torch.equal(before[k.removeprefix("field.")], v) for k, v in expected.items())  # the step moved the weights


def _torchrun(tmp_path: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    return _launch(
        "-m", "fluxmatch", "train", "--data", "ring", "--lr-schedule", "constant", "--checkpoint-every", "10", "--batch-size", "128",
        "--hidden", "32,32", "--eval-samples", "64", "--sample-steps", "20", "--no-progress", "--out", str(out), *flags, cwd=tmp_path,
    )


@pytest.mark.slow
def test_torchrun_trains_and_resumes_exactly(tmp_path):
    whole, parted = tmp_path / "whole", tmp_path / "parted"
    runs = [_torchrun(tmp_path, whole, "--steps", "30"), _torchrun(tmp_path, parted, "--steps", "20")]
    runs.append(_torchrun(tmp_path, parted, "--steps", "30", "--resume"))
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    assert runs[0].stdout.count("trained flux") == 1  # rank 0 alone reports
    a, b = load_file(str(whole / "trainer.safetensors")), load_file(str(parted / "trainer.safetensors"))
    for key in a:
        if key.startswith(("field.", "ema.", "optimizer.")):
            assert torch.equal(a[key], b[key]), key
    rows = (parted / "log.csv").read_text().splitlines()
    assert rows[-1].startswith("30,") and (parted / "metrics.json").is_file()


def test_one_process_context_and_helpers():
    ctx = current()
    assert ctx == Context() and ctx.is_main and ctx.part is None
    assert rank_seed(5, 0) == 5 and len({rank_seed(5, r) for r in range(8)}) == 8
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    assert average_gradients([p], [1.5], ctx) == [1.5] and torch.equal(p.grad, torch.full((3,), 2.0))
    assert agree(lambda: 7, ctx) == 7
    with pytest.raises(FluxMatchError, match="boom"):
        agree(lambda: (_ for _ in ()).throw(FluxMatchError("boom")), ctx)


def test_part_rows_split_a_batch_and_refuse_bad_parts():
    rows = [part_rows(10, (r, 3)) for r in range(3)]
    assert sum(s.stop - s.start for s in rows) == 10 and rows[0].start == 0 and rows[-1].stop == 10
    source = DataSource.from_spec("ring", 0)
    whole = source.sample_batch(8, torch.Generator().manual_seed(1)).x
    parts = [source.sample_batch(8, torch.Generator().manual_seed(1), part=(r, 2)).x for r in range(2)]
    assert torch.equal(torch.cat(parts), whole)
    with pytest.raises(FluxMatchError, match="0 ≤ rank < world"):
        part_rows(8, (2, 2))
    with pytest.raises(FluxMatchError, match="cannot be split across 4"):
        part_rows(3, (0, 4))


def test_torchrun_variables_must_be_complete(monkeypatch):
    from fluxmatch.train.distributed import initialise

    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(FluxMatchError, match="launch with torchrun"):
        initialise("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(FluxMatchError, match="not an integer"):
        initialise("cpu")
