"""A learned loss normaliser n_η(σ) for training over a continuum of noise levels (docs/MATH.md §4).

The per-σ loss ℓ is replaced by ``ℓ / exp(n(σ)) + n(σ)``; for fixed ℓ-statistics this is
minimised by n(σ) = ln E[ℓ | σ], so every noise level contributes on the same scale whatever
its raw magnitude (the uncertainty weighting of Kendall et al. 2018, as used by EDM2).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LossNormaliser(nn.Module):
    """n_η(σ): random Fourier features of c_noise = ln σ / 4, then a linear read-out (zero-initialised).

    Args:
        features: number of Fourier features.
        scale: frequency scale of the features (in units of c_noise).

    Shapes: σ (B,) → (B,) log-scale in the loss's units.
    """

    def __init__(self, features: int = 32, scale: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", 2 * math.pi * scale * torch.randn(features, generator=generator))
        self.register_buffer("phases", 2 * math.pi * torch.rand(features, generator=generator))
        self.readout = nn.Linear(features, 1)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        c_noise = sigma.log()[:, None] / 4
        features = torch.cos(c_noise * self.freqs + self.phases) * math.sqrt(2)
        return self.readout(features)[:, 0]

    def normalise(self, loss: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``loss / exp(n(σ)) + n(σ)``: (B,) → (B,). The gradient reaches both loss and n."""
        n = self(sigma)
        return loss * torch.exp(-n) + n
