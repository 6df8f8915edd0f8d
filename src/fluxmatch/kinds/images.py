"""Images (N, C, H, W): the digits shipped with scikit-learn, your CIFAR-10 or CelebA-64 copy.

Defaults: flux and dsm are noise-annealed with an EDM-preconditioned UNet (``--noise fixed``
trains the same field at one σ, sampled by Langevin dynamics), 6000 steps of 128 images, 1000
evaluation samples, the NLL of 200 held-out images for data with integer pixel units. Samples are
reported in the data's own units (digits: 0..16). Metrics: the data set's feature metrics where
one is registered (:data:`FEATURE_METRICS`; the digits: FD-digits and class coverage in the
feature space of a classifier trained on the training split) and the NLL in bits/dim by the
probability-flow ODE. Plots: a grid of samples and one of held-out images.

CIFAR-10 and CelebA-64 load as an :class:`~fluxmatch.data.images.ImageSource` (uint8 pixels,
converted per batch); ``augment="hflip"`` in the data spec mirrors each drawn training image
left-right with probability 1/2. The digits refuse it: a mirrored digit is not a digit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import AUGMENTATIONS
from ..data import DataSource
from ..data.images import image_source, parse_image_spec
from ..errors import FluxMatchError
from .base import DataKind, Evaluation, format_number

IMAGE_NAMES = ("digits",)


def wants_hflip(data) -> bool:
    """Whether a :class:`~fluxmatch.config.DataSpec` asks for random left-right flips
    (``augment="hflip"``), refusing augmentations the images kind cannot apply to its data."""
    augment = getattr(data, "augment", None)
    if augment is None:
        return False
    if augment not in AUGMENTATIONS:
        raise FluxMatchError(f"unknown augmentation {augment!r}: expected one of {', '.join(AUGMENTATIONS)} (or none)")
    if parse_image_spec(data.spec) is None:
        what = "a mirrored digit is not a digit (2, 3, 7 turn into other shapes)" if data.spec == "digits" else f"{data.spec} is not a cifar10:/celeba64: image set"
        raise FluxMatchError(f"--augment {augment} applies to photographs (cifar10:PATH, celeba64:PATH); {what}, so train on {data.spec} without --augment")
    return True


def _digits_metrics(samples: np.ndarray, held: torch.Tensor, seed: int) -> dict:
    from ..metrics.images import image_metrics

    return image_metrics(samples, held, seed=seed)


#: data set name → metric suite ``(samples, held_out, seed) -> dict`` in model units.
FEATURE_METRICS = {"digits": _digits_metrics}


class Images(DataKind):
    """Images; see the module docstring."""

    name = "images"
    default_noise = "annealed"
    default_family = "unet"
    default_steps = 6000
    default_batch = 128
    default_eval = 1000

    def claims(self, spec: str) -> bool:
        return spec in IMAGE_NAMES or parse_image_spec(spec) is not None

    def load(self, data, seed: int) -> DataSource:
        if parse_image_spec(data.spec) is not None:
            # uint8 pixels converted per batch (fluxmatch.data.images.ImageSource); the images
            # have their own held-out count, so holdout_fraction does not apply to them
            source = image_source(str(data.spec), seed=seed, limit=data.n, hflip=wants_hflip(data))
        else:
            wants_hflip(data)
            source = DataSource.from_spec(data.spec, seed=seed, n=data.n, holdout_fraction=data.holdout_fraction)
        if len(source.dim) != 3:
            raise FluxMatchError(f"image data must have shape (N, C, H, W); {data.spec} has points of shape {source.dim}")
        source.spec = data.spec
        return source

    def validate(self, spec) -> None:
        wants_hflip(spec.data)
        if spec.field.family in ("transformer", "dag"):
            raise FluxMatchError(f"--field {spec.field.family} does not apply to image data: image runs train a UNet (--unet sets its size)")
        if spec.objective.name == "flow":
            raise FluxMatchError("--objective flow applies to points data; image data trains flux or dsm")

    def default_nll(self, spec) -> int:
        return 200

    def to_data_units(self, samples: np.ndarray, data_meta: dict) -> np.ndarray:
        units = data_meta.get("units")
        if not units:
            return samples
        from ..data.digits import to_pixels

        return np.asarray(to_pixels(torch.as_tensor(samples), units), dtype=np.float32)

    def _source(self, ev: Evaluation) -> DataSource:
        if ev.data is not None and ev.data != ev.run.spec.data.spec:
            raise FluxMatchError(f"an image run is evaluated on its own held-out data ({ev.run.spec.data.spec}), not {ev.data}")
        source = ev.source
        return source if source is not None else self.reload(ev.run)

    def evaluation_rows(self, run, data, n: int, seed: int, source=None) -> tuple[torch.Tensor, torch.Tensor]:
        from .points import split_pair

        source = self._source(Evaluation(run, np.empty(0), seed, data=data, source=source))
        return split_pair(source.holdout(2 * n, seed), source.name)

    def metrics(self, ev: Evaluation) -> dict:
        source = self._source(ev)
        held = source.held_out  # an ImageSource converts its uint8 held-out images on each access: read it once
        if held is None:
            held = source.holdout(2000, seed=0)
        result: dict = {}
        suite = FEATURE_METRICS.get(source.name)
        if suite is not None:
            result.update(suite(ev.samples, held, ev.seed))
        nll_n = ev.run.spec.evaluation.nll_n or 0
        if nll_n > 0 and ev.run.conditioning == "sigma" and (ev.run.data_meta.get("units")):
            from ..run.likelihood import nll_bits_per_dim

            result.update(nll_bits_per_dim(ev.run, held[:nll_n], seed=ev.seed))
        return {**result, "n": int(ev.samples.shape[0]), "nfe": ev.nfe}

    def plots(self, ev: Evaluation, out) -> list[str]:
        from ..viz.images import plot_image_grid

        run, out = ev.run, Path(out)
        source = self._source(ev)
        units = run.data_meta.get("units")
        value_range = tuple(units["pixel_range"]) if units else (-1.0, 1.0)
        s = run.spec.sampler
        how = f"{s.method} {s.steps} levels ({ev.nfe} NFE)" if run.conditioning == "sigma" else f"Langevin {s.steps} steps"
        title = f"{run.spec.objective.name} on {source.name}, {run.spec.train.steps} steps, {how}"
        plot_image_grid(out / "samples.png", self.to_data_units(ev.samples[:100], run.data_meta), title=title, value_range=value_range)
        held = source.holdout(100, seed=0).numpy()
        plot_image_grid(out / "data.png", self.to_data_units(held, run.data_meta), title=f"held-out {source.name}", value_range=value_range)
        return ["samples.png", "data.png"]

    def summary(self, metrics: dict) -> list[str]:
        keys = ("fd_digits", "fd_digits_floor", "class_coverage", "nll_bits_per_dim")
        return [f"{key:<18} {format_number(metrics[key])}" for key in keys if key in metrics]


__all__ = ["Images", "FEATURE_METRICS", "wants_hflip"]
