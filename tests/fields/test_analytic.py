"""Exact stationary fields (MATH.md §1): residual 0, flux-objective gradient 0, known flux part."""

import math

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields.analytic import AntisymmetricFlux, BumpRotation, NonreversibleScore, matrix_divergence
from fluxmatch.metrics import residual_stats
from fluxmatch.objectives import FluxMatching
from fluxmatch.reference import GaussianMixture

MIXTURE = GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.5], [0.0, -1.0]], dtype=torch.float64), torch.tensor([0.3, 0.2, 0.4], dtype=torch.float64))
J = [[0.0, 1.5], [-1.5, 0.0]]
MIXTURE_3D = GaussianMixture(torch.tensor([[1.0, 0.0, 0.5], [-1.0, 0.5, 0.0]], dtype=torch.float64), 0.5)
J3 = torch.tensor([[0.0, 1.0, 2.0], [-1.0, 0.0, 3.0], [-2.0, -3.0, 0.0]], dtype=torch.float64)


def wavy(x):
    """A non-constant antisymmetric matrix field in 3-D: A(x) = sin(x₁)·x₃·J3."""
    return (torch.sin(x[:, 0]) * x[:, 2])[:, None, None] * J3.to(x.dtype)


FIELDS = [
    (NonreversibleScore(MIXTURE, J), MIXTURE),
    (AntisymmetricFlux(MIXTURE), MIXTURE),
    (AntisymmetricFlux(MIXTURE, BumpRotation(MIXTURE.means, length=0.7, strength=3.0)), MIXTURE),
    (AntisymmetricFlux(MIXTURE_3D, wavy), MIXTURE_3D),
    (NonreversibleScore(MIXTURE_3D, J3), MIXTURE_3D),
]


@pytest.mark.parametrize("field, density", FIELDS)
def test_analytic_fields_are_exactly_stationary(field, density):
    x = density.sample(400, torch.Generator().manual_seed(0))
    assert residual_stats(field, density, x)["max_abs"] < 1e-10  # float64 round-off only (|r| terms are O(10))
    assert (field(x) - density.score(x)).norm(dim=1).mean() > 0.1  # and they are not the score
    # the control: adding a constant drift breaks stationarity by r = a·s, O(1) here
    shifted = lambda z, c: field(z) + 0.3  # noqa: E731
    assert residual_stats(shifted, density, x)["rms"] > 0.1


def test_bump_rotation_flux_has_its_closed_form():
    """A = a(x)J: ∇·A = J∇a, so u = J(∇a + a s) with ∇a = −a (x − c)/ℓ² for one bump at c."""
    bump = BumpRotation(torch.tensor([[0.5, -0.2]]), length=0.8, strength=2.0)
    x = MIXTURE.sample(50, torch.Generator().manual_seed(1))
    amp = bump.amplitude(x)
    grad_amp = -amp[:, None] * (x - torch.tensor([0.5, -0.2], dtype=torch.float64)) / 0.8**2
    Jb = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(matrix_divergence(bump, x), grad_amp @ Jb.T, atol=1e-12)
    u = AntisymmetricFlux(MIXTURE, bump).flux(x)
    assert torch.allclose(u, (grad_amp + amp[:, None] * MIXTURE.score(x)) @ Jb.T, atol=1e-12)


def test_sigma_is_ignored_unless_smoothing_is_asked_for():
    x = MIXTURE.sample(50, torch.Generator().manual_seed(2))
    plain, smooth = NonreversibleScore(MIXTURE, J), NonreversibleScore(MIXTURE, J, smooth=True)
    sigma = torch.full((50,), 0.4, dtype=torch.float64)
    assert torch.equal(plain(x, sigma), plain(x))
    smoothed = MIXTURE.smoothed(0.4)
    rotation = torch.eye(2, dtype=torch.float64) + torch.tensor(J, dtype=torch.float64)
    assert torch.allclose(smooth(x, sigma), smoothed.score(x) @ rotation.T, atol=1e-12)
    assert residual_stats(AntisymmetricFlux(MIXTURE, smooth=True), smoothed, x, cond=sigma)["max_abs"] < 1e-10
    with pytest.raises(FluxMatchError, match="one σ"):
        smooth(x, torch.linspace(0.1, 0.5, 50, dtype=torch.float64))


def test_flux_objective_gradient_vanishes_at_an_antisymmetric_flux():
    """Product estimator, analytic reference: at f = s + u every residual is 0, so ∂ℓ/∂a at a = 0 is 0
    sample by sample (not only in expectation): only round-off remains."""
    torch.manual_seed(3)
    a = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    base = AntisymmetricFlux(MIXTURE, BumpRotation(MIXTURE.means, length=0.7, strength=3.0))
    field = lambda z, c: base(z) + a  # noqa: E731
    objective = FluxMatching(sigma=0.4, estimator="product")
    out = objective(field, torch.zeros(256, 2), reference=MIXTURE)
    (grad,) = torch.autograd.grad(out.loss.mean(), a)
    assert grad.abs().max() < 1e-6, grad


def test_rotation_adds_nothing_to_the_flux_gradient_of_a_shift():
    """MATH.md §2: f = (I + J)s + a has the same J as s + a. On one Gaussian N(μ, σ²I) with the
    product estimator the expected gradient is 2a(1 − e^{−H})/σ² (as in test_flux.py)."""
    torch.manual_seed(4)
    sigma = 0.5
    gaussian = GaussianMixture(torch.tensor([[1.0, -0.5]]), sigma**2)
    rotated = NonreversibleScore(gaussian, J)
    a = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    field = lambda z, c: rotated(z) + a  # noqa: E731
    objective = FluxMatching(sigma=sigma, estimator="product", rao_blackwell=True)
    grads = torch.stack([torch.autograd.grad(objective(field, torch.zeros(2048, 2), reference=gaussian).loss.mean(), a)[0] for _ in range(8)])
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(8)
    expected = 2 * a.detach() * (1 - math.exp(-objective.horizon)) / sigma**2
    # 5 standard errors of the Monte Carlo mean over 8 batches, plus float32 round-off
    assert ((mean - expected).abs() <= 5 * se + 1e-4 * expected.abs()).all(), (mean, se, expected)


def test_bad_matrices_are_refused():
    with pytest.raises(FluxMatchError, match="antisymmetric"):
        NonreversibleScore(MIXTURE, [[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(FluxMatchError, match="2, 2"):
        NonreversibleScore(MIXTURE, J3)
    with pytest.raises(FluxMatchError, match="antisymmetric"):
        AntisymmetricFlux(MIXTURE, lambda x: torch.ones(x.shape[0], 2, 2, dtype=x.dtype))(MIXTURE.sample(3))
    with pytest.raises(FluxMatchError, match="d ≥ 2"):
        BumpRotation(torch.zeros(1, 1))
    with pytest.raises(FluxMatchError, match="plane"):
        BumpRotation(torch.zeros(1, 3), plane=(0, 0))
