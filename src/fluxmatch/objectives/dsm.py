"""Denoising score matching at a fixed σ: the baseline with Flux Matching's interface."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import check_sigma
from ..fields import call_field
from ..reference import GaussianMixture
from .base import Objective, ObjectiveOutput, check_batch


class DenoisingScoreMatching(Objective):
    """``ℓ(x, ε) = |f(x + σε) + ε/σ|²`` (Vincent 2011), minimised by the score of p_σ.

    With an analytic ``reference`` the target is known exactly and the loss becomes explicit
    score matching, ``|f(z) − s(z)|²`` at z ~ reference.

    Shapes: x (B, ...); the loss is (B,), summed over coordinates. The field is called as
    ``field(z, sigma)`` with a (B,) tensor of σ.
    """

    noise = "fixed"

    def __init__(self, sigma: float = 0.2236) -> None:
        super().__init__()
        self.sigma = check_sigma(sigma)

    @property
    def config(self) -> dict:
        return {"name": "dsm", "sigma": self.sigma}

    def param_groups(self, field: nn.Module, lr: float) -> list[dict]:
        """Optimizer parameter groups: the field alone, at the base learning rate."""
        return [{"params": list(field.parameters()), "lr": lr}]

    def forward(self, field, x: torch.Tensor, reference: GaussianMixture | None = None) -> ObjectiveOutput:
        x = check_batch(x)
        sigma = x.new_full((x.shape[0],), self.sigma)
        if reference is not None:
            z = reference.sample(x.shape[0]).reshape(x.shape)
            target = reference.score(z)
        else:
            eps = torch.randn_like(x)
            z = x + self.sigma * eps
            target = -eps / self.sigma
        residual = call_field(field, z, sigma) - target
        loss = residual.reshape(x.shape[0], -1).square().sum(1)
        return ObjectiveOutput(loss, {"dsm": float(loss.detach().mean())})
