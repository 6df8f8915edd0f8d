"""EDM preconditioning: its coefficients, its limits, and the potential's gradient."""

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import EDMPreconditioned, MLPField, MLPScalar, PreconditionedPotential, UNet, build_field, call_field
from fluxmatch.fields.precond import edm_coefficients


class Zero(torch.nn.Module):
    n_classes = 0
    config = {"type": "zero"}

    def forward(self, y, c_noise, labels=None):
        return torch.zeros_like(y)


class Bounded(torch.nn.Module):
    def forward(self, y, c_noise, labels=None):
        return torch.tanh(y + c_noise.reshape(-1, 1))


def test_coefficients_match_the_formulas():
    sigma = torch.tensor([0.002, 0.5, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, 0.5)
    assert torch.allclose(c_skip, 0.25 / (sigma**2 + 0.25))
    assert torch.allclose(c_out, sigma * 0.5 / (sigma**2 + 0.25).sqrt())
    assert torch.allclose(c_in, 1 / (sigma**2 + 0.25).sqrt())
    assert torch.allclose(c_noise, sigma.log() / 4)
    # EDM's design: the network's training target (y − c_skip(y + σn))/c_out has unit variance
    # for data of variance σ_d²: ((1 − c_skip)² σ_d² + c_skip² σ²)/c_out² = 1
    assert torch.allclose(((1 - c_skip) ** 2 * 0.25 + c_skip**2 * sigma**2) / c_out**2, torch.ones_like(sigma))


def test_zero_backbone_gives_the_exact_score_of_the_smoothed_gaussian():
    """F = 0: f(x, σ) = −x/(σ² + σ_d²), the score of N(0, σ_d² I) ∗ N(0, σ² I); D → x as σ → 0."""
    field = EDMPreconditioned(Zero(), sigma_data=0.5)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    for s in (1e-3, 0.3, 10.0):
        sigma = torch.full((6,), s, dtype=torch.float64)
        assert torch.allclose(field(x, sigma), -x / (s**2 + 0.25), rtol=1e-12)
    tiny = torch.full((6,), 1e-6, dtype=torch.float64)
    assert torch.allclose(field.denoise(x, tiny), x, atol=1e-10)


def test_denoiser_error_is_order_sigma_for_a_bounded_backbone():
    field = EDMPreconditioned(Bounded(), sigma_data=0.5)
    x = torch.randn(16, 4, dtype=torch.float64)
    errors = [float((field.denoise(x, torch.full((16,), s, dtype=torch.float64)) - x).abs().max()) for s in (1e-2, 1e-3, 1e-4)]
    # |D − x| ≤ (1 − c_skip)|x| + c_out·1 ≈ 2σ for |F| ≤ 1: shrinks tenfold per decade of σ
    assert errors[0] < 2.5e-2 and errors[1] < 2.5e-3 and errors[2] < 2.5e-4


def test_field_is_the_denoiser_difference_over_sigma_squared():
    torch.manual_seed(0)
    field = EDMPreconditioned(Bounded(), sigma_data=0.5)
    x = torch.randn(8, 3, dtype=torch.float64)
    sigma = torch.exp(torch.randn(8, dtype=torch.float64))
    expected = (field.denoise(x, sigma) - x) / sigma[:, None] ** 2
    assert torch.allclose(field(x, sigma), expected, rtol=1e-10, atol=1e-12)


def test_bad_sigma_is_refused():
    field = EDMPreconditioned(Zero())
    with pytest.raises(FluxMatchError, match="positive"):
        field(torch.randn(3, 2), torch.tensor([0.1, 0.0, 0.2]))
    with pytest.raises(FluxMatchError, match="noise levels"):
        field(torch.randn(3, 2), torch.ones(2))


def test_potential_gradient_matches_autograd_of_its_potential():
    """v = (c_out/σ²)∇_y G at y = c_in x equals ∇_x g for g = c_out/(c_in σ²) · G(c_in x)."""
    torch.manual_seed(1)
    potential = PreconditionedPotential(MLPScalar(6, (16,)), sigma_data=0.5).double()
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    sigma = torch.exp(torch.randn(5, dtype=torch.float64))
    _, c_out, c_in, c_noise = edm_coefficients(sigma, 0.5)
    g = (c_out / (c_in * sigma**2)) * potential.backbone(c_in[:, None] * x, c_noise)
    (expected,) = torch.autograd.grad(g.sum(), x)
    assert torch.allclose(potential.gradient(x.detach(), sigma), expected, rtol=1e-10)


def test_configs_rebuild_the_same_functions():
    torch.manual_seed(2)
    field = EDMPreconditioned(UNet(in_channels=1, channels=8, channel_mult=(1, 2), n_classes=3, resolution=8))
    with torch.no_grad():
        for p in field.parameters():
            p.add_(0.05 * torch.randn_like(p))  # leave the zero output initialisation
    copy = build_field(field.config)
    copy.load_state_dict(field.state_dict())
    x, sigma, labels = torch.randn(4, 1, 8, 8), torch.rand(4) + 0.1, torch.tensor([0, 1, 2, 3])
    assert torch.equal(field(x, sigma, labels), copy(x, sigma, labels))
    potential = PreconditionedPotential(MLPScalar(64, (8,), n_classes=3))
    rebuilt = build_field(potential.config)
    rebuilt.load_state_dict(potential.state_dict())
    assert torch.allclose(potential.gradient(x, sigma, labels), rebuilt.gradient(x, sigma, labels))


def test_potential_gradient_matches_central_differences():
    """Central differences of g(x, σ) = c_out/(c_in σ²) · G(c_in x, c_noise) in float64; the
    truncation error is O(h²) ≈ 1e-10 relative to O(1) entries, so 1e-6 can only fail on a wrong
    scale (c_in, c_out/σ²) or a wrong sign."""
    torch.manual_seed(3)
    potential = PreconditionedPotential(MLPScalar(4, (12, 12), n_classes=2), sigma_data=0.5).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    sigma, labels = torch.tensor([0.05, 0.7, 4.0], dtype=torch.float64), torch.tensor([0, 1, 2])
    _, c_out, c_in, c_noise = edm_coefficients(sigma, 0.5)

    def g(points):
        return (c_out / (c_in * sigma**2)) * potential.backbone(c_in[:, None] * points, c_noise, labels)

    h, numeric = 1e-5, torch.zeros_like(x)
    for j in range(4):
        step = torch.zeros_like(x)
        step[:, j] = h
        with torch.no_grad():
            numeric[:, j] = (g(x + step) - g(x - step)) / (2 * h)
    analytic = potential.gradient(x, sigma, labels, create_graph=False)
    assert torch.allclose(analytic, numeric, rtol=1e-6, atol=1e-6 * float(numeric.abs().max()))


def test_labels_reach_the_field_through_call_field():
    torch.manual_seed(4)
    field = EDMPreconditioned(UNet(in_channels=1, channels=8, channel_mult=(1, 2), n_classes=3, resolution=8))
    with torch.no_grad():
        for p in field.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, sigma = torch.randn(2, 1, 8, 8), torch.ones(2)
    a = call_field(field, x, sigma, torch.tensor([0, 0]))
    assert torch.equal(a, field(x, sigma, torch.tensor([0, 0])))
    assert (a - call_field(field, x, sigma, torch.tensor([1, 1]))).abs().max() > 1e-6
    with pytest.raises(FluxMatchError, match="null class"):
        call_field(field, x, sigma, torch.tensor([0, 4]))
    with pytest.raises(FluxMatchError, match=r"\(B, 1, H, W\)"):
        call_field(field, torch.randn(2, 3, 8, 8), sigma)


def test_scalar_backbone_refuses_bad_input():
    net = MLPScalar(4, (8,), n_classes=2)
    with pytest.raises(FluxMatchError, match="null class"):
        net(torch.randn(2, 4), torch.zeros(2), torch.tensor([0, 3]))
    with pytest.raises(FluxMatchError, match="4 entries"):
        net(torch.randn(2, 5), torch.zeros(2))
    with pytest.raises(FluxMatchError, match="positive"):
        PreconditionedPotential(net).gradient(torch.randn(2, 4), torch.tensor([1.0, -1.0]))


def test_unet_potential_is_a_conservative_convolutional_potential():
    from fluxmatch.fields import UNetScalar

    torch.manual_seed(5)
    potential = PreconditionedPotential(UNetScalar(in_channels=1, channels=8, resolution=8)).double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    v = potential.gradient(x, sigma, create_graph=False)
    # central differences of g = c_out/(c_in σ²)·G(c_in x) along a random direction
    _, c_out, c_in, c_noise = edm_coefficients(sigma, 0.5)
    g = lambda z: (c_out / (c_in * sigma**2)) * potential.backbone(c_in[:, None, None, None] * z, c_noise)  # noqa: E731
    d = torch.randn_like(x)
    h = 1e-5
    fd = (g(x + h * d) - g(x - h * d)) / (2 * h)
    assert torch.allclose((v * d).flatten(1).sum(1), fd, rtol=1e-6, atol=1e-8)
    rebuilt = build_field(potential.config)
    rebuilt.load_state_dict(potential.state_dict())
    assert torch.allclose(rebuilt.double().gradient(x, sigma, create_graph=False), v)


def test_a_sigma_conditioned_mlp_backbone_gets_sigma_and_its_feature_is_c_noise():
    """EDMPreconditioned(MLPField(2, conditioning="sigma")) is finite for σ in [0.002, 80]: the MLP
    is given σ (not c_noise, whose ln is NaN below σ = 1), and its own feature ln σ / 4 is c_noise."""
    from fluxmatch.fields import MLPField

    torch.manual_seed(6)
    backbone = MLPField(2, (16,), conditioning="sigma")
    field = EDMPreconditioned(backbone)
    sigma = torch.logspace(torch.log10(torch.tensor(0.002)), torch.log10(torch.tensor(80.0)), 25)
    x = torch.randn(25, 2)
    assert torch.isfinite(field(x, sigma)).all() and torch.isfinite(field.denoise(x, sigma)).all()
    seen = []
    handle = backbone.net[0].register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0][:, -1].clone()))
    field(x, sigma)
    handle.remove()
    _, _, _, c_noise = edm_coefficients(sigma, 0.5)
    assert torch.allclose(seen[0], c_noise, rtol=1e-6, atol=1e-7)
    # the scalar backbones of the potential follow the same rule
    from fluxmatch.fields import MLPPotential

    potential = PreconditionedPotential(MLPPotential(2, (16,), conditioning="sigma"))
    assert torch.isfinite(potential.gradient(x, sigma)).all()


def test_split_field_is_its_two_parts_and_starts_as_its_score_head():
    """f = s_θ + w_θ from one backbone pass; w_θ = 0 at initialisation (UNet and MLP backbones);
    s_θ is the one-headed EDM field of the same trunk and first head."""
    from fluxmatch.fields import EDMSplit

    torch.manual_seed(0)
    for backbone in (UNet(in_channels=1, channels=8, resolution=8, heads=2), MLPField(64, (16,), conditioning="sigma", heads=2)):
        field = EDMSplit(backbone)
        x, sigma = torch.randn(5, 1, 8, 8), torch.tensor([0.01, 0.1, 0.5, 2.0, 40.0])
        score, flux = field.parts(x, sigma)
        assert flux.abs().max() == 0 and torch.allclose(field(x, sigma), score + flux)
        assert torch.allclose(field.denoise(x, sigma), x + sigma.reshape(-1, 1, 1, 1) ** 2 * field(x, sigma))
        rebuilt = build_field(field.config)
        rebuilt.load_state_dict(field.state_dict())
        assert type(rebuilt) is EDMSplit and torch.equal(rebuilt(x, sigma), field(x, sigma))
    unet = UNet(in_channels=1, channels=8, resolution=8, heads=2)
    torch.nn.init.normal_(unet.conv_out.weight)
    one = UNet(in_channels=1, channels=8, resolution=8)
    state = unet.state_dict()
    state["conv_out.weight"], state["conv_out.bias"] = state["conv_out.weight"][:1], state["conv_out.bias"][:1]
    one.load_state_dict(state)
    field = EDMSplit(unet)
    x, sigma = torch.randn(3, 1, 8, 8), torch.tensor([0.05, 0.5, 5.0])
    assert torch.allclose(field.parts(x, sigma)[0], EDMPreconditioned(one)(x, sigma), atol=1e-6)


def test_a_split_field_needs_a_two_headed_backbone():
    from fluxmatch.fields import EDMSplit

    with pytest.raises(FluxMatchError, match="needs a backbone with two heads"):
        EDMSplit(UNet(in_channels=1, channels=8, resolution=8))
