"""Run directories: round trips, atomic writes and clear errors for broken checkpoints."""

import json
import os

import pytest
import torch
from safetensors import safe_open
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


# ---------------------------------------------------------------------------------------------
# format 2: the trainer state lives in trainer.safetensors; format 1 still resumes


def trainer_metadata(path):
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def fresh_state():
    """A field, objective and optimizer like tiny_run's (the trainer's parameter groups)."""
    field = MLPField(2, (16, 16))
    objective = FluxMatching(sigma=0.3, dim=2)
    trainer = Trainer(field, objective, DataSource.from_spec("ring", seed=0, n=500), TrainConfig(progress=False), "unused")
    optimizer = torch.optim.Adam([dict(group) for group in trainer.param_groups], lr=1e-3)
    return field, objective, optimizer, EMA(field), torch.Generator()


def resume_into(run):
    return load_training_state(run, *fresh_state())


def test_trainer_state_is_in_the_safetensors_metadata(run_dir):
    metadata = trainer_metadata(run_dir / "trainer.safetensors")
    assert metadata["format"] == "2" and metadata["step"] == "12"
    state = json.loads(metadata["trainer"])
    assert state["format"] == 2 and state["step"] == 12 and state["ema_decay"] == 0.999
    assert json.loads((run_dir / "trainer.json").read_text()) == state  # the human-readable mirror


def test_resuming_needs_no_trainer_json(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    (run / "trainer.json").unlink()
    assert resume_into(run) == 12
    checkpoint_module.sync_trainer_json(run)
    assert json.loads((run / "trainer.json").read_text())["step"] == 12


def rewrite_trainer(run, metadata=None, edit_tensors=None):
    tensors = load_file(str(run / "trainer.safetensors"))
    if edit_tensors:
        edit_tensors(tensors)
    meta = trainer_metadata(run / "trainer.safetensors") if metadata is None else metadata
    checkpoint_module.atomic_write_tensors(run / "trainer.safetensors", tensors, metadata=meta)


def test_a_format_1_checkpoint_still_resumes(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "old")
    state = json.loads((run / "trainer.json").read_text())
    (run / "trainer.json").write_text(json.dumps({**state, "format": 1}))
    rewrite_trainer(run, metadata={"step": "12", "format": "1"})
    assert resume_into(run) == 12
    (run / "trainer.json").write_text(json.dumps({**state, "format": 1, "step": 6}))
    with pytest.raises(FluxMatchError, match="belong to different checkpoints"):
        resume_into(run)
    (run / "trainer.json").unlink()
    with pytest.raises(FluxMatchError, match="format-1 checkpoint, which needs trainer.json"):
        resume_into(run)


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.update(step="abc"),
        lambda s: s.update(step=True),
        lambda s: s.update(ema_decay="x"),
        lambda s: s.update(optimizer="x"),
        lambda s: s.update(format=99),
        lambda s: s["optimizer"].update(param_groups="x"),
        lambda s: s["optimizer"]["param_groups"][0].update(lr="abc"),
        lambda s: s["optimizer"]["param_groups"][0].update(lr_scale=[1]),
        lambda s: s["optimizer"]["param_groups"][0].update(betas=[0.9]),
        lambda s: s["optimizer"]["param_groups"][0].update(params=[0, 1]),
        lambda s: s["optimizer"].update(scalars={"99": {"x": 1}}),
        lambda s: s["optimizer"]["param_groups"].append({"params": []}),
    ],
)
def test_a_trainer_state_of_the_wrong_types_is_a_clear_error(run_dir, tmp_path, edit):
    run = copy_run(run_dir, tmp_path / "edited")
    metadata = trainer_metadata(run / "trainer.safetensors")
    state = json.loads(metadata["trainer"])
    edit(state)
    rewrite_trainer(run, metadata={**metadata, "trainer": json.dumps(state)})
    with pytest.raises(FluxMatchError, match="trainer.safetensors"):
        resume_into(run)


def test_trainer_metadata_that_is_not_json(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "edited")
    rewrite_trainer(run, metadata={"format": "2", "step": "12", "trainer": "{not json"})
    with pytest.raises(FluxMatchError, match="trainer.safetensors is not a valid trainer state"):
        resume_into(run)


def test_a_format_1_trainer_json_of_the_wrong_types(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "old")
    rewrite_trainer(run, metadata={"step": "12", "format": "1"})
    (run / "trainer.json").write_text(json.dumps({"format": 1, "step": 12, "optimizer": [1]}))
    with pytest.raises(FluxMatchError, match="trainer.json is not a valid trainer state"):
        resume_into(run)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.update({"optimizer.0.exp_avg": torch.zeros(3, 3)}), "'optimizer.0.exp_avg' has shape"),
        (lambda t: t.update({"optimizer.0.step": torch.zeros(2)}), "'optimizer.0.step' has shape"),
        (lambda t: t.update({"optimizer.99.exp_avg": torch.zeros(1)}), "names none of the"),
        (lambda t: t.update({"optimizer.x.exp_avg": torch.zeros(1)}), "names none of the"),
        (lambda t: t.update({"rng.torch": torch.zeros(3)}), "RNG states are invalid"),
        (lambda t: t.pop("rng.data"), "lacks the RNG states"),
    ],
)
def test_optimizer_or_rng_tensors_that_do_not_match(run_dir, tmp_path, edit, message):
    run = copy_run(run_dir, tmp_path / "edited")
    rewrite_trainer(run, edit_tensors=edit)
    with pytest.raises(FluxMatchError, match=message):
        resume_into(run)


# ---------------------------------------------------------------------------------------------
# hand-edited config.json


@pytest.mark.parametrize(
    ("section", "edit"),
    [
        ("field", {"hidden": "abc"}),
        ("field", {"dim": "x"}),
        ("field", {"hidden": None}),
        ("objective", {"noise": {"kind": "fixed", "sigma": [1]}}),
        ("objective", {"noise": "abc"}),
        ("objective", {"estimator": 5}),
    ],
)
def test_config_values_of_the_wrong_type_are_a_clear_error(run_dir, tmp_path, section, edit):
    run = copy_run(run_dir, tmp_path / "edited")
    config = json.loads((run / "config.json").read_text())
    config[section].update(edit)
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(FluxMatchError, match="config.json"):
        load_run(run)
    with pytest.raises(FluxMatchError, match="config.json"):
        resume_into(run)


def test_config_sections_that_are_not_objects(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "edited")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "data": "abc"}))
    with pytest.raises(FluxMatchError, match="config.json: its 'data' section must be an object"):
        load_run(run)


# ---------------------------------------------------------------------------------------------
# atomic writes go only to regular files or new paths


def test_atomic_write_refuses_a_symlink_even_to_a_regular_file(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("keep")
    (tmp_path / "link.json").symlink_to(target)
    with pytest.raises(FluxMatchError, match=r"link.json is a symlink; fluxmatch writes only regular files or new paths"):
        checkpoint_module.atomic_write_json(tmp_path / "link.json", {"x": 1})
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FluxMatchError, match="dangling.json is a symlink"):
        checkpoint_module.atomic_write_bytes(tmp_path / "dangling.json", b"x")
    assert target.read_text() == "keep" and (tmp_path / "link.json").is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["dangling.json", "link.json", "real.json"]


def test_atomic_write_refuses_directories_fifos_and_devices(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(FluxMatchError, match="dir is a directory"):
        checkpoint_module.atomic_write_bytes(tmp_path / "dir", b"x")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(FluxMatchError, match="fifo is a FIFO"):
        checkpoint_module.atomic_write_bytes(tmp_path / "fifo", b"x")
    with pytest.raises(FluxMatchError, match="/dev/null is a character device"):
        checkpoint_module.atomic_write_bytes("/dev/null", b"x")
    assert sorted(os.listdir(tmp_path)) == ["dir", "fifo"]


def test_atomic_write_needs_an_existing_directory(tmp_path):
    with pytest.raises(FluxMatchError, match=r"its directory .*missing does not exist"):
        checkpoint_module.atomic_write_bytes(tmp_path / "missing" / "x.json", b"x")
    (tmp_path / "file").write_text("")
    with pytest.raises(FluxMatchError, match=r"its directory .*file is not a directory"):
        checkpoint_module.atomic_write_bytes(tmp_path / "file" / "x.json", b"x")


@pytest.mark.parametrize("where", ["mkstemp", "replace"])
def test_permission_denied_names_the_path(tmp_path, monkeypatch, where):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    if where == "mkstemp":
        monkeypatch.setattr(checkpoint_module.tempfile, "mkstemp", denied)
    else:
        monkeypatch.setattr(checkpoint_module.os, "replace", denied)
    with pytest.raises(FluxMatchError, match=r"cannot write .*x.json: permission denied"):
        checkpoint_module.atomic_write_bytes(tmp_path / "x.json", b"x")
    assert os.listdir(tmp_path) == []


def test_a_checkpoint_into_a_symlinked_file_is_refused_before_writing(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    before = {name: (run / name).read_bytes() for name in os.listdir(run)}
    (run / "model.safetensors").unlink()
    (run / "model.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    field, objective, optimizer, ema, generator = fresh_state()
    with pytest.raises(FluxMatchError, match="model.safetensors is a symlink"):
        save_checkpoint(run, field, objective, optimizer, ema, 1, {"train": {}}, generator)
    assert (run / "trainer.safetensors").read_bytes() == before["trainer.safetensors"]
    assert not (tmp_path / "elsewhere.safetensors").exists()
