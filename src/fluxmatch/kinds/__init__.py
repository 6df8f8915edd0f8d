"""Kinds of data and what each brings to a run (loader, defaults, units, metrics, plots).

Registered: ``points`` (:class:`~fluxmatch.kinds.points.Points`), ``images``
(:class:`~fluxmatch.kinds.images.Images`) and ``trajectories``
(:class:`~fluxmatch.kinds.trajectories.Trajectories`). A new kind subclasses :class:`DataKind` and calls
:func:`register_kind`; the run pipeline then trains, samples, evaluates and plots it unchanged.
"""

from .base import KINDS, DataKind, Evaluation, get_kind, kind_for, register_kind
from .images import FEATURE_METRICS, Images
from .points import Points
from .trajectories import Trajectories

register_kind(Points())
register_kind(Images())
register_kind(Trajectories())

__all__ = ["DataKind", "Evaluation", "KINDS", "register_kind", "get_kind", "kind_for", "Points", "Images", "Trajectories", "FEATURE_METRICS"]
