"""Distances between two samples of points.

Inputs are (N, d) arrays, or (N, ...) arrays that are flattened to (N, d); numpy arrays and
torch tensors are both accepted. All arithmetic is done in float64 on the CPU, and every
result is a Python float in the units of the points (squared units for ``mmd_rbf``, which
returns MMD², and plain units for the others).

Every function refuses NaN or inf rows (:func:`~fluxmatch.metrics._checks.require_finite`)
before computing anything: a non-finite row would otherwise vanish from some sums and give a
meaningless, often perfect-looking, score.

Memory is bounded for large samples (N = M = 50000 is fine): MMD and energy distance sum over
pairs in row blocks of at most ``_CHUNK_ELEMENTS`` pairs (2²² float64 values, 32 MiB, per
temporary), sliced W2 handles its projections in blocks of about the same number of values,
and exact W2 is computed on random subsets of at most :data:`W2_MAX_POINTS` points per side.
:func:`sample_metrics` also bounds the time: MMD and energy on subsets of at most
:data:`PAIR_MAX_POINTS` points per side.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import FluxMatchError
from ._checks import require_finite

_CHUNK_ELEMENTS = 2**22
_MEDIAN_POINTS = 2000

W2_MAX_POINTS = 5000
"""Cap of exact W2: when N·M > W2_MAX_POINTS², each sample with more than W2_MAX_POINTS rows is
replaced by a seeded random subset of W2_MAX_POINTS rows (the cost matrix then has at most 25e6
entries, 200 MB in float64)."""


def numeric_tensor(x, name: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A numpy array, nested list or tensor as a detached CPU tensor of ``dtype``; raises naming ``name``."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", dtype)
    try:
        return torch.as_tensor(np.asarray(x, dtype=np.float64)).to(dtype)
    except (TypeError, ValueError):
        raise FluxMatchError(f"{name} is not a numeric array") from None


def _as_rows(x, name: str = "x") -> torch.Tensor:
    """(N, ...) numpy/torch → (N, d) float64 CPU tensor."""
    t = numeric_tensor(x, name)
    if t.ndim == 0:
        raise FluxMatchError(f"{name} must have one point per row, got a scalar")
    if t.ndim == 1:
        t = t[:, None]
    if t.shape[0] == 0:
        raise FluxMatchError(f"{name} has no rows")
    return t.reshape(t.shape[0], -1)


def _pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, d) and (M, d) float64 rows, centred on their pooled mean; raises on NaN/inf rows or
    different d."""
    a, b = _as_rows(x, "x"), _as_rows(y, "y")
    require_finite(a, "x")
    require_finite(b, "y")
    if a.shape[1] != b.shape[1]:
        raise FluxMatchError(f"the two samples have different dimensions: {a.shape[1]} and {b.shape[1]}")
    # Centring both on a common point keeps |a|² + |b|² - 2ab accurate for data far from 0.
    center = torch.cat([a, b]).mean(0)
    return a - center, b - center


def _block_sums(a: torch.Tensor, b: torch.Tensor, fn, same: bool = False) -> float:
    """Σ_ij fn(|a_i - b_j|²) over all pairs, in row blocks; with ``same`` the diagonal's squared
    distances are set to exactly 0 (rounding would otherwise leave ~1e-12 there)."""
    rows = max(1, _CHUNK_ELEMENTS // max(1, b.shape[0]))
    b_sq = b.square().sum(1)
    total = 0.0
    for start in range(0, a.shape[0], rows):
        block = a[start : start + rows]
        d2 = (block.square().sum(1)[:, None] + b_sq[None] - 2 * block @ b.T).clamp_min_(0)
        if same:
            i = torch.arange(block.shape[0])
            d2[i, start + i] = 0.0
        total += float(fn(d2).sum())
    return total


def wasserstein2(x, y, max_points: int = W2_MAX_POINTS, seed: int = 0) -> float:
    """Exact 2-Wasserstein distance between the two empirical measures (uniform weights).

    Solves the optimal transport problem with squared Euclidean cost exactly (POT's network
    simplex), then takes the square root. Cost and memory grow as N·M, so the problem is capped:
    when N·M > ``max_points``², each sample with more than ``max_points`` rows is replaced by a
    random subset of ``max_points`` rows (drawn with ``seed`` for x and ``seed + 1`` for y), and
    the value is then the exact W2 between those subsets, an estimate biased upwards by the
    subsampling. Below the cap the value is exact and does not depend on ``seed``.

    Args:
        x: (N, ...) points; y: (M, ...) points with the same number of entries per row.
        max_points: the cap, default :data:`W2_MAX_POINTS` (5000).
        seed: seeds the subsets when the cap applies.

    Raises:
        FluxMatchError: NaN/inf rows, different dimensions, or ``max_points`` < 1.
    """
    if isinstance(max_points, bool) or int(max_points) < 1:
        raise FluxMatchError(f"max_points must be a positive integer, got {max_points!r}")
    a, b = _pair(x, y)
    cap = int(max_points)
    if a.shape[0] * b.shape[0] > cap * cap:
        a, b = _subsample(a, cap, int(seed)), _subsample(b, cap, int(seed) + 1)
    n, m = a.shape[0], b.shape[0]
    a_np, b_np = a.numpy(), b.numpy()
    import ot  # POT: imported where used, it is the heaviest import of the package

    cost = ot.dist(a_np, b_np, metric="sqeuclidean")
    # The default iteration cap (1e5) stops the simplex early for a few thousand points.
    w2_sq = ot.emd2(np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost, numItermax=max(100_000, 50 * n * m))
    return math.sqrt(max(float(w2_sq), 0.0))


def _quantile_w2_sq(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Exact 1-D W2² between empirical measures, per column of (N, P) and (M, P) projections.

    The quantile functions are step functions that jump at the levels i/N and j/M; on each
    interval between consecutive levels both are constant, so the integral of their squared
    difference is a finite weighted sum.
    """
    n, m = px.shape[0], py.shape[0]
    xs, _ = px.sort(0)
    ys, _ = py.sort(0)
    if n == m:
        return (xs - ys).square().mean(0)
    levels = torch.unique(torch.cat([torch.arange(n + 1, dtype=torch.float64) / n, torch.arange(m + 1, dtype=torch.float64) / m]))
    widths = levels[1:] - levels[:-1]
    mid = (levels[1:] + levels[:-1]) / 2
    ix = (mid * n).floor().long().clamp_max(n - 1)
    iy = (mid * m).floor().long().clamp_max(m - 1)
    return (widths[:, None] * (xs[ix] - ys[iy]).square()).sum(0)


def sliced_wasserstein2(x, y, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance: sqrt(E_θ[W2²(θ·X, θ·Y)]) over random unit directions θ.

    The 1-D distances are exact for the empirical measures, including unequal sizes (the
    quantile functions are compared on the union of their jump levels). The directions are
    drawn from a generator seeded with ``seed``, so the value is deterministic. For a pure
    translation by c it is about |c|/sqrt(d).

    Memory: the (N + M) × P projections are handled in blocks of directions of about
    ``_CHUNK_ELEMENTS`` values (one block, as a single product, while (N + M)·P ≤ 2²²).

    Args:
        x: (N, ...) points; y: (M, ...) points with the same number of entries per row.

    Raises:
        FluxMatchError: NaN/inf rows, different dimensions, or ``n_projections`` < 1.
    """
    if int(n_projections) < 1:
        raise FluxMatchError(f"n_projections must be a positive integer, got {n_projections!r}")
    a, b = _pair(x, y)
    gen = torch.Generator().manual_seed(int(seed))
    theta = torch.randn(a.shape[1], int(n_projections), generator=gen, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    per_block = max(1, _CHUNK_ELEMENTS // (a.shape[0] + b.shape[0]))
    if per_block >= theta.shape[1]:
        values = _quantile_w2_sq(a @ theta, b @ theta)
    else:
        values = torch.cat([_quantile_w2_sq(a @ block, b @ block) for block in theta.split(per_block, 1)])
    return math.sqrt(max(float(values.mean()), 0.0))


def _median_bandwidth(a: torch.Tensor, b: torch.Tensor) -> float:
    pooled = torch.cat([a, b])
    if pooled.shape[0] > _MEDIAN_POINTS:
        # Fixed generator: the heuristic, and so the metric, must not depend on global RNG state.
        keep = torch.randperm(pooled.shape[0], generator=torch.Generator().manual_seed(0))[:_MEDIAN_POINTS]
        pooled = pooled[keep]
    d = torch.pdist(pooled)
    h = float(d.median()) if d.numel() else 0.0
    return h if h > 0 else 1.0


def mmd_rbf(x, y, bandwidth: float | None = None) -> float:
    """Unbiased estimate of MMD² with the RBF kernel k(u, v) = exp(-|u - v|² / (2 h²)).

    MMD² = E k(X, X') + E k(Y, Y') - 2 E k(X, Y), with the within-sample means taken over
    distinct pairs only (U-statistics), so the estimate is unbiased and can be slightly
    negative when the two laws are equal. Needs at least 2 points in each sample.

    Args:
        bandwidth: h in the units of the points; None uses the median pairwise distance of
            the pooled sample (subsampled to 2000 points with a fixed seed).

    Pair sums run in row blocks of at most ``_CHUNK_ELEMENTS`` pairs (memory independent of N·M).

    Args:
        x: (N, ...) points; y: (M, ...) points with the same number of entries per row.

    Returns:
        MMD² (squared RKHS norm, dimensionless since k ≤ 1) as a float.

    Raises:
        FluxMatchError: NaN/inf rows, different dimensions, fewer than 2 rows, or a bad bandwidth.
    """
    a, b = _pair(x, y)
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise FluxMatchError(f"mmd_rbf needs at least 2 points per sample, got {n} and {m}")
    h = _median_bandwidth(a, b) if bandwidth is None else float(bandwidth)
    if not math.isfinite(h) or h <= 0:
        raise FluxMatchError(f"bandwidth must be a positive finite number, got {bandwidth!r}")
    scale = -1.0 / (2 * h * h)

    def kernel(d2):
        return (scale * d2).exp_()

    # k(u, u) = 1, so removing the diagonal from the full sums subtracts exactly n (resp. m).
    kxx = (_block_sums(a, a, kernel, same=True) - n) / (n * (n - 1))
    kyy = (_block_sums(b, b, kernel, same=True) - m) / (m * (m - 1))
    kxy = _block_sums(a, b, kernel) / (n * m)
    return kxx + kyy - 2 * kxy


def energy_distance(x, y) -> float:
    """Energy distance 2E|X - Y| - E|X - X'| - E|Y - Y'| between the two samples.

    V-statistic: every mean runs over all pairs, including i = j (which adds 0), so the value
    is the energy distance between the two empirical measures: always ≥ 0, and 0 only when
    the samples coincide as multisets. Under equal laws it is positive with a bias of order
    E|X - X'|/N. Units: those of the points (not squared). Pair sums run in row blocks of at
    most ``_CHUNK_ELEMENTS`` pairs (memory independent of N·M).

    Args:
        x: (N, ...) points; y: (M, ...) points with the same number of entries per row.

    Raises:
        FluxMatchError: NaN/inf rows or different dimensions.
    """
    a, b = _pair(x, y)
    n, m = a.shape[0], b.shape[0]

    def norm(d2):
        return d2.sqrt_()

    exy = _block_sums(a, b, norm) / (n * m)
    exx = _block_sums(a, a, norm, same=True) / (n * n)
    eyy = _block_sums(b, b, norm, same=True) / (m * m)
    return max(2 * exy - exx - eyy, 0.0)


def _check_metric_input(x, name: str) -> torch.Tensor:
    t = _as_rows(x, name)
    if t.shape[0] < 2:
        raise FluxMatchError(f"{name} must have at least 2 rows, got {t.shape[0]}")
    return t


def _trailing(x) -> tuple[int, ...]:
    shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
    # A 1-D array is N scalar samples, i.e. the same as (N, 1).
    return (1,) if len(shape) == 1 else tuple(shape[1:])


def _check_trailing(x, data, name: str) -> None:
    if _trailing(x) != _trailing(data):
        shape_x = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
        shape_d = tuple(data.shape) if hasattr(data, "shape") else np.shape(data)
        raise FluxMatchError(f"{name} shape {shape_x} does not match data shape {shape_d}: the dimensions after the first must agree")


def _subsample(t: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    if t.shape[0] <= n:
        return t
    return t[torch.randperm(t.shape[0], generator=torch.Generator().manual_seed(seed))[:n]]


#: Points per sample of the suite's MMD and energy distance (their O(N·M) pair sums take minutes
#: beyond it; below it every point is used).
PAIR_MAX_POINTS = 10000


def _four(x: torch.Tensor, y: torch.Tensor, seed: int, w2_max_points: int, pair_max_points: int) -> dict[str, float]:
    px, py = _subsample(x, pair_max_points, seed + 2), _subsample(y, pair_max_points, seed + 3)
    return {
        "w2": wasserstein2(_subsample(x, w2_max_points, seed), _subsample(y, w2_max_points, seed + 1)),
        "sliced_w2": sliced_wasserstein2(x, y, seed=seed),
        "mmd": mmd_rbf(px, py),
        "energy": energy_distance(px, py),
    }


def sample_metrics(samples, data, reference=None, seed: int = 0, w2_max_points: int = 2000, pair_max_points: int = PAIR_MAX_POINTS) -> dict[str, float]:
    """All four distances between generated samples and data, and optionally their floor.

    Args:
        samples: (N, ...) generated points.
        data: (M, ...) data points with the same trailing shape.
        reference: optional second, independent data sample (ideally of size M); the same four
            distances between ``data`` and ``reference`` are the values a perfect sampler
            would get at these sample sizes (the "floor").
        seed: seeds the sliced-W2 directions and the W2 subsets.
        w2_max_points: exact W2 costs O(N·M) memory and more time, so it is computed on random
            subsets of at most this many points of each sample (and never more than
            :data:`W2_MAX_POINTS`, the cap of :func:`wasserstein2`).
        pair_max_points: MMD and energy distance use random subsets of at most this many
            points of each sample (every point up to :data:`PAIR_MAX_POINTS`), in bounded memory;
            sliced W2 uses every point.

    Returns:
        dict with ``w2``, ``sliced_w2``, ``mmd`` (MMD², can be slightly negative) and ``energy``,
        plus ``floor_w2``, ``floor_sliced_w2``, ``floor_mmd``, ``floor_energy`` when
        ``reference`` is given.

    Raises:
        FluxMatchError: fewer than 2 rows, different trailing shapes, or non-finite rows.
    """
    s = _check_metric_input(samples, "samples")
    d = _check_metric_input(data, "data")
    _check_trailing(samples, data, "samples")
    require_finite(s, "samples", hint=" (the sampler diverged: try a smaller step size)")
    require_finite(d, "data")
    r = None
    if reference is not None:
        r = _check_metric_input(reference, "reference")
        _check_trailing(reference, data, "reference")
        require_finite(r, "reference")
    result = _four(s, d, seed, w2_max_points, pair_max_points)
    if r is not None:
        result.update({f"floor_{k}": v for k, v in _four(d, r, seed, w2_max_points, pair_max_points).items()})
    return result


__all__ = ["W2_MAX_POINTS", "PAIR_MAX_POINTS", "wasserstein2", "sliced_wasserstein2", "mmd_rbf", "energy_distance", "sample_metrics"]
