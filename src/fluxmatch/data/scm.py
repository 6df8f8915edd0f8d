"""A small nonlinear structural causal model: the chain X → Y → Z with non-Gaussian noise.

    X = e_x,                        e_x ~ Laplace(0, 1/√2)            (unit variance)
    Y = sin(1.5 X) + 0.4 e_y,       e_y ~ Uniform(−√3, √3)            (unit variance)
    Z = 0.8 Y² − 0.4 + 0.3 e_z,     e_z ~ Laplace(0, 1/√2)

Its density factorises as p(x) p(y | x) p(z | y), so the score's component for X depends on Y
(through p(y | x)) and the one for Y on Z: the score violates the causal order that a field whose
output i sees only variables ≤ i (its ancestors and itself) must keep.

    >>> simulate_chain(5, seed=0).shape
    torch.Size([5, 3])
"""

from __future__ import annotations

import math

import torch

from ..errors import FluxMatchError

#: The true graph as ``--graph`` text (0-based: X = 0, Y = 1, Z = 2).
CHAIN_GRAPH = "0>1,1>2"
CHAIN_NAMES = ("X", "Y", "Z")


def _laplace(n: int, generator: torch.Generator) -> torch.Tensor:
    """Unit-variance Laplace draws by the inverse CDF (scale 1/√2), float64."""
    u = torch.rand(n, generator=generator, dtype=torch.float64) - 0.5
    return -math.sqrt(0.5) * u.sign() * torch.log1p(-2 * u.abs())


def simulate_chain(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 3) float32 draws of (X, Y, Z) from the chain SCM, seeded by ``seed``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise FluxMatchError(f"the number of SCM draws must be a positive integer, got {n!r}")
    generator = torch.Generator().manual_seed(int(seed))
    x = _laplace(n, generator)
    y = torch.sin(1.5 * x) + 0.4 * math.sqrt(3) * (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1)
    z = 0.8 * y.square() - 0.4 + 0.3 * _laplace(n, generator)
    return torch.stack([x, y, z], 1).float()


__all__ = ["simulate_chain", "CHAIN_GRAPH", "CHAIN_NAMES"]
