"""The Flux Matching objective, at a fixed σ or over a continuum of σ (docs/MATH.md §2–4).

Its minimisers are exactly the fields f that leave p_σ stationary under dX = f dt + sqrt(2) dW:
the flux J(f) = E_p|∇φ|², with ∇φ the gradient part of u = f − s, is zero and the divergence-free
part of u is left free. The objective is assembled from named parts:

- the noise (:mod:`~fluxmatch.objectives.noise_levels`): a fixed σ, or a σ distribution for one
  σ-conditioned field f(x, σ), with the loss weighting across σ and an optional learned normaliser;
- the estimator of ∂J/∂θ (:mod:`~fluxmatch.objectives.estimators`): the potential estimator
  (default, a σ per row) or the finite-horizon "product" and "gradient" estimators (a σ per batch),
  built on :mod:`~fluxmatch.reference` (p_σ and its closed-form derivatives),
  :mod:`~fluxmatch.dynamics` (reference paths, transport of ∇r back to x0),
  :mod:`~fluxmatch.stationarity` (r and ∇r of the field) and :mod:`~fluxmatch.objectives.horizon` (q);
- the potential network, matched to the field by :func:`~fluxmatch.fields.potential_for`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import FluxMatchError
from ..reference import GaussianMixture
from .base import ObjectiveOutput, check_batch
from .estimators import Estimator, HorizonEstimator, PotentialEstimator, make_estimator
from .noised import NoisedObjective, noise_from

#: the most entries per data point fixed-σ Flux Matching trains on. Langevin chains started at
#: held-out data of 8-component mixtures drift, after 2000 steps, 1.07×, 0.86× and 1.12× as far as
#: DSM's at d = 8, 16, 32, and 1.9× at d = 64 (docs/estimators.md, "Fixed σ in many dimensions").
MAX_FIXED_SIGMA_ENTRIES = 32


def check_fixed_sigma_entries(entries: int) -> None:
    """Refuse fixed-σ Flux Matching on points of more than :data:`MAX_FIXED_SIGMA_ENTRIES` entries."""
    if int(entries) > MAX_FIXED_SIGMA_ENTRIES:
        raise FluxMatchError(
            f"fixed-σ Flux Matching holds its Langevin chains up to {MAX_FIXED_SIGMA_ENTRIES} entries per point; this data has {int(entries)}. "
            "Train it noise-annealed: --noise annealed (the split estimator, FluxMatching(noise='edm', estimator='split'))"
        )


class FluxMatching(NoisedObjective):
    """Flux Matching: a field f(x, σ) whose Langevin dynamics leave every p_σ stationary.

    Args:
        sigma: a fixed noise level σ > 0 (data units). Give it or ``noise``, not both; neither
            is the fixed σ = 0.2236.
        noise: the σ distribution: anything :func:`~fluxmatch.objectives.noise_levels.make_noise`
            takes ("edm", "loguniform", a config dict, a number, a distribution).
        estimator: "potential" (default), "split" (a two-headed field: DSM for its score head,
            Flux Matching for its flux head; noise-annealed only), "product", "gradient", an
            estimator's config dict or an :class:`~fluxmatch.objectives.estimators.Estimator`.
        weighting: per-row weights of :func:`~fluxmatch.objectives.noise_levels.loss_weights`
            (None: "relaxation" at a fixed σ, J = E|∇φ|²/σ² in relaxation times; "edm" over a
            continuum). The finite-horizon estimators' loss takes the weight a.
        sigma_data: σ_d of the data (data units), for the "edm" weighting.
        normaliser: learn n(σ) and divide the potential's fit and the field's surrogate by
            exp(n(σ)) (None: on over a continuum with the potential estimator). The potential
            estimator only: a surrogate is no proper loss to learn n from.
        label_dropout: fraction of labels replaced by the null class (class-conditional fields).
        dim: entries of one data point (unused by the finite-horizon estimators): the default
            potential is then built now, as fluxmatch
            0.1 did (an MLP potential at a fixed σ, an EDM-preconditioned one over a continuum);
            without it the potential is matched to the field the objective first sees (in
            :meth:`param_groups` or the first call).
        **estimator_options: options of the estimator named by ``estimator``
            (:class:`~fluxmatch.objectives.estimators.PotentialEstimator`:
            ``potential``, ``field_lr_scale``, ``potential_lr_scale``, ``rao_blackwell``,
            ``target``, ``target_group``, ``potential_hidden``, ``potential_net``, ``event_shape``,
            ``n_classes``; :class:`~fluxmatch.objectives.estimators.HorizonEstimator`:
            ``horizon``, ``dynamics``, ``substeps``, ``divergence``, ``n_probes``,
            ``horizon_sampler``, ``rao_blackwell``, ``stratified``).

    Call: ``objective(field, x, reference=None, labels=None, **extras)`` with x (B, ...) data
    units; the field is called as ``field(z, σ)`` (``field(z, σ, labels)`` when class-conditional,
    extras as keyword arguments) with σ a (B,) tensor. With ``reference`` (fixed σ only, e.g. an
    analytic :class:`~fluxmatch.reference.GaussianMixture`) the start points are drawn from it
    instead of from the batch-smoothed p_σ; x then only sets B and the event shape. Loss (B,): a
    surrogate whose gradient, not value, is meaningful. A fixed σ takes points of at most
    :data:`MAX_FIXED_SIGMA_ENTRIES` entries (beyond, its chains drift; train noise-annealed).

    Example:
        >>> field = MLPField(2)
        >>> objective = FluxMatching(sigma=0.2236)
        >>> out = objective(field, torch.randn(512, 2))
        >>> out.loss.mean().backward()
        >>> FluxMatching(noise="edm", estimator="gradient", horizon=2.0).estimator.horizon
        2.0
    """

    name = "flux"

    def __init__(
        self,
        sigma: float | None = None,
        *,
        noise=None,
        estimator: str | dict | Estimator = "potential",
        weighting: str | None = None,
        sigma_data: float = 0.5,
        normaliser: bool | None = None,
        label_dropout: float = 0.1,
        dim: int | None = None,
        **estimator_options,
    ) -> None:
        distribution = noise_from(sigma, noise)
        chosen = make_estimator(estimator, **estimator_options)
        potential_form = isinstance(chosen, PotentialEstimator)
        if normaliser and not potential_form:
            raise FluxMatchError(f"the normaliser applies to the potential estimator, not {chosen.kind}: its surrogate is no loss to learn the scale from")
        weighting = ("relaxation" if distribution.is_fixed else "edm") if weighting is None else weighting
        with_normaliser = (potential_form and not distribution.is_fixed) if normaliser is None else bool(normaliser)
        super().__init__(distribution, weighting, sigma_data, with_normaliser, label_dropout)
        self.estimator = chosen
        self.potential = None
        # the modules are created in fluxmatch 0.1's order (normaliser, horizon sampler,
        # potential): their initialisation draws random numbers, so seeded runs are unchanged
        chosen.resolve(distribution)
        if potential_form and chosen.potential is None and dim is not None:
            chosen.build(dim, distribution, self.sigma_data)
        for part, module in chosen.parts(distribution).items():
            setattr(self, part, module)

    @property
    def config(self) -> dict:
        return {
            "name": self.name,
            "noise": self.noise.config,
            "estimator": self.estimator.config,
            "weighting": self.weighting,
            "sigma_data": self.sigma_data,
            "normaliser": self.normaliser is not None,
            "label_dropout": self.label_dropout,
        }

    @property
    def takes_extras(self) -> bool:
        """Whether batch extras reach the field: the potential estimator passes them on."""
        return self.estimator.takes_extras

    @property
    def horizon(self) -> float:
        """The estimator's largest horizon H in relaxation times (math.inf: the potential estimator)."""
        return self.estimator.horizon

    @property
    def rao_blackwell(self) -> bool:
        """Whether the estimator Rao-Blackwellises (its target, or its endpoints' signal)."""
        return self.estimator.rao_blackwell

    @property
    def target(self) -> str:
        """The potential's regression target ("batch" or "training_set"); "batch" for the finite-horizon estimators."""
        return getattr(self.estimator, "target", "batch")

    @property
    def target_group(self) -> int | None:
        """The potential's target group size at a fixed σ (None: the whole batch)."""
        return getattr(self.estimator, "target_group", None)

    def design_field(self, field):
        """The field design terms shape: the split estimator's flux head alone, else the field."""
        return self.estimator.design_field(field)

    def bind(self, field, event_shape: tuple[int, ...] | None = None) -> None:
        """Give the potential estimator its potential, matched to ``field`` and put on the
        field's device, if it has none yet (``event_shape``: the shape of one data point)."""
        if not isinstance(self.estimator, PotentialEstimator) or self.potential is not None:
            return
        potential = self.estimator.bind(field, event_shape)
        device = next((p.device for p in field.parameters()), None) if isinstance(field, nn.Module) else None
        self.potential = potential if device is None else potential.to(device)

    def param_groups(self, field: nn.Module, lr: float) -> list[dict]:
        """Optimizer parameter groups: the field, and the objective's own learnable parts.

        The potential estimator is a two-timescale game: its potential (with the normaliser)
        must track the field, so it learns ``potential_lr_scale / field_lr_scale`` times faster
        than the field. The finite-horizon estimators: one group, the learned horizon sampler
        with the field.
        """
        self.bind(field)
        if self.potential is None:
            return [{"params": [*field.parameters(), *self.parameters()], "lr": lr}]
        own = [] if self.normaliser is None else list(self.normaliser.parameters())
        return [
            {"params": list(field.parameters()), "lr": lr * self.estimator.field_lr_scale},
            {"params": [*self.potential.parameters(), *own], "lr": lr * self.estimator.potential_lr_scale},
        ]

    def forward(self, field, x: torch.Tensor, reference: GaussianMixture | None = None, labels: torch.Tensor | None = None, **extras) -> ObjectiveOutput:
        """Per-row losses (B,) on the batch x (B, ...); ``terms`` logs the surrogate and the
        estimator's diagnostics (potential fit and flux estimate, or residual RMS and σ)."""
        x = check_batch(x)
        self._check_reference(reference)
        if self.noise.is_fixed:
            check_fixed_sigma_entries(x[0].numel())
        if isinstance(self.estimator, HorizonEstimator):
            return self._one_sigma(field, x, reference, labels, extras)
        self.bind(field, tuple(x.shape[1:]))
        sigma, x0, target, labels = self._noised_batch(field, x, reference, labels, keep_rows=bool(extras))
        fit, surrogate, terms = self.estimator.losses(field, x0, target, sigma, labels, extras, self._weights(sigma))
        return ObjectiveOutput(self._normalised(fit, sigma, surrogate), terms)

    def _one_sigma(self, field, x: torch.Tensor, reference, labels, extras: dict) -> ObjectiveOutput:
        """The finite-horizon estimators: one σ for the batch (its reference dynamics are shared), loss weighted by a(σ)."""
        if extras:
            raise FluxMatchError(f"the {self.estimator.kind} estimator does not pass batch extras ({', '.join(extras)}) to the field; use estimator='potential'")
        if labels is not None and int(getattr(field, "n_classes", 0) or 0):
            raise FluxMatchError("the finite-horizon flux estimators do not take class labels; use estimator='potential'")
        sigma = self.draw_sigma(1, device=x.device)
        level = self.noise.sigma if self.noise.is_fixed else float(sigma)
        loss, terms = self.estimator.losses(field, x, reference, level)
        a, _ = self._weights(sigma)
        return ObjectiveOutput(loss * a, {**terms, "sigma": level})
