"""Training objectives with one interface: ``objective(field, x, reference=None, labels=None) -> ObjectiveOutput``.

Flux Matching and DSM each take their noise as an argument (a fixed σ, or a σ distribution);
flow matching has its own probability path. Design terms add onto any of them.
"""

from __future__ import annotations

from ..errors import FluxMatchError
from .annealed import AnnealedFluxMatching
from .base import Objective, ObjectiveOutput
from .design import CurlTarget, FastMixing, JacobianSkew, JacobianSparsity, Rotation, WithDesign, design_terms, make_term
from .dsm import AnnealedDSM, DenoisingScoreMatching
from .estimators import HorizonEstimator, PotentialEstimator
from .flow import FlowMatching
from .flux import FluxMatching
from .horizon import ExponentialHorizon, UniformHorizon
from .noise_levels import FixedSigma, LogNormal, LogUniform, make_sigma_distribution

OBJECTIVES = {
    "flux": FluxMatching,
    "dsm": DenoisingScoreMatching,
    "flow": FlowMatching,
    "flux_annealed": AnnealedFluxMatching,  # run directories of fluxmatch 0.1
    "dsm_annealed": AnnealedDSM,
    "designed": WithDesign,
}


def build_objective(config: dict):
    """Rebuild an objective from its ``config`` dict (name plus constructor arguments)."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in OBJECTIVES:
        raise FluxMatchError(f"unknown objective {name!r}: expected one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name](**config)


__all__ = [
    "Objective",
    "ObjectiveOutput",
    "FluxMatching",
    "FlowMatching",
    "DenoisingScoreMatching",
    "AnnealedFluxMatching",
    "AnnealedDSM",
    "WithDesign",
    "Rotation",
    "CurlTarget",
    "JacobianSkew",
    "JacobianSparsity",
    "FastMixing",
    "make_term",
    "design_terms",
    "UniformHorizon",
    "PotentialEstimator",
    "HorizonEstimator",
    "FixedSigma",
    "LogNormal",
    "LogUniform",
    "make_sigma_distribution",
    "ExponentialHorizon",
    "OBJECTIVES",
    "build_objective",
]
