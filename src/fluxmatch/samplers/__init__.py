"""Samplers: plain functions over a field."""

from .langevin import LangevinResult, langevin

__all__ = ["langevin", "LangevinResult"]
