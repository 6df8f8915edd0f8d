"""How fast a field's Langevin dynamics mix: distance-to-data curves and autocorrelation times.

Two fields can share a stationary distribution and differ in how fast ``x ← x + ε f(x) +
sqrt(2ε) ξ`` gets there (docs/MATH.md §5–6). :func:`mixing_curve` follows one batch of chains and
records its distance to reference samples at chosen step counts; :func:`steps_to_reach` reads
the number of steps (= field evaluations) a target distance takes. Within equilibrium,
:func:`integrated_autocorrelation_time` measures how many steps separate effectively independent
draws of a statistic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np
import torch

from ..errors import FluxMatchError
from ..samplers.langevin import langevin
from ._checks import require_finite
from .samples import mmd_rbf, sliced_wasserstein2, wasserstein2

_BANDWIDTH_POINTS = 2000


@dataclass
class MixingCurve:
    """Distance of the chains to the reference after each recorded number of Langevin steps.

    Attributes:
        steps: step counts, increasing (step 0 is the start).
        distances: the metric at each step count (units of the metric: data units for W2 and
            sliced W2, dimensionless MMD² for "mmd").
        nfe: field evaluations spent to reach each step count (one per step).
        metric: the metric's name.
        options: how the curve was made (step size, number of chains).
    """

    steps: list[int]
    distances: list[float]
    nfe: list[int]
    metric: str
    options: dict = dataclass_field(default_factory=dict)

    def as_dict(self) -> dict:
        """A JSON-ready copy: ``{"steps", "distances", "nfe", "metric", "options"}``."""
        return {"steps": list(self.steps), "distances": list(self.distances), "nfe": list(self.nfe), "metric": self.metric, "options": dict(self.options)}


def _median_distance(points: torch.Tensor) -> float:
    flat = points.detach().reshape(points.shape[0], -1).double().cpu()
    if flat.shape[0] > _BANDWIDTH_POINTS:
        flat = flat[torch.randperm(flat.shape[0], generator=torch.Generator().manual_seed(0))[:_BANDWIDTH_POINTS]]
    d = torch.pdist(flat)
    h = float(d.median()) if d.numel() else 0.0
    return h if h > 0 else 1.0


def _distance_fn(metric, reference: torch.Tensor) -> tuple[str, Callable]:
    if callable(metric):
        return getattr(metric, "__name__", "custom"), metric
    if metric == "w2":
        return metric, wasserstein2
    if metric == "sliced_w2":
        return metric, sliced_wasserstein2
    if metric == "mmd":
        # one bandwidth for the whole curve (the reference's median distance), so the values
        # at different steps are comparable
        h = _median_distance(reference)
        return metric, lambda x, y: mmd_rbf(x, y, bandwidth=h)
    raise FluxMatchError(f"unknown mixing metric {metric!r}: expected 'w2', 'sliced_w2', 'mmd' or a callable")


def mixing_curve(
    field,
    x0: torch.Tensor,
    step_size: float,
    steps,
    reference,
    metric="w2",
    cond=None,
    generator: torch.Generator | None = None,
) -> MixingCurve:
    """Run ONE batch of Langevin chains from x0 and record its distance to ``reference`` at ``steps``.

    The chains run once to ``max(steps)``, pausing at each requested count to measure: nothing is
    rerun, so the values along the curve are from the same chains.

    Args:
        field: ``field(x, c)``.
        x0: (N, ...) start points.
        step_size: Langevin step ε (the SDE's time units).
        steps: step counts ≥ 0 (sorted and deduplicated).
        reference: (M, ...) samples of the target.
        metric: "w2" (exact; subsets of 5000 points when N·M > 25e6), "sliced_w2", "mmd" (MMD², RBF with a bandwidth fixed
            from the reference) or a callable ``metric(x, y) -> float``.
        cond: the field's conditioning (e.g. σ).
        generator: torch.Generator for the noise.

    Raises:
        FluxMatchError: bad step counts, shapes that differ, NaN/inf rows in ``x0`` or
            ``reference``, an unknown metric, or chains that diverge.
    """
    counts = sorted({int(s) for s in steps})
    if not counts or counts[0] < 0:
        raise FluxMatchError(f"steps must be a non-empty list of counts ≥ 0, got {steps!r}")
    if not isinstance(x0, torch.Tensor) or x0.ndim < 2:
        raise FluxMatchError("x0 must be a tensor of start points (N, ...)")
    reference = torch.as_tensor(reference)
    require_finite(x0, "x0")
    require_finite(reference, "reference")
    if reference.shape[1:] != x0.shape[1:]:
        raise FluxMatchError(f"reference points have shape {tuple(reference.shape[1:])}, start points {tuple(x0.shape[1:])}")
    name, distance = _distance_fn(metric, reference)
    x, done, distances = x0.detach(), 0, []
    for count in counts:
        if count > done:
            x = langevin(field, x, step_size, count - done, c=cond, generator=generator).samples
            done = count
        if not torch.isfinite(x).all():
            raise FluxMatchError(f"the chains diverged (NaN or inf) by step {count}: lower the step size")
        distances.append(float(distance(x, reference)))
    return MixingCurve(counts, distances, list(counts), name, {"step_size": float(step_size), "n_chains": int(x0.shape[0])})


def steps_to_reach(curve: MixingCurve, target: float, interpolate: bool = False) -> float | int | None:
    """The first recorded step count at which the distance is ≤ ``target``; None if never.

    With ``interpolate``, the crossing is placed by linear interpolation between that count and
    the one before it (a float).

    Raises:
        FluxMatchError: a NaN/inf ``target`` or NaN/inf distances in the curve.
    """
    require_finite(np.asarray(float(target)), "target", unit="value")
    require_finite(np.asarray(curve.distances, dtype=np.float64), "curve.distances", unit="entry")
    prev = None
    for step, dist in zip(curve.steps, curve.distances):
        if dist <= target:
            if not interpolate or prev is None or prev[1] == dist:
                return step
            s0, d0 = prev
            return s0 + (d0 - target) / (d0 - dist) * (step - s0)
        prev = (step, dist)
    return None


def _autocorrelation(series: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation ρ(t), t = 0..T−1, of a (T, chains) series, averaged over chains.

    Autocovariances by FFT about the mean of ALL chains (they share one stationary law): centring
    each chain on its own mean would bias τ by about −(2M + 1)τ/T, 6% for τ = 19 and T = 3000."""
    t = series.shape[0]
    centred = series - series.mean()
    n = 1 << (2 * t - 1).bit_length()
    spectrum = np.fft.rfft(centred, n=n, axis=0)
    acov = np.fft.irfft(spectrum * np.conj(spectrum), n=n, axis=0)[:t].mean(1) / t
    if acov[0] <= 0:
        raise FluxMatchError("the statistic is constant along the chains: its autocorrelation time is undefined")
    return acov / acov[0]


def integrated_autocorrelation_time(series, c: float = 5.0) -> float:
    """Integrated autocorrelation time τ = 1 + 2 Σ_{t≥1} ρ(t) of a statistic along Markov chains, in steps.

    Sokal's automatic window: τ(M) = 1 + 2 Σ_{t=1}^{M} ρ(t) with the smallest M ≥ c·τ(M)
    (c = 5), ρ averaged over chains. The variance of the chains' mean is τ·Var/(T·chains).
    Relative standard error ≈ sqrt((4M + 2)/(T·chains)); the estimate needs T ≫ c·τ.

    Args:
        series: (T,) or (T, chains) values of the statistic, one row per step.

    Raises:
        FluxMatchError: not (T,) or (T, chains) with T ≥ 4, NaN/inf steps, or a constant series.
    """
    x = np.asarray(series.detach().cpu() if isinstance(series, torch.Tensor) else series, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 4:
        raise FluxMatchError(f"series must be (T,) or (T, chains) with T ≥ 4 steps, got shape {x.shape}")
    require_finite(x, "series", unit="step")
    rho = _autocorrelation(x)
    taus = 2.0 * np.cumsum(rho) - 1.0  # taus[M] = 1 + 2 Σ_{t=1}^{M} ρ(t)
    window = np.arange(len(taus)) >= c * taus
    m = int(np.argmax(window)) if window.any() else len(taus) - 1
    return float(taus[m])


def _first_coordinate(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)[:, 0]


@torch.no_grad()
def autocorrelation_time(
    field,
    x0: torch.Tensor,
    step_size: float,
    n_steps: int,
    statistic: Callable[[torch.Tensor], torch.Tensor] | None = None,
    cond=None,
    burn_in: int = 0,
    generator: torch.Generator | None = None,
) -> float:
    """Integrated autocorrelation time (in steps) of ``statistic`` along Langevin chains from x0.

    Runs ``burn_in`` steps, then ``n_steps`` steps recording ``statistic(x)`` ((N, ...) → (N,),
    one value per chain; default: the first coordinate) after each, and applies
    :func:`integrated_autocorrelation_time`.
    Multiply by ``step_size`` for the SDE's time units. Start from (near) equilibrium, e.g. data
    samples, or burn in.

    Raises:
        FluxMatchError: n_steps < 4, NaN/inf rows in ``x0``, a statistic of the wrong shape, or
            NaN/inf statistic values (chains that diverged).
    """
    if int(n_steps) < 4:
        raise FluxMatchError(f"n_steps must be ≥ 4, got {n_steps}")
    if statistic is None:
        statistic = _first_coordinate
    require_finite(x0, "x0")
    x = x0.detach()
    if burn_in:
        x = langevin(field, x, step_size, int(burn_in), c=cond, generator=generator).samples
    values = []
    for _ in range(int(n_steps)):
        x = langevin(field, x, step_size, 1, c=cond, generator=generator).samples
        value = torch.as_tensor(statistic(x))
        if value.shape != (x.shape[0],):
            raise FluxMatchError(f"the statistic must return one value per chain, shape ({x.shape[0]},), got {tuple(value.shape)}")
        values.append(value.double().cpu())
    return integrated_autocorrelation_time(torch.stack(values))


__all__ = ["MixingCurve", "mixing_curve", "steps_to_reach", "integrated_autocorrelation_time", "autocorrelation_time"]
