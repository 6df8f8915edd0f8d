"""`fluxmatch compare`: every objective on the same data and budget, well-formed outputs."""

import json
import math

import pytest

from fluxmatch.cli import main
from fluxmatch.compare import CompareSettings, compare_objectives, format_table
from fluxmatch.errors import FluxMatchError

pytestmark = pytest.mark.slow  # every test here trains a model

TINY = dict(steps=25, batch_size=64, hidden=(16, 16), n_eval=120, sample_steps=40, step_size=0.01)
PER_OBJECTIVE = {"w2", "sliced_w2", "mmd", "energy", "floor_w2", "floor_sliced_w2", "floor_mmd", "floor_energy", "train_wall_s", "sample_wall_s", "nfe", "sampler"}


def test_compare_writes_well_formed_json_and_figures(tmp_path):
    report = compare_objectives(CompareSettings(data="ring", objectives="flux,dsm,flow", seed=1, nfe=(2, 5), **TINY), tmp_path, progress=False)
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["objectives"].keys() == {"flux", "dsm", "flow"}
    for name, row in saved["objectives"].items():
        assert row.keys() >= PER_OBJECTIVE, name
        assert all(math.isfinite(row[k]) for k in ("w2", "floor_w2", "train_wall_s", "sample_wall_s"))
    assert saved["objectives"]["flux"]["nfe"] == 40 and saved["objectives"]["flow"]["nfe"] == 100
    assert set(saved["nfe_curve"]["flow"]) == {"2", "5"}
    for name in ("comparison.png", "nfe.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    for name in ("flux", "dsm", "flow"):
        assert (tmp_path / name / "model.safetensors").is_file()
    assert "flow" in format_table(report)


def test_compare_cli_and_bad_objective(tmp_path, capsys):
    argv = ["compare", "--data", "ring", "--objectives", "dsm,flow", "--steps", "15", "--batch-size", "64", "--hidden", "16,16",
            "--eval-samples", "100", "--sample-steps", "30", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    assert "W2" in capsys.readouterr().out
    assert json.loads((tmp_path / "comparison.json").read_text())["objectives"].keys() == {"dsm", "flow"}
    with pytest.raises(FluxMatchError, match="unknown objective"):
        compare_objectives(CompareSettings(data="ring", objectives="flux,gan", **TINY), tmp_path / "x", progress=False)


def test_compare_noise_annealed(tmp_path):
    report = compare_objectives(CompareSettings(data="8gaussians", objectives="flux,dsm", noise="annealed", nfe=(3,), **TINY), tmp_path, progress=False)
    assert report["objectives"]["flux"]["nfe"] == 35 and "PF-ODE heun" in report["objectives"]["dsm"]["sampler"]
    assert set(report["nfe_curve"]["flux"]) == {"3"}
