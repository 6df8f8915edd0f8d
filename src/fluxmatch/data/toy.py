"""Built-in two-dimensional toy data sets.

Every sampler returns an (n, 2) float32 tensor in the same units as the figures it is compared
against: all sets live roughly in [-4.5, 4.5]², so one σ schedule and one plotting window suit
all of them.

- ``ring``: angle uniform, radius 2.5 + 0.5·N(0, 1).
- ``8gaussians`` (alias ``gmm8``): 8 equal-weight isotropic Gaussians with std 0.3, means at
  radius 4 on the angles 2πk/8.
- ``moons``: scikit-learn's two moons with noise 0.1 (added before scaling), scaled ×2 and
  centred at the origin, so the points span about [-3, 3] × [-1.5, 1.5].
- ``checkerboard``: uniform on the 8 "black" squares (side 2) of a 4×4 board on [-4, 4]²,
  the squares whose column and row indices have an even sum.
- ``triangle``: 3 equal-weight isotropic Gaussians with std 0.5, means at radius 2.5 on the
  angles π/2 + 2πk/3 (the 3-component mixture of the controllable-field study).
- ``spirals``: two interleaved Archimedean spirals (one the other rotated by π) of 1.5 turns
  reaching radius 4, so neighbouring arms are 4/3 apart, with isotropic Gaussian noise of
  std 0.1.

Randomness comes only from the optional ``torch.Generator``, so a seeded generator gives the
same points on every platform.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

import torch

from ..errors import FluxMatchError

_GMM8_RADIUS = 4.0
_GMM8_STD = 0.3
_TRIANGLE_RADIUS = 2.5
_TRIANGLE_STD = 0.5
_SPIRAL_RADIUS = 4.0
_SPIRAL_TURNS = 1.5
_SPIRAL_NOISE = 0.1


def _normal(n: int, generator: torch.Generator | None, *shape: int) -> torch.Tensor:
    return torch.randn(n, *shape, generator=generator, dtype=torch.float32)


def _uniform(n: int, generator: torch.Generator | None, *shape: int) -> torch.Tensor:
    return torch.rand(n, *shape, generator=generator, dtype=torch.float32)


def _ring(n: int, generator: torch.Generator | None) -> torch.Tensor:
    angle = 2 * math.pi * _uniform(n, generator)
    radius = 2.5 + 0.5 * _normal(n, generator)
    return torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)


def _gmm8_means() -> torch.Tensor:
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    return (_GMM8_RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def _gmm8(n: int, generator: torch.Generator | None) -> torch.Tensor:
    component = torch.randint(0, 8, (n,), generator=generator)
    return _gmm8_means()[component] + _GMM8_STD * _normal(n, generator, 2)


def _triangle_means() -> torch.Tensor:
    angles = math.pi / 2 + 2 * math.pi * torch.arange(3, dtype=torch.float64) / 3
    return (_TRIANGLE_RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def _triangle(n: int, generator: torch.Generator | None) -> torch.Tensor:
    component = torch.randint(0, 3, (n,), generator=generator)
    return _triangle_means()[component] + _TRIANGLE_STD * _normal(n, generator, 2)


def _moons(n: int, generator: torch.Generator | None) -> torch.Tensor:
    # Half the points (rounded up) on the upper moon, as scikit-learn does for odd n.
    upper = torch.arange(n) < (n + 1) // 2
    t = math.pi * _uniform(n, generator)
    x = torch.where(upper, t.cos(), 1 - t.cos())
    y = torch.where(upper, t.sin(), 0.5 - t.sin())
    points = torch.stack([x, y], dim=1) + 0.1 * _normal(n, generator, 2)
    # scikit-learn's moons span [-1, 2] × [-0.5, 1]; (0.5, 0.25) is the middle of that box.
    points = 2 * (points - torch.tensor([0.5, 0.25]))
    # Shuffle so that a prefix of the sample is not all from one moon.
    return points[torch.randperm(n, generator=generator)]


def _checkerboard(n: int, generator: torch.Generator | None) -> torch.Tensor:
    square = torch.randint(0, 8, (n,), generator=generator)
    row = square // 2
    # In row r the black columns are those with (column + r) even: r % 2 and r % 2 + 2.
    column = 2 * (square % 2) + row % 2
    corner = torch.stack([column, row], dim=1).float() * 2 - 4
    return corner + 2 * _uniform(n, generator, 2)


def _spirals(n: int, generator: torch.Generator | None) -> torch.Tensor:
    # sqrt makes the density per unit area roughly uniform along the arms instead of piling up
    # at the centre, where the arms are short.
    t = _uniform(n, generator).sqrt()
    angle = 2 * math.pi * _SPIRAL_TURNS * t
    radius = _SPIRAL_RADIUS * t
    arm = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
    points = arm[:, None] * torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)
    points = points + _SPIRAL_NOISE * _normal(n, generator, 2)
    return points[torch.randperm(n, generator=generator)]


TOY_DATASETS: dict[str, Callable[[int, torch.Generator | None], torch.Tensor]] = {
    "ring": _ring,
    "8gaussians": _gmm8,
    "gmm8": _gmm8,
    "moons": _moons,
    "checkerboard": _checkerboard,
    "spirals": _spirals,
    "triangle": _triangle,
}
"""Name → sampler ``(n, generator) -> (n, 2) float32``. ``gmm8`` is an alias of ``8gaussians``."""


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in TOY_DATASETS:
        raise FluxMatchError(f"unknown toy data set {name!r}: expected one of {', '.join(TOY_DATASETS)}")
    return name


def _check_count(n) -> int:
    try:
        if isinstance(n, bool):
            raise TypeError
        # operator.index accepts Python, NumPy and 0-d torch integers but not 2.0 or "3".
        n = operator.index(n)
    except TypeError:
        raise FluxMatchError(f"the number of samples must be a positive integer, got {n!r}") from None
    if n <= 0:
        raise FluxMatchError(f"the number of samples must be a positive integer, got {n}")
    return n


def sample_toy(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``n`` points of the toy set ``name``.

    Args:
        name: a key of :data:`TOY_DATASETS`.
        n: number of points, > 0.
        generator: CPU ``torch.Generator`` for reproducible draws; the global RNG if None.

    Returns:
        (n, 2) float32 tensor on the CPU.

    Example:
        >>> sample_toy("ring", 5, torch.Generator().manual_seed(0)).shape
        torch.Size([5, 2])
    """
    sampler = TOY_DATASETS[_check_name(name)]
    return sampler(_check_count(n), generator).contiguous()


def toy_mixture(name: str) -> dict[str, torch.Tensor]:
    """The analytic form of a toy set that is an isotropic Gaussian mixture.

    ``8gaussians`` (alias ``gmm8``) and ``triangle`` have one.

    Returns:
        dict with ``means`` (K, 2), ``stds`` (K,) (per-coordinate standard deviations, in the
        units of the points) and ``weights`` (K,) summing to 1, all float32.
    """
    name = _check_name(name)
    forms = {_gmm8: (_gmm8_means, _GMM8_STD), _triangle: (_triangle_means, _TRIANGLE_STD)}
    if TOY_DATASETS[name] not in forms:
        raise FluxMatchError(f"toy data set {name!r} has no analytic mixture form: only '8gaussians' (alias 'gmm8') and 'triangle' have one")
    means_of, std = forms[TOY_DATASETS[name]]
    means = means_of()
    k = means.shape[0]
    return {"means": means, "stds": torch.full((k,), std, dtype=torch.float32), "weights": torch.full((k,), 1 / k, dtype=torch.float32)}


__all__ = ["TOY_DATASETS", "sample_toy", "toy_mixture"]
