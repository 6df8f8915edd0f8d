"""Field diagnostics against closed forms: skewness, the stationarity residual, the score/flux split."""

import math

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import MLPField
from fluxmatch.fields.analytic import NonreversibleScore
from fluxmatch.metrics import ScoreFluxSplit, antisymmetric_jacobian_norm, curl_2d, residual_stats, score_flux_split
from fluxmatch.reference import GaussianMixture

GAUSSIAN = GaussianMixture(torch.tensor([[0.5, -0.5]]), 0.5)


def test_skewness_of_linear_fields():
    points = torch.randn(64, 3)
    A = torch.tensor([[0.0, 2.0, 0.0], [-2.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    S = torch.tensor([[1.0, 0.5, 0.0], [0.5, 2.0, 0.0], [0.0, 0.0, -1.0]])
    # f = (S + A)x: ½(J − Jᵀ) = A, ‖A‖_F = √(2·(4 + 1)) = √10 at every point
    assert math.isclose(antisymmetric_jacobian_norm(lambda x, c: x @ (S + A).T, points), math.sqrt(10), rel_tol=1e-5)
    assert antisymmetric_jacobian_norm(lambda x, c: x @ S.T, points) < 1e-6
    # in 2-D: the rotation field (−y, x) has curl 2 everywhere and skew norm |curl|/√2 = √2
    rotation = lambda x, c: torch.stack([-x[:, 1], x[:, 0]], 1)  # noqa: E731
    assert torch.allclose(curl_2d(rotation, torch.randn(10, 2)), torch.full((10,), 2.0))
    assert math.isclose(antisymmetric_jacobian_norm(rotation, torch.randn(10, 2)), math.sqrt(2), rel_tol=1e-6)


def test_residual_of_a_non_stationary_field_has_its_closed_form():
    """f = s + a on N(μ, vI): u = a, r = ∇·a + a·s = −a·(x − μ)/v (mean 0 under p, RMS |a|/√v)."""
    a = torch.tensor([0.3, -0.1])
    x = GAUSSIAN.sample(500, torch.Generator().manual_seed(0))
    stats = residual_stats(lambda z, c: (GAUSSIAN.means[0] - z) / 0.5 + a, GAUSSIAN, x)
    expected = -(x - GAUSSIAN.means[0]) @ a / 0.5
    assert math.isclose(stats["rms"], float(expected.square().mean().sqrt()), rel_tol=1e-4)
    assert math.isclose(stats["mean"], float(expected.mean()), abs_tol=1e-5)
    assert math.isclose(stats["max_abs"], float(expected.abs().max()), rel_tol=1e-4)


def test_residual_of_a_float32_network_against_a_float64_density():
    torch.manual_seed(0)
    mixture = GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64), 0.2)
    stats = residual_stats(MLPField(2, (16,)), mixture, mixture.sample(100))
    assert math.isfinite(stats["rms"]) and stats["rms"] > 0.1  # an untrained field is far from stationary


def test_score_flux_split_separates_gradient_and_flux():
    a = torch.tensor([0.6, -0.3])
    gradient = score_flux_split(lambda z, c: GAUSSIAN.score(z) + a, GAUSSIAN, n=512, steps=300)
    assert isinstance(gradient, ScoreFluxSplit) and gradient.fit_steps == 300
    # all gradient: u = a = ∇(a·x), E|∇φ|² = |a|² = 0.45, E|w|² = 0. The fisher value is exact (u is
    # constant); the two parts carry the fit error of g, ~1e-3 after 300 steps (measured 3e-4)
    assert abs(gradient.fisher - 0.45) < 1e-4
    assert abs(gradient.gradient_part - 0.45) < 0.02 and gradient.flux_part < 0.01
    flux = score_flux_split(NonreversibleScore(GAUSSIAN, [[0.0, 1.0], [-1.0, 0.0]]), GAUSSIAN, n=512, steps=300)
    # all flux: u = Js, E|∇φ|² = 0, E|w|² = E|Js|² = E|s|² = d/v = 4. fisher is a mean over 2048 draws
    # of |s|² = χ²_2/v, whose standard deviation is 4: standard error 4/√2048 ≈ 0.09; allow 3
    assert abs(flux.fisher - 4.0) < 0.3
    assert flux.gradient_part < 0.02 and abs(flux.flux_part - flux.fisher) < 0.03


def test_score_flux_split_leaves_the_global_rng_alone_and_checks_inputs():
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    score_flux_split(lambda z, c: GAUSSIAN.score(z), GAUSSIAN, n=16, steps=1)
    assert torch.equal(torch.rand(1), before)
    with pytest.raises(FluxMatchError, match="fitting step"):
        score_flux_split(lambda z, c: z, GAUSSIAN, steps=0)
    with pytest.raises(FluxMatchError, match="same shape"):
        score_flux_split(lambda z, c: z[:, :1], GAUSSIAN, n=16, steps=1)
