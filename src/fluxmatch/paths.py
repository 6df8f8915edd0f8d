"""Gaussian probability paths of conditional Flow Matching (Lipman et al. 2023).

t = 0 is noise x0 ~ N(0, I), t = 1 is data x1, and ``x_t = α_t x1 + σ_t x0`` with conditional
velocity ``u_t = α'_t x1 + σ'_t x0``. Each path is its schedule (α_t, σ_t) and closed-form
derivatives.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from .errors import FluxMatchError, check_positive


@dataclass
class PathSample:
    """x0, x1, x_t and the target velocity, shaped like the batch; t is (B,)."""

    x0: torch.Tensor
    x1: torch.Tensor
    t: torch.Tensor
    xt: torch.Tensor
    velocity: torch.Tensor


class GaussianPath(ABC):
    """Base class: subclasses define α_t, σ_t and their t-derivatives for t a tensor."""

    @abstractmethod
    def alpha(self, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def sigma(self, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def d_alpha(self, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def d_sigma(self, t: torch.Tensor) -> torch.Tensor: ...

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        """``x_t = α_t x1 + σ_t x0`` and ``u_t = α'_t x1 + σ'_t x0``.

        Shapes: x0, x1 (B, ...) alike; t (B,), broadcast over the event shape. Returns a
        :class:`PathSample` whose xt and velocity are shaped like x1.
        """
        if x0.shape != x1.shape:
            raise FluxMatchError(f"noise and data must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
        if t.shape != x1.shape[:1]:
            raise FluxMatchError(f"t must have shape (B,) = ({x1.shape[0]},), got {tuple(t.shape)}")
        shape = (-1,) + (1,) * (x1.ndim - 1)
        a, s = self.alpha(t).reshape(shape), self.sigma(t).reshape(shape)
        da, ds = self.d_alpha(t).reshape(shape), self.d_sigma(t).reshape(shape)
        return PathSample(x0, x1, t, a * x1 + s * x0, da * x1 + ds * x0)


class OTPath(GaussianPath):
    """Optimal-transport path: α_t = t, σ_t = 1 − (1 − σ_min) t; α'_t = 1, σ'_t = −(1 − σ_min).

    x_t runs on a straight line from x0 (t = 0) to x1 + σ_min x0 (t = 1).
    """

    def __init__(self, sigma_min: float = 1e-4) -> None:
        # σ_min = 0 is allowed (the straight-line interpolant); σ_1 = σ_min must stay below σ_0 = 1.
        try:
            value = float(sigma_min)
        except (TypeError, ValueError):
            value = math.nan
        if not 0 <= value < 1:
            raise FluxMatchError(f"σ_min must be a number in [0, 1), got {sigma_min!r}")
        self.sigma_min = value

    @property
    def config(self) -> dict:
        return {"name": "ot", "sigma_min": self.sigma_min}

    def alpha(self, t):
        return t

    def sigma(self, t):
        return 1 - (1 - self.sigma_min) * t

    def d_alpha(self, t):
        return torch.ones_like(t)

    def d_sigma(self, t):
        return torch.full_like(t, -(1 - self.sigma_min))


class VPPath(GaussianPath):
    """Variance-preserving diffusion as a flow path (Lipman et al. eq. 19, t reversed):

        α_t = exp(−½ T(1 − t)),   σ_t = sqrt(1 − α_t²),   T(s) = β_min s + ½ (β_max − β_min) s²,
        α'_t = ½ T'(1 − t) α_t with T'(s) = β_min + (β_max − β_min) s,   σ'_t = −α_t α'_t / σ_t.

    At t = 1, α = 1 and σ = 0 (data); at t = 0, α = exp(−½T(1)) ≈ 0 (e^−5.025 by default).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        self.beta_min = check_positive(beta_min, "β_min")
        self.beta_max = check_positive(beta_max, "β_max")
        if self.beta_max < self.beta_min:
            raise FluxMatchError(f"β_max must be at least β_min, got {beta_max} < {beta_min}")

    @property
    def config(self) -> dict:
        return {"name": "vp", "beta_min": self.beta_min, "beta_max": self.beta_max}

    def _big_t(self, s):
        return self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s**2

    def alpha(self, t):
        return torch.exp(-0.5 * self._big_t(1 - t))

    def sigma(self, t):
        return (1 - self.alpha(t) ** 2).clamp_min(0).sqrt()

    def d_alpha(self, t):
        beta = self.beta_min + (self.beta_max - self.beta_min) * (1 - t)  # T'(1 − t)
        return 0.5 * beta * self.alpha(t)

    def d_sigma(self, t):
        # d/dt sqrt(1 − α²) = −α α' / σ; σ → 0 only at t = 1, where the clamp keeps it finite.
        a = self.alpha(t)
        return -a * self.d_alpha(t) / self.sigma(t).clamp_min(1e-12)


class VEPath(GaussianPath):
    """Variance-exploding path: α_t = 1, σ_t = σ_min (σ_max/σ_min)^{1−t}; σ'_t = −ln(σ_max/σ_min) σ_t.

    Its t = 0 end is x1 + σ_max x0, not N(0, I): its ODE starts from σ_max·N(0, I), which
    approximates that end when σ_max dominates the data's spread.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 5.0) -> None:
        self.sigma_min = check_positive(sigma_min, "σ_min")
        self.sigma_max = check_positive(sigma_max, "σ_max")
        if self.sigma_max <= self.sigma_min:
            raise FluxMatchError(f"σ_max must exceed σ_min, got {sigma_max} ≤ {sigma_min}")

    @property
    def config(self) -> dict:
        return {"name": "ve", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def alpha(self, t):
        return torch.ones_like(t)

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** (1 - t)

    def d_alpha(self, t):
        return torch.zeros_like(t)

    def d_sigma(self, t):
        return -math.log(self.sigma_max / self.sigma_min) * self.sigma(t)


PATHS = {"ot": OTPath, "vp": VPPath, "ve": VEPath}


def make_path(name, **kwargs) -> GaussianPath:
    """A path by name ("ot", "vp", "ve") with constructor arguments ``kwargs``, or the path given."""
    if isinstance(name, GaussianPath):
        return name
    if not isinstance(name, str) or name not in PATHS:
        raise FluxMatchError(f"unknown probability path {name!r}: expected one of {', '.join(PATHS)}")
    try:
        return PATHS[name](**kwargs)
    except TypeError as err:
        raise FluxMatchError(f"bad arguments {kwargs} for the {name!r} path: {err}") from None
