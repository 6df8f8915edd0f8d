"""Conditional Flow Matching (Lipman et al. 2023) with Flux Matching's objective interface."""

from __future__ import annotations

import torch
from torch import nn

from ..coupling import COUPLINGS, coupling_cost, independent_coupling, ot_coupling
from ..errors import FluxMatchError
from ..fields import call_field
from ..paths import GaussianPath, make_path
from .base import ObjectiveOutput, check_batch


class FlowMatching(nn.Module):
    """``ℓ = |v_θ(x_t, t) − (α'_t x1 + σ'_t x0)|²`` with t ~ U[time_eps, 1], x0 ~ N(0, I).

    Its minimiser is the marginal velocity of the path, whose ODE carries N(0, I) at t = 0 to
    the data at t = 1. The field is called as ``field(x_t, t)`` with a (B,) tensor t.

    Args:
        path: "ot" (σ_min = ``sigma_min``), "vp", "ve" or a :class:`~fluxmatch.paths.GaussianPath`.
        coupling: "independent", or minibatch optimal transport: "ot" (exact up to B = 1024,
            Sinkhorn beyond), "exact", "sinkhorn".
        sigma_min: σ_min of the OT path.
        time_eps: smallest t drawn.
    """

    def __init__(self, path="ot", coupling: str = "independent", sigma_min: float = 1e-4, time_eps: float = 0.0) -> None:
        super().__init__()
        if coupling not in COUPLINGS:
            raise FluxMatchError(f"unknown coupling {coupling!r}: expected one of {', '.join(COUPLINGS)}")
        self.path = make_path(path, sigma_min=sigma_min) if path == "ot" else make_path(path)
        self.path_name = path if isinstance(path, str) else type(path).__name__
        self.coupling = coupling
        self.sigma_min = float(sigma_min)
        self.time_eps = float(time_eps)

    @property
    def config(self) -> dict:
        return {"name": "flow", "path": self.path_name, "coupling": self.coupling, "sigma_min": self.sigma_min, "time_eps": self.time_eps}

    def param_groups(self, field: nn.Module, lr: float) -> list[dict]:
        return [{"params": list(field.parameters()), "lr": lr}]

    def forward(self, field, x: torch.Tensor, reference=None) -> ObjectiveOutput:
        x1 = check_batch(x) if reference is None else reference.sample(x.shape[0]).reshape(x.shape)
        x0 = torch.randn_like(x1)
        if self.coupling != "independent":
            x0, x1 = ot_coupling(x0, x1, "auto" if self.coupling == "ot" else self.coupling)
        t = self.time_eps + (1 - self.time_eps) * torch.rand(x1.shape[0], device=x1.device)
        sample = self.path.sample(x0, x1, t)
        residual = call_field(field, sample.xt, t) - sample.velocity
        loss = residual.reshape(x1.shape[0], -1).square().sum(1)
        terms = {"fm": float(loss.detach().mean())}
        if self.coupling != "independent":
            terms["coupling_cost"] = coupling_cost(x0, x1)
        return ObjectiveOutput(loss, terms)


__all__ = ["FlowMatching", "GaussianPath"]
