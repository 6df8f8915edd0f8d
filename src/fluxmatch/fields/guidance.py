"""Classifier-free guidance (Ho & Salimans 2022) for class-conditional σ-conditioned fields.

A class-conditional field learns both f(x, σ | y) and, for the null label (labels dropped during
training), the unconditional f(x, σ). Guidance of scale w mixes them,

    f_w = f(x, σ | ∅) + w (f(x, σ | y) − f(x, σ | ∅)),

so w = 0 is the unconditional model, w = 1 the conditional one, and w > 1 sharpens the class.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import FluxMatchError


class ClassifierFreeGuidance(nn.Module):
    """A field ``g(x, σ)`` for fixed labels: the guided mixture of a class-conditional field.

    Args:
        field: class-conditional field ``field(x, σ, labels)`` with ``n_classes`` > 0; the null
            label is ``n_classes``.
        labels: (B,) long labels of the rows it will be called on.
        scale: guidance scale w ≥ 0.

    Both branches run in one batched call of size 2B (w ∉ {0, 1}); w = 0 and w = 1 need one.
    """

    def __init__(self, field: nn.Module, labels: torch.Tensor, scale: float = 1.0) -> None:
        super().__init__()
        self.field = field
        self.n_classes = int(getattr(field, "n_classes", 0) or 0)
        if self.n_classes == 0:
            raise FluxMatchError("classifier-free guidance needs a class-conditional field (n_classes > 0)")
        self.labels = torch.as_tensor(labels).long().reshape(-1)
        if self.labels.numel() and (self.labels.min() < 0 or self.labels.max() > self.n_classes):
            raise FluxMatchError(f"labels must lie in 0..{self.n_classes} ({self.n_classes} is the null class)")
        self.scale = float(scale)
        if not math.isfinite(self.scale) or self.scale < 0:
            raise FluxMatchError(f"the guidance scale must be a finite number ≥ 0, got {scale!r}")

    def forward(self, x: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        b = x.shape[0]
        if self.labels.shape[0] != b:
            raise FluxMatchError(f"the guided field holds {self.labels.shape[0]} labels but was called on {b} points")
        cond = self.labels.to(x.device)
        null = torch.full_like(cond, self.n_classes)
        if self.scale == 0.0:
            return self.field(x, sigma, null)
        if self.scale == 1.0:
            return self.field(x, sigma, cond)
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(b)
        both = self.field(torch.cat([x, x]), torch.cat([s, s]), torch.cat([cond, null]))
        f_cond, f_null = both[:b], both[b:]
        return f_null + self.scale * (f_cond - f_null)


def guided(field: nn.Module, labels: torch.Tensor, scale: float = 1.0) -> ClassifierFreeGuidance:
    """The field ``g(x, σ)`` = f(x, σ | ∅) + w (f(x, σ | labels) − f(x, σ | ∅)) for w = ``scale``
    (see :class:`ClassifierFreeGuidance`; w = 0 unconditional, w = 1 conditional)."""
    return ClassifierFreeGuidance(field, labels, scale)


def drop_labels(labels: torch.Tensor, p: float, n_classes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Labels with a fraction ``p`` (each independently) replaced by the null class ``n_classes``."""
    if not 0.0 <= p < 1.0:
        raise FluxMatchError(f"the label dropout rate must lie in [0, 1), got {p!r}")
    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, n_classes), labels)
