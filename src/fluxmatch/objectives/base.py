"""What every objective returns, and the checks every objective makes on its inputs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import FluxMatchError


@dataclass
class ObjectiveOutput:
    """Result of one objective evaluation on a batch.

    Attributes:
        loss: (B,) per-sample losses; ``loss.mean().backward()`` gives every trainable
            parameter (field and objective) its gradient. For Flux Matching this is a surrogate
            whose gradient, not value, is meaningful: never use it as a quality metric.
        terms: named detached scalars for logging (e.g. the stationarity residual's RMS).
    """

    loss: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)


def check_batch(x: torch.Tensor) -> torch.Tensor:
    """Validate a training batch (B, ...) and return it as float32."""
    if not isinstance(x, torch.Tensor):
        raise FluxMatchError(f"a batch must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise FluxMatchError(f"a batch must have shape (B, ...) with B ≥ 1, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise FluxMatchError("the batch contains NaN or inf values")
    return x.float() if x.dtype != torch.float32 else x

