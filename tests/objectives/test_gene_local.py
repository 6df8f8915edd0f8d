"""Gene-local Flux Matching: the per-gene reference's closed forms against autograd, the exact
single-cell identities of docs/MATH.md §2 (gradient 2σ²H e^{−t} a for f = s + a, zero for an
antisymmetric flux), gene locality, and bad input."""

import math

import pytest
import torch

import fluxmatch.objectives.gene_local as gl
from fluxmatch.divergence import exact_divergence
from fluxmatch.errors import FluxMatchError
from fluxmatch.fields.kinetics import KineticField
from fluxmatch.objectives.gene_local import GeneLocalFlux, gene_kernel_moments, gene_kernel_score, gene_transport


def log_reference(z: torch.Tensor, ref: torch.Tensor, sigma: float) -> torch.Tensor:
    """(P,) log Π_g (1/R) Σ_j N(z_g; ref_jg, σ² I₂), written out directly."""
    d2 = (z[:, None] - ref[None]).square().sum(-1)  # (P, R, G)
    log_k = -d2 / (2 * sigma**2) - math.log(2 * math.pi * sigma**2)
    return (torch.logsumexp(log_k, dim=1) - math.log(ref.shape[0])).sum(-1)


@pytest.fixture
def cells():
    g = torch.Generator().manual_seed(0)
    ref = 2 * torch.randn(40, 4, 2, generator=g, dtype=torch.float64) + 3
    z = ref[:12] + 0.3 * torch.randn(12, 4, 2, generator=g, dtype=torch.float64)
    return z, ref


def test_score_is_the_gradient_of_the_log_reference(cells):
    z, ref = cells
    zz = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_reference(zz, ref, 0.4).sum(), zz)
    torch.testing.assert_close(gene_kernel_score(z, ref, 0.4), grad, rtol=1e-10, atol=1e-10)


def test_moments_match_autograd(cells):
    z, ref = cells
    sigma = 0.4
    m = gene_kernel_moments(z, ref, sigma)
    zz = z.clone().requires_grad_(True)
    score = gene_kernel_score(zz, ref, sigma)
    jac = torch.autograd.functional.jacobian(lambda a: gene_kernel_score(a, ref, sigma).sum(0), zz)  # (G, 2, P, G, 2)
    hess = torch.stack([torch.stack([jac[g, :, p, g, :] for g in range(z.shape[1])]) for p in range(z.shape[0])])
    div = exact_divergence(score, zz, create_graph=True)
    (grad_div,) = torch.autograd.grad(div.sum(), zz)
    torch.testing.assert_close(m.score, score.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(m.hessian, hess, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(m.divergence.sum(1), div.detach(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(m.grad_divergence, grad_div, rtol=1e-8, atol=1e-8)


def test_residual_gradient_matches_autograd(cells, monkeypatch):
    z, ref = cells
    sigma = 0.4
    field = KineticField(4, variant="regulatory", state_rank=2).double()
    with torch.no_grad():
        for p in field.parameters():
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    zz = z.clone().requires_grad_(True)
    score = gene_kernel_score(zz, ref, sigma)
    u = field(zz) - score
    r = exact_divergence(u, zz, create_graph=True) + (u * score).sum((1, 2))
    (expected,) = torch.autograd.grad(r.sum(), zz)
    monkeypatch.setattr(gl, "hutchinson_divergence", lambda out, x, n, create_graph: exact_divergence(out, x, create_graph))
    grad, residual = GeneLocalFlux(sigma)._residual_gradient(field, z, ref)
    torch.testing.assert_close(grad, expected, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(residual, r.detach(), rtol=1e-9, atol=1e-9)


def test_closed_form_kinetic_terms_match_autograd(cells, monkeypatch):
    """The plain kinetic field's closed-form residual gradient equals the autograd one (exact divergence)."""
    z, ref = cells
    field = KineticField(4).double()
    with torch.no_grad():
        for p in field.parameters():
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
    assert field.stationarity_terms(z, torch.zeros_like(z)) is not None
    closed = GeneLocalFlux(0.4)._residual_gradient(field, z, ref)
    monkeypatch.setattr(field, "stationarity_terms", lambda x, score: None)
    monkeypatch.setattr(gl, "hutchinson_divergence", lambda out, x, n, create_graph: exact_divergence(out, x, create_graph))
    generic = GeneLocalFlux(0.4)._residual_gradient(field, z, ref)
    torch.testing.assert_close(closed[0], generic[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(closed[1], generic[1], rtol=1e-9, atol=1e-9)


class ScorePlus(torch.nn.Module):
    """f = s + a (per gene a constant 2-vector), or with ``antisymmetric`` f = s + c J s, J = [[0, 1], [−1, 0]]."""

    def __init__(self, ref, sigma, g, antisymmetric=False):
        super().__init__()
        self.ref, self.sigma, self.antisymmetric = ref, sigma, antisymmetric
        self.a = torch.nn.Parameter(torch.linspace(-1, 1, 2 * g, dtype=torch.float64).reshape(g, 2))
        self.c = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

    def forward(self, z):
        s = gene_kernel_score(z, self.ref, self.sigma)
        if self.antisymmetric:
            return s + self.c * torch.stack([s[..., 1], -s[..., 0]], -1)
        return s + self.a


@pytest.mark.parametrize("t", [0.0, 0.3, 2.5])
def test_single_cell_gradient_is_exact(t):
    torch.manual_seed(0)
    x = torch.tensor([[[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]]], dtype=torch.float64)
    sigma, horizon = 0.3, 4.0
    field = ScorePlus(x, sigma, 3)
    out = GeneLocalFlux(sigma, horizon=horizon)(field, x, t=t)
    out.loss.sum().backward()
    expected = 2 * sigma**2 * horizon * math.exp(-t) * field.a.detach()
    torch.testing.assert_close(field.a.grad, expected, rtol=1e-9, atol=1e-12)


def test_single_cell_expected_gradient_over_the_horizon():
    """E_t[∂ℓ/∂a] = 2σ²(1 − e^{−H}) a: Gauss–Legendre quadrature over t ∈ [0, H] of the exact per-t gradient."""
    torch.manual_seed(0)
    x = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64)
    sigma, horizon = 0.5, 4.0
    nodes, weights = torch.tensor([-0.9061798459, -0.5384693101, 0.0, 0.5384693101, 0.9061798459]), torch.tensor([0.2369268851, 0.4786286705, 0.5688888889, 0.4786286705, 0.2369268851])
    total = torch.zeros(1, 2, dtype=torch.float64)
    for node, weight in zip(nodes, weights):
        field = ScorePlus(x, sigma, 1)
        GeneLocalFlux(sigma, horizon=horizon)(field, x, t=float((node + 1) * horizon / 2)).loss.sum().backward()
        total += float(weight) / 2 * field.a.grad
    expected = 2 * sigma**2 * (1 - math.exp(-horizon)) * field.a.detach()
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=0)  # 5-point Gauss–Legendre error for e^{−t} on [0, 4]: ~2e-6


def test_antisymmetric_flux_has_zero_gradient():
    torch.manual_seed(0)
    x = torch.tensor([[[1.0, 2.0], [0.5, -1.0]]], dtype=torch.float64)
    field = ScorePlus(x, 0.3, 2, antisymmetric=True)
    GeneLocalFlux(0.3)(field, x, t=1.0).loss.sum().backward()
    assert abs(float(field.c.grad)) < 1e-9


def test_transport_with_one_start_is_the_discounted_mean():
    start = torch.zeros(1, 2, 2)
    ends, values = torch.randn(5, 2, 2), torch.randn(5, 2, 2)
    out = gene_transport(start, ends, values, torch.zeros_like(start), t=0.7, sigma=0.5)
    torch.testing.assert_close(out, math.exp(-0.7) * values.sum(0, keepdim=True), rtol=1e-5, atol=1e-6)


def test_genes_do_not_see_each_other():
    """A gene-local field's gradient for gene 0 does not change when another gene's data change."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(64, 3, 2, generator=g) * 3
    y = x.clone()
    y[:, 2] = torch.rand(64, 2, generator=g) * 10
    grads = []
    for data in (x, y):
        field = KineticField(3)
        torch.manual_seed(7)
        GeneLocalFlux(0.2)(field, data).loss.mean().backward()
        grads.append(torch.stack([field.log_beta.grad[0], field.log_gamma.grad[0], field.a_u.grad[0]]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-7)
    assert grads[0].abs().sum() > 0


def test_training_moves_gamma_over_beta_towards_the_steady_state_line():
    """Cells on the steady-state line u = (γ/β) s with spread along it: the fit recovers the slope's order."""
    torch.manual_seed(0)
    s = torch.rand(512, 2) * 2 + 0.5
    slopes = torch.tensor([0.3, 1.5])
    x = torch.stack([slopes * s + 0.05 * torch.randn(512, 2), s], -1)
    field = KineticField(2)
    opt = torch.optim.Adam(field.parameters(), lr=0.05)
    objective = GeneLocalFlux(0.1)
    for _ in range(150):
        rows = torch.randint(0, 512, (128,))
        loss = objective(field, x[rows]).loss.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        r = field.rates(x)
    ratio = r["gamma"] / r["beta"]
    assert ratio[1] > 2 * ratio[0]


@pytest.mark.parametrize("shape", [(8, 3), (8, 3, 3), (8, 3, 2, 1)])
def test_refuses_other_shapes(shape):
    with pytest.raises(FluxMatchError, match=r"\(B, G, 2\)"):
        GeneLocalFlux(0.1)(KineticField(3), torch.rand(*shape))


def test_refuses_bad_settings_and_horizons():
    with pytest.raises(FluxMatchError, match="σ"):
        GeneLocalFlux(0.0)
    with pytest.raises(FluxMatchError, match="horizon"):
        GeneLocalFlux(0.1, horizon=-1)
    with pytest.raises(FluxMatchError, match="substeps"):
        GeneLocalFlux(0.1, substeps=0)
    with pytest.raises(FluxMatchError, match="horizon t"):
        GeneLocalFlux(0.1, horizon=2.0)(KineticField(2), torch.rand(4, 2, 2), t=3.0)
    with pytest.raises(FluxMatchError, match="NaN"):
        GeneLocalFlux(0.1)(KineticField(2), torch.full((4, 2, 2), float("nan")))
