"""Objectives over a continuum of σ (docs/MATH.md §4): targets, σ draws, normaliser, closed-form gradients."""

import math

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import EDMPreconditioned, MLPField, MLPPotential
from fluxmatch.objectives import AnnealedDSM, AnnealedFluxMatching, build_objective
from fluxmatch.objectives.noise_levels import LogNormal, LogUniform, loss_weight, make_sigma_distribution
from fluxmatch.objectives.normaliser import LossNormaliser
from fluxmatch.reference import EmpiricalGaussian, annealed_denoising_target

MEAN = torch.tensor([0.5, -1.0])
SPREAD = 0.7  # data N(MEAN, SPREAD² I)
ROTATION = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])


def smoothed_score(z, sigma):
    """Exact score of N(MEAN, SPREAD²I) ∗ N(0, σ²I) at z (B, 2), σ (B,)."""
    return (MEAN - z) / (SPREAD**2 + sigma.reshape(-1, 1) ** 2)


@pytest.mark.parametrize("sigma", [0.01, 0.3, 5.0])
def test_batch_target_is_the_smoothed_batch_score(sigma):
    torch.manual_seed(0)
    x = torch.randn(64, 3, dtype=torch.float64)
    x0, target = annealed_denoising_target(x, torch.full((64,), sigma, dtype=torch.float64))
    exact = EmpiricalGaussian(x, sigma).score(x0)
    assert torch.allclose(target, exact, rtol=1e-6, atol=1e-6 / sigma)


def test_each_row_uses_its_own_sigma_and_class():
    torch.manual_seed(1)
    x = torch.randn(40, 2, dtype=torch.float64)
    sigma = torch.exp(torch.randn(40, dtype=torch.float64))
    labels = torch.arange(40) % 3
    labels[:5] = 3  # the null class: these rows see the whole batch
    x0, target = annealed_denoising_target(x, sigma, labels, null_label=3)
    for i in range(40):
        members = x if labels[i] == 3 else x[(labels == labels[i]) | (torch.arange(40) == i)]
        if labels[i] == 3:
            members = x
        exact = EmpiricalGaussian(members, float(sigma[i])).score(x0[i : i + 1])
        assert torch.allclose(target[i], exact[0], rtol=1e-6, atol=1e-8), i


def test_plain_target_is_the_denoising_target():
    torch.manual_seed(2)
    x = torch.randn(8, 1, 2, 2)
    sigma = torch.full((8,), 0.5)
    x0, target = annealed_denoising_target(x, sigma, rao_blackwell=False)
    assert x0.shape == target.shape == x.shape
    assert torch.allclose(target, -(x0 - x) / 0.25, atol=1e-5)


def test_sigma_distributions_have_their_moments():
    torch.manual_seed(3)
    n = 40000
    log_edm = LogNormal(-1.2, 1.2).sample(n).log()
    # standard errors: 1.2/√n ≈ 0.006 for the mean; 5 of them
    assert abs(float(log_edm.mean()) + 1.2) < 0.03 and abs(float(log_edm.std()) - 1.2) < 0.03
    uniform = LogUniform(0.01, 10.0).sample(n)
    assert float(uniform.min()) >= 0.01 and float(uniform.max()) <= 10.0
    # ln σ uniform on [ln 0.01, ln 10]: mean ln √0.1, std (ln 1000)/√12; 5 standard errors
    assert abs(float(uniform.log().mean()) - math.log(0.1**0.5)) < 5 * math.log(1000) / math.sqrt(12 * n)
    with pytest.raises(FluxMatchError, match="sigma_max"):
        LogUniform(1.0, 0.5)
    with pytest.raises(FluxMatchError, match="distribution"):
        make_sigma_distribution("bogus")


def test_edm_weighting_is_the_preconditioned_output_loss():
    sigma = torch.tensor([0.002, 0.5, 80.0])
    c_out = sigma * 0.5 / (sigma.square() + 0.25).sqrt()
    assert torch.allclose(loss_weight(sigma, "edm", 0.5), sigma**4 / c_out.square(), rtol=1e-5)


def test_normaliser_learns_the_log_mean_loss():
    """n(σ) minimising ℓ e^{−n} + n is ln E[ℓ | σ]: fit it to losses with a known σ-profile."""
    torch.manual_seed(4)
    norm = LossNormaliser()
    opt = torch.optim.Adam(norm.parameters(), lr=0.05)
    for _ in range(400):
        sigma = torch.exp(torch.randn(256))
        loss = sigma.square() * torch.distributions.Exponential(1.0).sample((256,))  # E[ℓ|σ] = σ²
        opt.zero_grad()
        norm.normalise(loss, sigma).mean().backward()
        opt.step()
    probe = torch.tensor([0.3, 1.0, 3.0])
    # E[ℓ|σ] = σ²: n ≈ 2 ln σ, within the noise of 400 Adam steps on exponential losses
    assert torch.allclose(norm(probe), 2 * probe.log(), atol=0.25), norm(probe)


def test_annealed_dsm_gradient_is_closed_form():
    """f = s_σ + a: E[∂ℓ/∂a] = 2a E[λ(σ)] (the target's noise has mean s_σ given z)."""
    torch.manual_seed(5)
    a = torch.nn.Parameter(torch.tensor([0.2, -0.1]))
    field = lambda z, sigma: smoothed_score(z, sigma) + a  # noqa: E731
    objective = AnnealedDSM(sigma_distribution={"kind": "loguniform", "sigma_min": 0.2, "sigma_max": 2.0}, weighting="sigma2", normaliser=False)
    grads = []
    for _ in range(60):
        x = MEAN + SPREAD * torch.randn(1024, 2)
        grads.append(torch.autograd.grad(objective(field, x).loss.mean(), a)[0])
    g = torch.stack(grads)
    mean, se = g.mean(0), g.std(0) / math.sqrt(len(grads))
    lo, hi = math.log(0.2), math.log(2.0)
    expected_lambda = (math.exp(2 * hi) - math.exp(2 * lo)) / (2 * (hi - lo))  # E[σ²], ln σ uniform
    expected = 2 * a.detach() * expected_lambda
    assert ((mean - expected).abs() <= 5 * se).all(), (mean, se, expected)


def _train_potential(field, steps=600, seed=6):
    torch.manual_seed(seed)
    objective = AnnealedFluxMatching(
        sigma_distribution={"kind": "loguniform", "sigma_min": 0.3, "sigma_max": 1.5},
        weighting="none",
        normaliser=False,
        rao_blackwell=False,
        potential=MLPPotential(2, (64, 64), conditioning="sigma"),
    )
    opt = torch.optim.Adam(objective.potential.parameters(), lr=3e-3)
    for _ in range(steps):
        x = MEAN + SPREAD * torch.randn(512, 2)
        opt.zero_grad()
        objective(field, x).loss.mean().backward()
        opt.step()
    z = MEAN + 1.2 * torch.randn(2000, 2)
    sigma = torch.full((2000,), 0.8)
    return objective.potential.gradient(z, sigma, create_graph=False)


def test_potential_finds_a_gradient_perturbation():
    """f = s_σ + a (a constant): u = ∇(a·x) is all gradient, so ∇g → −a."""
    a = torch.tensor([0.6, -0.4])
    grad = _train_potential(lambda z, sigma: smoothed_score(z, sigma) + a)
    # the regression target is noisy (variance ~1/σ² per coordinate): 600 steps leave ~0.1 error
    assert torch.allclose(grad.mean(0), -a, atol=0.12), grad.mean(0)


def test_potential_ignores_a_stationary_flux():
    """f = (I + J)s_σ leaves every p_σ stationary: u = J s_σ is divergence-free under p_σ, ∇g → 0."""
    grad = _train_potential(lambda z, sigma: smoothed_score(z, sigma) @ (torch.eye(2) + ROTATION).T)
    assert grad.square().sum(1).mean().sqrt() < 0.15, grad.square().sum(1).mean().sqrt()


def test_objectives_train_a_sigma_conditioned_field_and_rebuild():
    torch.manual_seed(7)
    field = MLPField(2, (32, 32), conditioning="sigma")
    for objective in (AnnealedDSM(), AnnealedFluxMatching(dim=2, potential_hidden=(32,))):
        x = torch.randn(64, 2)
        out = objective(field, x)
        assert out.loss.shape == (64,) and torch.isfinite(out.loss).all()
        out.loss.mean().backward()
        rebuilt = build_objective(objective.config)
        assert isinstance(objective, type(rebuilt)) and rebuilt.config == objective.config
        groups = objective.param_groups(field, 1e-3)
        assert sum(len(g["params"]) for g in groups) == len(list(field.parameters())) + len(list(objective.parameters()))


def test_horizon_estimators_draw_one_sigma_per_batch():
    torch.manual_seed(8)
    field = MLPField(2, (16,), conditioning="sigma")
    objective = AnnealedFluxMatching(estimator="product", dim=2, sigma_distribution={"kind": "loguniform", "sigma_min": 0.1, "sigma_max": 1.0})
    out = objective(field, torch.randn(32, 2))
    assert out.loss.shape == (32,) and 0.1 <= out.terms["sigma"] <= 1.0
    out.loss.mean().backward()


def test_bad_options_are_named():
    with pytest.raises(FluxMatchError, match="weighting"):
        AnnealedDSM(weighting="bogus")
    with pytest.raises(FluxMatchError, match="label_dropout"):
        AnnealedDSM(label_dropout=1.0)
    with pytest.raises(FluxMatchError, match="data dimension"):  # the potential is matched to the field; this backbone states no size
        AnnealedFluxMatching().param_groups(EDMPreconditioned(torch.nn.Identity()), 1e-3)
    with pytest.raises(FluxMatchError, match="potential network"):
        AnnealedFluxMatching(dim=2, potential_net="cnn")
    with pytest.raises(FluxMatchError, match="estimator"):
        AnnealedFluxMatching(estimator="bogus", dim=2)
    with pytest.raises(FluxMatchError, match="reference"):
        AnnealedDSM()(MLPField(2, (8,), conditioning="sigma"), torch.randn(4, 2), reference=object())


@pytest.mark.parametrize("sigma", [0.01, 0.3, 5.0])
def test_training_set_target_is_the_smoothed_data_score(sigma):
    from fluxmatch.reference import training_set_target

    torch.manual_seed(9)
    data = torch.randn(300, 4, dtype=torch.float64)
    x0 = data[:12] + sigma * torch.randn(12, 4, dtype=torch.float64)
    target = training_set_target(x0, torch.full((12,), sigma, dtype=torch.float64), data, chunk=64)  # several chunks
    assert torch.allclose(target, EmpiricalGaussian(data, sigma).score(x0), rtol=1e-6, atol=1e-6 / sigma)


def test_training_set_target_needs_the_data_and_respects_classes():
    from fluxmatch.reference import training_set_target

    torch.manual_seed(10)
    objective = AnnealedDSM(target="training_set")
    field = MLPField(2, (8,), conditioning="sigma")
    with pytest.raises(FluxMatchError, match="use_training_set"):
        objective(field, torch.randn(4, 2))
    data = torch.randn(50, 2)
    objective.use_training_set(data)
    assert objective(field, data[:8]).loss.shape == (8,)
    assert build_objective(objective.config).target == "training_set"
    labels = torch.arange(50) % 2
    x0 = data[:6] + 0.2 * torch.randn(6, 2)
    target = training_set_target(x0, torch.full((6,), 0.2), data, torch.tensor([0, 1, 2, 0, 1, 2]), labels, null_label=2)
    for i, label in enumerate([0, 1, 2, 0, 1, 2]):
        members = data if label == 2 else data[labels == label]
        assert torch.allclose(target[i], EmpiricalGaussian(members, 0.2).score(x0[i : i + 1])[0], atol=1e-4)
    with pytest.raises(FluxMatchError, match="target"):
        AnnealedDSM(target="bogus")
