"""Horizon samplers q(t) on [0, H] for the Flux Matching estimator (docs/MATH.md §3).

The estimator integrates over the horizon t by importance sampling: a draw t ~ q enters the loss
with weight 1/q(t), so any q with full support gives the same expectation and only the
variance changes. Draws are stratified: the i-th of B draws uses the uniform variate
(π_i + U_i)/B for a random permutation π, which keeps the batch's horizons spread over [0, H].
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..dynamics import check_horizon
from ..errors import FluxMatchError


def _stratified_uniform(n: int, stratified: bool, device=None) -> torch.Tensor:
    u = torch.rand(n, device=device)
    if not stratified:
        return u
    return (torch.randperm(n, device=device) + u) / n


class UniformHorizon(nn.Module):
    """q(t) = 1/H on [0, H]. No parameters."""

    def __init__(self, horizon: float = 4.0, stratified: bool = True) -> None:
        super().__init__()
        self.horizon = check_horizon(horizon)
        self.stratified = stratified

    def sample(self, n: int, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, q(t)), each (n,)."""
        t = _stratified_uniform(n, self.stratified, sigma.device) * self.horizon
        return t, torch.full_like(t, 1.0 / self.horizon)

    def reinforce_loss(self, t: torch.Tensor, sigma: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)


class ExponentialHorizon(nn.Module):
    """Learned truncated exponential ``q(t) = λ e^{−λt} / (1 − e^{−λH})`` on [0, H].

    ``λ(σ) = λ_min + softplus(g(ln σ / 4))`` with a small MLP g, trained by REINFORCE to minimise
    the second moment of the importance-weighted gradient signal (docs/MATH.md §3): for a per-sample
    reward R = |weighted signal|², the surrogate ``−sg(R / mean R) · log q(t)`` has gradient
    ``−E[R ∇log q]`` (scaled), the gradient of E_q[R] with respect to q's parameters.

    Shapes: ``sigma`` is a (n,) or scalar tensor of noise levels; ``t`` and densities are (n,).
    """

    def __init__(self, horizon: float = 4.0, hidden: int = 32, min_rate: float = 1.0, stratified: bool = True) -> None:
        super().__init__()
        self.horizon = check_horizon(horizon)
        self.min_rate = float(min_rate)
        self.stratified = stratified
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def rate(self, sigma: torch.Tensor) -> torch.Tensor:
        """(n,) λ(σ) ≥ λ_min."""
        feature = (torch.as_tensor(sigma).reshape(-1, 1).log() / 4).to(self.net[0].weight.dtype)
        return self.min_rate + F.softplus(self.net(feature)[:, 0])

    def log_density(self, t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        lam = self.rate(sigma)
        return lam.log() - lam * t - torch.log(-torch.expm1(-lam * self.horizon))

    def sample(self, n: int, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, q(t)) by inverse CDF, each (n,)."""
        with torch.no_grad():
            lam = self.rate(sigma).expand(n) if torch.as_tensor(sigma).numel() == 1 else self.rate(sigma)
            u = _stratified_uniform(n, self.stratified, lam.device)
            t = (-torch.log1p(-u * -torch.expm1(-lam * self.horizon)) / lam).clamp(0.0, self.horizon)
            q = torch.exp(lam.log() - lam * t - torch.log(-torch.expm1(-lam * self.horizon)))
        return t, q

    def reinforce_loss(self, t: torch.Tensor, sigma: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
        """(n,) per-sample REINFORCE surrogate; only q's parameters receive its gradient."""
        reward = reward.detach()
        scaled = reward / reward.mean().clamp_min(1e-30)
        sigma = torch.as_tensor(sigma).reshape(-1).expand(t.shape[0])
        return -scaled * self.log_density(t.detach(), sigma)


HORIZON_SAMPLERS = {"uniform": UniformHorizon, "exponential": ExponentialHorizon}


def make_horizon_sampler(kind: str | nn.Module, horizon: float, stratified: bool = True) -> nn.Module:
    """A horizon sampler by name ("uniform", "exponential") or the module given."""
    if isinstance(kind, nn.Module):
        return kind
    if kind not in HORIZON_SAMPLERS:
        raise FluxMatchError(f"unknown horizon sampler {kind!r}: expected one of {sorted(HORIZON_SAMPLERS)}")
    return HORIZON_SAMPLERS[kind](horizon=horizon, stratified=stratified)

