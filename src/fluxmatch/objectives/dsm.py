"""Denoising score matching, the baseline, at a fixed σ or over a continuum of σ, with Flux Matching's interface."""

from __future__ import annotations

import torch
from torch import nn

from ..fields import call_field
from ..reference import GaussianMixture
from .base import ObjectiveOutput, check_batch
from .noised import NoisedObjective, check_target, noise_from, rowsum


class DenoisingScoreMatching(NoisedObjective):
    """``ℓ(x, ε, σ) = a(σ)|f(x + σε, σ) + ε/σ|²`` (Vincent 2011), minimised by the score of p_σ.

    Args:
        sigma: a fixed noise level σ > 0 (data units). Give it or ``noise``, not both; neither
            is the fixed σ = 0.2236.
        noise: the σ distribution: anything :func:`~fluxmatch.objectives.noise_levels.make_noise`
            takes ("edm", "loguniform", a config dict, a number, a distribution).
        weighting: the weight a(σ) of :func:`~fluxmatch.objectives.noise_levels.loss_weights`
            (None: "none" at a fixed σ, "edm", EDM's preconditioned-output loss, over a continuum).
        sigma_data: σ_d of the data (data units), for the "edm" weighting.
        normaliser: learn n(σ) and use ``ℓ/exp(n) + n`` (None: on over a continuum).
        label_dropout: fraction of labels replaced by the null class (class-conditional fields).
        rao_blackwell: regress on the batch posterior mean of the target (off: plain DSM).
        target: "batch" (the denoising target, or its batch posterior mean) or "training_set"
            (the exact score of the whole training set smoothed at σ: supply the data with
            :meth:`use_training_set`).

    With a fixed σ and an analytic ``reference`` the target is known exactly and the loss
    becomes explicit score matching, ``|f(z) − s(z)|²`` at z ~ reference.

    Call: ``objective(field, x, reference=None, labels=None, **extras)``, x (B, ...); the field is
    called as ``field(z, σ)`` or ``field(z, σ, labels)`` (extras as keyword arguments) with σ a
    (B,) tensor. Loss (B,), summed over coordinates, units 1/data² times a(σ).

    Example:
        >>> objective = DenoisingScoreMatching(noise="edm")
        >>> objective(MLPField(2, conditioning="sigma"), torch.randn(8, 2)).loss.shape
        torch.Size([8])
    """

    name = "dsm"
    target_group = None  # the Rao-Blackwellised target uses the whole batch

    def __init__(
        self,
        sigma: float | None = None,
        *,
        noise=None,
        weighting: str | None = None,
        sigma_data: float = 0.5,
        normaliser: bool | None = None,
        label_dropout: float = 0.1,
        rao_blackwell: bool = False,
        target: str = "batch",
    ) -> None:
        distribution = noise_from(sigma, noise)
        weighting = ("none" if distribution.is_fixed else "edm") if weighting is None else weighting
        super().__init__(distribution, weighting, sigma_data, (not distribution.is_fixed) if normaliser is None else bool(normaliser), label_dropout)
        self.rao_blackwell = bool(rao_blackwell)
        self.target = check_target(target)

    @property
    def config(self) -> dict:
        return {
            "name": self.name,
            "noise": self.noise.config,
            "weighting": self.weighting,
            "sigma_data": self.sigma_data,
            "normaliser": self.normaliser is not None,
            "label_dropout": self.label_dropout,
            "rao_blackwell": self.rao_blackwell,
            "target": self.target,
        }

    def param_groups(self, field: nn.Module, lr: float) -> list[dict]:
        """One group: the field and the normaliser, at the base learning rate."""
        return [{"params": [*field.parameters(), *self.parameters()], "lr": lr}]

    def forward(self, field, x: torch.Tensor, reference: GaussianMixture | None = None, labels: torch.Tensor | None = None, **extras) -> ObjectiveOutput:
        """Per-row losses (B,); ``terms["dsm"]`` is the batch mean of the weighted loss before normalisation."""
        x = check_batch(x)
        self._check_reference(reference)
        sigma, z, target, labels = self._noised_batch(field, x, reference, labels, keep_rows=bool(extras))
        a, _ = self._weights(sigma)
        raw = rowsum((call_field(field, z, sigma, labels, **extras) - target).square()) * a
        return ObjectiveOutput(self._normalised(raw, sigma), {"dsm": float(raw.detach().mean())})
