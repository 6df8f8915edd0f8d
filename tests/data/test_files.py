"""User data files, load_data specs and DataSource splits."""

import numpy as np
import pytest
import torch

from fluxmatch.data import DataSource, load_array, load_data
from fluxmatch.data.files import validate_data
from fluxmatch.errors import FluxMatchError


@pytest.fixture
def points():
    return np.random.default_rng(0).normal(size=(50, 3)).astype(np.float64)


def test_npy_round_trip_any_shape(tmp_path):
    images = np.random.default_rng(1).random((7, 1, 4, 4)).astype(np.float32)
    np.save(tmp_path / "img.npy", images)
    x = load_array(tmp_path / "img.npy")
    assert x.dtype == torch.float32 and x.shape == (7, 1, 4, 4) and x.is_contiguous()
    assert np.array_equal(x.numpy(), images)


def test_one_dimensional_array_becomes_column(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(5.0))
    assert load_array(str(tmp_path / "v.npy")).shape == (5, 1)


def test_npz_single_and_keyed(tmp_path, points):
    np.savez(tmp_path / "one.npz", whatever=points)
    assert np.allclose(load_array(tmp_path / "one.npz").numpy(), points, atol=1e-6)
    np.savez(tmp_path / "many.npz", labels=np.arange(50), samples=points)
    assert load_array(tmp_path / "many.npz").shape == (50, 3)
    np.savez(tmp_path / "ambiguous.npz", a=points, b=points)
    with pytest.raises(FluxMatchError, match="several arrays.*a, b"):
        load_array(tmp_path / "ambiguous.npz")


def test_csv_with_and_without_header(tmp_path, points):
    np.savetxt(tmp_path / "plain.csv", points, delimiter=",")
    np.savetxt(tmp_path / "header.csv", points, delimiter=",", header="x,y,z", comments="")
    for name in ("plain.csv", "header.csv"):
        x = load_array(tmp_path / name)
        assert x.shape == (50, 3)
        assert np.allclose(x.numpy(), points, atol=1e-6)


def test_single_column_csv(tmp_path):
    (tmp_path / "col.csv").write_text("value\n1\n2\n3\n")
    assert load_array(tmp_path / "col.csv").tolist() == [[1.0], [2.0], [3.0]]


@pytest.mark.parametrize(
    "content, match",
    [
        ("x,y\n1,2\n3,abc\n", "non-numeric"),
        ("1,2\n3,4,5\n", "non-numeric or ragged"),
        ("", "empty"),
        ("x,y\n", "no data rows"),
        ("1,2\nnan,3\n4,5\ninf,1\n", r"2 row\(s\) with NaN or inf.*row 1\)"),
    ],
)
def test_bad_csv(tmp_path, content, match):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(FluxMatchError, match=match):
        load_array(tmp_path / "bad.csv")


def test_missing_file_and_extension(tmp_path):
    with pytest.raises(FluxMatchError, match="not found.*nope.npy"):
        load_array(tmp_path / "nope.npy")
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(FluxMatchError, match="extension '.txt'"):
        load_array(tmp_path / "data.txt")


def test_bad_npy_contents(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 2)))
    with pytest.raises(FluxMatchError, match="empty"):
        load_array(tmp_path / "empty.npy")
    x = np.ones((6, 2))
    x[4, 1] = np.inf
    np.save(tmp_path / "inf.npy", x)
    with pytest.raises(FluxMatchError, match=r"1 row\(s\).*row 4"):
        load_array(tmp_path / "inf.npy")
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    with pytest.raises(FluxMatchError, match="expected real numbers"):
        load_array(tmp_path / "text.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FluxMatchError, match="not a numeric"):
        load_array(tmp_path / "objects.npy")
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(FluxMatchError):
        load_array(tmp_path / "junk.npy")


def test_validate_data_tensors():
    assert validate_data(torch.arange(6, dtype=torch.float64).reshape(3, 2).T, "t").is_contiguous()
    with pytest.raises(FluxMatchError, match="single number"):
        validate_data(np.float32(3), "s")
    with pytest.raises(FluxMatchError, match="NaN or inf"):
        validate_data(np.array([[1e300, 0.0]]), "overflow")  # inf once cast to float32
    with pytest.raises(FluxMatchError, match="complex"):
        validate_data(np.ones(3, dtype=complex), "c")


def test_load_data_toy_and_file(tmp_path, points):
    ring = load_data("ring")
    assert ring.shape == (20000, 2)
    assert torch.equal(load_data("ring", 100, seed=3), load_data("ring", 100, seed=3))
    np.save(tmp_path / "p.npy", points)
    assert load_data(str(tmp_path / "p.npy")).shape == (50, 3)
    sub = load_data(tmp_path / "p.npy", n=10, seed=1)
    assert sub.shape == (10, 3) and torch.equal(sub, load_data(tmp_path / "p.npy", n=10, seed=1))
    # Rows of the subset are rows of the file, without repeats.
    full = load_array(tmp_path / "p.npy")
    assert len({tuple(r) for r in sub.tolist()}) == 10
    assert all(any(torch.equal(r, f) for f in full) for r in sub)
    assert load_data(tmp_path / "p.npy", n=500).shape == (50, 3)


def test_load_data_unknown_spec():
    with pytest.raises(FluxMatchError, match=r"unknown data set 'mnist': expected one of ring.*\.npy/\.npz/\.csv"):
        load_data("mnist")
    with pytest.raises(FluxMatchError, match="positive integer"):
        load_data("ring", n=0)


def test_data_source_toy_is_infinite():
    src = DataSource.from_spec("moons", seed=0, n=500)
    assert src.is_toy and src.dim == (2,) and src.data.shape == (500, 2) and src.held_out is None
    g = torch.Generator().manual_seed(0)
    a, b = src.batch(64, g), src.batch(64, g)
    assert a.shape == (64, 2) and not torch.equal(a, b)
    h = src.holdout(300, seed=0)
    assert h.shape == (300, 2) and torch.equal(h, src.holdout(300, seed=0))
    # The held-out stream is not a replay of the draws that made `data`.
    assert not torch.equal(h, src.data[:300])


def test_data_source_file_keeps_holdout_apart(tmp_path):
    rows = np.arange(100, dtype=np.float32)[:, None] * np.ones((1, 2), dtype=np.float32)
    np.save(tmp_path / "d.npy", rows)
    src = DataSource.from_spec(tmp_path / "d.npy", seed=0)
    assert not src.is_toy and len(src) == 80 and src.held_out.shape == (20, 2) and src.dim == (2,)
    train_ids = set(src.data[:, 0].tolist())
    held_ids = set(src.held_out[:, 0].tolist())
    assert not train_ids & held_ids and len(train_ids | held_ids) == 100
    drawn = src.batch(2000, torch.Generator().manual_seed(1))
    assert set(drawn[:, 0].tolist()) <= train_ids
    assert set(src.holdout(10, seed=2)[:, 0].tolist()) <= held_ids
    assert src.holdout(1000).shape == (20, 2)
    assert torch.equal(DataSource.from_spec(tmp_path / "d.npy", seed=0).data, src.data)

    no_split = DataSource.from_spec(tmp_path / "d.npy", holdout_fraction=0)
    assert len(no_split) == 100
    with pytest.raises(FluxMatchError, match="no held-out rows"):
        no_split.holdout(5)
    with pytest.raises(FluxMatchError, match=r"\[0, 1\)"):
        DataSource.from_spec(tmp_path / "d.npy", holdout_fraction=1.0)
    with pytest.raises(FluxMatchError, match="unknown data set"):
        DataSource.from_spec(tmp_path / "missing.npy")
