"""fluxmatch: Flux Matching generative models.

Learn any vector field whose Langevin dynamics leave the data distribution stationary
(Pao-Huang, Qiu, Ermon 2026), with denoising score matching as the baseline under one API.

    >>> import fluxmatch as fm
    >>> data = fm.sample_toy("ring", 20000)
    >>> field = fm.MLPField(2, (128, 128))
    >>> trainer = fm.Trainer(field, fm.FluxMatching(sigma=0.2236), fm.DataSource.from_spec("ring"),
    ...                      fm.TrainConfig(steps=2000), "runs/ring")
    >>> trainer.fit()
    >>> x = fm.langevin(field, 3 * torch.randn(2000, 2), step_size=0.005, n_steps=2000).samples
    >>> fm.wasserstein2(x, data[:2000])
"""

from .divergence import divergence, exact_divergence, hutchinson_divergence
from .dynamics import ReferencePaths, component_ou, reference_langevin, transition_weights, transport_back
from .errors import FluxMatchError
from .fields import MLPField, Unconditional, build_field, call_field
from .objectives import (
    DenoisingScoreMatching,
    ExponentialHorizon,
    FluxMatching,
    ObjectiveOutput,
    UniformHorizon,
    build_objective,
)
from .reference import EmpiricalGaussian, GaussianMixture, ScoreDerivatives
from .samplers import LangevinResult, langevin
from .stationarity import field_and_divergence, residual_and_gradient, stationarity_residual

__version__ = "0.1.0"

__all__ = [
    "FluxMatchError",
    "GaussianMixture",
    "EmpiricalGaussian",
    "ScoreDerivatives",
    "ReferencePaths",
    "component_ou",
    "reference_langevin",
    "transition_weights",
    "transport_back",
    "divergence",
    "exact_divergence",
    "hutchinson_divergence",
    "field_and_divergence",
    "residual_and_gradient",
    "stationarity_residual",
    "MLPField",
    "Unconditional",
    "build_field",
    "call_field",
    "FluxMatching",
    "DenoisingScoreMatching",
    "UniformHorizon",
    "ExponentialHorizon",
    "ObjectiveOutput",
    "build_objective",
    "langevin",
    "LangevinResult",
]
