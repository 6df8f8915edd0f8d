"""House rules of the run layer, checked on the source: short functions, short parameter lists,
no import cycles, one version."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fluxmatch

SRC = Path(__file__).resolve().parents[1] / "src" / "fluxmatch"
RUN_LAYER = ["config.py", "cli.py", "compare.py", "kinds", "run", "experiments"]
MAX_LINES, MAX_PARAMETERS = 60, 8


def _functions():
    for entry in RUN_LAYER:
        path = SRC / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield file.relative_to(SRC), node


def test_run_layer_functions_are_short():
    long = [f"{file}:{node.name} ({node.end_lineno - node.lineno + 1} lines)" for file, node in _functions() if node.end_lineno - node.lineno + 1 > MAX_LINES]
    assert not long, long


def test_run_layer_parameter_lists_are_short():
    def count(node):
        a = node.args
        return len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - (1 if a.args and a.args[0].arg in ("self", "cls") else 0)

    wide = [f"{file}:{node.name} ({count(node)})" for file, node in _functions() if count(node) > MAX_PARAMETERS]
    assert not wide, wide


def test_no_import_cycles():
    tool = Path(__file__).resolve().parents[2] / "shared" / "tools" / "import_cycles.py"
    if not tool.is_file():
        pytest.skip("the shared import-cycle tool is not beside this checkout")
    result = subprocess.run([sys.executable, str(tool), str(SRC.parent), "fluxmatch"], capture_output=True, text=True, timeout=120)
    assert "0 import cycles" in result.stdout, result.stdout


def test_one_version():
    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
    pyproject = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fluxmatch.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", fluxmatch.__version__)


def test_docs_cited_by_the_code_exist():
    cited = set()
    for file in SRC.rglob("*.py"):
        cited |= set(re.findall(r"docs/[A-Za-z_]+\.md", file.read_text()))
    missing = sorted(c for c in cited if not (SRC.parents[1] / c).is_file())
    assert not missing, missing


def test_ruff_is_clean():
    pytest.importorskip("ruff")
    root = SRC.parents[1]
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks", "conftest.py"], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
