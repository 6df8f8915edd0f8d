"""`fluxmatch evaluate --inception-weights W --fid-reference R`: FID and Inception Score of image runs.

The error paths need no torch-fidelity: every one is refused before sampling (sampling is made
to fail here to prove it). The end-to-end test uses torch-fidelity with a stub torchvision where
the real one does not import (the `fidelity_kit` fixture in tests/conftest.py) and seeded random Inception
weights: it checks the plumbing (keys, pixel conversion), not the values.
"""

import json
import sys

import numpy as np
import pytest
import torch

from fluxmatch.cli import main

pytestmark = pytest.mark.slow  # trains a tiny digits run

TINY = ["--steps", "3", "--batch-size", "16", "--eval-samples", "8", "--sample-steps", "2", "--nll-samples", "0", "--no-progress"]
FIDELITY_KEYS = {"fid", "inception_score_mean", "inception_score_std", "inception_score_splits", "fid_n"}


def run_cli(argv):
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny digits run, a tiny ring run, and files: {"digits", "ring", "tmp", "fake_weights", "stats"}."""
    tmp = tmp_path_factory.mktemp("fidelity-cli")
    mp = pytest.MonkeyPatch()
    mp.setenv("FLUXMATCH_CACHE", str(tmp / "cache"))  # the digits classifier cache, never the user's home
    assert run_cli(["train", "--data", "digits", "--objective", "flux", "--seed", "0", "--out", str(tmp / "digits"), *TINY]) == 0
    assert run_cli(["train", "--data", "ring", "--steps", "5", "--batch-size", "32", "--hidden", "8,8", "--eval-samples", "50", "--sample-steps", "5", "--out", str(tmp / "ring"), "--no-progress"]) == 0
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, tmp / "fc.pth")  # passes the weights check without being the network
    np.savez(tmp / "stats.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    yield {"digits": tmp / "digits", "ring": tmp / "ring", "tmp": tmp, "fake_weights": tmp / "fc.pth", "stats": tmp / "stats.npz"}
    mp.undo()


@pytest.fixture
def no_sampling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("sampled before checking the FID options")

    monkeypatch.setattr("fluxmatch.run.evaluate.draw", refuse)


ERRORS = {
    "weights without reference": (["--inception-weights", "{fake_weights}"], "--inception-weights needs --fid-reference"),
    "reference without weights": (["--fid-reference", "{stats}"], "--fid-reference needs --inception-weights"),
    "fid-n alone": (["--fid-n", "8"], "--fid-n needs --inception-weights and --fid-reference"),
    "precision-recall alone": (["--precision-recall"], "--precision-recall needs --inception-weights and --fid-reference"),
    "missing weights": (["--inception-weights", "{tmp}/nowhere.pth", "--fid-reference", "{stats}"], "nowhere.pth do not exist"),
    "weights a directory": (["--inception-weights", "{tmp}", "--fid-reference", "{stats}"], "is not a file"),
    "missing reference": (["--inception-weights", "{fake_weights}", "--fid-reference", "{tmp}/nowhere.npz"], "nowhere.npz does not exist"),
    "reference of a wrong format": (["--inception-weights", "{fake_weights}", "--fid-reference", "{fake_weights}"], "must be an .npz"),
    "precision-recall with statistics": (["--inception-weights", "{fake_weights}", "--fid-reference", "{stats}", "--precision-recall"], "holds statistics"),
    "fid-n below 2": (["--inception-weights", "{fake_weights}", "--fid-reference", "{stats}", "--fid-n", "1"], "--fid-n must be an integer ≥ 2"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_fid_options_are_one_line_errors(case, runs, no_sampling, capsys):
    options, message = ERRORS[case]
    argv = ["evaluate", "--run", str(runs["digits"]), "--n", "8", *(o.format(**runs) for o in options)]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fluxmatch: error:") and len(err.splitlines()) == 1 and message in err, err


def test_fid_is_for_image_runs(runs, no_sampling, capsys):
    assert run_cli(["evaluate", "--run", str(runs["ring"]), "--inception-weights", str(runs["fake_weights"]), "--fid-reference", str(runs["stats"])]) == 2
    assert "FID and Inception Score are for image runs" in capsys.readouterr().err


def test_missing_torch_fidelity_names_the_extra(runs, no_sampling, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    assert run_cli(["evaluate", "--run", str(runs["digits"]), "--inception-weights", str(runs["fake_weights"]), "--fid-reference", str(runs["stats"])]) == 2
    assert "pip install 'fluxmatch[fid]'" in capsys.readouterr().err


@pytest.fixture
def fidelity_importable(monkeypatch, fidelity_kit):
    """torch-fidelity imported under the stub where needed, and forgotten afterwards."""
    before = set(sys.modules)
    fidelity_kit.torchvision_stub(monkeypatch)
    yield pytest.importorskip("torch_fidelity")
    for name in set(sys.modules) - before:
        if name.split(".")[0] == "torch_fidelity":
            del sys.modules[name]


def test_evaluate_adds_fid_and_inception_score(runs, fidelity_importable, fidelity_kit, capsys):
    fidelity_kit.random_inception_weights(runs["tmp"] / "inception.pth")
    reference = runs["tmp"] / "reference.npy"
    np.save(reference, np.random.default_rng(0).integers(0, 256, (6, 8, 8, 1), dtype=np.uint8))  # grey, channels-last
    argv = ["evaluate", "--run", str(runs["digits"]), "--n", "8", "--fid-n", "6", "--steps", "2", "--inception-weights", str(runs["tmp"] / "inception.pth"), "--fid-reference", str(reference), "--precision-recall", "--no-progress"]
    assert run_cli(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert FIDELITY_KEYS | {"precision", "recall", "fd_digits"} <= set(metrics) and metrics["fid_n"] == 6 and metrics["n"] == 8
    assert np.isfinite(metrics["fid"]) and metrics["inception_score_mean"] >= 1 - 1e-6


def test_samples_become_uint8_pixels(runs):
    from fluxmatch.run import open_run
    from fluxmatch.run.evaluate import uint8_pixels

    run = open_run(runs["digits"])
    pixels = uint8_pixels(run, np.array([-1.0, 0.0, 1.0, 2.0], dtype=np.float32).reshape(1, 1, 2, 2))
    assert pixels.dtype == np.uint8 and pixels.ravel().tolist() == [0, 128, 255, 255]  # digits: model −1..1 ↔ 0..16 ↔ 0..255
