"""The trajectories kind: what it claims, its defaults, and the field options it refuses."""

import numpy as np
import pytest

import fluxmatch as fm
from fluxmatch.config import resolve, with_options
from fluxmatch.errors import FluxMatchError
from fluxmatch.kinds import kind_for


def spec(**options):
    return with_options(fm.RunSpec(), options)


def test_springs_and_rank_3_files_are_trajectories(tmp_path):
    np.save(tmp_path / "t.npy", np.zeros((10, 5, 2), np.float32))
    np.save(tmp_path / "p.npy", np.zeros((10, 2), np.float32))
    assert kind_for(fm.DataSpec("springs")).name == "trajectories"
    assert kind_for(fm.DataSpec(str(tmp_path / "t.npy"))).name == "trajectories"
    assert kind_for(fm.DataSpec(str(tmp_path / "p.npy"))).name == "points"
    assert kind_for(fm.DataSpec("ring")).name == "points"


def test_trajectory_runs_default_to_a_noise_annealed_causal_transformer():
    s = resolve(spec(data="springs"))
    assert s.data.kind == "trajectories" and s.objective.noise == "annealed"
    f = s.field
    assert (f.family, f.causal, f.width, f.depth, f.heads, f.hidden) == ("transformer", True, 64, 2, 4, None)
    assert (s.train.steps, s.train.batch_size, s.evaluation.n, s.sampler.method) == (3000, 256, 2000, "heun")
    full = resolve(spec(data="springs", causal=False, width=32, heads=2))
    assert (full.field.causal, full.field.width, full.field.heads) == (False, 32, 2)


def test_a_dag_field_takes_a_graph_on_points():
    s = resolve(spec(data="ring", field="dag", graph="0>1"))
    assert s.field.family == "dag" and s.field.hidden == (64, 64) and s.field.graph == "0>1"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"data": "ring", "field": "transformer"}, "--field transformer applies to trajectory data"),
        ({"data": "springs", "field": "dag", "graph": "0>1"}, "--field dag applies to points"),
        ({"data": "springs", "field": "unet"}, "--field unet applies to image data"),
        ({"data": "digits", "field": "transformer"}, "does not apply to image data"),
        ({"data": "ring", "field": "dag"}, "a DAG field needs its graph"),
        ({"data": "ring", "causal": False}, "--causal applies to transformer fields"),
        ({"data": "ring", "width": 32}, "--width applies to transformer fields"),
        ({"data": "ring", "graph": "0>1"}, "--graph applies to DAG fields"),
        ({"data": "springs", "hidden": (8,)}, "--hidden applies to MLP fields and DAG fields"),
        ({"data": "springs", "width": 0}, "width .* must be an integer"),
        ({"data": "ring", "field": "dag", "graph": "  "}, "--graph takes the DAG's edges"),
        ({"data": "ring", "field": "dag", "graph": "0>1,1>0"}, "cycle 0 → 1 → 0"),
        ({"data": "ring", "field": "dag", "graph": "a;b"}, "bad edge"),
        ({"data": "ring", "field": "dag", "graph": "0>100000"}, "at most 4096 nodes"),
    ],
)
def test_options_that_do_not_apply_are_refused(options, message):
    with pytest.raises(FluxMatchError, match=message):
        resolve(spec(**options))
