"""Exponential moving average (EMA) of a module's weights, the weights sampling and evaluation use."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import FluxMatchError


class EMA:
    """Shadow copy ``θ̄ ← β θ̄ + (1 − β) θ`` of a module's floating-point state.

    The decay warms up as ``β_k = min(decay, (1 + k) / (10 + k))`` at update k (0-based), so
    early averages are not dominated by the random initialisation.

    Args:
        module: the module to track; its current state is the initial average.
        decay: the asymptotic decay β ∈ [0, 1).

    The average is keyed like ``module.state_dict()``; non-floating entries (integer buffers)
    are copied as they are.

    Example:
        >>> field, eval_field = MLPField(2, (8,)), MLPField(2, (8,))
        >>> ema = EMA(field, decay=0.999)
        >>> ema.update(field, 0)         # after each optimizer step
        >>> ema.copy_to(eval_field)      # load the averaged weights
    """

    def __init__(self, module: nn.Module, decay: float = 0.999) -> None:
        decay = float(decay)
        if not 0.0 <= decay < 1.0:
            raise FluxMatchError(f"the EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def decay_at(self, step: int) -> float:
        """β used at update ``step`` (0-based): the warm-up ``min(decay, (1 + step) / (10 + step))``."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        """Fold the module's current weights into the average (call after each optimizer step)."""
        beta = self.decay_at(step)
        for key, value in module.state_dict().items():
            shadow = self.shadow[key]
            if shadow.is_floating_point():
                shadow.lerp_(value.detach(), 1.0 - beta)
            else:
                shadow.copy_(value)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Load the averaged weights into ``module`` (same architecture as the tracked one)."""
        module.load_state_dict(self.shadow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, keyed like the tracked module's ``state_dict()``."""
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the average from :meth:`state_dict` output (keys and shapes must match)."""
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise FluxMatchError(f"EMA state does not match the module: missing {missing}, unexpected {unexpected}")
        for key, value in state.items():
            if value.shape != self.shadow[key].shape:
                raise FluxMatchError(f"EMA state for {key!r} has shape {tuple(value.shape)}, expected {tuple(self.shadow[key].shape)}")
            self.shadow[key].copy_(value)
