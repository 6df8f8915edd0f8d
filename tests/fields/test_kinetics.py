"""The splicing-kinetics field: its analytic fixed point, the linear ODE it is, positive rates,
the regulatory network's zero diagonal and sparsity penalty, state-dependent rates, bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields.kinetics import KineticField


def set_rates(field, alpha_bias, beta, gamma):
    """Constant transcription softplus(alpha_bias) (a_u = a_s = 0), and the given β, γ."""
    with torch.no_grad():
        field.bias.copy_(torch.as_tensor(alpha_bias))
        field.log_beta.copy_(torch.log(torch.as_tensor(beta) - field.min_rate))
        field.log_gamma.copy_(torch.log(torch.as_tensor(gamma) - field.min_rate))


def test_starts_as_the_papers_linear_kinetics():
    field = KineticField(4)
    x = torch.rand(5, 4, 2)
    f = field(x)
    ln2 = math.log(2)
    torch.testing.assert_close(f[..., 0], ln2 - ln2 * x[..., 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(f[..., 1], ln2 * x[..., 0] - ln2 * x[..., 1], atol=1e-5, rtol=1e-5)


def test_fixed_point_is_alpha_over_beta_and_alpha_over_gamma():
    field = KineticField(3)
    bias, beta, gamma = torch.tensor([0.5, 1.0, 2.0]), torch.tensor([0.4, 1.3, 2.2]), torch.tensor([0.2, 0.9, 3.0])
    set_rates(field, bias, beta, gamma)
    alpha = torch.nn.functional.softplus(bias) + field.min_rate
    fixed = torch.stack([alpha / beta, alpha / gamma], -1)[None]
    torch.testing.assert_close(field(fixed), torch.zeros_like(fixed), atol=1e-6, rtol=0)
    # and away from it the field is the linear ODE's right-hand side
    x = fixed + 0.5
    f = field(x)
    torch.testing.assert_close(f[0, :, 0], alpha - beta * x[0, :, 0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(f[0, :, 1], beta * x[0, :, 0] - gamma * x[0, :, 1], atol=1e-6, rtol=1e-6)


def test_euler_integration_follows_the_closed_form_solution():
    """u(t) = α/β + (u0 − α/β) e^{−βt} for constant α: the field integrated with small steps."""
    field = KineticField(1)
    set_rates(field, torch.tensor([1.0]), torch.tensor([0.8]), torch.tensor([0.3]))
    alpha = float(torch.nn.functional.softplus(torch.tensor(1.0)))
    x = torch.tensor([[[0.1, 0.2]]], dtype=torch.float32)
    dt, steps = 1e-3, 2000
    with torch.no_grad():
        for _ in range(steps):
            x = x + dt * field(x)
    t = dt * steps
    expected_u = alpha / 0.8 + (0.1 - alpha / 0.8) * math.exp(-0.8 * t)
    assert abs(float(x[0, 0, 0]) - expected_u) < 5e-3


@settings(max_examples=25, deadline=None)
@given(st.floats(-30, 30), st.floats(-30, 5), st.integers(0, 2))
def test_rates_stay_positive(raw, scale, rank):
    field = KineticField(3, variant="regulatory", state_rank=rank)
    with torch.no_grad():
        for p in field.parameters():
            p.fill_(raw)
        field.log_alpha_scale.fill_(scale)
    x = torch.rand(6, 3, 2) * 5
    for name, rate in field.rates(x).items():
        assert bool((rate > 0).all()), name
        assert bool(torch.isfinite(rate).all()), name


def test_regulation_ignores_the_diagonal_and_is_penalised():
    field = KineticField(3, variant="regulatory")
    x = torch.rand(4, 3, 2)
    before = field(x)
    with torch.no_grad():
        field.regulation.copy_(torch.eye(3) * 5.0)
    torch.testing.assert_close(field(x), before)
    assert float(field.penalty().detach()) == 0.0
    with torch.no_grad():
        field.regulation[0, 1] = -2.0
    assert float(field.penalty().detach()) == pytest.approx(2.0)
    w = field.regulation_matrix()
    assert w[0, 1] == -2.0 and torch.all(w.diagonal() == 0)
    assert not torch.allclose(field(x)[:, 0, 0], before[:, 0, 0])  # gene 0's transcription now sees gene 1
    torch.testing.assert_close(field(x)[:, 1:], before[:, 1:])


def test_state_dependent_rates_vary_across_cells():
    field = KineticField(4, state_rank=2)
    x = torch.rand(6, 4, 2)
    assert field.rates(x)["beta"].shape == (6, 4)
    assert torch.allclose(field.rates(x)["beta"], field.rates(x)["beta"][:1])  # zero at the start
    with torch.no_grad():
        field.state_beta.fill_(1.0)
    beta = field.rates(x)["beta"]
    assert not torch.allclose(beta, beta[:1])


def test_kinetic_variant_has_no_network():
    field = KineticField(2)
    assert float(field.penalty().detach()) == 0.0
    with pytest.raises(FluxMatchError, match="regulatory"):
        field.regulation_matrix()


def test_bad_input():
    with pytest.raises(FluxMatchError, match="variant"):
        KineticField(3, variant="magic")
    with pytest.raises(FluxMatchError, match="n_genes"):
        KineticField(0)
    with pytest.raises(FluxMatchError, match="scale"):
        KineticField(3, scale=[1.0, -1.0, 1.0])
    with pytest.raises(FluxMatchError, match=r"\(B, 3, 2\)"):
        KineticField(3)(torch.rand(4, 2, 2))
