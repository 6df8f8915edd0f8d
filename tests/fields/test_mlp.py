"""MLP fields: shapes, conditioning, rebuilding from config, clear errors."""

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import MLPField, Unconditional, build_field, call_field


def test_shapes_and_conditioning():
    f = MLPField(16, (8,), conditioning="sigma")
    x = torch.randn(4, 1, 4, 4)
    assert f(x, torch.full((4,), 0.5)).shape == x.shape
    assert f(x, 0.5).shape == x.shape
    with pytest.raises(FluxMatchError, match="conditioned"):
        f(x)
    with pytest.raises(FluxMatchError, match="coordinates"):
        f(torch.randn(4, 3), 0.5)


def test_config_round_trip():
    f = MLPField(2, (16, 16), "time")
    g = build_field(f.config)
    g.load_state_dict(f.state_dict())
    x, t = torch.randn(5, 2), torch.rand(5)
    assert torch.equal(f(x, t), g(x, t))
    with pytest.raises(FluxMatchError, match="field type"):
        build_field({"type": "nope"})


def test_call_field_checks_output_shape():
    with pytest.raises(FluxMatchError, match="shape"):
        call_field(Unconditional(torch.nn.Linear(2, 3)), torch.randn(4, 2))
    assert call_field(Unconditional(torch.nn.Linear(2, 2)), torch.randn(4, 2)).shape == (4, 2)


@pytest.mark.parametrize("sigma", [0.0, -0.5, float("nan"), float("inf")])
def test_sigma_conditioned_field_refuses_bad_noise_levels(sigma):
    with pytest.raises(FluxMatchError, match="positive finite noise levels"):
        MLPField(2, (8,), conditioning="sigma")(torch.randn(3, 2), torch.tensor([0.5, sigma, 1.0]))


def test_mlp_potential_declares_its_conditioning_and_refuses_labels():
    from fluxmatch.fields import MLPPotential

    potential = MLPPotential(2, (8,), conditioning="sigma")
    assert potential.conditioning == "sigma" and MLPPotential(2).conditioning is None
    x = torch.randn(4, 2)
    assert potential.gradient(x, torch.ones(4), None).shape == x.shape
    with pytest.raises(FluxMatchError, match="not class-conditional"):
        potential.gradient(x, torch.ones(4), torch.zeros(4, dtype=torch.long))
