"""The run spec: one replayable description of a run, as small frozen dataclasses.

A run is data × field × objective × sampler, trained by a trainer and judged by an evaluation:

    RunSpec(data=DataSpec, field=FieldSpec, objective=ObjectiveSpec, sampler=SamplerSpec,
            train=TrainSpec, evaluation=EvalSpec)

A field left at ``None`` means "the default for this run": :func:`resolve` fills it from the
data kind (points train at a fixed σ with an MLP, images noise-annealed with a UNet) and from the
field's conditioning (which sampler, how many steps). Only options that apply to the run may be
set: :func:`validate` refuses an option that does not apply (``--dynamics`` with the potential
estimator, ``--sigma`` with annealed noise, ``--hidden`` with a UNet, ...) with one message
naming the option and what it applies to. The resolved spec is written whole into the run's
``config.json`` and is enough to train the same run again.

    >>> spec = resolve(RunSpec(data=DataSpec("8gaussians"), objective=ObjectiveSpec(noise="annealed")))
    >>> spec.field.family, spec.sampler.method, spec.sampler.steps
    ('mlp', 'heun', 18)
    >>> from_dict(to_dict(spec)) == spec
    True
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .errors import FluxMatchError

OBJECTIVES = ("flux", "dsm", "flow")
NOISES = ("fixed", "annealed")
SIGMA_DISTRIBUTIONS = ("edm", "loguniform")
ESTIMATORS = ("potential", "split", "product", "gradient")
DYNAMICS = ("component", "langevin")
HORIZON_SAMPLERS = ("uniform", "exponential")
DIVERGENCES = ("auto", "exact", "hutchinson")
FLOW_PATHS = ("ot", "vp", "ve")
FLOW_COUPLINGS = ("independent", "ot", "exact", "sinkhorn")
FIELD_FAMILIES = ("mlp", "unet", "transformer", "dag")
DESIGN_NAMES = ("mixing", "rotation", "curl", "skew", "sparsity")
LR_SCHEDULES = ("cosine", "constant", "ramp")
PRECISIONS = ("fp32", "bf16", "fp16")
LOGS = ("csv", "tensorboard")
AUGMENTATIONS = ("hflip",)

#: Samplers by the conditioning of the trained field (see :func:`conditioning_of`).
SAMPLERS = {
    "fixed": ("langevin",),
    "sigma": ("heun", "euler", "dopri5", "sde", "pc"),
    "time": ("heun", "euler", "midpoint", "dopri5"),
}
DEFAULT_SAMPLER = {"fixed": ("langevin", 2000), "sigma": ("heun", 18), "time": ("heun", 50)}


@dataclass(frozen=True)
class DataSpec:
    """What to train on.

    Attributes:
        spec: a toy set (ring, 8gaussians, moons, checkerboard, spirals, triangle), ``digits``,
            ``cifar10:PATH`` / ``celeba64:PATH`` (your copy) or a .npy/.npz/.csv file.
        kind: the data kind ("points", "images"); None: the kind that claims ``spec``.
        n: use a random subset of n rows (toy sets: the size of the fixed sample).
        holdout_fraction: files: fraction of rows held out for evaluation.
        augment: "hflip" mirrors each training image left-right with probability 1/2
            (CIFAR-10, CelebA-64; as the paper trains), None for none.
    """

    spec: str = "ring"
    kind: str | None = None
    n: int | None = None
    holdout_fraction: float = 0.2
    augment: str | None = None


@dataclass(frozen=True)
class FieldSpec:
    """The field's family and size (None: the data kind's default).

    Attributes:
        family: "mlp" (points), "unet" (images), "transformer" (trajectories: attention over
            the time axis) or "dag" (points: output i sees only the variables ``graph`` allows);
            noise-annealed runs wrap it in EDM's preconditioning.
        hidden: MLP hidden widths (default (128, 128)); a DAG field's widths per variable
            (default (64, 64)).
        preset: UNet size preset (default "digits"; see :data:`fluxmatch.fields.UNET_PRESETS`).
        class_conditional: condition the field on the data's labels (classifier-free guidance).
        causal: transformer: step t attends only to steps ≤ t (default True), else to all steps.
        width, depth, heads: transformer size (default 64, 2, 4).
        graph: DAG field: its edges "j>i,..." (0-based variables; j > i lets output i see x_j).
    """

    family: str | None = None
    hidden: tuple[int, ...] | None = None
    preset: str | None = None
    class_conditional: bool = False
    causal: bool | None = None
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    graph: str | None = None


@dataclass(frozen=True)
class ObjectiveSpec:
    """The training objective and its noise schedule.

    Attributes:
        name: "flux" (Flux Matching), "dsm" (denoising score matching) or "flow" (conditional
            flow matching, its own probability path).
        noise: "fixed" (one σ) or "annealed" (a continuum of σ); None: the data kind's default.
        sigma: the fixed σ (default 0.2236, σ² = 0.05).
        sigma_distribution: annealed σ distribution, "edm" (log-normal, default) or "loguniform".
        estimator: flux gradient estimator, "split", "potential", "product" or "gradient" (None:
            "split" for noise-annealed MLP and UNet fields, else "potential"; :func:`default_estimator`).
        dynamics, horizon_sampler, divergence: options of the product and gradient estimators.
        path, coupling: options of flow matching (defaults "ot", "independent").
        design: design-term weights, e.g. ``{"rotation": 0.05}`` (flux and dsm).
        options: further constructor options of the objective (e.g. ``{"horizon": 2.0}``).
    """

    name: str = "flux"
    noise: str | None = None
    sigma: float | None = None
    sigma_distribution: str | None = None
    estimator: str | None = None
    dynamics: str | None = None
    horizon_sampler: str | None = None
    divergence: str | None = None
    path: str | None = None
    coupling: str | None = None
    design: dict = dataclasses.field(default_factory=dict)
    options: dict = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class SamplerSpec:
    """How the trained field is sampled (None: follows from the field's conditioning).

    Attributes:
        method: fixed σ: "langevin"; σ-conditioned: "heun", "euler", "dopri5" (probability-flow
            ODE), "sde" (reverse SDE), "pc" (predictor-corrector); t-conditioned (flow): "heun",
            "euler", "midpoint", "dopri5".
        steps: Langevin steps (2000), noise levels (18) or ODE steps (50).
        step_size: Langevin step size ε (0.005).
        guidance: classifier-free guidance scale of class-conditional fields (1.0).
        sigma_min, sigma_max, rho: EDM's noise schedule (0.002, 80, 7).
    """

    method: str | None = None
    steps: int | None = None
    step_size: float | None = None
    guidance: float | None = None
    sigma_min: float | None = None
    sigma_max: float | None = None
    rho: float | None = None


@dataclass(frozen=True)
class TrainSpec:
    """Training settings (see :class:`fluxmatch.train.TrainConfig`).

    ``steps`` and ``batch_size`` default by data kind (points 2000 × 512, images 6000 × 128,
    trajectories 3000 × 256); ``grad_clip`` None turns clipping off; ``snapshot_every`` N keeps
    the EMA weights every N steps in the run's ``snapshots/`` (curves through training).
    ``lr_schedule`` "ramp" with ``lr_rampup`` and ``ema_halflife``/``ema_rampup`` are EDM's
    schedules (in training images); ``precision`` (fp32, bf16, fp16), ``compile``, ``workers``
    and ``log`` (csv, tensorboard) are described in :class:`fluxmatch.train.TrainConfig`.
    """

    steps: int | None = None
    batch_size: int | None = None
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    ema_decay: float = 0.999
    grad_clip: float | None = 1.0
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 500
    snapshot_every: int | None = None
    lr_rampup: int | None = None
    ema_halflife: float | None = None
    ema_rampup: float | None = None
    precision: str = "fp32"
    compile: bool = False
    workers: int = 0
    log: str = "csv"


@dataclass(frozen=True)
class EvalSpec:
    """Evaluation after training: ``n`` samples (points 2000, images 1000) against held-out data;
    ``nll_n`` held-out images whose NLL in bits/dim is measured (σ-conditioned image runs, 200)."""

    n: int | None = None
    nll_n: int | None = None


@dataclass(frozen=True)
class RunSpec:
    """One run: data × field × objective × sampler, with its training and evaluation settings."""

    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    field: FieldSpec = dataclasses.field(default_factory=FieldSpec)
    objective: ObjectiveSpec = dataclasses.field(default_factory=ObjectiveSpec)
    sampler: SamplerSpec = dataclasses.field(default_factory=SamplerSpec)
    train: TrainSpec = dataclasses.field(default_factory=TrainSpec)
    evaluation: EvalSpec = dataclasses.field(default_factory=EvalSpec)


SECTIONS = {f.name: f.type for f in fields(RunSpec)}
_SECTION_TYPES = {"data": DataSpec, "field": FieldSpec, "objective": ObjectiveSpec, "sampler": SamplerSpec, "train": TrainSpec, "evaluation": EvalSpec}


# ---------------------------------------------------------------------------------------------
# flat options: the CLI's flags, each the path of one spec field

#: CLI option (dest) → (section, field).
FLAT_OPTIONS = {
    "data": ("data", "spec"),
    "data_kind": ("data", "kind"),
    "objective": ("objective", "name"),
    "noise": ("objective", "noise"),
    "sigma": ("objective", "sigma"),
    "sigma_distribution": ("objective", "sigma_distribution"),
    "estimator": ("objective", "estimator"),
    "dynamics": ("objective", "dynamics"),
    "horizon_sampler": ("objective", "horizon_sampler"),
    "divergence": ("objective", "divergence"),
    "path": ("objective", "path"),
    "coupling": ("objective", "coupling"),
    "hidden": ("field", "hidden"),
    "unet": ("field", "preset"),
    "class_conditional": ("field", "class_conditional"),
    "field": ("field", "family"),
    "causal": ("field", "causal"),
    "width": ("field", "width"),
    "depth": ("field", "depth"),
    "heads": ("field", "heads"),
    "graph": ("field", "graph"),
    "sampler": ("sampler", "method"),
    "sample_steps": ("sampler", "steps"),
    "step_size": ("sampler", "step_size"),
    "guidance": ("sampler", "guidance"),
    "steps": ("train", "steps"),
    "batch_size": ("train", "batch_size"),
    "lr": ("train", "lr"),
    "grad_clip": ("train", "grad_clip"),
    "seed": ("train", "seed"),
    "device": ("train", "device"),
    "checkpoint_every": ("train", "checkpoint_every"),
    "snapshot_every": ("train", "snapshot_every"),
    "lr_schedule": ("train", "lr_schedule"),
    "lr_rampup": ("train", "lr_rampup"),
    "ema_decay": ("train", "ema_decay"),
    "ema_halflife": ("train", "ema_halflife"),
    "ema_rampup": ("train", "ema_rampup"),
    "precision": ("train", "precision"),
    "compile": ("train", "compile"),
    "workers": ("train", "workers"),
    "log": ("train", "log"),
    "augment": ("data", "augment"),
    "eval_samples": ("evaluation", "n"),
    "nll_samples": ("evaluation", "nll_n"),
}
_FLAG_OF = {path: "--" + dest.replace("_", "-") for dest, path in FLAT_OPTIONS.items()}


def flag(section: str, name: str) -> str:
    """The CLI flag of a spec field (e.g. ``--dynamics``), or its dotted path when it has none."""
    return _FLAG_OF.get((section, name), f"{section}.{name}")


def with_options(spec: RunSpec, options: dict) -> RunSpec:
    """``spec`` with flat CLI-style options applied (keys of :data:`FLAT_OPTIONS` and the design
    term names ``mixing``, ``rotation``, ``curl``, ``skew``, ``sparsity``)."""
    changes: dict[str, dict] = {}
    design = dict(spec.objective.design)
    for key, value in options.items():
        if key in DESIGN_NAMES:
            design[key] = value
            continue
        if key not in FLAT_OPTIONS:
            raise FluxMatchError(f"unknown option {key!r}: expected one of {', '.join(sorted([*FLAT_OPTIONS, *DESIGN_NAMES]))}")
        section, name = FLAT_OPTIONS[key]
        check_types(_SECTION_TYPES[section], {name: value}, "option")
        changes.setdefault(section, {})[name] = value
    if design != spec.objective.design:
        changes.setdefault("objective", {})["design"] = design
    if (changes.get("data") or {}).get("spec") not in (None, spec.data.spec):
        # new data: what the kind defaulted for the old data no longer applies
        spec = replace(spec, data=DataSpec(spec=changes["data"]["spec"]))
    return replace(spec, **{section: replace(getattr(spec, section), **values) for section, values in changes.items()})


# ---------------------------------------------------------------------------------------------
# dict and file round trips


_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "dict": "an object", "bool": "true or false", "tuple[int, ...]": "a list of integers", "None": "null"}


def _type_ok(hint: str, value) -> bool:
    """Whether ``value`` fits a spec field's annotation (``int | None``, ``tuple[int, ...]``, ...)."""
    options = [h.strip() for h in hint.split("|")]
    if value is None:
        return "None" in options
    for option in options:
        if option == "bool" and isinstance(value, bool):
            return True
        if isinstance(value, bool):
            continue
        if (option == "int" and isinstance(value, int)) or (option == "float" and isinstance(value, (int, float))):
            return True
        if (option == "str" and isinstance(value, str)) or (option == "dict" and isinstance(value, dict)):
            return True
        if option.startswith("tuple") and isinstance(value, (tuple, list)):
            return True
    return False


def check_types(cls, values: dict, where: str) -> None:
    """Refuse a setting whose value is not of its field's type (one message naming it)."""
    hints = {f.name: str(f.type) for f in fields(cls)}
    section = next((k for k, v in _SECTION_TYPES.items() if v is cls), cls.__name__)
    for name, value in values.items():
        if name in hints and not _type_ok(hints[name], value):
            words = " or ".join(_TYPE_WORDS.get(h.strip(), h.strip()) for h in hints[name].split("|"))
            raise FluxMatchError(f"{where}: {flag(section, name)} must be {words}, got {value!r}")


def _section_from_dict(cls, values, where: str):
    if not isinstance(values, dict):
        raise FluxMatchError(f"{where} must be an object of settings, got {type(values).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise FluxMatchError(f"{where}: unknown setting(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
    values = dict(values)
    check_types(cls, values, where)
    if isinstance(values.get("hidden"), list):
        values["hidden"] = tuple(values["hidden"])
    return cls(**values)


def from_dict(config: dict, where: str = "run spec") -> RunSpec:
    """A :class:`RunSpec` from its dict form (unknown sections or settings are refused)."""
    if not isinstance(config, dict):
        raise FluxMatchError(f"{where} must be an object with sections {', '.join(SECTIONS)}")
    unknown = sorted(k for k in set(config) - set(SECTIONS) if not k.startswith("_"))
    if unknown:
        raise FluxMatchError(f"{where}: unknown section(s) {', '.join(unknown)}; expected {', '.join(SECTIONS)}")
    parts = {name: _section_from_dict(_SECTION_TYPES[name], config[name], f"{where}, section {name!r}") for name in SECTIONS if name in config}
    return RunSpec(**parts)


def to_dict(spec: RunSpec) -> dict:
    """The JSON-ready dict form of a spec (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def _read_mapping(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FluxMatchError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise FluxMatchError(f"{path}: not a readable text file ({err})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise FluxMatchError(f"{path}: reading YAML needs PyYAML (pip install 'fluxmatch[yaml]'), or give the spec as JSON") from None
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise FluxMatchError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    else:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as err:
            raise FluxMatchError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise FluxMatchError(f"{path}: expected an object (a run spec, or a run's config.json)")
    return config


def load_spec(path) -> tuple[RunSpec, dict]:
    """Read a spec file: a run spec (JSON or YAML), a run directory's ``config.json`` (its
    ``run`` section), or a file of flat train options (the older ``--config`` format).

    Returns the spec (flat options applied to the default spec) and the flat options found
    (empty unless the file is in the flat format), so that a caller can validate them as flags.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    config = _read_mapping(path)
    if isinstance(config.get("run"), dict):
        return from_dict(config["run"], f"{path}, section 'run'"), {}
    if "fluxmatch_version" in config:
        raise FluxMatchError(f"{path} is the config of a run written before run specs existed: it cannot be replayed; train it again with flags")
    if any(isinstance(config.get(name), dict) for name in SECTIONS):
        return from_dict(config, str(path)), {}
    flat = {key.replace("-", "_"): value for key, value in config.items() if not key.startswith("_")}
    if isinstance(flat.get("hidden"), list):
        flat["hidden"] = tuple(flat["hidden"])
    if isinstance(flat.get("grad_clip"), str) and flat["grad_clip"].lower() == "none":
        flat["grad_clip"] = None
    return with_options(RunSpec(), flat), flat


# ---------------------------------------------------------------------------------------------
# presets: named specs


PRESETS = {
    "ring": RunSpec(),
    "digits": RunSpec(data=DataSpec("digits")),
    "cifar10": RunSpec(
        data=DataSpec("cifar10:/path/to/cifar-10-batches-bin"),
        field=FieldSpec(preset="cifar10"),
        sampler=SamplerSpec(steps=18),
        train=TrainSpec(steps=390625, batch_size=512, lr=1e-3, grad_clip=None, device="cuda"),
        evaluation=EvalSpec(n=1000, nll_n=0),
    ),
    "celeba64": RunSpec(
        data=DataSpec("celeba64:/path/to/img_align_celeba"),
        field=FieldSpec(preset="celeba64"),
        sampler=SamplerSpec(steps=40),
        train=TrainSpec(steps=200000, batch_size=256, lr=2e-4, grad_clip=None, device="cuda"),
        evaluation=EvalSpec(n=1000, nll_n=0),
    ),
}
PRESET_NOTES = {
    "ring": "the demo: Flux Matching on the ring at σ = 0.2236, an MLP 128-128, Langevin sampling",
    "digits": "the CPU-scale image run: noise-annealed flux on scikit-learn's 8×8 digits, EDM-preconditioned UNet",
    "cifar10": "CIFAR-10 at the paper's scale (EDM DDPM++ UNet, 56M parameters; batch 512, lr 1e-3, 200 Mimg, 18 Heun levels); GPU; pass --data cifar10:PATH",
    "celeba64": "CelebA-64 (EDM's 64×64 UNet, 61M parameters; batch 256, lr 2e-4, 40 Heun levels); GPU; pass --data celeba64:PATH",
}


def preset(name: str) -> RunSpec:
    """The named preset spec (see :data:`PRESETS`)."""
    if name not in PRESETS:
        raise FluxMatchError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


# ---------------------------------------------------------------------------------------------
# resolution and validation


def conditioning_of(spec: RunSpec) -> str:
    """What the trained field is conditioned on, which decides its sampler: "time" (flow
    matching), "sigma" (noise-annealed) or "fixed" (one σ)."""
    if spec.objective.name == "flow":
        return "time"
    return "sigma" if spec.objective.noise == "annealed" else "fixed"


def _choice(value, choices, what: str):
    if value is not None and value not in choices:
        raise FluxMatchError(f"unknown {what} {value!r}: expected one of {', '.join(map(str, choices))}")


#: The largest integer setting (seeds are offset and counts multiplied without overflowing int64).
MAX_INTEGER = 2**62


def _integer(value, what: str, minimum: int = 1):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_INTEGER):
        raise FluxMatchError(f"{what} must be an integer from {minimum} to 2**62, got {value!r}")


def _number(value, what: str, positive: bool = True):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (positive and value <= 0):
        raise FluxMatchError(f"{what} must be a {'positive ' if positive else ''}finite number, got {value!r}")


def _check_scale_options(spec: RunSpec) -> None:
    """The training options for scale: EDM's schedules, precision, compile, workers, logs, augmentation."""
    t = spec.train
    _choice(t.precision, PRECISIONS, "precision (--precision)")
    _choice(t.log, LOGS, "log (--log)")
    _choice(spec.data.augment, AUGMENTATIONS, "augmentation (--augment)")
    _integer(t.lr_rampup, "the learning-rate ramp-up (--lr-rampup, training images)")
    if t.lr_rampup is not None and t.lr_schedule != "ramp":
        raise FluxMatchError(f"--lr-rampup applies to the ramp schedule (--lr-schedule ramp); this run's schedule is {t.lr_schedule}")
    _number(t.ema_halflife, "the EMA half-life (--ema-halflife, training images)")
    _number(t.ema_rampup, "the EMA half-life's ramp-up ratio (--ema-rampup)")
    if t.ema_rampup is not None and t.ema_halflife is None:
        raise FluxMatchError("--ema-rampup applies with an EMA half-life (--ema-halflife)")
    _integer(t.workers, "the number of data-loading workers (--workers)", minimum=0)
    if not isinstance(t.compile, bool):
        raise FluxMatchError(f"compile must be true or false, got {t.compile!r}")


def _check_values(spec: RunSpec) -> None:
    """Each setting on its own: names among the known ones, numbers in range."""
    o, s, t, e, f = spec.objective, spec.sampler, spec.train, spec.evaluation, spec.field
    _integer(spec.data.n, "the data subset size (data.n)")
    _number(spec.data.holdout_fraction, "the held-out fraction", positive=False)
    if not 0 <= spec.data.holdout_fraction < 1:
        raise FluxMatchError(f"the held-out fraction must lie in [0, 1), got {spec.data.holdout_fraction!r}")
    _choice(o.name, OBJECTIVES, "objective")
    _choice(o.noise, NOISES, "noise schedule (--noise)")
    _choice(o.sigma_distribution, SIGMA_DISTRIBUTIONS, "σ distribution")
    _choice(o.estimator, ESTIMATORS, "flux estimator")
    _choice(o.dynamics, DYNAMICS, "reference dynamics")
    _choice(o.horizon_sampler, HORIZON_SAMPLERS, "horizon sampler")
    _choice(o.divergence, DIVERGENCES, "divergence method")
    _choice(o.path, FLOW_PATHS, "flow-matching path")
    _choice(o.coupling, FLOW_COUPLINGS, "flow-matching coupling")
    _choice(f.family, FIELD_FAMILIES, "field family")
    _choice(t.lr_schedule, LR_SCHEDULES, "learning-rate schedule")
    _check_scale_options(spec)
    unknown = sorted(set(o.design) - set(DESIGN_NAMES))
    if unknown:
        raise FluxMatchError(f"unknown design term(s) {', '.join(unknown)}: expected some of {', '.join(DESIGN_NAMES)}")
    for name, weight in o.design.items():
        _number(weight, f"the weight of --{name}", positive=False)
    if o.sigma is not None:
        _number(o.sigma, "σ (--sigma)")
    for name in ("steps", "batch_size", "checkpoint_every", "snapshot_every"):
        _integer(getattr(t, name), name.replace("_", " "))
    _integer(t.seed, "seed", minimum=0)
    _number(t.lr, "the learning rate")
    _number(t.grad_clip, "grad_clip")
    if not (isinstance(t.ema_decay, (int, float)) and 0 <= t.ema_decay < 1):
        raise FluxMatchError(f"the EMA decay must lie in [0, 1), got {t.ema_decay!r}")
    _integer(s.steps, "the number of sampler steps", minimum=0 if s.method == "langevin" else 1)
    for name in ("step_size", "sigma_min", "sigma_max", "rho"):
        _number(getattr(s, name), f"the sampler's {name.replace('_', ' ')}")
    _number(s.guidance, "the guidance scale", positive=False)
    if s.guidance is not None and s.guidance < 0:
        raise FluxMatchError(f"the guidance scale must be a finite number ≥ 0, got {s.guidance!r}")
    _integer(e.n, "the number of evaluation samples", minimum=2)
    _integer(e.nll_n, "the number of NLL samples", minimum=0)
    for name in ("width", "depth", "heads"):
        _integer(getattr(f, name), f"the transformer's {name} (--{name})")
    if f.graph is not None and (not isinstance(f.graph, str) or not f.graph.strip()):
        raise FluxMatchError(f"--graph takes the DAG's edges as text like '0>1,1>2', got {f.graph!r}")
    if f.graph is not None:
        from .fields.dag import parse_graph

        parse_graph(f.graph)  # syntax and cycles now; the number of nodes is checked against the data when the field is built
    if f.hidden is not None and (not isinstance(f.hidden, tuple) or not f.hidden or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in f.hidden)):
        raise FluxMatchError(f"hidden widths must be one or more positive integers like 128,128, got {f.hidden!r}")


def _set(spec: RunSpec, section: str, name: str) -> bool:
    """Whether a setting differs from its unset default."""
    value = getattr(getattr(spec, section), name)
    default = getattr(_SECTION_TYPES[section](), name)
    return value != default


def _refuse(spec: RunSpec, section: str, name: str, applies_to: str, here: str) -> None:
    if _set(spec, section, name):
        raise FluxMatchError(f"{flag(section, name)} applies to {applies_to}; {here}")


def _check_split(spec: RunSpec) -> None:
    """The split estimator's needs: noise annealing (its score head is DSM over σ) and a field
    family with a two-headed form (an MLP or a UNet)."""
    if spec.objective.noise == "fixed":
        raise FluxMatchError("--estimator split trains over a continuum of σ (its score head is noise-annealed DSM); drop --noise fixed, or use --estimator potential at a fixed σ")
    if spec.field.family in ("transformer", "dag"):
        raise FluxMatchError(f"--estimator split needs a field with a score and a flux head (an MLP or a UNet); --field {spec.field.family} has one head, so use --estimator potential")


def validate(spec: RunSpec, kind=None) -> None:
    """Refuse settings that do not apply to the run (one message naming the option and what it
    applies to). ``kind`` is the run's :class:`~fluxmatch.kinds.DataKind`, when known."""
    _check_values(spec)
    o = spec.objective
    name = o.name
    if name == "flow":
        for key in ("noise", "sigma", "sigma_distribution", "estimator", "dynamics", "horizon_sampler", "divergence"):
            _refuse(spec, "objective", key, "the flux and dsm objectives", "this run trains flow matching")
        if o.design:
            raise FluxMatchError(f"design terms (--{', --'.join(o.design)}) act on flux or dsm fields, not on flow matching")
    else:
        for key in ("path", "coupling"):
            _refuse(spec, "objective", key, "flow matching (--objective flow)", f"this run trains {name}")
    if name == "dsm":
        for key in ("estimator", "dynamics", "horizon_sampler", "divergence"):
            _refuse(spec, "objective", key, "the flux objective", "this run trains dsm")
    if name == "flux" and o.estimator in (None, "potential", "split"):
        for key in ("dynamics", "horizon_sampler", "divergence"):
            _refuse(spec, "objective", key, "the flux objective's product and gradient estimators (--estimator product|gradient)", f"this run uses the {o.estimator} estimator" if o.estimator else "this run uses the default estimator (split when noise-annealed, else potential)")
    if name == "flux" and o.estimator == "split":
        _check_split(spec)
    if o.noise == "annealed":
        _refuse(spec, "objective", "sigma", "fixed-σ training (--noise fixed)", "this run is noise-annealed (its σ is drawn from --sigma-distribution)")
    elif o.noise == "fixed":
        _refuse(spec, "objective", "sigma_distribution", "noise-annealed training (--noise annealed)", "this run trains at one fixed σ")
    if kind is not None:
        if spec.data.augment is not None and getattr(kind, "name", None) != "images":
            raise FluxMatchError(f"--augment {spec.data.augment} applies to image data (cifar10:PATH, celeba64:PATH); this run's data is {kind.name}")
        kind.validate(spec)
    conditioning = conditioning_of(spec) if (o.noise is not None or name == "flow") else None
    _check_sampler(spec, conditioning)
    _check_field(spec, conditioning)


_TRANSFORMER_OPTIONS = ("causal", "width", "depth", "heads")
FAMILY_WORDS = {"mlp": "an MLP", "unet": "a UNet", "transformer": "a transformer", "dag": "a DAG-masked MLP"}
#: Sizes of the structured fields by default (:meth:`fluxmatch.kinds.DataKind.resolve` fills them in).
TRANSFORMER_DEFAULTS = {"causal": True, "width": 64, "depth": 2, "heads": 4}
DAG_HIDDEN = (64, 64)


def _check_family_options(spec: RunSpec) -> None:
    """Options of one field family refused on another (the family as set, when it is set)."""
    f = spec.field
    here = f"this run's field is {FAMILY_WORDS.get(f.family, f.family)}"
    if f.family in ("unet", "transformer"):
        _refuse(spec, "field", "hidden", "MLP fields and DAG fields", here + (" (--unet sets its size)" if f.family == "unet" else " (--width, --depth, --heads set its size)"))
    if f.family != "unet":
        _refuse(spec, "field", "preset", "UNet fields (image data)", here)
    if f.family != "transformer":
        for key in _TRANSFORMER_OPTIONS:
            _refuse(spec, "field", key, "transformer fields (--field transformer, trajectory data)", here)
    if f.family != "dag":
        _refuse(spec, "field", "graph", "DAG fields (--field dag)", here)
    elif f.graph is None:
        raise FluxMatchError("a DAG field needs its graph: --graph with edges like '0>1,1>2' (j>i lets output i see variable j)")
    if f.family in ("transformer", "dag") and f.class_conditional:
        raise FluxMatchError(f"--class-conditional applies to UNet fields (labelled image data); {here}")


def _check_field(spec: RunSpec, conditioning: str | None) -> None:
    f = spec.field
    if f.family is not None:
        _check_family_options(spec)
    if f.class_conditional and conditioning in ("fixed", "time"):
        raise FluxMatchError("--class-conditional applies to noise-annealed runs (classifier-free guidance down the noise schedule); this run trains at one fixed σ")
    if spec.sampler.guidance is not None and conditioning == "sigma" and not f.class_conditional:
        raise FluxMatchError("--guidance applies to class-conditional runs (--class-conditional)")


def _check_sampler(spec: RunSpec, conditioning: str | None) -> None:
    s = spec.sampler
    if conditioning is None:
        return
    if s.method is not None and s.method not in SAMPLERS[conditioning]:
        what = {"fixed": "a field trained at one fixed σ", "sigma": "a noise-annealed (σ-conditioned) field", "time": "a flow-matching velocity"}[conditioning]
        raise FluxMatchError(f"--sampler {s.method} does not apply to {what}: its samplers are {', '.join(SAMPLERS[conditioning])}")
    if conditioning != "fixed":
        _refuse(spec, "sampler", "step_size", "Langevin sampling of fixed-σ runs", "this run samples down a noise schedule" if conditioning == "sigma" else "this run samples its ODE")
    if conditioning != "sigma":
        for key in ("sigma_min", "sigma_max", "rho"):
            _refuse(spec, "sampler", key, "the noise schedule of noise-annealed runs", "this run is not noise-annealed")
        _refuse(spec, "sampler", "guidance", "class-conditional noise-annealed runs", "this run is not noise-annealed")
        _refuse(spec, "evaluation", "nll_n", "noise-annealed image runs (NLL by the probability-flow ODE)", "this run is not noise-annealed")


def default_estimator(noise: str, family: str) -> str:
    """The flux estimator a run gets by default: "split" for noise-annealed MLP and UNet fields
    (docs/estimators.md), "potential" otherwise (a fixed σ; transformer and DAG fields)."""
    return "split" if noise == "annealed" and family in ("mlp", "unet") else "potential"


def resolve(spec: RunSpec, kind=None) -> RunSpec:
    """The spec with every default filled in (from the data kind and the field's conditioning),
    after :func:`validate`. Resolving a resolved spec changes nothing."""
    if kind is None:
        from .kinds import kind_for

        kind = kind_for(spec.data)
    spec = replace(spec, data=replace(spec.data, kind=kind.name))
    validate(spec)
    o = spec.objective
    if o.name != "flow" and o.noise is None:
        o = replace(o, noise=kind.default_noise)
    if o.name != "flow":
        if o.noise == "fixed" and o.sigma is None:
            o = replace(o, sigma=0.2236)
        if o.noise == "annealed" and o.sigma_distribution is None:
            o = replace(o, sigma_distribution="edm")
    if o.name == "flux" and o.estimator is None:
        o = replace(o, estimator=default_estimator(o.noise, spec.field.family or kind.default_family))
    if o.name == "flow":
        o = replace(o, path=o.path or "ot", coupling=o.coupling or "independent")
    spec = replace(spec, objective=o)
    validate(spec, kind)
    spec = kind.resolve(spec)
    spec = replace(spec, sampler=_resolved_sampler(spec))
    validate(spec, kind)
    return spec


def _resolved_sampler(spec: RunSpec) -> SamplerSpec:
    s = spec.sampler
    conditioning = conditioning_of(spec)
    method, steps = DEFAULT_SAMPLER[conditioning]
    s = replace(s, method=s.method or method, steps=steps if s.steps is None else s.steps)
    if conditioning == "fixed":
        return replace(s, step_size=0.005 if s.step_size is None else s.step_size)
    if conditioning == "sigma":
        s = replace(s, sigma_min=s.sigma_min or 0.002, sigma_max=s.sigma_max or 80.0, rho=s.rho or 7.0)
        if spec.field.class_conditional and s.guidance is None:
            s = replace(s, guidance=1.0)
    return s


#: Settings a resumed run may change: how long it trains, where, how often it checkpoints, and
#: how it is sampled and evaluated afterwards (``"*"``: every setting of the section).
RESUMABLE_CHANGES = (
    ("train", "steps"), ("train", "device"), ("train", "checkpoint_every"), ("train", "snapshot_every"), ("train", "compile"), ("train", "log"),
    ("sampler", "*"), ("evaluation", "*"),
)


def spec_changes(old: RunSpec, new: RunSpec, allowed=RESUMABLE_CHANGES) -> list[tuple[str, object, object]]:
    """The settings that differ between two specs, outside ``allowed``: (flag or dotted path, old, new).

    >>> spec_changes(RunSpec(), with_options(RunSpec(), {"lr": 0.01, "steps": 10, "eval_samples": 50}))
    [('--lr', 0.001, 0.01)]
    """
    a, b = to_dict(old), to_dict(new)
    changes = []
    for section in SECTIONS:
        for name in sorted(set(a[section]) | set(b[section])):
            free = (section, name) in allowed or (section, "*") in allowed
            if not free and a[section].get(name) != b[section].get(name):
                changes.append((flag(section, name), a[section].get(name), b[section].get(name)))
    return changes


def log_every(steps: int) -> int:
    """The training log's interval: 20 rows per run, at most every 50 steps."""
    return min(50, max(1, steps // 20))


def dumps(spec: RunSpec) -> str:
    """The spec as indented JSON (what ``--dry-run`` prints)."""
    return json.dumps(to_dict(spec), indent=2)


__all__ = [
    "RunSpec",
    "DataSpec",
    "FieldSpec",
    "ObjectiveSpec",
    "SamplerSpec",
    "TrainSpec",
    "EvalSpec",
    "PRESETS",
    "FLAT_OPTIONS",
    "preset",
    "resolve",
    "validate",
    "with_options",
    "from_dict",
    "to_dict",
    "load_spec",
    "conditioning_of",
    "dumps",
    "spec_changes",
    "RESUMABLE_CHANGES",
]
