"""A trained run as the pipeline sees it: its resolved spec, its EMA field and its data kind.

Run directories written before run specs existed (no ``run`` section in config.json) are read
through :func:`legacy_spec`, which rebuilds the spec their config implies, so they can still be
sampled and evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..config import DataSpec, EvalSpec, FieldSpec, ObjectiveSpec, RunSpec, SamplerSpec, TrainSpec, conditioning_of, from_dict, resolve
from ..errors import FluxMatchError
from ..kinds import DataKind, get_kind
from ..train import LoadedRun, load_run


@dataclass
class Run:
    """A trained run.

    Attributes:
        run_dir: its directory.
        spec: the resolved :class:`~fluxmatch.config.RunSpec` it was trained with.
        field: the EMA field, in eval mode.
        config: the parsed config.json (``data`` holds the training data's shape, per-coordinate
            mean and std, and units).
        kind: its :class:`~fluxmatch.kinds.DataKind`.
    """

    run_dir: Path
    spec: RunSpec
    field: torch.nn.Module
    config: dict
    kind: DataKind

    @property
    def conditioning(self) -> str:
        """"fixed", "sigma" or "time": what the field is conditioned on (decides the sampler)."""
        return conditioning_of(self.spec)

    @property
    def sigma(self) -> float | None:
        """The fixed σ the field was trained at (None for σ- or t-conditioned fields)."""
        return self.spec.objective.sigma if self.conditioning == "fixed" else None

    @property
    def data_meta(self) -> dict:
        return self.config.get("data") or {}

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one data point, e.g. (2,) or (1, 8, 8)."""
        return tuple(self.data_meta.get("dim") or (self.config["field"]["dim"],))


def run_device(run: Run, device: str | None = None) -> torch.device:
    """Where a run is sampled and evaluated: ``device`` when given (checked), else the device it
    was trained on when this machine has it (a GPU run on a GPU machine stays on the GPU), else
    the CPU."""
    from ..train.trainer import resolve_device

    if device is not None:
        return resolve_device(device)
    trained = str(run.spec.train.device or "cpu")
    if trained == "auto" or trained.startswith("cuda"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        try:
            return resolve_device(trained)
        except FluxMatchError:  # cuda:3 on a machine with fewer GPUs
            return torch.device("cuda")
    return torch.device("cpu")


def open_run(run) -> Run:
    """A :class:`Run` from a run directory (or a Run, returned as is)."""
    if isinstance(run, Run):
        return run
    loaded: LoadedRun = load_run(run)
    section = loaded.config.get("run")
    where = str(loaded.run_dir / "config.json")
    spec = from_dict(section, f"{where}, section 'run'") if isinstance(section, dict) else legacy_spec(loaded.config, where)
    kind = get_kind(spec.data.kind) if spec.data.kind else None
    spec = resolve(spec, kind)
    return Run(loaded.run_dir, spec, loaded.field, loaded.config, get_kind(spec.data.kind))


def legacy_spec(config: dict, where: str) -> RunSpec:
    """The spec implied by a config.json written before run specs (fluxmatch ≤ 0.1)."""
    objective = dict(config["objective"])
    if objective.get("name") == "designed":
        objective = dict(objective.get("base") or {})
    name = str(objective.get("name", ""))
    base = name.removesuffix("_annealed")
    if base not in ("flux", "dsm", "flow"):
        raise FluxMatchError(f"{where}: unknown objective {name!r}; this run directory cannot be read by this version of fluxmatch")
    data = config.get("data") or {}
    stored = config.get("sampler") or {}
    train = config.get("train") or {}
    annealed = name.endswith("_annealed")
    if base == "flow":
        o = ObjectiveSpec(name="flow")
        ode = stored.get("ode") or {}
        s = SamplerSpec(method=ode.get("method"), steps=ode.get("steps"))
    elif annealed:
        o = ObjectiveSpec(name=base, noise="annealed")
        a = stored.get("annealed") or {}
        s = SamplerSpec(method=a.get("method"), steps=a.get("steps"), sigma_min=a.get("sigma_min"), sigma_max=a.get("sigma_max"), rho=a.get("rho"))
    else:
        o = ObjectiveSpec(name=base, noise="fixed", sigma=objective.get("sigma"))
        s = SamplerSpec(method="langevin", steps=stored.get("n_steps"), step_size=stored.get("step_size"))
    conditional = bool(data.get("n_classes")) and bool(((config.get("field") or {}).get("backbone") or {}).get("n_classes"))
    if conditional:
        guidance = (stored.get("annealed") or {}).get("guidance")
        s = replace(s, guidance=guidance)
    kind = "images" if len(data.get("dim") or ()) == 3 else "points"
    family = "unet" if kind == "images" else "mlp"
    return RunSpec(
        data=DataSpec(spec=str(data.get("spec", "")), kind=kind),
        field=FieldSpec(family=family, class_conditional=conditional),
        objective=o,
        sampler=s,
        train=TrainSpec(steps=train.get("steps"), batch_size=train.get("batch_size"), seed=int(train.get("seed", 0))),
        evaluation=EvalSpec(n=stored.get("n")),
    )
