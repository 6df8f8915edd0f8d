"""The run spec: defaults by data kind and conditioning, round trips, and refused options."""

import json

import pytest

from fluxmatch import config as c
from fluxmatch.errors import FluxMatchError


def resolved(**sections):
    return c.resolve(c.RunSpec(**sections))


def test_points_default_to_fixed_sigma_and_langevin():
    spec = resolved()
    assert spec.data.kind == "points" and spec.objective.noise == "fixed" and spec.objective.sigma == 0.2236
    assert spec.field.family == "mlp" and spec.field.hidden == (128, 128)
    assert (spec.sampler.method, spec.sampler.steps, spec.sampler.step_size) == ("langevin", 2000, 0.005)
    assert (spec.train.steps, spec.train.batch_size, spec.evaluation.n) == (2000, 512, 2000)


def test_annealed_points_sample_with_heun():
    spec = resolved(data=c.DataSpec("8gaussians"), objective=c.ObjectiveSpec(noise="annealed"))
    assert spec.objective.sigma is None and spec.objective.sigma_distribution == "edm"
    assert (spec.sampler.method, spec.sampler.steps, spec.sampler.step_size) == ("heun", 18, None)
    assert (spec.sampler.sigma_min, spec.sampler.sigma_max) == (0.002, 80.0)


def test_images_default_to_annealed_unet():
    spec = resolved(data=c.DataSpec("digits"))
    assert spec.data.kind == "images" and spec.objective.noise == "annealed" and spec.field.family == "unet"
    assert spec.field.preset == "digits" and spec.field.hidden is None
    assert (spec.train.steps, spec.train.batch_size, spec.evaluation.n, spec.evaluation.nll_n) == (6000, 128, 1000, 200)
    fixed = resolved(data=c.DataSpec("digits"), objective=c.ObjectiveSpec(noise="fixed"))
    assert fixed.sampler.method == "langevin" and fixed.evaluation.nll_n is None


def test_noise_annealed_mlp_and_unet_fields_default_to_the_split_estimator():
    assert resolved(data=c.DataSpec("digits")).objective.estimator == "split"
    assert resolved(data=c.DataSpec("8gaussians"), objective=c.ObjectiveSpec(noise="annealed")).objective.estimator == "split"
    assert resolved().objective.estimator == "potential"  # a fixed σ
    assert resolved(data=c.DataSpec("digits"), objective=c.ObjectiveSpec(noise="fixed")).objective.estimator == "potential"
    assert resolved(data=c.DataSpec("springs")).objective.estimator == "potential"  # a transformer has one head
    with pytest.raises(FluxMatchError, match="--estimator split trains over a continuum of σ"):
        resolved(objective=c.ObjectiveSpec(estimator="split"))
    with pytest.raises(FluxMatchError, match="--field transformer has one head"):
        resolved(data=c.DataSpec("springs"), objective=c.ObjectiveSpec(estimator="split"))
    with pytest.raises(FluxMatchError, match="--dynamics applies to .* this run uses the default estimator"):
        resolved(data=c.DataSpec("digits"), objective=c.ObjectiveSpec(dynamics="langevin"))


def test_flow_samples_its_ode():
    spec = resolved(objective=c.ObjectiveSpec(name="flow"))
    assert spec.objective.noise is None and (spec.objective.path, spec.objective.coupling) == ("ot", "independent")
    assert (spec.sampler.method, spec.sampler.steps) == ("heun", 50)


def test_resolution_is_idempotent_and_round_trips():
    for name in c.PRESETS:
        spec = c.resolve(c.preset(name))
        assert c.resolve(spec) == spec
        assert c.from_dict(json.loads(c.dumps(spec))) == spec


@pytest.mark.parametrize(
    "sections, fragment",
    [
        (dict(objective=c.ObjectiveSpec(dynamics="langevin")), "--dynamics applies to the flux objective's product and gradient estimators"),
        (dict(objective=c.ObjectiveSpec(name="dsm", estimator="gradient")), "--estimator applies to the flux objective"),
        (dict(objective=c.ObjectiveSpec(noise="annealed", sigma=0.3)), "--sigma applies to fixed-σ training"),
        (dict(objective=c.ObjectiveSpec(noise="fixed", sigma_distribution="edm")), "--sigma-distribution applies to noise-annealed"),
        (dict(objective=c.ObjectiveSpec(name="flow", noise="fixed")), "--noise applies to the flux and dsm objectives"),
        (dict(objective=c.ObjectiveSpec(path="vp")), "--path applies to flow matching"),
        (dict(objective=c.ObjectiveSpec(name="flow", design={"rotation": 0.1})), "design terms"),
        (dict(objective=c.ObjectiveSpec(noise="annealed"), sampler=c.SamplerSpec(step_size=0.01)), "--step-size applies to Langevin sampling"),
        (dict(sampler=c.SamplerSpec(method="sde")), "--sampler sde does not apply"),
        (dict(sampler=c.SamplerSpec(guidance=2.0)), "--guidance applies to"),
        (dict(evaluation=c.EvalSpec(nll_n=10)), "--nll-samples applies to"),
        (dict(field=c.FieldSpec(preset="cifar10")), "--unet applies to UNet fields"),
        (dict(data=c.DataSpec("digits"), field=c.FieldSpec(hidden=(8,))), "--hidden applies to MLP fields"),
        (dict(field=c.FieldSpec(class_conditional=True)), "--class-conditional applies to labelled image data"),
        (dict(data=c.DataSpec("digits"), field=c.FieldSpec(class_conditional=True), objective=c.ObjectiveSpec(noise="fixed")), "--class-conditional applies to noise-annealed"),
        (dict(data=c.DataSpec("digits"), objective=c.ObjectiveSpec(name="flow")), "--objective flow applies to points data"),
        (dict(objective=c.ObjectiveSpec(noise="sometimes")), "unknown noise schedule"),
        (dict(objective=c.ObjectiveSpec(sigma=-1.0)), "σ"),
        (dict(train=c.TrainSpec(steps=0)), "steps"),
        (dict(data=c.DataSpec("no-such-data")), "unknown data set"),
    ],
)
def test_options_that_do_not_apply_are_refused(sections, fragment):
    with pytest.raises(FluxMatchError, match=None) as err:
        resolved(**sections)
    assert fragment in str(err.value)


def test_gradient_estimator_takes_its_options_on_images():
    spec = resolved(data=c.DataSpec("digits"), objective=c.ObjectiveSpec(estimator="gradient", dynamics="langevin"))
    assert spec.objective.dynamics == "langevin" and spec.objective.noise == "annealed"


def test_flat_options_and_unknown_keys():
    spec = c.with_options(c.RunSpec(), {"data": "moons", "sigma": 0.3, "hidden": (16,), "rotation": 0.1, "eval_samples": 50})
    assert spec.data.spec == "moons" and spec.objective.sigma == 0.3 and spec.field.hidden == (16,)
    assert spec.objective.design == {"rotation": 0.1} and spec.evaluation.n == 50
    with pytest.raises(FluxMatchError, match="unknown option"):
        c.with_options(c.RunSpec(), {"sigmaa": 1.0})
    with pytest.raises(FluxMatchError, match="unknown setting"):
        c.from_dict({"train": {"stepz": 3}})
    with pytest.raises(FluxMatchError, match="unknown section"):
        c.from_dict({"trainer": {}})


def test_spec_files_json_yaml_and_flat(tmp_path):
    spec = c.resolve(c.preset("digits"))
    (tmp_path / "spec.json").write_text(c.dumps(spec))
    assert c.load_spec(tmp_path / "spec.json")[0] == spec
    (tmp_path / "spec.yaml").write_text("data:\n  spec: moons\ntrain:\n  steps: 7\n")
    loaded, flat = c.load_spec(tmp_path / "spec.yaml")
    assert loaded.data.spec == "moons" and loaded.train.steps == 7 and flat == {}
    (tmp_path / "flat.json").write_text(json.dumps({"_about": "old", "data": "digits", "unet": "digits", "steps": 12, "grad_clip": "none"}))
    loaded, flat = c.load_spec(tmp_path / "flat.json")
    assert loaded.data.spec == "digits" and loaded.train.steps == 12 and loaded.train.grad_clip is None and flat["steps"] == 12
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FluxMatchError, match="not valid JSON"):
        c.load_spec(tmp_path / "bad.json")
    with pytest.raises(FluxMatchError, match="not found"):
        c.load_spec(tmp_path / "missing.json")
