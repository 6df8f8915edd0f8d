"""The structure and DAG studies end to end at toy size (their figures are experiments, not tests)."""

import json

import numpy as np
import pytest

from fluxmatch.cli import main
from fluxmatch.errors import FluxMatchError
from fluxmatch.experiments import StructureSettings, run_dag, run_structure
from fluxmatch.experiments.dag import closure_graph
from fluxmatch.experiments.structure import FULL, variant_spec

pytestmark = pytest.mark.slow  # every test here trains models

TOY = StructureSettings(steps=4, batch_size=16, width=8, depth=1, heads=2, n_train=40, n=12, evaluations=2, sample_steps=3)


def test_the_structure_study_writes_every_variant_and_its_curves(tmp_path):
    report = run_structure(out=tmp_path, settings=TOY, progress=False)
    assert set(report["rows"]) == {"flux-causal", "flux-full", "dsm-causal", "dsm-full"}
    for label, row in report["rows"].items():
        assert row["curve"]["steps"] == [2, 4] and row["w2"] == row["curve"]["w2"][-1]
        assert np.isfinite(row["dynamics_relative_rms"]) and row["data_dynamics_relative_rms"] < 1e-5
        assert np.load(tmp_path / label / "samples.npy").shape == (12, 50, 4)
        causal = json.loads((tmp_path / label / "config.json").read_text())["run"]["field"]["causal"]
        assert causal == label.endswith("causal")
    assert np.isfinite(report["floor_w2"]) and report["ratios"]["best_variant"] in report["rows"]
    assert {"flux_causal_vs_best", "dsm_causal_vs_flux_causal", "flux_causal_dynamics_vs_data"} <= set(report["ratios"])
    for name in ("structure.json", "w2.png", "trajectories.png", "springs.gif"):
        assert (tmp_path / name).is_file()


def test_the_full_preset_is_the_official_size():
    spec = variant_spec(FULL, "flux", True)
    assert (spec.field.width, spec.field.depth, spec.field.heads, spec.train.steps, spec.train.device) == (512, 12, 8, 10000, "cuda")
    assert spec.objective.sigma_distribution == "loguniform" and spec.train.batch_size == 256


def test_bad_structure_settings_are_refused(tmp_path):
    with pytest.raises(FluxMatchError, match="unknown structure variant"):
        run_structure(out=tmp_path, settings=TOY, variants=("flux-sideways",))
    with pytest.raises(FluxMatchError, match="at most one evaluation per step"):
        StructureSettings(steps=3, evaluations=5)


def test_the_dag_study_masks_the_field_and_measures_its_pattern(tmp_path, capsys):
    assert closure_graph("0>1,1>2") == "0>1,0>2,1>2"
    assert main(["experiment", "dag", "--steps", "4", "--n", "40", "--out", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "flux-dag" in printed and "outside_causal_order" in printed
    report = json.loads((tmp_path / "dag.json").read_text())
    for label, row in report["rows"].items():
        pattern = np.array(row["jacobian"])
        assert pattern.shape == (3, 3) and np.isfinite(row["w2"])
        if label.endswith("dag"):
            assert row["outside_causal_order"] == 0.0 and np.triu(pattern, 1).max() == 0.0
        else:
            assert row["outside_causal_order"] > 0.0
    assert (tmp_path / "jacobians.png").is_file()


def test_the_dag_study_runs_from_python(tmp_path):
    report = run_dag(out=tmp_path, steps=3, n=30, rows=400, progress=False)
    assert report["field_graph"] == "0>1,0>2,1>2" and len(report["rows"]) == 4
