"""Conditional Flow Matching (Lipman et al. 2023) with Flux Matching's objective interface."""

from __future__ import annotations

import torch
from torch import nn

from ..coupling import COUPLINGS, coupling_cost, independent_coupling, ot_coupling
from ..errors import FluxMatchError
from ..fields import call_field
from ..paths import GaussianPath, make_path
from ..reference import GaussianMixture
from .base import Objective, ObjectiveOutput, check_batch


class FlowMatching(Objective):
    """``ℓ = |v_θ(x_t, t) − (α'_t x1 + σ'_t x0)|²`` with t ~ U[time_eps, 1], x0 ~ N(0, I).

    ``x_t = α_t x1 + σ_t x0`` with (x0, x1) drawn from the chosen coupling of N(0, I) and the
    data. With the independent coupling the minimiser is the path's marginal velocity
    ``u_t(x) = α'_t E[x1 | x_t = x] + σ'_t E[x0 | x_t = x]``, whose ODE carries N(0, I) at t = 0
    to the data at t = 1; minibatch OT couplings give straighter paths with the same end points.

    Shapes: x (B, ...); the loss is (B,), summed over coordinates. The field is called as
    ``field(x_t, t)`` with a (B,) tensor t.

    Args:
        path: "ot" (σ_min = ``sigma_min``), "vp", "ve", a path's ``config`` dict, or a
            :class:`~fluxmatch.paths.GaussianPath`.
        coupling: "independent", or minibatch optimal transport: "ot" (exact up to B = 1024,
            Sinkhorn beyond), "exact", "sinkhorn".
        sigma_min: σ_min of the OT path when it is named by "ot".
        time_eps: smallest t drawn, in [0, 1).
    """

    def __init__(self, path: str | dict | GaussianPath = "ot", coupling: str = "independent", sigma_min: float = 1e-4, time_eps: float = 0.0) -> None:
        super().__init__()
        if coupling not in COUPLINGS:
            raise FluxMatchError(f"unknown coupling {coupling!r}: expected one of {', '.join(COUPLINGS)}")
        try:
            self.time_eps = float(time_eps)
        except (TypeError, ValueError):
            self.time_eps = float("nan")
        if not 0 <= self.time_eps < 1:  # also rejects NaN
            raise FluxMatchError(f"time_eps must be a number in [0, 1), got {time_eps!r}")
        if isinstance(path, dict):
            options = dict(path)
            self.path = make_path(options.pop("name", None), **options)
        elif path == "ot":
            self.path = make_path("ot", sigma_min=sigma_min)
        else:
            self.path = make_path(path)
        # A named path is stored by name (its parameters are sigma_min or defaults); any other
        # by its config dict, so that ``FlowMatching(**config)`` rebuilds it either way.
        if isinstance(path, str):
            self._path_config = path
        elif hasattr(self.path, "config"):
            self._path_config = dict(self.path.config)
        else:
            raise FluxMatchError(f"a custom path needs a `config` dict to be saved, {type(path).__name__} has none")
        self.coupling = coupling
        try:
            self.sigma_min = float(sigma_min)
        except (TypeError, ValueError):
            raise FluxMatchError(f"sigma_min must be a number, got {sigma_min!r}") from None

    @property
    def config(self) -> dict:
        return {"name": "flow", "path": self._path_config, "coupling": self.coupling, "sigma_min": self.sigma_min, "time_eps": self.time_eps}

    def param_groups(self, field: nn.Module, lr: float) -> list[dict]:
        """Optimizer parameter groups: the field alone, at the base learning rate."""
        return [{"params": list(field.parameters()), "lr": lr}]

    def couple(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair noise and data by this objective's coupling; x1 is returned unchanged."""
        if self.coupling == "independent":
            return independent_coupling(x0, x1)
        return ot_coupling(x0, x1, "auto" if self.coupling == "ot" else self.coupling)

    def forward(self, field, x: torch.Tensor, reference: GaussianMixture | None = None) -> ObjectiveOutput:
        x = check_batch(x)
        if reference is None:
            x1 = x
        else:
            # The reference is the data distribution itself; x only sets B and the event shape.
            if reference.dim != x[0].numel():
                raise FluxMatchError(f"the reference has dimension {reference.dim} but batch points have {x[0].numel()} entries")
            x1 = reference.sample(x.shape[0]).to(x).reshape(x.shape)
        x0, x1 = self.couple(torch.randn_like(x1), x1)
        t = self.time_eps + (1 - self.time_eps) * torch.rand(x1.shape[0], device=x1.device, dtype=x1.dtype)
        sample = self.path.sample(x0, x1, t)
        residual = call_field(field, sample.xt, t) - sample.velocity
        loss = residual.reshape(x1.shape[0], -1).square().sum(1)
        terms = {"fm": float(loss.detach().mean()), "coupling_cost": coupling_cost(x0, x1)}
        return ObjectiveOutput(loss, terms)


__all__ = ["FlowMatching"]
