"""The potential network of Flux Matching's potential estimator, matched to the field's family.

The estimator fits a scalar potential g(x, σ) whose gradient ∇g ≈ −∇φ is the gradient part of
u = f − s (docs/MATH.md §2). The potential should see the data the way the field does:

- an :class:`~fluxmatch.fields.MLPField` gets an :class:`~fluxmatch.fields.MLPPotential` with
  the same conditioning (hidden widths 128-128 by default);
- an :class:`~fluxmatch.fields.EDMPreconditioned` field (any backbone) gets a
  :class:`~fluxmatch.fields.PreconditionedPotential` with the field's σ_data and classes, around
  an :class:`~fluxmatch.fields.MLPScalar` on the flattened point (256-256 by default) or, with
  ``net="unet"``, a :class:`~fluxmatch.fields.UNetScalar` (16 channels). The size of a point
  comes from the backbone (an MLPField's ``dim``, a UNet's ``in_channels`` × ``resolution``²)
  unless ``event_shape`` or ``dim`` is given;
- a structured field, a :class:`~fluxmatch.fields.TransformerField` (causal in time) or a
  :class:`~fluxmatch.fields.DAGField` (output i sees only i's parents), gets an UNCONSTRAINED
  potential: an :class:`~fluxmatch.fields.MLPPotential` on the flattened point (``field.dim``
  entries, the field's conditioning), or, EDM-preconditioned, the MLPScalar above on
  ``backbone.dim`` entries. The potential represents the gradient part of u = f − s, and the
  data score s does not have the field's structure (the score of a causal process at step t
  depends on later steps too; that of a DAG on children and co-parents), so neither does ∇φ:
  a potential restricted to the field's structure could not represent it.
"""

from __future__ import annotations

import math

from torch import nn

from ..errors import FluxMatchError
from .dag import DAGField
from .mlp import MLPField, MLPPotential
from .precond import EDMPreconditioned, MLPScalar, PreconditionedPotential, UNetScalar
from .transformer import TransformerField
from .unet import UNet

POTENTIAL_NETS = ("mlp", "unet")
MLP_HIDDEN = (128, 128)
PRECONDITIONED_HIDDEN = (256, 256)
UNET_CHANNELS = 16


def potential_for_dim(
    dim: int | None,
    hidden: tuple[int, ...] | None = None,
    *,
    preconditioned: bool = False,
    sigma_data: float = 0.5,
    n_classes: int = 0,
    net: str = "mlp",
    event_shape: tuple[int, ...] | None = None,
    conditioning: str | None = None,
) -> nn.Module:
    """A potential for points of ``dim`` entries, without a field to match.

    Args:
        dim: entries per data point (unused for ``net="unet"``).
        hidden: hidden widths (default 128-128 for an MLP potential, 256-256 preconditioned).
        preconditioned: an EDM-preconditioned potential (for σ-conditioned fields in score units,
            ``sigma_data`` its σ_d, ``n_classes`` its classes) instead of an :class:`MLPPotential`
            (``conditioning``: None, "sigma" or "time", as for :class:`MLPField`).
        net: "mlp", or "unet" (preconditioned, on images of ``event_shape`` = (C, H, W)).

    Returns:
        a module with ``gradient(x, c, labels=None, create_graph=True)``, shaped like x.

    Example:
        >>> potential_for_dim(2).config
        {'type': 'mlp_potential', 'dim': 2, 'hidden': [128, 128], 'conditioning': None}
    """
    if net not in POTENTIAL_NETS:
        raise FluxMatchError(f"unknown potential network {net!r}: expected one of {', '.join(POTENTIAL_NETS)}")
    if net == "unet":
        if event_shape is None or len(event_shape) != 3:
            raise FluxMatchError(f"a UNet potential needs the image shape: event_shape=(C, H, W), got {event_shape!r}")
        c, h, _ = (int(e) for e in event_shape)
        return PreconditionedPotential(UNetScalar(in_channels=c, channels=UNET_CHANNELS, resolution=h, n_classes=n_classes), sigma_data=sigma_data)
    if dim is None:
        raise FluxMatchError("the default potential needs the data dimension: give dim=d (entries per point) or event_shape")
    if preconditioned:
        return PreconditionedPotential(MLPScalar(int(dim), hidden or PRECONDITIONED_HIDDEN, n_classes=n_classes), sigma_data=sigma_data)
    if n_classes:
        raise FluxMatchError("an MLP potential is not class-conditional: a class-conditional potential is EDM-preconditioned (preconditioned=True)")
    return MLPPotential(int(dim), hidden or MLP_HIDDEN, conditioning=conditioning)


def _event_shape(field: EDMPreconditioned, event_shape, dim) -> tuple[tuple[int, ...] | None, int]:
    """(event shape or None, entries per point) of an EDM-preconditioned field's points: the given
    shape, else what the backbone states (an MLPField's, TransformerField's or DAGField's ``dim``;
    a UNet's ``in_channels`` at its ``resolution``), else ``dim``. With no event shape the
    MLPScalar flattens each point, so (B, T, D) sequences need none."""
    backbone = field.backbone
    if event_shape is None and isinstance(backbone, UNet):
        event_shape = (backbone.in_channels, backbone.resolution, backbone.resolution)
    if event_shape is not None:
        return tuple(int(e) for e in event_shape), math.prod(int(e) for e in event_shape)
    for entries in (getattr(backbone, "dim", None), dim):
        if entries is not None:
            return None, int(entries)
    raise FluxMatchError(
        f"cannot tell the data dimension of a field with a {type(backbone).__name__} backbone: "
        "give the potential estimator event_shape (the shape of one point) or the objective dim=d"
    )


def potential_for(field, hidden=None, n_classes: int | None = None, net: str = "mlp", event_shape=None, dim: int | None = None) -> nn.Module:
    """The potential that matches ``field``'s structure (see the module docstring).

    Args:
        field: an :class:`MLPField`, a :class:`TransformerField` or :class:`DAGField` (an
            unconstrained MLPPotential on the flattened point), or an :class:`EDMPreconditioned` field.
        hidden: hidden widths of the potential (None: its family's default).
        n_classes: classes of the potential (None: the field's).
        net: "mlp" or "unet" (EDM-preconditioned fields; needs ``event_shape``).
        event_shape, dim: the shape, or number of entries, of one data point (default: what the
            backbone states: an MLPField's ``dim``, a UNet's ``in_channels`` × ``resolution``²).

    Example:
        >>> potential_for(EDMPreconditioned(MLPField(4, conditioning="sigma"))).config["backbone"]["dim"]
        4
    """
    if isinstance(field, EDMPreconditioned):
        classes = field.n_classes if n_classes is None else int(n_classes)
        shape, d = _event_shape(field, event_shape, dim)
        return potential_for_dim(d, hidden, preconditioned=True, sigma_data=field.sigma_data, n_classes=classes, net=net, event_shape=shape)
    if isinstance(field, (MLPField, TransformerField, DAGField)):
        return potential_for_dim(field.dim, hidden, n_classes=n_classes or 0, net=net, event_shape=event_shape, conditioning=field.conditioning)
    raise FluxMatchError(
        f"no default potential matches a {type(field).__name__} field: give the objective a potential module "
        "(potential=...) or the data dimension (dim=d)"
    )
