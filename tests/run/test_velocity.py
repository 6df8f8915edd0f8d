"""RNA velocity: the fit (shapes, positive rates, determinism, γ/β recovery on simulated cells),
the whole `velocity` pipeline with its outputs and report, the scVelo baseline (or the note that
it was skipped), and the refusals that come before any work."""

import json

import numpy as np
import pytest

anndata = pytest.importorskip("anndata")

import fluxmatch.run.scvelo_baseline as baseline_module  # noqa: E402
from fluxmatch.cli import main  # noqa: E402
from fluxmatch.data.cells import PreprocessConfig, preprocess, read_cells, scvelo_available, write_cells  # noqa: E402
from fluxmatch.data.lineage import simulate_lineage  # noqa: E402
from fluxmatch.errors import FluxMatchError  # noqa: E402
from fluxmatch.metrics.cells import rate_recovery  # noqa: E402
from fluxmatch.run.rna_velocity import VelocityRequest, run_velocity  # noqa: E402
from fluxmatch.run.velocity import VelocityConfig, fit_velocity  # noqa: E402

QUICK = VelocityConfig(epochs=3, batch_size=64)
OWN = PreprocessConfig(backend="fluxmatch", n_neighbors=10)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("cells") / "sim.h5ad"
    write_cells(simulate_lineage(n_cells=300, n_genes=10, seed=0), path)
    return path


@pytest.fixture(scope="module")
def processed():
    return preprocess(simulate_lineage(n_cells=300, n_genes=10, seed=0), OWN)


def test_fit_shapes_positive_rates_and_determinism(processed):
    mu, ms = np.asarray(processed.layers["Mu"]), np.asarray(processed.layers["Ms"])
    a = fit_velocity(mu, ms, QUICK, progress=False)
    b = fit_velocity(mu, ms, QUICK, progress=False)
    assert a.velocity.shape == a.velocity_unspliced.shape == a.alpha.shape == mu.shape
    assert a.beta.shape == a.gamma.shape == (mu.shape[1],)
    assert (a.beta > 0).all() and (a.gamma > 0).all() and (a.alpha > 0).all()
    np.testing.assert_array_equal(a.velocity, b.velocity)
    # the velocities are the field's kinetics in the moments' units
    np.testing.assert_allclose(a.velocity, a.beta * mu - a.gamma * ms, rtol=1e-4, atol=1e-4 * np.abs(a.velocity).max())
    assert len(a.residual_rms) == QUICK.epochs


def test_state_dependent_and_regulatory_fits(processed):
    mu, ms = np.asarray(processed.layers["Mu"]), np.asarray(processed.layers["Ms"])
    fit = fit_velocity(mu, ms, VelocityConfig(epochs=2, variant="regulatory", state_rank=2), progress=False)
    assert fit.beta.shape == mu.shape and fit.regulation.shape == (mu.shape[1],) * 2
    assert np.all(np.diag(fit.regulation) == 0)


@pytest.mark.slow
def test_recovers_gamma_over_beta_on_simulated_cells():
    """2000 cells × 50 genes, the default fit: Spearman(γ/β, truth) well above chance (measured 0.94 on seed 0)."""
    a = simulate_lineage(seed=0)
    p = preprocess(a, PreprocessConfig(backend="fluxmatch"))
    fit = fit_velocity(np.asarray(p.layers["Mu"]), np.asarray(p.layers["Ms"]), progress=False)
    truth = (p.var["true_gamma"] / p.var["true_beta"]).to_numpy()
    assert rate_recovery(fit.gamma / fit.beta, truth) > 0.8


def test_config_refuses_bad_settings():
    for bad in ({"variant": "x"}, {"scale": "log"}, {"sigma": -1.0}, {"epochs": 0}, {"batch_size": 1}, {"lr": 0.0}, {"l1": -1.0}, {"state_rank": -1}):
        with pytest.raises(FluxMatchError):
            VelocityConfig(**bad)


def test_pipeline_writes_velocities_report_and_plot(small, tmp_path):
    out = tmp_path / "out" / "velo.h5ad"
    report = run_velocity(VelocityRequest(str(small), str(out)), OWN, QUICK, progress=False)
    for name in ("velo.h5ad", "velocity.json", "velocity.png"):
        assert (out.parent / name).is_file(), name
    saved = json.loads((out.parent / "velocity.json").read_text())
    assert saved["flux"]["cbdir"]["overall"] == pytest.approx(report["flux"]["cbdir"]["overall"])
    assert set(saved["transitions"]) == {"Progenitor>Transit", "Transit>A_early", "A_early>A_late", "Transit>B_early", "B_early>B_late"}
    for key in ("velocity_confidence", "seconds", "gamma_over_beta_spearman", "cosine_to_truth", "cbdir"):
        assert key in saved["flux"], key
    assert saved["preprocessing"]["backend"] == "fluxmatch" and saved["truth"]["cosine_to_truth"]["median"] == pytest.approx(1.0)
    result = read_cells(out)
    for layer in ("velocity", "velocity_unspliced", "flux_alpha", "Ms", "Mu"):
        assert layer in result.layers, layer
    assert {"flux_beta", "flux_gamma"} <= set(result.var.columns) and "velocity_lineage" in result.obsm


def test_pipeline_refuses_before_any_work(small, tmp_path):
    out = tmp_path / "velo.h5ad"
    out.write_text("mine")
    with pytest.raises(FluxMatchError, match="exists"):
        run_velocity(VelocityRequest(str(small), str(out)), OWN, QUICK, progress=False)
    assert out.read_text() == "mine"
    with pytest.raises(FluxMatchError, match="cluster 'Z'"):
        run_velocity(VelocityRequest(str(small), str(tmp_path / "a.h5ad"), transitions="Transit>Z"), OWN, QUICK, progress=False)
    with pytest.raises(FluxMatchError, match="no cluster key 'kind'"):
        run_velocity(VelocityRequest(str(small), str(tmp_path / "a.h5ad"), cluster_key="kind"), OWN, QUICK, progress=False)
    with pytest.raises(FluxMatchError, match="input file"):
        run_velocity(VelocityRequest(str(small), str(small), overwrite=True), OWN, QUICK, progress=False)
    assert not (tmp_path / "a.h5ad").exists() and not (tmp_path / "velocity.json").exists()


def test_baseline_is_skipped_with_a_note_without_scvelo(small, tmp_path, monkeypatch):
    monkeypatch.setattr(baseline_module, "scvelo_available", lambda: False)
    report = run_velocity(VelocityRequest(str(small), str(tmp_path / "v.h5ad"), baseline="scvelo"), OWN, QUICK, progress=False)
    assert "skipped" in report["scvelo"] and "fluxmatch[rna]" in report["notes"][0]


@pytest.mark.skipif(not scvelo_available(), reason="scVelo and scanpy are not installed")
def test_scvelo_baseline_side_by_side(small, tmp_path):
    report = run_velocity(VelocityRequest(str(small), str(tmp_path / "v.h5ad"), baseline="scvelo"), PreprocessConfig(n_neighbors=10), QUICK, progress=False)
    assert report["preprocessing"]["backend"] == "scvelo"
    for key in ("cbdir", "velocity_confidence", "seconds", "gamma_over_beta_spearman", "cosine_to_truth"):
        assert key in report["scvelo"], key
    assert "scvelo_velocity" in read_cells(tmp_path / "v.h5ad").layers


def run_cli(argv):
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


def test_cli_simulate_then_velocity(tmp_path, capsys):
    data = tmp_path / "cells.h5ad"
    assert run_cli(["simulate", "cells", "--n-cells", "300", "--n-genes", "8", "--seed", "3", "--out", str(data)]) == 0
    assert "300 cells × 8 genes" in capsys.readouterr().out
    assert run_cli(["simulate", "cells", "--n-cells", "300", "--out", str(data)]) == 2  # exists
    assert "exists" in capsys.readouterr().err
    out = tmp_path / "v" / "out.h5ad"
    argv = ["velocity", "--data", str(data), "--out", str(out), "--epochs", "2", "--preprocess", "fluxmatch", "--n-neighbors", "10", "--no-progress"]
    assert run_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "CBDir" in printed and "flux" in printed and "velocity.json" in printed
    assert run_cli(argv) == 2 and "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["simulate", "cells", "--n", "5", "--out", "x.h5ad"], "--n-cells"),
        (["simulate", "cells", "--k-wall", "2", "--out", "x.h5ad"], "springs"),
        (["simulate", "springs", "--n-genes", "5", "--out", "x.npz"], "cells"),
        (["simulate", "cells", "--out", "x.npz"], ".h5ad"),
        (["simulate", "cells", "--n-fates", "0", "--out", "x.h5ad"], "n_fates"),
        (["velocity", "--data", "missing.h5ad", "--out", "o.h5ad"], "no cell data"),
        (["velocity", "--data", "missing.h5ad", "--out", "o.h5ad", "--l1", "0.1"], "--l1"),
    ],
)
def test_cli_refusals(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli(argv) == 2
    assert message in capsys.readouterr().err
