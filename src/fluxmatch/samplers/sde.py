"""Samplers of a σ-conditioned field down a noise schedule: reverse VE SDE, probability-flow ODE, predictor-corrector.

Convention (variance exploding, docs/MATH.md §4): p_σ = p_data ∗ N(0, σ²I), and the field
f(x, σ) ≈ ∇log p_σ(x) (a Flux Matching field also qualifies: its extra part u = f − ∇log p_σ has
∇·(p_σ u) = 0, so it moves no marginal). Start at σ_0 = σ_max from ``x ~ N(0, σ_max² I)``
(:func:`prior_sample`; the data's own spread is negligible against σ_max) and step down a
schedule σ_0 > … > σ_n (see :mod:`~fluxmatch.samplers.schedules`), usually ending at σ_n = 0.

The field is always called as ``field(x, σ)`` with σ a (B,) tensor of one value (one σ per step)
in x's dtype. Class-conditional or guided sampling passes a wrapper module that supplies the
labels; the samplers know nothing of labels.

Every step to σ = 0 is the same denoising step ``x + σ² f(x, σ)`` (Tweedie's E[x_0 | x_σ] for
an exact score), whichever sampler takes it: it is the last Euler step of the ODE and the last,
noiseless, step of the SDE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import FluxMatchError, check_positive
from ..fields import call_field
from .noise import standard_normal
from .ode import solve_ode
from .schedules import check_sigmas

PF_METHODS = ("euler", "heun", "dopri5")
PREDICTORS = ("sde", "ode")


@dataclass
class AnnealedResult:
    """What a noise-annealed sampler returns.

    Attributes:
        samples: (B, ...) the state at the last level of the schedule.
        nfe: exact number of field evaluations (each on the whole batch).
        trajectory: (T, B, ...) the state at each level in ``sigmas`` when recorded, else None.
        sigmas: (T,) float64 noise level of each recorded frame, else None.
    """

    samples: torch.Tensor
    nfe: int
    trajectory: torch.Tensor | None = None
    sigmas: torch.Tensor | None = None


def prior_sample(shape, sigma_max: float, generator: torch.Generator | None = None, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Draw starting points ``x ~ N(0, σ_max² I)`` of the given shape (B, ...), in data units."""
    sigma_max = check_positive(sigma_max, "sigma_max")
    return sigma_max * standard_normal(shape, generator, dtype, device)


def _prepare(x, sigmas) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, ...) starting state (a detached floating copy) and the validated float64 schedule."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise FluxMatchError("x must be a non-empty tensor of shape (B, ...) with a leading batch dimension")
    x = x.detach().clone()
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if not torch.isfinite(x).all():
        raise FluxMatchError("the starting points x contain NaN or infinite values")
    return x, check_sigmas(sigmas)


def _field(field, x: torch.Tensor, sigma: float, where: str) -> torch.Tensor:
    """f(x, σ) with σ broadcast to (B,), checked for shape and finiteness."""
    out = call_field(field, x, x.new_full((x.shape[0],), sigma))
    if not torch.isfinite(out).all():
        raise FluxMatchError(f"the field returned NaN or infinite values at σ = {sigma:.4g} ({where})")
    return out


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return standard_normal(x.shape, generator, x.dtype, x.device)


def _run(x: torch.Tensor, sigmas: torch.Tensor, step, name: str, record: bool, progress: bool) -> AnnealedResult:
    """Apply ``step(x, σ_i, σ_{i+1}, i) -> (x, evaluations)`` down the schedule, with the bookkeeping."""
    frames = [x.clone()] if record else None
    indices = range(len(sigmas) - 1)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc=name, leave=False)
    nfe = 0
    for i in indices:
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x, evaluations = step(x, sigma, sigma_next, i)
        nfe += evaluations
        if not torch.isfinite(x).all():
            raise FluxMatchError(
                f"{name} diverged at step {i} (σ = {sigma:.4g} → {sigma_next:.4g}): the state became non-finite; "
                "check the field, or use more, smaller steps"
            )
        if record:
            frames.append(x.clone())
    if record:
        return AnnealedResult(x, nfe, torch.stack(frames), sigmas.clone())
    return AnnealedResult(x, nfe)


def _sde_step(field, x, sigma, sigma_next, i, generator):
    """Euler-Maruyama step of the reverse VE SDE; noiseless when σ_{i+1} = 0."""
    variance = sigma**2 - sigma_next**2  # in float64: σ_i² − σ_{i+1}² cancels badly in float32 at small σ
    x = x + variance * _field(field, x, sigma, f"step {i}")
    if sigma_next > 0:
        x = x + math.sqrt(variance) * _noise(x, generator)
    return x


def _ode_euler_step(field, x, sigma, sigma_next, i):
    """Euler step of dx/dσ = −σ f(x, σ): ``x + σ_i (σ_i − σ_{i+1}) f(x, σ_i)``."""
    return x + sigma * (sigma - sigma_next) * _field(field, x, sigma, f"step {i}")


def _langevin_corrector(field, x, sigma, snr, steps, generator, i):
    """``steps`` fixed-σ Langevin steps ``x + ε f + sqrt(2ε) ξ``, ε = 2 (snr ⟨|ξ|⟩ / ⟨|f|⟩)² over the batch."""
    batch = x.shape[0]
    for _ in range(steps):
        drift = _field(field, x, sigma, f"corrector of step {i}")
        noise = _noise(x, generator)
        noise_norm = noise.reshape(batch, -1).norm(dim=1).mean()
        drift_norm = drift.reshape(batch, -1).norm(dim=1).mean()
        eps = 2 * (snr * noise_norm / drift_norm) ** 2
        x = x + eps * drift + (2 * eps).sqrt() * noise
    return x


@torch.no_grad()
def reverse_sde(field, x: torch.Tensor, sigmas, generator: torch.Generator | None = None, progress: bool = False, record: bool = False) -> AnnealedResult:
    """Euler-Maruyama for the reverse VE SDE ``dx = −d(σ²) f(x, σ) + dw̄`` down the schedule.

    Step i: ``x ← x + (σ_i² − σ_{i+1}²) f(x, σ_i) + sqrt(σ_i² − σ_{i+1}²) ξ``, ξ ~ N(0, I); the step
    to σ_{i+1} = 0 adds no noise (the denoising step). One field evaluation per step.

    Args:
        field: σ-conditioned field, ``field(x, σ)`` with σ (B,), units 1/data.
        x: (B, ...) starting points at σ_0 (draw them with :func:`prior_sample`).
        sigmas: (n + 1,) schedule σ_0 > … > σ_n ≥ 0, data units (e.g. :func:`edm_sigmas`).
        generator: torch.Generator for the noise.
        progress: show a tqdm progress bar.
        record: keep the state at every level (see :class:`AnnealedResult`).

    Returns:
        :class:`AnnealedResult` with nfe = n.

    Raises:
        FluxMatchError: bad x or schedule, a field output of the wrong shape or non-finite, or a
            state that becomes non-finite (the message names the step and σ).
    """
    x, sigmas = _prepare(x, sigmas)

    def step(x, sigma, sigma_next, i):
        return _sde_step(field, x, sigma, sigma_next, i, generator), 1

    return _run(x, sigmas, step, "reverse SDE", record, progress)


@torch.no_grad()
def probability_flow(
    field,
    x: torch.Tensor,
    sigmas,
    method: str = "heun",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    progress: bool = False,
    record: bool = False,
) -> AnnealedResult:
    """Integrate the probability-flow ODE ``dx/dσ = −σ f(x, σ)`` from σ_0 down the schedule.

    With an exact score, x(σ) ~ p_σ for every σ when x(σ_0) ~ p_{σ_0}: the ODE is deterministic
    and shares the SDE's marginals.

    * ``euler``: ``x ← x + σ_i (σ_i − σ_{i+1}) f(x, σ_i)``; n evaluations for n steps.
    * ``heun``: EDM's second-order step (Karras et al. 2022, Alg. 1): an Euler trial x̃, then
      ``x ← x + (σ_i − σ_{i+1}) (σ_i f(x, σ_i) + σ_{i+1} f(x̃, σ_{i+1}))/2``, except that the step
      to σ = 0 stays Euler; so 2n − 1 evaluations for n steps ending at 0 (2n otherwise).
    * ``dopri5``: torchdiffeq's adaptive Dormand-Prince, in the variable u = ln σ,
      ``dx/du = −σ² f(x, σ)``, from σ_0 to the smallest positive level σ_min of the schedule
      (ln σ spreads the work evenly over the decades of σ that a schedule like EDM's spans;
      ``rtol``/``atol`` apply to x). If the schedule ends at 0, the denoising step
      ``x + σ_min² f(x, σ_min)`` follows (one more evaluation). Only the schedule's end points
      matter; ``record`` keeps the dense solution at as many levels evenly spaced in ln σ as the
      schedule has positive levels, then the denoised frame at σ = 0.

    Args:
        field: σ-conditioned field, ``field(x, σ)`` with σ (B,), units 1/data.
        x: (B, ...) starting points at σ_0.
        sigmas: (n + 1,) schedule σ_0 > … > σ_n ≥ 0, data units.
        method: "euler", "heun" or "dopri5".
        rtol, atol: dopri5 tolerances.
        progress: tqdm progress bar (fixed-step methods).
        record: keep the trajectory (see :class:`AnnealedResult`).

    Returns:
        :class:`AnnealedResult`; ``nfe`` counts every evaluation, dopri5's included.

    Raises:
        FluxMatchError: unknown method, bad tolerances, x or schedule, a bad field output, or a
            state that becomes non-finite.
    """
    if method not in PF_METHODS:
        raise FluxMatchError(f"unknown probability-flow method {method!r}: expected one of {PF_METHODS}")
    x, sigmas = _prepare(x, sigmas)
    if method == "dopri5":
        return _probability_flow_dopri5(field, x, sigmas, rtol, atol, record)

    def step(x, sigma, sigma_next, i):
        if method == "euler" or sigma_next == 0:
            return _ode_euler_step(field, x, sigma, sigma_next, i), 1
        f = _field(field, x, sigma, f"step {i}")
        trial = x + sigma * (sigma - sigma_next) * f
        f_trial = _field(field, trial, sigma_next, f"step {i}, Heun correction")
        return x + 0.5 * (sigma - sigma_next) * (sigma * f + sigma_next * f_trial), 2

    return _run(x, sigmas, step, f"probability flow ({method})", record, progress)


def _probability_flow_dopri5(field, x, sigmas, rtol, atol, record) -> AnnealedResult:
    if not (rtol > 0 and atol > 0):
        raise FluxMatchError(f"dopri5 tolerances must be positive, got rtol = {rtol}, atol = {atol}")
    positive = sigmas[sigmas > 0]
    sigma_min = float(positive[-1])

    def velocity(z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        sigma = math.exp(float(u[0]))
        return -(sigma**2) * _field(field, z, sigma, "dopri5")

    solution = solve_ode(
        velocity, x, math.log(float(positive[0])), math.log(sigma_min), method="dopri5", steps=max(len(positive) - 1, 1), rtol=rtol, atol=atol, record=record
    )
    x, nfe = solution.x, solution.nfe
    if record:
        frames = list(solution.trajectory)
        levels = list(torch.linspace(math.log(float(positive[0])), math.log(sigma_min), len(frames), dtype=torch.float64).exp())
    if float(sigmas[-1]) == 0:
        x = x + sigma_min**2 * _field(field, x, sigma_min, "denoising step")
        nfe += 1
        if record:
            frames.append(x)
            levels.append(torch.zeros((), dtype=torch.float64))
    if not torch.isfinite(x).all():
        raise FluxMatchError(f"probability flow (dopri5) diverged in the denoising step at σ = {sigma_min:.4g}")
    if record:
        return AnnealedResult(x, nfe, torch.stack(frames), torch.stack(levels))
    return AnnealedResult(x, nfe)


@torch.no_grad()
def predictor_corrector(
    field,
    x: torch.Tensor,
    sigmas,
    predictor: str = "sde",
    corrector_steps: int = 1,
    snr: float = 0.16,
    generator: torch.Generator | None = None,
    progress: bool = False,
    record: bool = False,
) -> AnnealedResult:
    """Predictor-corrector sampling (Song et al. 2021, Alg. 2 with the Langevin corrector of Alg. 4).

    Step i: a predictor step from σ_i to σ_{i+1} (``"sde"``: the reverse-SDE step of
    :func:`reverse_sde`; ``"ode"``: the Euler step of :func:`probability_flow`), then, when
    σ_{i+1} > 0, ``corrector_steps`` fixed-σ Langevin steps at σ_{i+1},

        x ← x + ε f(x, σ_{i+1}) + sqrt(2ε) ξ,    ε = 2 (snr · |ξ| / |f(x, σ_{i+1})|)²,

    with ξ ~ N(0, I), |·| the norm of one sample over all its coordinates, and each norm averaged
    over the batch before the ratio is taken (as in Song et al.'s code): one ε per batch and
    corrector step, so a sample's path depends on the rest of its batch. Per-sample ratios
    would be unusable in low dimension: in d = 2, |ξ|²/|f|² is heavy-tailed (an F(2, 2)
    variable times a scale), and the rare huge steps throw points far off the data. The step to
    σ = 0 is the denoising step and is not corrected.

    Args:
        field: σ-conditioned field, ``field(x, σ)`` with σ (B,), units 1/data.
        x: (B, ...) starting points at σ_0.
        sigmas: (n + 1,) schedule σ_0 > … > σ_n ≥ 0, data units.
        predictor: "sde" or "ode".
        corrector_steps: Langevin steps per level, an integer ≥ 0.
        snr: signal-to-noise ratio r > 0 of the corrector (0.16 is Song et al.'s VE setting).
        generator: torch.Generator for the noise.
        progress: show a tqdm progress bar.
        record: keep the state at every level, after its corrector (see :class:`AnnealedResult`).

    Returns:
        :class:`AnnealedResult` with nfe = n + corrector_steps × (number of positive σ_{i+1}).

    Raises:
        FluxMatchError: unknown predictor, bad corrector_steps, snr, x or schedule, a bad field
            output, or a state that becomes non-finite.
    """
    if predictor not in PREDICTORS:
        raise FluxMatchError(f"unknown predictor {predictor!r}: expected one of {PREDICTORS}")
    if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int) or corrector_steps < 0:
        raise FluxMatchError(f"corrector_steps must be an integer ≥ 0, got {corrector_steps!r}")
    snr = check_positive(snr, "snr")
    x, sigmas = _prepare(x, sigmas)

    def step(x, sigma, sigma_next, i):
        if predictor == "sde":
            x = _sde_step(field, x, sigma, sigma_next, i, generator)
        else:
            x = _ode_euler_step(field, x, sigma, sigma_next, i)
        if sigma_next == 0:
            return x, 1
        return _langevin_corrector(field, x, sigma_next, snr, corrector_steps, generator, i), 1 + corrector_steps

    return _run(x, sigmas, step, f"predictor-corrector ({predictor})", record, progress)
