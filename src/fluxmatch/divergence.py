"""Divergence of a vector field with respect to its input: exact trace or Hutchinson.

Both take the field's output ``out = f(x)`` (already computed, with its autograd graph) and the
input ``x`` (which must require grad), so the forward pass is shared with whatever else the
caller does with ``out``. Shapes: ``x`` and ``out`` are (B, ...) of the same shape; the result
is (B,) in units of [out]/[x].
"""

from __future__ import annotations

import torch

from .errors import FluxMatchError


def exact_divergence(out: torch.Tensor, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """∇·f(x) = Σ_i ∂f_i/∂x_i by one vector-Jacobian product per coordinate. Cost: d backward passes."""
    flat_out = out.reshape(out.shape[0], -1)
    div = out.new_zeros(out.shape[0])
    for i in range(flat_out.shape[1]):
        (g,) = torch.autograd.grad(flat_out[:, i].sum(), x, create_graph=create_graph, retain_graph=True, materialize_grads=True)
        div = div + g.reshape(g.shape[0], -1)[:, i]
    return div


def hutchinson_divergence(
    out: torch.Tensor, x: torch.Tensor, n_probes: int = 1, create_graph: bool = False
) -> torch.Tensor:
    """Unbiased estimate E_ε[εᵀ (∂f/∂x) ε] with Rademacher probes ε, averaged over ``n_probes``."""
    if n_probes < 1:
        raise FluxMatchError(f"Hutchinson needs at least one probe, got {n_probes}")
    div = out.new_zeros(out.shape[0])
    for _ in range(n_probes):
        eps = torch.empty_like(x).bernoulli_(0.5).mul_(2).sub_(1)
        (g,) = torch.autograd.grad(out, x, eps, create_graph=create_graph, retain_graph=True, materialize_grads=True)
        div = div + (g * eps).reshape(x.shape[0], -1).sum(1)
    return div / n_probes


def divergence(
    out: torch.Tensor,
    x: torch.Tensor,
    method: str = "auto",
    n_probes: int = 1,
    create_graph: bool = False,
) -> torch.Tensor:
    """Divergence by ``method``: "exact", "hutchinson", or "auto" (exact when d ≤ 8)."""
    if out.shape != x.shape:
        raise FluxMatchError(f"the field returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}")
    if resolve_method(method, x[0].numel()) == "exact":
        return exact_divergence(out, x, create_graph)
    return hutchinson_divergence(out, x, n_probes, create_graph)


def resolve_method(method: str, dim: int) -> str:
    """"exact" or "hutchinson" for a requested method and dimension ("auto": exact when d ≤ 8)."""
    if method == "auto":
        return "exact" if dim <= 8 else "hutchinson"
    if method not in ("exact", "hutchinson"):
        raise FluxMatchError(f"unknown divergence method {method!r}: expected 'auto', 'exact' or 'hutchinson'")
    return method
