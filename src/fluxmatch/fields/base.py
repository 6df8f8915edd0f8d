"""The field contract: what every sampler, objective and metric may assume of a field."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

CONDITIONINGS = (None, "sigma", "time")


@runtime_checkable
class Field(Protocol):
    """A vector field ``f(x, c[, labels], **extras)`` returning a tensor shaped like x.

    Attributes:
        conditioning: what ``c`` carries: None (a field trained at one fixed σ; ``c`` is that σ
            or ignored), ``"sigma"`` (the noise level σ > 0, a (B,) tensor or a float, data
            units) or ``"time"`` (flow matching's t ∈ [0, 1]). The run pipeline picks the
            sampler from it (with the objective's noise).
        config: a dict :func:`~fluxmatch.fields.build_field` rebuilds the field from.

    Class-conditional fields also have ``n_classes`` > 0 and take (B,) int64 ``labels``, the
    null class being ``n_classes``; ``extras`` are per-row tensors (masks, time indices,
    covariates) a data kind's batches carry, passed to the network untouched.
    """

    conditioning: str | None

    @property
    def config(self) -> dict: ...

    def __call__(self, x: torch.Tensor, c=None, *args, **kwargs) -> torch.Tensor: ...


@runtime_checkable
class ForwardModeField(Protocol):
    """A field that also gives Jacobian-vector products by forward-mode propagation
    (``forward_and_jvp(x, c, tangents) -> (f(x), (B, k, d) products)``; e.g. MLPField), which
    makes exact divergences and their gradients one pass cheaper."""

    def forward_and_jvp(self, x: torch.Tensor, c, tangents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def conditioning_of_field(field) -> str | None:
    """A field's declared conditioning (None when it declares none)."""
    return field.conditioning if isinstance(field, Field) else getattr(field, "conditioning", None)
