"""Langevin sampling with exact scores and exact stationary fields."""

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.metrics.samples import wasserstein2
from fluxmatch.reference import GaussianMixture
from fluxmatch.samplers import langevin

MIXTURE = GaussianMixture(
    torch.tensor([[-1.5, 0.0], [1.5, 0.5], [0.0, -1.5]]), torch.tensor([0.35, 0.5, 0.3]), torch.tensor([0.3, 0.3, 0.4])
)
ROTATION = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])


@pytest.mark.parametrize("rotate", [False, True])
def test_exact_score_reaches_the_data_floor(rotate):
    """Langevin with s (or the non-reversible (I + J)s) lands within 1.3× the data-vs-data W2."""
    gen = torch.Generator().manual_seed(0)
    n = 1000
    field = (lambda x, c: MIXTURE.score(x) @ (torch.eye(2) + ROTATION).T) if rotate else (lambda x, c: MIXTURE.score(x))
    samples = langevin(field, 3 * torch.randn(n, 2, generator=gen), step_size=0.01, n_steps=1500, generator=gen).samples
    data, other = MIXTURE.sample(n, gen), MIXTURE.sample(n, gen)
    floor = wasserstein2(data, other)
    assert wasserstein2(samples, data) < 1.3 * floor


def test_trajectory_recording_and_reproducibility():
    x0 = torch.zeros(10, 2)
    a = langevin(lambda x, c: -x, x0, 0.1, 25, record_every=10, generator=torch.Generator().manual_seed(1))
    b = langevin(lambda x, c: -x, x0, 0.1, 25, record_every=10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.samples, b.samples)
    assert a.trajectory.shape == (4, 10, 2) and a.steps.tolist() == [0, 10, 20, 25]
    assert torch.equal(a.trajectory[-1], a.samples)


def test_ornstein_uhlenbeck_variance():
    """f = −x/v: the stationary variance of the discretised chain is v/(1 − ε/(2v)) (exact for Euler-Maruyama)."""
    gen = torch.Generator().manual_seed(2)
    v, eps = 0.5, 0.05
    out = langevin(lambda x, c: -x / v, torch.zeros(20000, 1), eps, 400, generator=gen).samples
    expected = v / (1 - eps / (2 * v))
    assert abs(float(out.var()) - expected) < 5 * expected * (2 / 20000) ** 0.5


def test_bad_arguments():
    with pytest.raises(FluxMatchError, match="step size"):
        langevin(lambda x, c: x, torch.zeros(2, 2), step_size=0.0)
    with pytest.raises(FluxMatchError, match="shape"):
        langevin(lambda x, c: x[:, :1], torch.zeros(2, 2), n_steps=1)
