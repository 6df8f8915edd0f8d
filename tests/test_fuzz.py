"""Property-based tests (hypothesis) of the command line and the data loaders.

Whatever the options and inputs, ``fluxmatch`` ends with exit status 0, or 2 and one line
``fluxmatch: error: ...``: never a traceback, never an "internal error", and never a changed file
outside the run directory it was told to write. The examples are derived from a fixed seed, so
every CI run tries the same inputs; ``FLUXMATCH_FUZZ_EXAMPLES=N`` tries N per test instead (the
campaign in docs/results.md).
"""

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxmatch.cli import main
from fluxmatch.data import DataSource, load_data
from fluxmatch.errors import FluxMatchError

EXAMPLES = int(os.environ.get("FLUXMATCH_FUZZ_EXAMPLES", "0"))
BASE = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck), print_blob=False)


def fuzz(examples: int) -> settings:
    """The fuzzing settings with ``examples`` examples (or FLUXMATCH_FUZZ_EXAMPLES)."""
    return settings(BASE, max_examples=EXAMPLES or examples)

# values of every type an option may be given, hostile ones included (numbers stay small: a fuzzed run must be quick)
NUMBERS = ["-1", "0", "1e-9", "1e39", "-1e39", "nan", "inf", "-inf", "abc", "", "1,2", "０"]
SMALL_INTS = ["-1", "0", "x", "", "1.5", "nan", "1e3"]
PATHS = ["good.npy", "nan.npy", "const.npy", "big.npy", "empty.npy", "vector.npy", "cube.npy", "garbage.npy", "objects.npy", "two.npz",
         "text.csv", "header.csv", "bad.txt", "missing.npy", "adir", "afile", "alink", "afile/under.npy", "latin1.json", "types.json",
         "flat.json", "spec.json", "ring", "8gaussians", "digits", "cifar10:/nonexistent", "celeba64:adir", "nonsense", ""]


def option(valid, hostile=NUMBERS):
    """A value strategy: a valid value two times in three, a hostile one otherwise."""
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), st.sampled_from(hostile))


TRAIN_OPTIONS = {
    "--data": option(["ring", "8gaussians", "moons", "good.npy", "header.csv", "cube.npy", "vector.npy"], PATHS),
    "--objective": option(["flux", "dsm", "flow"], ["bogus", ""]), "--noise": option(["fixed", "annealed"], ["x"]),
    "--sigma": option(["0.3", "0.1", "1"]), "--sigma-distribution": option(["edm", "loguniform"], ["x"]),
    "--estimator": option(["potential", "split", "product", "gradient"], ["x"]), "--dynamics": option(["component", "langevin"], ["x"]),
    "--horizon-sampler": option(["exponential", "uniform", "learned"], ["x"]), "--divergence": option(["auto", "exact", "hutchinson"], ["x"]),
    "--path": option(["ot", "vp"], ["x"]), "--coupling": option(["independent", "ot"], ["x"]), "--steps": option(["1", "2", "3"], SMALL_INTS),
    "--batch-size": option(["1", "2", "16"], SMALL_INTS), "--seed": option(["0", "1", "7"]), "--hidden": option(["8,8", "8", "4,4,4"], ["0,8", "-1", "x", "", "8,,8"]),
    "--lr": option(["1e-3", "0.1", "10"]), "--grad-clip": option(["none", "1", "0.01"]), "--device": option(["cpu", "auto"], ["cuda", "tpu", "cuda:7", ""]),
    "--eval-samples": option(["4", "20", "33"], SMALL_INTS), "--sample-steps": option(["0", "1", "3"], SMALL_INTS), "--step-size": option(["0.005", "0.5", "10"]),
    "--sampler": option(["langevin", "heun", "euler", "midpoint", "dopri5", "sde", "pc"], ["x"]),
    "--preset": option(["ring"], ["digits", "cifar10", "x"]), "--config": option(["spec.json", "flat.json"], PATHS), "--mixing": option(["0", "0.01", "1"]),
    "--rotation": option(["0.5", "-1"]), "--curl": option(["0.1"]), "--skew": option(["0.1"]), "--sparsity": option(["0.1"]),
    "--unet": option(["digits"], ["cifar10", "x"]), "--guidance": option(["0", "1", "3"]), "--nll-samples": option(["0", "2"], SMALL_INTS),
    "--checkpoint-every": option(["1", "2", "500"], SMALL_INTS), "--data-kind": option(["points", "images"], ["x"]),
}
TRAIN_FLAGS = ["--resume", "--overwrite", "--class-conditional", "--dry-run"]
SAMPLE_OPTIONS = {
    "--n": option(["1", "5", "9"], SMALL_INTS), "--seed": option(["0", "3"]), "--steps": option(["0", "2", "5"], SMALL_INTS),
    "--step-size": option(["0.01", "1"]), "--sampler": option(["langevin"], ["heun", "pc", "x"]), "--guidance": option(["1"]),
    "--label": option(["0"], SMALL_INTS), "--out": option(["s.npy", "new/dir/s.npy"], ["adir", "afile", "alink", "afile/x.npy", "", "run"]),
    "--run": option(["run"], ["adir", "afile", "missing", "run/config.json", ""]), "--data": option(["ring", "good.npy", "moons"], PATHS),
}
STUDY_OPTIONS = {
    "--steps": st.sampled_from(["-1", "0", "x", "1.5", ""]), "--seed": st.sampled_from(NUMBERS), "--n": st.sampled_from(SMALL_INTS),
    "--weight": st.sampled_from(NUMBERS), "--objectives": st.sampled_from(["flux", "dsm,flow", "x", "", "flux,flux"]),
    "--nfe": st.sampled_from(["5", "0", "x", "5,,5"]), "--noise": st.sampled_from(["fixed", "annealed", "x"]), "--out": st.sampled_from(["study", "afile", "adir"]),
    "--data": st.sampled_from(PATHS),
}


def _workspace(root: Path) -> None:
    """Data and path fixtures of every kind in ``root`` (the cwd of the fuzzed commands)."""
    rng = np.random.default_rng(0)
    np.save(root / "good.npy", rng.normal(size=(120, 2)).astype(np.float32))
    np.save(root / "nan.npy", np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 1.0]]))
    np.save(root / "const.npy", np.ones((50, 2)))
    np.save(root / "big.npy", rng.normal(size=(50, 2)) * 1e6)
    np.save(root / "empty.npy", np.zeros((0, 2)))
    np.save(root / "vector.npy", rng.normal(size=60))
    np.save(root / "cube.npy", rng.normal(size=(60, 2, 2)))
    np.save(root / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.savez(root / "two.npz", a=np.ones((5, 2)), b=np.zeros((5, 2)))
    (root / "garbage.npy").write_bytes(bytes(rng.integers(0, 256, 300, dtype=np.uint8)))
    (root / "text.csv").write_text("1,2\n3,x\n")
    (root / "header.csv").write_text("a,b\n" + "\n".join(f"{x:.3f},{y:.3f}" for x, y in rng.normal(size=(80, 2))))
    (root / "bad.txt").write_text("1 2\n")
    (root / "latin1.json").write_bytes(b"{\"train\": {\"steps\": \xe9}}")
    (root / "types.json").write_text(json.dumps({"train": {"steps": "many", "lr": [1]}, "field": {"hidden": "wide"}}))
    (root / "flat.json").write_text(json.dumps({"steps": 2, "hidden": [8, 8], "grad_clip": "none", "lr": "fast"}))
    (root / "spec.json").write_text(json.dumps({"data": {"spec": "moons"}, "train": {"steps": 2, "batch_size": 16}, "field": {"hidden": [8]}}))
    (root / "adir").mkdir()
    (root / "adir" / "keep.txt").write_text("mine")
    (root / "afile").write_text("mine")
    os.symlink(root / "afile", root / "alink")


def _snapshot(root: Path, skip: tuple[Path, ...]) -> dict:
    files = {}
    for path in root.rglob("*"):
        if any(path == s or s in path.parents for s in skip):
            continue
        files[path.relative_to(root)] = path.readlink() if path.is_symlink() else (path.read_bytes() if path.is_file() else "dir")
    return files


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
    return code, err.getvalue()


def _check(root: Path, argv: list[str], writes: tuple[str, ...]) -> None:
    """Run argv in root; assert the exit contract and that nothing outside ``writes`` changed."""
    skip = tuple(root / w for w in writes if w)
    before = _snapshot(root, skip)
    code, err = _run(argv)
    if os.environ.get("FLUXMATCH_FUZZ_LOG"):  # the campaign's record: one JSON line per input
        with open(os.environ["FLUXMATCH_FUZZ_LOG"], "a") as log:
            log.write(json.dumps({"argv": argv, "code": code, "err": err.strip()[-300:]}) + "\n")
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("fluxmatch: error: "), (argv, err)
    after = _snapshot(root, skip)
    new = {p for p in set(after) - set(before) if not p.name.startswith(".")}
    changed = {p for p in before if after.get(p) != before[p]}
    assert not changed, (argv, changed)
    allowed_new = {Path("runs")}
    assert all(p in allowed_new or p.parts[0] == "runs" for p in new), (argv, new)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    _workspace(root)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        quick = ["--steps", "2", "--batch-size", "16", "--hidden", "8,8", "--eval-samples", "20", "--sample-steps", "3", "--no-progress"]
        assert _run(["train", "--out", "run", *quick])[0] == 0
        yield root
    finally:
        os.chdir(cwd)


def _options(draw, table: dict, n_max: int) -> list[str]:
    names = draw(st.lists(st.sampled_from(sorted(table)), max_size=n_max, unique=True))
    argv = []
    for name in names:
        argv += [name, draw(table[name])]
    return argv


@st.composite
def train_argv(draw):
    argv = _options(draw, TRAIN_OPTIONS, 3) + draw(st.lists(st.sampled_from(TRAIN_FLAGS), max_size=1))
    quick = ["--steps", "2", "--batch-size", "16", "--eval-samples", "20", "--no-progress"]
    if "--data" in argv and argv[argv.index("--data") + 1] == "digits" or "--preset" in argv:
        quick += ["--sample-steps", "2", "--nll-samples", "0"]
    else:
        quick += ["--hidden", "8,8", "--sample-steps", "3"]
    out = draw(option(["runs/a", "runs/b"], ["run", "adir", "afile", "afile/x", "alink", ""]))
    return ["train", *quick, *argv, "--out", out], out


@given(train_argv())
@fuzz(40)
def test_train_never_gives_a_traceback_or_touches_other_files(workspace, case):
    argv, out = case
    _check(workspace, argv, (out, "runs"))


@st.composite
def sample_argv(draw):
    command = draw(st.sampled_from(["sample", "evaluate"]))
    table = {k: v for k, v in SAMPLE_OPTIONS.items() if command == "sample" or k not in ("--out", "--guidance", "--label")}
    table = {k: v for k, v in table.items() if command == "evaluate" or k != "--data"}
    argv = _options(draw, table, 4)
    if "--run" not in argv:
        argv += ["--run", "run"]
    if "--n" not in argv:
        argv += ["--n", "8"]
    argv.append("--no-progress")
    out = argv[argv.index("--out") + 1] if "--out" in argv else None
    return [command, *argv], out


@given(sample_argv())
@fuzz(40)
def test_sample_and_evaluate_never_give_a_traceback(workspace, case):
    argv, out = case
    writes = ("run", out or "", "new")
    _check(workspace, argv, writes)


@st.composite
def study_argv(draw):
    command = draw(st.sampled_from(["compare", "experiment"]))
    table = {k: v for k, v in STUDY_OPTIONS.items() if (command == "compare") == (k not in ("--n", "--weight"))}
    argv = _options(draw, {k: v for k, v in table.items() if k != "--steps"}, 3)
    argv += ["--steps", draw(STUDY_OPTIONS["--steps"])]  # every study example has a bad --steps: a study must refuse it before training
    if command == "experiment":
        argv = [draw(st.sampled_from(["controllable", "mixing", "spiral", "x"])), *argv]
    return [command, *argv, "--no-progress"], argv[argv.index("--out") + 1] if "--out" in argv else "runs"


@given(study_argv())
@fuzz(25)
def test_studies_refuse_bad_options_in_one_line(workspace, case):
    argv, out = case
    _check(workspace, argv, (out, "runs"))


arrays = st.one_of(
    st.tuples(st.integers(0, 40), st.integers(0, 4)).flatmap(lambda s: st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=s[0] * s[1], max_size=s[0] * s[1]).map(lambda v: np.array(v, dtype=np.float64).reshape(s))),
    st.lists(st.integers(-(2**40), 2**40), max_size=30).map(np.array),
    st.lists(st.booleans(), max_size=10).map(np.array),
    st.lists(st.text(max_size=3), max_size=5).map(np.array),
)


@given(arrays, st.sampled_from([".npy", ".npz", ".csv", ".bin"]), st.booleans())
@fuzz(80)
def test_data_files_load_or_are_refused_with_one_error(tmp_path_factory, array, suffix, corrupt):
    path = tmp_path_factory.mktemp("data") / f"x{suffix}"
    if suffix == ".npy":
        np.save(path, array)
    elif suffix == ".npz":
        np.savez(path, data=array)
    else:
        np.savetxt(path, np.atleast_2d(array), delimiter=",", fmt="%s") if array.size else path.write_text("")
    if corrupt and path.stat().st_size:
        payload = path.read_bytes()
        path.write_bytes(payload[: len(payload) // 2])
    try:
        rows = load_data(str(path))
        source = DataSource.from_spec(str(path), seed=0)
    except FluxMatchError as err:
        assert str(err) and "\n" not in str(err).strip()
        return
    assert rows.dtype.is_floating_point and bool(rows.isfinite().all()) and rows.shape[0] >= 1
    assert len(source) + (0 if source.held_out is None else source.held_out.shape[0]) == rows.shape[0]


JSON_VALUES = st.sampled_from([None, True, False, 0, -1, 1, 2, 1.5, -0.5, 1e39, 10**30, float("nan"), "", "x", "ring", [], [1], [8, 8], ["a"], {}, {"a": 1}])


def _spec_fields():
    from dataclasses import fields

    from fluxmatch.config import RunSpec

    return [(section.name, f.name) for section in fields(RunSpec) for f in fields(section.default_factory())]


@st.composite
def spec_file(draw):
    """A run spec with a few of its settings replaced by values of any JSON type."""
    spec = {"data": {"spec": "ring"}, "field": {"hidden": [8, 8]}, "train": {"steps": 2, "batch_size": 16}, "sampler": {"steps": 3}, "evaluation": {"n": 20}}
    for section, name in draw(st.lists(st.sampled_from(_spec_fields()), min_size=1, max_size=3, unique=True)):
        spec.setdefault(section, {})[name] = draw(JSON_VALUES)
    if draw(st.booleans()):
        spec[draw(st.sampled_from(["data", "train", "bogus"]))] = draw(JSON_VALUES)
    return spec


@given(spec_file())
@fuzz(60)
def test_spec_files_of_any_types_give_a_spec_or_one_error(workspace, spec):
    (workspace / "fuzzed.json").write_text(json.dumps(spec))
    _check(workspace, ["train", "--config", "fuzzed.json", "--dry-run"], ())


@pytest.fixture(scope="module")
def edited_runs(workspace, tmp_path_factory):
    """A pristine trained run to copy and edit by hand."""
    return workspace / "run"


@given(st.sampled_from(["config.json", "trainer.json"]), st.data())
@fuzz(40)
def test_hand_edited_run_files_give_one_error(workspace, edited_runs, name, data):
    import shutil

    copy = workspace / "edited"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(edited_runs, copy, ignore=shutil.ignore_patterns(".lock"))
    config = json.loads((copy / name).read_text())
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                paths.append((*path, key))
                walk(value, (*path, key))

    walk(config, ())
    path = data.draw(st.sampled_from(paths))
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = data.draw(JSON_VALUES)
    (copy / name).write_text(json.dumps(config))
    command = data.draw(st.sampled_from([["sample", "--run", "edited", "--n", "4", "--out", "edited/s.npy"], ["evaluate", "--run", "edited", "--n", "8"],
                                         ["train", "--out", "edited", "--resume", "--steps", "3", "--no-progress"]]))
    _check(workspace, command, ("edited",))
