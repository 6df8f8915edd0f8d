"""Docstring examples run under pytest (``--doctest-modules``) with ``torch`` and the public API
in scope, one thread, and the working directory in a fresh temporary folder (examples that train
write their run directories there)."""

import pytest
import torch

import fluxmatch


@pytest.fixture(autouse=True)
def _doctest_setup(request, doctest_namespace, tmp_path, monkeypatch):
    if isinstance(request.node, pytest.DoctestItem):
        doctest_namespace.update({"torch": torch, "fm": fluxmatch, **{name: getattr(fluxmatch, name) for name in fluxmatch.__all__}})
        monkeypatch.chdir(tmp_path)
        torch.manual_seed(0)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(threads)
    else:
        yield
