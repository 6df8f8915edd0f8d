"""The stationarity residual ``r = ∇·u + u·s`` of a field (docs/MATH.md eq. 2) and its gradient.

For a field f and a reference density p with score s, ``u = f − s`` and p is stationary under
``dX = f dt + sqrt(2) dW`` iff r = 0 p-almost everywhere. The field's part (∇·f and its
gradient) goes through autograd; the reference's part comes in closed form from
:meth:`fluxmatch.reference.GaussianMixture.derivatives`, so no autograd runs through p.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .divergence import divergence, resolve_method
from .errors import FluxMatchError
from .fields import ForwardModeField, call_field
from .reference import GaussianMixture


@dataclass
class Residual:
    """``r`` (P,) and ``∇r`` (P, d) at P points (flattened), and the field values (P, ...)."""

    value: torch.Tensor
    gradient: torch.Tensor
    field_values: torch.Tensor


def residual_and_gradient(
    field,
    reference: GaussianMixture,
    z: torch.Tensor,
    c=None,
    method: str = "auto",
    n_probes: int = 1,
) -> Residual:
    """r(z) and ∇r(z) for a field against a reference, all detached.

    ``∇r = ∇(∇·f) + (∂f)ᵀ s + ∇s (f − 2s) − ∇(∇·s)`` (∇s symmetric), where the first two terms
    are one autograd gradient of ``∇·f + f·sg(s)`` and the rest is closed form.

    Args:
        field: callable ``field(z, c)`` returning a tensor shaped like z.
        reference: the density p.
        z: (P, ...) points.
        c: conditioning passed to the field.
        method, n_probes: divergence estimator ("auto", "exact", "hutchinson") and probe count;
            with Hutchinson both r and ∇r are unbiased estimates.
    """
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        f, div_f = field_and_divergence(field, z, c, method, n_probes)
        flat_f = f.detach().reshape(f.shape[0], -1)
        ref = reference.derivatives(z, flat_f)
        s = ref.score.reshape(z.shape)
        objective = div_f + (f * s).reshape(f.shape[0], -1).sum(1)
        (grad,) = torch.autograd.grad(objective.sum(), z, materialize_grads=True)
    u = flat_f - ref.score
    value = div_f.detach() - ref.divergence + (u * ref.score).sum(1)
    gradient = grad.reshape(flat_f.shape) + ref.hessian_v - 2 * ref.hessian_score - ref.grad_divergence
    return Residual(value, gradient, f.detach())


def field_and_divergence(field, z: torch.Tensor, c, method: str = "auto", n_probes: int = 1):
    """f(z) and ∇·f(z), both differentiable in z (which must require grad for the autograd path) and θ.

    Fields that offer ``forward_and_jvp(z, c, tangents)`` (e.g. :class:`~fluxmatch.fields.MLPField`)
    get the divergence by forward-mode products with the basis (exact) or Rademacher probes
    (Hutchinson); any other field goes through reverse-mode autograd.
    """
    if not isinstance(field, ForwardModeField):
        f = call_field(field, z, c)
        return f, divergence(f, z, method, n_probes, create_graph=True)
    b, d = z.shape[0], z[0].numel()
    method = resolve_method(method, d)
    if method == "exact":
        tangents = torch.eye(d, dtype=z.dtype, device=z.device).expand(b, d, d)
    else:
        tangents = torch.empty(b, n_probes, d, dtype=z.dtype, device=z.device).bernoulli_(0.5).mul_(2).sub_(1)
    f, jt = field.forward_and_jvp(z, c, tangents)
    if f.shape != z.shape:
        raise FluxMatchError(f"the field returned shape {tuple(f.shape)} for input of shape {tuple(z.shape)}")
    div = (jt * tangents).sum((1, 2))
    return f, div if method == "exact" else div / tangents.shape[1]


def stationarity_residual(
    field, reference: GaussianMixture, z: torch.Tensor, c=None, method: str = "exact", n_probes: int = 1
) -> torch.Tensor:
    """(P,) r(z) = ∇·(f − s) + (f − s)·s, detached; zero p-a.e. exactly when p is stationary for f."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(not isinstance(field, ForwardModeField))
        f, div_f = field_and_divergence(field, z, c, method, n_probes)
    ref = reference.derivatives(z.detach())
    u = f.detach().reshape(f.shape[0], -1) - ref.score
    return div_f.detach() - ref.divergence + (u * ref.score).sum(1)
