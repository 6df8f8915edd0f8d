"""Suite-wide settings."""

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
