"""Reference dynamics of the Flux Matching estimator (docs/MATH.md §3).

The estimator needs pairs ``(x0, X_t)`` from a p-reversible Markov kernel run for a time t,
the derivative ``∂X_t/∂x0`` that carries ``∇r(X_t)`` back to ``x0``, and the Gaussian transition
density used to share each endpoint among all start points (Rao-Blackwellisation).
Two kernels are provided, both in the σ²-preconditioned time unit (one unit = one relaxation
time of a component of width σ):

- :func:`component_ou` (default): pick the mixture component that produced x0 and run its exact
  Ornstein-Uhlenbeck process, ``X_t = μ + ρ(x0 − μ) + sqrt(v(1 − ρ²)) ξ``, ``ρ = exp(−tσ²/v)``.
  ``p(x)K_t(x, y) = Σ_k π_k N_k(x) OU_k(y | x)`` is symmetric, so the kernel is exactly
  p-reversible, needs no score evaluation and no time stepping, and ``∂X_t/∂x0 = ρ I``
  exactly for the chosen component.
- :func:`reference_langevin`: the paper's choice, the Langevin diffusion
  ``dX = σ² s(X) dt + sqrt(2σ²) dW`` of the whole reference, simulated with K exponential-
  integrator substeps, with ``∂X_t/∂x0 ≈ e^{−t} I`` (exact for one Gaussian).

For one Gaussian both are the same exact OU process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import FluxMatchError
from .reference import ComponentDraw, GaussianMixture

DYNAMICS = ("component", "langevin")


@dataclass
class ReferencePaths:
    """Start and end points of the reference dynamics, flattened to (B, d).

    The Gaussian transition from start point i over a time t is modelled as
    ``N(anchor_i + ρ_i(t) · offset_i, variance_i (1 − ρ_i(t)²) I)`` with
    ``ρ_i(t) = exp(−rate_i t)``; ``transport`` holds ρ_i(t_i) for each pair's own horizon.

    Attributes:
        start: (B, d) x0.
        end: (B, d) X_t.
        t: (B,) horizons.
        anchor, offset: (B, d) transition mean parameters.
        variance, rate: (B,) stationary variance and relaxation rate of each start's kernel.
    """

    start: torch.Tensor
    end: torch.Tensor
    t: torch.Tensor
    anchor: torch.Tensor
    offset: torch.Tensor
    variance: torch.Tensor
    rate: torch.Tensor

    @property
    def transport(self) -> torch.Tensor:
        """(B,) ∂X_t/∂x0 = ρ_i(t_i) (a multiple of the identity)."""
        return torch.exp(-self.rate * self.t)


def component_ou(draw: ComponentDraw, t: torch.Tensor, sigma: float) -> ReferencePaths:
    """Exact OU paths of each start point's own mixture component.

    Args:
        draw: start points with their component means (B, d), variances (B,), unit noises (B, d).
        t: (B,) horizons ≥ 0.
        sigma: preconditioning scale σ (the time unit is σ²).
    """
    rate = sigma**2 / draw.variance
    rho = torch.exp(-rate * t)[:, None]
    offset = draw.x - draw.mean
    spread = (draw.variance[:, None] * (1 - rho.square())).clamp_min(0).sqrt()
    end = draw.mean + rho * offset + spread * torch.randn_like(draw.x)
    return ReferencePaths(draw.x, end, t, draw.mean, offset, draw.variance, rate)


def reference_langevin(
    reference: GaussianMixture, start: torch.Tensor, t: torch.Tensor, sigma: float, substeps: int = 4
) -> ReferencePaths:
    """The paper's reference dynamics: K exponential-integrator steps of σ²-preconditioned Langevin.

    Each substep of length h = t/K is ``z ← z + (1 − e^{−h}) σ² s(z) + σ sqrt(1 − e^{−2h}) ξ``.
    The transition from x0 is modelled as N(e^{−t} x0 + (1 − e^{−t})(x0 + σ² s(x0)), σ²(1 − e^{−2t})).
    """
    if substeps < 1:
        raise FluxMatchError(f"the reference dynamics need at least one substep, got {substeps}")
    s2 = sigma**2
    rho_h = torch.exp(-t / substeps)[:, None]
    noise_scale = sigma * (1 - rho_h.square()).clamp_min(0).sqrt()
    score0 = reference.score(start)
    z = start
    for k in range(substeps):
        s = score0 if k == 0 else reference.score(z)
        z = z + (1 - rho_h) * s2 * s + noise_scale * torch.randn_like(z)
    mean_shift = s2 * score0
    b = start.shape[0]
    return ReferencePaths(
        start, z, t, start + mean_shift, -mean_shift, start.new_full((b,), s2), start.new_ones(b)
    )


_MIN_RELATIVE_VARIANCE = 1e-3  # floor on 1 − ρ², keeping float32 logits accurate for t → 0


def _shared_kernel(paths: ReferencePaths) -> bool:
    return bool((paths.rate == paths.rate[0]).all() and (paths.variance == paths.variance[0]).all())


def transition_weights(paths: ReferencePaths, ends: slice | None = None) -> torch.Tensor:
    """(B_sources, C) posterior weights of each start point given each endpoint in ``ends``.

    ``W_ij ∝ N(X_j; anchor_i + ρ_i(t_j) offset_i, variance_i (1 − ρ_i(t_j)²))``, normalised over
    sources i for every endpoint j, so ``Σ_i W_ij u(x0_i)`` estimates ``E[u(X_0) | X_t = X_j]``.
    (1 − ρ²) is floored at 1e-3 so that the weights stay well conditioned as t → 0.
    """
    ends = slice(None) if ends is None else ends
    a, o = paths.anchor, paths.offset
    x_end, t = paths.end[ends], paths.t[ends]
    d = a.shape[1]
    if _shared_kernel(paths):
        # |a_i + ρ_j o_i − X_j|² as one product of per-source and per-endpoint features
        center = a.mean(0)
        a, x_end = a - center, x_end - center
        rho = torch.exp(-paths.rate[0] * t)[:, None]  # (C, 1)
        tvar = paths.variance[0] * (1 - rho.square()).clamp_min(_MIN_RELATIVE_VARIANCE)
        ones = torch.ones_like(a[:, :1])
        src = torch.cat([a.square().sum(1, keepdim=True), 2 * (a * o).sum(1, keepdim=True), o.square().sum(1, keepdim=True), a, o, ones], 1)
        end = torch.cat([torch.ones_like(rho), rho, rho.square(), -2 * x_end, -2 * rho * x_end, x_end.square().sum(1, keepdim=True)], 1)
        logits = (end * (-0.5 / tvar)) @ src.T  # (C, B)
        return torch.softmax(logits, dim=1).T
    rho = torch.exp(-paths.rate[:, None] * t[None, :])  # (B, C)
    dist_a = torch.addmm(a.square().sum(1, keepdim=True) + x_end.square().sum(1)[None], a, x_end.T, alpha=-2.0)
    cross = (a * o).sum(1, keepdim=True) - o @ x_end.T  # o_i · (a_i − X_j)
    sq = (dist_a + 2 * rho * cross + rho.square() * o.square().sum(1, keepdim=True)).clamp_min(0)
    tvar = paths.variance[:, None] * (1 - rho.square()).clamp_min(_MIN_RELATIVE_VARIANCE)
    return torch.softmax(-0.5 * sq / tvar - 0.5 * d * tvar.log(), dim=0)


def transport_back(
    paths: ReferencePaths,
    end_values: torch.Tensor,
    rao_blackwell: bool = True,
    transport: bool = True,
    chunk_elements: int = 2**22,
) -> torch.Tensor:
    """Carry endpoint vectors back to the start points: (B, d) estimates of ``E[(∂X_t/∂x0)ᵀ v(X_t) | x0_i]``.

    Without Rao-Blackwellisation start i receives ``ρ_i(t_i) v_i`` from its own endpoint; with it,
    ``Σ_j W_ij ρ_i(t_j) v_j`` from every endpoint, weighted by :func:`transition_weights`.
    With ``transport=False`` the factor ρ is left out (for scalar endpoint values that are not
    gradients). Endpoints are processed in chunks so that at most ``chunk_elements`` weights
    exist at once.
    """
    if not rao_blackwell:
        return paths.transport[:, None] * end_values if transport else end_values
    b = paths.start.shape[0]
    out = end_values.new_zeros(b, end_values.shape[1])
    shared = _shared_kernel(paths)
    step = max(1, chunk_elements // max(1, b))
    for first in range(0, paths.end.shape[0], step):
        ends = slice(first, min(paths.end.shape[0], first + step))
        w = transition_weights(paths, ends)
        if not transport:
            out += w @ end_values[ends]
        elif shared:
            out += w @ (paths.transport[ends, None] * end_values[ends])
        else:
            rho = torch.exp(-paths.rate[:, None] * paths.t[None, ends])
            out += (w * rho) @ end_values[ends]
    return out


def check_horizon(horizon: float) -> float:
    if not (math.isfinite(horizon) and horizon > 0):
        raise FluxMatchError(f"the horizon H must be positive and finite, got {horizon}")
    return float(horizon)
