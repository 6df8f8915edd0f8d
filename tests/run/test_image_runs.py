"""Image runs end to end through the CLI: `train --data digits`, `sample` in pixel units, `evaluate`."""

import json

import numpy as np
import pytest

from fluxmatch.cli import main
from fluxmatch.errors import FluxMatchError
from fluxmatch.run import sample_run

pytestmark = pytest.mark.slow  # every test here trains a model

TINY = ["--steps", "3", "--batch-size", "16", "--eval-samples", "40", "--sample-steps", "3", "--nll-samples", "4", "--no-progress"]


def run_cli(argv):
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private classifier cache, so the suite never writes into the user's home."""
    path = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("FLUXMATCH_CACHE", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("digits") / "flux"
    assert run_cli(["train", "--data", "digits", "--objective", "flux", "--seed", "0", "--out", str(out), *TINY]) == 0
    return out


def test_train_writes_an_image_run(digits_run):
    for name in ("model.safetensors", "config.json", "metrics.json", "log.csv", "samples.npy", "samples.png", "data.png", "loss.png"):
        assert (digits_run / name).is_file(), name
    metrics = json.loads((digits_run / "metrics.json").read_text())
    for key in ("fd_digits", "fd_digits_floor", "class_coverage", "nll_bits_per_dim"):
        assert np.isfinite(metrics[key]), key
    assert metrics["sampler"]["method"] == "heun" and metrics["sampler"]["steps"] == 3 and metrics["sampler"]["nfe"] == 5
    config = json.loads((digits_run / "config.json").read_text())
    assert config["objective"]["name"] == "flux" and config["objective"]["noise"]["kind"] == "edm" and config["field"]["type"] == "edm_split"
    assert config["run"]["objective"]["noise"] == "annealed" and config["run"]["data"]["kind"] == "images"
    samples = np.load(digits_run / "samples.npy")
    assert samples.shape == (40, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 16


@pytest.mark.parametrize("sampler", ["heun", "sde", "pc", "euler"])
def test_sample_returns_images_in_pixel_units(digits_run, tmp_path, sampler):
    out = tmp_path / "s.npy"
    assert run_cli(["sample", "--run", str(digits_run), "--n", "7", "--seed", "3", "--out", str(out), "--steps", "2", "--sampler", sampler]) == 0
    samples = np.load(out)
    assert samples.shape == (7, 1, 8, 8) and samples.dtype == np.float32
    assert samples.min() >= 0 and samples.max() <= 16


def test_sampling_is_seeded(digits_run):
    a = sample_run(digits_run, n=5, seed=1, steps=2)
    b = sample_run(digits_run, n=5, seed=1, steps=2)
    c = sample_run(digits_run, n=5, seed=2, steps=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_class_conditional_run_samples_one_class(tmp_path, cache, capsys):
    out = tmp_path / "cc"
    assert run_cli(["train", "--data", "digits", "--objective", "dsm", "--class-conditional", "--guidance", "2", "--out", str(out), *TINY]) == 0
    assert json.loads((out / "config.json").read_text())["field"]["backbone"]["n_classes"] == 10
    samples = sample_run(out, n=4, steps=2, label=3, guidance=0.0)
    assert samples.shape == (4, 1, 8, 8)
    with pytest.raises(FluxMatchError, match="label"):
        sample_run(out, n=4, steps=2, label=12)


def test_image_options_are_checked(digits_run, tmp_path, capsys):
    with pytest.raises(FluxMatchError, match="not class-conditional"):
        sample_run(digits_run, n=2, label=1)
    assert run_cli(["sample", "--run", str(digits_run), "--n", "2", "--guidance", "-1", "--out", str(tmp_path / "x.npy")]) == 2
    assert "guidance" in capsys.readouterr().err
    assert run_cli(["train", "--data", "ring", "--class-conditional", "--out", str(tmp_path / "r"), "--steps", "2"]) == 2
    assert "image" in capsys.readouterr().err


def test_gradient_estimator_with_langevin_dynamics_trains_on_images(tmp_path, cache):
    out = tmp_path / "gradient"
    argv = ["train", "--data", "digits", "--estimator", "gradient", "--dynamics", "langevin", "--out", str(out), *TINY]
    assert run_cli(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["objective"]["estimator"] == "gradient" and config["run"]["objective"]["dynamics"] == "langevin"


def test_fixed_sigma_images_sample_by_langevin(tmp_path, cache):
    out = tmp_path / "fixed"
    argv = ["train", "--data", "digits", "--objective", "dsm", "--noise", "fixed", "--sigma", "0.3", "--out", str(out), *TINY[:-5], "--sample-steps", "20", "--no-progress"]
    assert run_cli(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sampler"]["method"] == "langevin" and metrics["noise"] == "fixed" and "nll_bits_per_dim" not in metrics
    samples = np.load(out / "samples.npy")
    assert samples.shape == (40, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 16


def test_fixed_sigma_flux_on_64_entries_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "fixed-flux"
    assert run_cli(["train", "--data", "digits", "--objective", "flux", "--noise", "fixed", "--out", str(out), *TINY[:-5], "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "holds its Langevin chains up to 32 entries per point; this data has 64" in err and "--noise annealed" in err
    assert not (out / "model.safetensors").exists()


def test_split_estimator_is_the_image_default_and_its_field_has_two_heads(tmp_path, cache):
    out = tmp_path / "split"
    assert run_cli(["train", "--data", "digits", "--out", str(out), *TINY]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["objective"]["estimator"] == "split" and config["field"]["type"] == "edm_split"
    assert config["field"]["backbone"]["heads"] == 2 and config["objective"]["estimator"]["flux_decay"] == 0.1
    log = (out / "log.csv").read_text().splitlines()[0].split(",")
    assert {"dsm", "flux_rms", "potential_fit"} <= set(log)


def test_evaluate_prints_image_metrics(digits_run, capsys):
    assert run_cli(["evaluate", "--run", str(digits_run), "--n", "40", "--steps", "2"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"fd_digits", "class_coverage", "nll_bits_per_dim", "nfe"} <= set(metrics)
