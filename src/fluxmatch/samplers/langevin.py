"""Langevin sampling at a fixed σ with any field (docs/MATH.md §4)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import FluxMatchError
from ..fields import call_field
from .noise import standard_normal


@dataclass
class LangevinResult:
    """Final samples (N, ...), the field evaluations per sample (one per step) and, if recorded,
    the trajectory (T, N, ...) with the step of each frame (T,)."""

    samples: torch.Tensor
    trajectory: torch.Tensor | None = None
    steps: torch.Tensor | None = None
    nfe: int = 0


@torch.no_grad()
def langevin(
    field,
    x_init: torch.Tensor,
    step_size: float = 0.005,
    n_steps: int = 2000,
    c=None,
    record_every: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> LangevinResult:
    """Simulate ``dX = f(X) dt + sqrt(2) dW`` by Euler-Maruyama: ``x ← x + ε f(x) + sqrt(2ε) ξ``.

    The reference notebooks write the same SDE at half speed (``x + (ε/2) f + sqrt(ε) ξ``): their
    ε = 0.01 equals our ε = 0.005 step for step.

    Args:
        field: callable ``field(x, c)``.
        x_init: (N, ...) starting points.
        step_size: ε > 0 (time units of the SDE).
        n_steps: number of steps ≥ 0.
        c: conditioning for the field; for σ-conditioned fields a float σ or an (N,) tensor.
        record_every: keep every k-th state (plus the initial and final ones) in ``trajectory``.
        generator: torch.Generator for reproducible noise.
        progress: show a tqdm progress bar.
    """
    if not step_size > 0:
        raise FluxMatchError(f"the Langevin step size must be positive, got {step_size}")
    if n_steps < 0:
        raise FluxMatchError(f"the number of Langevin steps must be ≥ 0, got {n_steps}")
    x = x_init.detach().clone().float()
    if c is not None and not isinstance(c, torch.Tensor):
        c = x.new_full((x.shape[0],), float(c))
    noise_scale = (2.0 * step_size) ** 0.5
    frames, frame_steps = ([x.clone()], [0]) if record_every else (None, None)
    steps = range(n_steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="langevin", leave=False)
    for k in steps:
        drift = call_field(field, x, c)
        noise = standard_normal(x.shape, generator, x.dtype, x.device)
        x = x + step_size * drift + noise_scale * noise
        if record_every and ((k + 1) % record_every == 0 or k + 1 == n_steps):
            frames.append(x.clone())
            frame_steps.append(k + 1)
    if record_every:
        return LangevinResult(x, torch.stack(frames), torch.tensor(frame_steps), nfe=n_steps)
    return LangevinResult(x, nfe=n_steps)
