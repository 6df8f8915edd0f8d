"""Training objectives with one interface: ``objective(field, x, reference=None, labels=None, **extras) -> ObjectiveOutput``.

Flux Matching and denoising score matching own their noise (a fixed σ or a σ distribution,
:mod:`~fluxmatch.objectives.noise_levels`); Flux Matching also owns its gradient estimator
(:mod:`~fluxmatch.objectives.estimators`). Flow matching has no noise. Design terms add onto
any of them (:mod:`~fluxmatch.objectives.design`). :func:`build_objective` rebuilds an objective
from its ``config``, today's or fluxmatch 0.1's (:mod:`~fluxmatch.objectives.legacy`).
"""

from __future__ import annotations

from ..errors import FluxMatchError
from .base import Objective, ObjectiveOutput
from .design import DESIGN_TERMS, CurlTarget, FastMixing, JacobianSkew, JacobianSparsity, Rotation, WithDesign, design_terms, make_term
from .dsm import DenoisingScoreMatching
from .estimators import Estimator, HorizonEstimator, PotentialEstimator, SplitEstimator, make_estimator
from .flow import FlowMatching
from .flux import MAX_FIXED_SIGMA_ENTRIES, FluxMatching, check_fixed_sigma_entries
from .horizon import ExponentialHorizon, UniformHorizon
from .legacy import AnnealedDSM, AnnealedFluxMatching, flux_from_legacy_config
from .noise_levels import FixedSigma, LogNormal, LogUniform, NoiseDistribution, loss_weights, make_noise, make_sigma_distribution

OBJECTIVES = {
    "flux": FluxMatching,
    "dsm": DenoisingScoreMatching,
    "flow": FlowMatching,
    "flux_annealed": AnnealedFluxMatching,
    "dsm_annealed": AnnealedDSM,
    "designed": WithDesign,
}


def build_objective(config: dict) -> Objective:
    """Rebuild an objective from its ``config`` dict (a ``name`` plus constructor arguments),
    in today's format or fluxmatch 0.1's (a fixed-σ flux config without ``noise``,
    "flux_annealed", "dsm_annealed")."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in OBJECTIVES:
        raise FluxMatchError(f"unknown objective {name!r}: expected one of {sorted(OBJECTIVES)}")
    if name == "flux" and "noise" not in config:
        return flux_from_legacy_config(config)
    try:
        return OBJECTIVES[name](**config)
    except TypeError as err:
        raise FluxMatchError(f"bad {name} objective config {config}: {err}") from None


__all__ = [
    "Objective",
    "ObjectiveOutput",
    "FluxMatching",
    "MAX_FIXED_SIGMA_ENTRIES",
    "check_fixed_sigma_entries",
    "FlowMatching",
    "DenoisingScoreMatching",
    "AnnealedFluxMatching",
    "AnnealedDSM",
    "Estimator",
    "PotentialEstimator",
    "SplitEstimator",
    "HorizonEstimator",
    "make_estimator",
    "NoiseDistribution",
    "FixedSigma",
    "LogNormal",
    "LogUniform",
    "make_noise",
    "make_sigma_distribution",
    "loss_weights",
    "WithDesign",
    "Rotation",
    "CurlTarget",
    "JacobianSkew",
    "JacobianSparsity",
    "FastMixing",
    "DESIGN_TERMS",
    "make_term",
    "design_terms",
    "UniformHorizon",
    "ExponentialHorizon",
    "OBJECTIVES",
    "build_objective",
]
