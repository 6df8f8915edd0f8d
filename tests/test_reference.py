"""Reference densities against autograd and sampling moments (MATH.md §3 exact checks)."""

import math

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.reference import EmpiricalGaussian, GaussianMixture


def autograd_derivatives(ref, z):
    z = z.clone().requires_grad_(True)
    s = torch.autograd.grad(ref.log_prob(z).sum(), z, create_graph=True)[0]
    hess = torch.stack([torch.autograd.grad(s[:, i].sum(), z, create_graph=True)[0] for i in range(z.shape[1])], 1)
    div = hess.diagonal(dim1=1, dim2=2).sum(-1)
    grad_div = torch.autograd.grad(div.sum(), z)[0]
    return s.detach(), hess.detach(), div.detach(), grad_div


@pytest.mark.parametrize("dim", [2, 5, 12])
def test_mixture_closed_forms_match_autograd(dim):
    torch.manual_seed(0)
    mixture = GaussianMixture(torch.randn(6, dim) * 1.5, torch.rand(6) + 0.4, torch.rand(6) + 0.1)
    z = torch.randn(20, dim) * 1.5
    v = torch.randn(20, dim)
    s, hess, div, grad_div = autograd_derivatives(mixture, z)
    d = mixture.derivatives(z, v)
    scale = lambda t: 1e-4 * (1 + t.abs().max())  # float32 round-off of O(1) quantities
    assert (d.score - s).abs().max() < scale(s)
    assert (mixture.score(z) - s).abs().max() < scale(s)
    assert (d.divergence - div).abs().max() < scale(div)
    assert (d.grad_divergence - grad_div).abs().max() < scale(grad_div)
    assert (d.hessian_v - (hess @ v[:, :, None])[:, :, 0]).abs().max() < scale(hess)
    assert (d.hessian_score - (hess @ s[:, :, None])[:, :, 0]).abs().max() < scale(hess) * (1 + s.abs().max())


@pytest.mark.parametrize("dim,batch", [(2, 300), (64, 40)])
def test_batch_score_is_gradient_of_batch_log_density(dim, batch):
    torch.manual_seed(1)
    x = torch.randn(batch, dim)
    ref = EmpiricalGaussian(x, sigma=0.7)
    z = x[:25] + 0.7 * torch.randn(25, dim)
    s, hess, div, grad_div = autograd_derivatives(ref, z)
    d = ref.derivatives(z, z)
    assert torch.allclose(ref.score(z), s, atol=2e-4 * (1 + s.abs().max()))
    assert torch.allclose(d.divergence, div, atol=2e-4 * (1 + div.abs().max()))
    # ∇(∇·s) is a difference of third moments of size |x|³/σ⁶: float32 round-off is relative to that
    third_moment_scale = float(x.square().sum(1).max()) ** 1.5 / 0.7**6
    assert torch.allclose(d.grad_divergence, grad_div, atol=1e-6 * third_moment_scale + 5e-4 * float(grad_div.abs().max()))
    # the closed form stated in MATH.md: s(z) = (Σ_j w_j x_j − z)/σ², w = softmax(−|z − x_j|²/2σ²)
    w = torch.softmax(-torch.cdist(z, x).square() / (2 * 0.49), 1)
    assert torch.allclose(ref.score(z), (w @ x - z) / 0.49, atol=1e-4 * (1 + s.abs().max()))


def test_shared_and_general_paths_and_chunking_agree():
    torch.manual_seed(2)
    means = torch.randn(50, 3)
    ref = GaussianMixture(means, 0.3)
    chunked = GaussianMixture(means, 0.3, chunk_elements=64)
    z, v = torch.randn(33, 3), torch.randn(33, 3)
    a, b, c = ref.derivatives(z, v), ref._derivatives_general(z, v), chunked.derivatives(z, v)
    for name in ("score", "divergence", "grad_divergence", "hessian_score", "hessian_v"):
        assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-4, rtol=1e-4), name
        assert torch.allclose(getattr(a, name), getattr(c, name), atol=1e-4, rtol=1e-4), name
    assert torch.allclose(ref.log_prob(z), chunked.log_prob(z), atol=1e-5)


def test_images_are_flattened_and_shapes_restored():
    x = torch.randn(10, 1, 4, 4)
    ref = EmpiricalGaussian(x, 0.5)
    assert ref.score(x).shape == x.shape
    assert ref.sample_components().x.shape == (10, 16)


def test_sampling_moments_within_monte_carlo_error():
    torch.manual_seed(3)
    means = torch.tensor([[-2.0, 0.0], [3.0, 1.0]])
    mixture = GaussianMixture(means, torch.tensor([0.25, 1.0]), torch.tensor([0.3, 0.7])).smoothed(0.5)
    n = 200_000
    x = mixture.sample(n)
    mean = 0.3 * means[0] + 0.7 * means[1]
    var = 0.3 * (0.5 + means[0].square()) + 0.7 * (1.25 + means[1].square()) - mean.square()
    se = (var / n).sqrt()
    assert ((x.mean(0) - mean).abs() < 5 * se).all()
    assert ((x.var(0) - var).abs() < 0.02 * var).all()


def test_log_density_normalises_in_one_dimension():
    mixture = GaussianMixture(torch.tensor([[-1.0], [2.0]]), torch.tensor([0.3, 0.8]))
    grid = torch.linspace(-12, 12, 20001)[:, None]
    mass = mixture.log_prob(grid).exp().double().sum() * (24 / 20000)
    assert abs(float(mass) - 1.0) < 1e-4


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_sigma_raises(sigma):
    with pytest.raises(FluxMatchError, match="σ"):
        EmpiricalGaussian(torch.randn(4, 2), sigma)


def test_bad_inputs_raise():
    with pytest.raises(FluxMatchError, match="NaN"):
        GaussianMixture(torch.tensor([[float("nan"), 0.0]]), 1.0)
    with pytest.raises(FluxMatchError, match="variances"):
        GaussianMixture(torch.zeros(2, 2), torch.tensor([1.0, -1.0]))
    with pytest.raises(FluxMatchError, match="coordinates"):
        GaussianMixture(torch.zeros(2, 2), 1.0).score(torch.zeros(3, 3))
    assert math.isfinite(float(GaussianMixture(torch.zeros(1, 2), 1.0).log_prob(torch.zeros(1, 2))))


@pytest.mark.parametrize("group_size", [None, 64])
def test_grouped_denoising_target_is_an_unbiased_lower_variance_score_target(group_size):
    """Data N(0, τ²I): E[target·x0] = E[s(x0)·x0] = −d (Stein), as for −ε/σ, with less variance."""
    from fluxmatch.reference import grouped_denoising_target

    torch.manual_seed(4)
    tau, sigma, n = 1.0, 0.5, 8192
    x = tau * torch.randn(n, 2)
    x0, target = grouped_denoising_target(x, sigma, group_size)
    stein = (target * x0).sum(1)
    assert abs(float(stein.mean()) + 2.0) < 5 * float(stein.std()) / n**0.5
    # the plain denoising target −ε/σ has variance d/σ² in total; the posterior mean has far less
    assert float(target.var(0).sum()) < 0.5 * 2 / sigma**2
    assert torch.allclose(x0.mean(0), torch.zeros(2), atol=5 * (tau**2 + sigma**2) ** 0.5 / n**0.5)
