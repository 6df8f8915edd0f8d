"""Flow Matching: its loss is minimised by the analytic marginal velocity of a Gaussian target."""

import math

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import MLPField
from fluxmatch.objectives import FlowMatching
from fluxmatch.paths import OTPath
from fluxmatch.samplers import solve_ode

M, S, SIGMA_MIN = torch.tensor([1.0, -2.0]), 0.5, 1e-3


def marginal_velocity(x, t):
    """u_t(x) = α'_t E[x1 | x_t] + σ'_t E[x0 | x_t] for data N(m, s²I) on the OT path."""
    path = OTPath(SIGMA_MIN)
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    var = a**2 * S**2 + s**2
    resid = x - a * M
    e_x1 = M + a * S**2 / var * resid
    e_x0 = s / var * resid
    return path.d_alpha(t)[:, None] * e_x1 + path.d_sigma(t)[:, None] * e_x0


def test_expected_gradient_vanishes_at_the_marginal_velocity():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.zeros(2))
    field = lambda x, t: marginal_velocity(x, t) + a  # noqa: E731
    objective = FlowMatching(sigma_min=SIGMA_MIN)
    grads = [torch.autograd.grad(objective(field, M + S * torch.randn(4096, 2)).loss.mean(), a)[0] for _ in range(20)]
    g = torch.stack(grads)
    se = g.std(0) / math.sqrt(len(grads))
    assert (g.mean(0).abs() < 5 * se).all()
    # and it is not zero away from the minimiser: E[∂ℓ/∂a] = 2a
    a.data.fill_(0.3)
    g = torch.stack([torch.autograd.grad(objective(field, M + S * torch.randn(4096, 2)).loss.mean(), a)[0] for _ in range(5)])
    assert torch.allclose(g.mean(0), torch.full((2,), 0.6), atol=0.05)


@pytest.mark.parametrize("coupling", ["independent", "ot"])
def test_training_approaches_the_marginal_velocity(coupling):
    torch.manual_seed(1)
    field = MLPField(2, (64, 64), conditioning="time")
    objective = FlowMatching(coupling=coupling, sigma_min=SIGMA_MIN)
    opt = torch.optim.Adam(field.parameters(), lr=3e-3)
    for _ in range(400):
        opt.zero_grad()
        objective(field, M + S * torch.randn(256, 2)).loss.mean().backward()
        opt.step()
    t = torch.tensor([0.3, 0.6, 0.9]).repeat_interleave(200)
    x = OTPath(SIGMA_MIN).sample(torch.randn(600, 2), M + S * torch.randn(600, 2), t).xt
    with torch.no_grad():
        err = (field(x, t) - marginal_velocity(x, t)).norm(dim=1).mean()
        scale = marginal_velocity(x, t).norm(dim=1).mean()
    if coupling == "independent":  # OT pairs define other (straighter) conditional paths
        assert err < 0.2 * scale, (err, scale)
    # either way the learned ODE carries N(0, I) to the target N(m, s²I)
    x1 = solve_ode(field, torch.randn(4000, 2), 0.0, 1.0, "heun", 50).x
    assert (x1.mean(0) - M).abs().max() < 0.1
    assert (x1.std(0) - S).abs().max() < 0.1


def test_bad_inputs():
    with pytest.raises(FluxMatchError, match="coupling"):
        FlowMatching(coupling="nope")
    with pytest.raises(FluxMatchError, match="NaN"):
        FlowMatching()(lambda x, t: x, torch.tensor([[float("nan"), 0.0]]))
