"""Structured fields through the one pipeline: transformer fields on trajectories under every
objective, the physics check, snapshots through training, and DAG-masked fields on points."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import fluxmatch as fm
from fluxmatch.errors import FluxMatchError
from fluxmatch.metrics import jacobian
from fluxmatch.run import snapshot_runs

SMALL = fm.FieldSpec(family="transformer", width=16, depth=1, heads=2)


def springs_spec(objective="flux", noise="annealed", field=SMALL, data="springs", **train):
    o = fm.ObjectiveSpec(name=objective) if objective == "flow" else fm.ObjectiveSpec(name=objective, noise=noise)
    sampler = fm.SamplerSpec(steps=5 if noise == "fixed" and objective != "flow" else 4)
    return fm.RunSpec(
        data=fm.DataSpec(data, n=64), field=field, objective=o, sampler=sampler,
        train=fm.TrainSpec(steps=6, batch_size=32, **train), evaluation=fm.EvalSpec(n=16),
    )


@pytest.fixture(scope="module")
def flux_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("springs") / "flux"
    return out, fm.train_run(springs_spec(snapshot_every=3), out, progress=False)


def test_a_springs_run_writes_raw_trajectories_plots_and_the_physics_check(flux_run):
    out, metrics = flux_run
    samples = np.load(out / "samples.npy")
    assert samples.shape == (16, 50, 4) and np.isfinite(samples).all()
    config = json.loads((out / "config.json").read_text())
    units = config["data"]["units"]
    assert config["field"]["type"] == "edm" and config["field"]["backbone"]["type"] == "transformer"
    assert config["field"]["backbone"]["causal"] is True and units["features"] == ["q1", "v1", "q2", "v2"]
    # samples.npy is in raw units: the model-unit draw mapped back with the stored statistics
    run = fm.open_run(out)
    model_units = fm.run.draw(run, 16, run.spec.train.seed)[0]
    assert np.allclose(samples, model_units * np.array(units["std"]) + np.array(units["mean"]), atol=1e-4)
    for name in ("trajectories.png", "springs.gif", "loss.png", "metrics.json"):
        assert (out / name).is_file()
    for key in ("w2", "floor_w2", "dynamics_relative_rms", "data_dynamics_relative_rms", "persistence_relative_rms"):
        assert np.isfinite(metrics[key])
    assert metrics["data_dynamics_relative_rms"] < 1e-5  # held-out simulations obey the springs exactly


def test_snapshots_hold_the_ema_weights_through_training(flux_run):
    out, _ = flux_run
    runs = snapshot_runs(out)
    assert [step for step, _ in runs] == [3, 6]
    final = fm.open_run(out)
    for key, value in final.field.state_dict().items():
        assert torch.equal(runs[-1][1].field.state_dict()[key], value)
    assert any(not torch.equal(runs[0][1].field.state_dict()[k], v) for k, v in final.field.state_dict().items())


@pytest.mark.parametrize("objective, noise", [("dsm", "annealed"), ("flow", None), ("flux", "annealed"), ("dsm", "fixed")])
def test_a_transformer_field_trains_under_every_objective(tmp_path, objective, noise):
    metrics = fm.train_run(springs_spec(objective, noise, field=fm.FieldSpec(family="transformer", width=16, depth=1, heads=2, causal=False)), tmp_path / "run", progress=False)
    assert np.load(tmp_path / "run" / "samples.npy").shape == (16, 50, 4)
    assert np.isfinite(metrics["w2"])


def test_evaluating_on_trajectories_of_another_shape_is_refused(flux_run, tmp_path):
    fm.save_springs(tmp_path / "short.npz", 20, params=fm.SpringParams(steps=10))
    with pytest.raises(FluxMatchError, match=r"trajectories of shape \(10, 4\).*trained on \(50, 4\)"):
        fm.evaluate_run(flux_run[0], data=str(tmp_path / "short.npz"), n=8)


def test_evaluating_on_springs_uses_their_parameters_not_the_runs_file(tmp_path):
    path = fm.save_springs(tmp_path / "stiff.npz", 80, seed=2, params=fm.SpringParams(k_couple=2.0))
    fm.train_run(springs_spec(data=str(path)), tmp_path / "run", progress=False)
    path.unlink()  # evaluating against other data needs nothing of the run's own data
    metrics = fm.evaluate_run(tmp_path / "run", data="springs", n=8)
    assert metrics["data_dynamics_relative_rms"] < 1e-5  # fresh springs, checked with the defaults they follow


def test_resuming_drops_snapshots_past_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    fm.train_run(springs_spec(snapshot_every=2), out, progress=False)
    # a snapshot past the checkpoint (step 6), as a run killed between the two would leave it
    (out / "snapshots" / "model-0000007.safetensors").write_bytes((out / "snapshots" / "model-0000006.safetensors").read_bytes())
    spec = springs_spec(snapshot_every=2)
    fm.train_run(replace(spec, train=replace(spec.train, steps=8)), out, resume=True, progress=False)
    assert [step for step, _ in snapshot_runs(out)] == [2, 4, 6, 8]


def test_a_file_of_simulated_springs_is_checked_with_its_own_parameters(tmp_path):
    path = fm.save_springs(tmp_path / "stiff.npz", 80, seed=2, params=fm.SpringParams(k_couple=2.0, steps=12))
    metrics = fm.train_run(springs_spec(data=str(path), field=fm.FieldSpec(family="transformer", width=16, depth=1, heads=2)), tmp_path / "run", progress=False)
    assert np.load(tmp_path / "run" / "samples.npy").shape == (16, 12, 4)
    assert metrics["data_dynamics_relative_rms"] < 1e-5  # only true with the file's own k_couple


def test_a_dag_field_keeps_its_graph_through_training(tmp_path):
    np.save(tmp_path / "chain.npy", fm.simulate_chain(600, seed=0).numpy())
    spec = fm.RunSpec(
        data=fm.DataSpec(str(tmp_path / "chain.npy")), field=fm.FieldSpec(family="dag", graph="0>1,1>2", hidden=(8, 8)),
        objective=fm.ObjectiveSpec(name="flux", noise="annealed"), sampler=fm.SamplerSpec(steps=4),
        train=fm.TrainSpec(steps=6, batch_size=64), evaluation=fm.EvalSpec(n=40),
    )
    metrics = fm.train_run(spec, tmp_path / "run", progress=False)
    assert np.isfinite(metrics["w2"])
    run = fm.open_run(tmp_path / "run")
    assert run.field.backbone.config["type"] == "dag"
    points = torch.randn(20, 3)
    jac = jacobian(run.field, points, torch.full((20,), 0.3)).abs().amax(0)
    allowed = fm.dependency_mask(fm.parse_graph("0>1,1>2"))
    assert (jac[~allowed] == 0).all() and (jac[allowed] > 0).all()
