"""The flux estimators as named parts, each with its own options (docs/MATH.md §3).

    FluxMatching(sigma=0.2236, estimator=PotentialEstimator(field_lr_scale=0.5), dim=2)
    FluxMatching(noise="edm", estimator=HorizonEstimator("gradient", dynamics="langevin"))

A name ("potential", "product", "gradient") takes every option's default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import FluxMatchError

HORIZON_KINDS = ("product", "gradient")


@dataclass(frozen=True)
class PotentialEstimator:
    """The dual form of J = E|∇φ|²/σ²: a potential g fits ∇g ≈ −∇φ, the field follows ∇g.

    Attributes:
        hidden: widths of the potential chosen for the field (None: 128-128 for a fixed σ,
            256-256 over a continuum).
        field_lr_scale, potential_lr_scale: learning-rate multipliers of the two players
            (None: 0.25 / 10 for a fixed σ, 0.5 / 20 over a continuum).
        target_group: fixed σ: regress on the smoothed score of random batch groups of this size.
        net: the potential network over a continuum, "mlp" or "unet".
    """

    hidden: tuple[int, ...] | None = None
    field_lr_scale: float | None = None
    potential_lr_scale: float | None = None
    target_group: int | None = None
    net: str = "mlp"

    kind = "potential"

    def options(self) -> dict:
        """The :class:`~fluxmatch.objectives.FluxMatching` keyword arguments these options set."""
        return {"potential_hidden": self.hidden, "field_lr_scale": self.field_lr_scale, "potential_lr_scale": self.potential_lr_scale,
                "target_group": self.target_group, "potential_net": self.net}


@dataclass(frozen=True)
class HorizonEstimator:
    """A finite-horizon estimator: ``kind`` "product" (the exact gradient of ∫_0^H E[r K_t r] dt)
    or "gradient" (the paper's eq. (4)), with its horizon H, reference dynamics ("component" or
    "langevin", K ``substeps``), divergence ("auto", "exact", "hutchinson"; ``n_probes``) and
    horizon sampler ("exponential" or "uniform", ``stratified`` over the batch)."""

    kind: str = "product"
    horizon: float = 4.0
    dynamics: str = "component"
    substeps: int = 4
    divergence: str = "auto"
    n_probes: int = 1
    horizon_sampler: str = "exponential"
    stratified: bool = True

    def __post_init__(self) -> None:
        if self.kind not in HORIZON_KINDS:
            raise FluxMatchError(f"unknown finite-horizon estimator {self.kind!r}: expected one of {', '.join(HORIZON_KINDS)}")

    def options(self) -> dict:
        """The :class:`~fluxmatch.objectives.FluxMatching` keyword arguments these options set."""
        options = asdict(self)
        del options["kind"]
        return options


def estimator_part(estimator) -> tuple[str, dict]:
    """(name, FluxMatching keyword arguments) of an estimator given by name or as a part."""
    if isinstance(estimator, str):
        return estimator, {}
    if isinstance(estimator, (PotentialEstimator, HorizonEstimator)):
        return estimator.kind, estimator.options()
    raise FluxMatchError(f"an estimator is a name (potential, product, gradient) or a PotentialEstimator / HorizonEstimator, got {type(estimator).__name__}")


__all__ = ["PotentialEstimator", "HorizonEstimator", "estimator_part"]
