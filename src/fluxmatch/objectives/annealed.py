"""Noise-annealed objectives: one field f(x, σ) trained over a continuum of σ (docs/MATH.md §4).

Every row of a batch draws its own σ from a σ distribution (EDM's log-normal or log-uniform).
The per-row loss, written in score units, is weighted by λ(σ) (EDM: the preconditioned-output
loss) and balanced across σ by a learned normaliser, ``ℓ/exp(n(σ)) + n(σ)``. The same
machinery serves denoising score matching (the baseline) and Flux Matching, so a comparison
changes the objective and nothing else.

Flux Matching's default, the potential estimator, extends to a σ per row exactly: its target,
the score of the batch smoothed at σ_i, needs only the shared distance matrix (see
:func:`~fluxmatch.reference.annealed_denoising_target`). The finite-horizon estimators
("product", "gradient") simulate the batch reference's dynamics, which the whole batch shares,
so they draw one σ per batch as docs/MATH.md §4 states, with the σ-conditioned horizon sampler.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import FluxMatchError, check_positive
from ..fields import call_field
from .base import ObjectiveOutput, check_batch
from .flux import FluxMatching
from .noise_levels import loss_weight
from .noised import NoisedObjective, rowsum


class AnnealedFluxMatching(NoisedObjective):
    """Flux Matching over a continuum of σ.

    Default ("potential" estimator): a scalar potential g(x, σ) learns ∇g ≈ −∇φ_σ, the gradient
    part of u = f − s_σ, by the regression ``λ(σ)|∇g + f − s|²`` (the target s is the score of
    the batch smoothed at each row's σ, or the denoising target); the field follows
    ``−2λ(σ) f·sg(∇g)``, whose gradient is 2λ(σ)E[∂_θu·∇φ_σ]: DSM's gradient with u replaced by
    its gradient part, so any divergence-free flux ∇·(p_σ w) = 0 is left free at every σ. The
    normaliser n(σ) is learned on the regression (a proper, positive loss) and divides both.

    Args (besides those of :class:`AnnealedDSM`):
        estimator: "potential" (default), or "product" / "gradient" (one σ per batch, finite
            horizon, the fixed-σ machinery of :class:`~fluxmatch.objectives.FluxMatching` with
            its σ-conditioned horizon sampler; λ(σ) weighting, no normaliser).
        dim: coordinates per data point (for the default potential).
        potential: a module with ``gradient(x, σ, labels=None, create_graph=True)``; default an
            EDM-preconditioned MLP potential on the flattened point.
        potential_hidden: its hidden widths.
        n_classes: classes of a class-conditional potential (0: unconditional).
        field_lr_scale, potential_lr_scale: learning-rate multipliers of the two players.
        fixed_sigma_options: options passed to the inner fixed-σ objective (finite-horizon estimators).
        target: "batch" or "training_set" (see :class:`AnnealedDSM`).
        potential_net: the default potential's network: "mlp" (on the flattened point) or "unet"
            (:class:`~fluxmatch.fields.precond.UNetScalar`, 16 channels; needs ``event_shape``).
        event_shape: (C, H, W) of one image, for the UNet potential.
    """

    name = "flux_annealed"

    def __init__(
        self,
        sigma_distribution="edm",
        weighting: str = "edm",
        sigma_data: float = 0.5,
        normaliser: bool = True,
        label_dropout: float = 0.1,
        rao_blackwell: bool = True,
        estimator: str = "potential",
        dim: int | None = None,
        potential: nn.Module | None = None,
        potential_hidden: tuple[int, ...] = (256, 256),
        n_classes: int = 0,
        field_lr_scale: float = 0.5,
        potential_lr_scale: float = 20.0,
        fixed_sigma_options: dict | None = None,
        target: str = "batch",
        potential_net: str = "mlp",
        event_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(sigma_distribution, weighting, sigma_data, normaliser and estimator == "potential", label_dropout, rao_blackwell, target)
        self.estimator = estimator
        self.dim = dim
        self.potential_hidden = tuple(int(h) for h in potential_hidden)
        self.n_classes = int(n_classes)
        self.field_lr_scale = check_positive(field_lr_scale, "field_lr_scale")
        self.potential_lr_scale = check_positive(potential_lr_scale, "potential_lr_scale")
        self.fixed_sigma_options = dict(fixed_sigma_options or {})
        self.potential_net = potential_net
        self.event_shape = None if event_shape is None else [int(e) for e in event_shape]
        self.potential = None
        self.inner = None
        if estimator == "potential":
            if potential is None and dim is None:
                raise FluxMatchError("the potential estimator needs the data dimension: AnnealedFluxMatching(dim=d) or a potential module")
            if potential_net not in ("mlp", "unet"):
                raise FluxMatchError(f"unknown potential network {potential_net!r}: expected mlp or unet")
            if potential_net == "unet" and (event_shape is None or len(event_shape) != 3):
                raise FluxMatchError("a UNet potential needs the image shape: event_shape=(C, H, W)")
            self.potential = potential if potential is not None else _default_potential(dim, self.potential_hidden, self.sigma_data, self.n_classes, potential_net, event_shape)
        elif estimator in ("product", "gradient"):
            self.inner = FluxMatching(estimator=estimator, dim=dim, **self.fixed_sigma_options)
        else:
            raise FluxMatchError(f"unknown flux estimator {estimator!r}: expected potential, product or gradient")

    @property
    def config(self) -> dict:
        return {
            **super().config,
            "estimator": self.estimator,
            "dim": self.dim,
            "potential_hidden": list(self.potential_hidden),
            "n_classes": self.n_classes,
            "field_lr_scale": self.field_lr_scale,
            "potential_lr_scale": self.potential_lr_scale,
            "fixed_sigma_options": self.fixed_sigma_options,
            "potential_net": self.potential_net,
            "event_shape": self.event_shape,
        }

    def param_groups(self, field: nn.Module, lr: float) -> list[dict]:
        """The field at ``field_lr_scale``; the potential and normaliser at ``potential_lr_scale``."""
        own = [p for name, p in self.named_parameters() if not name.startswith("potential.")]
        if self.potential is None:
            return [{"params": [*field.parameters(), *own], "lr": lr}]
        return [
            {"params": list(field.parameters()), "lr": lr * self.field_lr_scale},
            {"params": [*self.potential.parameters(), *own], "lr": lr * self.potential_lr_scale},
        ]

    def forward(self, field, x: torch.Tensor, reference=None, labels: torch.Tensor | None = None) -> ObjectiveOutput:
        self._check_reference(reference)
        x = check_batch(x)
        b = x.shape[0]
        if self.inner is not None:
            return self._horizon_form(field, x, labels)
        sigma = self.draw_sigma(b, device=x.device)
        labels, null = self._labels(field, labels, b)
        x0, target = self._start_and_target(x, sigma, labels, null)
        weight = loss_weight(sigma, self.weighting, self.sigma_data)
        f0 = call_field(field, x0, sigma, labels)
        v = self.potential.gradient(x0, sigma) if labels is None else self.potential.gradient(x0, sigma, labels)
        fit = rowsum((v + f0.detach() - target).square()) * weight
        surrogate = -2.0 * rowsum(f0 * v.detach()) * weight
        if self.normaliser is None:
            loss = fit + surrogate
        else:  # n(σ) learns from the fit alone; the field's surrogate takes the same 1/exp(n) as a constant
            n = self.normaliser(sigma)
            scale = torch.exp(-n)
            loss = fit * scale + n + surrogate * scale.detach()
        terms = {
            "potential_fit": float(fit.detach().mean()),
            "surrogate": float(surrogate.detach().mean()),
            "flux_estimate": float((rowsum(v.detach().square()) * weight).mean()),
        }
        return ObjectiveOutput(loss, terms)

    def _horizon_form(self, field, x: torch.Tensor, labels) -> ObjectiveOutput:
        """One σ for the batch; the fixed-σ finite-horizon estimator at that σ, weighted by λ(σ)."""
        if labels is not None and int(getattr(field, "n_classes", 0) or 0):
            raise FluxMatchError("the finite-horizon flux estimators do not take class labels; use estimator='potential'")
        sigma = self.draw_sigma(1, device=x.device)
        out = self.inner(field, x, sigma=float(sigma))
        weight = float(loss_weight(sigma, self.weighting, self.sigma_data))
        return ObjectiveOutput(out.loss * weight, {**out.terms, "sigma": float(sigma)})


def _default_potential(dim: int, hidden: tuple[int, ...], sigma_data: float, n_classes: int, net: str = "mlp", event_shape=None) -> nn.Module:
    from ..fields.precond import MLPScalar, PreconditionedPotential, UNetScalar

    if net == "unet":
        c, h, _ = event_shape
        return PreconditionedPotential(UNetScalar(in_channels=c, channels=16, resolution=h, n_classes=n_classes), sigma_data=sigma_data)
    return PreconditionedPotential(MLPScalar(int(dim), hidden, n_classes=n_classes), sigma_data=sigma_data)
