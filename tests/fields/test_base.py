"""The field contract: declared conditioning, extras passed through, forward-mode detection."""

import pytest
import torch

import fluxmatch as fm
from fluxmatch.data import Batch, DataSource
from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import Field, ForwardModeField, call_field


class Masked(torch.nn.Module):
    """f(x, c, mask=m) = −x·m: a field that needs a per-row extra."""

    conditioning = None
    config = {}

    def forward(self, x, c=None, mask=None):
        return -x * mask


def test_extras_reach_the_field():
    x, mask = torch.randn(4, 3), torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    out = call_field(Masked(), x, None, mask=mask)
    assert torch.equal(out, -x * mask)


def test_the_library_fields_declare_their_conditioning():
    assert isinstance(fm.MLPField(2), Field) and fm.MLPField(2).conditioning is None
    assert fm.EDMPreconditioned(fm.MLPField(2, conditioning="sigma")).conditioning == "sigma"
    assert fm.MLPField(2, conditioning="time").conditioning == "time"
    assert isinstance(fm.MLPField(2), ForwardModeField) and not isinstance(Masked(), ForwardModeField)


def test_edm_wrapped_sigma_mlp_is_finite_at_every_noise_level():
    field = fm.EDMPreconditioned(fm.MLPField(2, (8,), conditioning="sigma"), sigma_data=1.0)
    sigma = torch.logspace(torch.log10(torch.tensor(0.002)), torch.log10(torch.tensor(80.0)), 9)
    assert torch.isfinite(field(torch.randn(9, 2), sigma)).all()
    with pytest.raises(FluxMatchError, match="positive finite noise levels"):
        fm.MLPField(2, conditioning="sigma")(torch.randn(2, 2), torch.tensor([0.1, -1.0]))


def test_batches_with_extras_need_an_objective_that_takes_them(tmp_path):
    class WithMask(DataSource):
        def sample_batch(self, b, generator=None):
            return Batch(self.batch(b, generator), None, {"mask": torch.ones(b, 1)})

    data = WithMask(torch.randn(100, 2), "masked")
    trainer = fm.Trainer(fm.MLPField(2, (8,)), fm.DenoisingScoreMatching(0.3), data, fm.TrainConfig(steps=2, progress=False), tmp_path)
    with pytest.raises(FluxMatchError, match="mask"):
        trainer.fit()
