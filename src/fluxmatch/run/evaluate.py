"""Sample and evaluate trained runs (``fluxmatch sample`` and ``fluxmatch evaluate``)."""

from __future__ import annotations

import numpy as np

from ..errors import FluxMatchError, check_integer
from ..kinds import Evaluation
from ..kinds.base import finite_or_raise
from .artifacts import save_npy
from .directory import check_output_file
from .run import open_run
from .sampling import draw, sampler_for


def sample_run(run, n: int = 2000, seed: int = 0, out=None, label=None, progress: bool = False, device: str | None = None, **sampler):
    """Draw n samples from a trained run, in the data's own units (digits: 0..16).

    Args:
        run: a run directory or :class:`~fluxmatch.run.Run`.
        n: number of samples.
        seed: seeds the initial points and the noise.
        out: if given, save the samples there as ``.npy``.
        label: class of a class-conditional run (default: every class equally often).
        progress: show a progress bar.
        device: where the field runs (default: the device the run trained on, when this machine
            has it, else the CPU; see :func:`~fluxmatch.run.run.run_device`).
        sampler: overrides of the run's sampler (:class:`~fluxmatch.config.SamplerSpec` fields:
            ``method``, ``steps``, ``step_size``, ``guidance``, ``sigma_min``, ``sigma_max``, ``rho``).

    Returns:
        (n, *event_shape) float32 array. Raises FluxMatchError for a bad run directory, a setting
        that does not apply to the run, or a diverged sampler.
    """
    if out is not None:
        check_output_file(out)
    run = open_run(run)
    samples, _ = draw(run, n, seed, sampler_for(run, **sampler), label, progress, device=device)
    finite_or_raise(samples, f"run {run.run_dir}")
    samples = run.kind.to_data_units(samples, run.data_meta)
    if out is not None:
        save_npy(out, samples)
    return samples


def evaluate_run(run, data=None, n: int = 2000, seed: int = 0, progress: bool = False, *, fidelity=None, fid_n: int | None = None, device: str | None = None, **sampler) -> dict:
    """Sample a trained run and measure the samples with its data kind's metric suite.

    Args:
        run: a run directory or :class:`~fluxmatch.run.Run`.
        data: points runs: a toy name or file to compare with (default: the run's own held-out
            data; another file is subsampled). Image runs are evaluated on their own data.
        n: number of samples (and of evaluation points).
        seed: seeds sampling and the evaluation subsets.
        progress: show a progress bar while sampling.
        fidelity: image runs: a :class:`~fluxmatch.metrics.fidelity.FidelityConfig` to add FID,
            Inception Score (and precision/recall) of the samples with torch-fidelity's InceptionV3.
        fid_n: samples for those metrics (default: the n samples drawn for the others; another
            number draws its own, with the same seed).
        device: where sampling and the NLL run, as in :func:`sample_run`.
        sampler: overrides of the run's sampler, as in :func:`sample_run`.

    Returns:
        The kind's metrics (points: w2, sliced_w2, mmd, energy, their floor_*, mean_abs_curl;
        images: FD-digits and class coverage for the digits, NLL in bits/dim), ``n`` and ``nfe``;
        with ``fidelity``, ``fid``, ``inception_score_mean``, ``inception_score_std``,
        ``inception_score_splits`` (``precision``, ``recall``) and ``fid_n``.
    """
    run = open_run(run)
    settings = sampler_for(run, **sampler)
    reference = None if fidelity is None else _check_fidelity(run, fidelity, fid_n)  # like the data below: refused before any sampling
    # the data first (a changed file, points of another shape, too few rows): refused before any sampling
    source = run.kind.reload(run) if data is None else None
    run.kind.evaluation_rows(run, data, min(n, 8), seed, source)
    samples, nfe = draw(run, n, seed, settings, progress=progress, device=device)
    finite_or_raise(samples, f"run {run.run_dir}")
    metrics = {**run.kind.metrics(Evaluation(run, samples, seed, data=data, nfe=nfe, source=source)), "n": int(samples.shape[0]), "nfe": nfe}
    if fidelity is not None:
        if fid_n is not None and fid_n != n:
            samples, _ = draw(run, fid_n, seed, settings, progress=progress)
            finite_or_raise(samples, f"run {run.run_dir}")
        metrics.update(_fidelity_metrics(run, samples, fidelity, reference, progress))
    return metrics


def _check_fidelity(run, fidelity, fid_n) -> dict | None:
    """Refuse FID settings that cannot work, before any sampling: a non-image run, a bad fid_n,
    missing torch-fidelity, a bad weights or reference file. Returns the loaded reference."""
    from ..metrics.fidelity import check_fidelity

    if run.kind.name != "images":
        raise FluxMatchError(f"FID and Inception Score are for image runs; {run.run_dir} is a {run.kind.name} run")
    if fid_n is not None:
        check_integer(fid_n, "--fid-n", minimum=2)
    return check_fidelity(fidelity)


def uint8_pixels(run, samples: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8 pixels 0..255 of an image run's samples in model units: the data's own
    units (:meth:`~fluxmatch.kinds.DataKind.to_data_units`, e.g. digits 0..16) stretched from the
    run's pixel range to 0..255 (model units x ∈ [−1, 1] for a run that stores no units)."""
    units = run.data_meta.get("units")
    pixels = run.kind.to_data_units(samples, run.data_meta)
    lo, hi = (float(v) for v in units["pixel_range"]) if units else (-1.0, 1.0)
    return np.clip(np.rint((np.asarray(pixels, dtype=np.float64) - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _fidelity_metrics(run, samples: np.ndarray, fidelity, reference: dict | None, progress: bool) -> dict:
    from ..metrics.fidelity import measure_fidelity

    return {**measure_fidelity(uint8_pixels(run, samples), fidelity, reference, progress=progress), "fid_n": int(samples.shape[0])}


def evaluation_pair(run, n: int, seed: int = 0, data=None):
    """(held, reference): two disjoint samples of up to n rows of data the run never trained on
    (its data kind's held-out split or fresh draws), as its metrics use them."""
    run = open_run(run)
    return run.kind.evaluation_rows(run, data, n, seed)
