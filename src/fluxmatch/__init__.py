"""fluxmatch: Flux Matching generative models.

Learn any vector field whose Langevin dynamics leave the data distribution stationary
(Pao-Huang, Qiu, Ermon 2026), with denoising score matching as the baseline under one API.

    >>> import torch, fluxmatch as fm
    >>> data = fm.DataSource.from_spec("ring", seed=0)
    >>> field = fm.MLPField(2, (128, 128))
    >>> fm.Trainer(field, fm.FluxMatching(sigma=0.2236, dim=2), data, fm.TrainConfig(steps=2000), "runs/ring").fit()
    >>> x0 = data.data.mean(0) + data.data.std(0) * torch.randn(2000, 2)
    >>> samples = fm.langevin(field, x0, step_size=0.005, n_steps=2000).samples
    >>> fm.wasserstein2(samples, data.holdout(2000, seed=1))
"""

from .divergence import divergence, exact_divergence, hutchinson_divergence
from .dynamics import ReferencePaths, component_ou, reference_langevin, transition_weights, transport_back
from .errors import FluxMatchError
from .fields import MLPField, Unconditional, build_field, call_field
from .objectives import (
    DenoisingScoreMatching,
    ExponentialHorizon,
    FlowMatching,
    FluxMatching,
    ObjectiveOutput,
    UniformHorizon,
    build_objective,
)
from .reference import EmpiricalGaussian, GaussianMixture, ScoreDerivatives
from .samplers import LangevinResult, ODEResult, langevin, solve_ode
from .likelihood import LikelihoodResult, log_likelihood
from .paths import OTPath, VEPath, VPPath, make_path
from .coupling import ot_coupling
from .stationarity import field_and_divergence, residual_and_gradient, stationarity_residual
from . import data, metrics, train  # noqa: E402 - submodules users reach as fm.data, fm.metrics, fm.train
from .data import DataSource, sample_toy
from .fields import MLPPotential
from .metrics import energy_distance, mmd_rbf, sample_metrics, sliced_wasserstein2, wasserstein2
from .train import Trainer, TrainConfig, load_run

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
    "FlowMatching",
    "OTPath",
    "VPPath",
    "VEPath",
    "make_path",
    "ot_coupling",
    "UniformHorizon",
    "ExponentialHorizon",
    "ObjectiveOutput",
    "build_objective",
    "langevin",
    "LangevinResult",
    "solve_ode",
    "ODEResult",
    "log_likelihood",
    "LikelihoodResult",
    "MLPPotential",
    "DataSource",
    "sample_toy",
    "wasserstein2",
    "sliced_wasserstein2",
    "mmd_rbf",
    "energy_distance",
    "sample_metrics",
    "Trainer",
    "TrainConfig",
    "load_run",
    "data",
    "metrics",
    "train",
]
