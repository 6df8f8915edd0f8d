"""Field diagnostics beyond curl and divergence: skewness, the stationarity residual where p is
known, and the split of a field into the part Flux Matching penalises and the part it leaves free
(docs/MATH.md §2, §6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import FluxMatchError
from ..reference import GaussianMixture
from ..stationarity import stationarity_residual
from ._checks import require_finite
from .fields import _as_points, _placement, jacobian


def antisymmetric_jacobian_norm(field, points, cond=None) -> float:
    """Mean over the points of ‖½(J − Jᵀ)‖_F with J = ∂f/∂x (any d; exact, d backward passes).

    0 for a gradient field (a score); in 2-D it equals |curl f|/√2. Units [f]/[x].

    Args:
        points: (N, d) (or (N, ...), flattened).

    Raises:
        FluxMatchError: bad shapes or NaN/inf rows in ``points``.
    """
    jac = jacobian(field, _as_points(points, "points"), cond)
    return float((0.5 * (jac - jac.transpose(1, 2))).square().sum((1, 2)).sqrt().mean())


def residual_stats(field, density: GaussianMixture, points, cond=None, divergence: str = "exact") -> dict[str, float]:
    """Summary of the stationarity residual r = ∇·u + u·s, u = f − s, at points (N, d) where p is known.

    r ≡ 0 exactly when f leaves p stationary; E_p[r] = 0 for ANY f, so at draws from p "mean"
    is only a sanity check and "rms" is the measure. ∇·f is exact by default ("hutchinson" for
    high d). The points are cast to the field's parameter dtype (float64 for a plain function
    given float64 points).

    Args:
        points: (N, d) points.

    Returns:
        ``{"rms", "mean", "max_abs"}`` (units 1/[x]², floats).

    Raises:
        FluxMatchError: NaN/inf rows in ``points``, or a non-finite residual (the field is not
            finite there).
    """
    x = _as_points(points, "points")
    device, dtype = _placement(field, x)
    r = stationarity_residual(field, density, x.to(device, dtype), cond, divergence, 1).detach()
    if not torch.isfinite(r).all():
        raise FluxMatchError("the stationarity residual is NaN or inf: the field is not finite at the points")
    return {"rms": float(r.square().mean().sqrt()), "mean": float(r.mean()), "max_abs": float(r.abs().max())}


def _field_minus_score(field, density: GaussianMixture, x: torch.Tensor, cond) -> torch.Tensor:
    """u = f − s at (n, d) points x, without gradients; raises on a misshapen or non-finite f."""
    with torch.no_grad():
        f = field(x, cond)
    if not isinstance(f, torch.Tensor) or f.shape != x.shape:
        raise FluxMatchError(f"the field must map points of shape {tuple(x.shape)} to the same shape")
    require_finite(f, "field(x)")
    return (f.detach() - density.score(x)).to(x.dtype)


@dataclass
class ScoreFluxSplit:
    """E_p|f − s|² split as E|∇φ|² + E|w|² (units 1/[x]²; see :func:`score_flux_split`).

    Attributes:
        fisher: E|u|², the Fisher divergence that score matching penalises.
        gradient_part: E|∇g|² ≈ E|∇φ|², the part Flux Matching penalises (J(f) of docs/MATH.md (3)).
        flux_part: E|∇g + u|² ≈ E|w|², the divergence-free part Flux Matching leaves free
            (plus the potential's fit error).
        fit_steps: Adam steps spent fitting g.
    """

    fisher: float
    gradient_part: float
    flux_part: float
    fit_steps: int


def score_flux_split(
    field,
    density: GaussianMixture,
    n: int = 2048,
    steps: int = 600,
    hidden=(64, 64),
    lr: float = 3e-3,
    cond=None,
    seed: int = 0,
) -> ScoreFluxSplit:
    """Split the Fisher divergence of a field into its gradient part and its flux part (docs/MATH.md §2).

    With u = f − s = ∇φ + w, ∇·(p w) = 0, the two parts are orthogonal in L²(p):
    E|u|² = E|∇φ|² + E|w|². A scalar potential g (:class:`~fluxmatch.fields.MLPPotential`) is
    fitted by the dual regression min_g E|∇g + u|², minimised by ∇g = −∇φ whatever w is; then
    E|∇g|² estimates E|∇φ|² and E|∇g + u|² estimates E|w|².

    Fitting budget: ``steps`` Adam steps (cosine-decayed ``lr``) on ``n`` fresh draws from p each;
    the three expectations are then taken on 4n fresh draws. The fit error of g moves mass
    between the two parts; it shrinks with ``steps`` and the network's size.

    Args:
        field: ``field(x, cond)``; evaluated without gradients.
        density: the density p (its exact score s is used).
        cond: the field's conditioning (e.g. σ when ``density`` is p_σ).
        seed: seeds the draws and the potential's initialisation (the global RNG is untouched).

    Raises:
        FluxMatchError: n < 2 or steps < 1, a field output shaped unlike its (n, d) input, or
            NaN/inf field values (named ``field(x)``).
    """
    from ..fields import MLPPotential

    if int(n) < 2 or int(steps) < 1:
        raise FluxMatchError(f"score_flux_split needs n ≥ 2 points and at least one fitting step, got n={n}, steps={steps}")
    generator = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        potential = MLPPotential(density.dim, tuple(hidden)).to(density.means.dtype)
    opt = torch.optim.Adam(potential.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, int(steps))

    for _ in range(int(steps)):
        x = density.sample(int(n), generator)
        loss = (potential.gradient(x) + _field_minus_score(field, density, x, cond)).square().sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    x = density.sample(4 * int(n), generator)
    u = _field_minus_score(field, density, x, cond)
    grad = potential.gradient(x, create_graph=False).detach()
    return ScoreFluxSplit(
        fisher=float(u.square().sum(1).mean()),
        gradient_part=float(grad.square().sum(1).mean()),
        flux_part=float((grad + u).square().sum(1).mean()),
        fit_steps=int(steps),
    )


__all__ = ["antisymmetric_jacobian_norm", "residual_stats", "score_flux_split", "ScoreFluxSplit"]
