"""The potential factory matches the field: its kind, σ_data, classes and conditioning."""

import pytest
import torch

import fluxmatch as fm
from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import potential_for


def test_mlp_field_gets_an_mlp_potential():
    potential = potential_for(fm.MLPField(3, (8,)))
    assert potential.config == {"type": "mlp_potential", "dim": 3, "hidden": [128, 128], "conditioning": None}
    assert potential.gradient(torch.randn(5, 3)).shape == (5, 3)


def test_preconditioned_field_gets_a_preconditioned_potential_with_its_sigma_data_and_classes():
    unet = fm.UNet(in_channels=1, n_classes=10, **fm.UNET_PRESETS["digits"])
    potential = potential_for(fm.EDMPreconditioned(unet, sigma_data=0.5))
    assert potential.config["type"] == "edm_potential" and potential.config["backbone"]["dim"] == 64 and potential.config["backbone"]["n_classes"] == 10
    points = potential_for(fm.EDMPreconditioned(fm.MLPField(2, (8,), conditioning="sigma"), sigma_data=2.5), hidden=(16,))
    assert points.sigma_data == 2.5 and points.config["backbone"]["hidden"] == [16]
    assert potential_for(fm.EDMPreconditioned(unet), net="unet").config["backbone"]["type"] == "unet_scalar"


def test_the_objective_binds_the_matching_potential_when_it_first_sees_the_field():
    field = fm.EDMPreconditioned(fm.MLPField(2, (8,), conditioning="sigma"), sigma_data=3.0)
    objective = fm.FluxMatching(noise="edm")
    assert objective.potential is None
    groups = objective.param_groups(field, 1e-3)
    assert objective.potential.sigma_data == 3.0 and len(groups) == 2
    rebuilt = fm.objectives.build_objective(objective.config)
    assert rebuilt.config == objective.config and set(rebuilt.state_dict()) == set(objective.state_dict())


def test_fields_without_a_potential_are_named():
    with pytest.raises(FluxMatchError, match="no potential matches"):
        potential_for(torch.nn.Linear(2, 2))
