"""Chunked sampling from a run: every sampler path draws in chunks of CHUNK samples, n ≤ CHUNK
is exactly the unchunked draw, and the progress bar counts samples across the chunks."""

import math

import numpy as np
import pytest
import torch

import fluxmatch as fm
from fluxmatch.run import sampling
from fluxmatch.run.run import open_run
from fluxmatch.samplers import edm_sigmas, langevin, prior_sample, probability_flow, reverse_sde, solve_ode

TINY = dict(train=fm.TrainSpec(steps=10, batch_size=64), field=fm.FieldSpec(hidden=(16, 16)), evaluation=fm.EvalSpec(n=20))
OBJECTIVES = {
    "fixed": fm.ObjectiveSpec(name="flux"),
    "annealed": fm.ObjectiveSpec(name="flux", noise="annealed"),
    "flow": fm.ObjectiveSpec(name="flow"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny trained ring run per conditioning: fixed σ (Langevin), noise-annealed, flow."""
    root = tmp_path_factory.mktemp("sampling")
    out = {}
    for name, objective in OBJECTIVES.items():
        spec = fm.RunSpec(data=fm.DataSpec("ring"), objective=objective, sampler=fm.SamplerSpec(steps=5), **TINY)
        fm.train_run(spec, root / name, progress=False)
        out[name] = open_run(root / name)
    return out


def unchunked(run, n, seed, method=None):
    """The draw as it was before chunking: one sampler call on all n samples."""
    s = sampling.sampler_for(run, method=method)
    generator = torch.Generator().manual_seed(seed)
    if run.conditioning == "fixed":
        d = math.prod(run.event_shape)
        mean = torch.as_tensor(run.data_meta.get("mean", [0.0] * d), dtype=torch.float32)
        std = torch.as_tensor(run.data_meta.get("std", [1.0] * d), dtype=torch.float32)
        x0 = (mean + std * torch.randn((n, d), generator=generator)).reshape(n, *run.event_shape)
        return langevin(run.field, x0, s.step_size, s.steps, c=run.sigma, generator=generator).samples.numpy()
    if run.conditioning == "time":
        return solve_ode(run.field, torch.randn((n, *run.event_shape), generator=generator), 0.0, 1.0, s.method, s.steps).samples.numpy()
    sigmas = edm_sigmas(int(s.steps), s.sigma_min, s.sigma_max, s.rho)
    x = prior_sample((n, *run.event_shape), s.sigma_max, generator)
    if s.method == "sde":
        return reverse_sde(run.field, x, sigmas, generator=generator).samples.float().numpy()
    return probability_flow(run.field, x, sigmas, method=s.method).samples.float().numpy()


CASES = [("fixed", None), ("annealed", None), ("annealed", "sde"), ("flow", None), ("flow", "dopri5")]


@pytest.mark.parametrize(("kind", "method"), CASES)
def test_up_to_one_chunk_equals_the_unchunked_draw(runs, monkeypatch, kind, method):
    run = runs[kind]
    s = sampling.sampler_for(run, method=method)
    for n in (1, 37):
        x, _ = sampling.draw(run, n, seed=5, sampler=s)
        assert x.dtype == np.float32 and np.array_equal(x, unchunked(run, n, 5, method))
    monkeypatch.setattr(sampling, "POINT_CHUNK", 37)
    monkeypatch.setattr(sampling, "CHUNK", 37)  # n == CHUNK exactly is still one call
    assert np.array_equal(sampling.draw(run, 37, seed=5, sampler=s)[0], unchunked(run, 37, 5, method))


@pytest.mark.parametrize(("kind", "method"), CASES)
def test_chunked_draws_are_finite_and_deterministic(runs, monkeypatch, kind, method):
    run = runs[kind]
    s = sampling.sampler_for(run, method=method)
    _, nfe_one = sampling.draw(run, 7, seed=2, sampler=s)
    monkeypatch.setattr(sampling, "POINT_CHUNK", 7)
    monkeypatch.setattr(sampling, "CHUNK", 7)
    x, nfe = sampling.draw(run, 30, seed=2, sampler=s)  # chunks of 7, 7, 7, 7 and 2
    assert x.shape == (30, *run.event_shape) and x.dtype == np.float32 and np.isfinite(x).all()
    assert np.array_equal(x, sampling.draw(run, 30, seed=2, sampler=s)[0])
    assert not np.array_equal(x, sampling.draw(run, 30, seed=3, sampler=s)[0])
    # The first chunk takes the generator's first draws, as a one-chunk draw does.
    assert np.array_equal(x[:7], sampling.draw(run, 7, seed=2, sampler=s)[0])
    assert len(np.unique(x.round(6), axis=0)) == 30  # every chunk gets its own noise
    if method != "dopri5":
        assert nfe == nfe_one  # fixed-step samplers: the same evaluations per sample in every chunk


class FakeBar:
    """Stands in for tqdm.auto.tqdm and records how it is used."""

    made = []

    def __init__(self, iterable=None, total=None, **kwargs):
        self.iterable, self.total, self.kwargs, self.count, self.closed = iterable, total, kwargs, 0, False
        FakeBar.made.append(self)

    def __iter__(self):
        return iter(self.iterable)

    def update(self, k):
        self.count += k

    def close(self):
        self.closed = True


@pytest.mark.parametrize("kind", sorted(OBJECTIVES))
def test_one_progress_bar_counts_samples_across_the_chunks(runs, monkeypatch, kind):
    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", FakeBar)
    monkeypatch.setattr(FakeBar, "made", [])
    monkeypatch.setattr(sampling, "POINT_CHUNK", 4)
    monkeypatch.setattr(sampling, "CHUNK", 4)
    reference = sampling.draw(runs[kind], 10, seed=1)[0]
    assert FakeBar.made == []  # no bar unless asked for
    x, _ = sampling.draw(runs[kind], 10, seed=1, progress=True)
    assert np.array_equal(x, reference)  # the bar does not change the samples
    (bar,) = FakeBar.made  # the samplers' own per-step bars are off
    assert bar.total == 10 and bar.count == 10 and bar.closed and bar.kwargs["unit"] == "sample"
    # One chunk: the sampler's own per-step bar, as before chunking.
    monkeypatch.setattr(FakeBar, "made", [])
    sampling.draw(runs[kind], 4, seed=1, progress=True)
    assert len(FakeBar.made) == 1 and FakeBar.made[0].iterable is not None


def test_a_run_samples_on_the_device_it_trained_on_where_there_is_one(runs, monkeypatch):
    from dataclasses import replace

    from fluxmatch.errors import FluxMatchError
    from fluxmatch.run.run import run_device

    run = runs["fixed"]
    assert run_device(run) == torch.device("cpu")
    trained_on_gpu = replace(run, spec=replace(run.spec, train=replace(run.spec.train, device="cuda:1")))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_device(trained_on_gpu) == torch.device("cpu")  # a GPU run opened on a CPU machine
    assert run_device(trained_on_gpu, "cpu") == torch.device("cpu")
    with pytest.raises(FluxMatchError, match="sees no CUDA GPU"):
        run_device(run, "cuda")


def test_sampler_noise_from_a_cpu_generator_is_the_same_on_any_device():
    from fluxmatch.samplers.noise import standard_normal

    a = standard_normal((4, 3), torch.Generator().manual_seed(1))
    b = torch.randn((4, 3), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    meta = standard_normal((4, 3), torch.Generator().manual_seed(1), device="meta")  # drawn on the CPU, then moved
    assert meta.device.type == "meta" and meta.shape == (4, 3)
