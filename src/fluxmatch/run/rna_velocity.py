"""``fluxmatch velocity``: cells in, velocities, rates, metrics and a stream plot out.

The pipeline: read and check the ``.h5ad`` (layers, cluster key, transitions) → preprocess to
moments (:func:`~fluxmatch.data.cells.preprocess`) → fit the kinetic field by gene-local Flux
Matching (:func:`~fluxmatch.run.velocity.fit_velocity`) → project velocities on the embedding →
the metrics (CBDir per transition and overall, velocity confidence, and, when the data carry
the truth, the cosine to the true velocity and the recovery of γ/β) → optionally scVelo's
dynamical model on the same preprocessed cells, scored the same way → write the AnnData,
``velocity.json`` and ``velocity.png`` (next to the output file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import cells as cell_data
from ..errors import FluxMatchError
from ..metrics import cells as cell_metrics
from .velocity import VelocityConfig, VelocityFit, fit_velocity

REPORT_NAME = "velocity.json"
PLOT_NAME = "velocity.png"


@dataclass(frozen=True)
class VelocityRequest:
    """What ``fluxmatch velocity`` was asked to do.

    Attributes:
        data: the input ``.h5ad``.
        out: the output ``.h5ad``; ``velocity.json`` and ``velocity.png`` go beside it.
        transitions: "A>B,B>C" (None: ``uns['transitions']`` if the data carry it, else no CBDir).
        cluster_key: the ``obs`` column of cluster names (None: "clusters" when present).
        baseline: None or "scvelo".
        embedding_key: the ``obsm`` embedding to project on (None: the first of X_umap, X_tsne,
            X_lineage, else computed).
        overwrite: replace existing output files.
    """

    data: str
    out: str
    transitions: str | None = None
    cluster_key: str | None = None
    baseline: str | None = None
    embedding_key: str | None = None
    overwrite: bool = False


def output_paths(request: VelocityRequest) -> dict[str, Path]:
    out = Path(os.fspath(request.out))
    return {"h5ad": out, "report": out.parent / REPORT_NAME, "plot": out.parent / PLOT_NAME}


def check_outputs(request: VelocityRequest) -> dict[str, Path]:
    """The output paths, after refusing any that exists (without ``overwrite``) or is a directory."""
    paths = output_paths(request)
    if paths["h5ad"].suffix.lower() != ".h5ad":
        raise FluxMatchError(f"--out must be an .h5ad file, got {paths['h5ad']}")
    for path in paths.values():
        if path.is_dir():
            raise FluxMatchError(f"cannot write {path}: it is a directory")
        if path.exists() and not request.overwrite:
            raise FluxMatchError(f"{path} exists; pass --overwrite to replace it")
    if Path(os.fspath(request.data)).resolve() == paths["h5ad"].resolve():
        raise FluxMatchError("--out is the input file; write the velocities to a new file")
    return paths


def resolve_labels(adata, request: VelocityRequest) -> tuple[str | None, list[tuple[str, str]]]:
    """The cluster key and the transitions to score, checked against the data."""
    key = request.cluster_key
    if key is None and "clusters" in adata.obs:
        key = "clusters"
    text = request.transitions
    if text is None and "transitions" in adata.uns:
        text = ",".join(str(t) for t in adata.uns["transitions"])
    transitions = cell_metrics.parse_transitions(text) if text else []
    if transitions and key is None:
        raise FluxMatchError("transitions need cluster labels: pass --cluster-key naming the obs column")
    if key is not None:
        cell_data.check_clusters(adata, key, transitions)
    return key, transitions


@dataclass
class Scored:
    """One method's velocities, their embedding projection and metrics."""

    velocity: np.ndarray
    embedded: np.ndarray
    metrics: dict


def score(processed, velocity: np.ndarray, emb: np.ndarray, labels, transitions) -> Scored:
    """Project ``velocity`` (n_cells, G) on ``emb`` and compute every metric the data allow."""
    neighbours = processed.obsm[cell_data.NEIGHBORS_KEY]
    ms = cell_data.dense(processed.layers["Ms"])
    genes = cell_metrics.finite_genes(velocity)
    graph = cell_metrics.velocity_graph(ms, velocity, neighbours)
    embedded = cell_metrics.velocity_embedding(emb, graph, neighbours)
    confidence = cell_metrics.velocity_confidence(velocity, neighbours)
    metrics = {"genes_used": int(genes.sum()), "velocity_confidence": float(np.nanmean(confidence))}
    if transitions:
        cbdir = cell_metrics.cross_boundary_direction(emb, embedded, labels, neighbours, transitions)
        metrics["cbdir"] = {"overall": cbdir.overall, "per_transition": cbdir.per_transition, "cells": cbdir.n_cells}
    if "true_velocity" in processed.layers:
        cosine = cell_metrics.velocity_cosine(velocity, cell_data.dense(processed.layers["true_velocity"]))
        metrics["cosine_to_truth"] = {"median": float(np.nanmedian(cosine)), "mean": float(np.nanmean(cosine))}
    return Scored(velocity, embedded, metrics)


def true_ratio(processed) -> np.ndarray | None:
    """(G,) the true γ/β when the data carry it (simulated data), else None."""
    if "true_gamma" in processed.var and "true_beta" in processed.var:
        return np.asarray(processed.var["true_gamma"] / processed.var["true_beta"], dtype=np.float64)
    return None


def _flux_ratio(fit: VelocityFit) -> np.ndarray:
    gamma, beta = fit.gamma, fit.beta
    if gamma.ndim == 2:
        gamma, beta = gamma.mean(0), beta.mean(0)
    return np.asarray(gamma, dtype=np.float64) / np.asarray(beta, dtype=np.float64)


def write_flux(processed, fit: VelocityFit, basis: str, embedded: np.ndarray) -> None:
    """The flux model's outputs into the AnnData under fixed names (docs/velocity.md)."""
    processed.layers["velocity"] = fit.velocity
    processed.layers["velocity_unspliced"] = fit.velocity_unspliced
    processed.layers["flux_alpha"] = fit.alpha
    for name, rate in (("beta", fit.beta), ("gamma", fit.gamma)):
        if rate.ndim == 1:
            processed.var[f"flux_{name}"] = rate
        else:
            processed.layers[f"flux_{name}"] = rate
            processed.var[f"flux_{name}"] = rate.mean(0)
    if fit.regulation is not None:
        processed.varp["flux_regulation"] = fit.regulation.astype(np.float32)
    processed.obsm[f"velocity_{basis}"] = embedded.astype(np.float32)


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_report(path: Path, report: dict) -> None:
    from ..train.checkpoint import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, _json_ready(report))


def _truth_panel(processed, emb: np.ndarray, labels, transitions) -> Scored | None:
    if "true_velocity" not in processed.layers:
        return None
    return score(processed, cell_data.dense(processed.layers["true_velocity"]), emb, labels, transitions)


def _baseline(processed, request: VelocityRequest, emb, labels, transitions, truth_ratio) -> tuple[dict | None, Scored | None]:
    """scVelo's dynamical model scored like the flux model, or a report saying what was skipped."""
    if request.baseline is None:
        return None, None
    from .scvelo_baseline import scvelo_dynamical

    fit = scvelo_dynamical(processed)
    if fit is None:
        return {"skipped": "skipped the scVelo baseline: scVelo and scanpy are not installed (pip install 'fluxmatch[rna]')"}, None
    scored = score(processed, fit.velocity, emb, labels, transitions)
    report = {**scored.metrics, "seconds": fit.seconds}
    if truth_ratio is not None:
        report["gamma_over_beta_spearman"] = cell_metrics.rate_recovery(fit.gamma_over_beta, truth_ratio)
    processed.layers["scvelo_velocity"] = fit.velocity
    processed.var["scvelo_gamma_over_beta"] = fit.gamma_over_beta
    return report, scored


def run_velocity(request: VelocityRequest, preprocessing: cell_data.PreprocessConfig | None = None, config: VelocityConfig | None = None, progress: bool = True) -> dict:
    """Run the whole pipeline (module docstring) and return the report written to ``velocity.json``."""
    from ..viz.cells import plot_velocity_streams

    if request.baseline not in (None, "scvelo"):
        raise FluxMatchError(f"unknown baseline {request.baseline!r}: the one baseline is 'scvelo'")
    paths = check_outputs(request)
    raw = cell_data.read_cells(request.data)
    key, transitions = resolve_labels(raw, request)
    processed = cell_data.preprocess(raw, preprocessing)
    labels = None if key is None else np.asarray(processed.obs[key]).astype(str)
    emb, basis_source = cell_data.embedding(processed, request.embedding_key)
    basis = basis_source.split()[0].removeprefix("X_")
    fit = fit_velocity(cell_data.dense(processed.layers["Mu"]), cell_data.dense(processed.layers["Ms"]), config, progress)
    flux = score(processed, fit.velocity, emb, labels, transitions)
    truth_ratio = true_ratio(processed)
    flux_report = {**flux.metrics, "seconds": fit.seconds, "residual_rms_last_epoch": fit.residual_rms[-1]}
    if truth_ratio is not None:
        flux_report["gamma_over_beta_spearman"] = cell_metrics.rate_recovery(_flux_ratio(fit), truth_ratio)
    write_flux(processed, fit, basis, flux.embedded)
    baseline_report, baseline = _baseline(processed, request, emb, labels, transitions, truth_ratio)
    truth = _truth_panel(processed, emb, labels, transitions)
    panels = {"flux matching": flux.embedded}
    if baseline is not None:
        panels["scVelo dynamical"] = baseline.embedded
    if truth is not None:
        panels["true velocity"] = truth.embedded
    plot_velocity_streams(emb, panels, labels if labels is not None else np.zeros(len(emb), dtype=str), paths["plot"], title=f"velocities on {basis_source}")
    report = {
        "data": str(request.data), "cells": processed.n_obs, "genes": processed.n_vars, "cluster_key": key,
        "transitions": [f"{a}>{b}" for a, b in transitions], "embedding": basis_source,
        "preprocessing": processed.uns["fluxmatch"]["preprocessing"], "fit": fit.config, "flux": flux_report,
    }
    if baseline_report is not None:
        report["scvelo"] = baseline_report
    if truth is not None:
        report["truth"] = truth.metrics
    report["notes"] = [baseline_report["skipped"]] if baseline_report and "skipped" in baseline_report else []
    processed.uns["fluxmatch"] = {**processed.uns["fluxmatch"], "velocity": _json_ready({"fit": fit.config, "flux": flux_report})}
    cell_data.write_cells(processed, paths["h5ad"], overwrite=request.overwrite)
    write_report(paths["report"], report)
    return report
