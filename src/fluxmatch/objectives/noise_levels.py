"""Distributions of the noise level σ for noise-annealed training (docs/MATH.md §4).

Each draws a (B,) tensor of σ in data units: one σ per training example. ``weight(σ)`` is the
loss weighting that makes the per-σ denoising losses comparable before the learned normaliser
takes over (see :mod:`fluxmatch.objectives.normaliser`).
"""

from __future__ import annotations

import math

import torch

from ..errors import FluxMatchError, check_positive, check_sigma


class FixedSigma:
    """A one-point σ distribution: every row gets the same σ (fixed-σ training is this case)."""

    kind = "fixed"

    def __init__(self, sigma: float = 0.2236) -> None:
        self.sigma = check_sigma(sigma)

    @property
    def config(self) -> dict:
        return {"kind": self.kind, "sigma": self.sigma}

    def sample(self, b: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """(b,) copies of σ (no random draws)."""
        return torch.full((b,), self.sigma, device=device)


class LogUniform:
    """ln σ ~ U[ln σ_min, ln σ_max] (the VE SDE's geometric noise levels)."""

    kind = "loguniform"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        self.sigma_min = check_positive(sigma_min, "sigma_min")
        self.sigma_max = check_positive(sigma_max, "sigma_max")
        if self.sigma_max <= self.sigma_min:
            raise FluxMatchError(f"sigma_max ({sigma_max}) must exceed sigma_min ({sigma_min})")

    @property
    def config(self) -> dict:
        return {"kind": self.kind, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def sample(self, b: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """(b,) noise levels."""
        u = torch.rand(b, generator=generator, device=device)
        return torch.exp(math.log(self.sigma_min) + u * (math.log(self.sigma_max) - math.log(self.sigma_min)))


class LogNormal:
    """EDM's ln σ ~ N(P_mean, P_std²) (Karras et al. 2022: P_mean = −1.2, P_std = 1.2)."""

    kind = "edm"

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2) -> None:
        self.p_mean = float(p_mean)
        self.p_std = check_positive(p_std, "P_std")

    @property
    def config(self) -> dict:
        return {"kind": self.kind, "p_mean": self.p_mean, "p_std": self.p_std}

    def sample(self, b: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """(b,) noise levels."""
        return torch.exp(self.p_mean + self.p_std * torch.randn(b, generator=generator, device=device))


SIGMA_DISTRIBUTIONS = {"fixed": FixedSigma, "loguniform": LogUniform, "edm": LogNormal}


def make_sigma_distribution(spec) -> FixedSigma | LogUniform | LogNormal:
    """A σ distribution from a number σ (a one-point distribution), a name ("edm", "loguniform")
    or a config dict ``{"kind": "fixed" | "edm" | "loguniform", ...}``."""
    if isinstance(spec, (FixedSigma, LogUniform, LogNormal)):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return FixedSigma(spec)
    config = {"kind": spec} if isinstance(spec, str) else dict(spec or {})
    kind = config.pop("kind", None)
    if kind not in SIGMA_DISTRIBUTIONS:
        raise FluxMatchError(f"unknown σ distribution {kind!r}: expected one of {', '.join(SIGMA_DISTRIBUTIONS)}")
    try:
        return SIGMA_DISTRIBUTIONS[kind](**config)
    except TypeError as err:
        raise FluxMatchError(f"bad σ distribution options {config}: {err}") from None


WEIGHTINGS = ("edm", "sigma2", "none")


def loss_weight(sigma: torch.Tensor, weighting: str, sigma_data: float = 0.5) -> torch.Tensor:
    """Weight λ(σ) of a loss written in score units, |f − s|² (units 1/data²).

    "edm": λ = σ²(σ² + σ_d²)/σ_d², which turns |f − s|² into EDM's preconditioned-output loss
    |F − F_target|² (f = (D − x)/σ², c_out = σσ_d/sqrt(σ² + σ_d²): λ = σ⁴/c_out²).
    "sigma2": λ = σ² (Song & Ermon's weighting). "none": λ = 1. Shapes: (B,) → (B,).
    """
    if weighting == "edm":
        return sigma.square() * (sigma.square() + sigma_data**2) / sigma_data**2
    if weighting == "sigma2":
        return sigma.square()
    if weighting == "none":
        return torch.ones_like(sigma)
    raise FluxMatchError(f"unknown loss weighting {weighting!r}: expected one of {', '.join(WEIGHTINGS)}")
