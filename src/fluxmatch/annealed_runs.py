"""Whole runs of noise-annealed, σ-conditioned fields (images such as the digits).

The σ-conditioned counterpart of :mod:`fluxmatch.pipeline`: a field f(x, σ) built as an
EDM-preconditioned UNet, trained by a noise-annealed objective (Flux Matching or DSM, MATH.md §4),
sampled down a noise schedule (probability-flow ODE, reverse SDE or predictor-corrector), and
judged by image metrics (FD-digits, class coverage) and NLL in bits/dim.

A run directory gets, besides the checkpoint files:

- ``samples.npy``: (n, C, H, W) samples in the data's own units (digits: 0..16, like
  ``sklearn.datasets.load_digits().images``), whatever normalisation training used;
- ``samples.png``: a grid of the first 100 samples beside a grid of held-out data;
- ``loss.png``; ``metrics.json``: image metrics against held-out data with their floor, NLL in
  bits/dim, the sampler and its NFE, the training summary.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .errors import FluxMatchError, check_positive
from .fields.guidance import ClassifierFreeGuidance
from .fields.precond import EDMPreconditioned
from .fields.unet import UNET_PRESETS, UNet
from .objectives import AnnealedDSM, AnnealedFluxMatching, WithDesign, design_terms
from .samplers import edm_sigmas, predictor_corrector, prior_sample, probability_flow, reverse_sde
from .train import LoadedRun, Trainer, TrainConfig, load_run
from .train.checkpoint import atomic_write_json

SAMPLER_METHODS = ("heun", "euler", "dopri5", "sde", "pc")
DEFAULT_SAMPLER = {"method": "heun", "steps": 18, "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0, "guidance": 1.0}
SIGMA_DATA = 0.5
NLL_SIGMA_MIN = 0.002


def is_annealed_run(run: LoadedRun) -> bool:
    """Whether the run trained a σ-conditioned field over a continuum of noise levels."""
    objective = run.config["objective"]
    if objective.get("name") == "designed":
        objective = objective.get("base", {})
    return str(objective.get("name", "")).endswith("_annealed")


def build_image_field(event_shape, preset: str = "digits", n_classes: int = 0, sigma_data: float = SIGMA_DATA, **overrides) -> EDMPreconditioned:
    """An EDM-preconditioned UNet for images of shape (C, H, W), sized by a preset of
    :data:`~fluxmatch.fields.unet.UNET_PRESETS` with ``overrides`` (e.g. ``channels=32``)."""
    if len(event_shape) != 3:
        raise FluxMatchError(f"an image field needs images of shape (C, H, W), got points of shape {tuple(event_shape)}")
    if preset not in UNET_PRESETS:
        raise FluxMatchError(f"unknown UNet preset {preset!r}: expected one of {', '.join(UNET_PRESETS)}")
    sizes = {**UNET_PRESETS[preset], **overrides}
    return EDMPreconditioned(UNet(in_channels=int(event_shape[0]), n_classes=int(n_classes), **sizes), sigma_data=sigma_data)


def make_annealed_objective(name: str, dim: int, n_classes: int = 0, **options):
    """``"flux"`` → :class:`AnnealedFluxMatching`, ``"dsm"`` → :class:`AnnealedDSM`."""
    if name == "flux":
        return AnnealedFluxMatching(dim=dim, n_classes=n_classes, **options)
    if name == "dsm":
        return AnnealedDSM(**options)
    raise FluxMatchError(f"the noise-annealed image pipeline trains flux or dsm, not {name!r}")


def sampler_settings(run: LoadedRun, **overrides) -> dict:
    """The run's stored sampler settings, with the non-None ``overrides`` applied and checked."""
    stored = (run.config.get("sampler") or {}).get("annealed", {})
    settings = {**DEFAULT_SAMPLER, **stored, **{k: v for k, v in overrides.items() if v is not None}}
    if settings["method"] not in SAMPLER_METHODS:
        raise FluxMatchError(f"unknown sampler {settings['method']!r}: expected one of {', '.join(SAMPLER_METHODS)}")
    steps = settings["steps"]
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise FluxMatchError(f"the number of noise levels must be an integer ≥ 1, got {steps!r}")
    for key in ("sigma_min", "sigma_max", "rho"):
        check_positive(settings[key], key)
    if float(settings["guidance"]) < 0 or not math.isfinite(float(settings["guidance"])):
        raise FluxMatchError(f"the guidance scale must be a finite number ≥ 0, got {settings['guidance']!r}")
    return settings


def _labels_for(run: LoadedRun, n: int, label) -> torch.Tensor | None:
    n_classes = int(getattr(run.field, "n_classes", 0) or 0)
    if n_classes == 0:
        if label is not None:
            raise FluxMatchError(f"the run {run.run_dir} is not class-conditional: it takes no label")
        return None
    if label is None:
        return torch.arange(n) % n_classes  # every class equally often
    if not 0 <= int(label) < n_classes:
        raise FluxMatchError(f"label must lie in 0..{n_classes - 1}, got {label}")
    return torch.full((n,), int(label), dtype=torch.long)


def draw_annealed(run, n: int, seed: int = 0, method: str | None = None, steps: int | None = None, guidance: float | None = None, label: int | None = None, progress: bool = False, chunk: int = 1000) -> tuple[np.ndarray, int]:
    """(n, *event_shape) samples of the run's EMA field in model units, and the NFE per sample.

    Starts from N(0, σ_max² I) and runs the chosen sampler down EDM's noise schedule with
    ``steps`` levels. A class-conditional field gets every class equally often (or ``label``)
    with classifier-free guidance of scale ``guidance`` (0: unconditional, 1: conditional).
    """
    run = run if isinstance(run, LoadedRun) else load_run(run)
    settings = sampler_settings(run, method=method, steps=steps, guidance=guidance)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise FluxMatchError(f"the number of samples must be an integer ≥ 1, got {n!r}")
    sigmas = edm_sigmas(int(settings["steps"]), settings["sigma_min"], settings["sigma_max"], settings["rho"])
    generator = torch.Generator().manual_seed(int(seed))
    labels = _labels_for(run, n, label)
    parts, nfe = [], 0
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        field = run.field
        if labels is not None:
            field = ClassifierFreeGuidance(run.field, labels[start : start + rows], float(settings["guidance"]))
        x = prior_sample((rows, *run.event_shape), settings["sigma_max"], generator)
        kind = settings["method"]
        if kind == "sde":
            result = reverse_sde(field, x, sigmas, generator=generator, progress=progress)
        elif kind == "pc":
            result = predictor_corrector(field, x, sigmas, generator=generator, progress=progress)
        else:
            result = probability_flow(field, x, sigmas, method=kind, progress=progress)
        parts.append(result.samples.float())
        nfe = result.nfe
    return torch.cat(parts).numpy(), nfe


def to_data_units(run: LoadedRun, samples: np.ndarray) -> np.ndarray:
    """Model-unit samples mapped back to the data's own units (digits: 0..16), when it has them."""
    units = (run.config.get("data") or {}).get("units")
    if not units:
        return samples
    from .data.digits import to_pixels

    return np.asarray(to_pixels(torch.as_tensor(samples), units), dtype=np.float32)


def _dequantised(images: torch.Tensor, units: dict, generator: torch.Generator) -> torch.Tensor:
    """Integer-valued images (model units) plus uniform noise of one pixel bin, in model units."""
    pixels = torch.round((images - units["offset"]) / units["scale"])
    return (pixels + torch.rand(pixels.shape, generator=generator)) * units["scale"] + units["offset"]


def nll_bits_per_dim(run, images: torch.Tensor, seed: int = 0, rtol: float = 1e-3, atol: float = 1e-3) -> dict:
    """Negative log-likelihood of held-out images in bits/dim through the probability-flow ODE.

    Dequantisation: each image's integer pixels k get uniform noise, y = k + u, u ~ U[0, 1)^d,
    mapped to model units x = scale·y + offset; the density of y is p(x)·scale^d, so
    ``bits/dim = −(log p_{σ_min}(x) + d ln scale)/(d ln 2)`` bounds the bits per dimension of
    the discrete images from above (digits: 17 levels, scale 1/8). The divergence is one
    Rademacher Hutchinson probe held along the path, the solver dopri5 in ln σ from
    σ_min = 0.002 to the run's σ_max, the prior N(0, (σ_max² + σ_data²) I).

    Returns ``{"nll_bits_per_dim", "nll_bits_per_dim_se", "nll_n", "nll_nfe"}``.
    """
    from .likelihood import probability_flow_log_likelihood

    run = run if isinstance(run, LoadedRun) else load_run(run)
    units = (run.config.get("data") or {}).get("units")
    if not units:
        raise FluxMatchError("bits/dim need integer data with known units (e.g. the digits); this run's data has none")
    generator = torch.Generator().manual_seed(int(seed))
    x = _dequantised(torch.as_tensor(images).float(), units, generator)
    settings = sampler_settings(run)
    field = run.field
    n_classes = int(getattr(field, "n_classes", 0) or 0)
    if n_classes:  # the unconditional model's likelihood: the null class
        field = ClassifierFreeGuidance(run.field, torch.zeros(x.shape[0], dtype=torch.long), 0.0)
    bits = int(math.ceil(math.log2(units["pixel_range"][1] + 1)))
    result = probability_flow_log_likelihood(
        field, x, NLL_SIGMA_MIN, settings["sigma_max"], method="dopri5", divergence="hutchinson",
        rtol=rtol, atol=atol, data_variance=SIGMA_DATA**2, dequantization_bits=bits, data_scale=units["scale"], generator=generator,
    )
    values = result.bits_per_dim.double()
    return {
        "nll_bits_per_dim": float(values.mean()),
        "nll_bits_per_dim_se": float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else None,
        "nll_n": int(values.numel()),
        "nll_nfe": int(result.nfe),
    }


def image_evaluation(run, source, samples_model: np.ndarray, seed: int, nll_n: int) -> dict:
    """FD-digits, class coverage and their floor (digits only), plus NLL on ``nll_n`` held-out images."""
    metrics: dict = {}
    held = source.held_out if getattr(source, "held_out", None) is not None else source.holdout(2000, seed=0)
    if source.name == "digits":
        from .metrics.images import image_metrics

        metrics.update(image_metrics(torch.as_tensor(samples_model), held, seed=seed))
    if nll_n > 0 and (run.config.get("data") or {}).get("units"):
        metrics.update(nll_bits_per_dim(run, held[:nll_n], seed=seed))
    return metrics


def train_annealed_run(
    source,
    objective: str = "flux",
    steps: int = 6000,
    batch_size: int = 128,
    seed: int = 0,
    out="runs/digits-flux",
    lr: float = 1e-3,
    grad_clip: float | None = 1.0,
    resume: bool = False,
    progress: bool = True,
    n_eval: int = 1000,
    preset: str = "digits",
    class_conditional: bool = False,
    sampler: dict | None = None,
    nll_n: int = 200,
    ema_decay: float = 0.999,
    design: dict | None = None,
    device: str = "cpu",
    **objective_options,
) -> dict:
    """Train an EDM-preconditioned UNet with a noise-annealed objective on image data, sample it,
    evaluate it and write a complete run directory (see the module docstring).

    Args:
        source: a :class:`~fluxmatch.data.DataSource` of images (N, C, H, W) in model units.
        objective: "flux" or "dsm".
        steps, batch_size, lr, seed, grad_clip, ema_decay: training settings (cosine schedule).
        out: run directory.
        n_eval: samples drawn for the image metrics.
        preset: UNet size (:data:`~fluxmatch.fields.unet.UNET_PRESETS`).
        class_conditional: condition the field on the labels (classifier-free guidance; the
            objective drops 10% of labels to the null class).
        sampler: overrides of :data:`DEFAULT_SAMPLER` stored as the run's sampling defaults.
        nll_n: held-out images whose NLL (bits/dim) is measured (0: skip).
        design: weights of design terms (e.g. ``{"mixing": 0.01}``), as in :func:`fluxmatch.pipeline.train_run`.
        objective_options: options of the objective (e.g. ``sigma_distribution="loguniform"``).

    Returns:
        The content of metrics.json.
    """
    from .viz import plot_loss_curve
    from .viz.images import plot_image_grid
    from .pipeline import _loss_keys, _save_npy

    event_shape = tuple(source.dim)
    n_classes = int(getattr(source, "n_classes", 0) or 0) if class_conditional else 0
    if class_conditional and n_classes == 0:
        raise FluxMatchError(f"the data {source.name!r} has no labels: it cannot train a class-conditional field")
    settings = {**DEFAULT_SAMPLER, **(sampler or {})}
    torch.manual_seed(seed)
    field = build_image_field(event_shape, preset, n_classes)
    objective_module = make_annealed_objective(objective, math.prod(event_shape), n_classes, **objective_options)
    if objective_module.target == "training_set":
        objective_module.use_training_set(source.data, source.labels if n_classes else None)
    if design and any(design.values()):
        objective_module = WithDesign(objective_module, design_terms(design))
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, grad_clip=grad_clip, progress=progress, ema_decay=ema_decay, log_every=min(50, max(1, steps // 20)), device=device)
    summary = Trainer(field, objective_module, source, config, out, sampler={"n": n_eval, "annealed": settings}).fit(resume=resume)

    out = Path(out)
    run = load_run(out)
    samples, nfe = draw_annealed(run, n_eval, seed, progress=progress)
    if not np.isfinite(samples).all():
        raise FluxMatchError(f"the sampler produced NaN or inf samples; the model is saved in {out}")
    pixels = to_data_units(run, samples)
    _save_npy(out / "samples.npy", pixels)
    held = source.holdout(100, seed=0)
    value_range = tuple(source.units["pixel_range"]) if getattr(source, "units", None) else (-1.0, 1.0)
    title = f"{objective} on {source.name}, {summary['steps']} steps, {settings['method']} {settings['steps']} levels ({nfe} NFE)"
    plot_image_grid(out / "samples.png", pixels[:100], title=title, value_range=value_range)
    plot_image_grid(out / "data.png", to_data_units(run, held.numpy()), title=f"held-out {source.name}", value_range=value_range)
    plot_loss_curve(out / "loss.png", out / "log.csv", _loss_keys(out / "log.csv"))
    metrics = image_evaluation(run, source, samples, seed, nll_n)
    result = {
        **metrics,
        "train": summary,
        "sampler": {**settings, "nfe": nfe, "n": n_eval, "seed": seed},
        "data": getattr(source, "spec", source.name),
        "objective": objective,
        "files": ["config.json", "model.safetensors", "trainer.safetensors", "trainer.json", "log.csv", "samples.npy", "samples.png", "data.png", "loss.png", "metrics.json"],
    }
    atomic_write_json(out / "metrics.json", result)
    return result
