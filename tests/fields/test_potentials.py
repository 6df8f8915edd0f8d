"""The potential factory: the potential of Flux Matching's potential estimator matches the field's family."""

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import DAGField, EDMPreconditioned, MLPField, MLPPotential, PreconditionedPotential, TransformerField, UNet, potential_for
from fluxmatch.fields.potentials import potential_for_dim


def test_an_mlp_field_gets_an_mlp_potential_with_its_conditioning():
    for conditioning in (None, "sigma", "time"):
        potential = potential_for(MLPField(3, (8,), conditioning=conditioning))
        assert isinstance(potential, MLPPotential) and potential.conditioning == conditioning
        assert potential.config == {"type": "mlp_potential", "dim": 3, "hidden": [128, 128], "conditioning": conditioning}
    assert potential_for(MLPField(3), hidden=(16,)).config["hidden"] == [16]


def test_the_fixed_sigma_potential_is_the_one_of_fluxmatch_0_1():
    """At a fixed σ the default potential is MLPPotential(dim, hidden), drawn from the same random numbers."""
    torch.manual_seed(0)
    old = MLPPotential(2, (32, 32))
    torch.manual_seed(0)
    new = potential_for_dim(2, (32, 32))
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))


def test_a_preconditioned_field_gets_a_preconditioned_potential():
    field = EDMPreconditioned(MLPField(4, (8,), conditioning="sigma"), sigma_data=0.8)
    potential = potential_for(field)
    assert isinstance(potential, PreconditionedPotential) and potential.sigma_data == 0.8
    assert potential.backbone.config == {"type": "mlp_scalar", "dim": 4, "hidden": [256, 256], "n_classes": 0}
    x, sigma = torch.randn(5, 4), torch.exp(torch.randn(5))
    assert potential.gradient(x, sigma).shape == x.shape


def test_an_image_field_gets_its_shape_from_its_unet_or_as_given_and_keeps_its_classes():
    field = EDMPreconditioned(UNet(in_channels=1, channels=8, channel_mult=(1, 2), n_classes=3, resolution=8))
    mlp = potential_for(field)  # the UNet states its images: in_channels × resolution²
    assert mlp.backbone.dim == 64 and mlp.backbone.n_classes == 3
    assert potential_for(field, event_shape=(1, 16, 16)).backbone.dim == 256
    assert potential_for(field, n_classes=0).backbone.n_classes == 0
    unet = potential_for(field, net="unet")
    assert unet.backbone.config["type"] == "unet_scalar" and unet.backbone.n_classes == 3 and unet.backbone.unet.resolution == 8
    x, sigma, labels = torch.randn(2, 1, 8, 8), torch.ones(2), torch.tensor([0, 2])
    assert unet.gradient(x, sigma, labels).shape == x.shape
    unstated = EDMPreconditioned(torch.nn.Identity())  # a backbone that states no size
    with pytest.raises(FluxMatchError, match="data dimension"):
        potential_for(unstated)
    assert potential_for(unstated, dim=5).backbone.dim == 5
    with pytest.raises(FluxMatchError, match="image shape"):
        potential_for(unstated, net="unet", event_shape=(64,))  # not (C, H, W)


def test_unknown_families_and_options_are_named():
    with pytest.raises(FluxMatchError, match="no default potential matches a function field"):
        potential_for(lambda x, c: x)
    with pytest.raises(FluxMatchError, match="unknown potential network"):
        potential_for(MLPField(2), net="transformer")
    with pytest.raises(FluxMatchError, match="not class-conditional"):
        potential_for(MLPField(2), n_classes=3)
    with pytest.raises(FluxMatchError, match="data dimension"):
        potential_for_dim(None)


def test_a_structured_field_gets_an_unconstrained_potential_on_the_flattened_point():
    """The score the potential's gradient corrects has no causal or graph structure, so the potential has none."""
    x = torch.randn(3, 5, 2)
    for conditioning, c in ((None, None), ("sigma", torch.exp(torch.randn(3))), ("time", torch.rand(3))):
        potential = potential_for(TransformerField(5, 2, width=8, depth=1, heads=2, conditioning=conditioning))
        assert isinstance(potential, MLPPotential) and potential.config == {"type": "mlp_potential", "dim": 10, "hidden": [128, 128], "conditioning": conditioning}
        assert potential.gradient(x, c).shape == x.shape
    dag = potential_for(DAGField([[0, 1], [0, 0]], hidden=(4,), conditioning="time"), hidden=(16,))
    assert dag.config == {"type": "mlp_potential", "dim": 2, "hidden": [16], "conditioning": "time"}
    assert dag.gradient(torch.randn(4, 2), torch.rand(4)).shape == (4, 2)


def test_a_preconditioned_structured_field_gets_a_preconditioned_potential_on_its_flattened_point():
    field = EDMPreconditioned(TransformerField(5, 2, width=8, depth=1, heads=2, conditioning="sigma"), sigma_data=0.7)
    potential = potential_for(field)
    assert isinstance(potential, PreconditionedPotential) and potential.sigma_data == 0.7
    assert potential.backbone.config == {"type": "mlp_scalar", "dim": 10, "hidden": [256, 256], "n_classes": 0}
    x, sigma = torch.randn(3, 5, 2), torch.exp(torch.randn(3))
    assert potential.gradient(x, sigma).shape == x.shape
    dag = potential_for(EDMPreconditioned(DAGField([[0, 1, 0], [0, 0, 1], [0, 0, 0]], hidden=(4,), conditioning="sigma")))
    assert dag.backbone.dim == 3 and dag.gradient(torch.randn(4, 3), torch.ones(4)).shape == (4, 3)
