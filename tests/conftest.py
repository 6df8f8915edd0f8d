"""Suite-wide settings, and the torch-fidelity test kit the FID tests share."""

import importlib
import sys
import types

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    # The tests use tiny models: extra intra-op threads only add synchronisation cost, and on a
    # busy 2-core machine OpenMP spin-waiting can make a step a hundred times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _torchvision_stub(mp: pytest.MonkeyPatch) -> None:
    """Put a stub ``torchvision`` into sys.modules when the real one does not import (it cannot
    beside this CPU torch build): the names torch-fidelity 0.4.0 touches at import time
    (``from torchvision.datasets import CIFAR10, STL10, CIFAR100`` are base classes in its
    datasets.py; ``import torchvision.transforms.functional``)."""
    try:
        importlib.import_module("torchvision")
        return
    except Exception:
        pass
    root = types.ModuleType("torchvision")
    datasets = types.ModuleType("torchvision.datasets")
    for name in ("CIFAR10", "CIFAR100", "STL10"):
        setattr(datasets, name, type(name, (), {}))
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    root.datasets, root.transforms, transforms.functional = datasets, transforms, functional
    for module in (root, datasets, transforms, functional):
        mp.setitem(sys.modules, module.__name__, module)


def _random_inception_weights(path) -> None:
    """Save a seeded random InceptionV3 state dict where torch-fidelity's loader reads it
    (``torch.load(path)`` then a strict ``load_state_dict``), with Kaiming-normal convolutions
    so that the features are O(1) rather than vanishing."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    with pytest.MonkeyPatch.context() as mp:  # build the network without its download and load
        mp.setattr(fe, "load_state_dict_from_url", lambda *args, **kwargs: {})
        mp.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *args, **kwargs: None)
        torch.manual_seed(0)
        network = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.nn.init.normal_(network.fc.weight, std=2048**-0.5)
    torch.save(network.state_dict(), path)


@pytest.fixture(scope="session")
def fidelity_kit():
    """``torchvision_stub(monkeypatch)`` and ``random_inception_weights(path)`` for the FID tests."""
    return types.SimpleNamespace(torchvision_stub=_torchvision_stub, random_inception_weights=_random_inception_weights)
