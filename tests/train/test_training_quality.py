"""A short training really learns: flux and DSM fields beat the untrained field by a wide margin."""

import pytest
import torch

from fluxmatch.data import DataSource
from fluxmatch.fields import MLPField
from fluxmatch.metrics import wasserstein2
from fluxmatch.objectives import DenoisingScoreMatching, FluxMatching
from fluxmatch.samplers import langevin
from fluxmatch.train import TrainConfig, Trainer

pytestmark = pytest.mark.slow  # every test here trains a model


def sample_w2(field, data, n=600):
    gen = torch.Generator().manual_seed(11)
    x0 = data.data.mean(0) + data.data.std(0) * torch.randn(n, 2, generator=gen)
    samples = langevin(field, x0, step_size=0.01, n_steps=800, generator=gen).samples
    return wasserstein2(samples, data.holdout(n, seed=3))


@pytest.mark.parametrize("objective", ["flux", "dsm"])
def test_short_training_on_eight_gaussians(objective, tmp_path):
    torch.manual_seed(0)
    data = DataSource.from_spec("8gaussians", seed=0)
    field = MLPField(2, (64, 64))
    untrained = sample_w2(field, data)
    loss = FluxMatching(sigma=0.2236, dim=2) if objective == "flux" else DenoisingScoreMatching(0.2236)
    config = TrainConfig(steps=400, batch_size=256, seed=0, progress=False, checkpoint_every=400)
    Trainer(field, loss, data, config, tmp_path).fit()
    trained = sample_w2(field, data)
    assert trained < 0.4 * untrained, (trained, untrained)
