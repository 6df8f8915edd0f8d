"""The baseline: scVelo's dynamical model on the same preprocessed cells.

``scv.tl.recover_dynamics`` fits, per gene, the full transcription-splicing-degradation model
with switching times by expectation-maximisation; ``scv.tl.velocity(mode="dynamical")`` turns
the fit into velocities. scVelo fits unspliced counts in units of ``fit_scaling``, so in the
moments' own units its splicing rate is β/scaling and its γ/β is ``fit_gamma · fit_scaling / fit_beta``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..data.cells import dense, scvelo_available


@dataclass
class BaselineFit:
    """scVelo's velocities (n_cells, G; NaN for genes it did not fit), γ/β (G,), and wall time (s)."""

    velocity: np.ndarray
    gamma_over_beta: np.ndarray
    velocity_genes: np.ndarray
    seconds: float


def scvelo_dynamical(processed, n_jobs: int = 2) -> BaselineFit | None:
    """Fit scVelo's dynamical model to a copy of ``processed`` (it needs Ms/Mu); None without scVelo."""
    if not scvelo_available():
        return None
    import scvelo as scv

    adata = processed.copy()
    verbosity = scv.settings.verbosity
    scv.settings.verbosity = 0
    try:
        start = time.perf_counter()
        scv.tl.recover_dynamics(adata, n_jobs=n_jobs, show_progress_bar=False)
        scv.tl.velocity(adata, mode="dynamical")
        seconds = time.perf_counter() - start
    finally:
        scv.settings.verbosity = verbosity
    var = adata.var
    ratio = np.asarray(var["fit_gamma"] * var["fit_scaling"] / var["fit_beta"], dtype=np.float64)
    genes = np.asarray(var.get("velocity_genes", np.ones(adata.n_vars, dtype=bool)), dtype=bool)
    return BaselineFit(dense(adata.layers["velocity"]).astype(np.float32), ratio, genes, seconds)
