"""What a kind of data brings to a run, and the registry of kinds.

A :class:`DataKind` owns everything about runs that depends on what the data *is*: which specs
it claims, how it loads them (with their held-out split), the defaults of a run on it (noise
schedule, field family, steps, batch, evaluation size), the units its samples are reported in,
its metric suite and its plots. The run pipeline (:mod:`fluxmatch.run`) only calls these
methods, so a new kind of data (trajectories, cells) plugs in with :func:`register_kind`
without touching the pipeline.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import FluxMatchError


@dataclass(frozen=True)
class Evaluation:
    """What a kind's metric suite and plots get.

    Attributes:
        run: the trained run (:class:`fluxmatch.run.Run`: spec, EMA field, directory).
        samples: (n, *event_shape) float32 samples in model units.
        seed: seeds any random choice of the metrics.
        data: the data to compare with (a spec), or None for the run's own held-out data.
        nfe: field evaluations per sample of the sampler that drew them.
        source: the run's :class:`~fluxmatch.data.DataSource` when already loaded (else the
            kind loads it again from the spec).
    """

    run: object
    samples: np.ndarray
    seed: int
    data: str | None = None
    nfe: int | None = None
    source: object = None


class DataKind(ABC):
    """A kind of data (points, images, ...). Subclasses set the class attributes and implement
    the abstract methods; instances are registered with :func:`register_kind`.

    Attributes:
        name: the kind's name in specs (``DataSpec.kind``).
        default_noise: "fixed" or "annealed", the noise schedule of flux and dsm by default.
        default_family: the field family by default ("mlp", "unet").
        default_steps, default_batch, default_eval: training steps, batch size, evaluation samples.
    """

    name: str = ""
    default_noise: str = "fixed"
    default_family: str = "mlp"
    default_steps: int = 2000
    default_batch: int = 512
    default_eval: int = 2000

    @abstractmethod
    def claims(self, spec: str) -> bool:
        """Whether a data spec (a name or path) is of this kind when no kind is named."""

    @abstractmethod
    def load(self, data, seed: int):
        """The :class:`~fluxmatch.data.DataSource` for a :class:`~fluxmatch.config.DataSpec`."""

    def validate(self, spec) -> None:  # noqa: B027 - most kinds accept every setting
        """Refuse settings of a (partly resolved) run spec that this kind cannot honour."""

    def resolve(self, spec):
        """Fill the kind's defaults into a run spec (field family and size, steps, batch, evaluation)."""
        from ..config import DAG_HIDDEN, TRANSFORMER_DEFAULTS, conditioning_of

        f, t, e = spec.field, spec.train, spec.evaluation
        family = f.family or self.default_family
        hidden = {"mlp": (128, 128), "dag": DAG_HIDDEN}.get(family)
        f = replace(f, family=family, hidden=f.hidden or hidden, preset=f.preset or ("digits" if family == "unet" else None))
        if family == "transformer":
            f = replace(f, **{k: v if getattr(f, k) is None else getattr(f, k) for k, v in TRANSFORMER_DEFAULTS.items()})
        t = replace(t, steps=t.steps or self.default_steps, batch_size=t.batch_size or self.default_batch)
        e = replace(e, n=e.n or self.default_eval)
        if conditioning_of(spec) == "sigma" and e.nll_n is None:
            e = replace(e, nll_n=self.default_nll(spec))
        return replace(spec, field=f, train=t, evaluation=e)

    def default_nll(self, spec) -> int:
        """Held-out points whose NLL a noise-annealed run measures by default (0: none)."""
        return 0

    def to_data_units(self, samples: np.ndarray, data_meta: dict) -> np.ndarray:
        """Samples in model units mapped to the data's own units (identity by default)."""
        return samples

    def reload(self, run):
        """The run's own :class:`~fluxmatch.data.DataSource`, loaded again from its spec and seed,
        after checking it is the data the run was trained on (its stored fingerprint): a file that
        changed since would give a "held-out" split holding training rows."""
        source = self.load(run.spec.data, run.spec.train.seed)
        stored = run.config.get("data_fingerprint")
        if stored is not None and stored != source.fingerprint():
            raise FluxMatchError(
                f"the data {run.spec.data.spec} has changed since the run {run.run_dir} was trained on it (its fingerprint differs), "
                "so its held-out split can no longer be rebuilt; restore the original data, or evaluate against another data set (--data)"
            )
        return source

    @abstractmethod
    def evaluation_rows(self, run, data, n: int, seed: int, source=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two disjoint samples of up to n rows the run never trained on, (held, reference):
        what samples are compared with, and the second sample of the data-vs-data floor."""

    @abstractmethod
    def metrics(self, ev: Evaluation) -> dict:
        """The kind's metric suite on samples of a run (a JSON-ready dict)."""

    @abstractmethod
    def plots(self, ev: Evaluation, out) -> list[str]:
        """Draw the kind's figures into the directory ``out``; the file names written."""

    def summary(self, metrics: dict) -> list[str]:
        """Lines the CLI prints after training (the headline metrics)."""
        return []


KINDS: dict[str, DataKind] = {}


def register_kind(kind: DataKind) -> DataKind:
    """Add a kind to the registry (a later kind of the same name replaces the earlier)."""
    if not isinstance(kind, DataKind) or not kind.name:
        raise FluxMatchError("register_kind takes a DataKind instance with a name")
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> DataKind:
    """The registered kind called ``name``."""
    if name not in KINDS:
        raise FluxMatchError(f"unknown data kind {name!r}: expected one of {', '.join(KINDS)}")
    return KINDS[name]


def kind_for(data) -> DataKind:
    """The kind of a :class:`~fluxmatch.config.DataSpec`: the named kind, else the first
    registered kind that claims the spec (images claim their names, points toy sets and files)."""
    if data.kind is not None:
        return get_kind(data.kind)
    for kind in reversed(list(KINDS.values())):
        if kind.claims(str(data.spec)):
            return kind
    from ..data import unknown_data

    raise unknown_data(data.spec)


def finite_or_raise(samples: np.ndarray, where: str) -> None:
    """Raise when some samples are NaN or inf (the sampler diverged)."""
    bad = int((~np.isfinite(samples.reshape(samples.shape[0], -1)).all(1)).sum())
    if bad:
        raise FluxMatchError(f"{bad} of {samples.shape[0]} samples are NaN or inf: the sampler diverged ({where}); try a smaller step size or more steps")


def distance_table(metrics: dict) -> list[str]:
    """The sample distances (W2, sliced W2, MMD², energy) beside their floors, as printed lines."""
    lines = [f"{'metric':<10} {'samples':>10} {'floor':>10}"]
    for key in ("w2", "sliced_w2", "mmd", "energy"):
        lines.append(f"{key:<10} {format_number(metrics.get(key)):>10} {format_number(metrics.get('floor_' + key)):>10}")
    return lines


def format_number(value) -> str:
    """A metric for a printed table: four significant digits, "n/a" when missing or not finite."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"
