"""The flux estimators as parts: names, options, configs, the potential matched to the field, extras."""

import json

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import EDMPreconditioned, MLPField, MLPPotential, PreconditionedPotential, UNet
from fluxmatch.objectives import FluxMatching, HorizonEstimator, PotentialEstimator, build_objective, make_estimator


def test_estimators_by_name_dict_or_instance():
    assert isinstance(make_estimator("potential"), PotentialEstimator)
    gradient = make_estimator({"kind": "gradient", "horizon": 2.0}, dynamics="langevin")
    assert isinstance(gradient, HorizonEstimator) and (gradient.kind, gradient.horizon, gradient.dynamics) == ("gradient", 2.0, "langevin")
    again = make_estimator(gradient.config)
    assert again.config == gradient.config
    mine = HorizonEstimator("product", horizon_sampler="uniform")
    assert make_estimator(mine) is mine and FluxMatching(estimator=mine).estimator is mine
    with pytest.raises(FluxMatchError, match="not beside an estimator instance"):
        make_estimator(mine, horizon=1.0)
    with pytest.raises(FluxMatchError, match="unknown flux estimator"):
        make_estimator({"kind": "bogus"})


@pytest.mark.parametrize(
    "estimator, option, message",
    [
        ("potential", {"horizon": 2.0}, "horizon applies to the product and gradient estimators, not potential"),
        ("potential", {"dynamics": "langevin"}, "dynamics applies to the product and gradient estimators, not potential"),
        ("product", {"potential_hidden": (8,)}, "potential_hidden applies to the potential and split estimators, not product"),
        ("gradient", {"target": "training_set"}, "target applies to the potential and split estimators, not gradient"),
        ("potential", {"bogus": 1}, "unknown option 'bogus' of the potential flux estimator"),
    ],
)
def test_an_option_of_another_estimator_is_named(estimator, option, message):
    with pytest.raises(FluxMatchError, match=message):
        FluxMatching(estimator=estimator, **option)


def test_configs_hold_every_option():
    objective = FluxMatching(0.3, estimator="product", horizon=2.0, horizon_sampler="uniform", n_probes=2)
    assert objective.config["estimator"] == {
        "kind": "product", "horizon": 2.0, "dynamics": "component", "substeps": 4, "divergence": "auto",
        "n_probes": 2, "horizon_sampler": "uniform", "rao_blackwell": True, "stratified": True,
    }
    potential = FluxMatching(noise="edm", target_group=64, potential_hidden=(16,)).config["estimator"]
    assert potential["kind"] == "potential" and potential["potential"] is None  # not bound yet
    assert (potential["field_lr_scale"], potential["potential_lr_scale"], potential["target_group"], potential["potential_hidden"]) == (0.5, 20.0, 64, [16])
    assert FluxMatching(0.3).config["estimator"]["field_lr_scale"] == 0.25
    with pytest.raises(FluxMatchError, match="normaliser applies to the potential estimator"):
        FluxMatching(noise="edm", estimator="gradient", normaliser=True)


def test_the_potential_is_matched_to_the_field_when_first_seen():
    fixed = FluxMatching(0.3, potential_hidden=(16,))
    field = MLPField(2, (8,))
    groups = fixed.param_groups(field, 1e-3)
    assert isinstance(fixed.potential, MLPPotential) and fixed.potential.conditioning is None
    assert fixed.potential.config == {"type": "mlp_potential", "dim": 2, "hidden": [16], "conditioning": None}
    assert [g["lr"] for g in groups] == [0.25e-3, 10e-3] and groups[1]["params"] == list(fixed.potential.parameters())
    assert fixed.config["estimator"]["potential"] == fixed.potential.config

    annealed = FluxMatching(noise="edm")
    edm = EDMPreconditioned(MLPField(3, (8,), conditioning="sigma"), sigma_data=0.7)
    out = annealed(edm, torch.randn(16, 3))  # bound in the call
    assert isinstance(annealed.potential, PreconditionedPotential) and annealed.potential.sigma_data == 0.7
    assert annealed.potential.backbone.dim == 3 and annealed.potential.backbone.hidden == (256, 256)
    out.loss.mean().backward()
    assert all(p.grad is not None for p in annealed.potential.parameters() if p.ndim == 2)  # the output bias does not move ∇g
    rebuilt = build_objective(json.loads(json.dumps(annealed.config)))
    rebuilt.load_state_dict(annealed.state_dict())  # the bound potential is in the config: checkpoints reload


def test_a_class_conditional_image_field_gets_a_class_conditional_potential():
    field = EDMPreconditioned(UNet(in_channels=1, channels=8, channel_mult=(1, 2), n_classes=3, resolution=8))
    objective = FluxMatching(noise="edm")
    out = objective(field, torch.randn(4, 1, 8, 8), labels=torch.tensor([0, 1, 2, 0]))
    assert objective.potential.backbone.n_classes == 3 and objective.potential.backbone.dim == 64
    assert out.loss.shape == (4,)
    before_data = FluxMatching(noise="edm")
    before_data.param_groups(field, 1e-3)  # no data seen: the UNet states its images' size
    assert before_data.potential.config == objective.potential.config
    with pytest.raises(FluxMatchError, match="data dimension"):
        FluxMatching(noise="edm").param_groups(EDMPreconditioned(torch.nn.Identity()), 1e-3)
    unet = FluxMatching(noise="edm", potential_net="unet", event_shape=(1, 8, 8))
    unet.param_groups(field, 1e-3)
    assert unet.potential.config["backbone"]["type"] == "unet_scalar"


class Masked(torch.nn.Module):
    """f(x, σ, mask=m) = −x·m/σ²: a field that needs a per-row extra."""

    conditioning = None
    config = {"type": "masked"}

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x, c=None, mask=None):
        return -self.scale * x * mask / c[:, None] ** 2


def test_extras_reach_the_field_through_the_potential_estimator_and_dsm():
    from fluxmatch.objectives import DenoisingScoreMatching

    x, mask = torch.randn(32, 2), (torch.arange(32) % 2).float()[:, None]
    for objective in (FluxMatching(0.3, dim=2), FluxMatching(noise="edm", dim=2), DenoisingScoreMatching(0.3)):
        assert objective.takes_extras
        out = objective(Masked(), x, mask=mask)
        assert out.loss.shape == (32,) and torch.isfinite(out.loss).all()
    horizon = FluxMatching(0.3, estimator="product")
    assert not horizon.takes_extras
    with pytest.raises(FluxMatchError, match="extras"):
        horizon(Masked(), x, mask=mask)
    with pytest.raises(FluxMatchError, match="does not take the batch extras mask"):
        DenoisingScoreMatching(0.3)(MLPField(2, (8,)), x, mask=mask)


def test_horizon_estimators_draw_one_sigma_per_batch_and_weight_by_a():
    torch.manual_seed(0)
    field = MLPField(2, (8,), conditioning="sigma")
    x = torch.randn(32, 2)
    torch.manual_seed(1)
    edm = FluxMatching(noise={"kind": "loguniform", "sigma_min": 0.2, "sigma_max": 0.8}, estimator="gradient", weighting="sigma2", horizon_sampler="uniform")
    out = edm(field, x)
    torch.manual_seed(1)
    plain = FluxMatching(noise={"kind": "loguniform", "sigma_min": 0.2, "sigma_max": 0.8}, estimator="gradient", weighting="none", horizon_sampler="uniform")
    base = plain(field, x)
    assert out.terms["sigma"] == base.terms["sigma"] and 0.2 <= out.terms["sigma"] <= 0.8
    assert torch.allclose(out.loss, base.loss * torch.tensor(out.terms["sigma"]) ** 2)
