"""FID, Inception Score and precision/recall of uint8 images with torch-fidelity's InceptionV3.

The features are torch-fidelity's TensorFlow-compatible InceptionV3 (``inception-v3-compat``):
the 2048 pooled features for FID and precision/recall, the 1008 unbiased logits for the
Inception Score. The numbers come from torch-fidelity's own routines
(``fid_features_to_statistics``, ``fid_statistics_to_metric``, ``isc_features_to_metric``,
``calculate_precision_recall_part``); this module only feeds them.

Nothing is downloaded: the weights are a local file (:data:`INCEPTION_WEIGHTS_FILE`, fetched by
the user from :data:`INCEPTION_WEIGHTS_URL`), and the reference is a local ``.npz`` of
statistics (``mu`` (2048,), ``sigma`` (2048, 2048): pytorch-fid's and torch-fidelity's key
names) or a ``.npy``/``.npz`` uint8 image array (N, 3, H, W) or (N, H, W, 3). torch-fidelity is
an optional dependency (``pip install 'fluxmatch[fid]'``), imported only when a function here
needs it. See docs/image_metrics.md.
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import FluxMatchError, check_integer

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_FILE}"
FEATURE_EXTRACTOR = "inception-v3-compat"
FEATURES = ("2048", "logits_unbiased")  # torch-fidelity's names of the layers read
POOL_DIM, LOGITS_DIM = 2048, 1008
PR_NEIGHBORHOOD = 3  # torch-fidelity's default k of the k-NN balls of precision/recall
FIDELITY_INSTALL = "pip install 'fluxmatch[fid]'"


@dataclass(frozen=True)
class FidelityConfig:
    """Settings of :func:`image_fidelity`.

    Attributes:
        inception_weights: path of torch-fidelity's InceptionV3 weights (:data:`INCEPTION_WEIGHTS_FILE`).
        fid_reference: ``.npz`` statistics or ``.npy``/``.npz`` uint8 images to compare with
            (None: no FID, only the Inception Score).
        batch_size: images per Inception forward pass.
        device: torch device of the Inception network.
        isc_splits: splits of the Inception Score (at most the number of samples are used).
        precision_recall: also report precision and recall (needs a reference image array).
    """

    inception_weights: str | os.PathLike
    fid_reference: str | os.PathLike | None = None
    batch_size: int = 64
    device: str = "cpu"
    isc_splits: int = 10
    precision_recall: bool = False

    def __post_init__(self):
        check_integer(self.batch_size, "batch_size")
        check_integer(self.isc_splits, "isc_splits")
        if self.precision_recall and self.fid_reference is None:
            raise FluxMatchError("precision and recall need a reference image array (fid_reference)")


def require_fidelity():
    """Import and return the ``torch_fidelity`` module, or raise FluxMatchError saying what is
    missing: torch-fidelity itself (install ``fluxmatch[fid]``) or a torchvision that imports."""
    try:
        import torch_fidelity
    except Exception as err:  # a torchvision built for another torch fails with RuntimeError, not only ImportError
        name = getattr(err, "name", None) or ""
        if isinstance(err, ImportError) and name.split(".")[0] == "torch_fidelity":
            raise FluxMatchError(f"FID and Inception Score need torch-fidelity, which is not installed: {FIDELITY_INSTALL}") from None
        problem = _torchvision_problem()
        if problem is not None:
            raise FluxMatchError(
                f"torch-fidelity needs torchvision, which fails to import ({problem}): install the torchvision "
                f"release built for your torch {torch.__version__} (pip install torchvision==<the matching version>), then {FIDELITY_INSTALL}"
            ) from None
        raise FluxMatchError(f"torch-fidelity fails to import ({type(err).__name__}: {err}); reinstall it: {FIDELITY_INSTALL}") from None
    return torch_fidelity


def _torchvision_problem() -> str | None:
    try:
        import torchvision  # noqa: F401
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


def _check_weights(path) -> Path:
    """The weights path as a Path, after checking that it is a file torch can read safely and
    that it holds an InceptionV3 state dict (read memory-mapped: cheap)."""
    hint = f"download {INCEPTION_WEIGHTS_FILE} from {INCEPTION_WEIGHTS_URL} on a machine with internet and pass its path"
    if path is None:
        raise FluxMatchError(f"no Inception weights file given: {hint}")
    path = Path(path)
    if not path.exists():
        raise FluxMatchError(f"Inception weights {path} do not exist: {hint}")
    if not path.is_file():
        raise FluxMatchError(f"Inception weights {path} is not a file: {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise FluxMatchError(f"Inception weights {path} cannot be loaded by torch ({type(err).__name__}): expected torch-fidelity's {INCEPTION_WEIGHTS_FILE}") from None
    fc = state.get("fc.weight") if isinstance(state, dict) else None
    if not isinstance(fc, torch.Tensor) or tuple(fc.shape) != (LOGITS_DIM, POOL_DIM):
        raise FluxMatchError(f"Inception weights {path} are not torch-fidelity's InceptionV3 weights (no fc.weight of shape ({LOGITS_DIM}, {POOL_DIM})): expected {INCEPTION_WEIGHTS_FILE}")
    return path


def inception_network(config: FidelityConfig) -> torch.nn.Module:
    """torch-fidelity's InceptionV3 with the config's weights, on ``config.device``, in eval mode;
    its forward maps uint8 (B, 3, H, W) images to (pool (B, 2048), logits_unbiased (B, 1008))."""
    path = _check_weights(config.inception_weights)
    require_fidelity()
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    try:
        network = FeatureExtractorInceptionV3(FEATURE_EXTRACTOR, list(FEATURES), feature_extractor_weights_path=str(path))
    except Exception as err:
        raise FluxMatchError(f"Inception weights {path} do not fit torch-fidelity's InceptionV3 ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    try:
        return network.to(torch.device(config.device))
    except (RuntimeError, TypeError) as err:
        raise FluxMatchError(f"device {config.device!r} is not usable: {err}") from None


def as_uint8_images(images, what: str = "the images") -> torch.Tensor:
    """uint8 (N, 3, H, W) tensor of a uint8 array or tensor (N, C, H, W) or (N, H, W, C) with
    C = 3 or 1 (grey images are repeated over the three channels), N ≥ 2."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise FluxMatchError(f"{what} must be a uint8 array of pixels 0..255, got {getattr(images, 'dtype', type(images).__name__)}")
    if images.dim() != 4 or (images.shape[1] not in (1, 3) and images.shape[-1] not in (1, 3)):
        raise FluxMatchError(f"{what} must have shape (N, 3, H, W) or (N, H, W, 3) (or one grey channel), got {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2)
    if images.shape[0] < 2:
        raise FluxMatchError(f"{what}: image statistics need at least 2 images, got {images.shape[0]}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _features(network, images: torch.Tensor, config: FidelityConfig, progress: bool, what: str) -> dict:
    from tqdm.auto import tqdm

    device = next(network.parameters()).device
    parts = {name: [] for name in FEATURES}
    with torch.no_grad(), tqdm(total=int(images.shape[0]), desc=f"Inception features of {what}", unit="img", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, images.shape[0], config.batch_size):
            chunk = images[start : start + config.batch_size].contiguous().to(device)
            for name, value in zip(FEATURES, network(chunk)):
                parts[name].append(value.cpu().numpy().astype(np.float32))
            bar.update(int(chunk.shape[0]))
    return {"pool": np.concatenate(parts["2048"]), "logits_unbiased": np.concatenate(parts["logits_unbiased"])}


def inception_features(images, config: FidelityConfig, progress: bool = True) -> dict:
    """InceptionV3 features of uint8 images, in batches of ``config.batch_size``.

    Args:
        images: uint8 (N, 3, H, W) tensor (or array; (N, H, W, 3) and one grey channel accepted),
            any H, W (the network resizes to 299 × 299).
        config: the weights, device and batch size.
        progress: show a tqdm bar on stderr.

    Returns:
        ``{"pool": (N, 2048) float32, "logits_unbiased": (N, 1008) float32}`` numpy arrays.
    """
    images = as_uint8_images(images)
    return _features(inception_network(config), images, config, progress, f"{images.shape[0]} images")


def _statistics(pool: np.ndarray) -> dict:
    from torch_fidelity.metric_fid import fid_features_to_statistics

    stats = fid_features_to_statistics(torch.from_numpy(np.asarray(pool, dtype=np.float32)))
    return {"mu": np.asarray(stats["mu"], dtype=np.float64), "sigma": np.asarray(stats["sigma"], dtype=np.float64)}


def _check_reference_path(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FluxMatchError(f"FID reference {path} does not exist: give an .npz of statistics (mu, sigma) or an .npy/.npz uint8 image array")
    if not path.is_file():
        raise FluxMatchError(f"FID reference {path} is not a file")
    if path.suffix.lower() not in (".npz", ".npy"):
        raise FluxMatchError(f"FID reference {path} must be an .npz of statistics (mu, sigma) or an .npy/.npz uint8 image array, not {path.suffix or 'a file without suffix'}")
    return path


def load_reference(path) -> dict:
    """The FID reference at ``path``: ``{"mu": (2048,), "sigma": (2048, 2048)}`` float64 for a
    statistics ``.npz``, or ``{"images": uint8 (N, 3, H, W) tensor}`` for an image array (``.npy``,
    or an ``.npz`` holding one array). Raises FluxMatchError naming the path otherwise."""
    path = _check_reference_path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        arrays = {name: loaded[name] for name in loaded.files} if isinstance(loaded, np.lib.npyio.NpzFile) else {"images": loaded}
    except Exception as err:
        raise FluxMatchError(f"FID reference {path} cannot be read as numpy data ({type(err).__name__}: {err})") from None
    if "mu" in arrays or "sigma" in arrays:
        mu, sigma = arrays.get("mu"), arrays.get("sigma")
        if mu is None or sigma is None or mu.shape != (POOL_DIM,) or sigma.shape != (POOL_DIM, POOL_DIM):
            shapes = {k: tuple(v.shape) for k, v in arrays.items() if k in ("mu", "sigma")}
            raise FluxMatchError(f"FID reference {path} must hold mu ({POOL_DIM},) and sigma ({POOL_DIM}, {POOL_DIM}) of the Inception pool features, got {shapes}")
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise FluxMatchError(f"FID reference {path}: mu and sigma must be finite")
        return {"mu": mu.astype(np.float64), "sigma": sigma.astype(np.float64)}
    if len(arrays) != 1:
        raise FluxMatchError(f"FID reference {path} holds {sorted(arrays)}: expected mu and sigma, or a single uint8 image array")
    return {"images": as_uint8_images(next(iter(arrays.values())), f"FID reference {path}")}


def check_fidelity(config: FidelityConfig) -> dict | None:
    """Every check :func:`image_fidelity` makes before computing features (the weights file, the
    reference file, then that torch-fidelity imports), so that a caller can refuse bad input before it
    samples. Returns the loaded reference (see :func:`load_reference`) or None."""
    _check_weights(config.inception_weights)
    reference = None if config.fid_reference is None else load_reference(config.fid_reference)
    if config.precision_recall and (reference is None or "images" not in reference):
        raise FluxMatchError(f"precision and recall need a reference image array, and {config.fid_reference} holds statistics (mu, sigma)")
    require_fidelity()
    return reference


def fidelity_from_features(features: dict, reference: dict | None, config: FidelityConfig) -> dict:
    """The metrics of sample features (as :func:`inception_features` returns them) against a
    reference: statistics ``{"mu", "sigma"}``, reference features ``{"pool", ...}``, or None
    (Inception Score only).

    Returns:
        ``inception_score_mean``, ``inception_score_std`` over ``inception_score_splits`` =
        min(isc_splits, N // 2) splits (each of ≥ 2 images),
        ``fid`` with a reference, and ``precision``, ``recall`` when ``config.precision_recall``
        and the reference is features (k = 3 nearest neighbours: both sets need ≥ 5 images).
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    logits = torch.from_numpy(np.asarray(features["logits_unbiased"], dtype=np.float32))
    splits = min(config.isc_splits, max(1, logits.shape[0] // 2))  # every split holds ≥ 2 images
    isc = isc_features_to_metric(logits, splits=splits)
    result = {"inception_score_mean": isc[KEY_METRIC_ISC_MEAN], "inception_score_std": isc[KEY_METRIC_ISC_STD], "inception_score_splits": splits}
    if reference is None:
        return result
    stats = reference if "mu" in reference else _statistics(reference["pool"])
    result["fid"] = float(fid_statistics_to_metric(_statistics(features["pool"]), stats, verbose=False)[KEY_METRIC_FID])
    if config.precision_recall and "pool" in reference:
        result.update(_precision_recall(features["pool"], reference["pool"]))
    return result


def _precision_recall(samples: np.ndarray, reference: np.ndarray) -> dict:
    from torch_fidelity.metric_prc import calculate_precision_recall_part

    if min(len(samples), len(reference)) <= PR_NEIGHBORHOOD + 1:
        raise FluxMatchError(f"precision and recall need more than {PR_NEIGHBORHOOD + 1} samples and reference images, got {len(samples)} and {len(reference)}")
    precision, recall = calculate_precision_recall_part(torch.from_numpy(samples), torch.from_numpy(reference), neighborhood=PR_NEIGHBORHOOD)
    return {"precision": float(precision), "recall": float(recall)}


def image_fidelity(samples_uint8, config: FidelityConfig, progress: bool = True) -> dict:
    """FID, Inception Score and (optionally) precision/recall of uint8 samples.

    Args:
        samples_uint8: uint8 (N, 3, H, W) images (see :func:`as_uint8_images`), N ≥ 2.
        config: weights, reference and settings (:class:`FidelityConfig`).
        progress: show tqdm bars while computing Inception features.

    Returns:
        ``fid`` (with a reference), ``inception_score_mean``, ``inception_score_std``,
        ``precision`` and ``recall`` (with ``precision_recall`` and a reference image array),
        as floats; see :func:`fidelity_from_features`.
    """
    return measure_fidelity(samples_uint8, config, check_fidelity(config), progress)


def measure_fidelity(samples_uint8, config: FidelityConfig, reference: dict | None, progress: bool = True) -> dict:
    """:func:`image_fidelity` against the reference :func:`check_fidelity` already loaded for
    ``config`` (so that a caller who checked before sampling reads the reference once)."""
    samples = as_uint8_images(samples_uint8, "the samples")
    network = inception_network(config)
    features = _features(network, samples, config, progress, f"{samples.shape[0]} samples")
    if reference is not None and "images" in reference:
        reference = _features(network, reference["images"], config, progress, f"{reference['images'].shape[0]} reference images")
    return fidelity_from_features(features, reference, config)


def save_reference_statistics(images_uint8, config_or_weights, out_path, overwrite: bool = False, progress: bool = True) -> Path:
    """Write FID reference statistics of uint8 images to an ``.npz`` (pytorch-fid's format).

    Args:
        images_uint8: uint8 (N, 3, H, W) (or (N, H, W, 3)) images, N ≥ 2 (use thousands for a
            meaningful FID: 10,000 or 50,000 are usual).
        config_or_weights: a :class:`FidelityConfig` or the path of the Inception weights.
        out_path: the ``.npz`` to write (atomically), holding ``mu`` (2048,), ``sigma``
            (2048, 2048) float64 and ``n`` (the number of images).
        overwrite: replace an existing file (refused otherwise).
        progress: show a tqdm bar.

    Returns:
        ``out_path`` as a Path.
    """
    from ..train.checkpoint import atomic_write_bytes

    config = config_or_weights if isinstance(config_or_weights, FidelityConfig) else FidelityConfig(config_or_weights)
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".npz":
        raise FluxMatchError(f"reference statistics are written to an .npz file, not {out_path}")
    if out_path.exists() and not overwrite:
        raise FluxMatchError(f"{out_path} exists: pass overwrite=True to replace it")
    images = as_uint8_images(images_uint8)
    stats = _statistics(inception_features(images, config, progress)["pool"])
    buffer = io.BytesIO()
    np.savez(buffer, mu=stats["mu"], sigma=stats["sigma"], n=np.int64(images.shape[0]))
    atomic_write_bytes(out_path, buffer.getvalue())
    return out_path


__all__ = [
    "FidelityConfig",
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_URL",
    "require_fidelity",
    "check_fidelity",
    "inception_network",
    "inception_features",
    "load_reference",
    "fidelity_from_features",
    "image_fidelity",
    "save_reference_statistics",
    "as_uint8_images",
]
