"""Noise-level schedules for sampling a σ-conditioned field from σ_max down to 0 (docs/MATH.md §4).

A schedule is a (n + 1,) float64 tensor σ_0 > σ_1 > … > σ_{n−1} > σ_n = 0 in data units: n
positive levels from σ_0 = σ_max to σ_{n−1} = σ_min, then the final 0 that the samplers reach by
one denoising step ``x + σ_{n−1}² f(x, σ_{n−1})``. Step i of a sampler goes from σ_i to σ_{i+1}.
"""

from __future__ import annotations

import torch

from ..errors import FluxMatchError, check_positive


def _check_schedule_args(n, sigma_min, sigma_max) -> tuple[int, float, float]:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise FluxMatchError(f"the number of noise levels n must be an integer ≥ 1, got {n!r}")
    sigma_min = check_positive(sigma_min, "sigma_min")
    sigma_max = check_positive(sigma_max, "sigma_max")
    if n > 1 and not sigma_max > sigma_min:
        raise FluxMatchError(f"sigma_max ({sigma_max}) must exceed sigma_min ({sigma_min})")
    return n, sigma_min, sigma_max


def _with_final_zero(levels: torch.Tensor) -> torch.Tensor:
    return torch.cat([levels, levels.new_zeros(1)])


def edm_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (EDM, 2022) schedule: n levels evenly spaced in σ^{1/ρ}, then 0.

    ``σ_i = (σ_max^{1/ρ} + i/(n − 1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ`` for i = 0 … n − 1 and
    ``σ_n = 0``. ρ = 7 spends most steps at small σ, where the marginals change fastest; ρ → ∞
    tends to the geometric schedule. With n = 1 the schedule is [σ_max, 0] (σ_min is unused).

    Returns:
        (n + 1,) float64 tensor, strictly decreasing, in data units.
    """
    n, sigma_min, sigma_max = _check_schedule_args(n, sigma_min, sigma_max)
    rho = check_positive(rho, "rho")
    if n == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float64)
    ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    root_max, root_min = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return _with_final_zero((root_max + ramp * (root_min - root_max)) ** rho)


def geometric_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0) -> torch.Tensor:
    """Log-uniform schedule (Song & Ermon's VE levels): ``σ_i = σ_max (σ_min/σ_max)^{i/(n−1)}``, then 0.

    Returns:
        (n + 1,) float64 tensor, strictly decreasing, in data units ([σ_max, 0] when n = 1).
    """
    n, sigma_min, sigma_max = _check_schedule_args(n, sigma_min, sigma_max)
    if n == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float64)
    ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    levels = sigma_max * (sigma_min / sigma_max) ** ramp
    levels[-1] = sigma_min  # exact end point despite the power's round-off
    return _with_final_zero(levels)


def check_sigmas(sigmas) -> torch.Tensor:
    """Validate a sampling schedule and return it as a 1-D float64 CPU tensor.

    A schedule has at least two entries, is finite and strictly decreasing, and every entry is
    positive except possibly the last, which may be exactly 0 (the denoising step).

    Raises:
        FluxMatchError: naming what is wrong.
    """
    try:
        sig = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise FluxMatchError(f"sigmas must be a 1-D sequence of noise levels, got {type(sigmas).__name__}") from None
    if sig.dim() != 1 or sig.numel() < 2:
        raise FluxMatchError(f"sigmas must be a 1-D schedule with at least 2 levels (σ_max … σ_min[, 0]), got shape {tuple(sig.shape)}")
    if not torch.isfinite(sig).all():
        raise FluxMatchError("sigmas contain NaN or infinite values")
    if not bool((sig[1:] < sig[:-1]).all()):
        k = int(torch.nonzero(sig[1:] >= sig[:-1])[0])
        raise FluxMatchError(f"sigmas must be strictly decreasing (σ_max first), but σ[{k}] = {float(sig[k]):.4g} ≤ σ[{k + 1}] = {float(sig[k + 1]):.4g}")
    if not bool((sig[:-1] > 0).all()) or float(sig[-1]) < 0:
        raise FluxMatchError("sigmas must be positive, except for a final 0")
    return sig
