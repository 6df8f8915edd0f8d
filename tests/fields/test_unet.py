"""The UNet backbone: shapes, zero output at initialisation, conditioning, presets, bad input."""

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import UNET_PRESETS, UNet


@pytest.mark.parametrize("shape,kw", [((1, 8, 8), dict(channels=8, channel_mult=(1, 2), resolution=8)), ((3, 32, 32), dict(channels=8, channel_mult=(1, 2, 2), attn_resolutions=(16,), resolution=32))])
@pytest.mark.parametrize("n_classes", [0, 10])
def test_output_shape_and_zero_initial_output(shape, kw, n_classes):
    torch.manual_seed(0)
    net = UNet(in_channels=shape[0], n_classes=n_classes, **kw)
    y = torch.randn(3, *shape)
    labels = torch.tensor([0, 5, n_classes]) if n_classes else None
    out = net(y, torch.zeros(3), labels)
    assert out.shape == y.shape
    assert torch.equal(out, torch.zeros_like(y))


def test_noise_and_labels_change_the_output_after_a_step():
    torch.manual_seed(1)
    net = UNet(in_channels=1, channels=8, channel_mult=(1, 2), n_classes=10, resolution=8)
    y = torch.randn(4, 1, 8, 8)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(y, torch.zeros(4), torch.arange(4)).square().sum().mul(-1).backward()  # any nonzero gradient
    loss = (net(y, torch.zeros(4), torch.arange(4)) - 1).square().sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    a = net(y, torch.zeros(4), torch.zeros(4, dtype=torch.long))
    b = net(y, torch.zeros(4), torch.full((4,), 7))
    c = net(y, torch.full((4,), 1.0), torch.zeros(4, dtype=torch.long))
    assert (a - b).abs().max() > 1e-6 and (a - c).abs().max() > 1e-6


def test_presets_build_at_their_resolution():
    net = UNet(in_channels=1, **UNET_PRESETS["digits"])
    assert net(torch.randn(2, 1, 8, 8), torch.zeros(2)).shape == (2, 1, 8, 8)
    for name, channels, size in (("cifar10", 3, 32), ("celeba64", 3, 64)):
        big = UNet(in_channels=channels, **UNET_PRESETS[name])
        assert big.resolution == size
        # the paper-scale sizes: EDM's DDPM++ has ~56M parameters at CIFAR-10
        assert sum(p.numel() for p in big.parameters()) > 20_000_000


def test_bad_input_is_named():
    net = UNet(in_channels=1, channels=8, channel_mult=(1, 2), resolution=8)
    with pytest.raises(FluxMatchError, match="divisible"):
        net(torch.randn(2, 1, 7, 7), torch.zeros(2))
    with pytest.raises(FluxMatchError, match=r"\(B, 1, H, W\)"):
        net(torch.randn(2, 3, 8, 8), torch.zeros(2))
    with pytest.raises(FluxMatchError, match="unconditional"):
        net(torch.randn(2, 1, 8, 8), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    conditional = UNet(in_channels=1, channels=8, channel_mult=(1, 2), resolution=8, n_classes=3)
    with pytest.raises(FluxMatchError, match="null class"):
        conditional(torch.randn(2, 1, 8, 8), torch.zeros(2), torch.tensor([0, 4]))
