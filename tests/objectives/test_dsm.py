"""Denoising score matching: the Tweedie identity and the shared interface."""

import math

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.objectives import DenoisingScoreMatching
from fluxmatch.reference import GaussianMixture


def test_expected_gradient_at_shifted_score_is_2a():
    """Data N(0, τ²I): the DSM minimiser is the score of N(0, (τ² + σ²)I); at f = s_σ + a, E[∂ℓ/∂a] = 2a."""
    torch.manual_seed(0)
    tau, sigma = 0.8, 0.5
    a = torch.nn.Parameter(torch.tensor([0.4, -0.3]))
    field = lambda z, c: -z / (tau**2 + sigma**2) + a  # noqa: E731
    objective = DenoisingScoreMatching(sigma)
    grads = [torch.autograd.grad(objective(field, tau * torch.randn(4096, 2)).loss.mean(), a)[0] for _ in range(20)]
    g = torch.stack(grads)
    se = g.std(0) / math.sqrt(len(grads))
    assert ((g.mean(0) - 2 * a.detach()).abs() < 5 * se).all()


def test_analytic_reference_gives_explicit_score_matching():
    mixture = GaussianMixture(torch.tensor([[1.0, 0.0]]), 0.25)
    out = DenoisingScoreMatching(0.5)(lambda z, c: mixture.score(z), torch.zeros(16, 2), reference=mixture)
    assert out.loss.abs().max() < 1e-8


def test_bad_sigma():
    with pytest.raises(FluxMatchError):
        DenoisingScoreMatching(-0.1)
