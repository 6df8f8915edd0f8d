"""The noise belongs to the objective: one Flux Matching and one DSM class for a fixed σ (a
one-point σ distribution) and for a continuum of σ; the weightings; old configs still rebuild."""

import json
import math
from pathlib import Path

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import MLPField
from fluxmatch.objectives import (
    DenoisingScoreMatching,
    FixedSigma,
    FluxMatching,
    LogNormal,
    LogUniform,
    build_objective,
    loss_weights,
    make_noise,
    make_sigma_distribution,
)
from fluxmatch.objectives.noise_levels import loss_weight

#: configs and state-dict shapes of fluxmatch 0.1's objectives, written by its classes (``.config``, ``.state_dict()``)
OLD = json.loads((Path(__file__).parent / "fluxmatch_0_1_objectives.json").read_text())


def test_a_fixed_sigma_is_a_one_point_distribution():
    fixed = make_noise(0.3)
    assert isinstance(fixed, FixedSigma) and fixed.config == {"kind": "fixed", "sigma": 0.3} and fixed.is_fixed
    assert torch.equal(fixed.sample(4), torch.full((4,), 0.3))
    assert fixed.sigma_min == fixed.sigma_max == 0.3
    assert isinstance(make_noise({"kind": "fixed", "sigma": 0.5}), FixedSigma) and isinstance(make_noise(2), FixedSigma)
    assert make_sigma_distribution is make_noise
    state = torch.get_rng_state()
    fixed.sample(100)
    assert torch.equal(state, torch.get_rng_state())  # a fixed σ draws no random numbers


def test_continuous_distributions_state_their_range():
    edm, uniform = make_noise("edm"), make_noise("loguniform")
    assert isinstance(edm, LogNormal) and not edm.is_fixed and (edm.sigma_min, edm.sigma_max) == (0.002, 80.0)
    assert isinstance(uniform, LogUniform) and not uniform.is_fixed and (uniform.sigma_min, uniform.sigma_max) == (0.002, 80.0)
    assert LogNormal(sigma_max=40.0).config == {"kind": "edm", "p_mean": -1.2, "p_std": 1.2, "sigma_min": 0.002, "sigma_max": 40.0}
    assert make_noise(LogNormal(sigma_max=40.0).config).sigma_max == 40.0
    assert make_noise({"kind": "edm", "p_mean": -1.2, "p_std": 1.2}).sigma_max == 80.0  # a 0.1 config
    noise = LogUniform(0.1, 1.0)
    assert make_noise(noise) is noise


@pytest.mark.parametrize(
    "spec, message",
    [(0.0, "σ"), (-1.0, "σ"), (float("nan"), "σ"), ("bogus", "unknown σ distribution"), ({"kind": "cauchy"}, "unknown σ distribution"),
     ({"kind": "fixed"}, "needs its level"), (True, "the noise is"), (None, "the noise is"), ({"kind": "edm", "mean": 0.0}, "bad options"),
     ({"kind": "loguniform", "sigma_min": 1.0, "sigma_max": 0.5}, "sigma_max")],
)
def test_bad_noise_is_named(spec, message):
    with pytest.raises(FluxMatchError, match=message):
        make_noise(spec)


def test_weightings():
    sigma = torch.tensor([0.1, 0.5, 2.0])
    lam = sigma**2 * (sigma**2 + 0.25) / 0.25
    for name, (a, b) in {"edm": (lam, lam), "sigma2": (sigma**2, sigma**2), "none": (torch.ones(3), torch.ones(3)), "relaxation": (torch.ones(3), 1 / sigma**2)}.items():
        got_a, got_b = loss_weights(sigma, name, 0.5)
        assert torch.allclose(got_a, a, rtol=1e-6) and torch.allclose(got_b, b, rtol=1e-6), name
        assert torch.equal(loss_weight(sigma, name, 0.5), got_a)
    assert loss_weights(0.5, "relaxation") == (1.0, 4.0)  # a fixed σ: floats
    with pytest.raises(FluxMatchError, match="weighting"):
        loss_weights(sigma, "bogus")


@pytest.mark.parametrize("cls, options", [(FluxMatching, {"dim": 2}), (DenoisingScoreMatching, {})])
def test_one_class_for_either_noise(cls, options):
    fixed, annealed = cls(0.3, **options), cls(noise="edm", **options)
    assert (fixed.noise.kind, fixed.sigma) == ("fixed", 0.3) and (annealed.noise.kind, annealed.sigma) == ("edm", None)
    assert fixed.normaliser is None and annealed.normaliser is not None
    assert fixed.weighting == ("relaxation" if cls is FluxMatching else "none") and annealed.weighting == "edm"
    assert torch.equal(fixed.draw_sigma(3), torch.full((3,), 0.3))
    assert cls(**options).sigma == 0.2236 and cls(noise=0.3, **options).config == fixed.config
    for objective in (fixed, annealed):
        rebuilt = build_objective(json.loads(json.dumps(objective.config)))
        assert type(rebuilt) is cls and rebuilt.config == objective.config
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in objective.state_dict().items()}
    with pytest.raises(FluxMatchError, match="not both"):
        cls(0.3, noise="edm", **options)


def test_fixed_sigma_rows_all_get_sigma():
    seen = []
    field = MLPField(2, (8,))
    record = lambda z, c: (seen.append(c.clone()), field(z, c))[1]  # noqa: E731
    DenoisingScoreMatching(0.4)(record, torch.randn(16, 2))
    FluxMatching(0.4, dim=2)(record, torch.randn(16, 2))
    assert seen and all(bool((c == 0.4).all()) for c in seen)


@pytest.mark.parametrize("cls, options", [(FluxMatching, {"dim": 2}), (FluxMatching, {"estimator": "gradient"}), (DenoisingScoreMatching, {})])
def test_a_fixed_sigma_given_as_noise_is_the_same_objective(cls, options):
    """``sigma=s`` and ``noise=FixedSigma(s)`` are one objective, to the bit."""
    losses = []
    for spec in ({"sigma": 0.3}, {"noise": FixedSigma(0.3)}):
        torch.manual_seed(0)
        field, objective = MLPField(2, (16,)), cls(**spec, **options)
        out = objective(field, torch.ones(32, 2))
        losses.append((out.loss.detach(), torch.autograd.grad(out.loss.mean(), list(field.parameters()))))
    assert torch.equal(losses[0][0], losses[1][0]) and all(torch.equal(a, b) for a, b in zip(losses[0][1], losses[1][1]))


@pytest.mark.parametrize("name", sorted(OLD))
def test_configs_of_fluxmatch_0_1_rebuild_with_the_same_parameters(name):
    """Old run directories load: each 0.1 config rebuilds an objective with its state-dict keys and shapes."""
    objective = build_objective(OLD[name]["config"])
    assert {k: list(v.shape) for k, v in objective.state_dict().items()} == OLD[name]["state"]
    base = OLD[name]["config"].get("base", OLD[name]["config"])
    if base["name"] != "flow":
        inner = objective.base if hasattr(objective, "base") else objective
        assert inner.name == base["name"].removesuffix("_annealed")
        assert (inner.sigma is None) == base["name"].endswith("_annealed")
    rebuilt = build_objective(json.loads(json.dumps(objective.config)))  # today's config of an old run rebuilds the same layout
    assert {k: list(v.shape) for k, v in rebuilt.state_dict().items()} == OLD[name]["state"]
    rebuilt.load_state_dict(objective.state_dict())


def test_old_configs_keep_their_options():
    flux = build_objective(OLD["flux_product"]["config"])
    assert (flux.sigma, flux.estimator.kind, flux.estimator.dynamics) == (0.25, "product", "langevin")
    annealed = build_objective(OLD["flux_annealed_product"]["config"])
    assert annealed.noise.kind == "edm" and annealed.estimator.kind == "product" and annealed.estimator.dynamics == "langevin"
    potential = build_objective(OLD["flux_annealed_potential"]["config"])
    assert potential.estimator.potential.backbone.n_classes == 10 and potential.weighting == "edm" and potential.normaliser is not None
    skew = build_objective(OLD["designed_dsm_annealed"]["config"]).terms[0]
    assert skew.sign == -1.0  # the CLI's skew rewards, and its stored sign is kept
    assert math.isinf(build_objective(OLD["flux_potential"]["config"]).horizon)
