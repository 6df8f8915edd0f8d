"""The objectives and config formats of fluxmatch 0.1, on today's classes.

0.1 had two families: fixed-σ ``FluxMatching`` / ``DenoisingScoreMatching`` and noise-annealed
``AnnealedFluxMatching`` / ``AnnealedDSM``. Today a fixed σ is a one-point σ distribution of the
one :class:`~fluxmatch.objectives.FluxMatching` and :class:`~fluxmatch.objectives.DenoisingScoreMatching`.
:class:`AnnealedFluxMatching` and :class:`AnnealedDSM` remain, as those classes with EDM's
log-normal noise by default and 0.1's keyword names; :func:`flux_from_legacy_config` rebuilds a
0.1 fixed-σ flux config. Both rebuild the modules of 0.1 under the same state-dict names, so
that old run directories load.
"""

from __future__ import annotations

from torch import nn

from ..errors import FluxMatchError
from .dsm import DenoisingScoreMatching
from .estimators import ESTIMATOR_OPTIONS
from .flux import FluxMatching

# options of 0.1's fixed-σ FluxMatching that only its potential estimator used
_POTENTIAL_ONLY = ("dim", "potential", "potential_hidden", "field_lr_scale", "potential_lr_scale", "target_group")


def _horizon_options(options: dict) -> dict:
    """The finite-horizon estimator's options out of 0.1's fixed-σ keyword arguments (those
    only the potential estimator used are dropped, as 0.1 ignored them)."""
    unknown = sorted(set(options) - {*ESTIMATOR_OPTIONS["product"], *_POTENTIAL_ONLY, "sigma"})
    if unknown:
        raise FluxMatchError(f"unknown fixed_sigma_options {unknown}: the finite-horizon estimators take {', '.join(ESTIMATOR_OPTIONS['product'])}")
    return {k: v for k, v in options.items() if k in ESTIMATOR_OPTIONS["product"]}


def flux_from_legacy_config(config: dict) -> FluxMatching:
    """The Flux Matching objective of a fluxmatch 0.1 ``{"name": "flux", "sigma": ..., ...}`` config
    (without its ``name``): the options of its estimator are kept, the others had no effect.
    A potential-estimator objective keeps 0.1's horizon sampler (see ``legacy_horizon_sampler``
    of :class:`~fluxmatch.objectives.estimators.PotentialEstimator`)."""
    config = dict(config)
    estimator = config.pop("estimator", "potential")
    sigma = config.pop("sigma", None)
    dim = config.pop("dim", None)
    if estimator != "potential":
        return FluxMatching(sigma, estimator=estimator, dim=dim, **_horizon_options(config))
    options = {k: config[k] for k in ESTIMATOR_OPTIONS["potential"] if k in config}
    return FluxMatching(sigma, estimator=estimator, dim=dim, legacy_horizon_sampler=config.get("horizon_sampler", "exponential"), **options)


class AnnealedFluxMatching(FluxMatching):
    """:class:`~fluxmatch.objectives.FluxMatching` over a continuum of σ (EDM's log-normal by
    default), under the keyword names of fluxmatch 0.1.

    Args:
        sigma_distribution: the ``noise`` of :class:`~fluxmatch.objectives.FluxMatching`.
        weighting, sigma_data, label_dropout, dim: as for :class:`~fluxmatch.objectives.FluxMatching`.
        normaliser: learn n(σ) (the potential estimator only; ignored for the others, as in 0.1).
        estimator: "potential", "product" or "gradient".
        rao_blackwell, potential, potential_hidden, n_classes (0: the field's classes when the
            potential is matched to the field), field_lr_scale, potential_lr_scale, target,
            potential_net, event_shape: options of the potential estimator.
        fixed_sigma_options: options of the finite-horizon estimators (0.1's inner fixed-σ objective).

    Its ``config`` is today's format: :func:`~fluxmatch.objectives.build_objective` rebuilds it
    as a :class:`~fluxmatch.objectives.FluxMatching`.
    """

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
        if estimator == "potential":
            options = {
                "potential": potential, "potential_hidden": potential_hidden, "n_classes": n_classes or None,
                "field_lr_scale": field_lr_scale, "potential_lr_scale": potential_lr_scale,
                "rao_blackwell": rao_blackwell, "target": target, "potential_net": potential_net, "event_shape": event_shape,
            }
        else:
            options = _horizon_options(dict(fixed_sigma_options or {}))
        super().__init__(
            noise=sigma_distribution, estimator=estimator, weighting=weighting, sigma_data=sigma_data,
            normaliser=normaliser and estimator == "potential", label_dropout=label_dropout, dim=dim, **options,
        )


class AnnealedDSM(DenoisingScoreMatching):
    """:class:`~fluxmatch.objectives.DenoisingScoreMatching` over a continuum of σ (EDM's
    log-normal by default), under the keyword names of fluxmatch 0.1 (``sigma_distribution``:
    the ``noise``; the other arguments as there). Its ``config`` is today's format."""

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
        super().__init__(
            noise=sigma_distribution, weighting=weighting, sigma_data=sigma_data, normaliser=normaliser,
            label_dropout=label_dropout, rao_blackwell=rao_blackwell, target=target,
        )
