"""Run directories: nothing a user owns is replaced unless asked, and a replacement swaps in whole."""

import json
import os
import shutil
from dataclasses import replace

import numpy as np
import pytest

import fluxmatch as fm
from fluxmatch.errors import FluxMatchError
from fluxmatch.kinds.points import check_spread
from fluxmatch.run import directory
from fluxmatch.run import train as train_module

TINY = fm.RunSpec(
    data=fm.DataSpec("ring"), field=fm.FieldSpec(hidden=(8, 8)), train=fm.TrainSpec(steps=6, batch_size=32, checkpoint_every=3),
    sampler=fm.SamplerSpec(steps=5), evaluation=fm.EvalSpec(n=40),
)


def _files(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ring"
    fm.train_run(TINY, out, progress=False)
    return out


def test_a_new_path_or_an_empty_directory_is_trained_in_place(tmp_path):
    assert directory.training_dir(tmp_path / "new", resume=False, overwrite=False) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert directory.training_dir(tmp_path / "empty", resume=False, overwrite=False) == tmp_path / "empty"


def test_an_existing_run_is_refused_unless_resumed_or_replaced(run_dir):
    with pytest.raises(FluxMatchError, match="already holds a run: --resume continues it, --overwrite replaces it"):
        directory.training_dir(run_dir, resume=False, overwrite=False)
    assert directory.training_dir(run_dir, resume=True, overwrite=False) == run_dir
    stage = directory.training_dir(run_dir, resume=False, overwrite=True)
    try:
        assert stage.parent == run_dir.parent and stage.name.startswith(".ring.new-")
        assert [p.name for p in stage.iterdir()] == [directory.REPLACES] and directory.replacement_target(stage) == run_dir.resolve()
    finally:
        shutil.rmtree(stage)
    with pytest.raises(FluxMatchError, match="not both"):
        directory.training_dir(run_dir, resume=True, overwrite=True)


@pytest.mark.parametrize("overwrite", [False, True])
def test_what_is_not_a_run_is_never_replaced(tmp_path, overwrite):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(FluxMatchError, match="non-empty directory that is not a fluxmatch run"):
        directory.training_dir(mine, resume=False, overwrite=overwrite)
    (tmp_path / "file").write_text("keep")
    with pytest.raises(FluxMatchError, match="existing file, not a directory"):
        directory.training_dir(tmp_path / "file", resume=False, overwrite=overwrite)
    with pytest.raises(FluxMatchError, match="which is a file"):
        directory.training_dir(tmp_path / "file" / "sub", resume=False, overwrite=overwrite)
    with pytest.raises(FluxMatchError, match="nothing to resume"):
        directory.training_dir(mine, resume=True, overwrite=False)
    assert (mine / "notes.txt").read_text() == "keep" and (tmp_path / "file").read_text() == "keep"


def test_a_failed_replacement_leaves_the_old_run_whole(run_dir, monkeypatch):
    before = _files(run_dir)

    def fail(spec, out, resume, progress):
        (out / "log.csv").write_text("partial")
        raise FluxMatchError("injected failure")

    monkeypatch.setattr(train_module, "_train_into", fail)
    with pytest.raises(FluxMatchError, match="injected failure"):
        fm.train_run(TINY, run_dir, progress=False, overwrite=True)
    assert _files(run_dir) == before
    assert not [p for p in run_dir.parent.iterdir() if p.name.startswith(".ring.")], "a replacement without a checkpoint is cleaned up"


def test_a_replacement_swaps_in_whole(tmp_path):
    out = tmp_path / "ring"
    fm.train_run(TINY, out, progress=False)
    fm.train_run(replace(TINY, train=replace(TINY.train, seed=1)), out, progress=False, overwrite=True)
    assert json.loads((out / "config.json").read_text())["run"]["train"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ring"]


def test_resuming_refuses_changed_settings_and_accepts_more_steps(tmp_path):
    out = tmp_path / "ring"
    fm.train_run(TINY, out, progress=False)
    for changed, flag in ((replace(TINY, train=replace(TINY.train, lr=0.01)), "--lr"), (replace(TINY, data=fm.DataSpec("8gaussians")), "--data"),
                          (replace(TINY, train=replace(TINY.train, batch_size=16)), "--batch-size"), (replace(TINY, train=replace(TINY.train, seed=3)), "--seed")):
        with pytest.raises(FluxMatchError, match=f"cannot resume .* with different settings \\({flag} was"):
            fm.train_run(replace(changed, train=replace(changed.train, steps=9)), out, resume=True, progress=False)
    metrics = fm.train_run(replace(TINY, train=replace(TINY.train, steps=9)), out, resume=True, progress=False)
    assert metrics["train"]["resumed_from"] == 6 and metrics["train"]["steps"] == 9


def test_a_changed_data_file_is_refused_at_evaluation_and_resume(tmp_path):
    path = tmp_path / "points.npy"
    rows = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    np.save(path, rows)
    spec = replace(TINY, data=fm.DataSpec(str(path)))
    fm.train_run(spec, tmp_path / "run", progress=False)
    assert np.isfinite(fm.evaluate_run(tmp_path / "run", n=20)["w2"])
    np.save(path, rows[::-1].copy())  # the same rows, reordered: the rebuilt split would mix training rows in
    with pytest.raises(FluxMatchError, match="has changed since the run .* was trained on it"):
        fm.evaluate_run(tmp_path / "run", n=20)
    with pytest.raises(FluxMatchError, match="differs from the data the run was trained on"):
        fm.train_run(replace(spec, train=replace(spec.train, steps=9)), tmp_path / "run", resume=True, progress=False)


def test_point_data_without_spread_or_far_from_unit_scale_is_refused():
    import torch

    with pytest.raises(FluxMatchError, match="every row of const is the same point"):
        check_spread(torch.ones(50, 2), "const")
    with pytest.raises(FluxMatchError, match="outside \\[0.001, 1000\\].*standardise it first"):
        check_spread(torch.randn(50, 2) * 1e6, "big")
    with pytest.raises(FluxMatchError, match="outside"):
        check_spread(torch.randn(50, 2) * 1e-5, "small")
    assert 0.5 < check_spread(torch.randn(500, 2), "unit") < 2


def test_sample_refuses_a_symlink_or_directory_before_sampling(run_dir, tmp_path, monkeypatch):
    target = tmp_path / "target.npy"
    target.write_bytes(b"mine")
    os.symlink(target, tmp_path / "link.npy")
    (tmp_path / "dir.npy").mkdir()
    monkeypatch.setattr("fluxmatch.run.evaluate.draw", lambda *a, **k: pytest.fail("sampled before checking --out"))
    with pytest.raises(FluxMatchError, match="is a symlink"):
        fm.sample_run(run_dir, n=5, out=tmp_path / "link.npy")
    with pytest.raises(FluxMatchError, match="is a directory"):
        fm.sample_run(run_dir, n=5, out=tmp_path / "dir.npy")
    assert target.read_bytes() == b"mine" and (tmp_path / "link.npy").is_symlink()


def test_a_study_refuses_a_non_empty_directory_unless_overwriting(tmp_path):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "x").write_text("")
    with pytest.raises(FluxMatchError, match="not empty: --overwrite replaces"):
        directory.study_dir(tmp_path / "study", overwrite=False)
    assert directory.study_dir(tmp_path / "study", overwrite=True) == tmp_path / "study"


def test_compare_refuses_image_data(tmp_path):
    from fluxmatch.compare import CompareSettings, compare_objectives

    with pytest.raises(FluxMatchError, match="compare compares fields on points data"):
        compare_objectives(CompareSettings(data="digits", objectives="dsm", steps=2), tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()


def test_an_interrupted_replacement_resumes_in_its_staging_directory_and_swaps_in(tmp_path, monkeypatch):
    import signal
    from pathlib import Path

    from fluxmatch.data import DataSource
    from fluxmatch.errors import TrainingInterrupted

    out = tmp_path / "ring"
    fm.train_run(TINY, out, progress=False)
    before = _files(out)
    spec = replace(TINY, train=replace(TINY.train, seed=1, steps=12, checkpoint_every=100))
    original, calls = DataSource.sample_batch, []

    def batch(self, b, generator=None):
        calls.append(b)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C during the fifth step
        return original(self, b, generator)

    monkeypatch.setattr(DataSource, "sample_batch", batch)
    with pytest.raises(TrainingInterrupted) as stop:
        fm.train_run(spec, out, progress=False, overwrite=True)
    stage = Path(stop.value.run_dir)
    assert stop.value.step == 5 and stage.name.startswith(".ring.new-") and _files(out) == before
    monkeypatch.setattr(DataSource, "sample_batch", original)
    metrics = fm.train_run(spec, stage, resume=True, progress=False)
    assert metrics["train"]["resumed_from"] == 5 and not stage.exists()
    assert json.loads((out / "config.json").read_text())["run"]["train"]["seed"] == 1
    assert not (out / directory.REPLACES).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ring"]


def test_a_replacement_waits_for_no_one_a_run_in_use_is_refused(run_dir):
    from fluxmatch.train.trainer import RunLock

    before = _files(run_dir)
    with RunLock(run_dir), pytest.raises(FluxMatchError, match="is in use: another trainer"):
        fm.train_run(TINY, run_dir, progress=False, overwrite=True)
    assert {k: v for k, v in _files(run_dir).items() if k.name != ".lock"} == before
    assert not [p for p in run_dir.parent.iterdir() if p.name.startswith(".ring.")]


def test_overwrite_keeps_files_that_are_not_the_runs(tmp_path):
    out = tmp_path / "ring"
    fm.train_run(TINY, out, progress=False)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FluxMatchError, match="would delete files in .* that are not part of its run \\(notes.txt\\)"):
        fm.train_run(TINY, out, progress=False, overwrite=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")  # another program's config.json does not make a run
    with pytest.raises(FluxMatchError, match="not a fluxmatch run"):
        fm.train_run(TINY, other, progress=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (other / "config.json").read_text() == "{}"
