"""Flux Matching against the exact checks of docs/MATH.md §2–3, at a fixed σ and over a σ distribution."""

import math

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import EDMPreconditioned, MLPField
from fluxmatch.objectives import FluxMatching
from fluxmatch.reference import GaussianMixture

SIGMA = 0.5
MU = torch.tensor([[1.0, -0.5]])
ROTATION = torch.tensor([[0.0, 1.5], [-1.5, 0.0]])  # constant antisymmetric J


def mean_gradient(objective, field, param, reps, batch=2048, x=None, reference=None):
    """Mean and standard error over ``reps`` batches of ∂(mean loss)/∂param."""
    grads = []
    for _ in range(reps):
        batch_x = MU.expand(batch, 2).clone() if x is None else x
        out = objective(field, batch_x, reference=reference)
        grads.append(torch.autograd.grad(out.loss.mean(), param)[0])
    g = torch.stack(grads)
    return g.mean(0), g.std(0) / math.sqrt(reps)


CONFIGS = [
    dict(estimator="gradient", dynamics="component", rao_blackwell=True),
    dict(estimator="gradient", dynamics="component", rao_blackwell=False),
    dict(estimator="gradient", dynamics="langevin", rao_blackwell=True),
    dict(estimator="product", dynamics="component", rao_blackwell=True),
    dict(estimator="product", dynamics="component", rao_blackwell=False, horizon_sampler="exponential"),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_one_point_batch_gradient_is_closed_form(config):
    """f = s + a on a one-point batch: E[∂ℓ/∂a] = 2a(1 − e^{−H})/σ²."""
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    field = lambda z, c: (MU - z) / SIGMA**2 + a  # noqa: E731 - the exact score of N(μ, σ²I) plus a
    objective = FluxMatching(sigma=SIGMA, **config)
    mean, se = mean_gradient(objective, field, a, reps=12)
    expected = 2 * a.detach() * (1 - math.exp(-objective.horizon)) / SIGMA**2
    # 5 standard errors of the Monte Carlo mean, plus float32 round-off
    assert ((mean - expected).abs() <= 5 * se + 1e-4 * expected.abs()).all(), (mean, se, expected)


@pytest.mark.parametrize("config", CONFIGS)
def test_rotated_score_has_zero_gradient(config):
    """f = (I + J)s leaves p stationary: the gradient at a = 0 vanishes (r ≡ 0 exactly)."""
    torch.manual_seed(1)
    a = torch.nn.Parameter(torch.zeros(2))
    score = lambda z: (MU - z) / SIGMA**2  # noqa: E731
    field = lambda z, c: score(z) + score(z) @ ROTATION.T + a  # noqa: E731
    mean, _ = mean_gradient(FluxMatching(sigma=SIGMA, **config), field, a, reps=3)
    assert mean.abs().max() < 1e-3


def test_rotated_mixture_score_is_stationary_for_any_density():
    """(I + J)s is stationary for a multi-component mixture too: zero gradient against its analytic reference."""
    torch.manual_seed(2)
    mixture = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]]), torch.tensor([0.3, 0.5, 0.4]))
    a = torch.nn.Parameter(torch.zeros(2))

    def score(z):  # differentiable exact score of the mixture
        z = z.requires_grad_(True) if not z.requires_grad else z
        return torch.autograd.grad(mixture.log_prob(z).sum(), z, create_graph=True)[0]

    field = lambda z, c: score(z) + score(z) @ ROTATION.T + a  # noqa: E731
    for config in CONFIGS[:1] + CONFIGS[3:4]:
        objective = FluxMatching(sigma=0.5, **config)
        mean, _ = mean_gradient(objective, field, a, reps=2, x=torch.zeros(512, 2), reference=mixture)
        assert mean.abs().max() < 1e-2, config


def test_gradient_points_towards_the_score():
    """Starting from a shifted score, one Adam-free gradient step lowers |a| (descent direction)."""
    torch.manual_seed(3)
    a = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    field = lambda z, c: (MU - z) / SIGMA**2 + a  # noqa: E731
    mean, _ = mean_gradient(FluxMatching(sigma=SIGMA, estimator="product"), field, a, reps=4)
    assert float((mean * a.detach()).sum()) > 0


def test_image_shaped_batches_and_hutchinson():
    torch.manual_seed(4)
    field = MLPField(16, (32,))
    x = torch.randn(64, 1, 4, 4)
    for estimator in ("potential", "product", "gradient"):
        out = FluxMatching(sigma=0.3, estimator=estimator, dim=16)(field, x)  # d = 16: Hutchinson by default
        assert out.loss.shape == (64,)
        out.loss.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in field.parameters())


def test_learned_horizon_sampler_receives_gradient():
    torch.manual_seed(5)
    objective = FluxMatching(sigma=0.3, horizon_sampler="exponential", estimator="product")
    field = MLPField(2, (16,))
    objective(field, torch.randn(128, 2)).loss.mean().backward()
    grads = [p.grad for p in objective.parameters()]
    assert grads and all(g is not None for g in grads)


def test_bad_inputs():
    field = MLPField(2, (8,))
    with pytest.raises(FluxMatchError, match="σ"):
        FluxMatching(sigma=0.0)
    with pytest.raises(FluxMatchError, match="NaN"):
        FluxMatching(dim=2)(field, torch.tensor([[0.0, float("nan")]]))
    for estimator in ("potential", "product"):
        with pytest.raises(FluxMatchError, match="shape"):
            FluxMatching(dim=2, estimator=estimator)(lambda z, c: z[:, :1], torch.randn(8, 2))
    with pytest.raises(FluxMatchError, match="no default potential matches a function field"):
        FluxMatching(estimator="potential")(lambda z, c: z, torch.randn(8, 2))  # no dim, no potential, a field of no known family
    with pytest.raises(FluxMatchError, match="estimator"):
        FluxMatching(estimator="nope")
    with pytest.raises(FluxMatchError, match="unknown reference dynamics"):
        FluxMatching(estimator="product", dynamics="nope")
    with pytest.raises(FluxMatchError, match="horizon"):
        FluxMatching(estimator="product", horizon=-1.0)
    with pytest.raises(FluxMatchError, match="^horizon applies to the product and gradient estimators, not potential$"):
        FluxMatching(horizon=2.0)
    with pytest.raises(FluxMatchError, match="^target_group applies to the potential and split estimators, not gradient$"):
        FluxMatching(estimator="gradient", target_group=8)
    with pytest.raises(FluxMatchError, match="not both"):
        FluxMatching(sigma=0.3, noise="edm")
    with pytest.raises(FluxMatchError, match="reference"):
        FluxMatching(noise="edm", dim=2)(MLPField(2, (8,), conditioning="sigma"), torch.randn(8, 2), reference=GaussianMixture(MU, SIGMA**2))


NARROW = {"kind": "loguniform", "sigma_min": 0.4, "sigma_max": 0.6}  # ln σ uniform on [ln 0.4, ln 0.6]


def mean_inverse_square(low, high):
    """E[1/σ²] for ln σ uniform on [ln low, ln high]."""
    return (low**-2 - high**-2) / (2 * math.log(high / low))


@pytest.mark.parametrize("config", CONFIGS)
def test_one_point_batch_gradient_is_closed_form_over_a_sigma_distribution(config):
    """The same identity with σ drawn per batch: f = s_σ + a, weighting "relaxation" (a(σ) = 1),
    so E[∂ℓ/∂a] = 2a(1 − e^{−H}) E[1/σ²]."""
    torch.manual_seed(9)
    a = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    field = lambda z, c: (MU - z) / c[:, None] ** 2 + a  # noqa: E731 - the exact score of N(μ, σ²I) plus a
    objective = FluxMatching(noise=NARROW, weighting="relaxation", **config)
    mean, se = mean_gradient(objective, field, a, reps=40, batch=1024)
    expected = 2 * a.detach() * (1 - math.exp(-objective.horizon)) * mean_inverse_square(0.4, 0.6)
    # 5 standard errors of the Monte Carlo mean (σ varies between batches), plus float32 round-off
    assert ((mean - expected).abs() <= 5 * se + 1e-4 * expected.abs()).all(), (mean, se, expected)


@pytest.mark.parametrize("config", CONFIGS)
def test_rotated_score_has_zero_gradient_at_every_sigma(config):
    """f = (I + J)s_σ leaves every p_σ stationary: zero gradient whatever σ the batch draws."""
    torch.manual_seed(10)
    a = torch.nn.Parameter(torch.zeros(2))
    score = lambda z, c: (MU - z) / c[:, None] ** 2  # noqa: E731
    field = lambda z, c: score(z, c) + score(z, c) @ ROTATION.T + a  # noqa: E731
    mean, _ = mean_gradient(FluxMatching(noise=NARROW, **config), field, a, reps=3)
    assert mean.abs().max() < 1e-3


def fitted_potential(field, reference, steps=300):
    """A potential estimator whose potential has been fitted to ``field`` (the field held fixed)."""
    objective = FluxMatching(sigma=SIGMA, dim=2, potential_hidden=(32,))
    opt = torch.optim.Adam(objective.potential.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        objective(field, torch.zeros(1024, 2), reference=reference).loss.mean().backward()
        opt.step()
    return objective


def test_potential_estimator_converges_to_the_infinite_horizon_gradient():
    """f = s + a, potential trained to convergence: ∇g → −a and E[∂ℓ/∂a] → 2a/σ² (MATH.md eq. 4, H → ∞)."""
    torch.manual_seed(6)
    reference = GaussianMixture(MU, SIGMA**2)
    a = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    field = lambda z, c: (MU - z) / SIGMA**2 + a  # noqa: E731
    objective = fitted_potential(field, reference)
    z = reference.sample(2000)
    assert (objective.potential.gradient(z) + a.detach()).abs().max() < 0.05
    mean, se = mean_gradient(objective, field, a, reps=8, x=torch.zeros(2048, 2), reference=reference)
    expected = 2 * a.detach() / SIGMA**2
    assert ((mean - expected).abs() < 5 * se + 0.05 * expected.abs()).all(), (mean, expected)
    # the reported flux estimate is J = E|∇φ|²/σ² = |a|²/σ²
    out = objective(field, torch.zeros(4096, 2), reference=reference)
    assert abs(out.terms["flux_estimate"] - float(a.detach().square().sum()) / SIGMA**2) < 0.1 * float(a.detach().square().sum()) / SIGMA**2


def test_potential_estimator_ignores_divergence_free_flux():
    """For f = (I + J)s the potential fits ∇g ≈ 0, so the field gets (almost) no gradient."""
    torch.manual_seed(7)
    reference = GaussianMixture(MU, SIGMA**2)
    a = torch.nn.Parameter(torch.zeros(2))
    score = lambda z: (MU - z) / SIGMA**2  # noqa: E731
    field = lambda z, c: score(z) + score(z) @ ROTATION.T + a  # noqa: E731
    objective = fitted_potential(field, reference)
    z = reference.sample(2000)
    flux_scale = (score(z) @ ROTATION.T).norm(dim=1).mean()
    assert objective.potential.gradient(z).norm(dim=1).max() < 0.05 * flux_scale


def test_flux_objective_ignores_the_rotation_that_fisher_divergence_counts():
    """f = (I + J)s + a: J = |a|²/σ² as for s + a, while the Fisher divergence grows by E|Js|² (MATH.md §2)."""
    torch.manual_seed(8)
    reference = GaussianMixture(MU, SIGMA**2)
    a = torch.tensor([0.3, -0.2])
    score = lambda z: (MU - z) / SIGMA**2  # noqa: E731
    field = lambda z, c: score(z) + score(z) @ ROTATION.T + a  # noqa: E731
    objective = fitted_potential(field, reference, steps=400)
    flux = objective(field, torch.zeros(8192, 2), reference=reference).terms["flux_estimate"]
    expected = float(a.square().sum()) / SIGMA**2
    z = reference.sample(8192)
    fisher = float((field(z, None) - score(z)).square().sum(1).mean()) / SIGMA**2
    # the estimate is off by the fit error of the potential, mostly a small leak of the 70× larger
    # rotation into ∇g; the Fisher divergence counts the rotation in full
    assert expected * 0.95 < flux < expected * 1.2, (flux, expected)
    assert fisher > 50 * expected


def test_fixed_sigma_takes_at_most_32_entries_per_point():
    FluxMatching(0.3)(MLPField(32, (8,)), torch.randn(16, 32))
    with pytest.raises(FluxMatchError, match="up to 32 entries per point; this data has 33.*--noise annealed"):
        FluxMatching(0.3)(MLPField(33, (8,)), torch.randn(16, 33))
    FluxMatching(noise="edm")(EDMPreconditioned(MLPField(33, (8,), conditioning="sigma")), torch.randn(16, 33))
