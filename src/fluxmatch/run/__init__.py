"""Whole runs: a :class:`~fluxmatch.config.RunSpec` trained, sampled, evaluated and plotted.

    >>> import fluxmatch as fm
    >>> spec = fm.RunSpec(data=fm.DataSpec("ring"), train=fm.TrainSpec(steps=20, batch_size=64),
    ...                   field=fm.FieldSpec(hidden=(16, 16)), sampler=fm.SamplerSpec(steps=20),
    ...                   evaluation=fm.EvalSpec(n=100))
    >>> metrics = fm.train_run(spec, getfixture("tmp_path") / "ring", progress=False)
    >>> sorted(k for k in metrics if k.startswith("w2") or k == "floor_w2")
    ['floor_w2', 'w2']
"""

from .build import build_field, build_objective
from .evaluate import evaluate_run, evaluation_pair, sample_run
from .run import Run, legacy_spec, open_run
from .sampling import draw, sampler_for
from .snapshots import snapshot_runs
from .train import fit, train_run

__all__ = ["Run", "open_run", "legacy_spec", "build_field", "build_objective", "fit", "train_run", "sample_run", "evaluate_run", "evaluation_pair", "draw", "sampler_for", "snapshot_runs"]
