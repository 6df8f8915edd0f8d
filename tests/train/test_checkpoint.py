"""Run directories: round trips, atomic writes and clear errors for broken checkpoints."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from fluxmatch.data import DataSource
from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import MLPField
from fluxmatch.objectives import FluxMatching
from fluxmatch.train import EMA, TrainConfig, Trainer, load_run, load_training_state, save_checkpoint
from fluxmatch.train import checkpoint as checkpoint_module


def tiny_run(out, steps=12):
    torch.manual_seed(0)
    field = MLPField(2, (16, 16))
    objective = FluxMatching(sigma=0.3, dim=2)
    data = DataSource.from_spec("ring", seed=0, n=500)
    config = TrainConfig(steps=steps, batch_size=32, log_every=4, checkpoint_every=6, progress=False)
    Trainer(field, objective, data, config, out, metadata={"note": {"made_by": "tiny_run"}}).fit()
    return field, objective


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    tiny_run(out)
    return out


def test_run_dir_layout(run_dir):
    names = set(os.listdir(run_dir))
    assert {"config.json", "model.safetensors", "trainer.safetensors", "trainer.json", "log.csv"} <= names
    config = json.loads((run_dir / "config.json").read_text())
    assert set(config) >= {"field", "objective", "train", "data", "note", "fluxmatch_version"}
    assert config["field"] == {"type": "mlp", "dim": 2, "hidden": [16, 16], "conditioning": None}
    assert config["objective"]["name"] == "flux"
    assert config["data"]["spec"] == "ring" and config["data"]["dim"] == [2]
    assert len(config["data"]["mean"]) == len(config["data"]["std"]) == 2
    assert config["note"] == {"made_by": "tiny_run"}
    assert json.loads((run_dir / "trainer.json").read_text())["step"] == 12


def test_load_run_gives_ema_weights_in_eval_mode(run_dir):
    run = load_run(run_dir)
    saved = load_file(str(run_dir / "model.safetensors"))
    assert set(saved) == set(run.field.state_dict())
    for key, value in run.field.state_dict().items():
        assert torch.equal(value, saved[key])
    assert not run.field.training
    assert run.objective.config == run.config["objective"]
    assert run.sigma == 0.3 and run.event_shape == (2,)
    # The EMA in the trainer state is what model.safetensors holds.
    trainer_state = load_file(str(run_dir / "trainer.safetensors"))
    for key, value in saved.items():
        assert torch.equal(trainer_state[f"ema.{key}"], value)


def test_training_state_round_trip(tmp_path):
    torch.manual_seed(1)
    field = MLPField(2, (8,))
    objective = FluxMatching(sigma=0.5, dim=2)
    optimizer = torch.optim.Adam([*field.parameters(), *objective.parameters()], lr=1e-3)
    ema = EMA(field, 0.99)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(16, 2)
    for step in range(3):
        optimizer.zero_grad()
        objective(field, x).loss.mean().backward()
        optimizer.step()
        ema.update(field, step)
    torch.randn(3, generator=generator)
    save_checkpoint(tmp_path, field, objective, optimizer, ema, 3, {"train": {}, "data": {}, "sampler": {}}, generator)
    rng_after_save = torch.get_rng_state()
    expected_next = torch.randn(4)

    torch.manual_seed(99)
    field2 = MLPField(2, (8,))
    objective2 = FluxMatching(sigma=0.5, dim=2)
    optimizer2 = torch.optim.Adam([*field2.parameters(), *objective2.parameters()], lr=1e-3)
    ema2 = EMA(field2, 0.99)
    generator2 = torch.Generator().manual_seed(0)
    step = load_training_state(tmp_path, field2, objective2, optimizer2, ema2, generator2)

    assert step == 3
    for a, b in zip(field.state_dict().values(), field2.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(objective.state_dict().values(), objective2.state_dict().values()):
        assert torch.equal(a, b)
    for key in ema.state_dict():
        assert torch.equal(ema.state_dict()[key], ema2.state_dict()[key])
    s1, s2 = optimizer.state_dict(), optimizer2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for index, entries in s1["state"].items():
        for name, value in entries.items():
            assert torch.equal(value, s2["state"][index][name])
    assert torch.equal(generator.get_state(), generator2.get_state())
    assert torch.equal(torch.get_rng_state(), rng_after_save)
    assert torch.equal(torch.randn(4), expected_next)


def test_writes_leave_no_temporary_files(run_dir):
    assert not [name for name in os.listdir(run_dir) if name.startswith(".") or name.endswith(".tmp")]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    checkpoint_module.atomic_write_json(target, {"version": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.os, "replace", broken_replace)
    with pytest.raises(OSError):
        checkpoint_module.atomic_write_json(target, {"version": 2})
    assert json.loads(target.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == ["config.json"]


def copy_run(src, dst):
    dst.mkdir()
    for name in os.listdir(src):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_truncated_model_is_a_clear_error(run_dir, tmp_path):
    broken = copy_run(run_dir, tmp_path / "broken")
    payload = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(FluxMatchError, match="model.safetensors"):
        load_run(broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(FluxMatchError, match="corrupt"):
        load_run(broken)


def test_missing_run_dir(tmp_path):
    with pytest.raises(FluxMatchError, match="does not exist"):
        load_run(tmp_path / "nowhere")


def test_missing_or_invalid_config(run_dir, tmp_path):
    broken = copy_run(run_dir, tmp_path / "broken")
    (broken / "config.json").write_text("{not json")
    with pytest.raises(FluxMatchError, match="config.json is not valid JSON"):
        load_run(broken)
    (broken / "config.json").unlink()
    with pytest.raises(FluxMatchError, match="config.json is missing"):
        load_run(broken)


def test_missing_model(run_dir, tmp_path):
    broken = copy_run(run_dir, tmp_path / "broken")
    (broken / "model.safetensors").unlink()
    with pytest.raises(FluxMatchError, match="model.safetensors is missing"):
        load_run(broken)


def test_weights_that_do_not_match_the_config(run_dir, tmp_path):
    broken = copy_run(run_dir, tmp_path / "broken")
    config = json.loads((broken / "config.json").read_text())
    config["field"]["hidden"] = [32, 16]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(FluxMatchError, match="shape"):
        load_run(broken)
    config["field"]["hidden"] = [16, 16, 16]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(FluxMatchError, match="missing keys"):
        load_run(broken)


def test_resuming_with_another_objective_is_refused(run_dir):
    field = MLPField(2, (16, 16))
    objective = FluxMatching(sigma=0.5, dim=2)
    optimizer = torch.optim.Adam([*field.parameters(), *objective.parameters()])
    with pytest.raises(FluxMatchError, match="objective config"):
        load_training_state(run_dir, field, objective, optimizer, EMA(field), torch.Generator())


def test_nothing_to_resume(run_dir, tmp_path):
    partial = copy_run(run_dir, tmp_path / "partial")
    (partial / "trainer.safetensors").unlink()
    field = MLPField(2, (16, 16))
    objective = FluxMatching(sigma=0.3, dim=2)
    optimizer = torch.optim.Adam([*field.parameters(), *objective.parameters()])
    with pytest.raises(FluxMatchError, match="nothing to resume"):
        load_training_state(partial, field, objective, optimizer, EMA(field), torch.Generator())


def test_ema_warm_up_and_copy():
    module = torch.nn.Linear(2, 2)
    ema = EMA(module, decay=0.999)
    assert ema.decay_at(0) == pytest.approx(0.1)
    assert ema.decay_at(10**6) == 0.999
    start = module.weight.detach().clone()
    with torch.no_grad():
        module.weight.add_(1.0)
    ema.update(module, 0)
    assert torch.allclose(ema.state_dict()["weight"], start + 0.9)
    target = torch.nn.Linear(2, 2)
    ema.copy_to(target)
    assert torch.equal(target.weight, ema.state_dict()["weight"])
    with pytest.raises(FluxMatchError):
        EMA(module, decay=1.0)
