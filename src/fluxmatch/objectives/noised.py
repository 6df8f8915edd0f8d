"""What the objectives on noised data (Flux Matching, DSM) share (docs/MATH.md §3–4).

Each row of a batch draws its σ from the objective's noise distribution: a fixed σ (a one-point
distribution) or a continuum (EDM's log-normal, log-uniform). Its start point is x0 = x + σε,
with a regression target s(x0) that estimates the score of p_σ; the per-row loss, in score
units, is weighted by :func:`~fluxmatch.objectives.noise_levels.loss_weights` and, optionally,
balanced across σ by a learned normaliser, ``ℓ/exp(n(σ)) + n(σ)``.
"""

from __future__ import annotations

import torch

from ..errors import FluxMatchError, check_positive
from ..fields import drop_labels
from ..reference import GaussianMixture, annealed_denoising_target, grouped_denoising_target, training_set_target
from .base import Objective
from .noise_levels import WEIGHTINGS, make_noise, weight_factors
from .normaliser import LossNormaliser

DEFAULT_SIGMA = 0.2236  # the fixed σ of an objective given neither sigma nor noise
TARGETS = ("batch", "training_set")


def rowsum(t: torch.Tensor) -> torch.Tensor:
    """(B, ...) → (B,): the sum over each row's entries."""
    return t.reshape(t.shape[0], -1).sum(1)


def check_target(target: str) -> str:
    """The regression target's name, checked: "batch" or "training_set"."""
    if target not in TARGETS:
        raise FluxMatchError(f"unknown regression target {target!r}: expected one of {', '.join(TARGETS)}")
    return target


def noise_from(sigma, noise):
    """The noise of an objective from its ``sigma`` (a fixed σ) or ``noise`` argument: exactly one
    of them, or neither (the fixed σ = 0.2236)."""
    if sigma is not None and noise is not None:
        raise FluxMatchError(f"give a fixed sigma or a noise distribution, not both (got sigma={sigma!r}, noise={noise!r})")
    return make_noise(noise if noise is not None else DEFAULT_SIGMA if sigma is None else sigma)


class NoisedObjective(Objective):
    """The σ draws, loss weighting, normaliser, labels and regression targets of Flux Matching and DSM.

    Args:
        noise: a :class:`~fluxmatch.objectives.noise_levels.NoiseDistribution`.
        weighting: a name of :func:`~fluxmatch.objectives.noise_levels.loss_weights`.
        sigma_data: σ_d of the data (data units), for the "edm" weighting.
        normaliser: learn n(σ) and use ``ℓ/exp(n) + n``.
        label_dropout: fraction of labels replaced by the null class (class-conditional fields).

    Subclasses define ``rao_blackwell``, ``target`` and ``target_group`` (see
    :meth:`_start_and_target`). Class-conditional fields (``n_classes`` > 0) get the labels;
    for any other field they are ignored.
    """

    name = ""
    takes_extras = True

    def __init__(self, noise, weighting: str, sigma_data: float, normaliser: bool, label_dropout: float) -> None:
        super().__init__()
        self.noise = noise
        if weighting not in WEIGHTINGS:
            raise FluxMatchError(f"unknown loss weighting {weighting!r}: expected one of {', '.join(WEIGHTINGS)}")
        self.weighting = weighting
        self.sigma_data = check_positive(sigma_data, "sigma_data")
        if not 0.0 <= float(label_dropout) < 1.0:
            raise FluxMatchError(f"label_dropout must lie in [0, 1), got {label_dropout!r}")
        self.label_dropout = float(label_dropout)
        self.target_data = self.target_labels = None
        self.normaliser = LossNormaliser() if normaliser else None

    @property
    def sigma(self) -> float | None:
        """The fixed σ (data units), or None when σ is drawn from a continuum."""
        return self.noise.sigma if self.noise.is_fixed else None

    def use_training_set(self, data: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Regress on the exact score of the whole training set smoothed at each row's σ
        (:func:`~fluxmatch.reference.training_set_target`; ``target="training_set"``) instead of
        a batch estimate: the same expected target with no variance, at O(B·N·d) per step.
        data (N, ...) like the batches, labels (N,) or None. Not stored in checkpoints."""
        self.target_data = data.detach()
        self.target_labels = None if labels is None else torch.as_tensor(labels).long()

    def _check_reference(self, reference) -> None:
        if reference is not None and not self.noise.is_fixed:
            raise FluxMatchError(f"the {self.name} objective over a continuum of σ trains on the data batch; an analytic reference is a fixed-σ feature")

    def _weights(self, sigma: torch.Tensor):
        """(a, τ) of :func:`~fluxmatch.objectives.noise_levels.weight_factors` for the rows' σ:
        from the float σ of a fixed noise, else from the drawn (B,) or (1,) tensor."""
        return weight_factors(self.noise.sigma if self.noise.is_fixed else sigma, self.weighting, self.sigma_data)

    def _labels(self, field, labels: torch.Tensor | None, b: int) -> tuple[torch.Tensor | None, int | None]:
        """Labels after classifier-free-guidance dropout, and the null label (None: the field is unconditional)."""
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

    def _noised_batch(self, field, x: torch.Tensor, reference: GaussianMixture | None, labels, keep_rows: bool):
        """σ (B,), start points x0 (B, ...), their score targets (units 1/data) and the labels.

        ``keep_rows``: row i of x0 must come from row i of x (the rows carry extras)."""
        b = x.shape[0]
        sigma = self.draw_sigma(b, device=x.device)
        labels, null = (None, None) if reference is not None else self._labels(field, labels, b)
        x0, target = self._start_and_target(x, sigma, labels, null, reference, keep_rows or labels is not None)
        return sigma, x0, target, labels

    def _start_and_target(self, x: torch.Tensor, sigma: torch.Tensor, labels, null, reference, keep_rows: bool):
        """Start points x0 ~ p_σ and the regression target s(x0), both shaped like x.

        - an analytic ``reference`` (fixed σ): x0 drawn from it, its exact score;
        - ``target="training_set"``: x0 = x + σε and the score of the training set smoothed at σ;
        - a fixed σ with ``rao_blackwell`` (rows free to move): the score of the σ-smoothed batch,
          or of random groups of ``target_group`` points (:func:`~fluxmatch.reference.grouped_denoising_target`);
        - otherwise x0_i = x_i + σ_i ε_i with the denoising target −ε_i/σ_i, or its posterior mean
          over the batch (``rao_blackwell``, class by class with labels;
          :func:`~fluxmatch.reference.annealed_denoising_target`).
        """
        if reference is not None:
            x0 = reference.sample(x.shape[0]).reshape(x.shape)
            return x0, reference.score(x0)
        if self.target == "training_set":
            if self.target_data is None:
                raise FluxMatchError("target='training_set' needs the training data: call objective.use_training_set(data) before training")
            x0 = x + sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype) * torch.randn_like(x)
            data_labels = None if self.target_labels is None else self.target_labels.to(x.device)
            return x0, training_set_target(x0, sigma, self.target_data.to(x.device), labels, data_labels, null)
        if self.noise.is_fixed and self.rao_blackwell and not keep_rows:
            return grouped_denoising_target(x, self.noise.sigma, self.target_group)
        return annealed_denoising_target(x, sigma, labels, null, self.rao_blackwell)

    def _normalised(self, loss: torch.Tensor, sigma: torch.Tensor, surrogate: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) ``loss/exp(n(σ)) + n(σ) + surrogate/sg(exp(n(σ)))``: the normaliser learns from
        ``loss`` alone, and a surrogate (no proper loss) takes the same scale as a constant.
        Without a normaliser: loss + surrogate."""
        if self.normaliser is None:
            return loss if surrogate is None else loss + surrogate
        n = self.normaliser(sigma)
        scale = torch.exp(-n)
        out = loss * scale + n
        return out if surrogate is None else out + surrogate * scale.detach()
