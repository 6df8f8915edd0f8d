"""A seeded simulator of single-cell RNA velocity data with ground truth: a branching lineage.

A progenitor *trunk* (lineage time 0 → ``t_branch``) splits into ``n_fates`` *fate branches*
(``t_branch`` → ``t_end`` each; ``n_fates=1`` is a linear lineage with no branch). Every gene g
follows the splicing kinetics of scVelo's dynamical model on every segment::

    du/dt = α_g(t) − β_g u          (unspliced, molecules)
    ds/dt = β_g u − γ_g s           (spliced, molecules)

with β_g, γ_g log-uniform (1/time) and a piecewise-constant transcription program α_prog,g(t)
(molecules/time): on the trunk the gene starts on (α_on,g) or off (α_off,g = fraction·α_on,g)
and flips once; on each fate branch it independently ends on or off after one more switch, so
every gene changes somewhere and fates differ. With ``regulation = k > 0`` every gene has k
signed regulators, W (G, G) with zero diagonal, and

    α_g(t, s) = α_prog,g(t) · 2 σ(Σ_j W_gj (s_j / s_scale,j − 1)),

s_scale,j being the mid-point of gene j's on and off spliced steady states, so the genes couple
and are integrated jointly. :func:`integrate_kinetics` integrates with classical RK4 in float64;
switch times are snapped to the integration grid, so α_prog is constant within every step.

Cells are placed on the segments in proportion to their time lengths, with their true (u, s)
interpolated linearly from the grid; counts are Poisson (or Gamma–Poisson) around
capture · size factor · abundance. :func:`simulate_lineage` returns an ``anndata.AnnData`` with
scVelo's layer names ("unspliced", "spliced") plus the ground truth.

Each random component (rates, programs, regulation, cells, counts, embedding) draws from its own
child stream of the seed, so changing e.g. ``regulation`` with the same seed keeps the rates,
programs and cell times and changes only what regulation changes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import FluxMatchError, check_integer, check_positive

if TYPE_CHECKING:
    import anndata

FATE_LETTERS = "ABCDEFGH"
"""The names of the fate branches, in order; so at most 8 fates."""

_STREAMS = ("rates", "programs", "regulation", "cells", "counts", "embedding")
_RANGES = ("beta_range", "gamma_range", "alpha_range")
_NONNEGATIVE = ("size_sd", "dispersion", "jitter")


@dataclass(frozen=True)
class LineageParams:
    """The shape, kinetics and measurement parameters of the simulated lineage.

    Attributes:
        n_cells: cells, ≥ 10·(1 + n_fates) (at least 2 land on each segment).
        n_genes: genes, ≥ 2.
        n_fates: fate branches after the trunk, 1..8 (1: a linear lineage, no branch).
        regulation: regulators per gene (nonzeros per row of W), 0 ≤ regulation < n_genes.
        beta_range: (low, high) of the log-uniform splicing rates β (1/time).
        gamma_range: (low, high) of the log-uniform degradation rates γ (1/time).
        alpha_range: (low, high) of the log-uniform "on" transcription rates α_on (molecules/time).
        alpha_off_fraction: α_off / α_on, in (0, 1).
        t_branch: lineage time of the branch point (time units), > 0.
        t_end: lineage time at the end of every fate, > t_branch.
        capture: expected counts per molecule at size factor 1, > 0.
        size_sd: standard deviation of the log size factor (LogNormal(0, size_sd)), ≥ 0.
        dispersion: negative-binomial dispersion φ (variance μ + φμ²), ≥ 0; 0 is Poisson.
        jitter: std of the embedding's Gaussian jitter, as a fraction of t_branch, ≥ 0.
        fan_degrees: angle of the outermost fate ray from the x-axis in the embedding, [0, 90).
        dt: largest integration step (time units), > 0 and ≤ both segment lengths.
    """

    n_cells: int = 2000
    n_genes: int = 50
    n_fates: int = 2
    regulation: int = 0
    beta_range: tuple[float, float] = (0.5, 2.5)
    gamma_range: tuple[float, float] = (0.1, 1.0)
    alpha_range: tuple[float, float] = (1.0, 5.0)
    alpha_off_fraction: float = 0.05
    t_branch: float = 10.0
    t_end: float = 25.0
    capture: float = 3.0
    size_sd: float = 0.3
    dispersion: float = 0.0
    jitter: float = 0.03
    fan_degrees: float = 35.0
    dt: float = 0.01

    def __post_init__(self) -> None:
        n_fates = check_integer(self.n_fates, "n_fates", minimum=1)
        if n_fates > len(FATE_LETTERS):
            raise FluxMatchError(f"n_fates must be at most {len(FATE_LETTERS)}, got {n_fates}")
        n_genes = check_integer(self.n_genes, "n_genes", minimum=2)
        regulation = check_integer(self.regulation, "regulation", minimum=0)
        if regulation >= n_genes:
            raise FluxMatchError(f"regulation must be < n_genes = {n_genes} (regulators per gene, none self), got {regulation}")
        values = {"n_fates": n_fates, "n_genes": n_genes, "regulation": regulation, "n_cells": check_integer(self.n_cells, "n_cells", minimum=10 * (1 + n_fates))}
        for name in _RANGES:
            values[name] = _check_range(getattr(self, name), name)
        for name in ("t_branch", "t_end", "capture", "dt"):
            values[name] = check_positive(getattr(self, name), name)
        for name in _NONNEGATIVE:
            values[name] = _check_nonnegative(getattr(self, name), name)
        fraction = check_positive(self.alpha_off_fraction, "alpha_off_fraction")
        if fraction >= 1:
            raise FluxMatchError(f"alpha_off_fraction must be in (0, 1), got {fraction}")
        fan = _check_nonnegative(self.fan_degrees, "fan_degrees")
        if fan >= 90:
            raise FluxMatchError(f"fan_degrees must be in [0, 90), got {fan}")
        if values["t_end"] <= values["t_branch"]:
            raise FluxMatchError(f"t_end must be > t_branch = {values['t_branch']}, got {values['t_end']}")
        if values["dt"] > min(values["t_branch"], values["t_end"] - values["t_branch"]):
            raise FluxMatchError(f"dt must be ≤ both segment lengths (t_branch and t_end − t_branch), got {values['dt']}")
        for name, value in {**values, "alpha_off_fraction": fraction, "fan_degrees": fan}.items():
            object.__setattr__(self, name, value)


def _check_range(value, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise FluxMatchError(f"{name} must be a pair (low, high) of positive numbers, got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise FluxMatchError(f"{name} must satisfy 0 < low ≤ high (finite), got {value!r}")
    return low, high


def _check_nonnegative(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FluxMatchError(f"{name} must be a non-negative finite number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise FluxMatchError(f"{name} must be a non-negative finite number, got {value!r}")
    return number


@dataclass(frozen=True)
class SwitchProgram:
    """A one-switch, piecewise-constant transcription program on one segment, per gene.

    α_prog,g(t) = ``before[g]`` for t < ``switch[g]``, else ``after[g]`` (molecules/time);
    all three arrays have shape (G,), ``switch`` in lineage time units.
    """

    before: np.ndarray
    switch: np.ndarray
    after: np.ndarray

    def __call__(self, t) -> np.ndarray:
        """t: scalar or (...) times → α_prog of shape (G,) or (..., G)."""
        return np.where(np.asarray(t, dtype=np.float64)[..., None] < self.switch, self.before, self.after)


@dataclass(frozen=True)
class Regulation:
    """The regulatory modulation of transcription: s (..., G) → 2 σ((s / s_scale − 1) Wᵀ) (..., G), in (0, 2).

    ``weights`` is W (G, G), W[g, j] the effect of regulator j on gene g; ``s_scale`` (G,) in molecules.
    """

    weights: np.ndarray
    s_scale: np.ndarray

    def __call__(self, s: np.ndarray) -> np.ndarray:
        drive = (np.asarray(s) / self.s_scale - 1.0) @ self.weights.T
        return 1.0 + np.tanh(0.5 * drive)  # = 2 σ(drive)


def integrate_kinetics(alpha_fn: Callable, beta, gamma, u0, s0, t_grid, modulation: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Integrate du/dt = α(t, s) − β u, ds/dt = β u − γ s with classical RK4 in float64.

    Args:
        alpha_fn: t → α_prog(t), shape (G,) (molecules/time); called once per step at the step's
            mid-point and held constant over the step, so switches on grid points are exact.
        beta, gamma: (G,) or scalars, rates in 1/time.
        u0, s0: (G,) or scalars, the state at ``t_grid[0]`` (molecules).
        t_grid: (T,) increasing times (time units); steps may be uneven.
        modulation: optional s (G,) → factor (G,) multiplying α_prog (gene regulation); it is
            re-evaluated at every RK4 stage. None: no regulation.

    Returns:
        (u, s), each (T, G) float64: the state at every grid time. With α constant on a step
        the local error is O(h⁵), so the global error is O(h⁴).
    """
    t_grid = np.asarray(t_grid, dtype=np.float64)
    beta, gamma = np.asarray(beta, dtype=np.float64), np.asarray(gamma, dtype=np.float64)
    u, s = np.broadcast_arrays(np.asarray(u0, dtype=np.float64), np.asarray(s0, dtype=np.float64))
    u, s = u.copy(), s.copy()
    us, ss = [u], [s]

    def derivative(alpha, u, s):
        rate = alpha if modulation is None else alpha * modulation(s)
        return rate - beta * u, beta * u - gamma * s

    for t0, t1 in zip(t_grid[:-1], t_grid[1:]):
        h = t1 - t0
        alpha = alpha_fn(0.5 * (t0 + t1))
        k1u, k1s = derivative(alpha, u, s)
        k2u, k2s = derivative(alpha, u + 0.5 * h * k1u, s + 0.5 * h * k1s)
        k3u, k3s = derivative(alpha, u + 0.5 * h * k2u, s + 0.5 * h * k2s)
        k4u, k4s = derivative(alpha, u + h * k3u, s + h * k3s)
        u = u + h / 6.0 * (k1u + 2 * k2u + 2 * k3u + k4u)
        s = s + h / 6.0 * (k1s + 2 * k2s + 2 * k3s + k4s)
        us.append(u)
        ss.append(s)
    return np.stack(us), np.stack(ss)


def _segment_grid(start: float, stop: float, dt: float) -> np.ndarray:
    """(n + 1,) evenly spaced times from start to stop with step ≤ dt."""
    steps = max(1, math.ceil((stop - start) / dt - 1e-9))
    return np.linspace(start, stop, steps + 1)


def _snap(times: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Move each time to its nearest point of an even grid, never onto the grid's ends."""
    h = grid[1] - grid[0]
    index = np.clip(np.rint((times - grid[0]) / h), 1, len(grid) - 2)
    return grid[0] + index * h


def _draw_rates(params: LineageParams, rng: np.random.Generator) -> dict:
    """Per-gene β, γ, α_on (G,) log-uniform; γ/β spread over a decade is enforced where the ranges allow."""
    G = params.n_genes

    def log_uniform(bounds):
        low, high = bounds
        return np.exp(rng.uniform(math.log(low), math.log(high), G))

    beta, gamma, alpha_on = log_uniform(params.beta_range), log_uniform(params.gamma_range), log_uniform(params.alpha_range)
    (b_lo, b_hi), (g_lo, g_hi) = params.beta_range, params.gamma_range
    ratio = gamma / beta
    if ratio.max() / ratio.min() < 10 and (g_hi / g_lo) * (b_hi / b_lo) >= 10:
        beta[0], gamma[0], beta[1], gamma[1] = b_hi, g_lo, b_lo, g_hi  # the extremes of γ/β
    return {"beta": beta, "gamma": gamma, "alpha_on": alpha_on, "alpha_off": params.alpha_off_fraction * alpha_on}


def _draw_programs(params: LineageParams, rates: dict, grids: list[np.ndarray], rng: np.random.Generator) -> list[SwitchProgram]:
    """The trunk's program and then one per fate; on/off patterns of the fates differ where 2^G allows."""
    G, F = params.n_genes, params.n_fates
    on, off = rates["alpha_on"], rates["alpha_off"]
    starts_on = rng.random(G) < 0.5
    trunk_switch = _snap(rng.uniform(0.1, 0.9, G) * params.t_branch, grids[0])
    trunk = SwitchProgram(np.where(starts_on, on, off), trunk_switch, np.where(starts_on, off, on))
    patterns = rng.random((F, G)) < 0.5
    for k in range(1, F):
        for _ in range(100):
            if not any(np.array_equal(patterns[k], patterns[j]) for j in range(k)):
                break
            patterns[k] = rng.random(G) < 0.5
    length = params.t_end - params.t_branch
    fates = []
    for k in range(F):
        switch = _snap(params.t_branch + rng.uniform(0.05, 0.75, G) * length, grids[1 + k])
        fates.append(SwitchProgram(trunk.after, switch, np.where(patterns[k], on, off)))
    return [trunk, *fates]


def _draw_regulation(params: LineageParams, rates: dict, rng: np.random.Generator) -> Regulation | None:
    """W (G, G): ``regulation`` off-diagonal nonzeros per row, weights ±U[0.5, 1.5]; None if regulation = 0."""
    G, k = params.n_genes, params.regulation
    if k == 0:
        return None
    keys = rng.random((G, G))
    np.fill_diagonal(keys, np.inf)
    columns = np.argsort(keys, axis=1)[:, :k]
    weights = np.zeros((G, G))
    rows = np.repeat(np.arange(G), k)
    weights[rows, columns.ravel()] = rng.choice([-1.0, 1.0], G * k) * rng.uniform(0.5, 1.5, G * k)
    s_scale = 0.5 * (rates["alpha_on"] + rates["alpha_off"]) / rates["gamma"]
    return Regulation(weights, s_scale)


def _integrate_lineage(rates: dict, programs: list[SwitchProgram], grids: list[np.ndarray], regulation: Regulation | None) -> list[tuple]:
    """(u, s) on every segment's grid, each (T_k, G): the trunk from the steady state of α_prog(0), each fate from the trunk's end."""
    beta, gamma = rates["beta"], rates["gamma"]
    alpha0 = programs[0](0.0)
    trunk = integrate_kinetics(programs[0], beta, gamma, alpha0 / beta, alpha0 / gamma, grids[0], regulation)
    u_b, s_b = trunk[0][-1], trunk[1][-1]
    fates = [integrate_kinetics(program, beta, gamma, u_b, s_b, grid, regulation) for program, grid in zip(programs[1:], grids[1:])]
    return [trunk, *fates]


def _allocate(n_cells: int, lengths: np.ndarray) -> np.ndarray:
    """Cells per segment: 2 each, the rest in proportion to the lengths (largest remainders)."""
    rest = n_cells - 2 * len(lengths)
    share = rest * lengths / lengths.sum()
    counts = np.floor(share).astype(int)
    counts[np.argsort(-(share - counts), kind="stable")[: rest - counts.sum()]] += 1
    return counts + 2


def _place_cells(params: LineageParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(segment index (N,) int, lineage time (N,)): stratified-uniform times within each segment, cells shuffled."""
    bounds = [(0.0, params.t_branch)] + [(params.t_branch, params.t_end)] * params.n_fates
    counts = _allocate(params.n_cells, np.array([b - a for a, b in bounds]))
    segments, times = [], []
    for k, ((a, b), n) in enumerate(zip(bounds, counts)):
        strata = (rng.permutation(n) + rng.random(n)) / n
        segments.append(np.full(n, k))
        times.append(a + (b - a) * strata)
    order = rng.permutation(params.n_cells)
    return np.concatenate(segments)[order], np.concatenate(times)[order]


def _interpolate(grid: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear interpolation of values (T, G) on an increasing grid (T,) at times t (n,) → (n, G)."""
    index = np.clip(np.searchsorted(grid, t, side="right") - 1, 0, len(grid) - 2)
    weight = ((t - grid[index]) / (grid[index + 1] - grid[index]))[:, None]
    return (1.0 - weight) * values[index] + weight * values[index + 1]


def _cell_truth(rates: dict, programs, grids, paths, regulation, segment: np.ndarray, t: np.ndarray) -> dict:
    """True u, s (N, G) and velocities du/dt, ds/dt (N, G) at every cell, in float64."""
    N, G = len(t), len(rates["beta"])
    u, s, alpha = np.empty((N, G)), np.empty((N, G)), np.empty((N, G))
    for k, (program, grid, (u_path, s_path)) in enumerate(zip(programs, grids, paths)):
        cells = segment == k
        u[cells], s[cells] = _interpolate(grid, u_path, t[cells]), _interpolate(grid, s_path, t[cells])
        alpha[cells] = program(t[cells])
    if regulation is not None:
        alpha = alpha * regulation(s)
    beta, gamma = rates["beta"], rates["gamma"]
    return {"u": u, "s": s, "du": alpha - beta * u, "ds": beta * u - gamma * s}


def _counts(mean: np.ndarray, dispersion: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson(mean), or Gamma–Poisson with variance mean + dispersion·mean² when dispersion > 0."""
    if dispersion > 0:
        shape = 1.0 / dispersion
        mean = rng.gamma(shape, mean / shape)
    return rng.poisson(mean).astype(np.float32)


def _measure(params: LineageParams, truth: dict, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """Size factors (N,) and the float32 layers: counts around capture · size · (u, s), and the truth."""
    size = rng.lognormal(0.0, params.size_sd, params.n_cells)
    scale = params.capture * size[:, None]
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)
    layers = {
        "unspliced": _counts(scale * truth["u"], params.dispersion, rng),
        "spliced": _counts(scale * truth["s"], params.dispersion, rng),
        "true_unspliced": f32(truth["u"]),
        "true_spliced": f32(truth["s"]),
        "true_velocity": f32(truth["ds"]),
        "true_velocity_unspliced": f32(truth["du"]),
    }
    return layers, size


def _embed(params: LineageParams, segment: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 2): the trunk along +x from the origin, fate k a ray from (t_branch, 0) at its angle; position = time, plus jitter."""
    F = params.n_fates
    angles = np.radians(np.linspace(-params.fan_degrees, params.fan_degrees, F) if F > 1 else np.zeros(1))
    direction = np.concatenate([[[1.0, 0.0]], np.stack([np.cos(angles), np.sin(angles)], axis=1)])
    origin = np.where(segment[:, None] == 0, 0.0, np.array([params.t_branch, 0.0]))
    offset = np.where(segment == 0, t, t - params.t_branch)
    position = origin + offset[:, None] * direction[segment]
    return position + rng.normal(0.0, params.jitter * params.t_branch, position.shape)


def _labels(params: LineageParams, segment: np.ndarray, t: np.ndarray):
    """Cluster and fate labels as pandas Categoricals, and the transitions between clusters."""
    import pandas as pd

    letters = FATE_LETTERS[: params.n_fates]
    categories = ["Progenitor", "Transit"] + [f"{L}_{part}" for L in letters for part in ("early", "late")]
    trunk_mid, fate_mid = 0.5 * params.t_branch, 0.5 * (params.t_branch + params.t_end)
    late = np.where(segment == 0, t >= trunk_mid, t >= fate_mid).astype(int)
    index = np.where(segment == 0, late, 2 * segment + late)
    clusters = pd.Categorical.from_codes(index, categories=categories)
    fate = pd.Categorical.from_codes(segment, categories=["trunk", *letters])
    transitions = ["Progenitor>Transit"] + [step for L in letters for step in (f"Transit>{L}_early", f"{L}_early>{L}_late")]
    return clusters, fate, transitions


def _summary(params: LineageParams, seed: int) -> dict:
    """The parameters and seed as JSON-friendly scalars (ranges split into _min/_max)."""
    out = {"seed": int(seed), "model": "branching lineage, one-switch programs, RK4 splicing kinetics"}
    for field in dataclasses.fields(params):
        value = getattr(params, field.name)
        if field.name in _RANGES:
            out[f"{field.name}_min"], out[f"{field.name}_max"] = value
        else:
            out[field.name] = value
    return out


def simulate_lineage(params: LineageParams | None = None, seed: int = 0, **overrides) -> anndata.AnnData:
    """Simulate a branching lineage of ``n_cells`` cells × ``n_genes`` genes with ground truth.

    Args:
        params: the parameters (defaults: :class:`LineageParams`()); ``overrides`` replace fields.
        seed: integer ≥ 0; the same seed and parameters give an identical AnnData.

    Returns:
        ``anndata.AnnData`` (N = n_cells, G = n_genes), all arrays float32 unless noted:
        ``X`` and ``layers['spliced']``, ``layers['unspliced']``: counts (integer-valued);
        ``layers['true_spliced']``, ``layers['true_unspliced']``: noise-free abundances (molecules);
        ``layers['true_velocity']`` = ds/dt = β u − γ s and ``layers['true_velocity_unspliced']``
        = du/dt (molecules/time) at the true state; ``obs``: 'clusters', 'true_fate'
        (Categoricals), 'true_t' (lineage time), 'size_factor'; ``var``: 'true_alpha' (α_on),
        'true_alpha_off', 'true_beta', 'true_gamma' (float64); ``obsm['X_lineage']`` (N, 2);
        ``uns``: 'transitions' (list of "A>B"), 'simulation' (parameters and seed), and
        'true_regulation' (W, (G, G) float64) when regulation > 0.
    """
    try:
        import anndata
    except ImportError:
        raise FluxMatchError("simulating cells needs anndata: pip install 'fluxmatch[cells]'") from None
    try:
        params = dataclasses.replace(params if params is not None else LineageParams(), **overrides)
    except TypeError as error:
        raise FluxMatchError(f"unknown LineageParams field in {sorted(overrides)}: {error}") from None
    seed = check_integer(seed, "seed", minimum=0)
    streams = dict(zip(_STREAMS, np.random.default_rng(seed).spawn(len(_STREAMS))))
    grids = [_segment_grid(0.0, params.t_branch, params.dt)] + [_segment_grid(params.t_branch, params.t_end, params.dt)] * params.n_fates
    rates = _draw_rates(params, streams["rates"])
    programs = _draw_programs(params, rates, grids, streams["programs"])
    regulation = _draw_regulation(params, rates, streams["regulation"])
    paths = _integrate_lineage(rates, programs, grids, regulation)
    segment, t = _place_cells(params, streams["cells"])
    truth = _cell_truth(rates, programs, grids, paths, regulation, segment, t)
    layers, size = _measure(params, truth, streams["counts"])
    clusters, fate, transitions = _labels(params, segment, t)
    adata = anndata.AnnData(
        X=layers["spliced"].copy(),
        layers=layers,
        obsm={"X_lineage": _embed(params, segment, t, streams["embedding"]).astype(np.float32)},
    )
    adata.obs_names = [f"cell_{i}" for i in range(params.n_cells)]
    adata.var_names = [f"gene_{g}" for g in range(params.n_genes)]
    adata.obs["clusters"], adata.obs["true_fate"] = clusters, fate
    adata.obs["true_t"], adata.obs["size_factor"] = t, size
    for name, key in (("true_alpha", "alpha_on"), ("true_alpha_off", "alpha_off"), ("true_beta", "beta"), ("true_gamma", "gamma")):
        adata.var[name] = rates[key]
    adata.uns["transitions"], adata.uns["simulation"] = transitions, _summary(params, seed)
    if regulation is not None:
        adata.uns["true_regulation"] = regulation.weights.copy()
    return adata
