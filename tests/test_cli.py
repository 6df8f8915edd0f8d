"""The ``fluxmatch`` command line: train / sample / evaluate, and one-line errors for bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fluxmatch.cli import main

TINY = ["--steps", "30", "--batch-size", "64", "--hidden", "16,16", "--eval-samples", "200", "--sample-steps", "100", "--no-progress"]
METRIC_KEYS = {"w2", "sliced_w2", "mmd", "energy", "floor_w2", "floor_sliced_w2", "floor_mmd", "floor_energy"}
SRC = Path(__file__).resolve().parents[1] / "src"



def run_cli(argv):
    """The exit code of ``main(argv)`` run in-process (0, or the SystemExit code)."""
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    return code


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "ring-flux"
    assert run_cli(["train", "--data", "ring", "--objective", "flux", "--sigma", "0.3", "--seed", "1", "--out", str(out), *TINY]) == 0
    return out


def test_train_writes_the_run_directory(trained):
    for name in ("model.safetensors", "config.json", "metrics.json", "log.csv", "samples.png", "field.png", "samples.npy", "loss.png"):
        assert (trained / name).is_file(), name
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS
    assert metrics["mean_abs_curl"] >= 0
    assert metrics["train"]["steps"] == 30
    assert metrics["sampler"]["steps"] == 100 and metrics["sampler"]["step_size"] == 0.005 and metrics["sampler"]["nfe"] == 100
    assert np.load(trained / "samples.npy").shape == (200, 2)
    config = json.loads((trained / "config.json").read_text())
    assert config["run"]["objective"]["sigma"] == 0.3 and config["run"]["objective"]["noise"] == "fixed"


def test_train_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "dsm"
    assert run_cli(["train", "--objective", "dsm", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "w2" in printed and "floor" in printed and str(out / "model.safetensors") in printed


def test_sample_writes_npy(trained, tmp_path):
    out = tmp_path / "s.npy"
    assert run_cli(["sample", "--run", str(trained), "--n", "50", "--steps", "20", "--step-size", "0.005", "--seed", "3", "--out", str(out)]) == 0
    samples = np.load(out)
    assert samples.shape == (50, 2) and np.isfinite(samples).all()


def test_evaluate_prints_json(trained, capsys):
    assert run_cli(["evaluate", "--run", str(trained), "--n", "100", "--seed", "2", "--steps", "50"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) >= METRIC_KEYS
    assert all(np.isfinite(metrics[k]) for k in METRIC_KEYS)


@pytest.fixture
def bad_files(tmp_path, trained):
    nan = np.random.default_rng(0).normal(size=(50, 2))
    nan[7, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.savetxt(tmp_path / "three.csv", np.random.default_rng(0).normal(size=(40, 3)), delimiter=",")
    nan3 = np.random.default_rng(0).normal(size=(20, 6, 2))
    nan3[4, 2, 1] = np.nan
    np.save(tmp_path / "nan3.npy", nan3)
    (tmp_path / "exists.npz").write_bytes(b"mine")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(trained, corrupt)
    payload = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(payload[: len(payload) // 2])
    return tmp_path


BAD_INPUTS = {
    "unknown data": (["train", "--data", "no-such-data", *TINY], "unknown data set"),
    "NaN data": (["train", "--data", "{tmp}/nan.npy", *TINY], "NaN"),
    "sigma 0": (["train", "--sigma", "0", *TINY], "σ"),
    "sigma -1": (["train", "--sigma", "-1", *TINY], "σ"),
    "unknown objective": (["train", "--objective", "gan"], "invalid choice"),
    "missing run (sample)": (["sample", "--run", "{tmp}/nowhere"], "does not exist"),
    "missing run (evaluate)": (["evaluate", "--run", "{tmp}/nowhere"], "does not exist"),
    "corrupt checkpoint": (["evaluate", "--run", "{tmp}/corrupt", "--n", "50"], "model.safetensors"),
    "wrong-dimensional data": (["evaluate", "--run", "{trained}", "--data", "{tmp}/three.csv", "--n", "50"], "shape"),
    "no command": ([], "required"),
    "dynamics without its estimator": (["train", "--dynamics", "langevin", *TINY], "--dynamics applies to the flux objective's product and gradient estimators"),
    "sigma with annealed noise": (["train", "--noise", "annealed", "--sigma", "0.3", *TINY], "--sigma applies to fixed-σ training"),
    "estimator with dsm": (["train", "--objective", "dsm", "--estimator", "gradient", *TINY], "--estimator applies to the flux objective"),
    "hidden on a UNet": (["train", "--data", "digits", "--hidden", "8,8", *TINY], "--hidden applies to MLP fields"),
    "langevin on an annealed run": (["train", "--noise", "annealed", "--sampler", "langevin", *TINY], "--sampler langevin does not apply"),
    "step size of an annealed run": (["train", "--noise", "annealed", "--step-size", "0.01", "--steps", "3"], "--step-size applies to Langevin sampling"),
    "a sampler that does not apply (sample)": (["sample", "--run", "{trained}", "--sampler", "sde", "--n", "5"], "--sampler sde does not apply"),
    "preset and config": (["train", "--preset", "digits", "--config", "{tmp}/x.json"], "--preset or --config"),
    "points named as trajectories": (["train", "--data", "{tmp}/three.csv", "--data-kind", "trajectories", "--steps", "2"], "shape (N, T, D)"),
    "NaN trajectories": (["train", "--data", "{tmp}/nan3.npy", "--steps", "2"], "NaN"),
    "a transformer on points": (["train", "--field", "transformer", "--steps", "2"], "--field transformer applies to trajectory data"),
    "a cyclic graph": (["train", "--field", "dag", "--graph", "0>1,1>0", "--steps", "2"], "cycle"),
    "a graph larger than the data": (["train", "--field", "dag", "--graph", "0>1,1>2", "--steps", "2"], "out of range for a graph of 2 nodes"),
    "a DAG field without its graph": (["train", "--field", "dag", "--steps", "2"], "needs its graph"),
    "simulate over an existing file": (["simulate", "springs", "--n", "5", "--out", "{tmp}/exists.npz"], "--overwrite"),
    "simulate to a non-npz file": (["simulate", "springs", "--n", "5", "--out", "{tmp}/x.npy"], ".npz"),
    "simulate bad parameters": (["simulate", "springs", "--n", "5", "--dt", "-1", "--out", "{tmp}/new.npz"], "dt"),
    "full outside the structure study": (["experiment", "spiral", "--full"], "--full applies to the structure study"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_code_2(case, bad_files, trained, capsys, monkeypatch):
    monkeypatch.chdir(bad_files)  # default run directories land in tmp
    argv, fragment = BAD_INPUTS[case]
    argv = [a.format(tmp=bad_files, trained=trained) for a in argv]
    assert run_cli(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("fluxmatch: error: ") and fragment in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_dry_run_prints_the_resolved_spec(capsys, tmp_path):
    assert run_cli(["train", "--data", "8gaussians", "--noise", "annealed", "--out", str(tmp_path / "r"), "--dry-run"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["objective"]["noise"] == "annealed" and spec["sampler"]["method"] == "heun" and spec["field"]["family"] == "mlp"
    assert not (tmp_path / "r").exists()


def test_replay_from_config_json_reproduces_the_weights(trained, tmp_path, capsys):
    from safetensors.torch import load_file

    replay = tmp_path / "replay"
    assert run_cli(["train", "--config", str(trained / "config.json"), "--out", str(replay), "--no-progress"]) == 0
    a, b = load_file(str(trained / "model.safetensors")), load_file(str(replay / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((replay / "config.json").read_text())["run"] == json.loads((trained / "config.json").read_text())["run"]


def test_presets_dry_run(capsys):
    assert run_cli(["train", "--preset", "cifar10", "--dry-run"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["field"]["preset"] == "cifar10" and spec["train"]["batch_size"] == 512 and spec["train"]["grad_clip"] is None


@pytest.mark.parametrize("argv", [["train", "--sigma", "0"], ["evaluate", "--run", "{tmp}/corrupt"]])
def test_module_entry_point_has_no_traceback(argv, bad_files):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    argv = [a.format(tmp=bad_files) for a in argv]
    result = subprocess.run([sys.executable, "-m", "fluxmatch", *argv], capture_output=True, text=True, env=env, cwd=bad_files, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fluxmatch: error: ")


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_signal_checkpoints_the_current_step_and_says_how_to_resume(tmp_path, signal_name):
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    argv = ["train", "--steps", "100000", "--checkpoint-every", "100000", "--batch-size", "32", "--hidden", "8,8", "--out", "run", "--no-progress"]
    process = subprocess.Popen([sys.executable, "-m", "fluxmatch", *argv], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not (tmp_path / "run" / "log.csv").is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, process.communicate()
    process.send_signal(getattr(signal, signal_name))
    _, err = process.communicate(timeout=60)
    assert process.returncode == {"SIGTERM": 143, "SIGINT": 130}[signal_name], err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"{signal_name} received: stopped at step" in lines[0] and "fluxmatch train --out run --resume" in lines[0], err
    step = int(lines[0].split("stopped at step ")[1].split(",")[0])
    assert step >= 50 and json.loads((tmp_path / "run" / "trainer.json").read_text())["step"] == step
    resumed = subprocess.run([sys.executable, "-m", "fluxmatch", "train", "--out", "run", "--resume", "--steps", str(step + 5), "--eval-samples", "20", "--sample-steps", "5", "--no-progress"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]["resumed_from"] == step


def test_simulate_springs_writes_raw_trajectories_and_their_parameters(tmp_path, capsys):
    out = tmp_path / "springs.npz"
    assert run_cli(["simulate", "springs", "--n", "12", "--seed", "3", "--damping", "0.2", "--steps", "20", "--out", str(out)]) == 0
    assert "wrote 12 springs trajectories" in capsys.readouterr().out
    with np.load(out) as archive:
        assert archive["x"].shape == (12, 20, 4) and archive["x"].dtype == np.float32
        assert float(archive["damping"]) == 0.2 and int(archive["seed"]) == 3
        assert list(archive["feature_names"]) == ["q1", "v1", "q2", "v2"]
    first = out.read_bytes()
    assert run_cli(["simulate", "springs", "--n", "3", "--out", str(out)]) == 2  # an existing file is never replaced unasked
    assert out.read_bytes() == first
    assert run_cli(["simulate", "springs", "--n", "12", "--seed", "3", "--damping", "0.2", "--steps", "20", "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes() == first  # the same seed gives the same file


def test_train_on_a_trajectory_file_with_a_full_attention_transformer(tmp_path, capsys):
    data = tmp_path / "springs.npz"
    assert run_cli(["simulate", "springs", "--n", "40", "--steps", "8", "--out", str(data)]) == 0
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--no-causal", "--width", "8", "--heads", "2", "--depth", "1", "--steps", "4", "--batch-size", "16",
            "--sample-steps", "3", "--eval-samples", "8", "--snapshot-every", "2", "--out", str(out), "--no-progress"]
    assert run_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "springs residual" in printed and "trajectories.png" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["field"]["causal"] is False and config["field"]["backbone"]["type"] == "transformer"
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["model-0000002.safetensors", "model-0000004.safetensors"]
    assert np.load(out / "samples.npy").shape == (8, 8, 4)
