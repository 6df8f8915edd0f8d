"""Samplers: plain functions over a field."""

from .langevin import LangevinResult, langevin
from .ode import ODEResult, solve_ode

__all__ = ["langevin", "LangevinResult", "solve_ode", "ODEResult"]
