"""Vector fields: any ``torch.nn.Module`` called as ``field(x, c)`` returning a tensor shaped like x.

``c`` is the conditioning (σ for noise-conditioned fields, t for flow matching, None for a
fixed-σ field). Wrap a module that takes only ``x`` with :class:`Unconditional`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import FluxMatchError
from .base import Field, ForwardModeField
from .guidance import ClassifierFreeGuidance, drop_labels, guided
from .mlp import MLPField, MLPPotential
from .potentials import potential_for, potential_for_points
from .precond import EDMPreconditioned, MLPScalar, PreconditionedPotential, UNetScalar
from .unet import UNET_PRESETS, UNet


class Unconditional(nn.Module):
    """Adapts a module ``g(x)`` to the field convention ``f(x, c) = g(x)``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, c=None) -> torch.Tensor:
        return self.module(x)


def call_field(field, x: torch.Tensor, c=None, labels=None, **extras) -> torch.Tensor:
    """``field(x, c)`` (``field(x, c, labels)`` when labels are given; ``extras``, per-row tensors
    such as masks or time indices, as keyword arguments), checking that the output has the
    input's shape (see :class:`~fluxmatch.fields.base.Field`)."""
    args = (x, c) if labels is None else (x, c, labels)
    out = field(*args, **extras)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise FluxMatchError(f"the field returned shape {shape} for input of shape {tuple(x.shape)}: a field must map x to a tensor shaped like x")
    return out


FIELD_TYPES = {
    "mlp": MLPField,
    "mlp_potential": MLPPotential,
    "unet": UNet,
    "edm": EDMPreconditioned,
    "mlp_scalar": MLPScalar,
    "edm_potential": PreconditionedPotential,
    "unet_scalar": UNetScalar,
}


def build_field(config: dict) -> nn.Module:
    """Rebuild a field from its ``config`` dict (as stored in a checkpoint)."""
    config = dict(config)
    kind = config.pop("type", None)
    if kind not in FIELD_TYPES:
        raise FluxMatchError(f"unknown field type {kind!r}: expected one of {sorted(FIELD_TYPES)}")
    try:
        return FIELD_TYPES[kind](**config)
    except TypeError as err:
        raise FluxMatchError(f"bad field config {config}: {err}") from None


__all__ = [
    "potential_for",
    "potential_for_points",
    "Field",
    "ForwardModeField",
    "MLPField",
    "MLPPotential",
    "UNet",
    "UNET_PRESETS",
    "EDMPreconditioned",
    "MLPScalar",
    "PreconditionedPotential",
    "UNetScalar",
    "ClassifierFreeGuidance",
    "drop_labels",
    "guided",
    "Unconditional",
    "call_field",
    "build_field",
    "FIELD_TYPES",
]
