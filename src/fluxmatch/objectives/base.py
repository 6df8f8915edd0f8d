"""What every objective is and returns, and the checks every objective makes on its inputs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import FluxMatchError

if TYPE_CHECKING:
    from .noise_levels import NoiseDistribution


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


class Objective(nn.Module, ABC):
    """What every training objective is: ``objective(field, x, **batch) -> ObjectiveOutput``.

    Subclasses implement :meth:`forward`, :attr:`config` (what
    :func:`~fluxmatch.objectives.build_objective` rebuilds them from) and :meth:`param_groups`.
    An objective owns its noise: ``noise`` is its σ distribution
    (a :class:`~fluxmatch.objectives.noise_levels.NoiseDistribution`; None for flow matching,
    which has none), ``sigma`` its fixed σ (None unless the noise is a fixed σ), and
    :meth:`draw_sigma` draws σ for a batch.
    """

    sigma: float | None = None
    noise: NoiseDistribution | None = None
    #: whether ``forward`` passes a batch's ``extras`` (masks, time indices, ...) on to the field
    takes_extras: bool = False

    @abstractmethod
    def forward(self, field, x: torch.Tensor, *args, **kwargs) -> ObjectiveOutput:
        """Per-row losses of ``field`` on the batch x (B, ...)."""

    @property
    @abstractmethod
    def config(self) -> dict:
        """A JSON-ready dict with a ``name`` and the constructor arguments."""

    @abstractmethod
    def param_groups(self, field: nn.Module, lr: float) -> list[dict]:
        """The optimizer's parameter groups over the field and the objective's own parameters."""

    def draw_sigma(self, b: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """(b,) noise levels for a batch, drawn from ``noise`` (data units)."""
        if self.noise is None:
            raise FluxMatchError(f"the {type(self).__name__} objective has no noise distribution to draw σ from")
        return self.noise.sample(b, generator, device)
