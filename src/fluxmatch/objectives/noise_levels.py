"""The noise of an objective: the distribution of σ, and the loss weighting across σ (docs/MATH.md §3–4).

A distribution draws a (B,) tensor of σ in data units, one per training row. A fixed σ is the
one-point distribution :class:`FixedSigma`; a continuum (:class:`LogNormal`, EDM's default, or
:class:`LogUniform`) trains one σ-conditioned field f(x, σ) for every noise level. Each
distribution also states the range a sampler starts and ends at (``sigma_max``, ``sigma_min``).

:func:`loss_weights` gives the per-row weights that make the losses at different σ comparable
(before the learned normaliser of :mod:`fluxmatch.objectives.normaliser` takes over).
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod

import torch

from ..errors import FluxMatchError, check_positive, check_sigma


class NoiseDistribution(ABC):
    """A distribution of the noise level σ > 0 (data units).

    Attributes:
        kind: the name :func:`make_noise` knows it by ("fixed", "edm", "loguniform").
        is_fixed: whether every draw is the same σ.
        sigma_min, sigma_max: the range of σ a sampler runs over (``sigma_max`` is its start).
    """

    kind: str = ""
    is_fixed: bool = False
    sigma_min: float
    sigma_max: float

    @property
    @abstractmethod
    def config(self) -> dict:
        """``{"kind": ..., **options}``, what :func:`make_noise` rebuilds the distribution from."""

    @abstractmethod
    def sample(self, b: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """(b,) noise levels σ (float32, data units)."""

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "kind")
        return f"{type(self).__name__}({options})"


class FixedSigma(NoiseDistribution):
    """The one-point distribution at σ: fixed-σ training. Draws consume no random numbers.

    Args:
        sigma: the noise level σ > 0 (data units).

    Example:
        >>> FixedSigma(0.5).sample(3)
        tensor([0.5000, 0.5000, 0.5000])
    """

    kind = "fixed"
    is_fixed = True

    def __init__(self, sigma: float) -> None:
        self.sigma = check_sigma(sigma)

    @property
    def sigma_min(self) -> float:
        """σ itself: a sampler at a fixed σ starts and ends there."""
        return self.sigma

    @property
    def sigma_max(self) -> float:
        """σ itself."""
        return self.sigma

    @property
    def config(self) -> dict:
        return {"kind": self.kind, "sigma": self.sigma}

    def sample(self, b: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """(b,) copies of σ."""
        return torch.full((b,), self.sigma, device=device)


def _check_range(sigma_min, sigma_max) -> tuple[float, float]:
    low, high = check_positive(sigma_min, "sigma_min"), check_positive(sigma_max, "sigma_max")
    if high <= low:
        raise FluxMatchError(f"sigma_max ({sigma_max}) must exceed sigma_min ({sigma_min})")
    return low, high


class LogUniform(NoiseDistribution):
    """ln σ ~ U[ln σ_min, ln σ_max] (the VE SDE's geometric noise levels).

    Args:
        sigma_min, sigma_max: the range of σ (data units), σ_max > σ_min > 0.
    """

    kind = "loguniform"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        self.sigma_min, self.sigma_max = _check_range(sigma_min, sigma_max)

    @property
    def config(self) -> dict:
        return {"kind": self.kind, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def sample(self, b: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """(b,) noise levels."""
        u = torch.rand(b, generator=generator, device=device)
        return torch.exp(math.log(self.sigma_min) + u * (math.log(self.sigma_max) - math.log(self.sigma_min)))


class LogNormal(NoiseDistribution):
    """EDM's ln σ ~ N(P_mean, P_std²) (Karras et al. 2022: P_mean = −1.2, P_std = 1.2).

    Args:
        p_mean, p_std: mean and standard deviation of ln σ.
        sigma_min, sigma_max: the sampler's range (EDM: 0.002 and 80, data units); the draws
            themselves are not truncated.
    """

    kind = "edm"

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        self.p_mean = float(p_mean)
        self.p_std = check_positive(p_std, "P_std")
        self.sigma_min, self.sigma_max = _check_range(sigma_min, sigma_max)

    @property
    def config(self) -> dict:
        return {"kind": self.kind, "p_mean": self.p_mean, "p_std": self.p_std, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def sample(self, b: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """(b,) noise levels."""
        return torch.exp(self.p_mean + self.p_std * torch.randn(b, generator=generator, device=device))


NOISE_KINDS = {"fixed": FixedSigma, "edm": LogNormal, "loguniform": LogUniform}


def make_noise(spec) -> NoiseDistribution:
    """A σ distribution from a :class:`NoiseDistribution`, a number σ > 0 (:class:`FixedSigma`),
    a name ("edm", "loguniform") or a config dict ``{"kind": "fixed" | "edm" | "loguniform", ...}``.

    Example:
        >>> make_noise(0.3).config, make_noise("edm").kind
        ({'kind': 'fixed', 'sigma': 0.3}, 'edm')
    """
    if isinstance(spec, NoiseDistribution):
        return spec
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        return FixedSigma(spec)
    if isinstance(spec, str):
        config = {"kind": spec}
    elif isinstance(spec, dict):
        config = dict(spec)
    else:
        raise FluxMatchError(f"the noise is a σ > 0, 'edm', 'loguniform', a config dict or a σ distribution, got {spec!r}")
    kind = config.pop("kind", None)
    if kind not in NOISE_KINDS:
        raise FluxMatchError(f"unknown σ distribution {kind!r}: expected one of {', '.join(NOISE_KINDS)}")
    if kind == "fixed" and "sigma" not in config:
        raise FluxMatchError("a fixed noise needs its level: give the number σ or {'kind': 'fixed', 'sigma': σ}")
    try:
        return NOISE_KINDS[kind](**config)
    except TypeError as err:
        raise FluxMatchError(f"bad options for the {kind} σ distribution {config}: {err}") from None


make_sigma_distribution = make_noise  # the name of fluxmatch 0.1


WEIGHTINGS = ("edm", "sigma2", "none", "relaxation")


def weight_factors(sigma, weighting: str, sigma_data: float = 0.5):
    """The weighting as the pair (a, τ) behind :func:`loss_weights`: a weights the regression
    and τ is the time unit the flux is measured in, so that the field's surrogate has weight a/τ.

    The objectives apply the surrogate's weight as ``· a / τ``: both factors are exactly 1 where
    fluxmatch 0.1 applied none, which keeps its numerics bit for bit. ``sigma`` is a (B,) tensor
    (the factors are then (B,) tensors) or the float σ of a fixed noise (then floats).
    """
    one = 1.0 if isinstance(sigma, float) else torch.ones_like(sigma)
    if weighting == "edm":
        return sigma**2 * (sigma**2 + sigma_data**2) / sigma_data**2, 1.0
    if weighting == "sigma2":
        return sigma**2, 1.0
    if weighting == "none":
        return one, 1.0
    if weighting == "relaxation":
        return one, sigma**2
    raise FluxMatchError(f"unknown loss weighting {weighting!r}: expected one of {', '.join(WEIGHTINGS)}")


def loss_weights(sigma, weighting: str, sigma_data: float = 0.5):
    """Per-row weights (a, b) of a loss written in score units (1/data²).

    a weights the regression |f − s|² (DSM), the potential's fit and the finite-horizon
    estimators' loss; b weights the field's surrogate of the potential estimator.

    - "edm": a = b = λ = σ²(σ² + σ_d²)/σ_d², which turns |f − s|² into EDM's preconditioned-output
      loss |F − F_target|² (f = (D − x)/σ², c_out = σσ_d/sqrt(σ² + σ_d²): λ = σ⁴/c_out²).
    - "sigma2": a = b = σ² (Song & Ermon's weighting). "none": a = b = 1.
    - "relaxation": a = 1, b = 1/σ²: the flux J = E|∇φ|²/σ² in the reference dynamics' time
      unit (one relaxation time, docs/MATH.md §3), the fixed-σ Flux Matching objective.

    Shapes: σ (B,) → two (B,) tensors; a float σ gives floats.

    Example:
        >>> loss_weights(torch.tensor([0.5]), "relaxation")
        (tensor([1.]), tensor([4.]))
    """
    a, tau = weight_factors(sigma, weighting, sigma_data)
    return a, a / tau


def loss_weight(sigma, weighting: str, sigma_data: float = 0.5):
    """The regression's weight λ(σ), the a of :func:`loss_weights` (the function of fluxmatch 0.1)."""
    return weight_factors(sigma, weighting, sigma_data)[0]
