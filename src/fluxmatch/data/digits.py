"""The 8×8 handwritten digits of scikit-learn (``sklearn.datasets.load_digits``), as images.

The set ships inside scikit-learn, so nothing is downloaded: 1797 grey images of 8×8 pixels
with integer intensities 0..16, and their labels 0..9 (about 180 of each digit).

Units. Models see *model units* ``x = pixels · scale + offset = pixels/8 − 1``, so the pixel
range [0, 16] becomes [−1, 1] (the range EDM-style preconditioning expects, σ_data ≈ 0.5).
:data:`DIGITS_UNITS` records the map so that a run can store it in its ``config.json`` and
turn samples back into pixels with :func:`to_pixels` (``units=`` that stored dict).

Split. :func:`digits_split` keeps 20% of each digit's images aside (stratified, so every
class keeps its share), chosen with the fixed seed :data:`SPLIT_SEED`: 1438 training and 359
held-out images. The split never depends on a training seed, so the metric classifier (trained
on the training split) and the Fréchet-distance floor are the same for every run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import FluxMatchError

SPLIT_SEED = 20_240_607
"""Seed of the train/held-out split; fixed so that every run and the metric share one split."""

HOLDOUT_FRACTION = 0.2
"""Fraction of each digit's images kept for evaluation (rounded per class)."""

N_CLASSES = 10

DIGITS_UNITS = {
    "offset": -1.0,
    "scale": 1.0 / 8.0,
    "pixel_range": [0.0, 16.0],
    "model_range": [-1.0, 1.0],
}
"""Model units of the digits: ``x = pixels · scale + offset``; pixels lie in ``pixel_range``."""


@dataclass(frozen=True)
class DigitsSplit:
    """The fixed stratified split of the digits, in model units.

    Attributes:
        train_images: (1438, 1, 8, 8) float32 in [−1, 1].
        train_labels: (1438,) int64 in 0..9.
        held_out_images: (359, 1, 8, 8) float32 in [−1, 1].
        held_out_labels: (359,) int64 in 0..9.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    held_out_images: torch.Tensor
    held_out_labels: torch.Tensor


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) float64 pixels 0..16 and (1797,) int64 labels, read once per process."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise FluxMatchError("the digits data set needs scikit-learn: pip install scikit-learn") from None
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _check_units(units: dict) -> tuple[float, float, float, float]:
    try:
        offset, scale = float(units["offset"]), float(units["scale"])
        lo, hi = (float(v) for v in units["pixel_range"])
    except (KeyError, TypeError, ValueError):
        raise FluxMatchError(f"units must be a dict with offset, scale and pixel_range [lo, hi], got {units!r}") from None
    if not np.isfinite([offset, scale, lo, hi]).all() or scale <= 0 or lo >= hi:
        raise FluxMatchError(f"units need a finite offset, a positive scale and pixel_range lo < hi, got {units!r}")
    return offset, scale, lo, hi


def _check_finite(x, name: str) -> None:
    if isinstance(x, torch.Tensor):
        finite = bool(torch.isfinite(x).all())
    else:
        try:
            finite = bool(np.isfinite(np.asarray(x, dtype=np.float64)).all())
        except (TypeError, ValueError):
            raise FluxMatchError(f"{name} must be a numeric array") from None
    if not finite:
        raise FluxMatchError(f"{name} contain NaN or inf")


def to_pixels(x, units: dict = DIGITS_UNITS):
    """Model units → pixel intensities, clipped to the pixel range.

    ``pixels = clip((x − offset) / scale, *pixel_range)``; for the digits ``(x + 1) · 8`` in
    [0, 16], the units of ``load_digits().images``. Values are not rounded.

    Args:
        x: array or tensor of any shape, model units.
        units: the unit dict (default :data:`DIGITS_UNITS`; e.g. the one stored in a run).

    Returns:
        The same type as ``x`` (a torch tensor or a numpy array) and shape, floating point.
    """
    offset, scale, lo, hi = _check_units(units)
    _check_finite(x, "the images")
    if isinstance(x, torch.Tensor):
        x = x if x.is_floating_point() else x.float()
        return ((x - offset) / scale).clamp(lo, hi)
    return np.clip((np.asarray(x, dtype=np.float64) - offset) / scale, lo, hi)


def from_pixels(pixels, units: dict = DIGITS_UNITS):
    """Pixel intensities → model units: ``x = pixels · scale + offset`` (digits: ``pixels/8 − 1``).

    Exact for the digits' integer pixels (k/8 − 1 is a binary fraction), so
    ``to_pixels(from_pixels(p)) == p``. Returns the type of ``pixels``; a torch tensor stays on its
    device and becomes floating point, a numpy array becomes float32.
    """
    offset, scale, _, _ = _check_units(units)
    _check_finite(pixels, "the pixels")
    if isinstance(pixels, torch.Tensor):
        pixels = pixels if pixels.is_floating_point() else pixels.float()
        return pixels * scale + offset
    return (np.asarray(pixels, dtype=np.float64) * scale + offset).astype(np.float32)


def load_digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits: (1797, 1, 8, 8) float32 images in model units [−1, 1] and (1797,) int64
    labels 0..9, in scikit-learn's order."""
    images, labels = _raw_digits()
    x = torch.from_numpy(from_pixels(images)).unsqueeze(1).contiguous()
    return x, torch.from_numpy(labels.copy())


def _held_out_index(labels: np.ndarray) -> np.ndarray:
    """Sorted indices of the held-out images: round(20%) of each class, drawn with SPLIT_SEED."""
    rng = np.random.default_rng(SPLIT_SEED)
    chosen = []
    for c in range(N_CLASSES):
        members = np.flatnonzero(labels == c)
        chosen.append(rng.permutation(members)[: int(round(HOLDOUT_FRACTION * members.size))])
    return np.sort(np.concatenate(chosen))


def digits_split() -> DigitsSplit:
    """The fixed stratified train/held-out split of :func:`load_digits_images` (see the module
    docstring); both parts keep scikit-learn's order. Fresh tensors on every call."""
    images, labels = load_digits_images()
    held = np.zeros(labels.shape[0], dtype=bool)
    held[_held_out_index(labels.numpy())] = True
    held = torch.from_numpy(held)
    return DigitsSplit(
        train_images=images[~held].contiguous(),
        train_labels=labels[~held].contiguous(),
        held_out_images=images[held].contiguous(),
        held_out_labels=labels[held].contiguous(),
    )


__all__ = [
    "DIGITS_UNITS",
    "DigitsSplit",
    "HOLDOUT_FRACTION",
    "N_CLASSES",
    "SPLIT_SEED",
    "digits_split",
    "from_pixels",
    "load_digits_images",
    "to_pixels",
]
