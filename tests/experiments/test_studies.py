"""The studies run end to end at toy size and write what they promise (their figures are benchmarks)."""

import json

import pytest

from fluxmatch.cli import main
from fluxmatch.experiments import run_controllable, run_mixing
from fluxmatch.experiments.mixing import Chains

pytestmark = pytest.mark.slow  # every test here trains a model


def test_mixing_study_writes_curves(tmp_path):
    report = run_mixing(out=tmp_path, steps=5, datasets=("8gaussians",), n=60, chains=Chains(checkpoints=(0, 5, 20)), progress=False)
    r = report["8gaussians"]
    assert set(r["curves"]) == {"dsm", "flux", "flux+mixing"}
    assert r["curves"]["dsm"]["steps"] == [0, 5, 20] and r["target_w2"] == r["curves"]["dsm"]["distances"][-1]
    assert r["steps_to_target"]["dsm"] <= 20
    assert (tmp_path / "mixing.png").is_file() and json.loads((tmp_path / "mixing.json").read_text())["8gaussians"]
    config = json.loads((tmp_path / "8gaussians" / "flux-mixing" / "config.json").read_text())
    assert config["objective"]["name"] == "designed" and config["objective"]["terms"][0]["kind"] == "mixing"
    assert config["run"]["objective"]["design"] == {"mixing": 0.01}


def test_mixing_study_on_the_digits_measures_fd_against_nfe(tmp_path, capsys):
    """The images mode: split-estimator flux (+ mixing on its flux head) against DSM, predictor-corrector at IMAGE_LEVELS."""
    from fluxmatch.experiments.mixing import IMAGE_LEVELS

    assert main(["experiment", "mixing", "--data", "digits", "--steps", "3", "--n", "40", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "predictor-corrector NFE to reach it" in capsys.readouterr().out
    r = json.loads((tmp_path / "mixing.json").read_text())["digits"]
    assert r["levels"] == list(IMAGE_LEVELS) and r["target_fd"] == r["curves"]["dsm"]["fd_digits"][-1]
    assert r["curves"]["dsm"]["nfe"] == [2 * k - 1 for k in IMAGE_LEVELS] and r["nfe_to_target"]["dsm"] <= r["target_nfe"]
    config = json.loads((tmp_path / "digits" / "flux-mixing" / "config.json").read_text())
    assert config["run"]["objective"]["estimator"] == "split" and config["objective"]["base"]["estimator"]["kind"] == "split"
    assert (tmp_path / "mixing.png").is_file()


def test_controllable_study_measures_every_field(tmp_path):
    sweep = (("flux", None, 0.0), ("flux", "rotation", 0.1))
    report = run_controllable(out=tmp_path, steps=5, sweep=sweep, n=80, chains=(40, 0.02), progress=False)
    assert [row["label"] for row in report["rows"]] == ["flux", "flux+rotation 0.1"]
    for row in report["rows"]:
        assert {"w2", "mixing_speed", "cycle_alignment", "skewness"} <= set(row)
        assert -1.0 <= row["cycle_alignment"] <= 1.0 and row["skewness"] >= 0
    assert (tmp_path / "frontier.png").is_file() and (tmp_path / "fields.png").is_file()


def test_spiral_cli(tmp_path, capsys):
    assert main(["experiment", "spiral", "--steps", "5", "--n", "100", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "flux+rotation" in out and "dsm+rotation" in out
    assert (tmp_path / "spiral.json").is_file() and (tmp_path / "samples.png").is_file()


def test_controllable_takes_no_weight(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["experiment", "controllable", "--weight", "0.1", "--out", str(tmp_path)])
    assert "sweeps its own weights" in capsys.readouterr().err
