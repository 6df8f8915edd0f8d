"""Potential networks for Flux Matching's potential estimator, chosen to match the field.

The potential estimator fits ∇g ≈ −∇φ, the gradient part of the field's error u = f − s
(docs/MATH.md §3). Its scalar network g should see points the way the field does: a plain MLP
potential for a plain MLP field, an EDM-preconditioned potential (the same σ_data, the same
class conditioning) for an EDM-preconditioned field. :func:`potential_for` makes that choice, so
objectives do not build networks themselves.
"""

from __future__ import annotations

from torch import nn

from ..errors import FluxMatchError
from .mlp import MLPField, MLPPotential
from .precond import EDMPreconditioned, MLPScalar, PreconditionedPotential, UNetScalar
from .unet import UNet

POTENTIAL_NETS = ("mlp", "unet")


def _points_dim(backbone: nn.Module) -> int:
    if isinstance(backbone, MLPField):
        return backbone.dim
    if isinstance(backbone, UNet):
        return backbone.in_channels * backbone.resolution**2
    raise FluxMatchError(f"no potential matches a field around a {type(backbone).__name__}: pass potential=… to the objective")


def potential_for(field: nn.Module, hidden: tuple[int, ...] | None = None, net: str = "mlp") -> nn.Module:
    """The potential network that matches ``field``'s structure.

    - :class:`~fluxmatch.fields.MLPField` → :class:`~fluxmatch.fields.MLPPotential` on the same
      points with the same conditioning (hidden widths default 128-128);
    - :class:`~fluxmatch.fields.EDMPreconditioned` → :class:`~fluxmatch.fields.PreconditionedPotential`
      with the field's σ_data and classes, around an MLP on the flattened point (``net="mlp"``,
      widths default 256-256) or a 16-channel UNet quadratic form (``net="unet"``, images).

    Raises FluxMatchError for a field it has no potential for.

        >>> potential_for(MLPField(2, (8,))).config["type"]
        'mlp_potential'
    """
    if net not in POTENTIAL_NETS:
        raise FluxMatchError(f"unknown potential network {net!r}: expected one of {', '.join(POTENTIAL_NETS)}")
    if isinstance(field, EDMPreconditioned):
        n_classes = field.n_classes
        if net == "unet":
            unet = field.backbone
            if not isinstance(unet, UNet):
                raise FluxMatchError("a UNet potential matches a UNet field; this field's backbone is an MLP")
            scalar = UNetScalar(in_channels=unet.in_channels, channels=16, resolution=unet.resolution, n_classes=n_classes)
        else:
            scalar = MLPScalar(_points_dim(field.backbone), hidden or (256, 256), n_classes=n_classes)
        return PreconditionedPotential(scalar, sigma_data=field.sigma_data)
    if isinstance(field, MLPField):
        if net == "unet":
            raise FluxMatchError("a UNet potential matches a UNet field; this field is an MLP")
        return MLPPotential(field.dim, hidden or (128, 128), conditioning=field.conditioning)
    raise FluxMatchError(f"no potential matches a field of type {type(field).__name__}: pass potential=… to the objective")


def potential_for_points(dim: int, hidden: tuple[int, ...], continuum: bool, sigma_data: float = 0.5, n_classes: int = 0, net: str = "mlp", event_shape=None) -> nn.Module:
    """The potential of :func:`potential_for` when only the points' size is known (``dim``
    entries; images: ``event_shape`` (C, H, W) for ``net="unet"``): an :class:`MLPPotential` for a
    fixed-σ field, an EDM-preconditioned one for a σ-conditioned field (``continuum``)."""
    if not continuum:
        return MLPPotential(dim, hidden)
    if net not in POTENTIAL_NETS:
        raise FluxMatchError(f"unknown potential network {net!r}: expected one of {', '.join(POTENTIAL_NETS)}")
    if net == "unet":
        if event_shape is None or len(event_shape) != 3:
            raise FluxMatchError("a UNet potential needs the image shape: event_shape=(C, H, W)")
        c, h, _ = event_shape
        return PreconditionedPotential(UNetScalar(in_channels=c, channels=16, resolution=h, n_classes=n_classes), sigma_data=sigma_data)
    return PreconditionedPotential(MLPScalar(int(dim), hidden, n_classes=n_classes), sigma_data=sigma_data)


__all__ = ["potential_for", "potential_for_points", "POTENTIAL_NETS"]
