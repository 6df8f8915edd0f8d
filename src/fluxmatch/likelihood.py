"""Exact log-likelihood of a flow ODE by the instantaneous change of variables (FFJORD).

Two flows are covered: a flow-matching velocity ``dx/dt = v(x, t)`` (:func:`log_likelihood`,
below) and the probability-flow ODE of a σ-conditioned field (:func:`probability_flow_log_likelihood`).

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
from .fields import ForwardModeField, call_field
from .samplers.ode import METHODS, solve_ode


@dataclass
class LikelihoodResult:
    """Per-point log-likelihoods (nats) and bits per dimension, all (B,), plus the solver's NFE.

    ``log_prob = prior_log_prob + delta_log_prob``: the prior's log-density at the far end of the
    flow plus the change of log-density along it (for :func:`log_likelihood`,
    ``prior_log_prob = log p_0(x_0)`` and ``delta_log_prob = −∫_0^1 ∇·v(x_t, t) dt``; for
    :func:`probability_flow_log_likelihood`, see there). ``log_prob`` is the density of the data
    point in the model's own coordinates; ``bits_per_dim`` is −log p / (d ln 2), in the
    coordinates of the integer data when dequantization is described (see :func:`log_likelihood`).
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


def _check_points(x, name: str) -> torch.Tensor:
    """x as a floating (B, ...) tensor with B ≥ 1 and d ≥ 1 finite entries per row, or raise."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0 or x[0].numel() == 0:
        raise FluxMatchError(f"{name} must be a non-empty tensor of shape (B, ...) with a batch dimension and at least one coordinate")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if not torch.isfinite(x).all():
        raise FluxMatchError(f"{name} contains NaN or infinite values")
    return x


def _check_probes(n_probes) -> None:
    if isinstance(n_probes, bool) or not isinstance(n_probes, int) or n_probes < 1:
        raise FluxMatchError(f"Hutchinson needs an integer number of probes ≥ 1, got {n_probes!r}")


def _dequantization_log_scale(dequantization_bits, data_scale) -> float:
    """ln c for the affine map x = c · (k + u) + shift from dequantized integers to the model's space; 0 without one."""
    if dequantization_bits is None:
        if data_scale is not None:
            raise FluxMatchError("data_scale only applies together with dequantization_bits: pass the number of bits of the integer data")
        return 0.0
    if isinstance(dequantization_bits, bool) or not isinstance(dequantization_bits, int) or dequantization_bits < 1:
        raise FluxMatchError(f"dequantization_bits must be an integer ≥ 1, got {dequantization_bits!r}")
    scale = 2.0**-dequantization_bits if data_scale is None else check_positive(data_scale, "data_scale")
    return math.log(scale)


def _rademacher_probes(batch: int, n_probes: int, d: int, like: torch.Tensor, generator) -> torch.Tensor:
    """(B, k, d) ±1 probes, drawn on the CPU from ``generator`` and moved to ``like``'s device."""
    probes = torch.empty(batch, n_probes, d, dtype=like.dtype).bernoulli_(0.5, generator=generator).mul_(2).sub_(1)
    return probes.to(like.device)


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
    if isinstance(velocity, ForwardModeField):
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
    x1 = _check_points(x1, "x1")
    if method not in METHODS:
        raise FluxMatchError(f"unknown ODE method {method!r}: expected one of {METHODS}")
    _check_probes(n_probes)
    log_scale = _dequantization_log_scale(dequantization_bits, data_scale)

    batch, d = x1.shape[0], x1[0].numel()
    div_method = resolve_method(divergence, d)
    probes = _rademacher_probes(batch, n_probes, d, x1, generator) if div_method == "hutchinson" else None

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


def probability_flow_log_likelihood(
    field,
    x: torch.Tensor,
    sigma_min: float,
    sigma_max: float,
    method: str = "dopri5",
    steps: int = 100,
    divergence: str = "auto",
    n_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    prior=None,
    data_variance: float = 0.0,
    dequantization_bits: int | None = None,
    data_scale: float | None = None,
    generator: torch.Generator | None = None,
) -> LikelihoodResult:
    """log p_{σ_min}(x) under a σ-conditioned field by its probability-flow ODE (docs/MATH.md §4).

    The field f(x, σ) ≈ ∇log p_σ(x), p_σ = p_data ∗ N(0, σ²I), defines the probability-flow ODE
    ``dx/dσ = −σ f(x, σ)``, which carries p_σ to p_σ' for every pair of levels. Along a path
    going up in σ the continuity equation gives ``d/dσ log p_σ(x(σ)) = −∇·(−σ f) = σ ∇·f(x(σ), σ)``.
    We integrate the augmented state (x, Δ) from x at σ_min, Δ = 0, up to σ_max in the variable
    u = ln σ (as :func:`~fluxmatch.samplers.probability_flow` does):

        dx/du = −σ² f(x, σ),   dΔ/du = σ² ∇·f(x, σ),   σ = e^u,

    then ``log p_{σ_min}(x) = log p_{σ_max}(x(σ_max)) − Δ(σ_max)``, so
    ``prior_log_prob = log p_{σ_max}(x(σ_max))`` and ``delta_log_prob = −Δ(σ_max)``.

    What is measured: log p_{σ_min}(x), the density of the data smoothed by N(0, σ_min² I). For
    continuous data and σ_min small against the data's scale this approximates log p_data(x).
    For integer data (images), the caller dequantizes, y = k + u with u ~ U[0, 1)^d, and maps
    x = data_scale · y + shift; with ``dequantization_bits`` b the result carries
    ``bits_per_dim = −(log p_{σ_min}(x) + d ln data_scale) / (d ln 2)``, the usual upper bound on
    the bits per dimension of the discrete data (``data_scale`` defaults to 2^−b, i.e. data in
    [0, 1); pass 2/2^b for [−1, 1)).

    The prior: p_{σ_max} is really p_data ∗ N(0, σ_max² I). By default it is approximated by
    N(0, (σ_max² + data_variance) I), the isotropic Gaussian with the smoothed density's
    per-coordinate variance when the data are centred with per-coordinate variance
    ``data_variance`` (0 gives the plain N(0, σ_max² I); its error in log p is of order
    |E x| / σ_max + d Var x / σ_max², so σ_max must dwarf the data). Exact for Gaussian data
    N(0, data_variance · I); any other prior can be passed as ``prior``.

    Args:
        field: σ-conditioned field ``field(x, σ)`` with σ a (B,) tensor (units 1/data); if it
            offers ``forward_and_jvp`` (e.g. ``MLPField(d, conditioning="sigma")``) the
            divergence goes through forward mode.
        x: (B, ...) data points with d entries each, data units.
        sigma_min, sigma_max: noise levels 0 < σ_min < σ_max, data units.
        method: solver in u = ln σ: "dopri5" (adaptive, ``rtol``/``atol`` on the augmented state)
            or "euler", "midpoint", "heun" with ``steps`` fixed steps evenly spaced in ln σ.
        steps: number of fixed steps ≥ 1.
        divergence: "exact", "hutchinson" (Rademacher probes drawn once and held fixed along the
            path, so the estimate is unbiased), or "auto" (exact when d ≤ 8).
        n_probes: Hutchinson probes per point.
        rtol, atol: dopri5 tolerances.
        prior: log-density of p_{σ_max}: an object with ``log_prob(z) -> (B,)`` or a callable
            ``z -> (B,)`` (e.g. ``GaussianMixture.smoothed(σ_max)`` when p_data is known); None
            uses the Gaussian above.
        data_variance: per-coordinate data variance ≥ 0 (data units²) for the default prior.
        dequantization_bits, data_scale: as in :func:`log_likelihood`.
        generator: torch.Generator for the Hutchinson probes.

    Returns:
        :class:`LikelihoodResult`: log_prob in nats per point (B,), bits_per_dim (B,), the
        solver's NFE (each counts one field evaluation with its divergence), prior_log_prob and
        delta_log_prob.

    Raises:
        FluxMatchError: bad x, σ levels, method, steps, divergence method, probe count, prior,
            data_variance, dequantization settings, or a solution that becomes non-finite.
    """
    x = _check_points(x, "x")
    sigma_min = check_positive(sigma_min, "sigma_min")
    sigma_max = check_positive(sigma_max, "sigma_max")
    if not sigma_max > sigma_min:
        raise FluxMatchError(f"sigma_max ({sigma_max}) must exceed sigma_min ({sigma_min})")
    if method not in METHODS:
        raise FluxMatchError(f"unknown ODE method {method!r}: expected one of {METHODS}")
    _check_probes(n_probes)
    try:
        data_variance = float(data_variance)
    except (TypeError, ValueError):
        raise FluxMatchError(f"data_variance must be a finite number ≥ 0, got {data_variance!r}") from None
    if not (math.isfinite(data_variance) and data_variance >= 0):
        raise FluxMatchError(f"data_variance must be a finite number ≥ 0, got {data_variance!r}")
    if prior is not None and data_variance != 0:
        raise FluxMatchError("data_variance sets the default Gaussian prior: do not pass it together with a prior")
    log_scale = _dequantization_log_scale(dequantization_bits, data_scale)

    batch, d = x.shape[0], x[0].numel()
    div_method = resolve_method(divergence, d)
    probes = _rademacher_probes(batch, n_probes, d, x, generator) if div_method == "hutchinson" else None

    def augmented(state: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """d/du (x, Δ) = (−σ² f, σ² ∇·f) on the flattened state (B, d + 1), σ = e^u."""
        sigma = u.exp()
        z = state[:, :d].reshape(x.shape)
        f, div = velocity_and_divergence(field, z, sigma, div_method, probes)
        if not (torch.isfinite(f).all() and torch.isfinite(div).all()):
            raise FluxMatchError(f"the field or its divergence is NaN or infinite at σ = {float(sigma[0]):.4g}")
        weight = sigma.square()[:, None].to(f.dtype)
        return torch.cat([-weight * f.reshape(batch, d), weight * div[:, None].to(f.dtype)], dim=1)

    start = torch.cat([x.detach().reshape(batch, d), x.new_zeros(batch, 1)], dim=1)
    solution = solve_ode(augmented, start, t0=math.log(sigma_min), t1=math.log(sigma_max), method=method, steps=steps, rtol=rtol, atol=atol)
    x_end = solution.x[:, :d].reshape(x.shape)
    delta = -solution.x[:, d]
    if prior is None:
        scale = math.sqrt(sigma_max**2 + data_variance)
        prior_lp = standard_normal_log_prob(x_end / scale) - d * math.log(scale)
    else:
        prior_lp = _prior_log_prob(prior, x_end).to(delta.dtype)
    log_prob = prior_lp + delta
    bits_per_dim = -(log_prob + d * log_scale) / (d * math.log(2))
    return LikelihoodResult(log_prob, bits_per_dim, solution.nfe, prior_lp, delta)
