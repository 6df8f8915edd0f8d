"""Exponential moving average (EMA) of a module's weights, the weights sampling and evaluation use."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import FluxMatchError


class EMA:
    """Shadow copy ``θ̄ ← β θ̄ + (1 − β) θ`` of a module's floating-point state.

    Two ways to set β:

    - ``decay``: β_k = min(decay, (1 + k) / (10 + k)) at update k (0-based), so early averages
      are not dominated by the random initialisation;
    - ``halflife`` (EDM's form, in training images): β = 0.5^(B / h) for batches of B images,
      the half-life ``h`` ramped as min(halflife, rampup · images seen) when ``rampup`` is given
      (EDM: 500 k images, ramp-up 0.05), so the average forgets at a fixed rate per image seen,
      whatever the batch size.

    Args:
        module: the module to track; its current state is the initial average.
        decay: the asymptotic decay β ∈ [0, 1) (ignored when ``halflife`` is given).
        halflife: the half-life in training images, or None.
        batch_size: images per update (needed with ``halflife``).
        rampup: ramp-up ratio of the half-life, or None for none.

    The average is keyed like ``module.state_dict()``; non-floating entries (integer buffers)
    are copied as they are.

    Example:
        >>> field, eval_field = MLPField(2, (8,)), MLPField(2, (8,))
        >>> ema = EMA(field, decay=0.999)
        >>> ema.update(field, 0)         # after each optimizer step
        >>> ema.copy_to(eval_field)      # load the averaged weights
        >>> round(EMA(field, halflife=500_000, batch_size=512).decay_at(10**6), 6)
        0.99929
    """

    def __init__(self, module: nn.Module, decay: float = 0.999, halflife: float | None = None, batch_size: int | None = None, rampup: float | None = None) -> None:
        decay = float(decay)
        if not 0.0 <= decay < 1.0:
            raise FluxMatchError(f"the EMA decay must lie in [0, 1), got {decay}")
        if halflife is not None:
            if not (float(halflife) > 0 and math.isfinite(float(halflife))):
                raise FluxMatchError(f"the EMA half-life must be a positive number of images, got {halflife!r}")
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise FluxMatchError(f"an EMA half-life needs the batch size (a positive integer), got {batch_size!r}")
        if rampup is not None and not (float(rampup) > 0 and math.isfinite(float(rampup))):
            raise FluxMatchError(f"the EMA ramp-up must be a positive ratio, got {rampup!r}")
        self.decay = decay
        self.halflife = None if halflife is None else float(halflife)
        self.batch_size = batch_size
        self.rampup = None if rampup is None else float(rampup)
        self.shadow: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def decay_at(self, step: int) -> float:
        """β used at update ``step`` (0-based): the warm-up ``min(decay, (1 + step) / (10 + step))``,
        or with a half-life ``0.5^(B / h)``, h = min(halflife, rampup · (step + 1) · B)."""
        if self.halflife is None:
            return min(self.decay, (1.0 + step) / (10.0 + step))
        half = self.halflife
        if self.rampup is not None:
            half = min(half, self.rampup * (step + 1) * self.batch_size)
        return 0.5 ** (self.batch_size / max(half, 1e-8))

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
