"""Kinds of data and what each brings to a run (loader, defaults, units, metrics, plots).

Registered: ``points`` (:class:`~fluxmatch.kinds.points.Points`) and ``images``
(:class:`~fluxmatch.kinds.images.Images`). A new kind subclasses :class:`DataKind` and calls
:func:`register_kind`; the run pipeline then trains, samples, evaluates and plots it unchanged.
"""

from .base import KINDS, DataKind, Evaluation, get_kind, kind_for, register_kind
from .images import FEATURE_METRICS, Images
from .points import Points

register_kind(Points())
register_kind(Images())

__all__ = ["DataKind", "Evaluation", "KINDS", "register_kind", "get_kind", "kind_for", "Points", "Images", "FEATURE_METRICS"]
