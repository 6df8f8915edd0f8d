"""The noise belongs to the objective: one Flux Matching and one DSM class for a fixed σ (a
one-point σ distribution) and for a continuum of σ; old configs still rebuild."""

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import MLPField
from fluxmatch.objectives import DenoisingScoreMatching, FixedSigma, FluxMatching, LogNormal, build_objective, make_sigma_distribution


def test_a_fixed_sigma_is_a_one_point_distribution():
    fixed = make_sigma_distribution(0.3)
    assert isinstance(fixed, FixedSigma) and fixed.config == {"kind": "fixed", "sigma": 0.3}
    assert torch.equal(fixed.sample(4), torch.full((4,), 0.3))
    assert isinstance(make_sigma_distribution({"kind": "fixed", "sigma": 0.5}), FixedSigma)
    assert isinstance(make_sigma_distribution("edm"), LogNormal)
    with pytest.raises(FluxMatchError):
        make_sigma_distribution(-1.0)


@pytest.mark.parametrize("cls, options", [(FluxMatching, {"dim": 2}), (DenoisingScoreMatching, {})])
def test_one_class_for_either_noise(cls, options):
    fixed, annealed = cls(0.3, **options), cls(noise="edm", **options)
    assert (fixed.noise, fixed.sigma) == ("fixed", 0.3) and (annealed.noise, annealed.sigma) == ("edm", None)
    assert fixed.normaliser is None and annealed.normaliser is not None
    assert torch.equal(fixed.draw_sigma(3), torch.full((3,), 0.3))
    for objective in (fixed, annealed):
        rebuilt = build_objective(objective.config)
        assert type(rebuilt) is cls and rebuilt.config == objective.config
    with pytest.raises(FluxMatchError, match="not both"):
        cls(0.3, noise="edm", **options)


def test_fixed_sigma_rows_all_get_sigma():
    seen = []
    field = MLPField(2, (8,))
    record = lambda z, c: (seen.append(c.clone()), field(z, c))[1]  # noqa: E731
    DenoisingScoreMatching(0.4)(record, torch.randn(16, 2))
    FluxMatching(0.4, dim=2)(record, torch.randn(16, 2))
    assert all(bool((c == 0.4).all()) for c in seen)


OLD_CONFIGS = {
    "flux": {"name": "flux", "sigma": 0.3, "horizon": 4.0, "dynamics": "component", "substeps": 4, "divergence": "auto", "n_probes": 1,
             "horizon_sampler": "exponential", "rao_blackwell": True, "stratified": True, "estimator": "potential", "dim": 2,
             "potential_hidden": [16, 16], "field_lr_scale": 0.25, "potential_lr_scale": 10.0, "target_group": None},
    "dsm": {"name": "dsm", "sigma": 0.3},
    "flux_annealed": {"name": "flux_annealed", "sigma_distribution": {"kind": "edm", "p_mean": -1.2, "p_std": 1.2}, "weighting": "edm", "sigma_data": 0.5,
                      "normaliser": True, "label_dropout": 0.1, "rao_blackwell": True, "target": "batch", "estimator": "potential", "dim": 64,
                      "potential_hidden": [256, 256], "n_classes": 10, "field_lr_scale": 0.5, "potential_lr_scale": 20.0, "fixed_sigma_options": {},
                      "potential_net": "mlp", "event_shape": None},
    "dsm_annealed": {"name": "dsm_annealed", "sigma_distribution": {"kind": "edm", "p_mean": -1.2, "p_std": 1.2}, "weighting": "edm", "sigma_data": 0.5,
                     "normaliser": True, "label_dropout": 0.1, "rao_blackwell": False, "target": "batch"},
}
OLD_KEYS = {
    "flux": {"horizon_sampler.net.0.weight", "horizon_sampler.net.0.bias", "horizon_sampler.net.2.weight", "horizon_sampler.net.2.bias",
             "potential.body.net.0.weight", "potential.body.net.0.bias", "potential.body.net.2.weight", "potential.body.net.2.bias",
             "potential.body.net.4.weight", "potential.body.net.4.bias"},
    "dsm": set(),
    "flux_annealed": {"normaliser.freqs", "normaliser.phases", "normaliser.readout.weight", "normaliser.readout.bias",
                      "potential.backbone.net.0.weight", "potential.backbone.net.0.bias", "potential.backbone.net.2.weight",
                      "potential.backbone.net.2.bias", "potential.backbone.net.4.weight", "potential.backbone.net.4.bias"},
    "dsm_annealed": {"normaliser.freqs", "normaliser.phases", "normaliser.readout.weight", "normaliser.readout.bias"},
}


@pytest.mark.parametrize("name", list(OLD_CONFIGS))
def test_configs_of_fluxmatch_0_1_rebuild_with_the_same_parameters(name):
    objective = build_objective(OLD_CONFIGS[name])
    assert set(objective.state_dict()) == OLD_KEYS[name]
    assert objective.name == name.removesuffix("_annealed")
