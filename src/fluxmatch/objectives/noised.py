"""The machinery every objective on noised data shares (docs/MATH.md §4).

Each row of a batch draws its σ from the objective's σ distribution: a fixed σ (a one-point
distribution) or a continuum (EDM's log-normal, log-uniform). The per-row loss, written in score
units, is weighted by λ(σ) and, over a continuum, balanced across σ by a learned normaliser,
``ℓ/exp(n(σ)) + n(σ)``.
"""

from __future__ import annotations

import torch

from ..errors import FluxMatchError, check_positive
from ..fields import drop_labels
from ..reference import annealed_denoising_target, training_set_target
from .base import Objective
from .noise_levels import WEIGHTINGS, make_sigma_distribution
from .normaliser import LossNormaliser

TARGETS = ("batch", "training_set")


def rowsum(t: torch.Tensor) -> torch.Tensor:
    """(B, ...) → (B,): the sum over each row's entries."""
    return t.reshape(t.shape[0], -1).sum(1)


class NoisedObjective(Objective):
    """What the objectives that train on noised data share: the σ distribution (a fixed σ is a
    one-point distribution), the λ(σ) weighting, the learned normaliser, label dropout for
    classifier-free guidance and the regression target.

    Args:
        sigma_distribution: anything :func:`~fluxmatch.objectives.noise_levels.make_sigma_distribution`
            takes: a number σ, "edm", "loguniform" or a config dict.
        weighting, sigma_data, normaliser, label_dropout, rao_blackwell, target: see
            :class:`~fluxmatch.objectives.DenoisingScoreMatching`.
    """

    name = ""

    def __init__(
        self,
        sigma_distribution="edm",
        weighting: str = "edm",
        sigma_data: float = 0.5,
        normaliser: bool = True,
        label_dropout: float = 0.1,
        rao_blackwell: bool = False,
        target: str = "batch",
    ) -> None:
        super().__init__()
        if target not in TARGETS:
            raise FluxMatchError(f"unknown regression target {target!r}: expected one of {', '.join(TARGETS)}")
        self.target = target
        self.target_data = self.target_labels = None
        self.sigmas = make_sigma_distribution(sigma_distribution)
        if weighting not in WEIGHTINGS:
            raise FluxMatchError(f"unknown loss weighting {weighting!r}: expected one of {', '.join(WEIGHTINGS)}")
        self.weighting = weighting
        self.sigma_data = check_positive(sigma_data, "sigma_data")
        if not 0.0 <= float(label_dropout) < 1.0:
            raise FluxMatchError(f"label_dropout must lie in [0, 1), got {label_dropout!r}")
        self.label_dropout = float(label_dropout)
        self.rao_blackwell = bool(rao_blackwell)
        self.normaliser = LossNormaliser() if normaliser else None

    @property
    def noise(self) -> str:
        """The kind of the σ distribution: "fixed", "edm" or "loguniform"."""
        return self.sigmas.kind

    @property
    def sigma(self) -> float | None:
        """The fixed σ, or None when σ is drawn from a continuum."""
        return self.sigmas.sigma if self.sigmas.kind == "fixed" else None

    @property
    def config(self) -> dict:
        return {
            "name": self.name,
            "sigma_distribution": self.sigmas.config,
            "weighting": self.weighting,
            "sigma_data": self.sigma_data,
            "normaliser": self.normaliser is not None,
            "label_dropout": self.label_dropout,
            "rao_blackwell": self.rao_blackwell,
            "target": self.target,
        }

    def draw_sigma(self, b: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """(b,) noise levels, one per row."""
        return self.sigmas.sample(b, generator, device)

    def _labels(self, field, labels: torch.Tensor | None, b: int) -> tuple[torch.Tensor | None, int | None]:
        """Labels after classifier-free-guidance dropout, and the null label (None: unconditional)."""
        n_classes = int(getattr(field, "n_classes", 0) or 0)
        if labels is None or n_classes == 0:
            return None, None
        labels = torch.as_tensor(labels, device=labels.device).long().reshape(-1)
        if labels.shape[0] != b:
            raise FluxMatchError(f"got {labels.shape[0]} labels for a batch of {b}")
        if labels.min() < 0 or labels.max() >= n_classes:
            raise FluxMatchError(f"labels must lie in 0..{n_classes - 1}, got range {int(labels.min())}..{int(labels.max())}")
        if self.training and self.label_dropout > 0:
            labels = drop_labels(labels, self.label_dropout, n_classes)
        return labels, n_classes

    def use_training_set(self, data: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Regress on the exact score of the whole training set smoothed at each row's σ
        (:func:`~fluxmatch.reference.training_set_target`) instead of a batch estimate: the
        same expected target with no variance, at O(B·N·d) per step. Not stored in checkpoints."""
        self.target_data = data.detach()
        self.target_labels = None if labels is None else torch.as_tensor(labels).long()

    def _start_and_target(self, x: torch.Tensor, sigma: torch.Tensor, labels, null):
        """Start points x + σε and the regression target (see ``rao_blackwell`` and :meth:`use_training_set`)."""
        data = self.target_data
        if self.target == "batch":
            return annealed_denoising_target(x, sigma, labels, null, self.rao_blackwell)
        if data is None:
            raise FluxMatchError("target='training_set' needs the training data: call objective.use_training_set(data) before training")
        x0 = x + sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype) * torch.randn_like(x)
        data_labels = self.target_labels
        return x0, training_set_target(x0, sigma, data.to(x.device), labels, None if data_labels is None else data_labels.to(x.device), null)

    def _normalise(self, loss: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return loss if self.normaliser is None else self.normaliser.normalise(loss, sigma)

    def _check_reference(self, reference) -> None:
        if reference is not None and self.sigma is None:
            raise FluxMatchError(f"the noise-annealed {self.name} objective trains on the data batch; an analytic reference is a fixed-σ feature")
