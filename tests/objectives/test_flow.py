"""Flow Matching: its loss is minimised by the analytic marginal velocity of a Gaussian target."""

import math

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import MLPField
from fluxmatch.objectives import FlowMatching, build_objective
from fluxmatch.paths import OTPath, VPPath
from fluxmatch.reference import GaussianMixture
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


@pytest.mark.parametrize("source", ["data", "reference"])
def test_expected_gradient_vanishes_at_the_marginal_velocity(source):
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.zeros(2))
    field = lambda x, t: marginal_velocity(x, t) + a  # noqa: E731
    objective = FlowMatching(sigma_min=SIGMA_MIN)
    if source == "data":
        batch = lambda: (M + S * torch.randn(4096, 2), None)  # noqa: E731
    else:  # the reference is the data law; the batch (zeros here) only sets B and the shape
        reference = GaussianMixture(M[None], S**2)
        batch = lambda: (torch.zeros(4096, 2), reference)  # noqa: E731

    def grad():
        x, ref = batch()
        return torch.autograd.grad(objective(field, x, ref).loss.mean(), a)[0]

    g = torch.stack([grad() for _ in range(20)])
    se = g.std(0) / math.sqrt(len(g))
    assert (g.mean(0).abs() < 5 * se).all()
    # and it is not zero away from the minimiser: E[∂ℓ/∂a] = 2a
    a.data.fill_(0.3)
    g = torch.stack([grad() for _ in range(5)])
    assert torch.allclose(g.mean(0), torch.full((2,), 0.6), atol=0.05)


@pytest.mark.slow
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


@pytest.mark.parametrize("path", ["ot", "vp", "ve", {"name": "ve", "sigma_min": 0.05, "sigma_max": 2.0}, VPPath(0.2, 10.0)])
def test_config_rebuilds_the_objective(path):
    objective = FlowMatching(path=path, coupling="exact", sigma_min=1e-3, time_eps=1e-3)
    config = objective.config
    assert config["name"] == "flow"
    again = build_objective(config)
    assert again.config == config
    t = torch.linspace(0.1, 0.9, 5)
    assert torch.equal(again.path.sigma(t), objective.path.sigma(t)) and torch.equal(again.path.alpha(t), objective.path.alpha(t))


@pytest.mark.parametrize("path", ["vp", "ve"])
@pytest.mark.parametrize("coupling", ["independent", "sinkhorn"])
def test_loss_shape_and_terms_for_image_batches(path, coupling):
    torch.manual_seed(2)
    field = MLPField(4, (16,), conditioning="time")
    out = FlowMatching(path=path, coupling=coupling, time_eps=0.01)(field, torch.randn(32, 1, 2, 2))
    assert out.loss.shape == (32,) and torch.isfinite(out.loss).all()
    assert set(out.terms) == {"fm", "coupling_cost"}
    out.loss.mean().backward()
    assert all(p.grad is not None for p in field.parameters())


def test_param_groups_are_the_field():
    field = MLPField(2, (8,), conditioning="time")
    (group,) = FlowMatching().param_groups(field, 1e-3)
    assert group["lr"] == 1e-3 and len(group["params"]) == len(list(field.parameters()))


def test_bad_inputs():
    with pytest.raises(FluxMatchError, match="coupling"):
        FlowMatching(coupling="nope")
    with pytest.raises(FluxMatchError, match="path"):
        FlowMatching(path="nope")
    with pytest.raises(FluxMatchError, match="time_eps"):
        FlowMatching(time_eps=1.0)
    with pytest.raises(FluxMatchError, match="NaN"):
        FlowMatching()(lambda x, t: x, torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(FluxMatchError, match="dimension"):
        FlowMatching()(lambda x, t: x, torch.zeros(4, 3), GaussianMixture(M[None], 1.0))
    with pytest.raises(FluxMatchError, match="shape"):
        FlowMatching()(lambda x, t: x[:, :1], torch.zeros(4, 2))
