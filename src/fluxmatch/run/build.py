"""From a resolved run spec to the modules that train: the field and the objective."""

from __future__ import annotations

import math

import torch

from ..config import RunSpec, conditioning_of
from ..errors import FluxMatchError
from ..fields import UNET_PRESETS, DAGField, EDMPreconditioned, EDMSplit, MLPField, TransformerField, UNet, parse_graph
from ..objectives import DenoisingScoreMatching, FlowMatching, FluxMatching, WithDesign, check_fixed_sigma_entries, design_terms

IMAGE_SIGMA_DATA = 0.5  # images in [−1, 1] (EDM's σ_data)


def data_scale(points: torch.Tensor) -> float:
    """σ_data of points for EDM's preconditioning: the root mean square of all coordinates."""
    return float(points.double().square().mean().sqrt())


def build_field(spec: RunSpec, source) -> torch.nn.Module:
    """The field a resolved spec names, for data of ``source``'s shape.

    MLP: plain (fixed σ), t-conditioned (flow) or EDM-preconditioned and σ-conditioned
    (noise-annealed; σ_data the data's RMS). Transformer (trajectories) and DAG-masked MLP
    (points): the same three forms. UNet: EDM-preconditioned (σ_data 0.5) at any noise,
    class-conditional on request. With the split flux estimator the noise-annealed MLP or UNet
    has two heads and the field is an :class:`~fluxmatch.fields.EDMSplit` (score + flux).
    """
    f = spec.field
    conditioning = conditioning_of(spec)
    split = spec.objective.name == "flux" and spec.objective.estimator == "split"
    wrap, heads = (EDMSplit, 2) if split else (EDMPreconditioned, 1)
    n_classes = 0
    if f.class_conditional:
        n_classes = int(source.n_classes or 0)
        if n_classes == 0:
            raise FluxMatchError(f"--class-conditional needs labelled data; {spec.data.spec} has no labels")
    if f.family in ("transformer", "dag"):
        return _structured_field(spec, source, conditioning)
    if f.family == "mlp":
        if n_classes:
            raise FluxMatchError("--class-conditional applies to UNet fields (--data digits, cifar10:PATH); this run's field is an MLP")
        d = math.prod(source.dim)
        if conditioning == "fixed":
            return MLPField(d, f.hidden)
        if conditioning == "time":
            return MLPField(d, f.hidden, conditioning="time")
        return wrap(MLPField(d, f.hidden, conditioning="sigma", heads=heads), sigma_data=data_scale(source.data))
    if len(source.dim) != 3:
        raise FluxMatchError(f"--unet applies to image data (N, C, H, W); {spec.data.spec} has points of shape {tuple(source.dim)}")
    if f.preset not in UNET_PRESETS:
        raise FluxMatchError(f"unknown UNet preset {f.preset!r}: expected one of {', '.join(UNET_PRESETS)}")
    unet = UNet(in_channels=int(source.dim[0]), n_classes=n_classes, heads=heads, **UNET_PRESETS[f.preset])
    return wrap(unet, sigma_data=IMAGE_SIGMA_DATA)


def _structured_field(spec: RunSpec, source, conditioning: str) -> torch.nn.Module:
    """A transformer over the time axis of (T, D) trajectories, or a DAG-masked MLP on points;
    plain at a fixed σ, t-conditioned for flow, EDM-preconditioned when noise-annealed."""
    f = spec.field
    if f.family == "transformer":
        if len(source.dim) != 2:
            raise FluxMatchError(f"--field transformer applies to trajectories (N, T, D); {spec.data.spec} has points of shape {tuple(source.dim)}")

        def make(c):
            return TransformerField(int(source.dim[0]), int(source.dim[1]), width=f.width, depth=f.depth, heads=f.heads, causal=f.causal, conditioning=c)
    else:
        if len(source.dim) != 1:
            raise FluxMatchError(f"--field dag applies to points (N, d), one graph node per coordinate; {spec.data.spec} has shape {tuple(source.dim)}")
        graph = parse_graph(f.graph, int(source.dim[0]))

        def make(c):
            return DAGField(graph, f.hidden, conditioning=c)
    if conditioning == "sigma":
        return EDMPreconditioned(make("sigma"), sigma_data=data_scale(source.data))
    return make("time" if conditioning == "time" else None)


HORIZON_OPTIONS = ("dynamics", "horizon_sampler", "divergence")


def _objective(cls, where: str, **options):
    try:
        return cls(**options)
    except TypeError as err:
        raise FluxMatchError(f"bad option for the {where} objective (objective.options): {err}") from None


def _noise_objective(spec: RunSpec):
    """Flux Matching or DSM with the spec's noise: a fixed σ or a σ distribution (one σ per row;
    the finite-horizon flux estimators draw one σ per batch)."""
    o = spec.objective
    noise = o.sigma if o.noise == "fixed" else o.sigma_distribution
    if o.name == "dsm":
        return _objective(DenoisingScoreMatching, "dsm", noise=noise, **o.options)
    horizon = {key: getattr(o, key) for key in HORIZON_OPTIONS if getattr(o, key) is not None}
    # no dim: the potential estimator takes the potential that matches the field (fields.potential_for)
    return _objective(FluxMatching, "flux", noise=noise, estimator=o.estimator, **horizon, **o.options)


def build_objective(spec: RunSpec, field: torch.nn.Module, source):
    """The objective a resolved spec names, for ``field`` on ``source`` (design terms added)."""
    o = spec.objective
    if o.name == "flow":
        return _objective(FlowMatching, "flow", path=o.path, coupling=o.coupling, **o.options)
    if o.name == "flux" and o.noise == "fixed":
        check_fixed_sigma_entries(math.prod(source.dim))
    n_classes = int(source.n_classes or 0) if spec.field.class_conditional else 0
    objective = _noise_objective(spec)
    if getattr(objective, "target", "batch") == "training_set":
        objective.use_training_set(source.data, source.labels if n_classes else None)
    design = {k: v for k, v in o.design.items() if v}
    if design:
        mixing_step = 10 * spec.sampler.step_size if spec.sampler.step_size else None
        objective = WithDesign(objective, design_terms(design, mixing_step_size=mixing_step))
    return objective
