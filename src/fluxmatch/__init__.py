"""fluxmatch: Flux Matching generative models.

Learn any vector field whose Langevin dynamics leave the data distribution stationary
(Pao-Huang, Qiu, Ermon 2026), with denoising score matching as the baseline under one API.

    >>> import torch, fluxmatch as fm
    >>> data = fm.DataSource.from_spec("ring", seed=0)
    >>> field = fm.MLPField(2, (64, 64))
    >>> summary = fm.Trainer(field, fm.FluxMatching(sigma=0.2236, dim=2), data, fm.TrainConfig(steps=300, progress=False), "runs/ring").fit()
    >>> x0 = data.data.mean(0) + data.data.std(0) * torch.randn(1000, 2)
    >>> samples = fm.langevin(field, x0, step_size=0.005, n_steps=500).samples
    >>> fm.wasserstein2(samples, data.holdout(1000, seed=1)) < 1.0
    True

Whole runs from one spec (see :mod:`fluxmatch.config` and :mod:`fluxmatch.run`):

    >>> spec = fm.RunSpec(data=fm.DataSpec("ring"), objective=fm.ObjectiveSpec(noise="annealed"), train=fm.TrainSpec(steps=50))
    >>> fm.resolve(spec).sampler.method
    'heun'

"""

from . import data, metrics, train  # noqa: E402 - submodules users reach as fm.data, fm.metrics, fm.train
from .config import PRESETS, DataSpec, EvalSpec, FieldSpec, ObjectiveSpec, RunSpec, SamplerSpec, TrainSpec, load_spec, resolve
from .coupling import ot_coupling
from .data import Batch, DataSource, sample_toy
from .data.cells import PreprocessConfig, check_cells, preprocess, read_cells, write_cells
from .data.lineage import LineageParams, simulate_lineage
from .data.scm import simulate_chain
from .data.springs import SpringParams, dynamics_residual, save_springs, simulate_springs
from .data.trajectories import TrajectorySource
from .divergence import divergence, exact_divergence, hutchinson_divergence
from .dynamics import ReferencePaths, component_ou, reference_langevin, transition_weights, transport_back
from .errors import FluxMatchError
from .fields import (
    UNET_PRESETS,
    ClassifierFreeGuidance,
    DAGField,
    EDMPreconditioned,
    EDMSplit,
    MLPField,
    MLPPotential,
    PreconditionedPotential,
    TransformerField,
    Unconditional,
    UNet,
    build_field,
    call_field,
    check_dag,
    dependency_mask,
    parse_graph,
    potential_for,
    transitive_closure,
)
from .fields.analytic import AntisymmetricFlux, NonreversibleScore
from .fields.kinetics import KineticField
from .kinds import DataKind, get_kind, register_kind
from .likelihood import LikelihoodResult, log_likelihood, probability_flow_log_likelihood
from .metrics import (
    antisymmetric_jacobian_norm,
    autocorrelation_time,
    class_coverage,
    energy_distance,
    fd_digits,
    frechet_distance,
    image_metrics,
    integrated_autocorrelation_time,
    mixing_curve,
    mmd_rbf,
    residual_stats,
    sample_metrics,
    score_flux_split,
    sliced_wasserstein2,
    steps_to_reach,
    wasserstein2,
)
from .metrics.cells import (
    CBDirResult,
    cross_boundary_direction,
    rate_recovery,
    velocity_confidence,
    velocity_cosine,
    velocity_embedding,
    velocity_graph,
)
from .metrics.fidelity import FidelityConfig, image_fidelity, inception_features, save_reference_statistics
from .objectives import (
    AnnealedDSM,
    AnnealedFluxMatching,
    CurlTarget,
    DenoisingScoreMatching,
    ExponentialHorizon,
    FastMixing,
    FixedSigma,
    FlowMatching,
    FluxMatching,
    HorizonEstimator,
    JacobianSkew,
    JacobianSparsity,
    LogNormal,
    LogUniform,
    Objective,
    ObjectiveOutput,
    PotentialEstimator,
    Rotation,
    SplitEstimator,
    UniformHorizon,
    WithDesign,
    build_objective,
    design_terms,
    make_noise,
)
from .objectives.gene_local import GeneLocalFlux, gene_kernel_moments, gene_kernel_score
from .paths import OTPath, VEPath, VPPath, make_path
from .reference import EmpiricalGaussian, GaussianMixture, ScoreDerivatives
from .run import Run, evaluate_run, evaluation_pair, open_run, sample_run, snapshot_runs, train_run
from .run.rna_velocity import VelocityRequest, run_velocity
from .run.velocity import VelocityConfig, VelocityFit, fit_velocity
from .samplers import (
    AnnealedResult,
    LangevinResult,
    ODEResult,
    edm_sigmas,
    geometric_sigmas,
    langevin,
    predictor_corrector,
    prior_sample,
    probability_flow,
    reverse_sde,
    solve_ode,
)
from .stationarity import field_and_divergence, residual_and_gradient, stationarity_residual
from .train import TrainConfig, Trainer, load_run

__version__ = "0.2.0"

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
    "TransformerField",
    "DAGField",
    "check_dag",
    "dependency_mask",
    "parse_graph",
    "transitive_closure",
    "SpringParams",
    "simulate_springs",
    "save_springs",
    "dynamics_residual",
    "simulate_chain",
    "TrajectorySource",
    "LineageParams",
    "simulate_lineage",
    "PreprocessConfig",
    "preprocess",
    "check_cells",
    "read_cells",
    "write_cells",
    "KineticField",
    "GeneLocalFlux",
    "gene_kernel_score",
    "gene_kernel_moments",
    "VelocityConfig",
    "VelocityFit",
    "fit_velocity",
    "VelocityRequest",
    "run_velocity",
    "CBDirResult",
    "cross_boundary_direction",
    "velocity_confidence",
    "velocity_cosine",
    "velocity_graph",
    "velocity_embedding",
    "rate_recovery",
    "FidelityConfig",
    "image_fidelity",
    "inception_features",
    "save_reference_statistics",
    "snapshot_runs",
    "UNet",
    "UNET_PRESETS",
    "EDMPreconditioned",
    "EDMSplit",
    "PreconditionedPotential",
    "ClassifierFreeGuidance",
    "NonreversibleScore",
    "AntisymmetricFlux",
    "Unconditional",
    "build_field",
    "call_field",
    "FluxMatching",
    "AnnealedFluxMatching",
    "AnnealedDSM",
    "FixedSigma",
    "LogNormal",
    "LogUniform",
    "make_noise",
    "PotentialEstimator",
    "SplitEstimator",
    "HorizonEstimator",
    "potential_for",
    "WithDesign",
    "Rotation",
    "CurlTarget",
    "JacobianSkew",
    "JacobianSparsity",
    "FastMixing",
    "design_terms",
    "DenoisingScoreMatching",
    "FlowMatching",
    "OTPath",
    "VPPath",
    "VEPath",
    "make_path",
    "ot_coupling",
    "UniformHorizon",
    "ExponentialHorizon",
    "Objective",
    "ObjectiveOutput",
    "build_objective",
    "langevin",
    "LangevinResult",
    "solve_ode",
    "ODEResult",
    "edm_sigmas",
    "geometric_sigmas",
    "prior_sample",
    "reverse_sde",
    "probability_flow",
    "predictor_corrector",
    "AnnealedResult",
    "log_likelihood",
    "probability_flow_log_likelihood",
    "LikelihoodResult",
    "MLPPotential",
    "DataSource",
    "sample_toy",
    "wasserstein2",
    "sliced_wasserstein2",
    "mmd_rbf",
    "energy_distance",
    "sample_metrics",
    "frechet_distance",
    "fd_digits",
    "class_coverage",
    "image_metrics",
    "antisymmetric_jacobian_norm",
    "residual_stats",
    "score_flux_split",
    "mixing_curve",
    "steps_to_reach",
    "integrated_autocorrelation_time",
    "autocorrelation_time",
    "Trainer",
    "TrainConfig",
    "load_run",
    "RunSpec",
    "DataSpec",
    "FieldSpec",
    "ObjectiveSpec",
    "SamplerSpec",
    "TrainSpec",
    "EvalSpec",
    "PRESETS",
    "load_spec",
    "resolve",
    "Batch",
    "DataKind",
    "get_kind",
    "register_kind",
    "Run",
    "open_run",
    "train_run",
    "sample_run",
    "evaluate_run",
    "evaluation_pair",
    "data",
    "metrics",
    "train",
]
