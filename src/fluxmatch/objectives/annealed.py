"""The noise-annealed Flux Matching of fluxmatch 0.1 under its old keyword names.

:class:`~fluxmatch.objectives.FluxMatching` now takes its noise as an argument
(``FluxMatching(noise="edm", dim=d)``); :class:`AnnealedFluxMatching` is that objective with a
continuum of σ by default, for code and run directories written against the old class.
"""

from __future__ import annotations

from torch import nn

from .flux import FluxMatching


class AnnealedFluxMatching(FluxMatching):
    """:class:`FluxMatching` over a continuum of σ (EDM's log-normal by default).

    ``sigma_distribution`` is the σ distribution; ``fixed_sigma_options`` the options of the
    finite-horizon estimators (``horizon``, ``dynamics``, ``divergence``, ...); the other
    arguments are :class:`FluxMatching`'s.
    """

    def __init__(
        self,
        sigma_distribution="edm",
        weighting: str | None = None,
        sigma_data: float = 0.5,
        normaliser: bool | None = None,
        label_dropout: float = 0.1,
        rao_blackwell: bool = True,
        estimator: str = "potential",
        dim: int | None = None,
        potential: nn.Module | None = None,
        potential_hidden: tuple[int, ...] | None = None,
        n_classes: int = 0,
        field_lr_scale: float | None = None,
        potential_lr_scale: float | None = None,
        fixed_sigma_options: dict | None = None,
        target: str = "batch",
        potential_net: str = "mlp",
        event_shape: tuple[int, ...] | None = None,
    ) -> None:
        options = {"rao_blackwell": rao_blackwell, **(fixed_sigma_options or {})}
        super().__init__(
            estimator=estimator, dim=dim, potential=potential, potential_hidden=potential_hidden, field_lr_scale=field_lr_scale,
            potential_lr_scale=potential_lr_scale, noise=sigma_distribution, weighting=weighting, sigma_data=sigma_data,
            normaliser=normaliser, label_dropout=label_dropout, target=target, n_classes=n_classes, potential_net=potential_net,
            event_shape=event_shape, **options,
        )
