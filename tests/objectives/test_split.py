"""The split estimator: DSM for the score head, Flux Matching for the flux head of an EDMSplit field."""

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import EDMPreconditioned, EDMSplit, MLPField, UNet
from fluxmatch.objectives import DenoisingScoreMatching, FluxMatching, Rotation, SplitEstimator, WithDesign, make_estimator


def _split_mlp(dim=2, seed=0):
    torch.manual_seed(seed)
    return EDMSplit(MLPField(dim, (32, 32), conditioning="sigma", heads=2), sigma_data=0.7)


def _one_head_copy(split: EDMSplit) -> EDMPreconditioned:
    """The one-headed field whose backbone is the split backbone's trunk and score head."""
    b = split.backbone
    one = MLPField(b.dim, b.hidden, conditioning="sigma")
    state = {k: v.clone() for k, v in b.state_dict().items()}
    last = f"net.{len(b.net) - 1}"
    state[f"{last}.weight"] = state[f"{last}.weight"][: b.dim]
    state[f"{last}.bias"] = state[f"{last}.bias"][: b.dim]
    one.load_state_dict(state)
    return EDMPreconditioned(one, sigma_data=split.sigma_data)


def _grads(module):
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in module.named_parameters()}


def test_at_the_start_the_field_learns_exactly_dsm_on_the_score_head():
    """The flux head starts at zero, so its surrogate sends nothing to the shared trunk: every
    gradient of the trunk and the score head equals DSM's (same σ draws, start points, target)."""
    x = torch.randn(256, 2) * torch.tensor([1.0, 0.5])
    split = _split_mlp()
    one = _one_head_copy(split)
    flux = FluxMatching(noise="edm", estimator="split", normaliser=False, sigma_data=0.7)
    dsm = DenoisingScoreMatching(noise="edm", normaliser=False, rao_blackwell=True, sigma_data=0.7)
    flux.bind(split)
    torch.manual_seed(1)
    flux(split, x).loss.mean().backward()
    torch.manual_seed(1)
    dsm(one, x).loss.mean().backward()
    got, want = _grads(split.backbone), _grads(one.backbone)
    last = f"net.{len(split.backbone.net) - 1}"
    for name, g in want.items():
        mine = got[name][:2] if name.startswith(last) else got[name]
        assert torch.allclose(mine, g, atol=1e-6, rtol=1e-5), name
    # the flux head does learn: its (zero) output weights get the surrogate's gradient
    assert got[f"{last}.weight"][2:].abs().max() > 0


def test_the_flux_head_follows_the_potential_and_the_potential_fits_the_sum():
    """∂/∂w of the surrogate is −2(a/τ)·v per row (weighting "none": a = τ = 1); the potential's
    fit is |v + f − s|² with f the whole field, detached."""
    split = _split_mlp(seed=3)
    objective = FluxMatching(noise="edm", estimator="split", normaliser=False, weighting="none")
    objective.bind(split)
    x0 = torch.randn(64, 2)
    sigma = torch.full((64,), 0.4)
    target = torch.randn(64, 2)
    weights = (torch.ones(64), torch.ones(64))
    score, flux = split.parts(x0, sigma)
    flux = flux.detach().requires_grad_(True)

    class Fixed(torch.nn.Module):
        def parts(self, x, s, labels=None):
            return score.detach(), flux

    dsm_fit, surrogate, terms = objective.estimator.losses(Fixed(), x0, target, sigma, None, {}, weights)
    (grad,) = torch.autograd.grad(surrogate.sum(), flux)
    v = objective.potential.gradient(x0, sigma).detach()
    assert torch.allclose(grad, -2.0 * v, atol=1e-6)
    expected = ((score - target).square().sum(1) + (v + score + flux - target).square().sum(1)).detach()
    assert torch.allclose(dsm_fit.detach(), expected, atol=1e-5)
    assert set(terms) == {"dsm", "flux_rms", "surrogate", "potential_fit", "flux_estimate"}


def test_design_terms_shape_the_flux_head_only():
    """A rotation reward through WithDesign reaches the flux head's output weights, never the score head's."""
    split = _split_mlp(seed=5)
    objective = WithDesign(FluxMatching(noise="edm", estimator="split"), {"spin": (1.0, Rotation())})
    x = torch.randn(128, 2)
    objective.base.bind(split)
    objective(split, x).loss.mean().backward()
    last = split.backbone.net[-1]
    split.zero_grad()
    objective.terms[0](objective.base.design_field(split), x, torch.full((128,), 0.3)).mean().backward()
    assert last.weight.grad[:2].abs().max() == 0 and last.weight.grad[2:].abs().max() > 0


def test_split_estimator_refusals_name_the_problem():
    with pytest.raises(FluxMatchError, match="split estimator trains over a continuum"):
        FluxMatching(0.3, estimator="split")
    objective = FluxMatching(noise="edm", estimator="split")
    plain = EDMPreconditioned(MLPField(2, (8,), conditioning="sigma"))
    objective.bind(plain)
    with pytest.raises(FluxMatchError, match="needs a field with a score and a flux head"):
        objective(plain, torch.randn(16, 2))
    with pytest.raises(FluxMatchError, match="does not pass batch extras"):
        objective(_split_mlp(), torch.randn(16, 2), mask=torch.ones(16, 2))
    assert isinstance(make_estimator("split"), SplitEstimator)
    assert FluxMatching(noise="edm", estimator="split").config["estimator"]["field_lr_scale"] == 1.0


def test_a_class_conditional_unet_split_field_trains():
    torch.manual_seed(0)
    field = EDMSplit(UNet(in_channels=1, channels=8, resolution=8, n_classes=3, heads=2))
    objective = FluxMatching(noise="edm", estimator="split")
    groups = objective.param_groups(field, 1e-3)
    optimiser = torch.optim.Adam(groups)
    x, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    for _ in range(2):
        optimiser.zero_grad()
        out = objective(field, x, labels=labels)
        out.loss.mean().backward()
        optimiser.step()
    assert torch.isfinite(out.loss).all()
    score, flux = field.parts(x, torch.full((16,), 0.5), labels)
    assert flux.abs().max() > 0 and torch.isfinite(score).all()
