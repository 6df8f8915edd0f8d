"""Point runs through the one pipeline: noise-annealed flux and DSM on points, old run
directories, evaluation against other data."""

import json
import shutil

import numpy as np
import pytest
import torch

import fluxmatch as fm
from fluxmatch.errors import FluxMatchError

TINY = dict(train=fm.TrainSpec(steps=20, batch_size=64), field=fm.FieldSpec(hidden=(16, 16)), evaluation=fm.EvalSpec(n=120))


def annealed(objective, data="8gaussians", **sampler):
    return fm.RunSpec(data=fm.DataSpec(data), objective=fm.ObjectiveSpec(name=objective, noise="annealed"), sampler=fm.SamplerSpec(steps=6, **sampler), **TINY)


@pytest.fixture(scope="module")
def annealed_flux(tmp_path_factory):
    out = tmp_path_factory.mktemp("annealed") / "flux"
    metrics = fm.train_run(annealed("flux"), out, progress=False)
    return out, metrics


def test_annealed_flux_on_points_writes_a_run(annealed_flux):
    out, metrics = annealed_flux
    assert metrics["noise"] == "annealed" and metrics["sampler"]["method"] == "heun" and metrics["sampler"]["nfe"] == 11
    assert np.isfinite(metrics["w2"]) and metrics["mean_abs_curl"] is None
    config = json.loads((out / "config.json").read_text())
    assert config["field"]["type"] == "edm_split" and config["field"]["backbone"]["conditioning"] == "sigma"
    assert np.load(out / "samples.npy").shape == (120, 2)
    for name in ("samples.png", "loss.png", "metrics.json"):
        assert (out / name).is_file()


@pytest.mark.parametrize("method", ["euler", "sde", "pc", "dopri5"])
def test_annealed_points_take_every_noise_annealed_sampler(annealed_flux, method):
    samples = fm.sample_run(annealed_flux[0], n=30, seed=1, method=method, steps=4)
    assert samples.shape == (30, 2) and np.isfinite(samples).all()


def test_annealed_dsm_on_the_ring(tmp_path):
    metrics = fm.train_run(annealed("dsm", data="ring"), tmp_path / "dsm", progress=False)
    assert np.isfinite(metrics["w2"]) and metrics["objective"] == "dsm"


def test_sampling_settings_are_checked_against_the_run(annealed_flux):
    with pytest.raises(FluxMatchError, match="--step-size applies to Langevin sampling"):
        fm.sample_run(annealed_flux[0], n=5, step_size=0.01)
    with pytest.raises(FluxMatchError, match="--sampler langevin does not apply"):
        fm.sample_run(annealed_flux[0], n=5, method="langevin")
    with pytest.raises(FluxMatchError, match="not class-conditional"):
        fm.sample_run(annealed_flux[0], n=5, label=1)


def test_evaluate_on_other_data(annealed_flux, tmp_path):
    np.save(tmp_path / "other.npy", np.random.default_rng(0).normal(size=(300, 2)))
    metrics = fm.evaluate_run(annealed_flux[0], data=str(tmp_path / "other.npy"), n=60, steps=4)
    assert metrics["n"] == 60 and np.isfinite(metrics["w2"])


def _legacy(run_dir, tmp_path):
    """The run directory as fluxmatch 0.1 wrote it: no run spec, the old objective and sampler sections."""
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    config = json.loads((old / "config.json").read_text())
    del config["run"]
    config["objective"] = {"name": "flux", "sigma": 0.3, "horizon": 4.0, "dynamics": "component", "substeps": 4, "divergence": "auto", "n_probes": 1,
                           "horizon_sampler": "exponential", "rao_blackwell": True, "stratified": True, "estimator": "potential", "dim": 2,
                           "potential_hidden": [16, 16], "field_lr_scale": 0.25, "potential_lr_scale": 10.0, "target_group": None}
    config["sampler"] = {"step_size": 0.004, "n_steps": 30, "n": 100}
    config["fluxmatch_version"] = "0.1.0"
    (old / "config.json").write_text(json.dumps(config))
    return old


def test_old_run_directories_still_sample_and_evaluate(tmp_path):
    spec = fm.RunSpec(objective=fm.ObjectiveSpec(sigma=0.3), sampler=fm.SamplerSpec(steps=10), **TINY)
    fm.train_run(spec, tmp_path / "new", progress=False)
    old = _legacy(tmp_path / "new", tmp_path)
    run = fm.open_run(old)
    assert run.conditioning == "fixed" and run.sigma == 0.3 and run.spec.sampler.steps == 30 and run.spec.sampler.step_size == 0.004
    assert fm.sample_run(old, n=10).shape == (10, 2)
    assert np.isfinite(fm.evaluate_run(old, n=50)["w2"])
    with pytest.raises(FluxMatchError, match="before run specs existed"):
        fm.load_spec(old / "config.json")


def test_an_unreadable_old_run_is_refused_clearly(tmp_path):
    spec = fm.RunSpec(sampler=fm.SamplerSpec(steps=10), **TINY)
    fm.train_run(spec, tmp_path / "new", progress=False)
    old = _legacy(tmp_path / "new", tmp_path)
    config = json.loads((old / "config.json").read_text())
    config["objective"] = {"name": "gan"}
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(FluxMatchError, match="config.json"):
        fm.open_run(old)


def test_the_same_spec_and_seed_give_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    spec = annealed("flux")
    fm.train_run(spec, tmp_path / "a", progress=False)
    fm.train_run(fm.load_spec(tmp_path / "a" / "config.json")[0], tmp_path / "b", progress=False)
    a, b = (load_file(str(tmp_path / r / "model.safetensors")) for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
