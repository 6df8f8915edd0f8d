"""Design terms: shape *how* a field moves samples, not *where* they go (docs/MATH.md §5).

Flux Matching constrains only the gradient part ∇φ of u = f − s; the part w with ∇·(p w) = 0 is
free. A design term R(f) added to the flux loss moves that free part towards what the term
rewards (rotation, curl, skewness, sparsity, fast mixing) without fighting stationarity. Added to
denoising score matching, whose unique minimiser is s, the same term pulls the field away from
the score and the samples away from the data: comparing the two is the point.

A term is a module ``term(field, x0, sigma, labels=None) -> (B,)`` evaluated at start points
x0 ~ p_σ (data units; σ a (B,) tensor the field is called with, ``field(x0, sigma)``).
:class:`WithDesign` adds weighted terms to any objective.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from ..errors import FluxMatchError, check_positive
from ..fields import call_field
from .base import Objective, ObjectiveOutput, check_batch


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _jacobian(field, x: torch.Tensor, sigma, labels=None) -> torch.Tensor:
    """Exact Jacobian J[b, i, j] = ∂f_i/∂x_j at the rows of x (B, d) → (B, d, d), units [f]/[x].

    Differentiable in the field's parameters (create_graph). Cost: d backward passes, so it is
    meant for low dimension. The field must act row by row."""
    with torch.enable_grad():
        z = x.detach().requires_grad_(True)
        f = _flat(call_field(field, z, sigma, labels))
        rows = []
        for i in range(f.shape[1]):
            (g,) = torch.autograd.grad(f[:, i].sum(), z, create_graph=True, allow_unused=True, materialize_grads=True)
            rows.append(_flat(g))
    return torch.stack(rows, 1)


class Rotation(nn.Module):
    """Tangential flow: ``R(f)(x) = −f(x)·t(x)``, or ``(f(x)·t(x) − speed)²`` with a target speed.

    t(x) is the unit tangent ``R₉₀(x − c)/|x − c|`` about ``center`` c (2-D; R₉₀(a, b) = (−b, a),
    counter-clockwise), or ``direction_field(x)`` (B, d) → (B, d) as given (any d).

    Without a target speed the reward is linear in f: a divergence-free flux can grow without
    bound, so the weight and the training length set how fast the learned field turns.

    Example:
        >>> spin = lambda x, c: torch.stack([-x[:, 1], x[:, 0]], 1)   # R₉₀ x
        >>> x0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> Rotation()(spin, x0, torch.full((2,), 0.2))               # = −|x0| per row
        tensor([-1., -2.])
    """

    def __init__(self, center=(0.0, 0.0), speed: float | None = None, direction_field=None) -> None:
        super().__init__()
        self.register_buffer("center", torch.as_tensor(center, dtype=torch.float32).reshape(-1))
        self.speed = None if speed is None else float(speed)
        self.direction_field = direction_field

    @property
    def config(self) -> dict:
        if self.direction_field is not None:
            raise FluxMatchError("a Rotation term with a user direction field cannot be stored in a config; use a centre")
        return {"kind": "rotation", "center": self.center.tolist(), "speed": self.speed}

    def tangent(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) direction of the reward at the flattened points x (B, d)."""
        if self.direction_field is not None:
            g = self.direction_field(x)
            if not isinstance(g, torch.Tensor) or g.shape != x.shape:
                raise FluxMatchError(f"the direction field must map (B, d) points to (B, d), got {getattr(g, 'shape', type(g).__name__)}")
            return g
        if x.shape[1] != 2 or self.center.numel() != 2:
            raise FluxMatchError(f"rotation about a centre needs 2-D points and a 2-D centre, got {x.shape[1]} coordinates: pass a direction_field")
        r = x - self.center.to(x)
        return torch.stack([-r[:, 1], r[:, 0]], 1) / r.norm(dim=1, keepdim=True).clamp_min(1e-6)

    def forward(self, field, x0: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        along = (_flat(call_field(field, x0, sigma, labels)) * self.tangent(_flat(x0))).sum(1)
        return -along if self.speed is None else (along - self.speed).square()


class CurlTarget(nn.Module):
    """``R(f)(x) = (curl f(x) − target)²`` in 2-D, curl f = ∂f₂/∂x₁ − ∂f₁/∂x₂ (units [f]/[x]).

    The curl comes from the exact Jacobian (2 backward passes, differentiable in θ)."""

    def __init__(self, target: float = 1.0) -> None:
        super().__init__()
        self.target = float(target)

    @property
    def config(self) -> dict:
        return {"kind": "curl", "target": self.target}

    def forward(self, field, x0: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        if _flat(x0).shape[1] != 2:
            raise FluxMatchError(f"the curl target is defined for 2-D fields, got {_flat(x0).shape[1]} coordinates")
        jac = _jacobian(field, _flat(x0), sigma, labels)
        return (jac[:, 1, 0] - jac[:, 0, 1] - self.target).square()


class JacobianSkew(nn.Module):
    """``R(f)(x) = sign · ‖½(J − Jᵀ)‖²_F`` with J = ∂f/∂x: +1 penalises the antisymmetric part
    (pushes towards a locally conservative field), −1 rewards it (unbounded, like :class:`Rotation`).

    Exact for d ≤ ``exact_max_dim`` (d backward passes). Above, the unbiased estimate
    ``|(J − Jᵀ)v|²/4`` averaged over ``n_probes`` Rademacher probes v (E[vvᵀ] = I), each from one
    vector-Jacobian product Jᵀv and one Jacobian-vector product Jv (by the double-vjp trick).
    """

    def __init__(self, sign: float = 1.0, exact_max_dim: int = 8, n_probes: int = 1) -> None:
        super().__init__()
        if sign not in (-1, 1):
            raise FluxMatchError(f"the skewness sign must be +1 (penalise) or −1 (reward), got {sign!r}")
        self.sign = float(sign)
        self.exact_max_dim = int(exact_max_dim)
        self.n_probes = int(check_positive(n_probes, "the number of probes"))

    @property
    def config(self) -> dict:
        return {"kind": "skew", "sign": self.sign, "exact_max_dim": self.exact_max_dim, "n_probes": self.n_probes}

    def forward(self, field, x0: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        if _flat(x0).shape[1] <= self.exact_max_dim:
            jac = _jacobian(field, _flat(x0), sigma, labels).reshape(x0.shape[0], _flat(x0).shape[1], -1)
            return self.sign * (0.5 * (jac - jac.transpose(1, 2))).square().sum((1, 2))
        total = 0.0
        with torch.enable_grad():
            z = x0.detach().requires_grad_(True)
            f = call_field(field, z, sigma, labels)
            for _ in range(self.n_probes):
                v = torch.empty_like(z).bernoulli_(0.5).mul_(2).sub_(1)
                (jtv,) = torch.autograd.grad(f, z, v, create_graph=True)
                dummy = torch.zeros_like(f, requires_grad=True)
                (jt_dummy,) = torch.autograd.grad(f, z, dummy, create_graph=True)  # Jᵀ·dummy, linear in dummy
                (jv,) = torch.autograd.grad(jt_dummy, dummy, v, create_graph=True)  # its transpose: J v
                total = total + _flat(jv - jtv).square().sum(1) / 4
        return self.sign * total / self.n_probes


class JacobianSparsity(nn.Module):
    """``R(f)(x) = Σ_{i≠j} |∂f_i/∂x_j|``: L1 of the off-diagonal Jacobian (units [f]/[x]).

    Exact: d backward passes per batch (memory B·d² for the Jacobian), for small d only."""

    @property
    def config(self) -> dict:
        return {"kind": "sparsity"}

    def forward(self, field, x0: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        jac = _jacobian(field, _flat(x0), sigma, labels)
        off = jac - torch.diag_embed(torch.diagonal(jac, dim1=1, dim2=2))
        return off.abs().sum((1, 2))


_SINKHORN = {}


def sinkhorn_divergence(a: torch.Tensor, b: torch.Tensor, epsilon: float = 0.05, scaling: float = 0.5) -> torch.Tensor:
    """Debiased Sinkhorn divergence ``S_ε(a, b) = OT_ε(a, b) − ½OT_ε(a, a) − ½OT_ε(b, b)``.

    Uniform weights on a (n, d) and b (m, d), cost |x − y|² (data units²), entropic
    regularisation ε; S ≥ 0, S(a, a) = 0, and S → W2² as ε → 0. Computed by geomloss (ε-scaling
    with ratio ``scaling``, differentiable in both point clouds); a scalar in data units².
    """
    key = (float(epsilon), float(scaling))
    if key not in _SINKHORN:
        from geomloss import SamplesLoss

        # geomloss's p = 2 cost is |x − y|²/2 and its blur is ε^{1/2} in those units
        _SINKHORN[key] = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(epsilon / 2), scaling=scaling, debias=True, backend="tensorized")
    return 2.0 * _SINKHORN[key](a, b)


class FastMixing(nn.Module):
    """How much of the gap to p_σ one Langevin step leaves (docs/MATH.md §5); lower is faster mixing.

    The batch of start points x0 ~ p_σ is split in halves: the second half is perturbed,
    x̃ = x0 + δσ ξ', and moved by one step x1 = x̃ + ε f(x̃, σ) + sqrt(2ε) ξ; the first half are
    fresh samples y of p_σ. The term is

        S(x1, y) / (sg(S(x̃, y)) + τ)

    with S the debiased :func:`sinkhorn_divergence`. It is differentiable in θ through x1.
    It is a batch quantity: every row of the returned (B,) tensor carries the batch value, so
    the mean over rows is the term and its weight applies once.

    The reference implementation (peterpaohuang/flux_matching, exp4) uses δ = 1, ε = 0.1·2σ²,
    squared Euclidean cost, Sinkhorn regularisation 0.05, τ = 10⁻³ and weight 0.01, one σ per
    batch: these are the defaults here. It runs a fixed 50 Sinkhorn iterations; geomloss's
    ε-scaling converges in about 20 and is ~20× faster on CPU.

    Args:
        step_size: the Langevin step ε in the SDE's time units; None: 0.2σ² row by row.
        perturbation: δ, the start perturbation's standard deviation in units of σ.
        epsilon: entropic regularisation of the Sinkhorn divergence (data units²).
        scaling: geomloss's ε-scaling ratio (fewer iterations when smaller).
        tau: floor of the normaliser (data units²).
        max_points: at most this many points in each half (None: B // 2).
    """

    stationary_only = True  # a Langevin step only means something for a stationary field

    def __init__(
        self,
        step_size: float | None = None,
        perturbation: float = 1.0,
        epsilon: float = 0.05,
        scaling: float = 0.5,
        tau: float = 1e-3,
        max_points: int | None = 128,
    ) -> None:
        super().__init__()
        self.step_size = None if step_size is None else check_positive(step_size, "the mixing step size")
        self.perturbation = float(perturbation)
        if not self.perturbation >= 0:
            raise FluxMatchError(f"the start perturbation must be ≥ 0, got {perturbation!r}")
        self.epsilon = check_positive(epsilon, "the Sinkhorn regularisation epsilon")
        self.scaling = float(scaling)
        if not 0 < self.scaling < 1:
            raise FluxMatchError(f"the ε-scaling ratio must lie in (0, 1), got {scaling!r}")
        self.tau = float(tau)
        if not self.tau >= 0:
            raise FluxMatchError(f"the normaliser floor tau must be ≥ 0, got {tau!r}")
        self.max_points = None if max_points is None else int(max_points)

    @property
    def config(self) -> dict:
        return {
            "kind": "mixing",
            "step_size": self.step_size,
            "perturbation": self.perturbation,
            "epsilon": self.epsilon,
            "scaling": self.scaling,
            "tau": self.tau,
            "max_points": self.max_points,
        }

    def forward(self, field, x0: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        b = x0.shape[0]
        half = b // 2 if self.max_points is None else min(self.max_points, b // 2)
        if half < 2:
            raise FluxMatchError(f"the fast-mixing term needs a batch of at least 4 start points, got {b}")
        if sigma is None:
            raise FluxMatchError("the fast-mixing term needs the noise level σ of the start points")
        moving = slice(half, 2 * half)
        cond = torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device).reshape(-1).expand(b)[moving]
        scale = cond.reshape(half, *([1] * (x0.ndim - 1)))
        step = 0.2 * scale.square() if self.step_size is None else x0.new_tensor(self.step_size)
        fresh = _flat(x0[:half]).detach()
        start = x0[moving].detach() + self.perturbation * scale * torch.randn_like(x0[moving])
        drift = call_field(field, start, cond, None if labels is None else labels[moving])
        moved = start + step * drift + (2 * step).sqrt() * torch.randn_like(start)
        with torch.no_grad():
            before = sinkhorn_divergence(_flat(start), fresh, self.epsilon, self.scaling)
        value = sinkhorn_divergence(_flat(moved), fresh, self.epsilon, self.scaling) / (before + self.tau)
        return value.expand(b)


DESIGN_TERMS = {
    "rotation": Rotation,
    "curl": CurlTarget,
    "skew": functools.partial(JacobianSkew, sign=-1.0),
    "sparsity": JacobianSparsity,
    "mixing": FastMixing,
}
"""The design terms by the names the command line and configs use, each a factory of keyword
options. "rotation": reward counter-clockwise flow about the origin; "curl": target curl 1;
"skew": *reward* the antisymmetric Jacobian (:class:`JacobianSkew` with sign −1, unless a
config gives its sign); "sparsity": penalise the off-diagonal Jacobian; "mixing": fast mixing
(:class:`FastMixing`)."""


def make_term(config: dict) -> nn.Module:
    """A design term from its config ``{"kind": ..., **options}`` (kinds: the keys of
    :data:`DESIGN_TERMS`; a stored term's options, such as the skewness ``sign``, are kept)."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in DESIGN_TERMS:
        raise FluxMatchError(f"unknown design term {kind!r}: expected one of {', '.join(DESIGN_TERMS)}")
    try:
        return DESIGN_TERMS[kind](**config)
    except TypeError as err:
        raise FluxMatchError(f"bad options for the {kind} design term: {err}") from None


def design_terms(weights: dict, mixing_step_size: float | None = None) -> dict:
    """``{name: (weight, term)}`` for :class:`WithDesign` from ``{name: weight}`` (the command line's form).

    Names: those of :data:`DESIGN_TERMS`, each with its default options; "mixing" takes the
    Langevin step ``mixing_step_size`` (None: 0.2σ² row by row). Zero or None weights are left out.
    """
    out = {}
    for name, weight in weights.items():
        if name not in DESIGN_TERMS:
            raise FluxMatchError(f"unknown design term {name!r}: expected one of {', '.join(DESIGN_TERMS)}")
        if weight:
            options = {"step_size": mixing_step_size} if name == "mixing" else {}
            out[name] = (float(weight), DESIGN_TERMS[name](**options))
    return out


class WithDesign(Objective):
    """An objective plus weighted design terms: ``ℓ = ℓ_base + Σ_k w_k R_k(f)`` per row.

    Args:
        base: an objective (flux, DSM, fixed-σ or noise-annealed, or flow) or its config dict.
        terms: ``{name: (weight, term)}``, or a list of ``{"name", "weight", "kind", **options}``
            dicts (the form stored in ``config``).

    Start points: x0 = x + σε, σ (B,) drawn from the base's noise (one σ per row; a fixed σ
    repeated); with an analytic ``reference`` (fixed σ), x0 ~ reference. Terms
    marked ``stationary_only`` (:class:`FastMixing`) compare point clouds at one noise level and
    get one σ for the whole batch. A flow-matching base has no σ: its pointwise terms are taken
    at the path's points x_t with t ~ U[time_eps, 1] (the field called as ``field(x_t, t)``),
    and stationary-only terms are refused.

    Every term's batch mean is logged under its name in ``terms``.

    Example:
        >>> objective = WithDesign(FluxMatching(0.2236, dim=2), {"mixing": (0.01, FastMixing())})
        >>> out = objective(MLPField(2, (16,)), torch.randn(64, 2))
        >>> out.loss.shape, "mixing" in out.terms
        (torch.Size([64]), True)
    """

    def __init__(self, base, terms) -> None:
        super().__init__()
        if isinstance(base, dict):
            from . import build_objective

            base = build_objective(base)
        if not isinstance(base, Objective):
            raise FluxMatchError(f"design terms are added to a fluxmatch objective, got {type(base).__name__}")
        self.base = base
        entries = []
        if isinstance(terms, dict):
            for name, pair in terms.items():
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise FluxMatchError(f"the design term {name!r} must be given as (weight, term)")
                entries.append((str(name), float(pair[0]), pair[1]))
        else:
            for entry in terms:
                entry = dict(entry)
                if "name" not in entry or "weight" not in entry:
                    raise FluxMatchError(f"a stored design term needs a name and a weight, got {entry}")
                name, weight = str(entry.pop("name")), float(entry.pop("weight"))
                entries.append((name, weight, make_term(entry)))
        if not entries:
            raise FluxMatchError("WithDesign needs at least one design term")
        names = [name for name, _, _ in entries]
        if len(set(names)) != len(names):
            raise FluxMatchError(f"design term names must be unique, got {names}")
        for name, weight, term in entries:
            if not math.isfinite(weight):
                raise FluxMatchError(f"the weight of the design term {name!r} must be finite, got {weight}")
            if self._is_flow and getattr(term, "stationary_only", False):
                raise FluxMatchError(f"the design term {name!r} ({type(term).__name__}) needs a stationary field; a flow-matching velocity has none")
        self.names = names
        self.weights = [weight for _, weight, _ in entries]
        self.terms = nn.ModuleList([term for _, _, term in entries])

    @property
    def _is_flow(self) -> bool:
        return self.base.noise is None  # flow matching: its own path, no noise level

    @property
    def sigma(self):
        """The base's fixed σ (None for noise-annealed and flow bases)."""
        return self.base.sigma

    @property
    def noise(self):
        """The base's σ distribution (None for a flow-matching base)."""
        return self.base.noise

    @property
    def config(self) -> dict:
        terms = [{"name": n, "weight": w, **t.config} for n, w, t in zip(self.names, self.weights, self.terms)]
        return {"name": "designed", "base": self.base.config, "terms": terms}

    def param_groups(self, field: nn.Module, lr: float) -> list[dict]:
        """The base's parameter groups, plus any learnable parameters of the terms at ``lr``."""
        groups = self.base.param_groups(field, lr)
        own = list(self.terms.parameters())
        return groups + ([{"params": own, "lr": lr}] if own else [])

    def start_points(self, x: torch.Tensor, reference=None, shared: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Start points x0 (B, ...) and the field's conditioning (B,) for the terms.

        ``shared``: one σ for the whole batch (noise-annealed bases)."""
        b = x.shape[0]
        if self._is_flow:
            data = x if reference is None else reference.sample(b).to(x).reshape(x.shape)
            eps = getattr(self.base, "time_eps", 0.0)
            t = eps + (1 - eps) * torch.rand(b, device=x.device, dtype=x.dtype)
            return self.base.path.sample(torch.randn_like(data), data, t).xt, t
        if reference is not None and self.noise.is_fixed:
            return reference.sample(b).to(x).reshape(x.shape), x.new_full((b,), float(self.sigma))
        sigma = self.draw_sigma(1 if shared else b, device=x.device).to(x.dtype).expand(b)
        return x + sigma.reshape(-1, *([1] * (x.ndim - 1))) * torch.randn_like(x), sigma

    def forward(self, field, x: torch.Tensor, reference=None, labels: torch.Tensor | None = None) -> ObjectiveOutput:
        """Per-row loss (B,) = base loss + Σ w_k R_k; ``terms`` holds the base's logs and each R_k's mean."""
        x = check_batch(x)
        out = self.base(field, x, reference) if labels is None else self.base(field, x, reference, labels=labels)
        term_labels = labels if labels is not None and getattr(field, "n_classes", 0) else None
        shaped = self.base.design_field(field) if callable(getattr(self.base, "design_field", None)) else field
        points = {}
        loss = out.loss
        logs = dict(out.terms)
        for name, weight, term in zip(self.names, self.weights, self.terms):
            shared = bool(getattr(term, "stationary_only", False))
            if shared not in points:
                points[shared] = self.start_points(x, reference, shared)
            x0, cond = points[shared]
            value = term(shaped, x0, cond, term_labels)
            loss = loss + weight * value
            logs[name] = float(value.detach().mean())
        return ObjectiveOutput(loss, logs)


__all__ = ["Rotation", "CurlTarget", "JacobianSkew", "JacobianSparsity", "FastMixing", "WithDesign", "make_term", "design_terms", "sinkhorn_divergence", "DESIGN_TERMS"]
