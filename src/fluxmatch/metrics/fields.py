"""Diagnostics of a vector field: Jacobian, divergence, 2-D curl, values on a plotting grid.

A *field* is any callable ``field(x, cond)`` returning a tensor shaped like ``x``; ``cond`` is
passed through as given (None, a number, or a tensor). Points are (N, d) or (N, ...) with d
entries per row (flattened for the Jacobian), as numpy arrays or torch tensors.

The field must act row by row (output row n depends only on input row n, as for an MLP in eval
mode): derivatives are taken as gradients of sums over the batch, which is what makes one
backward pass per coordinate enough for all N rows at once.

Work is done in blocks of ``_CHUNK_ROWS`` rows; a per-row ``cond`` (a tensor whose first axis
has length N > 1) is sliced along with the rows, anything else is passed unchanged to every
block. Results are detached tensors on the device of the points (numpy arrays for
:func:`field_on_grid`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import FluxMatchError
from ._checks import require_finite

_CHUNK_ROWS = 4096

Field = Callable[[torch.Tensor, object], torch.Tensor]


def _as_points(x, name: str = "points") -> torch.Tensor:
    """(N, ...) points as a detached floating tensor; raises on bad shapes or NaN/inf rows (named ``name``)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if not t.is_floating_point():
            t = t.float()
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float32))
        except (TypeError, ValueError):
            raise FluxMatchError(f"{name} must be a numeric array of shape (N, d)") from None
    if t.ndim < 2 or t.shape[0] == 0:
        raise FluxMatchError(f"{name} must have shape (N, d) with N ≥ 1 and one point per row, got {tuple(t.shape)}")
    require_finite(t, name)
    return t


def _placement(field, points: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Where and in which float type to evaluate: a module's parameters decide (a float32 MLP
    on a GPU gets float32 GPU inputs); a plain function gets the points as they are."""
    if isinstance(field, torch.nn.Module):
        for p in field.parameters():
            if p.is_floating_point():
                return p.device, p.dtype
    return points.device, points.dtype


def _blocks(x: torch.Tensor, cond, placement: tuple[torch.device, torch.dtype]):
    """Yield (rows, cond for those rows) in blocks of ``_CHUNK_ROWS``; rows are moved and cast
    to ``placement``, a tensor cond only moved."""
    device, dtype = placement
    n = x.shape[0]
    is_tensor = isinstance(cond, torch.Tensor)
    per_row = is_tensor and cond.ndim >= 1 and n > 1 and cond.shape[0] == n
    if is_tensor:
        cond = cond.to(device)
    for start in range(0, n, _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, n)
        yield x[start:stop].to(device, dtype), cond[start:stop] if per_row else cond


def _call(field, x: torch.Tensor, cond) -> torch.Tensor:
    out = field(x, cond)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise FluxMatchError(f"the field returned shape {shape} for input of shape {tuple(x.shape)}: a field must map x to a tensor shaped like x")
    return out


def _jacobian_block(field, x: torch.Tensor, cond, diagonal_only: bool) -> torch.Tensor:
    """(B, d, d) Jacobian, or its (B, d) diagonal, of the field at the rows of x."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = _call(field, x, cond).reshape(x.shape[0], -1)
        d = out.shape[1]
        rows = []
        for i in range(d):
            if not out.requires_grad:
                # The output does not depend on x at all (e.g. a constant field).
                rows.append(torch.zeros_like(out))
                continue
            (g,) = torch.autograd.grad(out[:, i].sum(), x, retain_graph=i < d - 1, allow_unused=True, materialize_grads=True)
            g = g.reshape(x.shape[0], -1)
            rows.append(g[:, i : i + 1] if diagonal_only else g)
    return torch.cat(rows, 1) if diagonal_only else torch.stack(rows, 1)


def _run(field, x, cond, diagonal_only: bool) -> torch.Tensor:
    points = _as_points(x, "x")
    parts = [
        _jacobian_block(field, block, c, diagonal_only).detach().to(points.device)
        for block, c in _blocks(points, cond, _placement(field, points))
    ]
    return torch.cat(parts, 0)


def jacobian(field: Field, x, cond=None) -> torch.Tensor:
    """Jacobian of the field at each point.

    Args:
        x: (N, d) or (N, ...) points (flattened to d entries).

    Returns:
        (N, d, d) tensor J with J[n, i, j] = ∂f_i/∂x_j at point n (row i is the gradient of
        the i-th output coordinate), in units of [f]/[x]. Costs d backward passes.

    Raises:
        FluxMatchError: points not (N, ...) with N ≥ 1, NaN/inf rows, or a field output shaped
            unlike x.
    """
    return _run(field, x, cond, diagonal_only=False)


def divergence_field(field: Field, x, cond=None) -> torch.Tensor:
    """Exact divergence ∇·f = Σ_i ∂f_i/∂x_i at each point x (N, ...), (N,), in units of [f]/[x].

    Raises:
        FluxMatchError: as :func:`jacobian`.
    """
    return _run(field, x, cond, diagonal_only=True).sum(1)


def curl_2d(field: Field, x, cond=None) -> torch.Tensor:
    """Scalar curl ∂f_y/∂x - ∂f_x/∂y of a planar field at each point, (N,).

    Positive where the field turns counter-clockwise; 0 everywhere for a gradient field.

    Args:
        x: (N, 2) points.

    Raises:
        FluxMatchError: the points are not 2-D, or have NaN/inf rows.
    """
    points = _as_points(x, "x")
    d = points[0].numel()
    if d != 2:
        raise FluxMatchError(f"curl_2d needs 2-D points, got {d} coordinates per point (shape {tuple(points.shape)})")
    jac = jacobian(field, points, cond)
    return jac[:, 1, 0] - jac[:, 0, 1]


def mean_abs_curl(field: Field, points, cond=None) -> float:
    """Mean of |curl_2d| over the (N, 2) points, a scalar summary of how far a planar field is
    from being a gradient (units of [f]/[x]). Raises FluxMatchError as :func:`curl_2d`."""
    return float(curl_2d(field, _as_points(points, "points"), cond).abs().mean())


def grid_points(lim, n: int, center=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """An n×n grid: returns X, Y, each (n, n) float32, with X varying along columns.

    Args:
        lim: half-width of a square window around ``center``, or (xmin, xmax, ymin, ymax).
        n: points per side, ≥ 2.
    """
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise FluxMatchError(f"grid size must be an integer ≥ 2, got {n!r}") from None
    if n < 2:
        raise FluxMatchError(f"grid size must be an integer ≥ 2, got {n}")
    if np.ndim(lim) == 0:
        half = float(lim)
        if not np.isfinite(half) or half <= 0:
            raise FluxMatchError(f"lim must be a positive half-width or (xmin, xmax, ymin, ymax), got {lim!r}")
        cx, cy = (float(c) for c in center)
        box = (cx - half, cx + half, cy - half, cy + half)
    else:
        box = tuple(float(v) for v in np.asarray(lim, dtype=float).reshape(-1))
        if len(box) != 4 or not np.all(np.isfinite(box)) or box[0] >= box[1] or box[2] >= box[3]:
            raise FluxMatchError(f"lim must be a positive half-width or (xmin, xmax, ymin, ymax) with min < max, got {lim!r}")
    xs = np.linspace(box[0], box[1], n, dtype=np.float32)
    ys = np.linspace(box[2], box[3], n, dtype=np.float32)
    return np.meshgrid(xs, ys)


def field_on_grid(field: Field, lim, n: int, cond=None, center=(0.0, 0.0)):
    """Evaluate a planar field on an n×n grid, for quiver or streamline plots.

    Args:
        lim: half-width of a square window around ``center``, or (xmin, xmax, ymin, ymax).
        n: points per side.

    Returns:
        (X, Y, U, V): numpy float32 arrays of shape (n, n); X and Y are the coordinates (X varies
        along columns, as ``np.meshgrid`` gives), U and V the field's x and y components.
    """
    X, Y = grid_points(lim, n, center)
    points = torch.from_numpy(np.stack([X.ravel(), Y.ravel()], 1))
    values = []
    with torch.no_grad():
        for block, c in _blocks(points, cond, _placement(field, points)):
            values.append(_call(field, block, c).detach().float().cpu())
    uv = torch.cat(values).numpy()
    return X, Y, uv[:, 0].reshape(X.shape), uv[:, 1].reshape(X.shape)


__all__ = ["jacobian", "divergence_field", "curl_2d", "mean_abs_curl", "field_on_grid", "grid_points"]
