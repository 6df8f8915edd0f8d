"""Denoising score matching, the baseline, at a fixed σ or over a continuum of σ."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import FluxMatchError
from ..fields import call_field
from ..reference import GaussianMixture
from .base import ObjectiveOutput, check_batch
from .noise_levels import loss_weight, make_sigma_distribution
from .noised import NoisedObjective, rowsum

DEFAULT_SIGMA = 0.2236


def noise_of(sigma, noise):
    """The σ distribution from a fixed ``sigma`` or a ``noise`` spec (exactly one; neither: σ = 0.2236)."""
    if sigma is not None and noise is not None:
        raise FluxMatchError("give a fixed sigma or a noise distribution, not both")
    return DEFAULT_SIGMA if sigma is None and noise is None else (sigma if noise is None else noise)


class DenoisingScoreMatching(NoisedObjective):
    """``ℓ(x, ε, σ) = λ(σ)|f(x + σε, σ) + ε/σ|²`` (Vincent 2011), minimised by the score of p_σ.

    Args:
        sigma: a fixed noise level σ > 0 (data units; default 0.2236 when ``noise`` is not given).
        noise: instead of ``sigma``, a σ distribution: "edm" (ln σ ~ N(−1.2, 1.2²)), "loguniform",
            a config dict or a number (fixed σ).
        weighting: λ(σ): "none" (default for a fixed σ), "edm" (EDM's preconditioned-output loss,
            default over a continuum) or "sigma2".
        sigma_data: σ_data of the data (model units), for the "edm" weighting.
        normaliser: learn n(σ) and use ``ℓ/exp(n) + n`` (default: over a continuum only).
        label_dropout: fraction of labels replaced by the null class (class-conditional fields).
        rao_blackwell: regress on the batch posterior mean of the target (off: plain DSM).
        target: "batch" (the denoising target, or its batch posterior mean) or "training_set"
            (the exact score of the whole training set smoothed at σ: supply the data with
            :meth:`use_training_set`).

    With a fixed σ and an analytic ``reference`` the target is known exactly and the loss
    becomes explicit score matching, ``|f(z) − s(z)|²`` at z ~ reference.

    Call: ``objective(field, x, reference=None, labels=None)``, x (B, ...); the field is called as
    ``field(z, σ)`` or ``field(z, σ, labels)`` with σ a (B,) tensor. Loss (B,), summed over
    coordinates.
    """

    name = "dsm"

    def __init__(self, sigma: float | None = None, *, noise=None, weighting: str | None = None, sigma_data: float = 0.5,
                 normaliser: bool | None = None, label_dropout: float = 0.1, rao_blackwell: bool = False, target: str = "batch") -> None:
        distribution = make_sigma_distribution(noise_of(sigma, noise))
        fixed = distribution.kind == "fixed"
        super().__init__(
            distribution, ("none" if fixed else "edm") if weighting is None else weighting, sigma_data,
            (not fixed) if normaliser is None else normaliser, label_dropout, rao_blackwell, target,
        )

    @property
    def config(self) -> dict:
        config = super().config
        return {"name": "dsm", "noise": config.pop("sigma_distribution"), **{k: v for k, v in config.items() if k != "name"}}

    def param_groups(self, field: nn.Module, lr: float) -> list[dict]:
        """One group: the field and the normaliser, at the base learning rate."""
        return [{"params": [*field.parameters(), *self.parameters()], "lr": lr}]

    def forward(self, field, x: torch.Tensor, reference: GaussianMixture | None = None, labels: torch.Tensor | None = None) -> ObjectiveOutput:
        self._check_reference(reference)
        x = check_batch(x)
        b = x.shape[0]
        sigma = self.draw_sigma(b, device=x.device)
        if reference is not None:
            z = reference.sample(b).reshape(x.shape)
            loss = rowsum((call_field(field, z, sigma) - reference.score(z)).square())
            return ObjectiveOutput(loss, {"dsm": float(loss.detach().mean())})
        labels, null = self._labels(field, labels, b)
        z, target = self._start_and_target(x, sigma, labels, null)
        raw = rowsum((call_field(field, z, sigma, labels) - target).square()) * loss_weight(sigma, self.weighting, self.sigma_data)
        loss = self._normalise(raw, sigma)
        return ObjectiveOutput(loss, {"dsm": float(raw.detach().mean())})


class AnnealedDSM(DenoisingScoreMatching):
    """:class:`DenoisingScoreMatching` over a continuum of σ by default (EDM's log-normal), under
    the keyword names of fluxmatch 0.1 (``sigma_distribution=``)."""

    def __init__(self, sigma_distribution="edm", weighting: str | None = None, sigma_data: float = 0.5, normaliser: bool | None = None,
                 label_dropout: float = 0.1, rao_blackwell: bool = False, target: str = "batch") -> None:
        super().__init__(noise=sigma_distribution, weighting=weighting, sigma_data=sigma_data, normaliser=normaliser,
                         label_dropout=label_dropout, rao_blackwell=rao_blackwell, target=target)
