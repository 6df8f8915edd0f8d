"""Drawing samples from a trained run: the sampler follows from the field's conditioning.

- fixed σ: Langevin dynamics ``x ← x + ε f(x) + sqrt(2ε) ξ`` from the training data's
  per-coordinate mean ± std;
- σ-conditioned (noise-annealed): from N(0, σ_max² I) down EDM's noise schedule by the
  probability-flow ODE (Heun, Euler, dopri5), the reverse SDE or predictor-corrector; a
  class-conditional field gets every class equally often (or one label) with classifier-free
  guidance;
- t-conditioned (flow matching): the flow's ODE from N(0, I) at t = 0 to t = 1.

Every path draws in chunks, one after the other from one generator, so memory is bounded by a
chunk whatever n is (50,000 samples are fine): :data:`CHUNK` samples per call for images and on
the noise-annealed path, :data:`POINT_CHUNK` for points by Langevin or the flow ODE. A draw of at
most one chunk is one sampler call, as before chunking; a larger draw is deterministic for a seed
but depends on the chunk size (the generator's draws are interleaved chunk by chunk).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from ..config import SamplerSpec, validate
from ..errors import FluxMatchError
from ..fields import ClassifierFreeGuidance
from ..samplers import edm_sigmas, langevin, predictor_corrector, prior_sample, probability_flow, reverse_sde, solve_ode
from .run import Run, run_device

#: Samples per sampler call for images and on the noise-annealed path (bounds the memory of big fields).
CHUNK = 1000
#: Samples per Langevin / flow-ODE call for points (vectors): small rows, so big chunks; a draw of
#: up to this many points is one call, as before chunking (the same samples for the same seed).
POINT_CHUNK = 65536


def sampler_for(run: Run, **overrides) -> SamplerSpec:
    """The run's sampler with the non-None ``overrides`` (SamplerSpec fields), checked against the run."""
    unknown = sorted(set(overrides) - set(SamplerSpec.__dataclass_fields__))
    if unknown:
        raise FluxMatchError(f"unknown sampler setting(s) {', '.join(unknown)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    spec = replace(run.spec, sampler=replace(run.spec.sampler, **changes))
    validate(spec, run.kind)
    if spec.sampler.guidance is not None and not spec.field.class_conditional and "guidance" in changes:
        raise FluxMatchError(f"--guidance applies to class-conditional runs; the run {run.run_dir} is not class-conditional")
    return spec.sampler


def _labels(run: Run, n: int, label) -> torch.Tensor | None:
    n_classes = int(getattr(run.field, "n_classes", 0) or 0) if run.spec.field.class_conditional else 0
    if n_classes == 0:
        if label is not None:
            raise FluxMatchError(f"the run {run.run_dir} is not class-conditional: it takes no label")
        return None
    if label is None:
        return torch.arange(n) % n_classes  # every class equally often
    if isinstance(label, bool) or not 0 <= int(label) < n_classes:
        raise FluxMatchError(f"label must lie in 0..{n_classes - 1}, got {label}")
    return torch.full((n,), int(label), dtype=torch.long)


def _point_rows(run: Run) -> int:
    """Rows per Langevin / flow call: :data:`POINT_CHUNK` for points, :data:`CHUNK` for images."""
    return POINT_CHUNK if len(run.event_shape) == 1 else CHUNK


def _chunked(n: int, size: int, draw_chunk, progress: bool) -> tuple[torch.Tensor, int]:
    """Concatenate ``draw_chunk(start, rows, progress)`` → (samples, nfe) over chunks of ``size`` rows.

    With ``progress`` a single chunk shows its sampler's own per-step bar; several chunks show one
    tqdm bar counting samples across the whole draw instead (the samplers' bars are then off).
    Returns the (n, ...) samples and the largest nfe of a chunk (all equal for fixed-step samplers).
    """
    starts = range(0, n, size)
    bar = None
    if progress and len(starts) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"sampling ({len(starts)} chunks)", unit="sample")
    parts, nfe = [], 0
    try:
        for start in starts:
            rows = min(size, n - start)
            x, chunk_nfe = draw_chunk(start, rows, progress and bar is None)
            parts.append(x)
            nfe = max(nfe, int(chunk_nfe))
            if bar is not None:
                bar.update(rows)
    finally:
        if bar is not None:
            bar.close()
    return torch.cat(parts), nfe


def _langevin(run: Run, n: int, s: SamplerSpec, generator, progress) -> tuple[torch.Tensor, int]:
    d = math.prod(run.event_shape)
    mean = torch.as_tensor(run.data_meta.get("mean", [0.0] * d), dtype=torch.float32)
    std = torch.as_tensor(run.data_meta.get("std", [1.0] * d), dtype=torch.float32)
    if mean.numel() != d or std.numel() != d:
        raise FluxMatchError(f"{run.run_dir / 'config.json'}: data mean/std have {mean.numel()}/{std.numel()} entries, expected {d}")

    def chunk(start: int, rows: int, bar: bool) -> tuple[torch.Tensor, int]:
        x0 = (mean + std * torch.randn((rows, d), generator=generator)).reshape(rows, *run.event_shape)
        result = langevin(run.field, x0.to(_device(run)), s.step_size, s.steps, c=run.sigma, generator=generator, progress=bar)
        return result.samples.cpu(), result.nfe

    return _chunked(n, _point_rows(run), chunk, progress)


def _flow(run: Run, n: int, s: SamplerSpec, generator, progress) -> tuple[torch.Tensor, int]:
    def chunk(start: int, rows: int, bar: bool) -> tuple[torch.Tensor, int]:
        x0 = torch.randn((rows, *run.event_shape), generator=generator)
        result = solve_ode(run.field, x0.to(_device(run)), 0.0, 1.0, s.method, s.steps, progress=bar)
        return result.samples.cpu(), result.nfe

    return _chunked(n, _point_rows(run), chunk, progress)


def _annealed(run: Run, n: int, s: SamplerSpec, generator, label, progress) -> tuple[torch.Tensor, int]:
    sigmas = edm_sigmas(int(s.steps), s.sigma_min, s.sigma_max, s.rho)
    labels = _labels(run, n, label)

    def chunk(start: int, rows: int, bar: bool) -> tuple[torch.Tensor, int]:
        field = run.field if labels is None else ClassifierFreeGuidance(run.field, labels[start : start + rows].to(_device(run)), float(s.guidance))
        x = prior_sample((rows, *run.event_shape), s.sigma_max, generator).to(_device(run))
        if s.method == "sde":
            result = reverse_sde(field, x, sigmas, generator=generator, progress=bar)
        elif s.method == "pc":
            result = predictor_corrector(field, x, sigmas, generator=generator, progress=bar)
        else:
            result = probability_flow(field, x, sigmas, method=s.method, progress=bar)
        return result.samples.float().cpu(), result.nfe

    return _chunked(n, CHUNK, chunk, progress)


def _device(run: Run) -> torch.device:
    """The device the run's field is on (where :func:`draw` put it)."""
    return next(run.field.parameters()).device


def draw(run: Run, n: int, seed: int, sampler: SamplerSpec | None = None, label=None, progress: bool = False, device: str | None = None) -> tuple[np.ndarray, int]:
    """(n, *event_shape) float32 samples of the run's EMA field in model units (rows may be
    non-finite if the sampler diverged), and the field evaluations per sample.

    ``sampler`` defaults to the run's own; ``label`` picks one class of a class-conditional run.
    Every sampler runs on chunks in turn (:data:`CHUNK` or, for points by Langevin or the flow
    ODE, :data:`POINT_CHUNK` samples; memory bounded by a chunk); ``progress`` shows a tqdm bar
    (per step for one chunk, per sample across several). The same seed gives the same samples;
    a draw of at most one chunk is exactly the unchunked draw. The field runs on ``device``
    (default :func:`~fluxmatch.run.run.run_device`: the device it trained on, where this machine
    has it); the noise is drawn on the CPU from the seed, so a seed means the same noise there.

    Raises:
        FluxMatchError: n not an integer ≥ 1, or a label for a run that takes none (or out of
            range).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise FluxMatchError(f"the number of samples must be an integer ≥ 1, got {n!r}")
    s = sampler or run.spec.sampler
    run.field.to(run_device(run, device))
    generator = torch.Generator().manual_seed(int(seed))
    if run.conditioning == "fixed":
        if label is not None:
            raise FluxMatchError(f"the run {run.run_dir} is not class-conditional: it takes no label")
        x, nfe = _langevin(run, int(n), s, generator, progress)
    elif run.conditioning == "time":
        if label is not None:
            raise FluxMatchError(f"the run {run.run_dir} is not class-conditional: it takes no label")
        x, nfe = _flow(run, int(n), s, generator, progress)
    else:
        x, nfe = _annealed(run, int(n), s, generator, label, progress)
    return x.numpy(), int(nfe)
