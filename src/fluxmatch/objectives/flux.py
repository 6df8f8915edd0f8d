"""Flux Matching at a fixed σ or over a continuum of σ (docs/MATH.md §2–4).

Per start point x0 ~ p_σ and horizon t ~ q on [0, H], the surrogate

    ℓ(x0, t) = −(2 / q(t)) · f_θ(x0) · sg( E[(∂X_t/∂x0)ᵀ ∇r_θ(X_t) | x0] )

has the gradient of the flux objective J(f) = ∫_0^H E_p[r P_t r] dt, whose minimisers are exactly
the fields that leave p_σ stationary. docs/MATH.md writes u_θ = f_θ − s in place of f_θ; the two
surrogates differ by 2 s(x0)·sg(…), which does not depend on θ, so their gradients are equal and
the score at x0 is never computed.

The noise is the objective's σ distribution: a fixed σ (a one-point distribution, the default)
or a continuum (EDM's log-normal, log-uniform) for one σ-conditioned field f(x, σ). With a
fixed σ the whole batch shares the reference p_σ, and the potential estimator's target is the
batch-smoothed score (one B×B pass); over a continuum each row has its own σ and the target is
the score of the batch smoothed at σ_i (:func:`~fluxmatch.reference.annealed_denoising_target`),
weighted by λ(σ) and balanced by the learned normaliser. The finite-horizon estimators
("product", "gradient") simulate the batch reference's dynamics, so over a continuum they draw
one σ per batch, with the σ-conditioned horizon sampler.

The estimator is assembled from named parts:
:mod:`~fluxmatch.reference` (p_σ and its closed-form derivatives),
:mod:`~fluxmatch.dynamics` (reference paths, transport of ∇r back to x0),
:mod:`~fluxmatch.stationarity` (r and ∇r of the field),
:mod:`~fluxmatch.objectives.horizon` (q).
"""

from __future__ import annotations

import torch
from torch import nn

from ..dynamics import DYNAMICS, component_ou, reference_langevin, transport_back
from ..errors import FluxMatchError, check_positive, check_sigma
from ..fields import ForwardModeField, build_field, call_field, potential_for, potential_for_points
from ..reference import EmpiricalGaussian, GaussianMixture, grouped_denoising_target
from ..stationarity import field_and_divergence, residual_and_gradient, stationarity_residual
from .base import ObjectiveOutput, check_batch
from .estimators import HorizonEstimator, PotentialEstimator, estimator_part
from .horizon import make_horizon_sampler
from .noise_levels import loss_weight, make_sigma_distribution
from .noised import NoisedObjective, rowsum

ESTIMATORS = ("potential", "product", "gradient")
DEFAULT_SIGMA = 0.2236
#: estimator defaults by noise: potential widths, field and potential learning-rate scales
DEFAULTS = {"fixed": ((128, 128), 0.25, 10.0), "continuum": ((256, 256), 0.5, 20.0)}


class FluxMatching(NoisedObjective):
    """Flux Matching, at a fixed σ (default 0.2236) or over a σ distribution (``noise=``).

    Args:
        sigma: a fixed noise level σ > 0 of the reference p_σ (data units).
        noise: instead of ``sigma``, a σ distribution: "edm", "loguniform", a config dict or a number.
        estimator: how ∂J/∂θ is estimated: a name, or a named part with its options
            (:class:`~fluxmatch.objectives.estimators.PotentialEstimator`,
            :class:`~fluxmatch.objectives.estimators.HorizonEstimator`).
            "potential" (default): the dual form of J = E|∇φ|²/σ² (H → ∞). A scalar potential
            network g learns ∇g ≈ −∇φ by a denoising regression and the field follows it; no
            horizon. Its target needs one B×B pass (``rao_blackwell``). Needs ``dim`` (or a
            ``potential`` module).
            "product": ``2 ∂_θr(x0) · r(X_t)/q(t)``, the exact gradient of ∫_0^H E[r K_t r] dt
            for the chosen kernel (self-adjointness of K_t; no Jacobian approximation).
            "gradient": docs/MATH.md eq. (4), ``−2 u(x0) · ∂X_t/∂x0ᵀ ∇r(X_t)/q(t)`` with ∂X_t/∂x0 ≈ ρ I.
        horizon: H, the largest horizon, in relaxation times (reference: 4).
        dynamics: "component" (exact OU of each start point's mixture component; exactly
            p_σ-reversible, no time stepping) or "langevin" (the paper's K-substep simulation
            of the full reference's Langevin diffusion).
        substeps: K for ``dynamics="langevin"``.
        divergence: "auto" (exact for d ≤ 8), "exact" or "hutchinson" (Rademacher probes).
        n_probes: Hutchinson probes per point.
        horizon_sampler: "uniform", "exponential" (learned by REINFORCE) or a module with the
            same ``sample`` / ``reinforce_loss`` methods.
        rao_blackwell: product/gradient estimators: share every endpoint's signal among all start
            points by their transition weights instead of using only its own start; potential
            estimator: regress on the batch reference's exact score instead of the denoising
            target −ε/σ (its posterior mean). Lower variance for one B×B pass either way.
        stratified: stratify the batch's horizons over [0, H].
        dim: number of coordinates of one data point (for the default potential network).
        potential: a module with ``gradient(x, c[, labels])`` (e.g. :class:`~fluxmatch.fields.MLPPotential`).
        potential_hidden: hidden widths of the default potential network (fixed σ: 128-128, an
            MLP potential; a continuum: 256-256, an EDM-preconditioned MLP potential).
        field_lr_scale, potential_lr_scale: learning-rate multipliers of the two players of the
            potential estimator (fixed σ 0.25 / 10, a continuum 0.5 / 20; see :meth:`param_groups`).
        target_group: fixed σ, potential estimator with ``rao_blackwell``: size of the random
            batch groups whose smoothed score is the regression target (None: the whole batch;
            see :func:`~fluxmatch.reference.grouped_denoising_target`).
        weighting, sigma_data, normaliser, label_dropout, target: over a continuum, as for
            :class:`~fluxmatch.objectives.DenoisingScoreMatching` (defaults "edm", 0.5, on for
            the potential estimator, 0.1, "batch").
        n_classes: classes of a class-conditional default potential (a continuum; 0: unconditional).
        potential_net, event_shape: the default potential's network over a continuum: "mlp", or
            "unet" (:class:`~fluxmatch.fields.precond.UNetScalar`, 16 channels; needs the image shape).

    Call: ``objective(field, x, reference=None, labels=None)`` with x of shape (B, ...); the
    field is called as ``field(z, σ)`` (``field(z, σ, labels)`` when class-conditional) with a
    (B,) tensor of σ. With ``reference`` (fixed σ only, e.g. an analytic
    :class:`~fluxmatch.reference.GaussianMixture`) the start points are drawn from it instead of
    from the batch-smoothed p_σ; x then only sets B and the event shape.

    Example:
        >>> field = MLPField(2)
        >>> objective = FluxMatching(sigma=0.2236, dim=2)
        >>> out = objective(field, torch.randn(512, 2))
        >>> out.loss.mean().backward()
    """

    name = "flux"

    def __init__(
        self,
        sigma: float | None = None,
        horizon: float = 4.0,
        dynamics: str = "component",
        substeps: int = 4,
        divergence: str = "auto",
        n_probes: int = 1,
        horizon_sampler: str | nn.Module = "exponential",
        rao_blackwell: bool = True,
        stratified: bool = True,
        estimator: str = "potential",
        dim: int | None = None,
        potential: nn.Module | None = None,
        potential_hidden: tuple[int, ...] | None = None,
        field_lr_scale: float | None = None,
        potential_lr_scale: float | None = None,
        target_group: int | None = None,
        *,
        noise=None,
        weighting: str | None = None,
        sigma_data: float = 0.5,
        normaliser: bool | None = None,
        label_dropout: float = 0.1,
        target: str = "batch",
        n_classes: int = 0,
        potential_net: str = "mlp",
        event_shape: tuple[int, ...] | None = None,
    ) -> None:
        if not isinstance(estimator, str):  # a named part: its options replace the keyword arguments
            estimator, part = estimator_part(estimator)
            arguments = {"horizon": horizon, "dynamics": dynamics, "substeps": substeps, "divergence": divergence, "n_probes": n_probes,
                         "horizon_sampler": horizon_sampler, "stratified": stratified, "potential_hidden": potential_hidden,
                         "field_lr_scale": field_lr_scale, "potential_lr_scale": potential_lr_scale, "target_group": target_group,
                         "potential_net": potential_net, **part}
            horizon, dynamics, substeps, divergence, n_probes = (arguments[k] for k in ("horizon", "dynamics", "substeps", "divergence", "n_probes"))
            horizon_sampler, stratified, potential_hidden = arguments["horizon_sampler"], arguments["stratified"], arguments["potential_hidden"]
            field_lr_scale, potential_lr_scale = arguments["field_lr_scale"], arguments["potential_lr_scale"]
            target_group, potential_net = arguments["target_group"], arguments["potential_net"]
        if sigma is not None and noise is not None:
            raise FluxMatchError("give a fixed sigma or a noise distribution, not both")
        distribution = make_sigma_distribution(DEFAULT_SIGMA if sigma is None and noise is None else (sigma if noise is None else noise))
        fixed = distribution.kind == "fixed"
        if estimator not in ESTIMATORS:
            raise FluxMatchError(f"unknown flux estimator {estimator!r}: expected one of {ESTIMATORS}")
        if dynamics not in DYNAMICS:
            raise FluxMatchError(f"unknown reference dynamics {dynamics!r}: expected one of {DYNAMICS}")
        with_normaliser = (not fixed and estimator == "potential") if normaliser is None else bool(normaliser) and not fixed and estimator == "potential"
        super().__init__(distribution, ("none" if fixed else "edm") if weighting is None else weighting, sigma_data, with_normaliser, label_dropout, rao_blackwell, target)
        hidden, field_scale, potential_scale = DEFAULTS["fixed" if fixed else "continuum"]
        self.estimator = estimator
        self.dim = dim
        self.potential_hidden = tuple(int(h) for h in (potential_hidden or hidden))
        self._hidden_given = None if potential_hidden is None else self.potential_hidden
        self.field_lr_scale = check_positive(field_scale if field_lr_scale is None else field_lr_scale, "field_lr_scale")
        self.potential_lr_scale = check_positive(potential_scale if potential_lr_scale is None else potential_lr_scale, "potential_lr_scale")
        self.target_group = target_group
        self.n_classes = int(n_classes)
        self.potential_net = potential_net
        self.event_shape = None if event_shape is None else [int(e) for e in event_shape]
        # the modules are built in the same order as fluxmatch 0.1 built them (the RNG draws of
        # their initialisation, and so every seeded run, are unchanged): the horizon sampler,
        # whenever a fixed σ or a finite horizon is used, then the potential
        self.horizon_sampler = None
        if fixed or estimator != "potential":
            self.horizon_sampler = make_horizon_sampler(horizon_sampler, horizon, stratified)
        self.horizon_kind = horizon_sampler if isinstance(horizon_sampler, str) else type(horizon_sampler).__name__
        self.stratified = bool(stratified)
        self.horizon = float(horizon) if self.horizon_sampler is None else self.horizon_sampler.horizon
        self.dynamics = dynamics
        self.substeps = int(substeps)
        self.divergence = divergence
        self.n_probes = int(n_probes)
        self.potential = None
        if estimator == "potential":
            if isinstance(potential, dict):
                potential = build_field(potential)
            if potential is None and dim is not None:
                potential = potential_for_points(dim, self.potential_hidden, not fixed, self.sigma_data, self.n_classes, self.potential_net, self.event_shape)
            self.potential = potential  # None: chosen to match the field when the objective first sees it

    def bind(self, field: nn.Module) -> None:
        """Give the potential estimator the potential that matches ``field``
        (:func:`~fluxmatch.fields.potential_for`), unless it has one."""
        if self.estimator == "potential" and self.potential is None:
            self.potential = potential_for(field, self._hidden_given, self.potential_net)

    @property
    def estimator_options(self) -> PotentialEstimator | HorizonEstimator:
        """The estimator as a named part with its options."""
        if self.estimator == "potential":
            return PotentialEstimator(self._hidden_given, self.field_lr_scale, self.potential_lr_scale, self.target_group, self.potential_net)
        return HorizonEstimator(self.estimator, self.horizon, self.dynamics, self.substeps, self.divergence, self.n_probes, self.horizon_kind, self.stratified)

    @property
    def config(self) -> dict:
        estimator = {
            "estimator": self.estimator, "dim": self.dim, "potential_hidden": list(self.potential_hidden),
            "field_lr_scale": self.field_lr_scale, "potential_lr_scale": self.potential_lr_scale,
            "potential": None if self.potential is None else self.potential.config,
        }
        horizon = {
            "horizon": self.horizon, "dynamics": self.dynamics, "substeps": self.substeps, "divergence": self.divergence,
            "n_probes": self.n_probes, "horizon_sampler": self.horizon_kind, "stratified": self.stratified,
        }
        noised = super().config
        noised["noise"] = noised.pop("sigma_distribution")
        if self.sigma is not None:
            return {**noised, **horizon, **estimator, "target_group": self.target_group}
        return {**noised, **horizon, **estimator, "n_classes": self.n_classes, "potential_net": self.potential_net, "event_shape": self.event_shape}

    def param_groups(self, field: nn.Module, lr: float) -> list[dict]:
        """Optimizer parameter groups: the field, and the objective's own learnable parts.

        The potential estimator is a two-timescale game: its potential must track the field,
        so it learns ``potential_lr_scale / field_lr_scale`` times faster than the field (the
        normaliser learns with the potential).
        """
        self.bind(field)
        if self.potential is None:
            return [{"params": [*field.parameters(), *self.parameters()], "lr": lr}]
        own = [p for name, p in self.named_parameters() if not name.startswith("potential.")]
        return [
            {"params": list(field.parameters()), "lr": lr * self.field_lr_scale},
            {"params": [*self.potential.parameters(), *own], "lr": lr * self.potential_lr_scale},
        ]

    def forward(self, field, x: torch.Tensor, reference: GaussianMixture | None = None, labels: torch.Tensor | None = None, sigma: float | None = None) -> ObjectiveOutput:
        """Per-sample losses (B,) on the batch x (B, ...); ``sigma`` overrides a fixed σ for this call."""
        self._check_reference(reference)
        x = check_batch(x)
        self.bind(field)
        if self.sigma is None:
            return self._continuum(field, x, labels)
        b = x.shape[0]
        level = self.sigma if sigma is None else check_sigma(sigma)
        sigmas = x.new_full((b,), level)
        if self.estimator == "potential":
            return self._potential_form(field, x, reference, sigmas, level)
        return self._horizon_form(field, x, reference, sigmas, level)

    def _continuum(self, field, x: torch.Tensor, labels) -> ObjectiveOutput:
        """A σ per row (potential estimator) or per batch (finite horizon), weighted by λ(σ)."""
        b = x.shape[0]
        if self.estimator != "potential":
            if labels is not None and int(getattr(field, "n_classes", 0) or 0):
                raise FluxMatchError("the finite-horizon flux estimators do not take class labels; use estimator='potential'")
            sigma = self.draw_sigma(1, device=x.device)
            level = float(sigma)
            out = self._horizon_form(field, x, None, x.new_full((b,), level), level)
            weight = float(loss_weight(sigma, self.weighting, self.sigma_data))
            return ObjectiveOutput(out.loss * weight, {**out.terms, "sigma": level})
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

    def _horizon_form(self, field, x: torch.Tensor, reference, sigmas: torch.Tensor, level: float) -> ObjectiveOutput:
        """The finite-horizon estimators at one σ (``level``) shared by the batch."""
        b = x.shape[0]
        ref = EmpiricalGaussian(x, level) if reference is None else reference
        t, q = self.horizon_sampler.sample(b, sigmas)
        draw = ref.sample_components(b)
        if self.dynamics == "component":
            paths = component_ou(draw, t, level)
        else:
            paths = reference_langevin(ref, draw.x, t, level, self.substeps)
        if self.estimator == "gradient":
            surrogate, reward, r_end = self._gradient_form(field, ref, paths, q, sigmas, x.shape)
        else:
            surrogate, reward, r_end = self._product_form(field, ref, paths, q, sigmas, x.shape)
        loss = surrogate + self.horizon_sampler.reinforce_loss(t, sigmas, reward)
        terms = {
            "surrogate": float(surrogate.detach().mean()),
            "residual_rms": float(r_end.square().mean().sqrt()),
        }
        return ObjectiveOutput(loss, terms)

    def _potential_form(self, field, x, reference, sigma, level: float) -> ObjectiveOutput:
        """J = E|∇φ|²/σ² through its dual: ∇g_ψ fits −∇φ by regression, the field follows ∇g_ψ.

        With ``u = f − s = ∇φ + w`` (w ⊥ gradients in L²(p)), ``E|∇g + u|² = E|∇g + ∇φ|² + E|w|²``
        is minimised by ∇g = −∇φ whatever w is. s(x0) is the exact score of the batch-smoothed
        reference p_σ (``rao_blackwell=True``: the posterior mean over the batch of the denoising
        target, one B×B pass) or the denoising target −ε/σ itself (x0 = x + σε); either changes
        that loss by a θ-independent amount in expectation. Given the potential, the field's
        surrogate ``−2 f(x0)·sg(∇g(x0))/σ²`` has gradient 2E[∂_θu·∇φ]/σ² = ∂_θJ: the H → ∞ limit
        of docs/MATH.md eq. (4) in the same σ² time unit.
        """
        if reference is None and self.rao_blackwell:
            x0, score_target = grouped_denoising_target(x, level, self.target_group)
        elif reference is None:
            eps = torch.randn_like(x)
            x0 = x + level * eps
            score_target = -eps / level
        else:
            x0 = reference.sample(x.shape[0]).reshape(x.shape)
            score_target = reference.score(x0)
        f0 = call_field(field, x0, sigma)
        v = self.potential.gradient(x0, sigma)
        fit = (v + f0.detach() - score_target).reshape(x.shape[0], -1).square().sum(1)
        surrogate = -2.0 * (f0 * v.detach()).reshape(x.shape[0], -1).sum(1) / level**2
        flux = v.detach().reshape(x.shape[0], -1).square().sum(1).mean() / level**2
        terms = {"surrogate": float(surrogate.detach().mean()), "potential_fit": float(fit.detach().mean()), "flux_estimate": float(flux)}
        return ObjectiveOutput(fit + surrogate, terms)

    def _gradient_form(self, field, ref, paths, q, sigma, shape):
        """ℓ_i = −2 f(x0_i)·sg(Σ_j W_ij ρ_ij ∇r(X_j)/q_j): docs/MATH.md eq. (4)."""
        residual = residual_and_gradient(field, ref, paths.end.reshape(shape), sigma, self.divergence, self.n_probes)
        signal = residual.gradient / q[:, None]
        pulled = transport_back(paths, signal, self.rao_blackwell)
        f0 = call_field(field, paths.start.reshape(shape), sigma).reshape(shape[0], -1)
        reward = (paths.transport[:, None] * signal).square().sum(1)
        return -2.0 * (f0 * pulled).sum(1), reward, residual.value

    def _product_form(self, field, ref, paths, q, sigma, shape):
        """ℓ_i = 2 r_θ(x0_i)·sg(Σ_j W_ij (r(X_j) − r̄)/q_j): ∂J = 2∫ E[∂_θ r(x0) r(X_t)] dt.

        Exact for any p-reversible kernel (no transport approximation). r_θ keeps only its
        θ-dependent part ∇·f + f·s; r̄, the batch mean of r, is a control variate (E_p[r] = 0).
        """
        r_end = stationarity_residual(field, ref, paths.end.reshape(shape), sigma, self.divergence, self.n_probes)
        signal = ((r_end - r_end.mean()) / q)[:, None]
        pulled = transport_back(paths, signal, self.rao_blackwell, transport=False)[:, 0]
        x0 = paths.start.reshape(shape)
        with torch.enable_grad():
            z = x0.detach().requires_grad_(not isinstance(field, ForwardModeField))
            f0, div0 = field_and_divergence(field, z, sigma, self.divergence, self.n_probes)
        s0 = ref.score(x0).reshape(shape[0], -1)
        r_theta = div0 + (f0.reshape(shape[0], -1) * s0).sum(1)
        return 2.0 * r_theta * pulled, signal[:, 0].square(), r_end
