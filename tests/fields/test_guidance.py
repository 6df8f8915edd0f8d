"""Classifier-free guidance: scale 0 is the unconditional model, 1 the conditional, linear between."""

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import ClassifierFreeGuidance, EDMPreconditioned, UNet, drop_labels, guided


@pytest.fixture(scope="module")
def field():
    torch.manual_seed(0)
    f = EDMPreconditioned(UNet(in_channels=1, channels=8, channel_mult=(1, 2), resolution=8, n_classes=10))
    with torch.no_grad():
        for p in f.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return f.eval()


def test_guidance_zero_is_unconditional_and_one_is_conditional(field):
    x, sigma, labels = torch.randn(5, 1, 8, 8), torch.full((5,), 0.7), torch.tensor([0, 3, 3, 9, 1])
    null = torch.full((5,), 10)
    with torch.no_grad():
        assert torch.allclose(ClassifierFreeGuidance(field, labels, 0.0)(x, sigma), field(x, sigma, null))
        assert torch.allclose(ClassifierFreeGuidance(field, labels, 1.0)(x, sigma), field(x, sigma, labels))
        f_c, f_u = field(x, sigma, labels), field(x, sigma, null)
        assert torch.allclose(ClassifierFreeGuidance(field, labels, 2.5)(x, sigma), f_u + 2.5 * (f_c - f_u), atol=1e-5)
        assert torch.allclose(guided(field, labels, 2.5)(x, 0.7), f_u + 2.5 * (f_c - f_u), atol=1e-5)  # scalar σ


def test_guidance_checks_its_input(field):
    with pytest.raises(FluxMatchError, match="class-conditional"):
        ClassifierFreeGuidance(EDMPreconditioned(UNet(in_channels=1, channels=8, resolution=8)), torch.zeros(2, dtype=torch.long))
    with pytest.raises(FluxMatchError, match="scale"):
        ClassifierFreeGuidance(field, torch.zeros(2, dtype=torch.long), -1.0)
    with pytest.raises(FluxMatchError, match="holds 2 labels"):
        ClassifierFreeGuidance(field, torch.zeros(2, dtype=torch.long))(torch.randn(3, 1, 8, 8), torch.ones(3))


def test_label_dropout_rate():
    generator = torch.Generator().manual_seed(1)
    dropped = drop_labels(torch.zeros(20000, dtype=torch.long), 0.1, 10, generator)
    share = float((dropped == 10).float().mean())
    # binomial standard error √(0.09/20000) ≈ 0.002; 5 of them
    assert abs(share - 0.1) < 0.011
    assert set(dropped.unique().tolist()) == {0, 10}
