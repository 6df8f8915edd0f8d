"""Image metrics for the 8×8 digits: Fréchet distance in a classifier's feature space, class coverage.

The feature network is a small CNN (:class:`DigitsClassifier`) trained by the library itself on
the digits' training split (:func:`fluxmatch.data.digits.digits_split`), deterministically: a
fixed seed, a fixed number of epochs, one thread. Its weights are cached with safetensors in
``$FLUXMATCH_CACHE`` (default ``~/.cache/fluxmatch/``) under a name that carries
:data:`CLASSIFIER_VERSION`; a missing or unreadable cache file is (re)built, with a warning when
it was corrupt. The held-out split, which the classifier never sees, gives its accuracy.

Convention: every image argument is in the digits' *model units* ``x = pixels/8 − 1`` (see
:data:`fluxmatch.data.digits.DIGITS_UNITS`), shaped (N, 1, 8, 8), (N, 8, 8) or (N, 64). Images
are clipped to [−1, 1] before the classifier sees them, as they would be when saved as pixels.
Arrays that look like raw pixels (all values ≥ 0 and some above 2) are refused.

FD-digits is the Fréchet distance between Gaussians fitted to the classifier's penultimate
features (32 per image) of two sets of images, the FID recipe with a network suited to 8×8
digits. Like FID it is biased upwards at finite sample size, by an amount that depends on n, so
:func:`image_metrics` also reports a data-vs-data floor computed at the same n. Against the
359 held-out digits, n real training digits score (mean ± sd over 100 draws) 31 ± 11 at
n = 100, 16 ± 5 at n = 200, 10 ± 2.5 at n = 359 and 5.4 ± 0.7 at n = 1000: compare models
with n ≥ 1000 samples where possible, and never at different n.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.digits import N_CLASSES, digits_split
from ..errors import FluxMatchError
from ._checks import require_finite
from .samples import numeric_tensor

CLASSIFIER_VERSION = "digits-cnn32-v1"
"""Cache key of the classifier: change it whenever the architecture or the training recipe changes."""

FEATURE_DIM = 32
"""Width of the feature layer. Measured against 64 and 16 (15 seeds, n = 359 real digits vs the
held-out set): 32 features tell digits with N(0, 0.2²) pixel noise from clean ones by 6.7
standard deviations of the real-vs-real value (64 features: 4.8) at the same accuracy."""
_TRAIN_SEED = 0
_EPOCHS = 30
_BATCH = 64
_LR = 3e-3
_WEIGHT_DECAY = 1e-4
_PIXEL_SHIFT = 1  # random translations of up to ±1 pixel during training, for robust features
_FEATURE_BATCH = 4096
_PIXEL_LIKE_MAX = 2.0


class DigitsClassifier(nn.Module):
    """A small CNN for 8×8 digits in model units.

    conv3×3(1→32) → ReLU → conv3×3(32→64) → ReLU → 2×2 average pool → linear(1024→32)
    [features] → ReLU → linear(32→10) [logits].

    The features are taken before the last ReLU: after it many units are zero on every digit
    (24 of 64 in a trial), and the pre-activations are closer to the Gaussian that the Fréchet distance
    fits (they also separate slightly noisy digits from clean ones better).

    Attributes:
        heldout_accuracy: accuracy on the digits' held-out split (NaN until known).
        source: ``"trained"`` (trained in this call) or ``"cache"`` (read from the cache file).
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, FEATURE_DIM),
        )
        self.head = nn.Linear(FEATURE_DIM, N_CLASSES)
        self.heldout_accuracy = float("nan")
        self.source = "trained"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 8, 8) model units → (N, 32) penultimate pre-activations."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 8, 8) model units → (N, 10) logits."""
        return self.head(torch.relu(self.features(x)))


def cache_dir() -> Path:
    """``$FLUXMATCH_CACHE`` if set, else ``~/.cache/fluxmatch``."""
    return Path(os.environ.get("FLUXMATCH_CACHE") or Path.home() / ".cache" / "fluxmatch")


def _cache_file() -> Path:
    return cache_dir() / f"{CLASSIFIER_VERSION}.safetensors"


def _shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ±_PIXEL_SHIFT pixels in each axis, filling with background (−1)."""
    pad = _PIXEL_SHIFT
    padded = nn.functional.pad(x, (pad, pad, pad, pad), value=-1.0)
    offsets = torch.randint(0, 2 * pad + 1, (x.shape[0], 2), generator=generator)
    rows = offsets[:, 0, None] + torch.arange(8)  # (N, 8)
    cols = offsets[:, 1, None] + torch.arange(8)
    batch = torch.arange(x.shape[0])[:, None, None]
    return padded[batch, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


@torch.no_grad()
def _accuracy(model: DigitsClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((model(images).argmax(1) == labels).double().mean())


def _train() -> DigitsClassifier:
    """Train the classifier on the digits' training split: Adam, cosine learning rate, fixed
    seed and epochs, in a private RNG state and on one thread (a few seconds on a CPU)."""
    split = digits_split()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_TRAIN_SEED)
            model = DigitsClassifier()
            generator = torch.Generator().manual_seed(_TRAIN_SEED)
            steps_per_epoch = math.ceil(split.train_images.shape[0] / _BATCH)
            optimizer = torch.optim.AdamW(model.parameters(), lr=_LR, weight_decay=_WEIGHT_DECAY)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, _EPOCHS * steps_per_epoch)
            model.train()
            for _ in range(_EPOCHS):
                order = torch.randperm(split.train_images.shape[0], generator=generator)
                for start in range(0, order.shape[0], _BATCH):
                    index = order[start : start + _BATCH]
                    x = _shift(split.train_images[index], generator)
                    loss = nn.functional.cross_entropy(model(x), split.train_labels[index])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.heldout_accuracy = _accuracy(model, split.held_out_images, split.held_out_labels)
    model.source = "trained"
    return model


def _save(model: DigitsClassifier, path: Path) -> None:
    """Write atomically: a temporary file in the same folder, then a rename over ``path``."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, tmp, metadata={"version": CLASSIFIER_VERSION, "heldout_accuracy": repr(model.heldout_accuracy)})
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load(path: Path) -> DigitsClassifier:
    """Read the cached classifier; raises (any exception) when the file is not a valid cache."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 - safe_open is not a dict
    if metadata.get("version") != CLASSIFIER_VERSION:
        raise ValueError(f"version {metadata.get('version')!r}, expected {CLASSIFIER_VERSION!r}")
    model = DigitsClassifier()
    model.load_state_dict(tensors, strict=True)
    if not all(bool(torch.isfinite(t).all()) for t in tensors.values()):
        raise ValueError("non-finite weights")
    model.heldout_accuracy = float(metadata["heldout_accuracy"])
    model.source = "cache"
    return model.eval()


_UNSAVED: dict[Path, DigitsClassifier] = {}


def digits_classifier() -> DigitsClassifier:
    """The metric's digit classifier, in eval mode, with its held-out accuracy.

    Read from the cache file ``<cache_dir()>/<CLASSIFIER_VERSION>.safetensors``; if that is
    missing it is trained (a few seconds) and saved atomically. A corrupt or mismatched file is
    rebuilt with a warning. If the cache folder cannot be written, the model is trained once per
    process and kept in memory (with a warning).
    """
    path = _cache_file()
    if path in _UNSAVED:
        return _UNSAVED[path]
    if path.exists():
        try:
            return _load(path)
        except Exception as err:  # noqa: BLE001 - any unreadable cache is rebuilt, whatever the reason
            warnings.warn(f"the cached digits classifier {path} is unreadable ({type(err).__name__}: {err}); retraining it", stacklevel=2)
    model = _train()
    try:
        _save(model, path)
    except OSError as err:
        warnings.warn(f"cannot write the digits classifier cache {path} ({err}); set FLUXMATCH_CACHE to a writable folder", stacklevel=2)
        _UNSAVED[path] = model
    return model


def _digit_batch(images, name: str) -> torch.Tensor:
    """Validated (N, 1, 8, 8) float32 images in model units, clipped to [−1, 1]."""
    x = numeric_tensor(images, name, torch.float32)
    if x.ndim == 0 or x.shape[0] == 0:
        raise FluxMatchError(f"{name} must hold at least one image, got shape {tuple(x.shape)}")
    if math.prod(x.shape[1:]) != 64:
        raise FluxMatchError(f"{name} must be 8×8 digits shaped (N, 1, 8, 8), (N, 8, 8) or (N, 64), got {tuple(x.shape)}")
    x = x.reshape(x.shape[0], 1, 8, 8)
    require_finite(x, name, unit="image")
    if float(x.min()) >= 0 and float(x.max()) > _PIXEL_LIKE_MAX:
        raise FluxMatchError(
            f"{name} look like pixel intensities (all ≥ 0, max {float(x.max()):g}): the digit metrics take model "
            "units x = pixels/8 − 1 in [−1, 1]; convert with fluxmatch.data.digits.from_pixels"
        )
    return x.clamp(-1.0, 1.0)


@torch.no_grad()
def digit_features(images, model: DigitsClassifier | None = None) -> torch.Tensor:
    """(N, 32) float64 penultimate features of the digit classifier.

    Args:
        images: (N, 1, 8, 8), (N, 8, 8) or (N, 64) digits in model units (clipped to [−1, 1]).
        model: the classifier; :func:`digits_classifier` by default.

    Raises:
        FluxMatchError: wrong size, NaN/inf, or pixel-unit input.
    """
    return _features(images, model, "images")


@torch.no_grad()
def _features(images, model: DigitsClassifier | None, name: str) -> torch.Tensor:
    """:func:`digit_features` with ``name`` in its error messages."""
    x = _digit_batch(images, name)
    model = digits_classifier() if model is None else model.eval()
    return torch.cat([model.features(x[i : i + _FEATURE_BATCH]) for i in range(0, x.shape[0], _FEATURE_BATCH)]).double()


def gaussian_frechet_distance(mean_a, cov_a, mean_b, cov_b) -> float:
    """Fréchet (2-Wasserstein²) distance between N(mean_a, cov_a) and N(mean_b, cov_b):

        |m_a − m_b|² + tr Σ_a + tr Σ_b − 2 tr (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}.

    The last trace equals tr (Σ_a Σ_b)^{1/2} of the FID formula, but is the trace of the square
    root of a symmetric PSD matrix: computed from eigenvalues in float64 (negative rounding
    noise clipped to 0), so no complex parts arise. Means (d,), covariances (d, d); the result
    is in squared units of the inputs and is ≥ 0.

    Raises:
        FluxMatchError: shapes that do not fit one d, or NaN/inf entries (named).
    """
    ma, mb = np.asarray(mean_a, dtype=np.float64), np.asarray(mean_b, dtype=np.float64)
    ca, cb = np.asarray(cov_a, dtype=np.float64), np.asarray(cov_b, dtype=np.float64)
    d = ma.shape[0] if ma.ndim == 1 else -1
    if ma.shape != (d,) or mb.shape != (d,) or ca.shape != (d, d) or cb.shape != (d, d):
        raise FluxMatchError(f"means must be (d,) and covariances (d, d) with one d, got {ma.shape}, {ca.shape}, {mb.shape}, {cb.shape}")
    for value, name in ((ma, "mean_a"), (ca, "cov_a"), (mb, "mean_b"), (cb, "cov_b")):
        require_finite(value, name, unit="entry" if value.ndim == 1 else "row")
    ca, cb = (ca + ca.T) / 2, (cb + cb.T) / 2
    values, vectors = np.linalg.eigh(ca)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = root_a @ cb @ root_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    distance = float(np.sum((ma - mb) ** 2) + np.trace(ca) + np.trace(cb) - 2 * cross)
    return max(distance, 0.0)


def _feature_rows(x, name: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise FluxMatchError(f"{name} must be (N, k) features with N ≥ 2, got shape {a.shape}")
    require_finite(a, name)
    return a


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature samples (the FID formula).

    Args:
        feats_a: (N, k) features; feats_b: (M, k). Numpy or torch; N, M ≥ 2.

    Returns:
        :func:`gaussian_frechet_distance` of the sample means and unbiased (N−1) covariances, in
        squared feature units. Biased upwards at finite N, M (compare with a floor at equal size).

    Raises:
        FluxMatchError: not (N, k) with N ≥ 2, different k, or NaN/inf rows.
    """
    a, b = _feature_rows(feats_a, "feats_a"), _feature_rows(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise FluxMatchError(f"the two feature sets have different widths: {a.shape[1]} and {b.shape[1]}")
    return gaussian_frechet_distance(a.mean(0), np.cov(a, rowvar=False).reshape(a.shape[1], a.shape[1]), b.mean(0), np.cov(b, rowvar=False).reshape(b.shape[1], b.shape[1]))


def fd_digits(samples, reference, model: DigitsClassifier | None = None) -> float:
    """FD-digits: :func:`frechet_distance` of :func:`digit_features` of (N, 1, 8, 8) samples and
    (M, 1, 8, 8) reference digits, both in model units; N, M ≥ 2. Lower is better.

    Raises:
        FluxMatchError: wrong size, NaN/inf images (named ``samples`` or ``reference``), or
            pixel-unit input.
    """
    model = digits_classifier() if model is None else model
    return frechet_distance(_features(samples, model, "samples"), _features(reference, model, "reference"))


@torch.no_grad()
def class_coverage(samples, threshold: float = 1 / (2 * N_CLASSES), model: DigitsClassifier | None = None) -> dict:
    """How evenly the samples spread over the 10 digits, judged by the classifier.

    Args:
        samples: (N, 1, 8, 8) digits in model units.
        threshold: a class counts as covered when its share of the predicted labels is at least
            this (default 1/20, half the share of a balanced set).

    Returns:
        ``coverage``: fraction of the 10 classes covered (1.0 for balanced data, 0.1 for one digit);
        ``histogram``: list of the 10 predicted-class shares (sum 1);
        ``entropy``: entropy of that histogram in nats (ln 10 ≈ 2.303 when balanced, 0 for one class).

    Raises:
        FluxMatchError: a threshold outside (0, 1], wrong size, NaN/inf images, or pixel units.
    """
    if not 0 < float(threshold) <= 1:
        raise FluxMatchError(f"threshold must be in (0, 1], got {threshold!r}")
    x = _digit_batch(samples, "samples")
    model = digits_classifier() if model is None else model.eval()
    predicted = torch.cat([model(x[i : i + _FEATURE_BATCH]).argmax(1) for i in range(0, x.shape[0], _FEATURE_BATCH)])
    shares = torch.bincount(predicted, minlength=N_CLASSES).double() / predicted.shape[0]
    nonzero = shares[shares > 0]
    return {
        "coverage": float((shares >= float(threshold)).double().mean()),
        "histogram": shares.tolist(),
        "entropy": float(-(nonzero * nonzero.log()).sum()) + 0.0,  # + 0.0 turns −0.0 into 0.0
    }


def image_metrics(samples, holdout, seed: int = 0, floor_data=None) -> dict:
    """All digit metrics of generated samples against held-out digits.

    The floor is FD-digits between ``n`` real training digits (n = number of samples, drawn
    without replacement with ``seed``; at most the 1438 of the training split) and the same
    ``holdout`` reference. It is what a perfect generator would score: same n, same reference,
    so the same finite-sample bias, and the whole held-out set stays the reference (splitting
    it in halves would halve the reference and change the bias). Training digits are
    independent draws from the data distribution, disjoint from the held-out split.

    Args:
        samples: (N, 1, 8, 8) generated digits in model units (N ≥ 2).
        holdout: (M, 1, 8, 8) held-out digits in model units (e.g. ``DataSource.holdout``).
        seed: seeds the choice of floor digits.
        floor_data: (K, 1, 8, 8) real digits for the floor, default the training split.

    Returns:
        dict with ``fd_digits``, ``fd_digits_floor``, ``floor_n`` (digits used for the floor),
        ``class_coverage``, ``class_histogram``, ``class_entropy`` (nats),
        ``classifier_accuracy`` (held-out accuracy of the feature network), ``n_samples`` and
        ``out_of_range`` (fraction of sample pixels outside [−1, 1], which were clipped).

    Raises:
        FluxMatchError: NaN/inf images in ``samples``, ``holdout`` or ``floor_data`` (named),
            pixel-unit input, fewer than 2 images.
    """
    x = _raw_images(samples, "samples")
    held = _digit_batch(holdout, "holdout")
    real = digits_split().train_images if floor_data is None else _raw_images(floor_data, "floor_data")
    model = digits_classifier()
    n = x.shape[0]
    generator = torch.Generator().manual_seed(int(seed))
    floor_rows = real[torch.randperm(real.shape[0], generator=generator)[: min(n, real.shape[0])]]
    reference = _features(held, model, "holdout")
    coverage = class_coverage(x, model=model)
    return {
        "fd_digits": frechet_distance(digit_features(x, model), reference),
        "fd_digits_floor": frechet_distance(digit_features(floor_rows, model), reference),
        "floor_n": int(floor_rows.shape[0]),
        "class_coverage": coverage["coverage"],
        "class_histogram": coverage["histogram"],
        "class_entropy": coverage["entropy"],
        "classifier_accuracy": model.heldout_accuracy,
        "n_samples": int(n),
        "out_of_range": float(((x < -1) | (x > 1)).double().mean()),
    }


def _raw_images(images, name: str) -> torch.Tensor:
    """Validated (N, 1, 8, 8) images with N ≥ 2, not yet clipped."""
    x = numeric_tensor(images, name, torch.float32)
    _digit_batch(x, name)
    if x.shape[0] < 2:
        raise FluxMatchError(f"{name} must hold at least 2 images for a Fréchet distance, got {x.shape[0]}")
    return x.reshape(x.shape[0], 1, 8, 8)


__all__ = [
    "CLASSIFIER_VERSION",
    "DigitsClassifier",
    "cache_dir",
    "class_coverage",
    "digit_features",
    "digits_classifier",
    "fd_digits",
    "frechet_distance",
    "gaussian_frechet_distance",
    "image_metrics",
]
