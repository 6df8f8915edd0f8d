"""FID, Inception Score and precision/recall through torch-fidelity (fluxmatch.metrics.fidelity).

No weights are downloaded: a seeded random InceptionV3 state dict (Kaiming-normal convolutions,
so that the features are O(1) rather than vanishing) is saved once per module in torch-fidelity's
format, and the Inception features of two sets of 8 random 32×32 images are computed once per
module. torchvision cannot import beside this CPU torch build, and torch-fidelity imports it at
package import without using it for the InceptionV3 or the metric math; where the real
torchvision fails to import, a stub package with just the names torch-fidelity reads at import
time stands in for it. The error-message tests need neither torch-fidelity nor the stub.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.metrics.fidelity import (
    FidelityConfig,
    check_fidelity,
    fidelity_from_features,
    image_fidelity,
    inception_features,
    load_reference,
    require_fidelity,
    save_reference_statistics,
)

N_IMAGES = 8
# FID of a set against itself is 0 in exact arithmetic; torch-fidelity takes the trace of
# sqrt(Σ₁Σ₂) from the eigenvalues of a product of rank-deficient covariances (N = 8 ≪ 2048), which
# leaves an error of order 1e-6 of trace(Σ): we allow 1e-5 · (1 + trace Σ).
FID_SELF_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def fidelity(tmp_path_factory, fidelity_kit):
    """torch-fidelity importable (the stub where needed), random weights on disk, two image sets
    and their features: a dict with ``weights``, ``a``, ``b`` (uint8 (8, 3, 32, 32)), ``fa``, ``fb``."""
    with pytest.MonkeyPatch.context() as mp:
        before = set(sys.modules)
        fidelity_kit.torchvision_stub(mp)
        pytest.importorskip("torch_fidelity")
        root = tmp_path_factory.mktemp("fidelity")
        weights = root / "inception.pth"
        fidelity_kit.random_inception_weights(weights)
        generator = torch.Generator().manual_seed(0)
        a = torch.randint(0, 256, (N_IMAGES, 3, 32, 32), dtype=torch.uint8, generator=generator)
        b = torch.randint(0, 256, (N_IMAGES, 3, 32, 32), dtype=torch.uint8, generator=generator)
        config = FidelityConfig(weights, batch_size=N_IMAGES)
        yield {"root": root, "weights": weights, "a": a, "b": b, "fa": inception_features(a, config, progress=False), "fb": inception_features(b, config, progress=False)}
        for name in set(sys.modules) - before:  # torch_fidelity bound to the stub goes with it
            if name.split(".")[0] == "torch_fidelity":
                del sys.modules[name]


def test_features_have_their_shapes_and_do_not_depend_on_the_batch(fidelity):
    fa = fidelity["fa"]
    assert fa["pool"].shape == (N_IMAGES, 2048) and fa["logits_unbiased"].shape == (N_IMAGES, 1008)
    assert fa["pool"].dtype == np.float32 and 0.01 < fa["pool"].std() < 100  # O(1), not vanished
    again = inception_features(fidelity["a"][:3].permute(0, 2, 3, 1).numpy(), FidelityConfig(fidelity["weights"], batch_size=2), progress=False)
    np.testing.assert_allclose(again["pool"], fa["pool"][:3], rtol=1e-4, atol=1e-5)


def test_fid_of_a_set_against_itself_is_zero(fidelity, tmp_path):
    # one FID per test: torch-fidelity's eigenvalues of a 2048 × 2048 product take ~10-20 s here
    images = tmp_path / "a.npy"
    np.save(images, fidelity["a"].permute(0, 2, 3, 1).numpy())  # channels-last, as image files come
    result = image_fidelity(fidelity["a"], FidelityConfig(fidelity["weights"], fid_reference=images, precision_recall=True), progress=False)
    trace = np.trace(np.cov(fidelity["fa"]["pool"].astype(np.float64), rowvar=False))
    assert abs(result["fid"]) <= FID_SELF_TOLERANCE * (1 + trace)
    assert result["precision"] == 1.0 and result["recall"] == 1.0


@pytest.mark.slow  # two FIDs: ~20-45 s on 2 busy cores
def test_saved_statistics_give_the_fid_of_the_images(fidelity, tmp_path):
    stats = save_reference_statistics(fidelity["b"], fidelity["weights"], tmp_path / "b_stats.npz", progress=False)
    assert set(np.load(stats)) == {"mu", "sigma", "n"} and load_reference(stats)["sigma"].shape == (2048, 2048)
    from_stats = image_fidelity(fidelity["a"], FidelityConfig(fidelity["weights"], fid_reference=stats), progress=False)
    from_images = fidelity_from_features(fidelity["fa"], fidelity["fb"], FidelityConfig(fidelity["weights"]))
    trace = np.trace(np.cov(fidelity["fa"]["pool"].astype(np.float64), rowvar=False))
    assert from_stats["fid"] == pytest.approx(from_images["fid"], rel=1e-4) and from_stats["fid"] > 1e3 * FID_SELF_TOLERANCE * (1 + trace)
    assert "precision" not in from_stats
    with pytest.raises(FluxMatchError, match="exists"):
        save_reference_statistics(fidelity["b"], fidelity["weights"], stats, progress=False)


def test_inception_score_of_identical_images_is_one(fidelity):
    copies = fidelity["a"][:1].expand(4, -1, -1, -1)
    result = image_fidelity(copies, FidelityConfig(fidelity["weights"]), progress=False)
    assert "fid" not in result and result["inception_score_splits"] == 2
    assert result["inception_score_mean"] == pytest.approx(1.0, abs=1e-6) and result["inception_score_std"] == pytest.approx(0.0, abs=1e-6)
    tiled = {name: np.repeat(value[:1], N_IMAGES, axis=0) for name, value in fidelity["fa"].items()}
    assert fidelity_from_features(tiled, None, FidelityConfig(fidelity["weights"]))["inception_score_mean"] == pytest.approx(1.0, abs=1e-6)


def test_weights_that_do_not_fit_the_network_are_refused(fidelity, tmp_path):
    wrong = tmp_path / "fc_only.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, wrong)
    with pytest.raises(FluxMatchError, match="fc_only.pth do not fit"):
        inception_features(fidelity["a"], FidelityConfig(wrong), progress=False)


def test_a_torchvision_that_fails_to_import_is_named(fidelity, monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "torch_fidelity"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(FluxMatchError, match="torchvision, which fails to import.*built for your torch"):
        require_fidelity()


# --- errors that need neither torch-fidelity nor the stub -------------------------------------


@pytest.fixture(scope="module")
def fake_weights(tmp_path_factory):
    """A file that passes the weights check (an fc.weight of the right shape) without being the network."""
    path = tmp_path_factory.mktemp("weights") / "fc.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, path)
    return path


def test_missing_torch_fidelity_names_the_extra(fake_weights, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    for call in (require_fidelity, lambda: image_fidelity(np.zeros((2, 3, 8, 8), np.uint8), FidelityConfig(fake_weights), progress=False)):
        with pytest.raises(FluxMatchError, match=r"fluxmatch\[fid\]"):
            call()


def test_bad_weights_paths_are_named(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(2, 2)}, other)
    cases = {tmp_path / "missing.pth": "do not exist", tmp_path: "is not a file", garbage: "cannot be loaded", other: "are not torch-fidelity's InceptionV3 weights"}
    for path, problem in cases.items():
        with pytest.raises(FluxMatchError, match=problem) as caught:
            check_fidelity(FidelityConfig(path))
        assert str(path) in str(caught.value) and "weights-inception-2015-12-05-6726825d.pth" in str(caught.value)


def test_bad_reference_paths_are_named(tmp_path):
    files = {
        "wrong_shapes.npz": lambda p: np.savez(p, mu=np.zeros(3), sigma=np.zeros((3, 3))),
        "float_images.npy": lambda p: np.save(p, np.zeros((4, 3, 8, 8), np.float32)),
        "flat.npy": lambda p: np.save(p, np.zeros((4, 64), np.uint8)),
        "two_arrays.npz": lambda p: np.savez(p, x=np.zeros(2), y=np.zeros(2)),
        "corrupt.npz": lambda p: p.write_bytes(b"no zip"),
        "images.png": lambda p: p.write_bytes(b"png"),
    }
    for name, write in files.items():
        write(tmp_path / name)
    problems = {"missing.npz": "does not exist", "wrong_shapes.npz": r"mu \(2048,\)", "float_images.npy": "uint8", "flat.npy": "shape", "two_arrays.npz": "single uint8 image array", "corrupt.npz": "cannot be read", "images.png": "must be an .npz"}
    for name, problem in problems.items():
        with pytest.raises(FluxMatchError, match=problem) as caught:
            load_reference(tmp_path / name)
        assert name in str(caught.value)
    with pytest.raises(FluxMatchError, match="is not a file"):
        load_reference(tmp_path)


def test_settings_are_checked(tmp_path, fake_weights):
    stats = tmp_path / "stats.npz"
    np.savez(stats, mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(FluxMatchError, match="reference image array"):
        FidelityConfig(fake_weights, precision_recall=True)
    with pytest.raises(FluxMatchError, match="batch_size"):
        FidelityConfig(fake_weights, batch_size=0)
    with pytest.raises(FluxMatchError, match="uint8"):
        save_reference_statistics(np.zeros((2, 3, 8, 8), np.float32), fake_weights, tmp_path / "out.npz", progress=False)
    with pytest.raises(FluxMatchError, match=r"\.npz file"):
        save_reference_statistics(np.zeros((2, 3, 8, 8), np.uint8), fake_weights, tmp_path / "out.npy", progress=False)
    with pytest.raises(FluxMatchError, match="holds statistics"):
        check_fidelity(FidelityConfig(fake_weights, fid_reference=stats, precision_recall=True))


def test_importing_fluxmatch_does_not_import_torch_fidelity():
    code = "import sys, fluxmatch, fluxmatch.metrics, fluxmatch.metrics.fidelity, fluxmatch.run, fluxmatch.cli; sys.exit('torch_fidelity' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
