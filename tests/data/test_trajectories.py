"""Trajectory sources: z-scoring (undone exactly), simulated springs with fresh held-out draws,
(N, T, D) files with a held-out split, and one clear error for each kind of bad input."""

import numpy as np
import pytest
import torch

from fluxmatch.data.springs import SpringParams, save_springs, simulate_springs
from fluxmatch.data.trajectories import check_trajectories, file_source, is_trajectory_file, springs_source, to_model, to_raw, zscore_units
from fluxmatch.errors import FluxMatchError


def test_zscore_is_per_feature_over_samples_and_time_and_is_undone_exactly():
    raw = simulate_springs(300, seed=1)
    units = zscore_units(raw, ("q1", "v1", "q2", "v2"))
    model = to_model(raw, units)
    flat = model.double().reshape(-1, 4)
    assert torch.allclose(flat.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(flat.std(0, unbiased=False), torch.ones(4, dtype=torch.float64), atol=1e-5)
    # float32 round trip: relative error of a few ulps of the raw values
    assert np.allclose(to_raw(model.numpy(), units), raw.numpy(), rtol=1e-5, atol=1e-5 * float(raw.abs().max()))
    assert units["features"] == ["q1", "v1", "q2", "v2"]


def test_springs_source_trains_on_a_fixed_set_and_holds_out_fresh_simulations():
    source = springs_source(200, seed=0)
    assert source.dim == (50, 4) and len(source) == 200 and source.simulated
    again = springs_source(200, seed=0)
    assert torch.equal(source.data, again.data)
    assert source.fingerprint() == again.fingerprint()
    held = source.holdout(100, seed=0)
    assert held.shape == (100, 50, 4)
    assert torch.equal(held, source.holdout(100, seed=0))  # reproducible for a seed
    assert not torch.equal(held, source.holdout(100, seed=1))
    # no held-out trajectory starts where a training trajectory starts
    starts = source.data[:, 0]
    assert torch.cdist(held[:, 0], starts).min() > 1e-4
    # the held-out draws are in the training set's model units (z-scored with its statistics)
    assert abs(float(held.reshape(-1, 4).mean())) < 0.2


def test_a_file_of_trajectories_keeps_a_held_out_split_and_its_parameters(tmp_path):
    path = save_springs(tmp_path / "springs.npz", 100, seed=3, params=SpringParams(damping=0.2, steps=20))
    assert is_trajectory_file(path)
    source = file_source(path, seed=0, holdout_fraction=0.2, n=None)
    assert source.dim == (20, 4) and len(source) == 80 and source.held_out.shape == (20, 20, 4)
    assert source.params == SpringParams(damping=0.2, steps=20)
    raw = np.load(path)["x"]
    back = np.sort(np.concatenate([source.raw(source.data), source.raw(source.held_out)]).reshape(100, -1), axis=0)
    assert np.allclose(back, np.sort(raw.reshape(100, -1), axis=0), atol=1e-4)


def test_the_statistics_come_from_the_training_rows_only(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 4, 2)).astype(np.float32)
    x[:, :, 0] += np.arange(50, dtype=np.float32)[:, None]  # rows differ in mean, so a split changes the statistics
    np.save(tmp_path / "t.npy", x)
    source = file_source(tmp_path / "t.npy", seed=0, holdout_fraction=0.4, n=None)
    train_raw = source.raw(source.data).reshape(-1, 2)
    assert np.allclose(source.units["mean"], train_raw.mean(0), atol=1e-4)
    assert abs(source.units["mean"][0] - float(x[:, :, 0].mean())) > 0.05  # all rows' mean would be another (seed 0's split: by 0.22)


def test_a_plain_npy_of_trajectories_is_a_trajectory_file(tmp_path):
    np.save(tmp_path / "t.npy", np.random.default_rng(0).normal(size=(30, 5, 3)).astype(np.float32))
    np.save(tmp_path / "p.npy", np.zeros((30, 3), np.float32))
    assert is_trajectory_file(tmp_path / "t.npy") and not is_trajectory_file(tmp_path / "p.npy")
    source = file_source(tmp_path / "t.npy", seed=0, holdout_fraction=0.2, n=None)
    assert source.params is None and source.units["features"] == ["x1", "x2", "x3"]


def test_bad_trajectories_are_refused():
    with pytest.raises(FluxMatchError, match=r"shape \(N, T, D\)"):
        check_trajectories(torch.zeros(5, 4), "data.npy")
    with pytest.raises(FluxMatchError, match="at least 2 time steps"):
        check_trajectories(torch.zeros(5, 1, 4), "data.npy")


def test_a_corrupt_npz_is_not_taken_for_trajectories(tmp_path):
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    assert not is_trajectory_file(tmp_path / "broken.npz")


def test_a_file_with_nan_is_refused(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 6, 2)).astype(np.float32)
    x[3, 2, 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(FluxMatchError, match="NaN or inf"):
        file_source(tmp_path / "nan.npy", seed=0, holdout_fraction=0.2, n=None)
