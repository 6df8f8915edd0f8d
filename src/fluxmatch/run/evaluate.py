"""Sample and evaluate trained runs (``fluxmatch sample`` and ``fluxmatch evaluate``)."""

from __future__ import annotations

from ..kinds import Evaluation
from ..kinds.base import finite_or_raise
from .artifacts import save_npy
from .directory import check_output_file
from .run import open_run
from .sampling import draw, sampler_for


def sample_run(run, n: int = 2000, seed: int = 0, out=None, label=None, progress: bool = False, **sampler):
    """Draw n samples from a trained run, in the data's own units (digits: 0..16).

    Args:
        run: a run directory or :class:`~fluxmatch.run.Run`.
        n: number of samples.
        seed: seeds the initial points and the noise.
        out: if given, save the samples there as ``.npy``.
        label: class of a class-conditional run (default: every class equally often).
        progress: show a progress bar.
        sampler: overrides of the run's sampler (:class:`~fluxmatch.config.SamplerSpec` fields:
            ``method``, ``steps``, ``step_size``, ``guidance``, ``sigma_min``, ``sigma_max``, ``rho``).

    Returns:
        (n, *event_shape) float32 array. Raises FluxMatchError for a bad run directory, a setting
        that does not apply to the run, or a diverged sampler.
    """
    if out is not None:
        check_output_file(out)
    run = open_run(run)
    samples, _ = draw(run, n, seed, sampler_for(run, **sampler), label, progress)
    finite_or_raise(samples, f"run {run.run_dir}")
    samples = run.kind.to_data_units(samples, run.data_meta)
    if out is not None:
        save_npy(out, samples)
    return samples


def evaluate_run(run, data=None, n: int = 2000, seed: int = 0, progress: bool = False, **sampler) -> dict:
    """Sample a trained run and measure the samples with its data kind's metric suite.

    Args:
        run: a run directory or :class:`~fluxmatch.run.Run`.
        data: points runs: a toy name or file to compare with (default: the run's own held-out
            data; another file is subsampled). Image runs are evaluated on their own data.
        n: number of samples (and of evaluation points).
        seed: seeds sampling and the evaluation subsets.
        progress: show a progress bar while sampling.
        sampler: overrides of the run's sampler, as in :func:`sample_run`.

    Returns:
        The kind's metrics (points: w2, sliced_w2, mmd, energy, their floor_*, mean_abs_curl;
        images: FD-digits and class coverage for the digits, NLL in bits/dim), ``n`` and ``nfe``.
    """
    run = open_run(run)
    settings = sampler_for(run, **sampler)
    # the data first (a changed file, points of another shape, too few rows): refused before any sampling
    source = run.kind.reload(run) if data is None else None
    run.kind.evaluation_rows(run, data, min(n, 8), seed, source)
    samples, nfe = draw(run, n, seed, settings, progress=progress)
    finite_or_raise(samples, f"run {run.run_dir}")
    return {**run.kind.metrics(Evaluation(run, samples, seed, data=data, nfe=nfe, source=source)), "n": int(samples.shape[0]), "nfe": nfe}


def evaluation_pair(run, n: int, seed: int = 0, data=None):
    """(held, reference): two disjoint samples of up to n rows of data the run never trained on
    (its data kind's held-out split or fresh draws), as its metrics use them."""
    run = open_run(run)
    return run.kind.evaluation_rows(run, data, n, seed)
