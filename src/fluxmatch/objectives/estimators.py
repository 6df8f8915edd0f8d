"""The estimators of the flux objective's gradient ∂J/∂θ (docs/MATH.md §2–3).

:class:`PotentialEstimator` (the default at a fixed σ) uses the dual form of J: a scalar potential
g learns ∇g ≈ −∇φ, the gradient part of u = f − s, by regression, and the field follows ∇g; one σ
per row, no horizon. :class:`SplitEstimator` (the default of noise-annealed runs) trains the score
head of a two-headed field by DSM and its flux head by the same potential, with a ridge. :class:`HorizonEstimator` ("product", "gradient") integrates the reference
dynamics' correlations up to a horizon H, MATH.md eq. (4); the batch shares one σ because it
shares the reference. Each estimator holds its own options; :class:`~fluxmatch.objectives.FluxMatching`
draws σ, builds the start points and weighs and normalises what the estimator returns.

The estimator's learnable modules (the potential, the learned horizon sampler) are registered
on the objective under the names :meth:`Estimator.parts` gives, which are those of fluxmatch
0.1, so that its checkpoints load.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod

import torch
from torch import nn

from ..dynamics import DYNAMICS, component_ou, reference_langevin, transport_back
from ..errors import FluxMatchError, check_positive
from ..fields import ForwardModeField, build_field, call_field
from ..fields.potentials import POTENTIAL_NETS, potential_for, potential_for_dim
from ..reference import EmpiricalGaussian, GaussianMixture
from ..stationarity import field_and_divergence, residual_and_gradient, stationarity_residual
from .horizon import make_horizon_sampler
from .noise_levels import NoiseDistribution
from .noised import check_target, rowsum


class Estimator(ABC):
    """A way of estimating ∂J/∂θ: its options (``config``) and the modules it learns (``parts``).

    Attributes:
        kind: "potential", "product" or "gradient".
        sigma_per_row: whether every row draws its own σ (else the batch shares one).
        takes_extras: whether a batch's extras (masks, ...) can be passed on to the field.
        horizon: the largest horizon H in relaxation times (math.inf for the potential estimator).
    """

    kind: str = ""
    sigma_per_row: bool = False
    takes_extras: bool = False
    horizon: float = math.inf

    @property
    @abstractmethod
    def config(self) -> dict:
        """``{"kind": ..., **options}``: what :func:`make_estimator` rebuilds the estimator from."""

    @abstractmethod
    def parts(self, noise: NoiseDistribution) -> dict[str, nn.Module]:
        """The learnable modules the objective registers, by their state-dict names."""

    @abstractmethod
    def resolve(self, noise: NoiseDistribution) -> None:
        """Fill in the defaults that depend on the noise (called once, by the objective)."""

    def design_field(self, field):
        """The field design terms are evaluated on (the field itself, unless the estimator
        trains only part of it by Flux Matching)."""
        return field


class PotentialEstimator(Estimator):
    """The dual form of J = E|∇φ|²: a potential g_ψ fits −∇φ by regression, the field follows ∇g_ψ.

    With ``u = f − s = ∇φ + w`` (w ⊥ gradients in L²(p_σ)), ``E|∇g + u|² = E|∇g + ∇φ|² + E|w|²``
    is minimised by ∇g = −∇φ whatever w is, so the regression per row, with s(x0) the target of
    the objective's start points,

        fit = a(σ) |v + sg(f(x0)) − s(x0)|²,   v = ∇g(x0, σ),

    leaves the divergence-free part free. Given the potential, the field's surrogate
    ``−2 b(σ) f(x0)·sg(v)`` has gradient 2b E[∂_θu·∇φ]: with the "relaxation" weighting
    (a = 1, b = 1/σ²) that is ∂_θJ for J = E|∇φ|²/σ² in relaxation times, the H → ∞ limit of
    docs/MATH.md eq. (4); with "edm" (a = b = λ(σ)) it is DSM's gradient with u replaced by its
    gradient part. The reported ``flux_estimate`` is E[b |v|²]. Units: the fit is in 1/data² times a.

    Args:
        potential: a module with ``gradient(x, c, labels=None, create_graph=True)`` (shaped like
            x), or its config dict (:func:`~fluxmatch.fields.build_field`); None: built by
            :func:`~fluxmatch.fields.potential_for` from the field the objective first sees
            (or from the objective's ``dim``, at construction).
        field_lr_scale, potential_lr_scale: learning-rate multipliers of the two players (None:
            0.25 and 10 at a fixed σ, 0.5 and 20 over a continuum).
        rao_blackwell: regress on the batch posterior mean of the denoising target −ε/σ (the exact
            score of the σ-smoothed batch; one B×B pass) instead of the target itself.
        target: "batch" (as ``rao_blackwell`` says) or "training_set" (the score of the whole
            training set smoothed at σ; :meth:`~fluxmatch.objectives.FluxMatching.use_training_set`).
        target_group: at a fixed σ with ``rao_blackwell``: size of the random batch groups whose
            smoothed score is the target (None: the whole batch;
            :func:`~fluxmatch.reference.grouped_denoising_target`).
        potential_hidden, potential_net, event_shape, n_classes: hints for the default potential
            (hidden widths; "mlp" or "unet"; the (C, H, W) of one image; classes, None: the field's).
        legacy_horizon_sampler: fluxmatch 0.1 built a horizon sampler for every fixed-σ flux
            objective, unused by this estimator; "auto" keeps one ("exponential") at a fixed σ
            and none over a continuum, so that old checkpoints load and the random draws of a
            seeded run (its initialisation precedes the potential's) are unchanged.

    Example:
        >>> objective = FluxMatching(sigma=0.3, estimator=PotentialEstimator(potential_lr_scale=5.0), dim=2)
        >>> objective.estimator.config["potential"]["type"]
        'mlp_potential'
    """

    kind = "potential"
    sigma_per_row = True
    takes_extras = True

    def __init__(
        self,
        potential: nn.Module | dict | None = None,
        field_lr_scale: float | None = None,
        potential_lr_scale: float | None = None,
        rao_blackwell: bool = True,
        target: str = "batch",
        target_group: int | None = None,
        *,
        potential_hidden: tuple[int, ...] | None = None,
        potential_net: str = "mlp",
        event_shape: tuple[int, ...] | None = None,
        n_classes: int | None = None,
        legacy_horizon_sampler: str | None = "auto",
    ) -> None:
        if isinstance(potential, dict):
            potential = build_field(potential)
        if potential is not None and not callable(getattr(potential, "gradient", None)):
            raise FluxMatchError(f"a potential needs a gradient(x, c) method, {type(potential).__name__} has none")
        self.potential = potential
        self.field_lr_scale = None if field_lr_scale is None else check_positive(field_lr_scale, "field_lr_scale")
        self.potential_lr_scale = None if potential_lr_scale is None else check_positive(potential_lr_scale, "potential_lr_scale")
        self.rao_blackwell = bool(rao_blackwell)
        self.target = check_target(target)
        self.target_group = None if target_group is None else int(check_positive(target_group, "target_group"))
        if potential_net not in POTENTIAL_NETS:
            raise FluxMatchError(f"unknown potential network {potential_net!r}: expected one of {', '.join(POTENTIAL_NETS)}")
        self.potential_hidden = None if potential_hidden is None else tuple(int(h) for h in potential_hidden)
        self.potential_net = potential_net
        self.event_shape = None if event_shape is None else tuple(int(e) for e in event_shape)
        self.n_classes = None if n_classes is None else int(n_classes)
        if legacy_horizon_sampler not in ("auto", None, "exponential", "uniform"):
            raise FluxMatchError(f"legacy_horizon_sampler must be 'auto', 'exponential', 'uniform' or None, got {legacy_horizon_sampler!r}")
        self.legacy_horizon_sampler = legacy_horizon_sampler
        self._legacy_sampler = None

    @property
    def config(self) -> dict:
        potential = None
        if self.potential is not None:
            potential = getattr(self.potential, "config", None)
            if not isinstance(potential, dict):
                raise FluxMatchError(f"the potential {type(self.potential).__name__} has no config dict: it cannot be stored with the objective")
        return {
            "kind": self.kind,
            "potential": potential,
            "field_lr_scale": self.field_lr_scale,
            "potential_lr_scale": self.potential_lr_scale,
            "rao_blackwell": self.rao_blackwell,
            "target": self.target,
            "target_group": self.target_group,
            "potential_hidden": None if self.potential_hidden is None else list(self.potential_hidden),
            "potential_net": self.potential_net,
            "event_shape": None if self.event_shape is None else list(self.event_shape),
            "n_classes": self.n_classes,
            "legacy_horizon_sampler": self.legacy_horizon_sampler,
        }

    def resolve(self, noise: NoiseDistribution) -> None:
        """Learning-rate scales (0.25 / 10 at a fixed σ, 0.5 / 20 over a continuum) and the
        fixed-σ legacy horizon sampler, whose initialisation draws random numbers now."""
        field_scale, potential_scale = (0.25, 10.0) if noise.is_fixed else (0.5, 20.0)
        self.field_lr_scale = field_scale if self.field_lr_scale is None else self.field_lr_scale
        self.potential_lr_scale = potential_scale if self.potential_lr_scale is None else self.potential_lr_scale
        if self.legacy_horizon_sampler == "auto":
            self.legacy_horizon_sampler = "exponential" if noise.is_fixed else None
        if self.legacy_horizon_sampler is not None and self._legacy_sampler is None:
            self._legacy_sampler = make_horizon_sampler(self.legacy_horizon_sampler, 4.0)

    def parts(self, noise: NoiseDistribution) -> dict[str, nn.Module]:
        parts = {} if self._legacy_sampler is None else {"horizon_sampler": self._legacy_sampler}
        return parts if self.potential is None else {**parts, "potential": self.potential}

    def build(self, dim: int, noise: NoiseDistribution, sigma_data: float) -> nn.Module:
        """The default potential for points of ``dim`` entries, before any field is seen: an MLP
        potential at a fixed σ, an EDM-preconditioned one over a continuum (sigma_data: σ_d)."""
        self.potential = potential_for_dim(
            dim, self.potential_hidden, preconditioned=not noise.is_fixed, sigma_data=sigma_data,
            n_classes=self.n_classes or 0, net=self.potential_net, event_shape=self.event_shape,
        )
        return self.potential

    def bind(self, field, event_shape: tuple[int, ...] | None = None) -> nn.Module:
        """The potential, built for ``field`` by :func:`~fluxmatch.fields.potential_for` if there
        is none yet (``event_shape``: the shape of one data point, when the field does not say)."""
        if self.potential is None:
            self.potential = potential_for(field, self.potential_hidden, self.n_classes, self.potential_net, self.event_shape or event_shape)
        return self.potential

    def losses(self, field, x0: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor, labels, extras: dict, weights) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The (B,) fit and (B,) field surrogate at the start points x0 (B, ...) with targets
        s(x0) and noise levels σ (B,); ``weights`` = (a, τ) of
        :func:`~fluxmatch.objectives.noise_levels.weight_factors`, the surrogate weighted by a/τ."""
        a, tau = weights
        f0 = call_field(field, x0, sigma, labels, **extras)
        v = self.potential.gradient(x0, sigma) if labels is None else self.potential.gradient(x0, sigma, labels)
        fit = rowsum((v + f0.detach() - target).square()) * a
        surrogate = -2.0 * rowsum(f0 * v.detach()) * a / tau
        flux = (rowsum(v.detach().square()) * a / tau).mean()
        terms = {"surrogate": float(surrogate.detach().mean()), "potential_fit": float(fit.detach().mean()), "flux_estimate": float(flux)}
        return fit, surrogate, terms


class SplitEstimator(PotentialEstimator):
    """Denoising score matching for the score head, Flux Matching for the flux head: ``f = s_θ + w_θ``.

    The field is an :class:`~fluxmatch.fields.EDMSplit` (one backbone, two heads). Per row,

        dsm  = a(σ) |s_θ(x0) − s(x0)|²,
        fit  = a(σ) |v + sg(f(x0)) − s(x0)|²,                 v = ∇g(x0, σ),
        surrogate = −2 (a/τ) w_θ(x0) · sg(v),

    the potential g fitting −∇φ as in :class:`PotentialEstimator`, but only the flux head
    following it. The minimisers are those of Flux Matching: DSM makes s_θ = s, and J(f) = 0
    then asks P_grad(w_θ) = 0, so f ranges over s plus every flux that leaves p_σ stationary.
    What it changes is the conditioning: the score, which carries the samples' detail, is learned
    by the field's own network from a regression target, not from the potential's gradient; the
    potential only has to find the gradient part of the small residual f − s. Design terms
    (:mod:`~fluxmatch.objectives.design`) act on the flux head (:meth:`design_field`).

    Args: as :class:`PotentialEstimator` (the field's learning-rate scale defaults to 1: the
    score head learns at DSM's rate; the potential's to 20), and

        flux_decay: λ ≥ 0 of a ridge ``λ a(σ) |w_θ|²`` on the flux head. Flux Matching leaves
            the divergence-free part free, so nothing pulls back what the potential's errors
            push into it; the ridge does, and selects the least flux that the design terms ask for.

    Example:
        >>> objective = FluxMatching(noise="edm", estimator="split")
        >>> field = EDMSplit(MLPField(2, (16,), conditioning="sigma", heads=2))
        >>> out = objective(field, torch.randn(64, 2))
        >>> sorted(out.terms)
        ['dsm', 'flux_estimate', 'flux_rms', 'potential_fit', 'surrogate']
    """

    kind = "split"
    takes_extras = False

    def __init__(self, *args, flux_decay: float = 0.1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.flux_decay = float(flux_decay)
        if not (math.isfinite(self.flux_decay) and self.flux_decay >= 0):
            raise FluxMatchError(f"flux_decay must be a finite number ≥ 0, got {flux_decay!r}")

    @property
    def config(self) -> dict:
        return {**super().config, "flux_decay": self.flux_decay}

    def resolve(self, noise: NoiseDistribution) -> None:
        """Learning-rate scales: 1 for the field (its score head is trained like DSM's), 20 for the potential."""
        if noise.is_fixed:
            raise FluxMatchError("the split estimator trains over a continuum of σ (its score head is noise-annealed DSM); use noise='edm' or the potential estimator at a fixed σ")
        self.field_lr_scale = 1.0 if self.field_lr_scale is None else self.field_lr_scale
        self.potential_lr_scale = 20.0 if self.potential_lr_scale is None else self.potential_lr_scale
        self.legacy_horizon_sampler = None

    def losses(self, field, x0: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor, labels, extras: dict, weights) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The (B,) regression losses (DSM of the score head plus the potential's fit) and the (B,)
        flux head's surrogate at start points x0 (B, ...); arguments as :meth:`PotentialEstimator.losses`."""
        if extras:
            raise FluxMatchError(f"the split estimator does not pass batch extras ({', '.join(extras)}) to the field; use estimator='potential'")
        if not callable(getattr(field, "parts", None)):
            raise FluxMatchError(f"the split estimator needs a field with a score and a flux head (fluxmatch.fields.EDMSplit), got {type(field).__name__}")
        a, tau = weights
        score, flux = field.parts(x0, sigma, labels)
        f0 = score.detach() + flux
        v = self.potential.gradient(x0, sigma) if labels is None else self.potential.gradient(x0, sigma, labels)
        dsm = rowsum((score - target).square()) * a
        fit = rowsum((v + f0.detach() - target).square()) * a
        ridge = rowsum(flux.square()) * a * self.flux_decay
        surrogate = -2.0 * rowsum(flux * v.detach()) * a / tau
        terms = {
            "dsm": float(dsm.detach().mean()),
            "flux_rms": float(flux.detach().square().mean().sqrt()),
            "surrogate": float(surrogate.detach().mean()),
            "potential_fit": float(fit.detach().mean()),
            "flux_estimate": float((rowsum(v.detach().square()) * a / tau).mean()),
        }
        return dsm + fit + ridge, surrogate, terms

    def design_field(self, field):
        """The field design terms see: the flux head with the score head held fixed."""
        from ..fields import ScoreFixed

        return ScoreFixed(field) if callable(getattr(field, "parts", None)) else field


class HorizonEstimator(Estimator):
    """The finite-horizon estimators: per start point x0 ~ p_σ and horizon t ~ q on [0, H],

        "gradient": ℓ = −(2/q(t)) f(x0) · sg(E[(∂X_t/∂x0)ᵀ ∇r(X_t) | x0]),  docs/MATH.md eq. (4),
            with ∂X_t/∂x0 ≈ ρ_t I (exact for one Gaussian);
        "product": ℓ = (2/q(t)) r_θ(x0) · sg(E[r(X_t) − r̄ | x0]), the exact gradient of
            ∫_0^H E[r K_t r] dt for any p_σ-reversible kernel K (no transport approximation).

    docs/MATH.md writes u_θ = f_θ − s in place of f_θ; the surrogates differ by a θ-independent
    term, so the score at x0 is never computed. Time is in relaxation times (the reference
    dynamics dX = σ² s dt + sqrt(2σ²) dW). The batch shares one σ and its reference p_σ.

    Args:
        kind: "product" or "gradient".
        horizon: H, the largest horizon, in relaxation times (reference: 4).
        dynamics: "component" (exact OU of each start point's mixture component; exactly
            p_σ-reversible, no time stepping) or "langevin" (the paper's K-substep simulation
            of the full reference's Langevin diffusion).
        substeps: K for ``dynamics="langevin"``.
        divergence: "auto" (exact for d ≤ 8), "exact" or "hutchinson" (Rademacher probes).
        n_probes: Hutchinson probes per point.
        horizon_sampler: "uniform", "exponential" (learned by REINFORCE, σ-conditioned) or a
            module with the same ``sample`` / ``reinforce_loss`` methods
            (:mod:`~fluxmatch.objectives.horizon`).
        rao_blackwell: share every endpoint's signal among all start points by their transition
            weights instead of using only its own start (lower variance for one B×B pass).
        stratified: stratify the batch's horizons over [0, H].

    Example:
        >>> HorizonEstimator("gradient", horizon=2.0, horizon_sampler="uniform").config["horizon"]
        2.0
    """

    def __init__(
        self,
        kind: str = "product",
        horizon: float = 4.0,
        dynamics: str = "component",
        substeps: int = 4,
        divergence: str = "auto",
        n_probes: int = 1,
        horizon_sampler: str | nn.Module = "exponential",
        rao_blackwell: bool = True,
        stratified: bool = True,
    ) -> None:
        if kind not in HORIZON_KINDS:
            raise FluxMatchError(f"unknown finite-horizon estimator {kind!r}: expected one of {', '.join(HORIZON_KINDS)}")
        if dynamics not in DYNAMICS:
            raise FluxMatchError(f"unknown reference dynamics {dynamics!r}: expected one of {DYNAMICS}")
        self.kind = kind
        self.horizon_sampler = make_horizon_sampler(horizon_sampler, horizon, stratified)
        self.horizon_kind = horizon_sampler if isinstance(horizon_sampler, str) else type(horizon_sampler).__name__
        self.horizon = self.horizon_sampler.horizon
        self.dynamics = dynamics
        self.substeps = int(substeps)
        self.divergence = divergence
        self.n_probes = int(n_probes)
        self.rao_blackwell = bool(rao_blackwell)
        self.stratified = bool(stratified)

    @property
    def config(self) -> dict:
        return {
            "kind": self.kind,
            "horizon": self.horizon,
            "dynamics": self.dynamics,
            "substeps": self.substeps,
            "divergence": self.divergence,
            "n_probes": self.n_probes,
            "horizon_sampler": self.horizon_kind,
            "rao_blackwell": self.rao_blackwell,
            "stratified": self.stratified,
        }

    def resolve(self, noise: NoiseDistribution) -> None:
        """Nothing of a finite-horizon estimator depends on the noise."""

    def parts(self, noise: NoiseDistribution) -> dict[str, nn.Module]:
        """The horizon sampler: at ``horizon_sampler`` for a fixed σ, at ``inner.horizon_sampler``
        over a continuum (fluxmatch 0.1 wrapped a fixed-σ objective there)."""
        if noise.is_fixed:
            return {"horizon_sampler": self.horizon_sampler}
        inner = nn.Module()
        inner.horizon_sampler = self.horizon_sampler
        return {"inner": inner}

    def losses(self, field, x: torch.Tensor, reference: GaussianMixture | None, sigma: float) -> tuple[torch.Tensor, dict]:
        """(B,) surrogate plus the horizon sampler's REINFORCE loss, at one σ (a float, data
        units) for the batch x (B, ...); start points from ``reference`` or the σ-smoothed batch."""
        b = x.shape[0]
        sigmas = x.new_full((b,), sigma)
        ref = EmpiricalGaussian(x, sigma) if reference is None else reference
        t, q = self.horizon_sampler.sample(b, sigmas)
        draw = ref.sample_components(b)
        if self.dynamics == "component":
            paths = component_ou(draw, t, sigma)
        else:
            paths = reference_langevin(ref, draw.x, t, sigma, self.substeps)
        form = self._gradient_form if self.kind == "gradient" else self._product_form
        surrogate, reward, r_end = form(field, ref, paths, q, sigmas, x.shape)
        loss = surrogate + self.horizon_sampler.reinforce_loss(t, sigmas, reward)
        terms = {"surrogate": float(surrogate.detach().mean()), "residual_rms": float(r_end.square().mean().sqrt())}
        return loss, terms

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

        r_θ keeps only its θ-dependent part ∇·f + f·s; r̄, the batch mean of r, is a control
        variate (E_p[r] = 0).
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


HORIZON_KINDS = ("product", "gradient")
ESTIMATORS = ("potential", "split", *HORIZON_KINDS)


def _options(cls) -> tuple[str, ...]:
    return tuple(name for name in inspect.signature(cls).parameters if name != "kind")


ESTIMATOR_OPTIONS = {"potential": _options(PotentialEstimator), "split": (*_options(PotentialEstimator), "flux_decay"), "product": _options(HorizonEstimator), "gradient": _options(HorizonEstimator)}


def make_estimator(spec, **options) -> Estimator:
    """An estimator from an :class:`Estimator` (returned as is), a name ("potential", "product",
    "gradient") or a config dict ``{"kind": ..., **options}``; ``options`` are added to a name's
    or a dict's. An option the estimator does not take raises naming the estimators it applies to.

    Example:
        >>> make_estimator("gradient", horizon=2.0).horizon
        2.0
    """
    if isinstance(spec, Estimator):
        if options:
            raise FluxMatchError(f"options {sorted(options)} go to the estimator's constructor, not beside an estimator instance")
        return spec
    if isinstance(spec, str):
        config = {"kind": spec}
    elif isinstance(spec, dict):
        config = dict(spec)
    else:
        raise FluxMatchError(f"a flux estimator is a name ({', '.join(ESTIMATORS)}), a config dict or an estimator, got {spec!r}")
    config.update(options)
    kind = config.pop("kind", None)
    if kind not in ESTIMATORS:
        raise FluxMatchError(f"unknown flux estimator {kind!r}: expected one of {', '.join(ESTIMATORS)}")
    for name in config:
        if name not in ESTIMATOR_OPTIONS[kind]:
            takers = [k for k in ESTIMATORS if name in ESTIMATOR_OPTIONS[k]]
            if not takers:
                raise FluxMatchError(f"unknown option {name!r} of the {kind} flux estimator: it takes {', '.join(ESTIMATOR_OPTIONS[kind])}")
            raise FluxMatchError(f"{name} applies to the {' and '.join(takers)} estimator{'s' if len(takers) > 1 else ''}, not {kind}")
    if kind in ("potential", "split"):
        return (PotentialEstimator if kind == "potential" else SplitEstimator)(**config)
    return HorizonEstimator(kind, **config)
