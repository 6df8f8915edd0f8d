"""A run as it was during training: its EMA weights kept every ``--snapshot-every`` steps.

    >>> import fluxmatch as fm
    >>> spec = fm.RunSpec(train=fm.TrainSpec(steps=20, batch_size=64, snapshot_every=10),
    ...                   field=fm.FieldSpec(hidden=(16, 16)), sampler=fm.SamplerSpec(steps=5), evaluation=fm.EvalSpec(n=8))
    >>> _ = fm.train_run(spec, getfixture("tmp_path") / "ring", progress=False)
    >>> [step for step, _ in snapshot_runs(getfixture("tmp_path") / "ring")]
    [10, 20]
"""

from __future__ import annotations

import copy
from dataclasses import replace

from ..errors import FluxMatchError
from ..train.checkpoint import list_snapshots, read_tensors
from .run import Run, open_run


def snapshot_runs(run) -> list[tuple[int, Run]]:
    """(step, run) for every snapshot of a run, by step: the run with its field's EMA weights as
    they were at that step (in eval mode), ready for :func:`~fluxmatch.run.draw` and the metrics.

    Raises:
        FluxMatchError: a snapshot file does not fit the run's field.
    """
    run = open_run(run)
    found = []
    for step, path in list_snapshots(run.run_dir):
        field = copy.deepcopy(run.field)
        try:
            field.load_state_dict(read_tensors(path))
        except RuntimeError as err:
            raise FluxMatchError(f"the snapshot {path} does not fit the run's field: {str(err).splitlines()[0]}") from None
        found.append((step, replace(run, field=field.eval())))
    return found


__all__ = ["snapshot_runs"]
