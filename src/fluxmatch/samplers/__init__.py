"""Samplers: plain functions over a field."""

from .langevin import LangevinResult, langevin
from .ode import ODEResult, solve_ode
from .schedules import check_sigmas, edm_sigmas, geometric_sigmas
from .sde import AnnealedResult, predictor_corrector, prior_sample, probability_flow, reverse_sde

__all__ = [
    "langevin",
    "LangevinResult",
    "solve_ode",
    "ODEResult",
    "edm_sigmas",
    "geometric_sigmas",
    "check_sigmas",
    "prior_sample",
    "reverse_sde",
    "probability_flow",
    "predictor_corrector",
    "AnnealedResult",
]
