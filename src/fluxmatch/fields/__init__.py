"""Vector fields: any ``torch.nn.Module`` called as ``field(x, c)`` returning a tensor shaped like x.

``c`` is the conditioning (σ for noise-conditioned fields, t for flow matching, None for a
fixed-σ field). Wrap a module that takes only ``x`` with :class:`Unconditional`. The scalar
potential of Flux Matching's potential estimator is chosen to match a field by
:func:`~fluxmatch.fields.potentials.potential_for`.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from ..errors import FluxMatchError
from .base import Field, ForwardModeField
from .dag import DAGField, check_dag, dependency_mask, parse_graph, transitive_closure
from .guidance import ClassifierFreeGuidance, drop_labels, guided
from .mlp import MLPField, MLPPotential
from .potentials import potential_for
from .precond import EDMPreconditioned, EDMSplit, MLPScalar, PreconditionedPotential, ScoreFixed, UNetScalar
from .transformer import TransformerField
from .unet import UNET_PRESETS, UNet


class Unconditional(nn.Module):
    """Adapts a module ``g(x)`` to the field convention ``f(x, c) = g(x)``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, c=None) -> torch.Tensor:
        return self.module(x)


def _check_takes_extras(field, names) -> None:
    """Raise naming the extras a field's signature has no keyword for (before any work is lost)."""
    try:
        parameters = inspect.signature(field.forward if isinstance(field, nn.Module) else field).parameters.values()
    except (TypeError, ValueError):  # no introspectable signature: let the call decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    missing = sorted(set(names) - {p.name for p in parameters if p.kind is not inspect.Parameter.POSITIONAL_ONLY})
    if missing:
        raise FluxMatchError(f"the {type(field).__name__} field does not take the batch extras {', '.join(missing)}: give it keyword arguments of those names")


def call_field(field, x: torch.Tensor, c=None, labels=None, **extras) -> torch.Tensor:
    """``field(x, c)`` (``field(x, c, labels)`` when labels are given; ``extras``, per-row tensors
    such as masks or time indices, as keyword arguments), checking that the field takes the
    extras and that the output has the input's shape (see :class:`~fluxmatch.fields.base.Field`)."""
    if extras:
        _check_takes_extras(field, extras)
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
    "edm_split": EDMSplit,
    "mlp_scalar": MLPScalar,
    "edm_potential": PreconditionedPotential,
    "unet_scalar": UNetScalar,
    "transformer": TransformerField,
    "dag": DAGField,
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
    "Field",
    "ForwardModeField",
    "MLPField",
    "MLPPotential",
    "UNet",
    "UNET_PRESETS",
    "EDMPreconditioned",
    "EDMSplit",
    "ScoreFixed",
    "MLPScalar",
    "PreconditionedPotential",
    "UNetScalar",
    "TransformerField",
    "DAGField",
    "check_dag",
    "transitive_closure",
    "dependency_mask",
    "parse_graph",
    "potential_for",
    "ClassifierFreeGuidance",
    "drop_labels",
    "guided",
    "Unconditional",
    "call_field",
    "build_field",
    "FIELD_TYPES",
]
