"""Exact log-likelihood of a flow ODE by the instantaneous change of variables (FFJORD).

A flow ``dx/dt = v(x, t)`` that carries a prior p_0 at t = 0 to the model p_1 at t = 1 has

    d/dt log p_t(x_t) = −∇·v(x_t, t),   so   log p_1(x_1) = log p_0(x_0) − ∫_0^1 ∇·v(x_t, t) dt.

To evaluate it at data x_1 we integrate the augmented state (x, ℓ) backwards from t = 1, where
ℓ = 0, to t = 0 with dx/dt = v(x, t) and dℓ/dt = ∇·v(x, t); then x(0) = x_0 and
ℓ(0) = −∫_0^1 ∇·v dt, and log p_1(x_1) = log p_0(x_0) + ℓ(0).

The divergence is exact (d products with the basis vectors, for small d) or Hutchinson's
estimate εᵀ(∂v/∂x)ε with Rademacher probes ε drawn once and held fixed along the whole
trajectory, so the augmented ODE stays deterministic (as adaptive solvers need) and the
log-likelihood estimate is unbiased.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .divergence import exact_divergence, resolve_method
from .errors import FluxMatchError, check_positive
from .fields import call_field
from .samplers.ode import METHODS, solve_ode


@dataclass
class LikelihoodResult:
    """Per-point log-likelihoods (nats) and bits per dimension, all (B,), plus the solver's NFE.

    ``log_prob = prior_log_prob + delta_log_prob`` with ``prior_log_prob = log p_0(x_0)`` and
    ``delta_log_prob = −∫_0^1 ∇·v(x_t, t) dt``. ``log_prob`` is the density of x_1 in the
    model's own coordinates; ``bits_per_dim`` is −log p / (d ln 2), in the coordinates of the
    integer data when dequantization is described (see :func:`log_likelihood`).
    """

    log_prob: torch.Tensor
    bits_per_dim: torch.Tensor
    nfe: int
    prior_log_prob: torch.Tensor
    delta_log_prob: torch.Tensor


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """(B,) log N(x; 0, I) = −|x|²/2 − (d/2) ln 2π for x (B, ...) with d entries per row."""
    flat = x.reshape(x.shape[0], -1)
    return -0.5 * flat.pow(2).sum(1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)


def _prior_log_prob(prior, x0: torch.Tensor) -> torch.Tensor:
    if prior is None:
        return standard_normal_log_prob(x0)
    out = prior.log_prob(x0) if hasattr(prior, "log_prob") else prior(x0)
    if not isinstance(out, torch.Tensor) or out.shape != (x0.shape[0],):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise FluxMatchError(f"the prior returned shape {shape} for {x0.shape[0]} points: it must give one log-density per point, (B,)")
    return out


def velocity_and_divergence(velocity, z: torch.Tensor, t: torch.Tensor, method: str, probes: torch.Tensor | None = None):
    """v(z, t) and ∇·v(z, t), detached: exact, or Hutchinson with the given probes.

    Args:
        velocity: callable ``velocity(z, t)``; if it offers ``forward_and_jvp`` (e.g.
            :class:`~fluxmatch.fields.MLPField`) the products go through forward mode.
        z: (B, ...) points with d entries each; t: (B,) times.
        method: "exact" or "hutchinson".
        probes: (B, k, d) Rademacher probes for "hutchinson" (ignored by "exact").

    Returns:
        v shaped like z and (B,) divergence (the mean of εᵀ(∂v/∂z)ε over the k probes for Hutchinson).
    """
    b, d = z.shape[0], z[0].numel()
    if hasattr(velocity, "forward_and_jvp"):
        tangents = torch.eye(d, dtype=z.dtype, device=z.device).expand(b, d, d) if method == "exact" else probes
        with torch.no_grad():
            v, jt = velocity.forward_and_jvp(z.detach(), t, tangents)
        if v.shape != z.shape:
            raise FluxMatchError(f"the field returned shape {tuple(v.shape)} for input of shape {tuple(z.shape)}")
        div = (jt * tangents).sum((1, 2))
        return v, div if method == "exact" else div / tangents.shape[1]
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        v = call_field(velocity, z, t)
        if not v.requires_grad:  # v does not depend on z (or on anything differentiable)
            return v.detach(), v.new_zeros(b)
        if method == "exact":
            div = exact_divergence(v, z)
        else:
            div = v.new_zeros(b)
            for k in range(probes.shape[1]):
                eps = probes[:, k].reshape(z.shape)
                (g,) = torch.autograd.grad(v, z, eps, retain_graph=True, materialize_grads=True)
                div = div + (g * eps).reshape(b, -1).sum(1)
            div = div / probes.shape[1]
    return v.detach(), div.detach()


def log_likelihood(
    velocity,
    x1: torch.Tensor,
    method: str = "dopri5",
    steps: int = 100,
    divergence: str = "auto",
    n_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    prior=None,
    dequantization_bits: int | None = None,
    data_scale: float | None = None,
    generator: torch.Generator | None = None,
) -> LikelihoodResult:
    """log p_1(x_1) of data under the flow ``dx/dt = v(x, t)`` from the prior at t = 0 to t = 1.

    Args:
        velocity: callable ``velocity(x, t)`` with x (B, ...) and t a (B,) tensor, returning a
            tensor shaped like x (e.g. ``MLPField(d, conditioning="time")``).
        x1: (B, ...) data points at t = 1, d entries each.
        method: ODE solver for the backward pass, "euler", "midpoint", "heun" (``steps`` fixed
            steps) or "dopri5" (adaptive, tolerances ``rtol``/``atol`` on the augmented state).
        steps: number of fixed steps ≥ 1.
        divergence: "exact", "hutchinson", or "auto" (exact when d ≤ 8).
        n_probes: Rademacher probes per point for Hutchinson, drawn once and held fixed along
            the trajectory.
        rtol, atol: dopri5 tolerances.
        prior: log-density of p_0: an object with ``log_prob(x0) -> (B,)`` (e.g.
            :class:`~fluxmatch.reference.GaussianMixture`) or a callable ``x0 -> (B,)``;
            None means the standard normal N(0, I).
        dequantization_bits: b when x_1 comes from integer data k ∈ {0, …, 2^b − 1} per
            coordinate, dequantized as y = k + u with u ~ U[0, 1)^d (done by the caller) and
            mapped affinely to the model's space as x_1 = data_scale · y + shift. The density
            of y is then p_y(y) = p_1(x_1) · data_scale^d, so
            ``bits_per_dim = −(log p_1(x_1) + d ln data_scale) / (d ln 2)``, the standard
            (upper bound on the) bits per dimension of the discrete data.
        data_scale: the factor c > 0 above; defaults to 2^−b (data scaled to [0, 1), where the
            extra term is exactly +b bits/dim). Use 2 / 2^b for data scaled to [−1, 1).
            Only meaningful together with ``dequantization_bits``.
        generator: torch.Generator for the Hutchinson probes.

    Returns:
        :class:`LikelihoodResult`; ``log_prob`` is in nats in the model's coordinates and
        ``bits_per_dim`` is −log_prob / (d ln 2) plus the dequantization term when given.

    Raises:
        FluxMatchError: bad x1, method, steps, divergence method, probe count, prior output,
            dequantization settings, or a solution that becomes non-finite.
    """
    if not isinstance(x1, torch.Tensor) or x1.dim() < 2 or x1.shape[0] == 0 or x1[0].numel() == 0:
        raise FluxMatchError("x1 must be a non-empty tensor of shape (B, ...) with a batch dimension and at least one coordinate")
    if not x1.is_floating_point():
        x1 = x1.to(torch.get_default_dtype())
    if not torch.isfinite(x1).all():
        raise FluxMatchError("x1 contains NaN or infinite values")
    if method not in METHODS:
        raise FluxMatchError(f"unknown ODE method {method!r}: expected one of {METHODS}")
    if isinstance(n_probes, bool) or not isinstance(n_probes, int) or n_probes < 1:
        raise FluxMatchError(f"Hutchinson needs an integer number of probes ≥ 1, got {n_probes!r}")
    if dequantization_bits is None:
        if data_scale is not None:
            raise FluxMatchError("data_scale only applies together with dequantization_bits: pass the number of bits of the integer data")
        log_scale = 0.0
    else:
        if isinstance(dequantization_bits, bool) or not isinstance(dequantization_bits, int) or dequantization_bits < 1:
            raise FluxMatchError(f"dequantization_bits must be an integer ≥ 1, got {dequantization_bits!r}")
        scale = 2.0**-dequantization_bits if data_scale is None else check_positive(data_scale, "data_scale")
        log_scale = math.log(scale)

    batch, d = x1.shape[0], x1[0].numel()
    div_method = resolve_method(divergence, d)
    probes = None
    if div_method == "hutchinson":
        probes = torch.empty(batch, n_probes, d, dtype=x1.dtype).bernoulli_(0.5, generator=generator).mul_(2).sub_(1)
        probes = probes.to(x1.device)

    def augmented(state: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """d/dt (x, ℓ) = (v(x, t), ∇·v(x, t)) on the flattened state (B, d + 1)."""
        z = state[:, :d].reshape(x1.shape)
        v, div = velocity_and_divergence(velocity, z, t, div_method, probes)
        return torch.cat([v.reshape(batch, d), div[:, None].to(v.dtype)], dim=1)

    state1 = torch.cat([x1.detach().reshape(batch, d), x1.new_zeros(batch, 1)], dim=1)
    solution = solve_ode(augmented, state1, t0=1.0, t1=0.0, method=method, steps=steps, rtol=rtol, atol=atol)
    x0 = solution.x[:, :d].reshape(x1.shape)
    delta = solution.x[:, d]
    prior_lp = _prior_log_prob(prior, x0).to(delta.dtype)
    log_prob = prior_lp + delta
    bits_per_dim = -(log_prob + d * log_scale) / (d * math.log(2))
    return LikelihoodResult(log_prob, bits_per_dim, solution.nfe, prior_lp, delta)
