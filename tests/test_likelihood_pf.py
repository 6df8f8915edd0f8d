"""Probability-flow log-likelihood of σ-conditioned fields against closed-form densities.

For Gaussian data N(m, Σ) the exact field is linear, f(x, σ) = −(Σ + σ²I)^{-1}(x − m), and
p_σ = N(m, Σ + σ²I): the quantity log p_{σ_min}(x) and even the change of log-density along the
ODE, ½ log det(Σ + σ_max²I) − ½ log det(Σ + σ_min²I) (the quadratic form is constant along the
flow), are known exactly. A Gaussian mixture checks the nonlinear case.
"""

import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import MLPField
from fluxmatch.likelihood import LikelihoodResult, probability_flow_log_likelihood
from fluxmatch.reference import GaussianMixture

D = 3
CHOL = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.7, 0.0], [-0.3, 0.2, 0.4]], dtype=torch.float64)
COV = CHOL @ CHOL.T  # full covariance: its score's Jacobian is not diagonal, so Hutchinson has variance
EIGVALS, EIGVECS = torch.linalg.eigh(COV)
MEAN = torch.tensor([0.5, -1.0, 0.3], dtype=torch.float64)
EYE = torch.eye(D, dtype=torch.float64)


def gaussian_field(x, sigma):
    """−(Σ + σ²I)^{-1}(x − m) row by row, σ (B,); differentiable in x."""
    coords = (x - MEAN) @ EIGVECS
    return -(coords / (EIGVALS + sigma[:, None] ** 2)) @ EIGVECS.T


def smoothed_gaussian(sigma):
    return MultivariateNormal(MEAN, COV + sigma**2 * EYE)


def data(n=6, seed=0):
    return MEAN + torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) @ CHOL.T


def test_gaussian_log_density_with_the_exact_prior():
    x, sigma_min, sigma_max = data(), 0.01, 5.0
    result = probability_flow_log_likelihood(
        gaussian_field, x, sigma_min, sigma_max, prior=smoothed_gaussian(sigma_max), rtol=1e-7, atol=1e-7
    )
    assert isinstance(result, LikelihoodResult)
    # dopri5 at 1e-7 on a linear ODE: measured error 3e-7 nats.
    assert (result.log_prob - smoothed_gaussian(sigma_min).log_prob(x)).abs().max() < 1e-5
    half_logdet = lambda s: 0.5 * torch.log(EIGVALS + s**2).sum()  # noqa: E731
    assert torch.allclose(result.delta_log_prob, (half_logdet(sigma_max) - half_logdet(sigma_min)).expand(6), atol=1e-5)
    assert torch.allclose(result.log_prob, result.prior_log_prob + result.delta_log_prob)
    assert torch.allclose(result.bits_per_dim, -result.log_prob / (D * math.log(2)))


def test_the_default_prior_is_accurate_when_sigma_max_dwarfs_the_data():
    """Against N(0, σ_max²I) the true p_{σ_max} differs by about |m|·|ξ|/σ_max + d·tr Σ/σ_max² nats."""
    x = data()
    target = smoothed_gaussian(0.01).log_prob(x)
    far = probability_flow_log_likelihood(gaussian_field, x, 0.01, 1e4, rtol=1e-7, atol=1e-7)
    assert (far.log_prob - target).abs().max() < 1e-3  # measured 2e-4
    near = probability_flow_log_likelihood(gaussian_field, x, 0.01, 20.0, rtol=1e-7, atol=1e-7)
    assert (near.log_prob - target).abs().max() > 1e-2  # the prior's error is visible at σ_max = 20


def isotropic_field(x, sigma):
    return -x / (0.36 + sigma[:, None] ** 2)


def test_data_variance_makes_the_prior_exact_for_centred_isotropic_data():
    x = 0.6 * torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # N(0, 0.36 I)
    target = MultivariateNormal(torch.zeros(2, dtype=torch.float64), (0.36 + 0.02**2) * torch.eye(2, dtype=torch.float64)).log_prob(x)
    exact = probability_flow_log_likelihood(isotropic_field, x, 0.02, 3.0, data_variance=0.36, rtol=1e-7, atol=1e-7)
    assert (exact.log_prob - target).abs().max() < 1e-5
    plain = probability_flow_log_likelihood(isotropic_field, x, 0.02, 3.0, rtol=1e-7, atol=1e-7)
    assert (plain.log_prob - target).abs().max() > 1e-2


class MixtureField(nn.Module):
    """Exact σ-conditioned score of a 2-D mixture; under autograd it differentiates log p_σ so the divergence can be taken."""

    mixture = GaussianMixture(
        torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]]), torch.tensor([0.09, 0.16, 0.04]), torch.tensor([0.5, 0.3, 0.2])
    )

    def forward(self, x, sigma):
        smoothed = self.mixture.smoothed(float(sigma[0]))
        if x.requires_grad:
            (score,) = torch.autograd.grad(smoothed.log_prob(x.float()).sum(), x, create_graph=True)
            return score
        return smoothed.score(x.float()).to(x.dtype)


def test_mixture_log_density_through_the_nonlinear_flow():
    field = MixtureField()
    x = field.mixture.sample(8, torch.Generator().manual_seed(0)).double()
    sigma_min, sigma_max = 0.01, 80.0
    prior = field.mixture.smoothed(sigma_max)
    result = probability_flow_log_likelihood(
        field, x, sigma_min, sigma_max, prior=lambda z: prior.log_prob(z.float()).double(), rtol=1e-7, atol=1e-7
    )
    target = field.mixture.smoothed(sigma_min).log_prob(x.float()).double()
    # Measured 2e-5 nats; the mixture is evaluated in float32 (about 1e-6 relative per call).
    assert (result.log_prob - target).abs().max() < 2e-4


def test_fixed_steps_in_log_sigma():
    x = data()
    result = probability_flow_log_likelihood(gaussian_field, x, 0.01, 5.0, method="heun", steps=200, prior=smoothed_gaussian(5.0))
    assert result.nfe == 400
    # Heun's error, measured: 0.17 nats at 100 steps over 14 e-folds of σ, falling as steps⁻².
    assert (result.log_prob - smoothed_gaussian(0.01).log_prob(x)).abs().max() < 0.02


def test_hutchinson_is_unbiased():
    """400 copies of one point, each with its own fixed probe: 400 independent estimates."""
    x = data(1).expand(400, D)
    kwargs = dict(sigma_min=0.05, sigma_max=5.0, method="heun", steps=20, prior=smoothed_gaussian(5.0))
    exact = probability_flow_log_likelihood(gaussian_field, x[:1], divergence="exact", **kwargs)
    estimate = probability_flow_log_likelihood(gaussian_field, x, divergence="hutchinson", generator=torch.Generator().manual_seed(3), **kwargs)
    spread = estimate.log_prob.std()
    assert spread > 1e-2  # the estimate does vary with the probes
    assert abs(estimate.log_prob.mean() - exact.log_prob[0]) < 4 * spread / math.sqrt(400)


def test_a_sigma_conditioned_mlp_uses_forward_mode_consistently():
    torch.manual_seed(0)
    field = MLPField(3, (16,), conditioning="sigma").double()
    x = data()
    kwargs = dict(sigma_min=0.05, sigma_max=10.0, method="midpoint", steps=8, divergence="exact")
    forward = probability_flow_log_likelihood(field, x, **kwargs)
    backward = probability_flow_log_likelihood(lambda z, s: field(z, s), x, **kwargs)
    assert torch.allclose(forward.log_prob, backward.log_prob, atol=1e-10)
    assert forward.nfe == 16 and not forward.log_prob.requires_grad


def test_bits_per_dim_of_dequantized_data():
    x = data()
    kwargs = dict(sigma_min=0.01, sigma_max=5.0, method="euler", steps=20)
    raw = probability_flow_log_likelihood(gaussian_field, x, **kwargs)
    base = -raw.log_prob / (D * math.log(2))
    signed = probability_flow_log_likelihood(gaussian_field, x, dequantization_bits=8, data_scale=2 / 256, **kwargs)  # [−1, 1)
    assert torch.equal(signed.log_prob, raw.log_prob)
    assert torch.allclose(signed.bits_per_dim, base + 7)  # −log2(2/256) = 7 bits per coordinate
    unit = probability_flow_log_likelihood(gaussian_field, x, dequantization_bits=8, **kwargs)  # [0, 1)
    assert torch.allclose(unit.bits_per_dim, base + 8)


def nan_above_one(x, sigma):
    return torch.where(sigma[:, None] > 1.0, torch.full_like(x, float("nan")), gaussian_field(x, sigma))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sigma_min=5.0, sigma_max=1.0), "must exceed"),
        (dict(sigma_min=0.0), "sigma_min"),
        (dict(sigma_max=float("inf")), "sigma_max"),
        (dict(method="rk4"), "unknown ODE method"),
        (dict(divergence="trace"), "divergence"),
        (dict(divergence="hutchinson", n_probes=0), "probes"),
        (dict(data_variance=-1.0), "data_variance"),
        (dict(data_variance=0.5, prior=smoothed_gaussian(5.0)), "prior"),
        (dict(data_scale=0.5), "dequantization_bits"),
        (dict(prior=lambda z: z), "prior returned shape"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    options = {"sigma_min": 0.01, "sigma_max": 5.0, "method": "euler", "steps": 2, **kwargs}
    with pytest.raises(FluxMatchError, match=match):
        probability_flow_log_likelihood(gaussian_field, data(), **options)


def test_bad_points_and_fields_raise():
    with pytest.raises(FluxMatchError, match="NaN"):
        probability_flow_log_likelihood(gaussian_field, torch.full((2, D), float("nan")), 0.01, 5.0)
    with pytest.raises(FluxMatchError, match="shape"):
        probability_flow_log_likelihood(gaussian_field, torch.zeros(D), 0.01, 5.0)
    with pytest.raises(FluxMatchError, match=r"NaN or infinite at σ = 1\.\d"):  # the first level above 1 going up
        probability_flow_log_likelihood(nan_above_one, data(), 0.01, 5.0, method="euler", steps=5)
    with pytest.raises(FluxMatchError, match="shape"):
        probability_flow_log_likelihood(lambda z, s: z[:, :1], data(), 0.01, 5.0)
