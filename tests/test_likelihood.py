"""Log-likelihood by the instantaneous change of variables against closed-form Gaussian densities."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import MLPField
from fluxmatch.likelihood import LikelihoodResult, log_likelihood, standard_normal_log_prob

# Linear flow v(x, t) = A x: x1 = e^A x0 carries N(0, I) to N(0, e^A e^Aᵀ).
A = torch.tensor([[-0.3, 0.8, 0.1], [-0.5, 0.2, 0.0], [0.2, -0.1, 0.4]], dtype=torch.float64)
EXP_A = torch.linalg.matrix_exp(A)


def linear(x, t):
    return x @ A.T


def data(n=6, d=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("method,steps", [("dopri5", 100), ("heun", 200)])
def test_linear_flow_matches_the_gaussian_density(method, steps):
    x1 = data()
    result = log_likelihood(linear, x1, method=method, steps=steps, divergence="exact")
    assert isinstance(result, LikelihoodResult)
    target = MultivariateNormal(torch.zeros(3, dtype=torch.float64), EXP_A @ EXP_A.T).log_prob(x1)
    # Equivalently log p_0(e^{−A} x1) − tr A.
    assert torch.allclose(target, standard_normal_log_prob(x1 @ torch.linalg.inv(EXP_A).T) - A.trace())
    assert (result.log_prob - target).abs().max() < 1e-3
    assert torch.allclose(result.delta_log_prob, -A.trace().expand(6), atol=1e-4)
    assert torch.allclose(result.log_prob, result.prior_log_prob + result.delta_log_prob)
    assert torch.allclose(result.bits_per_dim, -result.log_prob / (3 * math.log(2)))
    if method == "heun":
        assert result.nfe == 2 * steps


def ot_gaussian_velocity(m, s, sigma_min):
    """Exact marginal velocity of the OT path from N(0, I) to N(m, s² I): x_t = t x1 + (1 − (1 − σ_min) t) x0."""

    def velocity(x, t):
        alpha, sigma = t[:, None], 1 - (1 - sigma_min) * t[:, None]
        var = alpha**2 * s**2 + sigma**2
        centred = x - alpha * m
        e_x1 = m + alpha * s**2 / var * centred
        e_x0 = sigma / var * centred
        return e_x1 - (1 - sigma_min) * e_x0

    return velocity


@pytest.mark.parametrize("method", ["dopri5", "heun"])
def test_ot_path_of_a_gaussian_gives_its_smoothed_density(method):
    m, s, sigma_min = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.5, 0.1
    gen = torch.Generator().manual_seed(1)
    x1 = m + s * torch.randn(8, 2, generator=gen, dtype=torch.float64)
    result = log_likelihood(ot_gaussian_velocity(m, s, sigma_min), x1, method=method, steps=200)
    target = MultivariateNormal(m, (s**2 + sigma_min**2) * torch.eye(2, dtype=torch.float64)).log_prob(x1)
    assert (result.log_prob - target).abs().max() < 1e-3


def test_a_custom_prior():
    prior = MultivariateNormal(torch.tensor([0.5, 0.0, -1.0], dtype=torch.float64), torch.diag(torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)))
    x1 = data()
    result = log_likelihood(linear, x1, prior=prior, rtol=1e-7, atol=1e-7)
    target = prior.log_prob(x1 @ torch.linalg.inv(EXP_A).T) - A.trace()
    assert (result.log_prob - target).abs().max() < 1e-4
    as_callable = log_likelihood(linear, x1, prior=prior.log_prob, rtol=1e-7, atol=1e-7)
    assert torch.allclose(as_callable.log_prob, result.log_prob)


@pytest.mark.parametrize("forward_mode", [True, False])
def test_hutchinson_is_unbiased(forward_mode):
    """Each row gets its own fixed probe: 400 copies of one point give 400 independent estimates in d = 5."""
    torch.manual_seed(0)
    field = MLPField(5, (32,), conditioning="time").double()
    velocity = field if forward_mode else (lambda x, t: field(x, t))
    x1 = data(1, 5).expand(400, 5)
    exact = log_likelihood(velocity, x1[:1], method="heun", steps=10, divergence="exact")
    gen = torch.Generator().manual_seed(3)
    estimate = log_likelihood(velocity, x1, method="heun", steps=10, divergence="hutchinson", generator=gen)
    spread = estimate.log_prob.std()
    assert spread > 1e-3  # the estimator does vary with the probes
    assert abs(estimate.log_prob.mean() - exact.log_prob[0]) < 4 * spread / math.sqrt(400)
    # Two probes per point halve the variance, roughly.
    two = log_likelihood(velocity, x1, method="heun", steps=10, divergence="hutchinson", n_probes=2, generator=gen)
    assert two.log_prob.std() < 0.85 * spread


def test_forward_mode_and_autograd_agree():
    torch.manual_seed(0)
    field = MLPField(3, (16,), conditioning="time").double()
    x1 = data()
    a = log_likelihood(field, x1, method="midpoint", steps=8, divergence="exact")
    b = log_likelihood(lambda x, t: field(x, t), x1, method="midpoint", steps=8, divergence="exact")
    assert torch.allclose(a.log_prob, b.log_prob, atol=1e-10)
    assert a.nfe == 16


def test_dequantization_bits_per_dim():
    x1 = data()
    raw = log_likelihood(linear, x1, method="euler", steps=20)
    base = -raw.log_prob / (3 * math.log(2))
    unit = log_likelihood(linear, x1, method="euler", steps=20, dequantization_bits=8)  # data / 256 in [0, 1)
    assert torch.allclose(unit.bits_per_dim, base + 8)
    assert torch.equal(unit.log_prob, raw.log_prob)
    signed = log_likelihood(linear, x1, method="euler", steps=20, dequantization_bits=8, data_scale=2 / 256)  # [−1, 1)
    assert torch.allclose(signed.bits_per_dim, base + 7)


def test_bad_inputs_raise():
    x1 = data()
    cases = [
        dict(method="rk4"),
        dict(divergence="trace"),
        dict(divergence="hutchinson", n_probes=0),
        dict(steps=0, method="euler"),
        dict(data_scale=0.5),
        dict(dequantization_bits=0),
        dict(dequantization_bits=8, data_scale=-1.0),
        dict(prior=lambda x0: x0),
    ]
    for kwargs in cases:
        with pytest.raises(FluxMatchError):
            log_likelihood(linear, x1, **{"method": "euler", "steps": 2, **kwargs})
    with pytest.raises(FluxMatchError):
        log_likelihood(linear, torch.tensor([[float("inf"), 0.0, 0.0]]))
    with pytest.raises(FluxMatchError):
        log_likelihood(linear, torch.zeros(3))
